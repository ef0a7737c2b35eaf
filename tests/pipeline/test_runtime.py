"""The runtime over real loopback sockets: listeners, limits, timeouts, shutdown."""

from __future__ import annotations

import logging
import socket
import struct
import sys
from collections.abc import Callable
from functools import partial

import pytest
import trio
import trio.testing

from pipeline import ConfigError, Data, Event, Filter, Proxy, StreamEnd
from pipeline.hookspecs import hookimpl
from pipeline.live import ShutdownNotice, service_nursery, shutdown_notice
from pipeline.plugins import plugin_manager
from pipeline.proxy import ProxyConfig
from pipeline.runtime import ListenError, Server, serve
from tests.helpers import serving


async def connect(port: int, host: str = "127.0.0.1") -> trio.SocketStream:
    return await trio.open_tcp_stream(host, port)


async def read_all(stream: trio.SocketStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Upper(Filter):
    name = "upper_test"

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            event = Data(event.data.upper())
        await self.output(event)


async def test_echo_and_half_close() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Upper)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        await stream.send_all(b"hello ")
        await stream.send_all(b"world")
        await stream.send_eof()  # half-close: the reply must still arrive whole
        assert await read_all(stream) == b"HELLO WORLD"
        await stream.aclose()


async def test_large_transfer_keeps_every_byte() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0")  # empty pipeline: echo
    payload = bytes(range(256)) * 40000  # ~10 MB
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        received = bytearray()

        async def sender() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            received += await read_all(stream)
        assert received == payload
        await stream.aclose()


async def test_ipv6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 is not configured")
    proxy = Proxy()
    proxy.listen("[::1]:0").add_filter(Upper)
    async with serving(proxy, grace_period=5.0) as server:
        assert server.listeners[0].address.startswith("[::1]:")
        stream = await connect(server.ports[0], "::1")
        await stream.send_all(b"v6")
        await stream.send_eof()
        assert await read_all(stream) == b"V6"


async def test_port_in_use_is_a_located_config_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        proxy = Proxy()
        proxy.listen("127.0.0.1:0")
        proxy.listen(f"127.0.0.1:{port}")
        line = sys._getframe().f_lineno - 1
        with pytest.raises(ListenError) as info:
            await serve(proxy.build(), handle_signals=False)
        assert isinstance(info.value, ConfigError)
        assert str(info.value) == (
            f"{__file__}:{line}: cannot listen on 127.0.0.1:{port}: address already in use"
        )
    finally:
        taken.close()


async def test_max_connections_queues_in_the_backlog_instead_of_refusing() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0", max_connections=2).add_filter(Upper)
    async with serving(proxy, grace_period=5.0) as server:
        port = server.ports[0]
        first, second = await connect(port), await connect(port)
        for s in (first, second):
            await s.send_all(b"x")
            assert await s.receive_some(10) == b"X"
        third = await connect(port)  # the kernel accepts it into the backlog...
        await third.send_all(b"y")
        with trio.move_on_after(0.3) as waited:
            await third.receive_some(10)  # ...but it is not served while two are open
        assert waited.cancelled_caught
        assert server.listeners[0].active == 2
        await first.aclose()
        with trio.fail_after(5):
            assert await third.receive_some(10) == b"Y"  # served once a slot frees
        await second.aclose()
        await third.aclose()


async def test_idle_timeout_closes_a_silent_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioxy")
    proxy = Proxy()
    proxy.listen("127.0.0.1:0", idle_timeout=0.1)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        with trio.fail_after(5):
            assert await read_all(stream) == b""
        assert server.streams == set()
    assert any("idle for 0.1s" in r.getMessage() for r in caplog.records)


async def test_read_timeout(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trioxy")
    proxy = Proxy()
    proxy.listen("127.0.0.1:0", read_timeout=0.1, idle_timeout=None)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        with trio.fail_after(5):
            assert await read_all(stream) == b""
    assert any("nothing read for 0.1s" in r.getMessage() for r in caplog.records)


async def test_a_failing_callback_ends_only_its_stream(caplog: pytest.LogCaptureFixture) -> None:
    def explode(ctx: object, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("script bug")

    proxy = Proxy()
    proxy.listen("127.0.0.1:0").handle_data(explode)
    async with serving(proxy, grace_period=5.0) as server:
        bad = await connect(server.ports[0])
        await bad.send_all(b"boom")
        with trio.fail_after(5):
            assert await read_all(bad) == b""
        good = await connect(server.ports[0])
        await good.send_all(b"fine")
        await good.send_eof()
        assert await read_all(good) == b"fine"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: script bug" in errors[0].getMessage()


async def test_graceful_shutdown_lets_a_stream_in_flight_finish() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Upper)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, proxy.build(), grace_period=10, handle_signals=False)
        )
        port = server.ports[0]
        stream = await connect(port)
        await stream.send_all(b"before")
        assert await stream.receive_some(100) == b"BEFORE"
        server.shutdown()
        await trio.sleep(0.1)
        with pytest.raises(OSError):  # no longer accepting
            await connect(port)
        await stream.send_all(b" after")  # the open stream is still served
        await stream.send_eof()
        assert await read_all(stream) == b" AFTER"
        await stream.aclose()
    # serve() returned on its own once the last stream ended, well within the grace period


