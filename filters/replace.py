"""``replace_*``: let a script's function replace events (Pipy's ``replace*`` family).

Each filter calls its function on one kind of event and outputs what the function
returns *instead of* that event; every other event passes on unchanged. Functions
take the stream's :class:`~pipeline.context.Context` first and may be plain
functions or ``async def`` (decided once, when the script loads). An exception
in a function propagates out of the filter, as with ``handle_*``.

=================================  ===========================================  =============
builder method                     function                                     natural value
=================================  ===========================================  =============
``replace_stream_start(fn)``       ``fn(ctx)``, before the first event;         bytes
                                   its result is *inserted*, the stream passes
``replace_message_start(fn)``      ``fn(ctx, head)`` on each ``MessageStart``   a new head
``replace_data(fn)``               ``fn(ctx, data: bytes)`` on each ``Data``    bytes
``replace_message_end(fn)``        ``fn(ctx, tail)`` on each ``MessageEnd``     a new tail
``replace_message(fn, max_size)``  ``fn(ctx, head, body: bytes)`` on each       ``(head, body)``
                                   whole message (buffered)
``replace_stream_end(fn)``         ``fn(ctx, error)`` on ``StreamEnd``          bytes
=================================  ===========================================  =============

What a function may return, the same for the whole family:

* ``None``: output nothing (the event is dropped; for ``replace_stream_start``
  nothing is inserted).
* An event (``Data``, ``MessageStart``, ``MessageEnd``, ``StreamEnd``): output it.
* A ``list``: output its items in order; each is an event or ``bytes`` (which
  becomes ``Data``; empty bytes output nothing). A list is always a list of
  events, never a head or a body.
* Anything else is the filter's *natural value* (right-hand column): ``bytes``
  become one ``Data`` (empty bytes output nothing) for ``replace_data``,
  ``replace_stream_start`` and ``replace_stream_end``; any value is the new head
  of a ``MessageStart`` for ``replace_message_start`` and the new tail of a
  ``MessageEnd`` for ``replace_message_end`` (so a tuple or ``bytes`` head is
  fine); ``replace_message`` takes a ``(head, body)`` tuple, output as
  ``MessageStart(head), Data(body), MessageEnd(tail)`` with the original tail
  (``(head, body, tail)`` sets the tail too; an empty body outputs no ``Data``).
  A value of the wrong kind (``str`` from ``replace_data``) raises
  :class:`~pipeline.errors.PipelineError`.

Ending the stream: when the output of a function contains a ``StreamEnd`` (it must
be the last event), the filter's stream is over: every later input, including
the real ``StreamEnd``, is discarded. ``replace_stream_start`` can refuse a stream
that way. ``replace_stream_end`` always ends the stream: if what the function
returns does not end with a ``StreamEnd``, a clean ``StreamEnd()`` follows it, so
returning ``None`` (or a response without ``StreamEnd``) *handles* the error;
return ``[..., StreamEnd(error)]`` to keep it.

``replace_message`` buffers each message (``MessageStart, Data*, MessageEnd``)
and calls the function once it is complete; a body over ``max_size`` bytes
(default 1 MiB) ends the stream with ``StreamEnd(PipelineError)``, as does a
``MessageStart`` inside an unfinished message. A message cut short by
``StreamEnd`` is discarded (the function is not called; the ``StreamEnd``
passes). Events outside messages pass on unchanged.

Examples, one per filter::

    from pipeline import Proxy, Data, MessageStart, MessageEnd, StreamEnd

    proxy = Proxy()

    # a greeting before anything the server sends
    proxy.pipeline("greet").replace_stream_start(lambda ctx: b"220 welcome\\r\\n")

    # rewrite heads (here a dict) and drop messages marked private
    def route(ctx, head):
        if head.get("private"):
            return None
        return {**head, "via": "trioxy"}

    proxy.pipeline("heads").replace_message_start(route)

    # uppercase every chunk
    proxy.pipeline("upper").replace_data(lambda ctx, data: data.upper())

    # put statistics in every tail
    proxy.pipeline("tails").replace_message_end(lambda ctx, tail: {"seen": True})

    # answer each whole message with its reversed body
    proxy.pipeline("mirror").replace_message(lambda ctx, head, body: (head, body[::-1]))

    # turn an upstream failure into a last line, then end cleanly
    def on_end(ctx, error):
        if error is not None:
            return [b"error: " + str(error).encode() + b"\\r\\n", StreamEnd()]
        return StreamEnd()

    proxy.pipeline("end").replace_stream_end(on_end)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl

from ._callback import as_async

__all__ = [
    "ReplaceData",
    "ReplaceMessage",
    "ReplaceMessageEnd",
    "ReplaceMessageStart",
    "ReplaceStreamEnd",
    "ReplaceStreamStart",
    "event_list",
]

_EVENT_TYPES: frozenset[type] = frozenset((Data, MessageStart, MessageEnd, StreamEnd))
_BYTES_TYPES: frozenset[type] = frozenset((bytes, bytearray, memoryview))


def event_list(items: Any, where: str) -> list[Event]:
    """The events of ``items``, a list whose items are events or ``bytes`` (made
    ``Data``; empty bytes are skipped). A ``StreamEnd`` may only come last.
    Raises ``TypeError`` naming ``where`` for anything else."""
    out: list[Event] = []
    for item in items:
        kind = type(item)
        if kind in _EVENT_TYPES:
            if out and type(out[-1]) is StreamEnd:
                raise TypeError(f"{where}: an event follows StreamEnd in {items!r}")
            out.append(item)
        elif kind in _BYTES_TYPES:
            if out and type(out[-1]) is StreamEnd:
                raise TypeError(f"{where}: data follows StreamEnd in {items!r}")
            if item:
                out.append(Data(bytes(item)))
        else:
            raise TypeError(f"{where}: a list of events holds events and bytes, not {item!r}")
    return out


def _check_callable(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"expected a function, got {fn!r}")


def _bytes_value(value: Any, where: str) -> Event | None:
    """The natural value of the byte-producing filters: bytes become ``Data``."""
    if type(value) in _BYTES_TYPES:
        return Data(bytes(value)) if value else None
    raise PipelineError(
        f"{where}: the function returned {value!r}; expected bytes, an event, "
        "a list of events or None"
    )


class _Replace(Filter):
    """Shared machinery: the callback, the ended flag and the slow output path."""

    fn: Callable[..., Awaitable[Any]]

    def __init__(self, fn: Callable[..., Any]) -> None:
        _check_callable(fn)
        self.fn = as_async(fn)
        self.ended = False

    def _where(self) -> str:
        spec = getattr(self, "spec", None)
        if spec is None:
            return self.name
        filename, lineno = spec.location
        return f"{spec.describe()} at {filename}:{lineno}"

    def _natural(self, value: Any) -> Event | None:
        """The event a natural value stands for (see the module docs)."""
        return _bytes_value(value, self._where())

    async def _emit(self, result: Any) -> None:
        """Output a function's result that is not the fast-path case."""
        if result is None:
            return
        kind = type(result)
        if kind is list:
            try:
                events = event_list(result, self._where())
            except TypeError as exc:
                raise PipelineError(str(exc)) from None
            for event in events:
                if type(event) is StreamEnd:
                    self.ended = True
                await self.output(event)
            return
        single: Event | None = result if kind in _EVENT_TYPES else self._natural(result)
        if single is not None:
            if type(single) is StreamEnd:
                self.ended = True
            await self.output(single)


