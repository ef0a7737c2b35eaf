"""``insert(events_or_fn, at="start")``: add events at the start or the end of a stream.

``events_or_fn`` is what to insert, given once for every stream:

* an event (``Data``, ``MessageStart`` or ``MessageEnd``), ``bytes`` (one ``Data``),
  or a list or tuple of them (``bytes`` items become ``Data``);
* or a function ``fn(ctx)``, plain or ``async def``, called once per stream, that
  returns any of those or ``None`` (insert nothing). Its result follows the rules
  of ``replace_stream_start`` (a ``list`` of events, an event, bytes or None).

``at="start"`` outputs the events before the stream's first event (even when that
first event is its ``StreamEnd``); ``at="end"`` outputs them just before the
``StreamEnd``, clean or not. A ``StreamEnd`` cannot be inserted (use
``replace_stream_start`` or ``replace_stream_end`` to end a stream): a static one
is a load error, one returned by ``fn`` raises
:class:`~pipeline.errors.PipelineError`. Static events are checked and converted
once, when the script loads.

Example: frame a byte stream with a banner and a footer::

    from pipeline import Proxy, Data

    proxy = Proxy()
    (proxy.pipeline("framed")
        .insert(b"hello\\n")
        .insert(lambda ctx: f"bye #{ctx.id}\\n".encode(), at="end"))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl

from ._callback import as_async
from .replace import event_list

__all__ = ["Insert"]

_STATIC_TYPES = (Data, MessageStart, MessageEnd, StreamEnd, bytes, bytearray, memoryview)


def _static_events(value: Any) -> tuple[Event, ...]:
    """The events a static ``insert`` argument stands for (``TypeError`` if bad)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    events = event_list(items, "insert()")
    if any(type(e) is StreamEnd for e in events):
        raise TypeError("insert() cannot insert a StreamEnd")
    return tuple(events)


def _result_events(value: Any, where: str) -> list[Event] | tuple[Event, ...]:
    """The events a function's result stands for (``PipelineError`` if bad)."""
    if value is None:
        return ()
    try:
        if type(value) is list:
            events = event_list(value, where)
        elif isinstance(value, _STATIC_TYPES):
            events = event_list([value], where)
        else:
            raise TypeError(
                f"{where}: the function returned {value!r}; expected bytes, an event, "
                "a list of events or None"
            )
    except TypeError as exc:
        raise PipelineError(str(exc)) from None
    if any(type(e) is StreamEnd for e in events):
        raise PipelineError(
            f"{where}: the function returned a StreamEnd; insert cannot end a stream"
        )
    return events


class Insert(Filter):
    """``insert(events_or_fn, at="start")``: output events (or what ``fn(ctx)``
    returns) before the first event (``at="start"``) or before the ``StreamEnd``
    (``at="end"``)."""

    name = "insert"

    def __init__(self, events_or_fn: Any, *, at: str = "start") -> None:
        if at not in ("start", "end"):
            raise ValueError(f'at must be "start" or "end", got {at!r}')
        self.at_start = at == "start"
        self.done = False
        self.fn: Callable[..., Awaitable[Any]] | None = None
        if callable(events_or_fn) and not isinstance(events_or_fn, _STATIC_TYPES):
            self.fn = as_async(events_or_fn)
        elif not isinstance(events_or_fn, (list, tuple, *_STATIC_TYPES)):
            raise TypeError(
                f"expected events, bytes, a list of them or a function, got {events_or_fn!r}"
            )

    @classmethod
    def shared(cls, events_or_fn: Any, *, at: str = "start") -> tuple[Event, ...] | None:
        """The static events, checked and converted once per layout."""
        if callable(events_or_fn) and not isinstance(events_or_fn, _STATIC_TYPES):
            return None
        return _static_events(events_or_fn)

    async def on_event(self, event: Event) -> None:
        if self.at_start:
            if not self.done:
                self.done = True
                await self._insert()
        elif type(event) is StreamEnd and not self.done:
            self.done = True
            await self._insert()
        await self.output(event)

    async def _insert(self) -> None:
        events: list[Event] | tuple[Event, ...]
        if self.fn is None:
            events = self.spec.state
        else:
            spec = self.spec
            where = f"{spec.describe()} at {spec.location[0]}:{spec.location[1]}"
            events = _result_events(await self.fn(self.pipeline.context), where)
        for e in events:
            await self.output(e)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Insert]