async def test_grace_period_expiry_closes_open_streams() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, proxy.build(), grace_period=0.2, handle_signals=False)
        )
        stream = await connect(server.ports[0])
        await stream.send_all(b"x")
        assert await stream.receive_some(10) == b"x"
        server.shutdown()
        with trio.fail_after(5):
            assert await read_all(stream) == b""  # closed by the server after 0.2 s


async def test_pipeline_error_end_closes_the_client_promptly() -> None:
    class Refuse(Filter):
        name = "refuse_test"

        async def on_event(self, event: Event) -> None:
            await self.output(StreamEnd(RuntimeError("no")))

    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Refuse)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        await stream.send_all(b"x")
        with trio.fail_after(5):
            assert await read_all(stream) == b""


async def test_no_task_is_left_after_streams_end() -> None:
    started: list[Callable[[], int]] = []

    class Sleeper(Filter):
        name = "sleeper_test"

        async def on_event(self, event: Event) -> None:
            if not started:
                self.pipeline.start_task(trio.sleep_forever)
                started.append(lambda: self.pipeline.task_count)
            await self.output(event)

    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Sleeper)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        await stream.send_all(b"x")
        await stream.send_eof()
        assert await read_all(stream) == b"x"
        with trio.fail_after(5):
            while server.streams:
                await trio.sleep(0.01)
        assert started[0]() == 0


async def test_write_timeout_closes_a_client_that_does_not_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "trioxy")

    class Flood(Filter):
        name = "flood_test"

        async def on_event(self, event: Event) -> None:
            chunk = Data(b"x" * 65536)
            while True:  # until the write times out and the stream is cancelled
                await self.output(chunk)

    proxy = Proxy()
    proxy.listen("127.0.0.1:0", write_timeout=0.2).add_filter(Flood)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        await stream.send_all(b"go")
        with trio.fail_after(10):
            while server.streams:  # the client reads nothing; the server gives up
                await trio.sleep(0.05)
        await stream.aclose()
    assert any("client accepted nothing" in r.getMessage() for r in caplog.records)


#: More than the kernel's socket buffers on both ends of a loopback connection
#: hold: writing it to a client that is not reading must wait at least once.
BURST = bytes(range(256)) * 32768  # 8 MiB


class Burst(Filter):
    """On the first Data, outputs BURST in 64 KiB events (then ends the stream if
    ``end``), whatever the client reads: the writer has to wait for the client."""

    name = "burst_test"
    end = True

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            for i in range(0, len(BURST), 65536):
                await self.output(Data(BURST[i : i + 65536]))
            if self.end:
                await self.output(StreamEnd())


async def test_a_client_reading_late_still_gets_every_byte() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Burst)
    async with serving(proxy, grace_period=5.0) as server:
        stream = await connect(server.ports[0])
        await stream.send_all(b"go")
        # Every task is blocked: the server's writer is waiting for the client.
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.streams) == 1
        with trio.fail_after(30):
            received = await read_all(stream)
        assert received == BURST
        await stream.aclose()


async def test_shutdown_cancels_a_write_blocked_on_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Endless(Burst):
        name = "endless_test"
        end = False

    proxy = Proxy()
    proxy.listen("127.0.0.1:0", write_timeout=None).add_filter(Endless)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, proxy.build(), grace_period=30, handle_signals=False)
        )
        stream = await connect(server.ports[0])
        await stream.send_all(b"go")
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.streams) == 1
        server.shutdown(immediate=True)
    # serve() returned: the blocked write was cancelled and the stream is gone.
    assert server.streams == set()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    with trio.fail_after(30):
        received = await read_all(stream)  # what was written, then the end
    assert 0 < len(received) < len(BURST)
    assert received == BURST[: len(received)]
    await stream.aclose()


