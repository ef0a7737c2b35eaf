"""``fork``: copy the stream into sub-pipelines, pass it on unchanged.

``fork(initializers=None).to(layout)`` feeds every input event to one or more
sub-pipelines of ``layout`` and then outputs the event unchanged: the
sub-pipelines see a copy of the stream (to mirror traffic, log it, feed a side
channel) and **their output is discarded**. Events are shared, not copied: they
are immutable.

* ``initializers=None``: one sub-pipeline.
* ``initializers`` a list (or tuple) of values, or a function ``fn(ctx)`` (plain or
  ``async def``, called on the stream's first event) returning one: one
  sub-pipeline per value.

Each sub-pipeline has a child context of the stream's (variables it sets do not
leak back), with two variables set: ``ctx.fork_value`` (the initializer value,
``None`` without initializers) and ``ctx.fork_index`` (0, 1, ...).

The copy is fed first and the event passed on after, so a slow sub-pipeline slows
the stream down (backpressure, no hidden buffer). A sub-pipeline that outputs
``StreamEnd`` is closed and gets no more events; the others go on. The
sub-pipelines close with the stream.

Example (runnable): mirror each message to two recorders::

    import trio
    from pipeline import Data, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import run_layout

    proxy = Proxy()
    mirrored = []
    (proxy.pipeline("tap")
        .fork(["left", "right"])
        .to(lambda p: p.handle_message(
            lambda ctx, head, body: mirrored.append((ctx.fork_value, head, body)))))

    events = [MessageStart("m"), Data(b"xyz"), MessageEnd(), StreamEnd()]
    assert trio.run(run_layout, proxy.layout("tap"), events) == events
    assert sorted(mirrored) == [("left", "m", b"xyz"), ("right", "m", b"xyz")]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.errors import PipelineError
from pipeline.events import Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.live import Pipeline

from ._callback import as_async

__all__ = ["Fork"]


class Fork(Filter):
    """``fork(initializers=None)``: copies of the stream to sub-pipelines."""

    name = "fork"
    joint = True

    def __init__(
        self, initializers: list[Any] | tuple[Any, ...] | Callable[..., Any] | None = None
    ) -> None:
        self._values: list[Any] | None = None
        self._fn: Callable[..., Any] | None = None
        if initializers is None:
            self._values = [None]
        elif isinstance(initializers, (list, tuple)):
            self._values = list(initializers)
        elif callable(initializers):
            self._fn = as_async(initializers)
        else:
            raise TypeError(
                f"initializers must be a list, a function of the context or None, "
                f"got {initializers!r}"
            )
        self._subs: list[Pipeline] | None = None

    async def on_event(self, event: Event) -> None:
        subs = self._subs
        if subs is None:
            subs = self._subs = await self._open()
        for sub in subs:
            if not sub.closed:
                await sub.input(event)
        await self.output(event)

    async def _open(self) -> list[Pipeline]:
        values = self._values
        if values is None:
            assert self._fn is not None
            found = await self._fn(self.pipeline.context)
            if isinstance(found, (str, bytes)) or not hasattr(found, "__iter__"):
                raise PipelineError(f"fork: initializers() must return a list, got {found!r}")
            values = list(found)
        subs: list[Pipeline] = []
        for index, value in enumerate(values):
            ctx = self.pipeline.context.child().set(fork_value=value, fork_index=index)
            holder: list[Pipeline] = []

            async def discard(event: Event, holder: list[Pipeline] = holder) -> None:
                if type(event) is StreamEnd and holder:
                    holder[0].close()

            sub = self.pipeline.sub(self.sub_layout, discard, context=ctx)
            holder.append(sub)
            subs.append(sub)
        return subs


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Fork]
