"""The connect filter and the balancers, against real loopback servers."""

from __future__ import annotations

import logging
import socket
import struct
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from filters.balance import PICKED, Balancer, LeastConnections, RoundRobin, make_balancer
from filters.connect import Connect
from pipeline import (
    ConfigError,
    ConnectionReset,
    ConnectRefused,
    ConnectTimeout,
    Context,
    IdleTimeout,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.plugins import balancer_registry, filter_registry
from pipeline.runtime import Server as RuntimeServer
from pipeline.runtime import serve
from pipeline.script import load_script
from pipeline.testing import Harness, open_pipeline
from tests.helpers import free_port

Handler = Callable[[trio.socket.SocketType], Awaitable[None]]


# Loopback servers -------------------------------------------------------------


@dataclass
class Server:
    port: int
    host: str
    peers: list[Any] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@asynccontextmanager
async def tcp_server(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[Server]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = trio.socket.socket(family)
    await listener.bind((host, 0))
    listener.listen(128)
    server = Server(listener.getsockname()[1], host)

    async def serve_one(sock: trio.socket.SocketType) -> None:
        try:
            await handler(sock)
        except OSError:
            pass
        finally:
            sock.close()

    async with trio.open_nursery() as nursery:

        async def accept_loop() -> None:
            while True:
                sock, peer = await listener.accept()
                server.peers.append(peer)
                nursery.start_soon(serve_one, sock)

        nursery.start_soon(accept_loop)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
            listener.close()


async def read_to_eof(sock: trio.socket.SocketType) -> bytes:
    chunks = []
    while chunk := await sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def upper_echo(sock: trio.socket.SocketType) -> None:
    """Echo each chunk upper-cased as it comes; EOF for EOF."""
    while chunk := await sock.recv(65536):
        await sock.send(chunk.upper())
    sock.shutdown(socket.SHUT_WR)


def answer_after_eof(server_received: list[bytes]) -> Handler:
    async def handler(sock: trio.socket.SocketType) -> None:
        request = await read_to_eof(sock)
        server_received.append(request)
        await sock.send(b"got %d bytes" % len(request))

    return handler


async def silent(sock: trio.socket.SocketType) -> None:
    await trio.sleep_forever()


def dead_port() -> int:
    """A loopback port that refuses connections."""
    return free_port()


@contextmanager
def blackhole() -> Iterator[int]:
    """A port whose connects hang: a listener that never accepts, with its accept
    queue already full, so the kernel drops further SYNs (loopback only)."""
    listener = socket.socket()
    fillers = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        yield listener.getsockname()[1]
    finally:
        for s in [*fillers, listener]:
            s.close()


def connect_layout(*args: Any, **kwargs: Any) -> Any:
    proxy = Proxy()
    return proxy.pipeline("up").connect(*args, **kwargs)


async def ended(harness: Harness, timeout: float = 10.0) -> StreamEnd:
    """Wait for the pipeline's StreamEnd (not merely for quiet: connecting and
    timeouts leave every task blocked for a while)."""
    with trio.fail_after(timeout):
        await harness.ended.wait()
    last = harness.output[-1]
    assert isinstance(last, StreamEnd)
    return last


def connect_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioxy.connect"]


# Event mode -------------------------------------------------------------------


async def test_data_both_ways_and_context() -> None:
    async with tcp_server(upper_echo) as server:
        async with open_pipeline(connect_layout(server.address)) as h:
            await h.send(b"hello ", b"world", StreamEnd())
            end = await ended(h)
            assert end.error is None
            assert h.data == b"HELLO WORLD"
            connect = h.pipeline.filters[0]
            assert isinstance(connect, Connect)
            assert connect.upstream == server.address
            assert h.pipeline.context.upstream == server.address


async def test_half_close_then_reply() -> None:
    received: list[bytes] = []
    async with tcp_server(answer_after_eof(received)) as server:
        async with open_pipeline(connect_layout(server.address)) as h:
            # Message events carry nothing for connect; only the bytes go out.
            await h.send(MessageStart("head"), b"abc", b"de", MessageEnd(), StreamEnd())
            end = await ended(h)
    assert received == [b"abcde"]
    assert h.data == b"got 5 bytes"
    assert end.error is None


async def test_large_transfer_keeps_every_byte() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    async with tcp_server(upper_echo) as server:
        async with open_pipeline(connect_layout(server.address)) as h:
            for i in range(0, len(payload), 65536):
                await h.send(payload[i : i + 65536])
            await h.send(StreamEnd())
            await ended(h)
    assert h.data == payload.upper()


async def test_refused_gives_stream_end_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = dead_port()
    async with open_pipeline(connect_layout(f"127.0.0.1:{port}")) as h:
        await h.send(b"anyone?", b"more", StreamEnd())
        end = await ended(h)
    assert isinstance(end.error, ConnectRefused)
    assert h.data == b""
    [record] = connect_logs(caplog)
    assert record.levelno == logging.WARNING
    assert f"127.0.0.1:{port}" in record.getMessage()
    assert "refused" in record.getMessage()


async def test_failover_across_a_list(caplog: pytest.LogCaptureFixture) -> None:
    dead = dead_port()
    async with tcp_server(upper_echo) as server:
        layout = connect_layout([f"127.0.0.1:{dead}", server.address])
        async with open_pipeline(layout) as h:
            await h.send(b"x", StreamEnd())
            assert (await ended(h)).error is None
            assert h.data == b"X"
            assert h.pipeline.context.upstream == server.address
        # The next stream starts at the next position of the list: the live one.
        async with open_pipeline(layout) as h:
            await h.send(b"y", StreamEnd())
            await ended(h)
            assert h.data == b"Y"
    assert len(server.peers) == 2
    assert connect_logs(caplog) == []  # a failover that worked is not a failure


async def test_all_targets_dead_with_retries(caplog: pytest.LogCaptureFixture) -> None:
    a, b = dead_port(), dead_port()
    layout = connect_layout([f"127.0.0.1:{a}", f"127.0.0.1:{b}"], retries=2, retry_delay=0)
    async with open_pipeline(layout) as h:
        await h.send(b"x")
        end = await ended(h)
    assert isinstance(end.error, ConnectRefused)
    [record] = connect_logs(caplog)
    message = record.getMessage()
    assert f"127.0.0.1:{a}" in message and f"127.0.0.1:{b}" in message
    assert message.count("(3 attempts)") == 2


class ComesUpOnFailure(RoundRobin):
    """A balancer whose failed() hook starts a listener on the port that failed:
    the retry after the delay then finds it up. Deterministic, no sleeps."""

    def __init__(self, targets: list[str]) -> None:
        super().__init__(targets)
        self.failures: list[str] = []
        self.successes: list[str] = []
        self.listener: socket.socket | None = None

    def failed(self, target: str, reason: str = "") -> None:
        self.failures.append(target)
        if self.listener is None:
            host, port = target.rsplit(":", 1)
            self.listener = socket.socket()
            self.listener.bind((host, int(port)))
            self.listener.listen(8)

    def succeeded(self, target: str) -> None:
        self.successes.append(target)


async def test_retry_finds_the_server_up(caplog: pytest.LogCaptureFixture) -> None:
    port = dead_port()
    balancer = ComesUpOnFailure([f"127.0.0.1:{port}"])
    try:
        async with open_pipeline(connect_layout(balancer, retries=1, retry_delay=0.05)) as h:
            await h.send(b"hello")
            with trio.fail_after(10):
                while h.pipeline.filters[0].sock is None:  # type: ignore[attr-defined]
                    await trio.sleep(0.01)
            assert balancer.listener is not None
            accepted, _ = balancer.listener.accept()
            with accepted:
                assert accepted.recv(100) == b"hello"
    finally:
        if balancer.listener is not None:
            balancer.listener.close()
    assert balancer.failures == [f"127.0.0.1:{port}"]
    assert balancer.successes == [f"127.0.0.1:{port}"]
    assert connect_logs(caplog) == []


async def test_connect_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with blackhole() as port:
        async with open_pipeline(connect_layout(f"127.0.0.1:{port}", connect_timeout=0.2)) as h:
            await h.send(b"x", StreamEnd())
            end = await ended(h)
    assert isinstance(end.error, ConnectTimeout)
    assert end.error.status == 504
    [record] = connect_logs(caplog)
    assert "timed out after 0.2s" in record.getMessage()


async def test_bind_source_address() -> None:
    async with tcp_server(upper_echo) as server:
        async with open_pipeline(connect_layout(server.address, bind="127.0.0.2")) as h:
            await h.send(b"from .2", StreamEnd())
            await ended(h)
            assert h.data == b"FROM .2"
    assert server.peers[0][0] == "127.0.0.2"


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
async def test_ipv6_target() -> None:
    async with tcp_server(upper_echo, host="::1") as server:
        assert server.address.startswith("[::1]:")
        async with open_pipeline(connect_layout(server.address)) as h:
            await h.send(b"six", StreamEnd())
            await ended(h)
            assert h.data == b"SIX"
            assert h.pipeline.context.upstream == server.address


async def test_target_function_sync_and_async() -> None:
    async with tcp_server(upper_echo) as server:

        def pick(ctx: Context) -> str:
            return str(ctx.target)

        async def pick_async(ctx: Context) -> str:
            await trio.lowlevel.checkpoint()
            return str(ctx.target)

        for fn in (pick, pick_async):
            ctx = Context().set(target=server.address)
            async with open_pipeline(connect_layout(fn), ctx) as h:
                await h.send(b"fn", StreamEnd())
                await ended(h)
                assert h.data == b"FN"


async def test_target_function_returning_garbage(caplog: pytest.LogCaptureFixture) -> None:
    async with open_pipeline(connect_layout(lambda ctx: "no port here")) as h:
        await h.send(b"x")
        end = await ended(h)
    assert isinstance(end.error, PipelineError)
    [record] = connect_logs(caplog)
    assert "no port here" in record.getMessage()


async def test_server_reset_ends_the_stream_with_connection_reset() -> None:
    async def reset(sock: trio.socket.SocketType) -> None:
        await sock.recv(100)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async with tcp_server(reset) as server:
        async with open_pipeline(connect_layout(server.address)) as h:
            await h.send(b"trigger")
            end = await ended(h)
    assert isinstance(end.error, ConnectionReset)


async def test_idle_timeout_event_mode() -> None:
    async with tcp_server(silent) as server:
        async with open_pipeline(connect_layout(server.address, idle_timeout=0.2)) as h:
            await h.send(b"hello?")
            end = await ended(h)
    assert isinstance(end.error, IdleTimeout)


#: More than the kernel buffers of two loopback connections hold: relaying it to
#: a client that is not reading makes both connect's reader and the runtime's
#: writer wait.
FLOOD = bytes(range(256)) * 32768  # 8 MiB


async def flood(sock: trio.socket.SocketType) -> None:
    """Answer the first chunk with FLOOD, then EOF."""
    await sock.recv(100)
    view = memoryview(FLOOD)
    sent = 0
    while sent < len(view):
        sent += await sock.send(view[sent:])
    sock.shutdown(socket.SHUT_WR)


def event_path_proxy(upstream: str) -> Proxy:
    """A listener relaying through connect *with events* (a pass-through filter
    first, so the runtime does not hand the sockets to the zero-copy relay)."""
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").handle_data(lambda ctx, data: None).connect(upstream)
    return proxy


async def test_event_path_backpressure_to_a_client_reading_late() -> None:
    async with tcp_server(flood) as upstream:
        async with trio.open_nursery() as nursery:
            server: RuntimeServer = await nursery.start(
                partial(serve, event_path_proxy(upstream.address).build(), handle_signals=False)
            )
            client = await trio.open_tcp_stream("127.0.0.1", server.ports[0])
            await client.send_all(b"go")
            # Every task is blocked: connect's reader waits on the client's writer.
            await trio.testing.wait_all_tasks_blocked()
            received = bytearray()
            with trio.fail_after(30):
                while chunk := await client.receive_some(1 << 20):
                    received += chunk
            assert received == FLOOD
            await client.aclose()
            server.shutdown(immediate=True)


async def test_event_path_pipeline_closed_while_connect_waits_on_output(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with tcp_server(flood) as upstream:
        async with trio.open_nursery() as nursery:
            server: RuntimeServer = await nursery.start(
                partial(
                    serve,
                    event_path_proxy(upstream.address).build(),
                    grace_period=30,
                    handle_signals=False,
                )
            )
            client = await trio.open_tcp_stream("127.0.0.1", server.ports[0])
            await client.send_all(b"go")
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.streams) == 1
            server.shutdown(immediate=True)  # closes the pipeline and connect's socket
        assert server.streams == set()
        await client.aclose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# Zero-copy mode ---------------------------------------------------------------


async def test_relay_method_on_a_socket_pair() -> None:
    payload = b"relay me " * 50000
    async with tcp_server(upper_echo) as server:
        async with open_pipeline(connect_layout(server.address)) as h:
            connect = h.pipeline.filters[0]
            assert isinstance(connect, Connect)
            inner, outer = trio.socket.socketpair()
            with inner, outer:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(connect.relay, inner)

                    async def upload() -> None:
                        view = memoryview(payload)
                        while view:
                            view = view[await outer.send(view) :]
                        outer.shutdown(socket.SHUT_WR)

                    nursery.start_soon(upload)
                    assert await read_to_eof(outer) == payload.upper()
            assert connect.stats is not None
            assert connect.stats.error is None
            assert connect.stats.a_to_b == connect.stats.b_to_a == len(payload)
            assert connect.sock is None  # closed at the end
            assert h.pipeline.context.upstream == server.address


async def test_relay_method_closes_the_client_when_nothing_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = [f"127.0.0.1:{dead_port()}", f"127.0.0.1:{dead_port()}"]
    async with open_pipeline(connect_layout(RoundRobin(dead))) as h:
        connect = h.pipeline.filters[0]
        assert isinstance(connect, Connect)
        inner, outer = trio.socket.socketpair()
        with inner, outer:
            await connect.relay(inner)
            assert inner.fileno() == -1  # closed
            assert await outer.recv(10) == b""
    [record] = connect_logs(caplog)
    assert dead[0] in record.getMessage() and dead[1] in record.getMessage()


# Balancers --------------------------------------------------------------------


def test_round_robin_rotates_and_wraps() -> None:
    rr = RoundRobin(["127.0.0.1:1", "localhost:2", "[::1]:3", "127.0.0.1:1"])
    assert rr.targets == ("127.0.0.1:1", "localhost:2", "[::1]:3")  # normalized, deduplicated
    assert [rr.select() for _ in range(7)] == [*rr.targets, *rr.targets, rr.targets[0]]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([], "at least one target"),
        (["8080"], "needs a host"),
        (["127.0.0.1:0"], "port 0"),
        (["127.0.0.1:99999"], "out of range"),
        (["::1:80"], r"\[addr\]:port"),
        ("127.0.0.1:80", "list"),
        ([80], "string"),
    ],
)
def test_round_robin_validation(targets: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoundRobin(targets)


def test_base_balancer_needs_select() -> None:
    with pytest.raises(NotImplementedError):
        Balancer(["127.0.0.1:1"]).select()


async def test_balancer_failover_and_feedback() -> None:
    class Recording(RoundRobin):
        def __init__(self, targets: list[str]) -> None:
            super().__init__(targets)
            self.log: list[tuple[str, str]] = []

        def failed(self, target: str, reason: str = "") -> None:
            self.log.append(("failed", target))

        def succeeded(self, target: str) -> None:
            self.log.append(("ok", target))

    dead = f"127.0.0.1:{dead_port()}"
    async with tcp_server(upper_echo) as server:
        balancer = Recording([dead, server.address])
        layout = connect_layout(balancer)
        for _ in range(2):
            async with open_pipeline(layout) as h:
                await h.send(b"b", StreamEnd())
                await ended(h)
                assert h.data == b"B"
    # Stream 1 selects the dead one and fails over; stream 2 selects the live one.
    assert balancer.log == [("failed", dead), ("ok", server.address), ("ok", server.address)]


def test_registered_through_the_hooks() -> None:
    assert filter_registry()["connect"] is Connect
    assert balancer_registry()["round-robin"] is RoundRobin


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "8080"}, "needs a host"),
        ({"target": "nohost:"}, "not a number"),
        ({"target": []}, "empty"),
        ({"target": ["127.0.0.1:1", "bad"]}, "'bad'"),
        ({"target": 42}, "expected 'host:port'"),
        ({"target": "127.0.0.1:1", "connect_timeout": 0}, "connect_timeout"),
        ({"target": "127.0.0.1:1", "idle_timeout": -1}, "idle_timeout"),
        ({"target": "127.0.0.1:1", "retries": -1}, "retries"),
        ({"target": "127.0.0.1:1", "retry_delay": "soon"}, "retry_delay"),
        ({"target": "127.0.0.1:1", "bind": "eth0"}, "bind address"),
        ({"target": "127.0.0.1:1", "read_buffer": 0}, "read_buffer"),
    ],
)
def test_bad_arguments_are_config_errors_at_load(kwargs: dict[str, Any], message: str) -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match=message) as info:
        proxy.listen(0).connect(**kwargs)
    assert info.value.filename == __file__
    assert str(info.value).startswith(f"{__file__}:")


