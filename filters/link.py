"""``link(name)``: continue the stream in another layout.

The events go into a sub-pipeline of the named layout (or of a layout built by a
function), and what it outputs is this filter's output. ``.to("name")`` after a
non-joint filter is shorthand for ``link("name")``. Layouts may link to
themselves or each other: each sub-pipeline is made when the first event arrives,
so recursion is bounded by the stream, not by the script.

Example: share one upstream layout among several listeners::

    proxy.pipeline("upstream").connect("127.0.0.1:9000")
    proxy.listen(8000).link("upstream")
    proxy.listen(8001).dump().to("upstream")
"""

from __future__ import annotations

from pipeline.events import Event
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.layout import LayoutRef
from pipeline.live import Pipeline

__all__ = ["Link"]


class Link(Filter):
    """Pass the stream through a sub-pipeline of another layout."""

    name = "link"
    layout_params = ("target",)

    def __init__(self, target: LayoutRef | str) -> None:
        if not isinstance(target, (LayoutRef, str)):
            raise TypeError(f"expected a layout name, got {target!r}")
        self.target = target
        self.sub: Pipeline | None = None

    async def on_event(self, event: Event) -> None:
        sub = self.sub
        if sub is None:
            assert isinstance(self.target, LayoutRef)
            sub = self.sub = self.pipeline.sub(self.target.layout, self.output)
        await sub.input(event)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Link]