class ReplaceStreamStart(_Replace):
    """``replace_stream_start(fn)``: output what ``fn(ctx)`` returns before the first
    event, then pass the stream on. A ``StreamEnd`` in the result refuses the
    stream (its input is then discarded)."""

    name = "replace_stream_start"

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__(fn)
        self.started = False

    async def on_event(self, event: Event) -> None:
        if not self.started:
            self.started = True
            await self._emit(await self.fn(self.pipeline.context))
        if self.ended:
            return
        await self.output(event)


class ReplaceMessageStart(_Replace):
    """``replace_message_start(fn)``: replace each ``MessageStart`` with what
    ``fn(ctx, head)`` returns: a new head, an event, a list of events, or None."""

    name = "replace_message_start"

    async def on_event(self, event: Event) -> None:
        if self.ended:
            return
        if type(event) is not MessageStart:
            await self.output(event)
            return
        head = event.head
        result = await self.fn(self.pipeline.context, head)
        if result is head:
            await self.output(event)
        else:
            await self._emit(result)

    def _natural(self, value: Any) -> Event:
        return MessageStart(value)


class ReplaceData(_Replace):
    """``replace_data(fn)``: replace each ``Data`` with what ``fn(ctx, data)``
    returns: bytes, an event, a list of events, or None."""

    name = "replace_data"

    async def on_event(self, event: Event) -> None:
        if self.ended:
            return
        if type(event) is not Data:
            await self.output(event)
            return
        data = event.data
        result = await self.fn(self.pipeline.context, data)
        if type(result) is bytes:
            if result:
                await self.output(event if result is data else Data(result))
        else:
            await self._emit(result)


