"""dump: one log line per event on trioxy.dump; events pass unchanged."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

import filters.dump
from pipeline import ConfigError, Context, Data, Event, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.errors import ConnectRefused
from pipeline.testing import run_layout
from tests.helpers import here


def dump(*args: Any, **kwargs: Any) -> Any:
    return Proxy().pipeline("t").dump(*args, **kwargs)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trioxy.dump"]


EVENTS: list[Event] = [
    MessageStart({"method": "GET"}),
    Data(b"hello world"),
    MessageEnd(),
    StreamEnd(ConnectRefused("refused")),
]


async def test_one_line_per_event_and_events_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    ctx = Context()
    out = await run_layout(dump("in"), EVENTS, context=ctx)
    assert out == EVENTS
    assert all(a is b for a, b in zip(out, EVENTS, strict=True))
    assert lines(caplog) == [
        f"[in] ctx#{ctx.id} MessageStart {{'method': 'GET'}}",
        f"[in] ctx#{ctx.id} Data 11 bytes b'hello world'",
        f"[in] ctx#{ctx.id} MessageEnd",
        f"[in] ctx#{ctx.id} StreamEnd ConnectRefused('refused')",
    ]
    assert {r.levelno for r in caplog.records} == {logging.INFO}


async def test_no_tag_and_clean_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    ctx = Context()
    await run_layout(dump(), [MessageEnd({"n": 1}), StreamEnd()], context=ctx)
    assert lines(caplog) == [f"ctx#{ctx.id} MessageEnd {{'n': 1}}", f"ctx#{ctx.id} StreamEnd"]


async def test_preview_is_cut_and_printable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    await run_layout(dump(max_bytes=4), [b"\x00\x01\xffabcdef", b"ab"])
    assert [line.split(" ", 1)[1] for line in lines(caplog)] == [
        "Data 9 bytes b'\\x00\\x01\\xffa'...",
        "Data 2 bytes b'ab'",
    ]


async def test_no_preview(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    await run_layout(dump(max_bytes=0), [b"secret"])
    assert lines(caplog)[0].endswith("Data 6 bytes")


async def test_long_head_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    await run_layout(dump(max_bytes=10), [MessageStart("x" * 500)])
    (line,) = lines(caplog)
    shown = line.split("MessageStart ", 1)[1]
    assert len(shown) == 80 and shown.endswith("...")


async def test_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    out = await run_layout(dump(level="debug"), [b"quiet"])
    assert out == [Data(b"quiet")]
    assert lines(caplog) == []
    await run_layout(dump(level="WARNING"), [b"loud"])
    await run_layout(dump(level=logging.ERROR), [b"louder"])
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "loud"}, "unknown level 'loud'"),
        ({"level": 1.5}, "level must be a level name or a number"),
        ({"max_bytes": -1}, "max_bytes must be an int >= 0"),
        ({"tag": 3}, "tag must be a string"),
        ({"colour": True}, "unexpected keyword argument 'colour'"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: Any, message: str) -> None:
    builder = Proxy().pipeline("t")
    line = here() + 2
    with pytest.raises(ConfigError) as info:
        builder.dump(**kwargs)
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert message in info.value.reason


async def test_module_example_runs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.dump")
    doc = filters.dump.__doc__
    assert doc is not None
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", doc)
    code = "\n".join(line[4:] for line in blocks[-1].splitlines())
    scope: dict[str, Any] = {}
    exec(compile(code, "example", "exec"), scope)
    proxy: Proxy = scope["proxy"]
    spec = proxy.build().listeners[0]
    ctx = Context()
    out = await run_layout(spec.layout, [b"hi"], context=ctx)
    assert out == [Data(b"HI")]
    assert lines(caplog) == [
        f"[in] ctx#{ctx.id} Data 2 bytes b'hi'",
        f"[out] ctx#{ctx.id} Data 2 bytes b'HI'",
    ]
