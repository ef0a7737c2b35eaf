"""branch: the first true condition's layout carries the whole stream."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from typing import Any

import pytest
import trio

from pipeline import ConfigError, Context, Data, Event, Filter, Proxy, StreamEnd
from pipeline.testing import open_pipeline, run_layout


class Tag(Filter):
    """Prefixes each Data with its tag."""

    name = "tag"

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    async def on_event(self, event: Event) -> None:
        if isinstance(event, Data):
            event = Data(self.tag + event.data)
        await self.output(event)


def build(with_default: bool = True) -> Proxy:
    proxy = Proxy()
    proxy.pipeline("api").add_filter(Tag, b"api:")

    async def is_static(ctx: Context) -> bool:
        await trio.sleep(0)
        return bool(ctx.get("path", "").startswith("/static"))

    cases: dict[Any, Any] = {
        lambda ctx: ctx.get("path", "").startswith("/api"): "api",
        is_static: lambda p: p.add_filter(Tag, b"static:"),
        lambda ctx: ctx.get("path") == "/api/too-late": lambda p: p.add_filter(Tag, b"never:"),
    }
    if with_default:
        proxy.pipeline("main").branch(cases, lambda p: p.add_filter(Tag, b"default:"))
    else:
        proxy.pipeline("main").branch(cases)
    return proxy


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/x", b"api:a"),
        ("/api/too-late", b"api:a"),  # the first true condition wins
        ("/static/y", b"static:a"),
        ("/other", b"default:a"),
    ],
)
async def test_first_true_condition_chooses_the_layout(path: str, expected: bytes) -> None:
    out = await run_layout(
        build().layout("main"), [b"a", b"b", StreamEnd()], context=Context().set(path=path)
    )
    assert out == [Data(expected), Data(expected[:-1] + b"b"), StreamEnd()]


async def test_no_match_and_no_default_passes_through() -> None:
    out = await run_layout(
        build(with_default=False).layout("main"), [b"a", StreamEnd()], context=Context()
    )
    assert out == [Data(b"a"), StreamEnd()]


async def test_conditions_are_evaluated_once_on_the_first_event() -> None:
    calls: list[Any] = []

    def cond(ctx: Context) -> bool:
        calls.append(ctx.get("path"))
        return True

    proxy = Proxy()
    proxy.pipeline("main").branch({cond: lambda p: p.add_filter(Tag, b"t:")})
    ctx = Context().set(path="/first")
    async with open_pipeline(proxy.layout("main"), ctx) as h:
        await h.send(b"1")
        ctx.set(path="/second")
        await h.send(b"2", StreamEnd())
        assert h.output == [Data(b"t:1"), Data(b"t:2"), StreamEnd()]
    assert calls == ["/first"]


async def test_the_chosen_layout_shares_the_stream_context() -> None:
    proxy = Proxy()
    proxy.pipeline("main").branch(
        {lambda ctx: True: lambda p: p.handle_data(lambda ctx, d: ctx.set(seen=d))}
    )
    ctx = Context()
    await run_layout(proxy.layout("main"), [b"x", StreamEnd()], context=ctx)
    assert ctx.seen == b"x"


async def test_default_only() -> None:
    proxy = Proxy()
    proxy.pipeline("main").branch({}, lambda p: p.add_filter(Tag, b"d:"))
    assert await run_layout(proxy.layout("main"), [b"x"]) == [Data(b"d:x")]


def test_unknown_layout_name_is_reported_at_the_branch_line() -> None:
    proxy = Proxy()
    proxy.pipeline("main").branch({lambda ctx: True: "nowhere"})
    line = sys._getframe().f_lineno - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert "nowhere" in str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ({},),
        ("api",),
        ([(lambda ctx: True, "api")],),
        ({"not callable": "api"},),
        ({len: 42},),
        ({len: "api"}, 42),
    ],
)
def test_bad_arguments_are_a_config_error(args: tuple[Any, ...]) -> None:
    proxy = Proxy()
    proxy.pipeline("api")
    with pytest.raises(ConfigError) as info:
        proxy.pipeline("main").branch(*args)
    assert info.value.filename == __file__


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.branch").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/branch.py example", "exec"), {})