def test_good_arguments_are_accepted() -> None:
    proxy = Proxy()
    proxy.listen(0).connect("localhost:80", idle_timeout=None, bind="127.0.0.2:0")
    proxy.listen(1).connect(["[::1]:80", "127.0.0.1:80"], bind="::1")
    proxy.build()


def test_bad_balancer_in_a_script_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        textwrap.dedent(
            """\
            from pipeline import Proxy
            from filters.balance import RoundRobin

            proxy = Proxy()
            proxy.listen(0).connect(RoundRobin(["127.0.0.1:80", "9090"]))
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        load_script(script)
    assert info.value.lineno == 5
    assert "needs a host" in str(info.value)
    assert str(info.value).startswith(f"{script.resolve()}:5: ")


# Balancer feedback: failover picks, in-flight counts, passive health -------------------


async def test_failover_picks_come_from_the_balancer_and_dead_ones_drop_out() -> None:
    d1, d2 = f"127.0.0.1:{dead_port()}", f"127.0.0.1:{dead_port()}"
    async with tcp_server(upper_echo) as server:
        balancer = RoundRobin([d1, d2, server.address], max_fails=1)
        layout = connect_layout(balancer)
        for _ in range(3):
            async with open_pipeline(layout) as h:
                await h.send(b"x", StreamEnd())
                await ended(h)
                assert h.data == b"X"
    by_target = {b.target: b for b in balancer.backends}
    # Stream 1 tried d1, then (excluding it) d2, then the server; both dead ones
    # were taken out, so streams 2 and 3 went straight to the server.
    assert (by_target[d1].fails, by_target[d2].fails) == (1, 1)
    assert not balancer.available(d1) and not balancer.available(d2)
    assert len(server.peers) == 3


async def test_in_flight_connections_are_counted_until_the_stream_closes() -> None:
    dead = f"127.0.0.1:{dead_port()}"
    async with tcp_server(upper_echo) as server:
        balancer = LeastConnections([dead, server.address], max_fails=0)
        layout = connect_layout(balancer)
        async with open_pipeline(layout) as first:
            await first.send(b"a")
            await first.settle()
            assert [b.active for b in balancer.backends] == [0, 1]
            async with open_pipeline(layout) as second:
                await second.send(b"b")
                await second.settle()
                assert [b.active for b in balancer.backends] == [0, 2]
            assert [b.active for b in balancer.backends] == [0, 1]
    assert [b.active for b in balancer.backends] == [0, 0]


async def test_a_stream_reset_by_the_server_counts_as_a_failure() -> None:
    async def reset(sock: trio.socket.SocketType) -> None:
        await sock.recv(100)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async with tcp_server(reset) as server:
        balancer = RoundRobin([server.address])
        async with open_pipeline(connect_layout(balancer)) as h:
            await h.send(b"trigger")
            end = await ended(h)
    assert isinstance(end.error, ConnectionReset)
    assert balancer.backends[0].fails == 1


async def test_a_target_picked_by_balance_is_dialed_first() -> None:
    async with tcp_server(upper_echo) as one, tcp_server(upper_echo) as two:
        balancer = RoundRobin([one.address, two.address])
        ctx = Context(local=("127.0.0.1", 0), remote=("127.0.0.1", 0))
        ctx.set(**{PICKED: (balancer, two.address)})
        async with open_pipeline(connect_layout(balancer), ctx) as h:
            await h.send(b"q", StreamEnd())
            await ended(h)
        other = RoundRobin([one.address, two.address])  # a pick for another balancer
        async with open_pipeline(connect_layout(other), ctx) as h:
            await h.send(b"q", StreamEnd())
            await ended(h)
        assert (len(one.peers), len(two.peers)) == (1, 1)
        balancer.max_fails = 1
        balancer.failed(two.address)  # the pick went down since: the balancer picks again
        async with open_pipeline(connect_layout(balancer), ctx) as h:
            await h.send(b"q", StreamEnd())
            await ended(h)
    assert (len(one.peers), len(two.peers)) == (2, 1)
    assert [b.active for b in balancer.backends] == [0, 0]


async def test_relay_mode_counts_and_releases() -> None:
    async with tcp_server(upper_echo) as server:
        balancer = LeastConnections([server.address])
        proxy = Proxy()
        proxy.listen("127.0.0.1:0").connect(balancer)
        async with trio.open_nursery() as nursery:
            running: RuntimeServer = await nursery.start(
                partial(serve, proxy.build(), handle_signals=False)
            )
            client = await trio.open_tcp_stream("127.0.0.1", running.ports[0])
            await client.send_all(b"relay")
            with trio.fail_after(10):
                assert await client.receive_some(100) == b"RELAY"
            assert balancer.backends[0].active == 1
            await client.aclose()
            running.shutdown()
    assert balancer.backends[0].active == 0


async def test_a_plugin_balancer_by_name_drives_connect() -> None:
    """The plugin example's ``first-only`` (not a Balancer subclass), built by
    name: connect dials its pick, and fails over when its pick is dead."""
    dead = f"127.0.0.1:{dead_port()}"
    async with tcp_server(upper_echo) as server:
        for targets in ([server.address, dead], [dead, server.address]):
            balancer = make_balancer("first-only", targets)
            async with open_pipeline(connect_layout(balancer)) as h:
                await h.send(b"p", StreamEnd())
                await ended(h)
                assert h.data == b"P"
    assert len(server.peers) == 2
