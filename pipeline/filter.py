"""The filter contract.

A filter is a small object with one coroutine, :meth:`Filter.on_event`, which
receives every event of its stream and passes events on with
``await self.output(event)``. Awaiting the output *is* the backpressure: the next
filter (and, at the end of the chain, the socket) finishes with the event before
the filter returns, so a slow client slows down the reader of the server without
an unbounded buffer in between.

A filter class is instantiated once per live pipeline, with the arguments the
script gave to the builder method. The builder also instantiates it once while the
script loads, so a constructor that raises ``TypeError``, ``ValueError`` or
:class:`~pipeline.errors.ConfigError` reports a script error at load time, with the
script's file and line. Constructors therefore only store and check configuration;
per-stream work starts on the first event, or in :meth:`Filter.on_start`.

A filter may override the synchronous :meth:`Filter.on_start`, called once when
the filter's pipeline starts, before any event, for work that must not wait for
the first event (a fixed upstream is dialed at once, so a server that speaks first
is heard). It may start tasks with :meth:`~pipeline.live.Pipeline.start_task`; it
must not block or raise. The runtime starts a connection's pipeline when it
accepts the connection (not when a lone ``connect`` relays it without events),
and a sub-pipeline starts when it is opened; a filter that does not override the
hook costs nothing for it.

Class attributes describe the filter to the builder:

* ``name``: the builder method (``connect``, ``demux``...).
* ``joint``: the filter runs sub-pipelines and needs ``.to(...)`` after it.
* ``layout_params``: names of constructor parameters that take a layout (a layout
  name or a function building one), for filters such as ``branch`` and ``link``.

Filters that need I/O or time start their tasks with
:meth:`pipeline.live.Pipeline.start_task`, never with a nursery of their own: the
pipeline cancels them when it closes, so no task outlives its pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .events import Event

if TYPE_CHECKING:
    from .context import Context
    from .layout import FilterSpec, Layout
    from .live import Pipeline

__all__ = ["Filter", "Output"]

Output = Callable[[Event], Awaitable[None]]


class Filter:
    """Base class of every filter. Subclasses override :meth:`on_event`."""

    name: ClassVar[str] = ""
    joint: ClassVar[bool] = False
    layout_params: ClassVar[tuple[str, ...]] = ()
    #: Whether the class overrides :meth:`on_start` (set for every subclass), so
    #: that a pipeline calls the hook only on the filters that have one.
    starts: ClassVar[bool] = False

    # Set by the live pipeline when it wires the chain; never by the filter.
    output: Output
    pipeline: Pipeline
    spec: FilterSpec

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.starts = cls.on_start is not Filter.on_start

    def on_start(self) -> None:
        """Called once when the filter's pipeline starts, before any event, for
        work that must not wait for the first event (a fixed upstream is dialed at
        once, so a server that speaks first is heard). It may start tasks with
        :meth:`~pipeline.live.Pipeline.start_task`; it must not block or raise.
        The default does nothing."""

    async def on_event(self, event: Event) -> None:
        """Handle one event. The default passes it on unchanged."""
        await self.output(event)

    def close(self) -> None:
        """Release what the filter holds (sockets, sub-pipelines). Called once, when
        its pipeline closes; must not block or raise."""

    @classmethod
    def shared(cls, *args: Any, **kwargs: Any) -> Any:
        """State shared by every instance made from one builder call (a connection
        pool, a counter), created once at load time with the builder's arguments.
        Instances reach it as ``self.spec.state``. The default shares nothing."""
        return None

    # Helpers for subclasses -------------------------------------------------

    @property
    def context(self) -> Context:
        """The context of the stream this filter serves."""
        return self.pipeline.context

    @property
    def sub_layout(self) -> Layout:
        """The layout given with ``.to(...)`` (joint filters only)."""
        return self.spec.subs[0].layout
