"""``branch``: choose, on the first event, the layout that carries the whole stream.

``branch(cases, default=None)``: ``cases`` maps conditions to layouts, in order::

    p.branch({cond1: layout1, cond2: layout2}, default)

A condition is a function ``cond(ctx)`` (plain or ``async def``) returning a truth
value; a layout is a layout name or a function building one (as with ``.to``).
On the stream's first event the conditions are called in the order written; the
layout of the first true one runs as a sub-pipeline for the whole stream, sharing
the stream's context, and its output is branch's output. If none is true,
``default`` runs; with no ``default`` the events pass through unchanged. An
exception raised by a condition ends the stream, like any callback's.

Why a mapping rather than Pipy's alternating ``branch(cond1, layout1, ...,
default)``: the builder converts every element of a layout argument into a layout
reference, so conditions and layouts cannot share one ``*args`` parameter; a
mapping keeps them apart (its values are layouts, its keys conditions) and keeps
their order.

Example (runnable): route by a context variable::

    from functools import partial

    import trio
    from pipeline import Context, Data, Proxy, StreamEnd
    from pipeline.testing import run_layout

    proxy = Proxy()
    seen = []
    proxy.pipeline("admin").handle_data(lambda ctx, data: seen.append(("admin", data)))
    (proxy.pipeline("main")
        .branch({lambda ctx: ctx.get("port") == 9000: "admin",
                 lambda ctx: ctx.get("port") == 8080:
                     lambda p: p.handle_data(lambda ctx, d: seen.append(("web", d)))}))

    for port in (9000, 8080, 1):
        ctx = Context().set(port=port)
        run = partial(run_layout, proxy.layout("main"), [b"hi", StreamEnd()], context=ctx)
        out = trio.run(run)
        assert out == [Data(b"hi"), StreamEnd()]   # each path passes the bytes on
    assert seen == [("admin", b"hi"), ("web", b"hi")]  # port 1: no match, no default
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pipeline.events import Event
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.layout import LayoutRef
from pipeline.live import Pipeline

from ._callback import as_async

__all__ = ["Branch"]


def _is_layout(value: Any) -> bool:
    return isinstance(value, (LayoutRef, str)) or callable(value)


class Branch(Filter):
    """``branch({cond: layout, ...}, default=None)``: one path for the stream."""

    name = "branch"
    layout_params = ("cases", "default")

    def __init__(self, cases: Mapping[Callable[..., Any], Any], default: Any = None) -> None:
        if not isinstance(cases, Mapping):
            raise TypeError(
                "branch() takes a mapping {condition: layout, ...} (and an optional "
                f"default layout), got {cases!r}"
            )
        checked: list[tuple[Callable[..., Awaitable[Any]], Any]] = []
        for cond, layout in cases.items():
            if not callable(cond):
                raise TypeError(
                    f"a branch condition must be a function of the context, got {cond!r}"
                )
            if not _is_layout(layout):
                raise TypeError(
                    f"a branch layout must be a layout name or a function building one, "
                    f"got {layout!r}"
                )
            checked.append((as_async(cond), layout))
        if default is not None and not _is_layout(default):
            raise TypeError(
                f"the default must be a layout name or a function building one, got {default!r}"
            )
        if not checked and default is None:
            raise ValueError("branch() needs at least one case or a default")
        self._cases = checked
        self._default = default
        self._sub: Pipeline | None = None
        self._chosen = False

    async def on_event(self, event: Event) -> None:
        if not self._chosen:
            self._chosen = True
            ref = await self._choose()
            if ref is not None:
                self._sub = self.pipeline.sub(ref.layout, self.output)
        sub = self._sub
        if sub is None:
            await self.output(event)
        elif not sub.closed:
            await sub.input(event)

    async def _choose(self) -> LayoutRef | None:
        ctx = self.pipeline.context
        for cond, ref in self._cases:
            if await cond(ctx):
                assert isinstance(ref, LayoutRef)
                return ref
        default = self._default
        assert default is None or isinstance(default, LayoutRef)
        return default


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Branch]
