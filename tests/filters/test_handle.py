"""handle_*: callbacks see events (sync and async), every event passes on unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline import (
    ConfigError,
    Context,
    Data,
    Event,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.errors import ConnectRefused
from pipeline.testing import open_pipeline, run_layout
from tests.helpers import here


def handle(method: str, *args: Any, **kwargs: Any) -> Any:
    return getattr(Proxy().pipeline("t"), method)(*args, **kwargs)


ERROR = ConnectRefused("refused")
STREAM: list[Event] = [
    Data(b"pre"),
    MessageStart("h1"),
    Data(b"ab"),
    Data(b"cd"),
    MessageEnd("t1"),
    MessageStart("h2"),
    MessageEnd(),
    StreamEnd(ERROR),
]

# What each filter's callback receives from STREAM (after the context).
EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    "handle_stream_start": [()],
    "handle_message_start": [("h1",), ("h2",)],
    "handle_data": [(b"pre",), (b"ab",), (b"cd",)],
    "handle_message_end": [("t1",), (None,)],
    "handle_message": [("h1", b"abcd"), ("h2", b"")],
    "handle_stream_end": [(ERROR,)],
}


def recorder(calls: list[tuple[Any, ...]], asynchronous: bool) -> Any:
    """A callback recording its arguments; it returns junk, which must be ignored."""
    if asynchronous:

        async def record_async(ctx: Context, *args: Any) -> Any:
            calls.append((ctx, *args))
            return "ignored"

        return record_async

    def record(ctx: Context, *args: Any) -> Any:
        calls.append((ctx, *args))
        return [Data(b"ignored")]

    return record


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("method", list(EXPECTED))
async def test_callback_sees_events_and_events_pass(method: str, asynchronous: bool) -> None:
    calls: list[tuple[Any, ...]] = []
    ctx = Context()
    out = await run_layout(handle(method, recorder(calls, asynchronous)), STREAM, context=ctx)
    assert out == STREAM
    assert all(a is b for a, b in zip(out, STREAM, strict=True))
    assert all(call[0] is ctx for call in calls)
    assert [call[1:] for call in calls] == EXPECTED[method]


@pytest.mark.parametrize("method", list(EXPECTED))
async def test_callback_runs_before_the_event_passes(method: str) -> None:
    """The callback is awaited before its event goes on, so it can set context
    variables that the next filters read."""
    seen: list[Any] = []

    def mark(ctx: Context, *args: Any) -> None:
        ctx.set(marked=True)

    builder = handle(method, mark).handle_data(lambda ctx, d: seen.append(ctx.get("marked")))
    builder.handle_stream_end(lambda ctx, e: seen.append(ctx.get("marked")))
    await run_layout(builder, STREAM)
    # Seen at Data "pre" (before any message), "ab", "cd", then at StreamEnd.
    marked_from = {
        "handle_stream_start": 0,
        "handle_data": 0,
        "handle_message_start": 1,
        "handle_message_end": 3,
        "handle_message": 3,
        "handle_stream_end": 3,
    }[method]
    assert seen == [None] * marked_from + [True] * (4 - marked_from)


async def test_stream_start_called_once_even_for_an_empty_stream() -> None:
    calls: list[Any] = []
    out = await run_layout(handle("handle_stream_start", calls.append), [StreamEnd()])
    assert out == [StreamEnd()] and len(calls) == 1


async def test_handle_message_between_messages_and_max_size() -> None:
    calls: list[Any] = []
    layout = handle("handle_message", lambda ctx, head, body: calls.append(body), max_size=4)
    out = await run_layout(layout, [MessageStart(), b"abcd", MessageEnd(), StreamEnd()])
    assert calls == [b"abcd"] and len(out) == 4
    out = await run_layout(layout, [MessageStart(), b"abc", b"de"])
    assert out[:2] == [MessageStart(), Data(b"abc")]
    assert type(out[2]) is StreamEnd and isinstance(out[2].error, PipelineError)
    assert calls == [b"abcd"]


async def test_handle_message_nothing_after_its_stream_end() -> None:
    layout = handle("handle_message", lambda ctx, head, body: None, max_size=2)
    out = await run_layout(layout, [MessageStart(), b"abc", b"de", MessageEnd(), StreamEnd()])
    assert [type(e) for e in out] == [MessageStart, StreamEnd]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("method", list(EXPECTED))
async def test_callback_that_raises(method: str, asynchronous: bool) -> None:
    """The exception reaches whoever fed the event (the connection, which ends the
    stream); the event it was called for is not passed on."""

    class Boom(Exception):
        pass

    if asynchronous:

        async def boom(ctx: Context, *args: Any) -> None:
            raise Boom(method)

    else:

        def boom(ctx: Context, *args: Any) -> None:  # type: ignore[misc]
            raise Boom(method)

    async with open_pipeline(handle(method, boom)) as h:
        with pytest.raises(Boom, match=method):
            await h.send(*STREAM)
        assert len(h.output) < len(STREAM)
        assert StreamEnd(ERROR) not in h.output


@pytest.mark.parametrize("method", list(EXPECTED))
def test_not_a_function_is_a_config_error(method: str) -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        getattr(builder, method)("print")
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert f"{method}(): expected a function" in str(info.value)


def test_wrong_arguments_are_config_errors() -> None:
    builder = Proxy().pipeline("t")
    with pytest.raises(ConfigError, match="missing a required argument"):
        builder.handle_data()
    with pytest.raises(ConfigError, match="max_size must be a whole number of bytes >= 0"):
        builder.handle_message(print, max_size=-1)
    with pytest.raises(ConfigError, match="too many positional arguments"):
        builder.handle_stream_end(print, 1)
