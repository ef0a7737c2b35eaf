"""``dump(tag="", level="info", max_bytes=64)``: log every event passing through.

Each event is logged on the ``trioxy.dump`` logger, one line per event, then passed
on unchanged::

    [tag] ctx#7 MessageStart {'method': 'GET'}
    [tag] ctx#7 Data 11 bytes b'hello world'
    [tag] ctx#7 MessageEnd
    [tag] ctx#7 StreamEnd ConnectRefused('connection refused')

``Data`` lines give the length and a printable preview (the ``repr`` of the first
``max_bytes`` bytes, ``...`` when cut; ``max_bytes=0`` gives no preview). Heads,
tails and errors are shown with ``repr``, cut to ``4 * max_bytes`` characters (at
least 80). ``level`` is a logging level name (``"debug"``, ``"info"``,
``"warning"``...) or number; when the logger does not log at that level the filter
formats nothing, so a ``dump`` left in a script costs one check per event.

Example: watch the bytes before and after a filter (put ``dump`` on each side of a
``connect`` to watch a client and its server)::

    import logging
    from pipeline import Proxy

    logging.basicConfig(level=logging.INFO)
    proxy = Proxy()
    (proxy.listen(8000)
        .dump("in")
        .replace_data(lambda ctx, data: data.upper())
        .dump("out"))
"""

from __future__ import annotations

import logging

from pipeline.events import Data, Event, MessageEnd, MessageStart
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl

__all__ = ["Dump"]

log = logging.getLogger("trioxy.dump")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Dump(Filter):
    """``dump(tag="", level="info", max_bytes=64)``: log one line per event on the
    ``trioxy.dump`` logger and pass the event on."""

    name = "dump"

    def __init__(self, tag: str = "", *, level: str | int = "info", max_bytes: int = 64) -> None:
        if not isinstance(tag, str):
            raise TypeError(f"tag must be a string, got {tag!r}")
        if isinstance(level, str):
            if level.lower() not in _LEVELS:
                raise ValueError(f"unknown level {level!r}; use one of {', '.join(_LEVELS)}")
            self.level = _LEVELS[level.lower()]
        elif type(level) is int and level >= 0:
            self.level = level
        else:
            raise TypeError(f"level must be a level name or a number, got {level!r}")
        if type(max_bytes) is not int or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        self.prefix = f"[{tag}] " if tag else ""
        self.max_bytes = max_bytes
        self.max_repr = max(80, 4 * max_bytes)

    async def on_event(self, event: Event) -> None:
        if log.isEnabledFor(self.level):
            log.log(
                self.level,
                "%sctx#%d %s",
                self.prefix,
                self.pipeline.context.id,
                self.describe(event),
            )
        await self.output(event)

    def describe(self, event: Event) -> str:
        """The part of the log line that tells the event."""
        kind = type(event)
        if kind is Data:
            data: bytes = event.data  # type: ignore[union-attr]
            if not self.max_bytes:
                return f"Data {len(data)} bytes"
            preview = repr(data[: self.max_bytes])
            more = "..." if len(data) > self.max_bytes else ""
            return f"Data {len(data)} bytes {preview}{more}"
        if kind is MessageStart:
            value = event.head  # type: ignore[union-attr]
        elif kind is MessageEnd:
            value = event.tail  # type: ignore[union-attr]
        else:
            value = event.error  # type: ignore[union-attr]
        if value is None:
            return kind.__name__
        return f"{kind.__name__} {_cut(repr(value), self.max_repr)}"


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Dump]
