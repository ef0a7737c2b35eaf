"""UDP listeners over real loopback sockets: one stream per peer, one Data per
datagram, idle timeout, peer and queue limits, IPv6, shutdown, configuration."""

from __future__ import annotations

import importlib
import logging
import re
import socket
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from pipeline import ConfigError, Data, Event, Filter, Proxy, StreamEnd
from pipeline.graph import render
from pipeline.runtime import ListenError, Server, bind_listeners, serve
from pipeline.udp import UdpOptions
from tests.helpers import serving


async def udp_client(host: str = "127.0.0.1") -> trio.socket.SocketType:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return sock


async def receive(sock: trio.socket.SocketType, timeout: float = 5.0) -> bytes:
    with trio.fail_after(timeout):
        data, _ = await sock.recvfrom(65535)
    return bytes(data)


class Tag(Filter):
    """Answers each datagram with ``<stream id>:<datagram>``; records stream ends."""

    name = "tag_test"
    ends: list[tuple[tuple[str, int] | None, BaseException | None]] = []

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            ctx = self.context
            await self.output(Data(b"%d:%s" % (ctx.id, event.data)))  # type: ignore[union-attr]
        elif type(event) is StreamEnd:
            Tag.ends.append((self.context.remote, event.error))  # type: ignore[union-attr]


class Slow(Filter):
    """Holds each datagram until released: a pipeline slower than its peer."""

    name = "slow_test"
    gate: trio.Event | None = None
    entered: trio.Event | None = None

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            assert Slow.gate is not None
            if Slow.entered is not None:
                Slow.entered.set()
            await Slow.gate.wait()
        await self.output(event)


async def test_each_datagram_is_one_data_event_and_is_echoed_whole() -> None:
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0")  # no filters: output = input, an echo
    async with serving(proxy) as server:
        sock = await udp_client()
        for payload in (b"a", b"bb" * 1000, b"", b"ccc"):
            await sock.sendto(payload, ("127.0.0.1", server.ports[0]))
        replies = [await receive(sock) for _ in range(3)]
        sock.close()
    # The empty datagram is one empty Data event, which is not sent back.
    assert replies == [b"a", b"bb" * 1000, b"ccc"]


async def test_each_peer_is_a_stream_with_its_own_context() -> None:
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0").add_filter(Tag)
    async with serving(proxy) as server:
        address = ("127.0.0.1", server.ports[0])
        one, two = await udp_client(), await udp_client()
        await one.sendto(b"x", address)
        first = await receive(one)
        await two.sendto(b"y", address)
        second = await receive(two)
        await one.sendto(b"z", address)
        third = await receive(one)
        one.close()
        two.close()
    id_one, _, data_one = first.partition(b":")
    id_two, _, data_two = second.partition(b":")
    assert (data_one, data_two) == (b"x", b"y")
    assert id_one != id_two
    assert third == id_one + b":z"  # the same stream for the same peer


async def test_a_silent_peer_ends_its_stream_and_comes_back_as_a_new_one() -> None:
    Tag.ends = []
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0", idle_timeout=0.2).add_filter(Tag)
    async with serving(proxy) as server:
        address = ("127.0.0.1", server.ports[0])
        sock = await udp_client()
        await sock.sendto(b"x", address)
        first = await receive(sock)
        with trio.fail_after(5):
            while not Tag.ends:
                await trio.sleep(0.05)
        assert Tag.ends == [(sock.getsockname()[:2], None)]
        await sock.sendto(b"x", address)
        second = await receive(sock)
        sock.close()
    assert first.partition(b":")[0] != second.partition(b":")[0]


async def test_a_pipeline_that_ends_forgets_the_peer() -> None:
    class Once(Filter):
        name = "once_test"

        async def on_event(self, event: Event) -> None:
            await self.output(Data(b"%d" % self.context.id))
            await self.output(StreamEnd())

    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0").add_filter(Once)
    async with serving(proxy) as server:
        address = ("127.0.0.1", server.ports[0])
        sock = await udp_client()
        await sock.sendto(b"1", address)
        first = await receive(sock)
        await sock.sendto(b"2", address)
        second = await receive(sock)
        sock.close()
    assert first != second


async def test_peers_beyond_max_peers_are_dropped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Slow.gate = trio.Event()
    Slow.entered = trio.Event()
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0", max_peers=1).add_filter(Slow)
    caplog.set_level(logging.WARNING, "trioxy.udp")
    async with serving(proxy) as server:
        address = ("127.0.0.1", server.ports[0])
        held, extra = await udp_client(), await udp_client()
        await held.sendto(b"held", address)
        with trio.fail_after(5):
            await Slow.entered.wait()
        for _ in range(3):
            await extra.sendto(b"dropped", address)
        await trio.sleep(0.1)
        Slow.gate.set()
        assert await receive(held) == b"held"
        with trio.move_on_after(0.3):
            await extra.recvfrom(100)
            pytest.fail("a datagram beyond max_peers was answered")
        held.close()
        extra.close()
    drops = [r for r in caplog.records if "too many peers" in r.getMessage()]
    assert len(drops) == 1, caplog.text


