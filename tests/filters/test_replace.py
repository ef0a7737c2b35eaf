"""replace_*: each filter, its return conventions, sync and async callbacks, errors."""

from __future__ import annotations

import re
from typing import Any

import pytest

import filters.replace
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


def layout(method: str, *args: Any, **kwargs: Any) -> Any:
    builder = Proxy().pipeline("t")
    return getattr(builder, method)(*args, **kwargs)


MSG: list[Event] = [MessageStart("h"), Data(b"ab"), Data(b"cd"), MessageEnd("t")]


# replace_data -------------------------------------------------------------------


async def test_replace_data_sync() -> None:
    out = await run_layout(
        layout("replace_data", lambda ctx, d: d.upper()), [b"ab", b"cd", StreamEnd()]
    )
    assert out == [Data(b"AB"), Data(b"CD"), StreamEnd()]


async def test_replace_data_async() -> None:
    async def upper(ctx: Context, data: bytes) -> bytes:
        return data.upper()

    out = await run_layout(layout("replace_data", upper), [b"ab", StreamEnd()])
    assert out == [Data(b"AB"), StreamEnd()]


async def test_replace_data_same_bytes_keeps_the_event() -> None:
    event = Data(b"abc")
    out = await run_layout(layout("replace_data", lambda ctx, d: d), [event, StreamEnd()])
    assert out[0] is event


async def test_replace_data_none_and_empty_drop() -> None:
    def fn(ctx: Context, data: bytes) -> bytes | None:
        return None if data == b"x" else b"" if data == b"y" else data

    out = await run_layout(layout("replace_data", fn), [b"x", b"y", b"z", StreamEnd()])
    assert out == [Data(b"z"), StreamEnd()]


async def test_replace_data_list_and_event() -> None:
    def fn(ctx: Context, data: bytes) -> Any:
        if data == b"m":
            return [MessageStart(1), b"body", b"", Data(b"!"), MessageEnd()]
        return Data(b"[" + data + b"]")

    out = await run_layout(layout("replace_data", fn), [b"m", b"d", StreamEnd()])
    assert out == [
        MessageStart(1),
        Data(b"body"),
        Data(b"!"),
        MessageEnd(),
        Data(b"[d]"),
        StreamEnd(),
    ]


async def test_replace_data_bytearray_becomes_bytes() -> None:
    out = await run_layout(layout("replace_data", lambda ctx, d: bytearray(d)), [b"ab"])
    assert out == [Data(b"ab")]
    assert type(out[0].data) is bytes  # type: ignore[union-attr]


async def test_replace_data_passes_other_events() -> None:
    out = await run_layout(layout("replace_data", lambda ctx, d: d + d), [*MSG, StreamEnd()])
    assert out == [MessageStart("h"), Data(b"abab"), Data(b"cdcd"), MessageEnd("t"), StreamEnd()]
    assert out[0] is MSG[0] and out[3] is MSG[3]


async def test_replace_data_gets_the_stream_context() -> None:
    seen: list[Context] = []

    def fn(ctx: Context, data: bytes) -> bytes:
        seen.append(ctx)
        return data

    ctx = Context()
    await run_layout(layout("replace_data", fn), [b"a", b"b"], context=ctx)
    assert seen == [ctx, ctx]


async def test_replace_data_stream_end_ends_the_stream() -> None:
    error = ValueError("enough")

    def fn(ctx: Context, data: bytes) -> Any:
        return StreamEnd(error) if data == b"stop" else data

    out = await run_layout(layout("replace_data", fn), [b"a", b"stop", b"b", StreamEnd()])
    assert out == [Data(b"a"), StreamEnd(error)]


async def test_replace_data_wrong_return_type() -> None:
    async with open_pipeline(layout("replace_data", lambda ctx, d: "text")) as h:
        with pytest.raises(PipelineError, match=r"replace_data\(<lambda>\) at .*test_replace"):
            await h.send(b"a")


async def test_replace_data_bad_list_item() -> None:
    async with open_pipeline(layout("replace_data", lambda ctx, d: [b"a", 3])) as h:
        with pytest.raises(PipelineError, match="events and bytes, not 3"):
            await h.send(b"a")