class ReplaceMessageEnd(_Replace):
    """``replace_message_end(fn)``: replace each ``MessageEnd`` with what
    ``fn(ctx, tail)`` returns: a new tail, an event, a list of events, or None."""

    name = "replace_message_end"

    async def on_event(self, event: Event) -> None:
        if self.ended:
            return
        if type(event) is not MessageEnd:
            await self.output(event)
            return
        tail = event.tail
        result = await self.fn(self.pipeline.context, tail)
        if result is tail:
            await self.output(event)
        else:
            await self._emit(result)

    def _natural(self, value: Any) -> Event:
        return MessageEnd(value)


class ReplaceMessage(_Replace):
    """``replace_message(fn, max_size=1 MiB)``: buffer each whole message and replace
    it with what ``fn(ctx, head, body)`` returns: a ``(head, body)`` tuple (or
    ``(head, body, tail)``), an event, a list of events, or None to drop it."""

    name = "replace_message"

    def __init__(self, fn: Callable[..., Any], max_size: int = 1 << 20) -> None:
        super().__init__(fn)
        if type(max_size) is not int or max_size < 0:
            raise ValueError(f"max_size must be an int >= 0, got {max_size!r}")
        self.max_size = max_size
        self.head: Any = None
        self.body: list[bytes] | None = None
        self.size = 0
        self.end: MessageEnd | None = None

    async def on_event(self, event: Event) -> None:
        if self.ended:
            return
        body = self.body
        kind = type(event)
        if body is None:  # between messages
            if kind is MessageStart:
                self.head = event.head  # type: ignore[union-attr]
                self.body = []
                self.size = 0
            else:
                await self.output(event)
            return
        if kind is Data:
            data = event.data  # type: ignore[union-attr]
            self.size += len(data)
            if self.size > self.max_size:
                await self._fail(f"message body over {self.max_size} bytes")
            elif data:
                body.append(data)
        elif kind is MessageEnd:
            head, self.head, self.body = self.head, None, None
            self.end = event  # type: ignore[assignment]
            result = await self.fn(self.pipeline.context, head, b"".join(body))
            await self._emit(result)
        elif kind is StreamEnd:  # the unfinished message is discarded
            self.head = self.body = None
            await self.output(event)
        else:
            await self._fail("MessageStart inside an unfinished message")

    def _natural(self, value: Any) -> Event | None:
        raise PipelineError(
            f"{self._where()}: the function returned {value!r}; expected a (head, body) "
            "tuple, an event, a list of events or None"
        )

    async def _emit(self, result: Any) -> None:
        if type(result) is not tuple:
            await super()._emit(result)
            return
        end = self.end
        if len(result) == 2:
            head, body = result
        elif len(result) == 3:
            head, body, tail = result
            end = MessageEnd(tail)
        else:
            raise PipelineError(
                f"{self._where()}: the function returned a tuple of {len(result)} items; "
                "expected (head, body) or (head, body, tail)"
            )
        if body is not None and type(body) not in _BYTES_TYPES:
            raise PipelineError(f"{self._where()}: the body must be bytes, got {body!r}")
        await self.output(MessageStart(head))
        if body:
            await self.output(Data(bytes(body)))
        assert end is not None
        await self.output(end)

    async def _fail(self, reason: str) -> None:
        self.head = self.body = None
        self.ended = True
        await self.output(StreamEnd(PipelineError(f"{self._where()}: {reason}")))


class ReplaceStreamEnd(_Replace):
    """``replace_stream_end(fn)``: replace the ``StreamEnd`` with what
    ``fn(ctx, error)`` returns; a clean ``StreamEnd()`` follows unless the result
    ends with a ``StreamEnd`` of its own."""

    name = "replace_stream_end"

    async def on_event(self, event: Event) -> None:
        if self.ended:
            return
        if type(event) is not StreamEnd:
            await self.output(event)
            return
        result = await self.fn(self.pipeline.context, event.error)
        if result is event:
            self.ended = True
            await self.output(event)
            return
        await self._emit(result)
        if not self.ended:
            self.ended = True
            await self.output(StreamEnd())


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [
        ReplaceStreamStart,
        ReplaceMessageStart,
        ReplaceData,
        ReplaceMessageEnd,
        ReplaceMessage,
        ReplaceStreamEnd,
    ]
