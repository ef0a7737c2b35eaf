"""Live pipelines: one instance of a layout, serving one stream.

A :class:`Pipeline` owns a fresh instance of every filter of its layout, chained so
that each filter's ``output`` is the next filter's ``on_event`` and the last one's
is the pipeline's output callback. Feeding the pipeline is one await:
``await pipeline.input(event)``; there is no channel and no task between filters.

Starting: :meth:`Pipeline.start` calls the :meth:`~pipeline.filter.Filter.on_start`
hook of the filters that have one (a ``connect`` to a fixed target dials there),
once. The constructor does not start: the runtime starts a connection's pipeline
when it takes the event path (a lone ``connect`` relaying without events is never
started), and :meth:`Pipeline.sub` starts the sub-pipeline it opens, so a
sub-pipeline opened when it is needed (``accept_tls``'s, once the handshake is
done) starts then.

Lifetime: a pipeline runs its filters' tasks in a nursery it is given (the
connection's, or a long-lived one for shared sessions), each inside a cancel scope
it keeps. :meth:`Pipeline.close` cancels those tasks, closes the filters and every
sub-pipeline opened from it. Closing is synchronous and idempotent, so it is safe
in ``finally`` blocks and under cancellation.

What the server gives its streams, through context variables that every task it
starts inherits (``None`` outside a server; :mod:`pipeline.testing` sets a
service nursery of its own, and no notice):

* :data:`service_nursery`: a nursery that lives as long as the server;
* :data:`shutdown_notice`: a :class:`ShutdownNotice` that says when the server
  begins its graceful shutdown. The runtime lets every open stream finish within
  the grace period; a filter that keeps a connection open *between* exchanges
  subscribes to the notice so that it does not hold the server for that long:
  ``demux_http`` closes a client connection idle between two requests at once
  and gives the response in flight ``Connection: close``; ``mux_http`` closes its
  idle pooled upstream connections. A filter closes its stream at once by
  outputting ``StreamEnd(ServerStopping(...))``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import trio

from .context import Context
from .errors import TrioxyError
from .events import Event
from .filter import Filter, Output

if TYPE_CHECKING:
    from .layout import Layout

__all__ = ["Pipeline", "ServerStopping", "ShutdownNotice", "service_nursery", "shutdown_notice"]

log = logging.getLogger("trioxy.pipeline")

#: A nursery that lives as long as the server, for state shared between streams
#: (mux sessions, health checkers): a stream's own nursery ends with the stream.
#: Set by :func:`pipeline.runtime.serve` and by :mod:`pipeline.testing`; tasks
#: inherit it from the task that started them.
service_nursery: ContextVar[trio.Nursery | None] = ContextVar(
    "trioxy_service_nursery", default=None
)


class ServerStopping(TrioxyError):
    """Carried by ``StreamEnd(error)`` when a filter closes its stream at once
    because the server is shutting down (an idle keep-alive connection): the
    runtime closes the connection both ways, and logs it at debug level only."""


class ShutdownNotice:
    """The start of the server's graceful shutdown, as streams see it.

    :meth:`start` (called once by the runtime, when it has stopped accepting) sets
    :attr:`started` and calls every subscribed callback, synchronously, in the
    order they subscribed; :meth:`wait` returns then. A callback must not block:
    it changes state or starts a task (:meth:`Pipeline.start_task`). One that
    raises is logged and the others still run.

    Subscribing is cheap (a dict entry), so a filter may subscribe per stream and
    unsubscribe in its ``close``. A callback subscribed after the start is never
    called: check :attr:`started` first.
    """

    __slots__ = ("_callbacks", "_event")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._callbacks: dict[Callable[[], object], None] = {}

    @property
    def started(self) -> bool:
        """Whether the graceful shutdown has begun."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once the graceful shutdown has begun."""
        await self._event.wait()

    def subscribe(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` when the shutdown starts."""
        self._callbacks[callback] = None

    def unsubscribe(self, callback: Callable[[], object]) -> None:
        """Forget ``callback`` (no error if it is not subscribed)."""
        self._callbacks.pop(callback, None)

    def start(self) -> None:
        """Begin the shutdown: set :attr:`started`, run the callbacks. Idempotent."""
        if self._event.is_set():
            return
        self._event.set()
        callbacks, self._callbacks = self._callbacks, {}
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a buggy plugin's callback must not stop the others
                log.exception("shutdown callback %r failed", callback)

    def __repr__(self) -> str:
        state = "started" if self.started else f"{len(self._callbacks)} subscribed"
        return f"<ShutdownNotice {state}>"


#: The server's :class:`ShutdownNotice`. Set by :func:`pipeline.runtime.serve`;
#: tasks inherit it like :data:`service_nursery`.
shutdown_notice: ContextVar[ShutdownNotice | None] = ContextVar(
    "trioxy_shutdown_notice", default=None
)


async def _dropped(event: Event) -> None:
    """The input of a closed pipeline: events are dropped."""


class Pipeline:
    """One live instance of a :class:`~pipeline.layout.Layout`."""

    __slots__ = (
        "_children",
        "_scopes",
        "_starting",
        "closed",
        "context",
        "filters",
        "input",
        "layout",
        "nursery",
        "parent",
    )

    def __init__(
        self,
        layout: Layout,
        context: Context,
        nursery: trio.Nursery,
        output: Output,
        parent: Pipeline | None = None,
    ) -> None:
        self.layout = layout
        self.context = context
        self.nursery = nursery
        self.parent = parent
        self.closed = False
        self._scopes: set[trio.CancelScope] = set()
        self._children: set[Pipeline] = set()
        filters: list[Filter] = [spec.create() for spec in layout.specs]
        self.filters = filters
        following = output
        starting: list[Filter] | None = None  # the filters with an on_start hook
        for f in reversed(filters):
            f.output = following
            f.pipeline = self
            following = f.on_event
            if f.starts:
                if starting is None:
                    starting = []
                starting.append(f)
        if starting is not None:
            starting.reverse()
        self._starting = starting  # None once started (or nothing to start)
        self.input: Output = following
        if parent is not None:
            parent._children.add(self)

    def sub(
        self,
        layout: Layout,
        output: Output,
        context: Context | None = None,
        nursery: trio.Nursery | None = None,
    ) -> Pipeline:
        """Open a sub-pipeline of ``layout`` whose output goes to ``output``, and
        :meth:`start` it.

        It shares this pipeline's context unless ``context`` is given, runs its tasks
        in the same nursery unless ``nursery`` is given, and is closed with this
        pipeline (or earlier, by its own :meth:`close`). Its filters' ``on_start``
        hooks run before this returns, so the caller sets up what they may read
        (the context's values) before opening it.
        """
        sub = Pipeline(
            layout, context or self.context, nursery or self.nursery, output, parent=self
        )
        sub.start()
        return sub

    def start(self) -> None:
        """Call :meth:`~pipeline.filter.Filter.on_start` on the filters that have
        one, in order. Only the first call does anything; a closed pipeline starts
        nothing."""
        starting, self._starting = self._starting, None
        if starting is None or self.closed:
            return
        for f in starting:
            f.on_start()

    def start_task(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None
    ) -> None:
        """Run ``fn(*args)`` in the pipeline's nursery until it returns or the pipeline
        closes. An exception escaping ``fn`` ends the whole stream (it reaches the
        nursery of the connection), so tasks turn expected failures into events."""
        scope = trio.CancelScope()
        if self.closed:
            scope.cancel()
        self._scopes.add(scope)

        async def run() -> None:
            try:
                with scope:
                    await fn(*args)
            finally:
                self._scopes.discard(scope)

        self.nursery.start_soon(run, name=name or getattr(fn, "__qualname__", repr(fn)))

    def close(self) -> None:
        """Cancel the pipeline's tasks, close its filters and sub-pipelines.

        Cancelled tasks finish at their next checkpoint, so :attr:`task_count`
        reaches 0 shortly after, not within this call."""
        if self.closed:
            return
        self.closed = True
        for scope in self._scopes:
            scope.cancel()
        for child in list(self._children):
            child.close()
        for f in self.filters:
            try:
                f.close()
            except Exception:  # a buggy plugin's close must not stop the others
                log.exception("filter %s failed to close", f.name or type(f).__name__)
        if self.parent is not None:
            self.parent._children.discard(self)
        # A pipeline and its filters reference each other (``f.pipeline``, the
        # chain of ``output`` methods): dropping our side of that cycle lets
        # reference counting free a closed stream's filters (and the sockets,
        # buffers and TLS objects they hold) at once, not at the cyclic
        # collector's next pass. Events sent to a closed pipeline are dropped.
        self.filters = []
        self.input = _dropped

    @property
    def task_count(self) -> int:
        """Tasks of this pipeline and its sub-pipelines still running."""
        return len(self._scopes) + sum(c.task_count for c in self._children)

    def __repr__(self) -> str:
        return f"<Pipeline {self.layout.name!r} ctx#{self.context.id}>"
