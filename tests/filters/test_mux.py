"""mux: many streams, one shared session per key, answers matched first-in first-out."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from filters.mux import MuxPool, session_nursery
from pipeline import (
    ConfigError,
    ConnectRefused,
    Context,
    Data,
    Event,
    Filter,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
    UpstreamError,
)
from pipeline.layout import Layout
from pipeline.testing import open_pipeline


class Server(Filter):
    """A session's far end: answers the messages it receives, in order, from a task
    of its own (as a server behind ``connect`` does), ``("re", head)`` + the body.

    A head ``(name, delay)`` delays that answer; answers wait for ``gate`` if one is
    given; a head ``"die"`` makes the server end its output with an error.
    Every instance registers in ``servers``; it records the events it received.
    """

    name = "server"

    def __init__(self, servers: list[Server], gate: trio.Event | None = None) -> None:
        self.servers = servers
        self.gate = gate
        self.received: list[Event] = []
        self.closed = False
        self.send: trio.MemorySendChannel[tuple[Any, bytes]] | None = None
        self.head: Any = None
        self.body = b""

    async def on_event(self, event: Event) -> None:
        if self.send is None:
            self.servers.append(self)
            self.send, receive = trio.open_memory_channel[tuple[Any, bytes]](1000)
            self.pipeline.start_task(self._serve, receive)
        self.received.append(event)
        if isinstance(event, MessageStart):
            self.head, self.body = event.head, b""
        elif isinstance(event, Data):
            self.body += event.data
        elif isinstance(event, MessageEnd):
            if self.head == "die":
                await self.output(StreamEnd(ConnectRefused("server down")))
                return
            self.send.send_nowait((self.head, self.body))

    async def _serve(self, receive: trio.MemoryReceiveChannel[tuple[Any, bytes]]) -> None:
        async for head, body in receive:
            if isinstance(head, tuple):
                await trio.sleep(head[1])
            if self.gate is not None:
                await self.gate.wait()
            await self.output(MessageStart(("re", head)))
            await self.output(Data(body))
            await self.output(MessageEnd())

    def close(self) -> None:
        self.closed = True

    def messages(self) -> list[Any]:
        """Heads received; checks each message arrived whole, never interleaved."""
        heads = []
        open_head: Any = None
        for event in self.received:
            if isinstance(event, MessageStart):
                assert open_head is None, "messages interleaved in the session"
                open_head = event.head
            elif isinstance(event, MessageEnd):
                heads.append(open_head)
                open_head = None
        return heads


@asynccontextmanager
async def services() -> AsyncIterator[trio.Nursery]:
    """A long-lived nursery for sessions, as the runtime provides."""
    async with trio.open_nursery() as nursery:
        token = session_nursery.set(nursery)
        try:
            yield nursery
        finally:
            session_nursery.reset(token)


def mux_layout(servers: list[Server], gate: trio.Event | None = None, **options: Any) -> Layout:
    proxy = Proxy()
    proxy.pipeline("client").mux(**options).to(lambda p: p.add_filter(Server, servers, gate))
    return proxy.layout("client")


def pool_of(layout: Layout) -> MuxPool:
    (pool,) = [spec.state for spec in layout.specs if spec.name == "mux"]
    assert isinstance(pool, MuxPool)
    return pool


def request(head: Any, body: bytes = b"") -> list[Event]:
    return [MessageStart(head), Data(body), MessageEnd()]


def response(head: Any, body: bytes = b"") -> list[Event]:
    return [MessageStart(("re", head)), Data(body), MessageEnd()]


async def exchange(
    layout: Layout, events: list[Event], context: Context | None = None
) -> list[Event]:
    """One stream: send ``events``, wait for the output StreamEnd (fail_after only
    guards against a hang), check no task of the stream is left after close."""
    async with open_pipeline(layout, context) as h:
        await h.send(*events)
        with trio.fail_after(30):
            await h.ended.wait()
        h.pipeline.close()
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 0
        return list(h.output)


async def close_and_check(pool: MuxPool, nursery: trio.Nursery) -> None:
    pool.close()
    await trio.testing.wait_all_tasks_blocked()
    assert len(pool) == 0
    assert not nursery.child_tasks, "a session left tasks running"


# Sharing and matching ------------------------------------------------------------


async def test_concurrent_streams_share_one_session_and_get_their_own_answers() -> None:
    servers: list[Server] = []
    layout = mux_layout(servers)
    results: dict[int, list[Event]] = {}
    async with services() as nursery:

        async def stream(i: int) -> None:
            await trio.sleep(0.001 * (i % 3))
            head = (f"s{i}", 0.001 * ((7 * i) % 5))
            results[i] = await exchange(layout, [*request(head, b"%d" % i), StreamEnd()])

        async with trio.open_nursery() as clients:
            for i in range(20):
                clients.start_soon(stream, i)
        assert len(servers) == 1
        assert len(servers[0].messages()) == 20  # whole messages, never interleaved
        assert len(pool_of(layout)) == 1  # the streams' ends did not close it
        assert not servers[0].closed
        await close_and_check(pool_of(layout), nursery)
    assert servers[0].closed
    for i in range(20):
        head = (f"s{i}", 0.001 * ((7 * i) % 5))
        assert results[i] == [*response(head, b"%d" % i), StreamEnd()]


async def test_one_stream_with_pipelined_messages_gets_answers_in_order() -> None:
    servers: list[Server] = []
    layout = mux_layout(servers)
    async with services() as nursery:
        events = [*request(("a", 0.02)), *request(("b", 0)), *request(("c", 0.01))]
        out = await exchange(layout, [*events, StreamEnd()])
        assert out == [
            *response(("a", 0.02)),
            *response(("b", 0)),
            *response(("c", 0.01)),
            StreamEnd(),
        ]
        await close_and_check(pool_of(layout), nursery)


async def test_keys_select_sessions_and_the_session_context_sees_the_openers() -> None:
    servers: list[Server] = []
    targets: list[Any] = []

    async def key(ctx: Context) -> Any:
        await trio.sleep(0)
        return ctx.target

    proxy = Proxy()
    (
        proxy.pipeline("client")
        .mux(key=key)
        .to(
            lambda p: p.handle_stream_start(lambda ctx: targets.append(ctx.target)).add_filter(
                Server, servers
            )
        )
    )
    layout = proxy.layout("client")
    async with services() as nursery:
        for i, target in enumerate(["a", "b", "a", "b", "a"]):
            ctx = Context().set(target=target)
            out = await exchange(layout, [*request(i), StreamEnd()], ctx)
            assert out == [*response(i), StreamEnd()]
        assert sorted(targets) == ["a", "b"]
        by_target = dict(zip(targets, servers, strict=True))
        assert by_target["a"].messages() == [0, 2, 4]
        assert by_target["b"].messages() == [1, 3]
        await close_and_check(pool_of(layout), nursery)


async def test_mux_under_demux_keeps_pipelined_answers_in_order() -> None:
    servers: list[Server] = []
    proxy = Proxy()
    proxy.pipeline("upstream").add_filter(Server, servers)
    proxy.pipeline("main").demux().to(lambda p: p.mux().to("upstream"))
    layout = proxy.layout("main")
    async with services() as nursery:
        heads = [("r1", 0.02), ("r2", 0.0), ("r3", 0.01), ("r4", 0.0)]
        events = [e for h in heads for e in request(h, h[0].encode())]
        out = await exchange(layout, [*events, StreamEnd()])
        assert out == [*(e for h in heads for e in response(h, h[0].encode())), StreamEnd()]
        assert len(servers) == 1
        await close_and_check(pool_of(proxy.layout("main").specs[0].subs[0].layout), nursery)


# Limits ------------------------------------------------------------------------


async def test_max_queue_opens_another_session_when_full() -> None:
    servers: list[Server] = []
    gate = trio.Event()
    layout = mux_layout(servers, gate, max_queue=2)
    outputs: dict[int, list[Event]] = {}
    async with services() as nursery:
        async with trio.open_nursery() as clients:
            for i in range(5):

                async def stream(i: int = i) -> None:
                    outputs[i] = await exchange(layout, [*request(i), StreamEnd()])

                clients.start_soon(stream)
                await trio.testing.wait_all_tasks_blocked()
            assert len(pool_of(layout)) == 3  # 2 + 2 + 1 messages waiting
            assert [s.messages() for s in servers] == [[0, 1], [2, 3], [4]]
            gate.set()
        for i in range(5):
            assert outputs[i] == [*response(i), StreamEnd()]
        await close_and_check(pool_of(layout), nursery)


async def test_max_messages_retires_a_session_after_its_last_answer() -> None:
    servers: list[Server] = []
    layout = mux_layout(servers, max_messages=2)
    async with services() as nursery:
        for i in range(5):
            assert await exchange(layout, [*request(i), StreamEnd()]) == [*response(i), StreamEnd()]
        assert [s.messages() for s in servers] == [[0, 1], [2, 3], [4]]
        assert [s.closed for s in servers] == [True, True, False]
        assert len(pool_of(layout)) == 1
        await close_and_check(pool_of(layout), nursery)


async def test_max_idle_closes_an_idle_session(autojump_clock: trio.testing.MockClock) -> None:
    servers: list[Server] = []
    layout = mux_layout(servers, max_idle=10)
    pool = pool_of(layout)
    async with services() as nursery:
        assert await exchange(layout, [*request(1), StreamEnd()]) == [*response(1), StreamEnd()]
        await trio.sleep(6)
        assert await exchange(layout, [*request(2), StreamEnd()]) == [*response(2), StreamEnd()]
        await trio.sleep(6)  # idle 6s since the last answer: still open
        assert len(pool) == 1 and not servers[0].closed
        await trio.sleep(6)
        assert len(pool) == 0 and servers[0].closed
        assert not nursery.child_tasks
        assert await exchange(layout, [*request(3), StreamEnd()]) == [*response(3), StreamEnd()]
        assert len(servers) == 2 and servers[1].messages() == [3]
        await close_and_check(pool, nursery)


async def test_no_idle_timeout_keeps_the_session(autojump_clock: trio.testing.MockClock) -> None:
    servers: list[Server] = []
    layout = mux_layout(servers, max_idle=None)
    async with services() as nursery:
        await exchange(layout, [*request(1), StreamEnd()])
        await trio.sleep(3600)
        assert len(pool_of(layout)) == 1 and not servers[0].closed
        await close_and_check(pool_of(layout), nursery)


# Failures ----------------------------------------------------------------------


async def test_a_failed_session_fails_its_waiters_and_is_replaced() -> None:
    servers: list[Server] = []
    gate = trio.Event()
    layout = mux_layout(servers, gate)
    outputs: dict[str, list[Event]] = {}
    async with services() as nursery:
        async with trio.open_nursery() as clients:
            for name in ("a", "b", "die"):

                async def stream(name: str = name) -> None:
                    outputs[name] = await exchange(layout, [*request(name), StreamEnd()])

                clients.start_soon(stream)
                await trio.testing.wait_all_tasks_blocked()
        for name in ("a", "b", "die"):
            (end,) = outputs[name]
            assert isinstance(end, StreamEnd) and isinstance(end.error, ConnectRefused)
        assert len(pool_of(layout)) == 0 and servers[0].closed
        assert not nursery.child_tasks
        gate.set()
        assert await exchange(layout, [*request("c"), StreamEnd()]) == [*response("c"), StreamEnd()]
        assert len(servers) == 2
        await close_and_check(pool_of(layout), nursery)


async def test_a_session_ending_cleanly_fails_its_waiters_with_an_upstream_error() -> None:
    class Hangup(Filter):
        name = "hangup"

        async def on_event(self, event: Event) -> None:
            if isinstance(event, MessageEnd):
                await self.output(StreamEnd())

    proxy = Proxy()
    proxy.pipeline("client").mux().to(lambda p: p.add_filter(Hangup))
    layout = proxy.layout("client")
    async with services() as nursery:
        (end,) = await exchange(layout, [*request(1), StreamEnd()])
        assert isinstance(end, StreamEnd) and isinstance(end.error, UpstreamError)
        await close_and_check(pool_of(layout), nursery)


async def test_a_closed_waiting_stream_keeps_the_line_in_order() -> None:
    servers: list[Server] = []
    gate = trio.Event()
    layout = mux_layout(servers, gate)
    async with services() as nursery:
        async with open_pipeline(layout) as first, open_pipeline(layout) as second:
            await first.send(*request("first"))
            await second.send(*request("second"), StreamEnd())
            await trio.testing.wait_all_tasks_blocked()
            first.pipeline.close()  # the client went away while waiting
            gate.set()
            with trio.fail_after(30):
                await second.ended.wait()
            assert second.output == [*response("second"), StreamEnd()]
            assert first.output == []
        assert servers[0].messages() == ["first", "second"]
        assert pool_of(layout).sessions[None][0].load == 0
        await close_and_check(pool_of(layout), nursery)


async def test_a_stream_output_error_does_not_break_the_session() -> None:
    servers: list[Server] = []
    proxy = Proxy()

    def explode(ctx: Context, head: Any) -> None:
        if head == ("re", "bad"):
            raise RuntimeError("downstream bug")

    (
        proxy.pipeline("client")
        .mux()
        .to(lambda p: p.add_filter(Server, servers))
        .handle_message_start(explode)
    )
    layout = proxy.layout("client")
    async with services() as nursery:
        with pytest.RaisesGroup(RuntimeError, flatten_subgroups=True):
            async with open_pipeline(layout) as bad:
                await bad.send(*request("bad"), StreamEnd())
                await trio.testing.wait_all_tasks_blocked()
        assert bad.output == []  # the stream ended with the exception
        assert await exchange(layout, [*request("ok"), StreamEnd()]) == [
            *response("ok"),
            StreamEnd(),
        ]
        assert len(servers) == 1
        await close_and_check(pool_of(layout), nursery)


async def test_input_outside_messages_is_ignored_and_end_passes_on() -> None:
    servers: list[Server] = []
    layout = mux_layout(servers)
    async with services() as nursery:
        error = PipelineError("client reset")
        out = await exchange(layout, [Data(b"junk"), *request(1), Data(b"x"), StreamEnd(error)])
        assert out == [*response(1), StreamEnd(error)]
        assert servers[0].messages() == [1]
        await close_and_check(pool_of(layout), nursery)


async def test_sessions_of_a_finished_harness_are_not_reused() -> None:
    # Without a service nursery of the test's own, each harness lends its nursery
    # to the sessions it opens and cancels it when it ends.
    servers: list[Server] = []
    layout = mux_layout(servers)
    for i in range(3):
        assert await exchange(layout, [*request(i), StreamEnd()]) == [*response(i), StreamEnd()]
    assert [s.messages() for s in servers] == [[0], [1], [2]]
    assert servers[0].closed and servers[1].closed
    pool_of(layout).close()


# Configuration -------------------------------------------------------------------


def test_mux_without_to_is_a_config_error_at_its_line() -> None:
    proxy = Proxy()
    proxy.pipeline("client").mux()
    line = sys._getframe().f_lineno - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert (info.value.filename, info.value.lineno) == (__file__, line)


@pytest.mark.parametrize(
    "options",
    [
        {"key": "target"},
        {"max_idle": 0},
        {"max_idle": -1.0},
        {"max_idle": "10"},
        {"max_queue": -1},
        {"max_queue": 1.5},
        {"max_messages": -2},
        {"max_messages": True},
        {"bogus": 1},
    ],
)
def test_options_are_validated_at_load(options: dict[str, Any]) -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.pipeline("client").mux(**options)
    assert info.value.filename == __file__


def test_each_builder_call_has_its_own_pool() -> None:
    proxy = Proxy()
    proxy.pipeline("a").mux().to(lambda p: p.dump())
    proxy.pipeline("b").mux().to(lambda p: p.dump())
    a, b = pool_of(proxy.layout("a")), pool_of(proxy.layout("b"))
    assert a is not b


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.mux").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/mux.py example", "exec"), {})