async def test_replace_data_event_after_stream_end_in_list() -> None:
    fn = layout("replace_data", lambda ctx, d: [StreamEnd(), Data(b"late")])
    async with open_pipeline(fn) as h:
        with pytest.raises(PipelineError, match="follows StreamEnd"):
            await h.send(b"a")
        assert h.output == []


async def test_callback_exception_propagates() -> None:
    def boom(ctx: Context, data: bytes) -> bytes:
        raise KeyError("boom")

    async with open_pipeline(layout("replace_data", boom)) as h:
        with pytest.raises(KeyError, match="boom"):
            await h.send(b"a")
        assert h.output == []


async def test_async_callback_exception_propagates() -> None:
    async def boom(ctx: Context, head: Any) -> Any:
        raise RuntimeError("async boom")

    async with open_pipeline(layout("replace_message_start", boom)) as h:
        with pytest.raises(RuntimeError, match="async boom"):
            await h.send(MessageStart())


# replace_message_start / replace_message_end ------------------------------------------


async def test_replace_message_start_new_head() -> None:
    out = await run_layout(
        layout("replace_message_start", lambda ctx, head: head + "!"), [*MSG, StreamEnd()]
    )
    assert out == [MessageStart("h!"), Data(b"ab"), Data(b"cd"), MessageEnd("t"), StreamEnd()]


async def test_replace_message_start_same_head_keeps_the_event() -> None:
    out = await run_layout(layout("replace_message_start", lambda ctx, head: head), MSG)
    assert out[0] is MSG[0]


async def test_replace_message_start_tuple_and_bytes_are_heads() -> None:
    heads = iter([("GET", "/"), b"raw"])
    out = await run_layout(
        layout("replace_message_start", lambda ctx, head: next(heads)),
        [MessageStart(), MessageStart()],
    )
    assert out == [MessageStart(("GET", "/")), MessageStart(b"raw")]


async def test_replace_message_start_none_drops_and_list_expands() -> None:
    async def fn(ctx: Context, head: Any) -> Any:
        if head == "drop":
            return None
        return [MessageStart("a"), b"prefix"]

    out = await run_layout(
        layout("replace_message_start", fn),
        [MessageStart("drop"), MessageStart("x"), MessageEnd()],
    )
    assert out == [MessageStart("a"), Data(b"prefix"), MessageEnd()]


async def test_replace_message_end_new_tail_and_drop() -> None:
    tails = iter([{"n": 1}, None])
    out = await run_layout(
        layout("replace_message_end", lambda ctx, tail: next(tails)),
        [*MSG, *MSG, StreamEnd()],
    )
    assert out == [*MSG[:3], MessageEnd({"n": 1}), *MSG[:3], StreamEnd()]


async def test_replace_message_end_list() -> None:
    out = await run_layout(
        layout("replace_message_end", lambda ctx, tail: [b"trailer", MessageEnd(tail)]),
        [MessageStart(), MessageEnd("t")],
    )
    assert out == [MessageStart(), Data(b"trailer"), MessageEnd("t")]


# replace_message ------------------------------------------------------------------


async def test_replace_message_tuple_keeps_the_tail() -> None:
    calls: list[tuple[Any, bytes]] = []

    def fn(ctx: Context, head: Any, body: bytes) -> Any:
        calls.append((head, body))
        return head.upper(), body[::-1]

    out = await run_layout(layout("replace_message", fn), [*MSG, StreamEnd()])
    assert calls == [("h", b"abcd")]
    assert out == [MessageStart("H"), Data(b"dcba"), MessageEnd("t"), StreamEnd()]
    assert out[2] is MSG[3]


async def test_replace_message_three_tuple_and_empty_body() -> None:
    out = await run_layout(
        layout("replace_message", lambda ctx, head, body: (head, b"", "new")), MSG
    )
    assert out == [MessageStart("h"), MessageEnd("new")]


