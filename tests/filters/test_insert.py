"""insert: static events and functions, at the start and at the end of a stream."""

from __future__ import annotations

import re
from typing import Any

import pytest

import filters.insert
from pipeline import (
    ConfigError,
    Context,
    Data,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.errors import ConnectRefused
from pipeline.testing import open_pipeline, run_layout
from tests.helpers import here


def insert(*args: Any, **kwargs: Any) -> Any:
    return Proxy().pipeline("t").insert(*args, **kwargs)


async def test_bytes_at_start() -> None:
    out = await run_layout(insert(b"hello"), [b"a", b"b", StreamEnd()])
    assert out == [Data(b"hello"), Data(b"a"), Data(b"b"), StreamEnd()]


async def test_at_end_before_stream_end() -> None:
    out = await run_layout(insert(b"bye", at="end"), [b"a", b"b", StreamEnd()])
    assert out == [Data(b"a"), Data(b"b"), Data(b"bye"), StreamEnd()]


async def test_at_end_waits_for_stream_end() -> None:
    async with open_pipeline(insert(b"bye", at="end")) as h:
        await h.send(b"a")
        assert h.output == [Data(b"a")]
        await h.send(StreamEnd())
        assert h.output == [Data(b"a"), Data(b"bye"), StreamEnd()]


async def test_at_end_also_on_error() -> None:
    end = StreamEnd(ConnectRefused("x"))
    out = await run_layout(insert(b"bye", at="end"), [end])
    assert out == [Data(b"bye"), end]


async def test_at_start_on_an_empty_stream() -> None:
    out = await run_layout(insert(b"hello"), [StreamEnd()])
    assert out == [Data(b"hello"), StreamEnd()]


@pytest.mark.parametrize("container", [list, tuple])
async def test_a_message(container: Any) -> None:
    events = container([MessageStart("h"), b"body", b"", Data(b"!"), MessageEnd()])
    out = await run_layout(insert(events), [b"a"])
    assert out == [MessageStart("h"), Data(b"body"), Data(b"!"), MessageEnd(), Data(b"a")]


async def test_a_single_event() -> None:
    out = await run_layout(insert(MessageEnd("t"), at="end"), [StreamEnd()])
    assert out == [MessageEnd("t"), StreamEnd()]


async def test_static_events_are_converted_once() -> None:
    layout = insert([b"x"])
    first = await run_layout(layout, [StreamEnd()])
    second = await run_layout(layout, [StreamEnd()])
    assert first[0] == Data(b"x") and first[0] is second[0]


async def test_function_called_once_per_stream() -> None:
    calls: list[Context] = []

    def fn(ctx: Context) -> bytes:
        calls.append(ctx)
        return f"#{ctx.id}".encode()

    layout = insert(fn)
    a, b = Context(), Context()
    out_a = await run_layout(layout, [b"1", b"2"], context=a)
    out_b = await run_layout(layout, [b"1"], context=b)
    assert calls == [a, b]
    assert out_a == [Data(f"#{a.id}".encode()), Data(b"1"), Data(b"2")]
    assert out_b == [Data(f"#{b.id}".encode()), Data(b"1")]


async def test_async_function_at_end() -> None:
    async def fn(ctx: Context) -> Any:
        return [MessageStart(ctx.who), MessageEnd()]

    ctx = Context().set(who="me")
    out = await run_layout(insert(fn, at="end"), [b"a", StreamEnd()], context=ctx)
    assert out == [Data(b"a"), MessageStart("me"), MessageEnd(), StreamEnd()]


async def test_function_returning_none_inserts_nothing() -> None:
    out = await run_layout(insert(lambda ctx: None), [b"a", StreamEnd()])
    assert out == [Data(b"a"), StreamEnd()]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (StreamEnd(), "cannot end a stream"),
        ([b"a", StreamEnd()], "cannot end a stream"),
        ("text", "returned 'text'"),
        ([b"a", 1], "events and bytes, not 1"),
        ((b"a",), "returned"),  # a function's result follows replace_*: lists only
    ],
)
async def test_function_bad_results(result: Any, message: str) -> None:
    async with open_pipeline(insert(lambda ctx: result)) as h:
        with pytest.raises(PipelineError, match=message):
            await h.send(b"a")
        assert h.output == []


async def test_function_exception_propagates() -> None:
    def boom(ctx: Context) -> bytes:
        raise OSError("boom")

    async with open_pipeline(insert(boom, at="end")) as h:
        await h.send(b"a")
        with pytest.raises(OSError, match="boom"):
            await h.send(StreamEnd())


def test_bad_at_is_a_config_error_at_the_call() -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        builder.insert(b"x", at="middle")
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert 'at must be "start" or "end"' in info.value.reason


def test_bad_value_is_a_config_error_at_the_call() -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        builder.insert(42)
    assert info.value.lineno == line and "insert(): expected events" in str(info.value)
    with pytest.raises(ConfigError, match="too many positional arguments"):
        builder.insert(b"x", "end")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (StreamEnd(), "cannot insert a StreamEnd"),
        ([b"a", StreamEnd()], "cannot insert a StreamEnd"),
        ([b"a", "text"], "events and bytes, not 'text'"),
    ],
)
def test_bad_static_events_fail_at_build_with_the_line(value: Any, message: str) -> None:
    proxy = Proxy()
    line = here() + 1
    proxy.pipeline("t").insert(value)
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert message in info.value.reason


async def test_module_example_runs() -> None:
    doc = filters.insert.__doc__
    assert doc is not None
    match = re.search(r"::\n\n((?:    .*\n|\n)+)", doc)
    assert match is not None
    scope: dict[str, Any] = {}
    code = "\n".join(line[4:] for line in match.group(1).splitlines())
    exec(compile(code, "example", "exec"), scope)
    proxy: Proxy = scope["proxy"]
    ctx = Context()
    out = await run_layout(proxy.layout("framed"), [b"data\n", StreamEnd()], context=ctx)
    assert out == [
        Data(b"hello\n"),
        Data(b"data\n"),
        Data(f"bye #{ctx.id}\n".encode()),
        StreamEnd(),
    ]
