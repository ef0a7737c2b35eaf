"""The four events that flow through every pipeline.

A byte stream is a sequence of :class:`Data` events ended by a :class:`StreamEnd`.
A message is ``MessageStart, Data*, MessageEnd``: decoders turn ``Data`` into
messages, encoders turn messages back into ``Data``. Failures travel as events too:
``StreamEnd(error=...)`` carries a typed reason (an exception instance from
:mod:`pipeline.errors` or a codec's ``ProtocolError``) instead of raising across
filters.

The classes are frozen and slotted: events are shared between filters (a ``fork``
hands the same object to several branches), so no filter may mutate one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Data", "Event", "MessageEnd", "MessageStart", "StreamEnd"]


@dataclass(frozen=True, slots=True)
class Data:
    """A chunk of a byte stream or of a message body."""

    data: bytes = b""

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class MessageStart:
    """A message begins. ``head`` is a typed object from :mod:`protocols` (an HTTP
    request head, an MQTT packet header, ...) or any value a script chooses."""

    head: Any = None


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """The current message is complete. ``tail`` holds trailers or statistics."""

    tail: Any = None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The stream is over. ``error`` is ``None`` for a clean end, otherwise the
    reason, an exception instance (never raised across filters, only carried)."""

    error: BaseException | None = None


Event = Data | MessageStart | MessageEnd | StreamEnd