async def test_replace_message_async_none_drops() -> None:
    async def fn(ctx: Context, head: Any, body: bytes) -> Any:
        return None if head == "h" else (head, body)

    out = await run_layout(
        layout("replace_message", fn),
        [*MSG, MessageStart("k"), Data(b"x"), MessageEnd(), StreamEnd()],
    )
    assert out == [MessageStart("k"), Data(b"x"), MessageEnd(), StreamEnd()]


async def test_replace_message_list_and_event() -> None:
    results = iter([[b"flat", b"tened"], Data(b"one")])
    out = await run_layout(
        layout("replace_message", lambda ctx, head, body: next(results)), [*MSG, *MSG]
    )
    assert out == [Data(b"flat"), Data(b"tened"), Data(b"one")]


async def test_replace_message_passes_events_outside_messages() -> None:
    out = await run_layout(
        layout("replace_message", lambda ctx, head, body: (head, body)),
        [Data(b"raw"), MessageEnd("stray"), *MSG, Data(b"after"), StreamEnd()],
    )
    assert out == [
        Data(b"raw"),
        MessageEnd("stray"),
        MessageStart("h"),
        Data(b"abcd"),
        MessageEnd("t"),
        Data(b"after"),
        StreamEnd(),
    ]


async def test_replace_message_max_size() -> None:
    fn = layout("replace_message", lambda ctx, head, body: (head, body), max_size=4)
    out = await run_layout(fn, [*MSG, StreamEnd()])  # exactly 4 bytes: fine
    assert out == [MessageStart("h"), Data(b"abcd"), MessageEnd("t"), StreamEnd()]
    out = await run_layout(
        fn, [MessageStart(), b"abc", b"de", b"more", MessageEnd(), *MSG, StreamEnd()]
    )
    assert len(out) == 1 and type(out[0]) is StreamEnd
    assert isinstance(out[0].error, PipelineError)
    assert "over 4 bytes" in str(out[0].error)


async def test_replace_message_cut_short_is_discarded() -> None:
    called = []
    out = await run_layout(
        layout("replace_message", lambda ctx, head, body: called.append(1)),
        [MessageStart(), Data(b"partial"), StreamEnd(ConnectRefused("no"))],
    )
    assert called == []
    assert len(out) == 1 and isinstance(out[0].error, ConnectRefused)  # type: ignore[union-attr]


async def test_replace_message_nested_start_fails() -> None:
    out = await run_layout(
        layout("replace_message", lambda ctx, head, body: (head, body)),
        [MessageStart(1), MessageStart(2), MessageEnd(), StreamEnd()],
    )
    assert len(out) == 1 and isinstance(out[0].error, PipelineError)  # type: ignore[union-attr]
    assert "inside an unfinished message" in str(out[0].error)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ((1, 2, 3, 4), "tuple of 4 items"),
        (("h", "text"), "body must be bytes"),
        (42, "returned 42; expected a \\(head, body\\) tuple"),
    ],
)
async def test_replace_message_bad_results(result: Any, message: str) -> None:
    fn = layout("replace_message", lambda ctx, head, body: result)
    async with open_pipeline(fn) as h:
        with pytest.raises(PipelineError, match=message):
            await h.send(*MSG)


# replace_stream_start / replace_stream_end ------------------------------------------


async def test_replace_stream_start_inserts_once() -> None:
    calls: list[Context] = []

    def fn(ctx: Context) -> bytes:
        calls.append(ctx)
        return b"hello"

    out = await run_layout(layout("replace_stream_start", fn), [b"a", b"b", StreamEnd()])
    assert out == [Data(b"hello"), Data(b"a"), Data(b"b"), StreamEnd()]
    assert len(calls) == 1


async def test_replace_stream_start_async_list_on_empty_stream() -> None:
    async def fn(ctx: Context) -> Any:
        return [MessageStart("greeting"), b"hi", MessageEnd()]

    out = await run_layout(layout("replace_stream_start", fn), [StreamEnd()])
    assert out == [MessageStart("greeting"), Data(b"hi"), MessageEnd(), StreamEnd()]


async def test_replace_stream_start_none_inserts_nothing() -> None:
    out = await run_layout(layout("replace_stream_start", lambda ctx: None), [b"a"])
    assert out == [Data(b"a")]


