"""link: continue the stream in a named or anonymous layout."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import trio
import trio.testing

from pipeline import ConfigError, Context, Data, Event, Filter, Proxy, StreamEnd
from pipeline.testing import open_pipeline, run_layout


class Tag(Filter):
    name = "tag"

    def __init__(self, tag: bytes) -> None:
        self.tag = tag

    async def on_event(self, event: Event) -> None:
        if isinstance(event, Data):
            event = Data(self.tag + event.data)
        await self.output(event)


async def test_named_link() -> None:
    proxy = Proxy()
    proxy.pipeline("upstream").add_filter(Tag, b"up:")
    proxy.pipeline("main").add_filter(Tag, b"main:").link("upstream")
    out = await run_layout(proxy.layout("main"), [b"x", StreamEnd()])
    assert out == [Data(b"up:main:x"), StreamEnd()]


async def test_to_a_name_after_a_plain_filter_is_a_link() -> None:
    proxy = Proxy()
    proxy.pipeline("main").add_filter(Tag, b"a:").to("second")
    proxy.pipeline("second").add_filter(Tag, b"b:")  # defined after its use
    layout = proxy.layout("main")
    assert [s.name for s in layout.specs] == ["tag", "link"]
    assert await run_layout(layout, [b"x"]) == [Data(b"b:a:x")]


async def test_anonymous_link() -> None:
    proxy = Proxy()
    proxy.pipeline("main").link(lambda p: p.add_filter(Tag, b"anon:"))
    assert await run_layout(proxy.layout("main"), [b"x", StreamEnd()]) == [
        Data(b"anon:x"),
        StreamEnd(),
    ]


async def test_recursive_layout_is_bounded_by_the_stream_not_the_script() -> None:
    # "nest" links to itself through a branch; each level adds a tag and lowers
    # the depth kept in the context, the last level passes the data on.
    proxy = Proxy()

    def deeper(ctx: Context) -> bool:
        depth: int = ctx.depth
        ctx.set(depth=depth - 1)
        return depth > 0

    proxy.pipeline("nest").add_filter(Tag, b"+").branch({deeper: "nest"})
    layout = proxy.layout("nest")  # building a self-referencing layout terminates
    out = await run_layout(layout, [b"x", StreamEnd()], context=Context().set(depth=3))
    assert out == [Data(b"++++x"), StreamEnd()]


async def test_link_opens_its_sub_pipeline_on_the_first_event_and_closes_with_the_stream() -> None:
    class Sleeper(Filter):
        name = "sleeper"

        async def on_event(self, event: Event) -> None:
            self.pipeline.start_task(trio.sleep_forever)
            await self.output(event)

    proxy = Proxy()
    proxy.pipeline("main").link(lambda p: p.add_filter(Sleeper))
    async with open_pipeline(proxy.layout("main")) as h:
        assert not h.pipeline._children
        await h.send(b"x")
        (sub,) = h.pipeline._children
        assert sub.context is h.pipeline.context  # a link shares the context
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 1
        h.pipeline.close()
        await trio.testing.wait_all_tasks_blocked()
        assert h.pipeline.task_count == 0 and sub.closed


def test_unknown_link_target_is_reported_at_its_line() -> None:
    proxy = Proxy()
    proxy.pipeline("upstream")
    proxy.pipeline("main").link("upstreem")
    line = sys._getframe().f_lineno - 1
    with pytest.raises(ConfigError) as info:
        proxy.build()
    assert (info.value.filename, info.value.lineno) == (__file__, line)
    assert "did you mean 'upstream'" in str(info.value)


@pytest.mark.parametrize("bad", [42, None, b"bytes"])
def test_link_target_must_be_a_layout(bad: Any) -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError) as info:
        proxy.pipeline("main").link(bad)
    assert info.value.filename == __file__
