"""connect_smux / accept_smux: in memory, and over real loopback links."""

from __future__ import annotations

import os
import random
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import filters.smux
from filters.smux import LinkLost
from pipeline import ConfigError, Data, Proxy, StreamEnd
from pipeline.testing import join_data, open_pipeline
from tests.helpers import serving


def test_docstring_example_runs() -> None:
    doc = filters.smux.__doc__ or ""
    code = doc.split("Example (runnable)")[1].split("::\n", 1)[1].split("\nIn a gateway")[0]
    exec(textwrap.dedent(code), {})


def test_bad_arguments_are_load_errors() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match="max_links"):
        proxy.pipeline("a").connect_smux(max_links=0).to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="window"):
        proxy.pipeline("b").accept_smux(window=10).to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="metadata"):
        proxy.pipeline("c").connect_smux(metadata="nope").to(lambda p: p.dump())


async def test_a_failing_far_stream_resets_only_that_stream() -> None:
    proxy = Proxy()

    def explode(ctx: object, data: bytes) -> bytes:
        if data == b"boom":
            raise RuntimeError("bad stream")
        return data

    proxy.pipeline("far").accept_smux().to(lambda p: p.replace_data(explode))
    proxy.pipeline("near").connect_smux(max_links=1).to("far")
    layout = proxy.layout("near")
    async with open_pipeline(layout) as bad, open_pipeline(layout) as good:
        await bad.send(Data(b"boom"))
        await good.send(Data(b"fine"), StreamEnd())
        await bad.settle()
        await good.settle()
        assert join_data(good.output) == b"fine" and good.output[-1] == StreamEnd()
        end = bad.output[-1]
        assert isinstance(end, StreamEnd) and "RuntimeError" in str(end.error)


# Over real sockets --------------------------------------------------------------


async def echo_handler(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass


class BreakableRelay:
    """A TCP relay between the two gateways whose connections the test can cut."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.accepted = 0
        self.scopes: list[trio.CancelScope] = []

    async def handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        with trio.CancelScope() as scope:
            self.scopes.append(scope)
            async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as server:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._copy, client, server)
                    nursery.start_soon(self._copy, server, client)

    @staticmethod
    async def _copy(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def cut(self) -> None:
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()


async def exchange(port: int, payload: bytes) -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        received: list[bytes] = []

        async def reader() -> None:
            while data := await stream.receive_some(65536):
                received.append(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for i in range(0, len(payload), 7000):
                await stream.send_all(payload[i : i + 7000])
            await stream.send_eof()
        return b"".join(received)


@asynccontextmanager
async def gateways(window: int = 262144, max_links: int = 2) -> AsyncIterator[tuple[int, list]]:
    """near (port returned) --smux links--> relay --> far --> echo server."""
    async with trio.open_nursery() as nursery:
        echo = (await nursery.start(trio.serve_tcp, echo_handler, 0))[0]
        echo_port = echo.socket.getsockname()[1]
        far = Proxy()
        (
            far.listen("127.0.0.1:0")
            .accept_smux(window=window)
            .to(lambda p: p.connect(lambda ctx: ctx.target))
        )
        async with serving(far) as far_server:
            relay = BreakableRelay(far_server.ports[0])
            listeners = await nursery.start(trio.serve_tcp, relay.handle, 0)
            relay_port = listeners[0].socket.getsockname()[1]
            near = Proxy()
            (
                near.listen("127.0.0.1:0")
                .connect_smux(
                    metadata=lambda ctx: {"target": f"127.0.0.1:{echo_port}"},
                    max_links=max_links,
                    window=window,
                    reconnect_delay=0.05,
                )
                .to(lambda p: p.connect(f"127.0.0.1:{relay_port}"))
            )
            async with serving(near) as near_server:
                yield near_server.ports[0], [relay]
        nursery.cancel_scope.cancel()


async def test_many_concurrent_streams_over_two_links_keep_every_byte() -> None:
    async with gateways(max_links=2) as (port, (relay,)):
        rng = random.Random(7)
        payloads = [os.urandom(rng.randrange(1, 200_000)) for _ in range(200)]
        results: list[bytes | None] = [None] * len(payloads)

        async def one(i: int) -> None:
            results[i] = await exchange(port, payloads[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(payloads)):
                nursery.start_soon(one, i)
        assert results == payloads
        assert relay.accepted == 2  # 200 streams, never more than max_links links


async def test_a_stalled_stream_does_not_stall_the_others() -> None:
    async with gateways(window=16384, max_links=1) as (port, _):
        stalled = await trio.open_tcp_stream("127.0.0.1", port)
        async with stalled:
            # Ten times the window goes out and is echoed back, but the client never
            # reads it: the stream's window fills and only that stream stops.
            with trio.move_on_after(0.5):
                await stalled.send_all(os.urandom(163840))
            payload = os.urandom(300_000)
            with trio.fail_after(20):
                assert await exchange(port, payload) == payload


async def test_link_break_fails_open_streams_and_new_streams_reconnect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with gateways(max_links=1) as (port, (relay,)):
        assert await exchange(port, b"before") == b"before"
        victim = await trio.open_tcp_stream("127.0.0.1", port)
        async with victim:
            await victim.send_all(b"ping")
            assert await victim.receive_some(100) == b"ping"
            relay.cut()
            with trio.fail_after(10):  # the open stream ends promptly, not hangs
                with pytest.raises(trio.BrokenResourceError):
                    while await victim.receive_some(100):
                        pass
                    raise trio.BrokenResourceError  # a clean EOF also counts as closed
        with trio.fail_after(10):
            assert await exchange(port, b"after") == b"after"
        assert relay.accepted == 2
        assert "smux link failed with 1 open streams" in caplog.text


async def test_link_lost_reaches_the_far_side_stream_as_an_error() -> None:
    seen: list[BaseException | None] = []
    far = Proxy()
    (
        far.listen("127.0.0.1:0")
        .accept_smux()
        .to(lambda p: p.handle_stream_end(lambda ctx, error: seen.append(error)))
    )
    async with serving(far) as server:
        link = await trio.open_tcp_stream("127.0.0.1", server.ports[0])
        from protocols.smux import FrameType, encode_frame

        await link.send_all(encode_frame(FrameType.OPEN, 1, b"{}"))
        await link.send_all(encode_frame(FrameType.DATA, 1, b"x"))
        await trio.sleep(0.1)
        await link.aclose()
        with trio.fail_after(5):
            while not seen:
                await trio.sleep(0.02)
    assert isinstance(seen[0], LinkLost)
