"""smux: trioxy's stream-multiplexing link protocol, sans-IO.

One long-lived byte connection (a *link*: TCP, or TLS over TCP) carries many
independent byte streams, each with its own flow control, so that one slow
stream never stalls the others. It is what the IoT edge gateway uses to carry
thousands of device sessions over a few upstream connections, and what the
tunnel between networks uses.

Wire format: every frame is a 9-byte header followed by its payload::

    type: u8 | stream id: u32 (big endian) | payload length: u32 | payload

Frame types (:class:`FrameType`):

* ``OPEN``: a new stream; the payload is its metadata, a JSON object of string
  values (the target, the device's client id...). The opener allocates the id:
  the side that opened the link uses odd ids, the other side even ids (only the
  opening side opens streams today).
* ``DATA``: stream bytes. A sender may have at most *window* bytes of a stream
  unacknowledged (the initial window is agreed out of band: both ends are
  configured with the same value, :data:`DEFAULT_WINDOW`).
* ``WINDOW``: the receiver consumed bytes: the payload is a u32 increment of the
  sender's window. This is per-stream credit, as in HTTP/2 and yamux.
* ``FIN``: the sender will send no more on this stream (half-close).
* ``RESET``: the stream is aborted; the payload is a UTF-8 reason.
* ``PING`` / ``PONG`` (stream 0): link liveness; the payload (8 bytes) is echoed.
* ``GOAWAY`` (stream 0): the sender will open no more streams and closes the
  link when the open ones end; the payload is a UTF-8 reason.

:class:`FrameDecoder` turns bytes into :class:`Frame` objects and validates them;
:func:`encode_frame` does the reverse. The stream bookkeeping (windows, which ids
are open) lives in the filters that use the protocol (:mod:`filters.smux`).
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_FRAME",
    "DEFAULT_WINDOW",
    "HEADER",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "ProtocolError",
    "decode_metadata",
    "encode_frame",
    "encode_metadata",
]

HEADER = struct.Struct("!BII")
DEFAULT_WINDOW = 256 * 1024
DEFAULT_MAX_FRAME = 64 * 1024
_STREAM_FRAMES_MIN = 1  # OPEN..RESET carry a stream id; PING, PONG, GOAWAY use 0


class FrameType(enum.IntEnum):
    OPEN = 1
    DATA = 2
    WINDOW = 3
    FIN = 4
    RESET = 5
    PING = 6
    PONG = 7
    GOAWAY = 8


_LINK_FRAMES = frozenset({FrameType.PING, FrameType.PONG, FrameType.GOAWAY})


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid smux frame sequence. The link
    cannot be used afterwards."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    type: FrameType
    stream: int
    payload: bytes = b""

    @property
    def increment(self) -> int:
        """The window increment of a ``WINDOW`` frame."""
        return int.from_bytes(self.payload, "big")


def encode_frame(type: FrameType, stream: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    return HEADER.pack(type, stream, len(payload)) + payload


def encode_metadata(metadata: dict[str, str]) -> bytes:
    """An ``OPEN`` payload."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()


def decode_metadata(payload: bytes) -> dict[str, str]:
    """The metadata of an ``OPEN`` payload; :class:`ProtocolError` if it is not a
    JSON object of strings."""
    try:
        value = json.loads(payload.decode()) if payload else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"OPEN metadata is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ProtocolError("OPEN metadata must be a JSON object of strings")
    return value


class FrameDecoder:
    """Bytes in, frames out.

    ``max_frame`` bounds a frame's payload (a larger one is a protocol error, not a
    reason to buffer without bound).
    """

    __slots__ = ("_buffer", "_error", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = b""
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """Decode every complete frame of what has arrived so far."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer + data if self._buffer else data
        frames: list[Frame] = []
        pos = 0
        size = len(buffer)
        header_size = HEADER.size
        try:
            while size - pos >= header_size:
                kind, stream, length = HEADER.unpack_from(buffer, pos)
                if length > self.max_frame:
                    raise ProtocolError(f"frame of {length} bytes exceeds {self.max_frame}")
                end = pos + header_size + length
                if end > size:
                    break
                frames.append(self._frame(kind, stream, buffer[pos + header_size : end]))
                pos = end
        except ProtocolError as exc:
            self._error = exc
            raise
        self._buffer = buffer[pos:]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    @staticmethod
    def _frame(kind: int, stream: int, payload: bytes) -> Frame:
        try:
            ftype = FrameType(kind)
        except ValueError:
            raise ProtocolError(f"unknown frame type {kind}") from None
        if ftype in _LINK_FRAMES:
            if stream != 0:
                raise ProtocolError(f"{ftype.name} on stream {stream} (must be 0)")
            if ftype is not FrameType.GOAWAY and len(payload) != 8:
                raise ProtocolError(f"{ftype.name} payload must be 8 bytes")
        elif stream < _STREAM_FRAMES_MIN:
            raise ProtocolError(f"{ftype.name} on stream 0")
        elif ftype is FrameType.WINDOW:
            if len(payload) != 4 or payload == b"\0\0\0\0":
                raise ProtocolError("WINDOW payload must be a non-zero u32")
        elif ftype is FrameType.FIN and payload:
            raise ProtocolError("FIN carries no payload")
        return Frame(ftype, stream, payload)
