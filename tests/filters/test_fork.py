"""fork: every event copied to sub-pipelines whose output is discarded."""

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
    Context,
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
from pipeline.testing import open_pipeline, run_layout


class Record(Filter):
    """Records ``(fork_index, fork_value, event)`` and outputs something else."""

    name = "record"

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def on_event(self, event: Event) -> None:
        ctx = self.context
        self.log.append((ctx.fork_index, ctx.fork_value, event))
        ctx.set(leaked=True)
        await self.output(Data(b"sub-pipeline output, to be discarded"))


def fork_layout(log: list[Any], *args: Any) -> Layout:
    proxy = Proxy()
    proxy.pipeline("main").fork(*args).to(lambda p: p.add_filter(Record, log))
    return proxy.layout("main")


EVENTS: list[Event] = [MessageStart("m"), Data(b"a"), Data(b"b"), MessageEnd(), StreamEnd()]


async def test_one_copy_by_default_output_unchanged() -> None:
    log: list[Any] = []
    context = Context()
    out = await run_layout(fork_layout(log), EVENTS, context=context)
    assert out == EVENTS
    assert log == [(0, None, e) for e in EVENTS]
    assert context.get("leaked") is None  # the fork's context is a child


async def test_a_copy_per_initializer_value() -> None:
    log: list[Any] = []
    out = await run_layout(fork_layout(log, ["x", "y", "z"]), EVENTS)
    assert out == EVENTS
    for index, value in enumerate("xyz"):
        assert [e for i, v, e in log if (i, v) == (index, value)] == EVENTS
    assert len(log) == 3 * len(EVENTS)


async def test_initializers_from_a_function_of_the_context() -> None:
    log: list[Any] = []

    async def targets(ctx: Context) -> list[str]:
        await trio.sleep(0)
        return list(ctx.mirrors)

    context = Context().set(mirrors=("m1", "m2"))
    out = await run_layout(fork_layout(log, targets), EVENTS, context=context)
    assert out == EVENTS
    assert sorted({(i, v) for i, v, _ in log}) == [(0, "m1"), (1, "m2")]


async def test_empty_initializers_fork_nothing() -> None:
    log: list[Any] = []
    assert await run_layout(fork_layout(log, []), EVENTS) == EVENTS
    assert log == []


async def test_initializer_function_must_return_a_list() -> None:
    log: list[Any] = []
    with pytest.RaisesGroup(PipelineError, flatten_subgroups=True, allow_unwrapped=True):
        await run_layout(fork_layout(log, lambda ctx: 3), EVENTS)


async def test_a_sub_pipeline_that_ends_is_closed_and_fed_no_more() -> None:
    seen: list[Event] = []

    class EndsEarly(Filter):
        name = "ends_early"

        async def on_event(self, event: Event) -> None:
            seen.append(event)
            if isinstance(event, MessageEnd):
                await self.output(StreamEnd())

    proxy = Proxy()
    proxy.pipeline("main").fork().to(lambda p: p.add_filter(EndsEarly))
    async with open_pipeline(proxy.layout("main")) as h:
        await h.send(*EVENTS[:4])
        assert not h.pipeline._children
        await h.send(MessageStart("n"), StreamEnd())
        assert h.output == [*EVENTS[:4], MessageStart("n"), StreamEnd()]
    assert seen == EVENTS[:4]


async def test_sub_pipeline_tasks_close_with_the_stream() -> None:
    class Sleeper(Filter):
        name = "sleeper"

        async def on_event(self, event: Event) -> None:
            self.pipeline.start_task(trio.sleep_forever)

    proxy = Proxy()
    proxy.pipeline("main").fork([1, 2]).to(lambda p: p.add_filter(Sleeper))
    async with open_pipeline(proxy.layout("main")) as h:
        await h.send(b"x")
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 2
        h.pipeline.close()
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 0


def test_fork_without_to_is_a_config_error_at_its_line() -> None:
    proxy = Proxy()
    proxy.pipeline("main").fork()
    line = sys._getframe().f_lineno - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert (info.value.filename, info.value.lineno) == (__file__, line)


@pytest.mark.parametrize("bad", [3, "abc", {"a": 1}])
def test_bad_initializers_are_a_config_error(bad: Any) -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.pipeline("main").fork(bad)
    assert info.value.filename == __file__ and "initializers" in str(info.value)


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.fork").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/fork.py example", "exec"), {})
