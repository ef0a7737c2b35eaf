"""connect_udp against real UDP servers on loopback: datagrams both ways,
refusal (ICMP port unreachable), failover, idle timeout, IPv6, arguments."""

from __future__ import annotations

import importlib
import socket
import textwrap

import pytest
import trio

from filters.balance import RoundRobin
from pipeline import ConfigError, Data, Proxy, StreamEnd
from pipeline.errors import ConnectRefused, IdleTimeout
from pipeline.testing import open_pipeline


async def echo_server(
    host: str = "127.0.0.1", prefix: bytes = b""
) -> tuple[trio.socket.SocketType, int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return sock, sock.getsockname()[1]


async def serve_echo(sock: trio.socket.SocketType, prefix: bytes = b"") -> None:
    while True:
        data, peer = await sock.recvfrom(65535)
        await sock.sendto(prefix + data, peer)


def dead_port() -> int:
    """A UDP port nobody is bound to (sending there gets ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def wait_output(h: object, count: int) -> None:
    with trio.fail_after(5):
        while len(h.output) < count:  # type: ignore[attr-defined]
            await trio.sleep(0.01)


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.connect_udp").__doc__ or ""
    example = doc.split("two datagrams::", 1)[1].split("In a script", 1)[0]
    exec(compile(textwrap.dedent(example), "connect_udp docstring", "exec"), {})


async def test_datagrams_keep_their_boundaries_both_ways() -> None:
    server, port = await echo_server()
    proxy = Proxy()
    proxy.pipeline("p").connect_udp(f"127.0.0.1:{port}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_echo, server, b">")
        async with open_pipeline(proxy.layout("p")) as h:
            await h.send(b"a", b"bb" * 2000, b"c")
            await wait_output(h, 3)
            assert h.output == [Data(b">a"), Data(b">" + b"bb" * 2000), Data(b">c")]
            assert h.pipeline.context.upstream == f"127.0.0.1:{port}"
            await h.send(StreamEnd())
            await h.settle()
            assert h.output[-1] == StreamEnd()
        nursery.cancel_scope.cancel()
    server.close()


async def test_a_refusing_target_ends_the_stream_with_connect_refused() -> None:
    proxy = Proxy()
    proxy.pipeline("p").connect_udp(f"127.0.0.1:{dead_port()}")
    async with open_pipeline(proxy.layout("p")) as h:
        await h.send(b"anyone?")
        with trio.fail_after(5):
            await h.ended.wait()
    (end,) = h.output
    assert isinstance(end, StreamEnd) and isinstance(end.error, ConnectRefused)
    assert "refused" in str(end.error)


@pytest.mark.parametrize("dead_count", [1, 2])
async def test_failover_resends_to_the_next_target(dead_count: int) -> None:
    server, port = await echo_server()
    dead = [f"127.0.0.1:{dead_port()}" for _ in range(dead_count)]
    balancer = RoundRobin([*dead, f"127.0.0.1:{port}"])
    proxy = Proxy()
    proxy.pipeline("p").connect_udp(balancer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_echo, server)
        async with open_pipeline(proxy.layout("p")) as h:
            await h.send(b"one", b"two", b"three")
            await wait_output(h, 3)
            got = sorted(e.data for e in h.output if isinstance(e, Data))
            assert got == [b"one", b"three", b"two"]
            assert h.pipeline.context.upstream == f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()
    server.close()


async def test_a_target_list_rotates_across_streams() -> None:
    one, port_one = await echo_server()
    two, port_two = await echo_server()
    proxy = Proxy()
    proxy.pipeline("p").connect_udp([f"127.0.0.1:{port_one}", f"127.0.0.1:{port_two}"])
    used = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_echo, one, b"1")
        nursery.start_soon(serve_echo, two, b"2")
        for _ in range(2):
            async with open_pipeline(proxy.layout("p")) as h:
                await h.send(b"x")
                await wait_output(h, 1)
                used.append(h.output[0])
        nursery.cancel_scope.cancel()
    one.close()
    two.close()
    assert sorted(used, key=lambda e: e.data) == [Data(b"1x"), Data(b"2x")]


async def test_idle_timeout() -> None:
    server, port = await echo_server()  # bound, never answers
    proxy = Proxy()
    proxy.pipeline("p").connect_udp(f"127.0.0.1:{port}", idle_timeout=0.1)
    async with open_pipeline(proxy.layout("p")) as h:
        await h.send(b"hello?")
        with trio.fail_after(5):
            await h.ended.wait()
    (end,) = h.output
    assert isinstance(end, StreamEnd) and isinstance(end.error, IdleTimeout)
    server.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_ipv6() -> None:
    try:
        server, port = await echo_server("::1")
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    proxy = Proxy()
    proxy.pipeline("p").connect_udp(f"[::1]:{port}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_echo, server, b"6")
        async with open_pipeline(proxy.layout("p")) as h:
            await h.send(b"x")
            await wait_output(h, 1)
            assert h.output == [Data(b"6x")]
        nursery.cancel_scope.cancel()
    server.close()


async def test_a_target_function_is_asked_per_stream() -> None:
    server, port = await echo_server()
    proxy = Proxy()
    proxy.pipeline("p").connect_udp(lambda ctx: f"127.0.0.1:{port}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_echo, server)
        async with open_pipeline(proxy.layout("p")) as h:
            await h.send(b"fn")
            await wait_output(h, 1)
            assert h.output == [Data(b"fn")]
        nursery.cancel_scope.cancel()
    server.close()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("nowhere",), {}, "bad address"),
        (([],), {}, "empty"),
        ((42,), {}, "bad target"),
        (("127.0.0.1:53",), {"idle_timeout": 0}, "idle_timeout"),
        (("127.0.0.1:53",), {"resend": -1}, "resend"),
    ],
)
def test_bad_arguments_are_load_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Proxy().pipeline("p").connect_udp(*args, **kwargs)