async def test_a_write_error_ends_the_stream_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Burst)
    async with serving(proxy, grace_period=5.0) as server:
        sock = socket.create_connection(("127.0.0.1", server.ports[0]))
        sock.sendall(b"go")
        await trio.testing.wait_all_tasks_blocked()
        # Close with unread data: a reset, so the server's next write fails.
        sock.close()
        with trio.fail_after(10):
            while server.streams:
                await trio.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_reset_reaches_the_pipeline_as_an_error_end() -> None:
    ends: list[StreamEnd] = []

    class Record(Filter):
        """Writes nothing back (a write would see the reset first); records the end."""

        name = "record_end_test"

        async def on_event(self, event: Event) -> None:
            if type(event) is StreamEnd:
                ends.append(event)
                await self.output(event)

    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Record)
    async with serving(proxy, grace_period=5.0) as server:
        sock = socket.create_connection(("127.0.0.1", server.ports[0]))
        sock.sendall(b"x")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # linger 0: a reset instead of a FIN
        with trio.fail_after(10):
            while server.streams or not ends:
                await trio.sleep(0.01)
    [end] = ends
    assert isinstance(end.error, ConnectionResetError)


# Startup and the shutdown notice ----------------------------------------------------


async def test_the_startup_hook_runs_with_the_services_in_place() -> None:
    seen: list[tuple[bool, ShutdownNotice | None]] = []

    class Startup:
        @hookimpl
        def trioxy_startup(self, config: ProxyConfig) -> None:
            seen.append((service_nursery.get() is not None, shutdown_notice.get()))

    proxy = Proxy()
    proxy.listen("127.0.0.1:0")
    pm = plugin_manager()
    plugin = Startup()
    pm.register(plugin)
    try:
        async with serving(proxy, grace_period=5.0) as server:
            assert seen == [(True, server.notice)]
    finally:
        pm.unregister(plugin)


async def test_a_failing_startup_hook_stops_the_server_with_its_own_error() -> None:
    calls: list[str] = []

    class Refuse:
        @hookimpl
        def trioxy_startup(self, config: ProxyConfig) -> None:
            raise ConfigError("not today")

        @hookimpl
        def trioxy_shutdown(self, config: ProxyConfig) -> None:
            calls.append("shutdown")

    proxy = Proxy()
    proxy.listen("127.0.0.1:0")
    pm = plugin_manager()
    plugin = Refuse()
    pm.register(plugin)
    try:
        with pytest.raises(ConfigError, match="not today"):  # as itself, not in a group
            await serve(proxy.build(), handle_signals=False)
    finally:
        pm.unregister(plugin)
    assert calls == ["shutdown"]


async def test_the_notice_reaches_streams_once_nothing_is_accepted() -> None:
    """A stream's filter subscribes to the notice; its callback runs when the
    listeners are closed. A stream that does not act on it keeps its grace period."""
    heard: list[bool] = []
    servers: list[Server] = []

    class Listen(Filter):
        name = "listen_notice_test"

        def __init__(self) -> None:
            self.notice = shutdown_notice.get()
            if self.notice is not None:
                self.notice.subscribe(self.heard)

        def heard(self) -> None:
            heard.append(servers[0].listeners[0].sock.fileno() == -1)  # closed already

        async def on_event(self, event: Event) -> None:
            await self.output(event)

    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Listen)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, proxy.build(), grace_period=30, handle_signals=False)
        )
        servers.append(server)
        stream = await connect(server.ports[0])
        await stream.send_all(b"x")
        assert await stream.receive_some(10) == b"x"
        assert not server.notice.started
        server.shutdown()
        with trio.fail_after(10):
            await server.notice.wait()
        assert heard == [True]
        await stream.send_all(b"y")  # still served: the filter did not close it
        assert await stream.receive_some(10) == b"y"
        await stream.send_eof()
        with trio.fail_after(10):
            assert await read_all(stream) == b""
        await stream.aclose()


async def test_notice_callbacks_run_once_and_a_failing_one_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notice = ShutdownNotice()
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("plugin bug")

    notice.subscribe(lambda: calls.append("first"))
    notice.subscribe(broken)
    notice.subscribe(lambda: calls.append("last"))
    gone = partial(calls.append, "unsubscribed")
    notice.subscribe(gone)
    notice.unsubscribe(gone)
    notice.unsubscribe(gone)  # no error
    notice.start()
    notice.start()
    await notice.wait()
    assert notice.started and calls == ["first", "last"]
    [failure] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "shutdown callback" in failure.getMessage()
