"""``handle_*``: call a script's function on events, passing every event on.

Callbacks take the stream's :class:`~pipeline.context.Context` first; they may be
plain functions or ``async def``. What they return is ignored (use ``replace_*``
to change events). An exception in a callback propagates to whoever fed the event;
under ``trioxy run`` the runtime ends that stream (only that one) with one log line.

===========================  ======================================================
builder method               callback
===========================  ======================================================
``handle_stream_start(fn)``  ``fn(ctx)`` before the first event of the stream
``handle_message_start(fn)`` ``fn(ctx, head)`` on each ``MessageStart``
``handle_data(fn)``          ``fn(ctx, data: bytes)`` on each ``Data``
``handle_message_end(fn)``   ``fn(ctx, tail)`` on each ``MessageEnd``
``handle_message(fn)``       ``fn(ctx, head, body: bytes)`` on each whole message
``handle_stream_end(fn)``    ``fn(ctx, error)`` on ``StreamEnd`` (``error`` or None)
===========================  ======================================================

Example: tag each message's context with the time it was seen, and count bytes::

    import time
    from pipeline import Proxy

    def seen(ctx, head):
        ctx.set(first_seen=time.time())

    def count(ctx, data):
        ctx.set(received=ctx.get("received", 0) + len(data))

    proxy = Proxy()
    (proxy.listen(8080)
        .handle_data(count)
        .demux().to(lambda p: p.handle_message_start(seen).connect("127.0.0.1:9000")))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl

from ._callback import as_async

__all__ = [
    "HandleData",
    "HandleMessage",
    "HandleMessageEnd",
    "HandleMessageStart",
    "HandleStreamEnd",
    "HandleStreamStart",
]


def _check_callable(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"expected a function, got {fn!r}")


class HandleStreamStart(Filter):
    """``handle_stream_start(fn)``: ``fn(ctx)`` once, before the first event."""

    name = "handle_stream_start"

    def __init__(self, fn: Callable[..., Any]) -> None:
        _check_callable(fn)
        self.fn = as_async(fn)
        self.started = False

    async def on_event(self, event: Event) -> None:
        if not self.started:
            self.started = True
            await self.fn(self.pipeline.context)
        await self.output(event)


class HandleMessageStart(Filter):
    """``handle_message_start(fn)``: ``fn(ctx, head)`` on each ``MessageStart``."""

    name = "handle_message_start"

    def __init__(self, fn: Callable[..., Any]) -> None:
        _check_callable(fn)
        self.fn = as_async(fn)

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart:
            await self.fn(self.pipeline.context, event.head)
        await self.output(event)


class HandleData(Filter):
    """``handle_data(fn)``: ``fn(ctx, data)`` on each ``Data`` event's bytes."""

    name = "handle_data"

    def __init__(self, fn: Callable[..., Any]) -> None:
        _check_callable(fn)
        self.fn = as_async(fn)

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            await self.fn(self.pipeline.context, event.data)
        await self.output(event)


class HandleMessageEnd(Filter):
    """``handle_message_end(fn)``: ``fn(ctx, tail)`` on each ``MessageEnd``."""

    name = "handle_message_end"

    def __init__(self, fn: Callable[..., Any]) -> None:
        _check_callable(fn)
        self.fn = as_async(fn)

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageEnd:
            await self.fn(self.pipeline.context, event.tail)
        await self.output(event)


class HandleMessage(Filter):
    """``handle_message(fn, max_size=1 MiB)``: ``fn(ctx, head, body)`` when a message
    is complete. The events still pass on as they come; only the callback waits for
    the whole body. A body over ``max_size`` bytes ends the stream with a
    ``PipelineError``; nothing passes after that."""

    name = "handle_message"

    def __init__(self, fn: Callable[..., Any], max_size: int = 1 << 20) -> None:
        _check_callable(fn)
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0:
            raise ValueError(f"max_size must be a whole number of bytes >= 0, got {max_size!r}")
        self.fn = as_async(fn)
        self.max_size = max_size
        self.head: Any = None
        self.body: list[bytes] | None = None
        self.size = 0
        self.failed = False

    async def on_event(self, event: Event) -> None:
        if self.failed:
            return
        kind = type(event)
        if kind is MessageStart:
            self.head, self.body, self.size = event.head, [], 0  # type: ignore[union-attr]
        elif kind is Data and self.body is not None:
            self.size += len(event.data)  # type: ignore[union-attr]
            if self.size > self.max_size:
                self.body, self.failed = None, True
                await self.output(
                    StreamEnd(PipelineError(f"handle_message: body over {self.max_size} bytes"))
                )
                return
            self.body.append(event.data)  # type: ignore[union-attr]
        elif kind is MessageEnd and self.body is not None:
            body, self.body = b"".join(self.body), None
            await self.fn(self.pipeline.context, self.head, body)
        await self.output(event)


class HandleStreamEnd(Filter):
    """``handle_stream_end(fn)``: ``fn(ctx, error)`` on ``StreamEnd``."""

    name = "handle_stream_end"

    def __init__(self, fn: Callable[..., Any]) -> None:
        _check_callable(fn)
        self.fn = as_async(fn)

    async def on_event(self, event: Event) -> None:
        if type(event) is StreamEnd:
            await self.fn(self.pipeline.context, event.error)
        await self.output(event)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [
        HandleStreamStart,
        HandleMessageStart,
        HandleData,
        HandleMessageEnd,
        HandleMessage,
        HandleStreamEnd,
    ]
