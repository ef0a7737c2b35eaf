"""split: separators, keep, chunking, the bounded buffer, the trailing chunk."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import filters.split
from pipeline import (
    ConfigError,
    Data,
    Event,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.testing import open_pipeline, run_layout
from tests.helpers import here


def split(*args: Any, **kwargs: Any) -> Any:
    return Proxy().pipeline("t").split(*args, **kwargs)


def messages(*bodies: bytes) -> list[Event]:
    out: list[Event] = []
    for body in bodies:
        out.append(MessageStart())
        if body:
            out.append(Data(body))
        out.append(MessageEnd())
    return out


def is_overflow(event: Event) -> bool:
    return (
        type(event) is StreamEnd
        and isinstance(event.error, PipelineError)
        and "longer than" in str(event.error)
    )


async def test_lines() -> None:
    out = await run_layout(split(b"\n"), [b"one\ntwo\nthree\n", StreamEnd()])
    assert out == [*messages(b"one", b"two", b"three"), StreamEnd()]


async def test_keep_the_separator() -> None:
    out = await run_layout(split(b"\r\n", keep=True), [b"a\r\nb\r\n", StreamEnd()])
    assert out == [*messages(b"a\r\n", b"b\r\n"), StreamEnd()]


async def test_separator_split_across_events() -> None:
    out = await run_layout(
        split(b"\r\n"), [b"ab\r", b"\ncd", b"\r", b"\n", b"\r", b"\nef", StreamEnd()]
    )
    assert out == [*messages(b"ab", b"cd", b"", b"ef"), StreamEnd()]


async def test_separator_prefix_that_is_not_a_separator() -> None:
    out = await run_layout(split(b"abc"), [b"xa", b"b", b"yab", b"cz", StreamEnd()])
    assert out == [*messages(b"xaby", b"z"), StreamEnd()]


async def test_empty_chunks_are_empty_messages() -> None:
    out = await run_layout(split(b","), [b",,a,", StreamEnd()])
    assert out == [*messages(b"", b"", b"a"), StreamEnd()]


async def test_trailing_chunk_is_a_last_message() -> None:
    async with open_pipeline(split(b"\n")) as h:
        await h.send(b"a\nb", b"c")
        assert h.output == messages(b"a")  # "bc" waits for its separator
        await h.send(StreamEnd())
        assert h.output == [*messages(b"a", b"bc"), StreamEnd()]


async def test_empty_stream() -> None:
    assert await run_layout(split(b"\n"), [b"", StreamEnd()]) == [StreamEnd()]


async def test_message_boundaries_of_the_input() -> None:
    out = await run_layout(
        split(b"\n"),
        [MessageStart("h1"), b"a\nb", MessageEnd("t"), MessageStart("h2"), b"c\n", MessageEnd()],
    )
    assert out == messages(b"a", b"b", b"c")


async def test_stream_end_error_passes_after_the_trailing_chunk() -> None:
    end = StreamEnd(PipelineError("upstream"))
    out = await run_layout(split(b"\n"), [b"a\nrest", end])
    assert out == [*messages(b"a", b"rest"), end]


async def test_max_size_exact_is_fine() -> None:
    out = await run_layout(split(b"\n", max_size=3), [b"abc\nab", b"c", StreamEnd()])
    assert out == [*messages(b"abc", b"abc"), StreamEnd()]


async def test_max_size_does_not_count_a_pending_separator() -> None:
    out = await run_layout(split(b"\r\n", max_size=3), [b"abc\r", b"\n", StreamEnd()])
    assert out == [*messages(b"abc"), StreamEnd()]


async def test_chunk_over_max_size_ends_the_stream() -> None:
    out = await run_layout(split(b"\n", max_size=3), [b"ab\nabcd\nx\n", b"more\n", StreamEnd()])
    assert out[:-1] == messages(b"ab")
    assert is_overflow(out[-1])


async def test_long_line_fails_before_its_separator_arrives() -> None:
    async with open_pipeline(split(b"\r\n", max_size=4)) as h:
        await h.send(b"abcd\r")  # may still be "abcd" + separator
        assert h.output == []
        await h.send(b"e")
        assert len(h.output) == 1 and is_overflow(h.output[0])
        await h.send(b"\r\n", StreamEnd())  # discarded
        assert len(h.output) == 1


async def test_trailing_chunk_over_max_size() -> None:
    out = await run_layout(split(b"\r\n", max_size=4), [b"abcd\r", StreamEnd()])
    assert len(out) == 1 and is_overflow(out[0])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((b"",), {}, "separator must not be empty"),
        (("\n",), {}, "separator must be bytes"),
        ((b"\n",), {"max_size": 0}, "max_size must be an int >= 1"),
        ((b"\n",), {"max_size": 1.5}, "max_size must be an int >= 1"),
        ((), {}, "missing a required argument"),
        ((b"\n", True), {}, "too many positional arguments"),
    ],
)
def test_bad_arguments_are_config_errors(args: Any, kwargs: Any, message: str) -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        builder.split(*args, **kwargs)
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert message in info.value.reason


# Any chunking of the input gives the same messages --------------------------------------


def model(data: bytes, sep: bytes, keep: bool, max_size: int) -> list[Event]:
    """What split must output for ``data`` followed by a clean StreamEnd."""
    parts = data.split(sep)
    out: list[Event] = []
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if last and not part:
            break
        if len(part) > max_size:
            return [*out, StreamEnd(PipelineError("overflow"))]
        out += messages(part + sep if keep and not last else part)
    return [*out, StreamEnd()]


def same(actual: list[Event], expected: list[Event]) -> bool:
    if len(actual) != len(expected) or actual[:-1] != expected[:-1]:
        return False
    if expected[-1].error is None:  # type: ignore[union-attr]
        return actual[-1] == StreamEnd()
    return is_overflow(actual[-1])


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=40).map(lambda b: bytes(c % 4 + 0x61 for c in b)),  # b"abcd" only
    sep=st.sampled_from([b"a", b"ab", b"aba", b"abcd"]),
    keep=st.booleans(),
    max_size=st.integers(min_value=1, max_value=12),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=20),
)
def test_any_chunking_gives_the_same_messages(
    data: bytes, sep: bytes, keep: bool, max_size: int, cuts: list[int]
) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    layout = split(sep, keep=keep, max_size=max_size)
    inputs: list[Event | bytes] = [*chunks, StreamEnd()]
    out = trio.run(run_layout, layout, inputs)
    expected = model(data, sep, keep, max_size)
    assert same(out, expected), (chunks, out, expected)


async def test_module_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = filters.split.__doc__
    assert doc is not None
    match = re.search(r"::\n\n((?:    .*\n|\n)+)", doc)
    assert match is not None
    scope: dict[str, Any] = {}
    code = "\n".join(line[4:] for line in match.group(1).splitlines())
    exec(compile(code, "example", "exec"), scope)
    proxy: Proxy = scope["proxy"]
    await run_layout(proxy.layout("lines"), [b"HELO x\r\nQU", b"IT\r\n", StreamEnd()])
    assert capsys.readouterr().out == "HELO x\nQUIT\n"