async def test_replace_stream_start_can_refuse_the_stream() -> None:
    refused = PipelineError("not allowed")
    out = await run_layout(
        layout("replace_stream_start", lambda ctx: [b"bye", StreamEnd(refused)]),
        [b"a", b"b", StreamEnd()],
    )
    assert out == [Data(b"bye"), StreamEnd(refused)]


async def test_replace_stream_end_gets_the_error() -> None:
    error = ConnectRefused("refused", target="x:1")
    seen: list[Any] = []

    def fn(ctx: Context, err: BaseException | None) -> Any:
        seen.append(err)
        return [b"error: " + str(err).encode(), StreamEnd(err)]

    out = await run_layout(layout("replace_stream_end", fn), [b"a", StreamEnd(error)])
    assert seen == [error]
    assert out == [Data(b"a"), Data(b"error: refused"), StreamEnd(error)]


async def test_replace_stream_end_appends_a_clean_end() -> None:
    async def fn(ctx: Context, err: BaseException | None) -> Any:
        return [MessageStart(502), MessageEnd()]

    out = await run_layout(layout("replace_stream_end", fn), [StreamEnd(ConnectRefused("x"))])
    assert out == [MessageStart(502), MessageEnd(), StreamEnd()]
    out = await run_layout(
        layout("replace_stream_end", lambda ctx, err: None), [StreamEnd(ConnectRefused("x"))]
    )
    assert out == [StreamEnd()]
    out = await run_layout(layout("replace_stream_end", lambda ctx, err: b"bye"), [StreamEnd()])
    assert out == [Data(b"bye"), StreamEnd()]


async def test_replace_stream_end_same_event_passes_once() -> None:
    end = StreamEnd(ConnectRefused("x"))
    out = await run_layout(layout("replace_stream_end", lambda ctx, err: end), [b"a", end])
    assert out == [Data(b"a"), end]
    assert out[1] is end


# Builder validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "replace_stream_start",
        "replace_message_start",
        "replace_data",
        "replace_message_end",
        "replace_message",
        "replace_stream_end",
    ],
)
def test_not_a_function_is_a_config_error(method: str) -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        getattr(builder, method)(b"not callable")
    assert info.value.filename == __file__
    assert info.value.lineno == line
    assert f"{method}(): expected a function" in str(info.value)


def test_wrong_arguments_are_config_errors() -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        builder.replace_data()
    assert info.value.lineno == line and "missing a required argument" in info.value.reason
    with pytest.raises(ConfigError, match="max_size must be an int >= 0"):
        builder.replace_message(lambda ctx, head, body: None, max_size=-1)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        builder.replace_data(lambda ctx, d: d, size=3)


# The module's example ----------------------------------------------------------------


def _example(module: Any) -> str:
    match = re.search(r"::\n\n((?:    .*\n|\n)+)", module.__doc__)
    assert match is not None
    return "\n".join(line[4:] for line in match.group(1).splitlines())


async def test_module_example_runs() -> None:
    scope: dict[str, Any] = {}
    exec(compile(_example(filters.replace), "example", "exec"), scope)
    proxy: Proxy = scope["proxy"]
    out = await run_layout(proxy.layout("upper"), [b"abc", StreamEnd()])
    assert out == [Data(b"ABC"), StreamEnd()]
    out = await run_layout(proxy.layout("greet"), [b"x"])
    assert out == [Data(b"220 welcome\r\n"), Data(b"x")]
    out = await run_layout(
        proxy.layout("heads"),
        [MessageStart({"private": True}), MessageStart({"a": 1})],
    )
    assert out == [MessageStart({"a": 1, "via": "trioxy"})]
    out = await run_layout(proxy.layout("tails"), [MessageEnd()])
    assert out == [MessageEnd({"seen": True})]
    out = await run_layout(proxy.layout("mirror"), MSG)
    assert out == [MessageStart("h"), Data(b"dcba"), MessageEnd("t")]
    out = await run_layout(proxy.layout("end"), [StreamEnd(ConnectRefused("refused"))])
    assert out == [Data(b"error: refused\r\n"), StreamEnd()]
