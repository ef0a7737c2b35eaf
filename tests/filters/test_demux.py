"""demux: a sub-pipeline per message, answers in message order, bounded pipelining."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from typing import Any

import pytest
import trio
import trio.testing

from pipeline import (
    ConfigError,
    ConnectRefused,
    Data,
    Event,
    Filter,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.layout import Layout
from pipeline.testing import open_pipeline


class Answer(Filter):
    """Answers its message after ``delay`` seconds (the head is ``(id, delay)``),
    from a task of its own, as ``connect`` would: ``("re", id)`` + the body. Ends
    its output if its input ends before the message is complete."""

    name = "answer"

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log = log
        self.head: Any = None
        self.body = b""
        self.complete = False

    async def on_event(self, event: Event) -> None:
        if self.log is not None:
            self.log.append((self.context.id, event))
        if isinstance(event, MessageStart):
            self.head = event.head
        elif isinstance(event, Data):
            self.body += event.data
        elif isinstance(event, MessageEnd):
            self.complete = True
            self.pipeline.start_task(self._answer)
        elif isinstance(event, StreamEnd) and not self.complete:
            await self.output(StreamEnd())

    async def _answer(self) -> None:
        ident, delay = self.head
        await trio.sleep(delay)
        await self.output(MessageStart(("re", ident)))
        await self.output(Data(self.body))
        await self.output(MessageEnd())


class Gated(Filter):
    """Answers when ``gates[id]`` is set; answers at once if ``id`` has no gate.
    Counts the sub-pipelines opened in ``opened``."""

    name = "gated"

    def __init__(self, gates: dict[Any, trio.Event], opened: list[Any]) -> None:
        self.gates = gates
        self.opened = opened
        self.head: Any = None

    async def on_event(self, event: Event) -> None:
        if isinstance(event, MessageStart):
            self.head = event.head
            self.opened.append(event.head)
        elif isinstance(event, MessageEnd):
            gate = self.gates.get(self.head)
            if gate is None:
                await self._answer()
            else:
                self.pipeline.start_task(self._wait_and_answer, gate)

    async def _wait_and_answer(self, gate: trio.Event) -> None:
        await gate.wait()
        await self._answer()

    async def _answer(self) -> None:
        await self.output(MessageStart(("re", self.head)))
        await self.output(MessageEnd())


class Fail(Filter):
    """Ends with ``StreamEnd(error)`` (or clean) instead of answering some heads."""

    name = "fail"

    def __init__(self, errors: dict[Any, BaseException | None]) -> None:
        self.errors = errors
        self.head: Any = None

    async def on_event(self, event: Event) -> None:
        if isinstance(event, MessageStart):
            self.head = event.head
        elif isinstance(event, MessageEnd):
            if self.head in self.errors:
                await self.output(StreamEnd(self.errors[self.head]))
            else:
                await self.output(MessageStart(("re", self.head)))
                await self.output(MessageEnd())


def message(head: Any, body: bytes = b"") -> list[Event]:
    events: list[Event] = [MessageStart(head)]
    if body:
        events.append(Data(body))
    events.append(MessageEnd())
    return events


def demux_layout(build: Any, **options: Any) -> Layout:
    proxy = Proxy()
    proxy.pipeline("main").demux(**options).to(build)
    return proxy.layout("main")


async def run_until_end(layout: Layout, events: list[Event]) -> list[Event]:
    """Feed ``events``, wait for the output StreamEnd (fail_after only guards
    against a hang), check that nothing is left running after close."""
    async with open_pipeline(layout) as h:
        await h.send(*events)
        with trio.fail_after(10):
            await h.ended.wait()
        h.pipeline.close()
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 0
        return list(h.output)


def answers(output: list[Event]) -> list[Any]:
    return [e.head for e in output if isinstance(e, MessageStart)]


# Ordering --------------------------------------------------------------------


async def test_answers_come_back_in_message_order_when_ready_out_of_order() -> None:
    layout = demux_layout(lambda p: p.add_filter(Answer))
    delays = [0.05, 0.01, 0.04, 0.0, 0.03, 0.02]  # later messages are ready first
    events: list[Event] = []
    for i, d in enumerate(delays):
        events += message((i, d), f"body{i}".encode())
    out = await run_until_end(layout, [*events, StreamEnd()])
    expected: list[Event] = []
    for i in range(len(delays)):
        expected += [MessageStart(("re", i)), Data(f"body{i}".encode()), MessageEnd()]
    assert out == [*expected, StreamEnd()]


async def test_each_message_gets_its_own_child_context_and_a_stream_end() -> None:
    log: list[Any] = []
    seen: list[Any] = []

    def remember(ctx: Any, head: Any) -> None:
        seen.append((ctx.get("previous"), ctx.get("user")))
        ctx.set(previous=head)

    layout = demux_layout(lambda p: p.handle_message_start(remember).add_filter(Answer, log))
    async with open_pipeline(layout) as h:
        h.pipeline.context.set(user="alice")
        await h.send(*message((1, 0)), *message((2, 0)), StreamEnd())
        with trio.fail_after(10):
            await h.ended.wait()
    # Variables set in one message's context do not leak into the next one, the
    # stream's variables are visible.
    assert seen == [(None, "alice"), (None, "alice")]
    contexts = {cid for cid, _ in log}
    assert len(contexts) == 2 and h.pipeline.context.id not in contexts
    for cid in contexts:
        # every sub-pipeline is told its input ended, after the message
        events = [e for c, e in log if c == cid]
        assert [type(e) for e in events] == [MessageStart, MessageEnd, StreamEnd]
        assert events[-1] == StreamEnd()


async def test_passthrough_sub_pipelines_answer_synchronously() -> None:
    layout = demux_layout(lambda p: p.handle_data(lambda ctx, d: None))
    events = [*message("a", b"1"), *message("b", b"2"), *message("c"), StreamEnd()]
    assert await run_until_end(layout, events) == events


async def test_data_outside_messages_is_ignored() -> None:
    layout = demux_layout(lambda p: p.add_filter(Answer))
    events = [Data(b"junk"), *message((1, 0)), Data(b"between"), MessageEnd(), StreamEnd()]
    out = await run_until_end(layout, events)
    assert out == [MessageStart(("re", 1)), Data(b""), MessageEnd(), StreamEnd()]


async def test_only_the_first_output_message_is_the_answer() -> None:
    class Twice(Filter):
        name = "twice"

        async def on_event(self, event: Event) -> None:
            if isinstance(event, MessageEnd):
                for n in (1, 2):
                    await self.output(MessageStart(n))
                    await self.output(MessageEnd())
                await self.output(StreamEnd())

    layout = demux_layout(lambda p: p.add_filter(Twice))
    out = await run_until_end(layout, [*message("x"), *message("y"), StreamEnd()])
    assert out == [MessageStart(1), MessageEnd(), MessageStart(1), MessageEnd(), StreamEnd()]


async def test_early_answer_closes_the_sub_pipeline_and_drops_the_rest_of_the_message() -> None:
    received: list[Event] = []

    class Early(Filter):
        name = "early"

        async def on_event(self, event: Event) -> None:
            received.append(event)
            if isinstance(event, MessageStart):
                await self.output(MessageStart("413"))
                await self.output(MessageEnd())

    layout = demux_layout(lambda p: p.add_filter(Early))
    events: list[Event] = [MessageStart("big"), Data(b"a"), Data(b"b"), MessageEnd(), StreamEnd()]
    out = await run_until_end(layout, events)
    assert out == [MessageStart("413"), MessageEnd(), StreamEnd()]
    assert received == [MessageStart("big")]


# Backpressure ----------------------------------------------------------------


async def test_max_pending_stops_reading_until_the_oldest_answer_is_out() -> None:
    gates = {"m1": trio.Event()}
    opened: list[Any] = []
    layout = demux_layout(lambda p: p.add_filter(Gated, gates, opened), max_pending=2)
    async with open_pipeline(layout) as h:
        sent = trio.Event()

        async def client() -> None:
            await h.send(*message("m1"), *message("m2"), *message("m3"), StreamEnd())
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            await trio.testing.wait_all_tasks_blocked()
            # m2 is answered (its answer held behind m1), m3 waits for room
            assert opened == ["m1", "m2"]
            assert h.output == []
            assert not sent.is_set()
            gates["m1"].set()
            with trio.fail_after(10):
                await h.ended.wait()
        assert opened == ["m1", "m2", "m3"]
        assert answers(h.output) == [("re", "m1"), ("re", "m2"), ("re", "m3")]
        assert h.output[-1] == StreamEnd()


async def test_held_answers_do_not_block_their_sub_pipelines() -> None:
    # m2..m4 answer at once, from the input's task, while m1 is still waiting:
    # their answers are held whole and their sub-pipelines closed.
    gates = {"m1": trio.Event()}
    opened: list[Any] = []
    layout = demux_layout(lambda p: p.add_filter(Gated, gates, opened), max_pending=8)
    async with open_pipeline(layout) as h:
        await h.send(*message("m1"), *message("m2"), *message("m3"), *message("m4"))
        await trio.testing.wait_all_tasks_blocked()
        assert opened == ["m1", "m2", "m3", "m4"] and h.output == []
        assert len(h.pipeline._children) == 1  # only m1's sub-pipeline is still open
        gates["m1"].set()
        await trio.testing.wait_all_tasks_blocked()
        assert answers(h.output) == [("re", f"m{i}") for i in (1, 2, 3, 4)]
        assert not h.ended.is_set()  # the input has not ended
        await h.send(StreamEnd())
        assert h.output[-1] == StreamEnd()
        assert h.pipeline.task_count == 0 and not h.pipeline._children


# Errors ----------------------------------------------------------------------


async def test_a_failed_sub_pipeline_ends_the_output_in_its_place() -> None:
    error = ConnectRefused("no server", target="10.0.0.1:80")
    layout = demux_layout(lambda p: p.add_filter(Fail, {"m2": error}))
    events = [*message("m1"), *message("m2"), *message("m3"), StreamEnd()]
    out = await run_until_end(layout, events)
    assert out == [MessageStart(("re", "m1")), MessageEnd(), StreamEnd(error)]
    assert out[-1].error is error  # type: ignore[union-attr]


async def test_a_clean_end_without_answer_answers_nothing() -> None:
    layout = demux_layout(lambda p: p.add_filter(Fail, {"m2": None}))
    events = [*message("m1"), *message("m2"), *message("m3"), StreamEnd()]
    out = await run_until_end(layout, events)
    assert answers(out) == [("re", "m1"), ("re", "m3")]
    assert out[-1] == StreamEnd()


async def test_a_sub_pipeline_ending_inside_its_answer_is_an_error() -> None:
    class Truncated(Filter):
        name = "truncated"

        async def on_event(self, event: Event) -> None:
            if isinstance(event, MessageEnd):
                await self.output(MessageStart("partial"))
                await self.output(Data(b"half"))
                await self.output(StreamEnd())

    layout = demux_layout(lambda p: p.add_filter(Truncated))
    out = await run_until_end(layout, [*message("m1"), StreamEnd()])
    assert out[:2] == [MessageStart("partial"), Data(b"half")]
    assert len(out) == 3 and isinstance(out[2], StreamEnd)
    assert isinstance(out[2].error, PipelineError)


async def test_input_stream_error_is_passed_on_after_pending_answers() -> None:
    layout = demux_layout(lambda p: p.add_filter(Answer))
    error = PipelineError("client went away")
    out = await run_until_end(layout, [*message((1, 0.02)), StreamEnd(error)])
    assert answers(out) == [("re", 1)]
    assert out[-1] == StreamEnd(error)


async def test_stream_end_inside_a_message_reaches_its_sub_pipeline() -> None:
    log: list[Any] = []
    layout = demux_layout(lambda p: p.add_filter(Answer, log))
    async with open_pipeline(layout) as h:
        await h.send(MessageStart((1, 0)), Data(b"x"), StreamEnd())
        with trio.fail_after(10):
            await h.ended.wait()
        assert h.output == [StreamEnd()]
    assert [e for _, e in log] == [MessageStart((1, 0)), Data(b"x"), StreamEnd()]


# Lifetime and configuration ---------------------------------------------------


async def test_closing_with_answers_in_flight_leaves_no_task() -> None:
    layout = demux_layout(lambda p: p.add_filter(Answer))
    async with open_pipeline(layout) as h:
        await h.send(*message((1, 3600)), *message((2, 3600)))
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 2
        h.pipeline.close()
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 0
        assert not h.pipeline._children
        await h.send(*message((3, 0)))  # input after close is ignored
        assert h.output == []


def test_demux_without_to_is_a_config_error_at_its_line() -> None:
    proxy = Proxy()
    proxy.pipeline("main").demux()
    line = sys._getframe().f_lineno - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert info.value.filename == __file__ and info.value.lineno == line
    assert "joint filter" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_max_pending_is_validated_at_load(bad: Any) -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.pipeline("main").demux(max_pending=bad)
    assert info.value.filename == __file__
    assert "max_pending" in str(info.value)


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.demux").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/demux.py example", "exec"), {})