async def test_a_full_peer_queue_drops_datagrams(caplog: pytest.LogCaptureFixture) -> None:
    Slow.gate = trio.Event()
    Slow.entered = trio.Event()
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0", queue_size=2).add_filter(Slow)
    caplog.set_level(logging.WARNING, "trioxy.udp")
    async with serving(proxy) as server:
        address = ("127.0.0.1", server.ports[0])
        sock = await udp_client()
        await sock.sendto(b"0", address)
        with trio.fail_after(5):
            await Slow.entered.wait()  # the pipeline holds datagram 0
        for i in range(1, 10):  # room for 2 in the queue; the rest is dropped
            await sock.sendto(b"%d" % i, address)
        with trio.fail_after(5):
            while "peer queue full" not in caplog.text:
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # (the listener reads the rest of the burst)
        Slow.gate.set()
        replies = []
        while True:
            with trio.move_on_after(0.3):
                replies.append(await receive(sock))
                continue
            break
        sock.close()
    assert replies[:3] == [b"0", b"1", b"2"]
    assert len(replies) < 10, replies
    assert caplog.text.count("peer queue full") == 1  # logged once, not per drop


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_ipv6() -> None:
    proxy = Proxy()
    proxy.listen_udp("[::1]:0").add_filter(Tag)
    try:
        server_cm = serving(proxy)
        async with server_cm as server:
            sock = await udp_client("::1")
            await sock.sendto(b"six", ("::1", server.ports[0]))
            reply = await receive(sock)
            sock.close()
    except ListenError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    assert reply.endswith(b":six")


async def test_shutdown_stops_udp_listeners() -> None:
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:0").add_filter(Tag)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            server: Server = await nursery.start(
                partial(serve, proxy.build(), grace_period=5.0, handle_signals=False)
            )
            sock = await udp_client()
            await sock.sendto(b"x", ("127.0.0.1", server.ports[0]))
            await receive(sock)  # a stream is open
            server.shutdown()  # not immediate: serve() still returns at once
    assert server.listeners[0].sock.fileno() == -1
    sock.close()


def test_tcp_and_udp_listeners_may_share_a_port_but_not_two_udp() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:5353")
    proxy.listen_udp("127.0.0.1:5353")
    with pytest.raises(ConfigError, match="already a UDP listener"):
        proxy.listen_udp("127.0.0.1:5353")
    with pytest.raises(ConfigError, match="already a listener"):
        proxy.listen("127.0.0.1:5353")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"max_peers": 0}, "max_peers"),
        ({"queue_size": True}, "queue_size"),
    ],
)
def test_bad_options_are_load_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Proxy().listen_udp("127.0.0.1:0", **kwargs)
    with pytest.raises(ValueError, match=message):
        UdpOptions(**kwargs)


def test_check_shows_udp_listeners() -> None:
    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:5300", idle_timeout=30, max_peers=5).connect_udp("127.0.0.1:53")
    config = proxy.build()
    text = render(config.listeners, config.layouts)
    assert text.splitlines()[0] == (
        "listen udp 127.0.0.1:5300  (idle_timeout=30s, max_peers=5, queue_size=128)"
    )
    assert config.listeners[0].protocol == "udp"


async def test_a_udp_port_in_use_is_a_listen_error() -> None:
    taken = await udp_client()
    port = taken.getsockname()[1]
    proxy = Proxy()
    proxy.listen_udp(f"127.0.0.1:{port}")
    with pytest.raises(ListenError, match="address already in use"):
        await bind_listeners(proxy.build().listeners)
    taken.close()


def test_the_guide_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "udp.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
    replies = [line for line in capsys.readouterr().out.splitlines() if line]
    tags = [re.fullmatch(r"b'#(\d+) (one|two)'", line) for line in replies]
    assert all(tags) and len(tags) == 2, replies
    assert tags[0][1] == tags[1][1]  # type: ignore[index]  # one peer, one stream


def test_module_docstring_example_builds() -> None:
    doc = importlib.import_module("pipeline.udp").__doc__ or ""
    example = doc.split("Proxy.listen_udp`::", 1)[1].split("A TCP and a UDP", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(example), "pipeline.udp docstring", "exec"), namespace)
    (spec,) = namespace["proxy"].build().listeners
    assert spec.protocol == "udp" and spec.udp.idle_timeout == 30
