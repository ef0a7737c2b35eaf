"""WebSocket frames (RFC 6455 section 5): a decoder that keeps every frame as it
was sent, an encoder, and the close-frame payload.

Why wsproto's :class:`~wsproto.frame_protocol.FrameDecoder` and not its
``FrameProtocol`` or ``WSConnection``: a proxy must re-emit each frame as it came
(the same opcode, FIN and RSV bits, the same payload bytes, the same
fragmentation), and the higher layers take that away. ``FrameProtocol`` rewrites
continuation frames to the message's opcode, decodes text payloads to ``str``
(an incremental decoder that holds back a character split across frames, so
the bytes of a frame are no longer the bytes sent) and parses close frames;
``WSConnection`` assembles messages and answers pings itself. The frame decoder
under them parses one frame header at a time and unmasks payloads, with the
RFC's checks (reserved opcodes, fragmented or oversized control frames,
non-minimal lengths, the masking rule of each direction). What it lacks is added
here through its extension hook, which sees every frame header: the RSV bits are
recorded and accepted (an extension negotiated between the two ends, such as
permessage-deflate, passes through opaque: its payloads are not inflated), the
size limits are checked before any payload is buffered, and fragmentation is
checked (a continuation without a message, a new message inside one).

UTF-8. Text messages are validated (1007 otherwise) when ``validate_utf8`` is
true, the default, across their frames with an incremental decoder; a text
message whose first frame has an RSV bit set is not (an extension transformed
its payload, typically compressed it). Close reasons are always validated.

The encoder writes each frame as given (no fragmenting, no coalescing); a
client's frames are masked with a fresh key from ``os.urandom`` per frame.
"""

from __future__ import annotations

import codecs
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from wsproto.extensions import Extension
from wsproto.frame_protocol import (
    CloseReason,
    FrameDecoder,
    Opcode,
    ParseFailed,
    RsvBits,
    XorMaskerSimple,
)

from .errors import InvalidPayload, MessageTooBig, ProtocolError

if TYPE_CHECKING:
    from wsproto.frame_protocol import FrameProtocol

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_CONTROL_PAYLOAD",
    "Close",
    "CloseReason",
    "Decoder",
    "FrameHead",
    "Opcode",
    "close_payload",
    "encode_frame",
    "error_close_payload",
    "parse_close",
]

#: The default bound on one frame's payload: a proxy buffers one frame at a time.
DEFAULT_MAX_FRAME_SIZE = 1 << 20
#: RFC 6455 5.5: a control frame carries at most 125 bytes.
MAX_CONTROL_PAYLOAD = 125

_CONTROL = frozenset((Opcode.CLOSE, Opcode.PING, Opcode.PONG))
_OPCODES = {int(op): op for op in Opcode}
# Codes an endpoint may send (RFC 6455 7.4.1 and the IANA registry: 1012-1014);
# 1004, 1005, 1006 and 1015 are reserved or local-only. 3000-4999 are free.
_SENDABLE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))


@dataclass(frozen=True, slots=True)
class FrameHead:
    """The header of one frame, without its length (the payload has it).

    ``opcode`` is the frame's own (``CONTINUATION`` for the second and later
    frames of a fragmented message); ``fin`` its FIN bit; ``rsv`` its three RSV
    bits as an int (``0b100`` is RSV1, set on a permessage-deflate message's
    first frame); ``masked`` whether it was masked on the wire (a client's frames
    are, a server's are not). The encoder masks according to its own role, not
    to ``masked``.

    >>> FrameHead(Opcode.TEXT).is_control, FrameHead(Opcode.PING).is_control
    (False, True)
    """

    opcode: Opcode
    fin: bool = True
    rsv: int = 0
    masked: bool = False

    @property
    def is_control(self) -> bool:
        """A close, ping or pong frame."""
        return self.opcode in _CONTROL


# Decoded heads are shared: there are few distinct ones, and they are immutable.
_HEADS: dict[tuple[int, bool, int, bool], FrameHead] = {}


def _head(opcode: int, fin: bool, rsv: int, masked: bool) -> FrameHead:
    key = (opcode, fin, rsv, masked)
    head = _HEADS.get(key)
    if head is None:
        head = _HEADS[key] = FrameHead(_OPCODES[opcode], fin, rsv, masked)
    return head


class _HeaderHook(Extension):
    """Not an extension: the frame decoder's hook on each frame header (see the
    module docs). It accepts every RSV bit and checks the limits and the
    fragmentation rules before the payload is read."""

    name = "trioxy-frame-hook"

    def __init__(self, owner: Decoder) -> None:
        self.owner = owner

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def frame_inbound_header(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        payload_length: int,
    ) -> RsvBits:
        self.owner._on_header(opcode, rsv, payload_length)
        return _ALL_RSV


_ALL_RSV = RsvBits(True, True, True)


class Decoder:
    """Bytes of one direction in, frames out: ``feed(data)`` returns the frames
    completed so far as ``(FrameHead, payload)`` pairs, the payload unmasked.

    ``role`` is the side this decoder plays: ``"server"`` decodes what a client
    sends (every frame must be masked), ``"client"`` what a server sends (none
    may be). ``max_frame_size`` bounds one data frame's payload and
    ``max_message_size`` (``None``: no bound) the sum over a fragmented message's
    frames; both are checked on the frame header, so nothing beyond them is
    buffered (1009). Bad input raises :class:`ProtocolError` (or a subclass,
    with the close code to answer) carrying the frames decoded before it.
    Nothing after a close frame is decoded: a peer sends nothing after it
    (RFC 6455 5.5.1), and :attr:`closed` is set.

    >>> wire = encode_frame(FrameHead(Opcode.TEXT, fin=False), b"he", mask=True)
    >>> wire += encode_frame(FrameHead(Opcode.CONTINUATION), b"llo", mask=True)
    >>> [(h.opcode.name, h.fin, p) for h, p in Decoder("server").feed(wire)]
    [('TEXT', False, b'he'), ('CONTINUATION', True, b'llo')]
    """

    def __init__(
        self,
        role: Literal["server", "client"] = "server",
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_message_size: int | None = None,
        validate_utf8: bool = True,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', got {role!r}")
        self.role = role
        self.max_frame_size = max_frame_size
        self.max_message_size = max_message_size
        self.validate_utf8 = validate_utf8
        self._masked = role == "server"
        self._frames = FrameDecoder(client=role == "client", extensions=[_HeaderHook(self)])
        # The frame being read: its opcode and RSV bits (from the hook) and the
        # payload pieces received so far.
        self._opcode = 0
        self._rsv = 0
        self._pieces: list[bytes] = []
        # The fragmented data message in progress: its size so far (None: no
        # message in progress) and its UTF-8 decoder (None: not validated);
        # its size with the frame being read.
        self._message_size: int | None = None
        self._next_size: int | None = None
        self._utf8: codecs.IncrementalDecoder | None = None
        self._error: ProtocolError | None = None
        #: A close frame was decoded: the rest of the input is ignored.
        self.closed = False

    def feed(self, data: bytes) -> list[tuple[FrameHead, bytes]]:
        """Decode what has arrived; the frames completed by it, in order."""
        if self._error is not None:
            raise type(self._error)(self._error.message, self._error.code)
        if self.closed:
            return []
        frames = self._frames
        frames.receive_bytes(data)
        out: list[tuple[FrameHead, bytes]] = []
        try:
            while not self.closed:
                frame = frames.process_buffer()
                if frame is None:
                    break
                if not frame.frame_finished:
                    self._pieces.append(frame.payload)  # type: ignore[arg-type]
                    continue
                payload: bytes = frame.payload  # type: ignore[assignment]
                if self._pieces:
                    self._pieces.append(payload)
                    payload = b"".join(self._pieces)
                    self._pieces = []
                out.append(self._complete(frame.message_finished, payload))
        except ParseFailed as exc:
            self._fail(_error_of(exc), out)
        except ProtocolError as exc:
            self._fail(exc, out)
        return out

    def _fail(self, error: ProtocolError, out: list[tuple[FrameHead, bytes]]) -> None:
        error.frames = out
        self._error = error
        self._pieces = []
        raise error

    def _on_header(self, opcode: Opcode, rsv: RsvBits, length: int) -> None:
        """Called by the frame decoder on each header, before its payload. It may
        be called twice for one header (the decoder parses it again when the
        masking key had not arrived), so it only reads the committed state and
        records this frame's; :meth:`_complete` commits."""
        size = self._message_size
        if opcode in _CONTROL:
            size = None  # 125 bytes at most (checked by the frame decoder); may interleave
        elif opcode is Opcode.CONTINUATION:
            if size is None:
                raise ProtocolError("continuation frame without a message to continue")
            size += length
        elif size is not None:
            raise ProtocolError(f"{opcode.name} frame inside a fragmented message")
        else:
            size = length
        if size is not None:
            if length > self.max_frame_size:
                raise MessageTooBig(f"frame of {length} bytes, the limit is {self.max_frame_size}")
            limit = self.max_message_size
            if limit is not None and size > limit:
                raise MessageTooBig(f"message of {size} bytes or more, the limit is {limit}")
        self._opcode = int(opcode)
        self._rsv = (rsv.rsv1 << 2) | (rsv.rsv2 << 1) | rsv.rsv3
        self._next_size = size

    def _complete(self, fin: bool, payload: bytes) -> tuple[FrameHead, bytes]:
        """A whole frame was read: check it and return it."""
        opcode = self._opcode
        head = _head(opcode, fin, self._rsv, self._masked)
        if opcode >= 8:  # a control frame
            if opcode == Opcode.CLOSE:
                parse_close(payload)
                self.closed = True
            return head, payload
        if opcode != Opcode.CONTINUATION and self.validate_utf8:
            # A new message: validate it if it is text that no extension transformed.
            self._utf8 = (
                codecs.getincrementaldecoder("utf-8")()
                if opcode == Opcode.TEXT and not self._rsv
                else None
            )
        utf8 = self._utf8
        if utf8 is not None:
            try:
                utf8.decode(payload, fin)
            except UnicodeDecodeError as exc:
                raise InvalidPayload(f"text message is not UTF-8: {exc.reason}") from None
        if fin:
            self._message_size = None
            self._utf8 = None
        else:
            self._message_size = self._next_size
        return head, payload


def _error_of(exc: ParseFailed) -> ProtocolError:
    code = int(exc.code)
    message = str(exc)
    if code == CloseReason.MESSAGE_TOO_BIG:
        return MessageTooBig(message)
    if code == CloseReason.INVALID_FRAME_PAYLOAD_DATA:
        return InvalidPayload(message)
    return ProtocolError(message, code)


def encode_frame(
    head: FrameHead, payload: bytes = b"", *, mask: bool = False, mask_key: bytes | None = None
) -> bytes:
    """The bytes of one frame: ``head``'s opcode, FIN and RSV bits, ``payload``
    masked when ``mask`` (a client's frames) with ``mask_key`` or, by default, a
    fresh random key (RFC 6455 5.3). ``head.masked`` is not read: the sender's
    role decides. Raises ``ValueError`` for a frame no peer may receive (an
    unknown opcode, RSV bits beyond 3 bits, a control frame fragmented or over
    125 bytes).

    >>> encode_frame(FrameHead(Opcode.TEXT), b"hi")
    b'\\x81\\x02hi'
    >>> encode_frame(FrameHead(Opcode.PING), b"", mask=True, mask_key=b"abcd")
    b'\\x89\\x80abcd'
    """
    opcode = int(head.opcode)
    if opcode not in _OPCODES:
        raise ValueError(f"unknown opcode {opcode:#x}")
    rsv = head.rsv
    if not 0 <= rsv <= 7:
        raise ValueError(f"rsv must be 3 bits (0 to 7), got {rsv!r}")
    n = len(payload)
    if opcode >= 8:
        if n > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a control frame carries at most 125 bytes, got {n}")
        if not head.fin:
            raise ValueError("a control frame cannot be fragmented")
    first = (0x80 if head.fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return header + payload
    key = os.urandom(4) if mask_key is None else mask_key
    if len(key) != 4:
        raise ValueError("a mask key is 4 bytes")
    return header + key + XorMaskerSimple(key).process(bytearray(payload))


# Close frames ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Close:
    """What a close frame says: ``code`` (``None`` when the frame had no
    payload: RFC 6455's 1005, "no status received") and ``reason``."""

    code: int | None = 1000
    reason: str = ""


def parse_close(payload: bytes) -> Close:
    """The code and reason of a close frame's payload. Raises
    :class:`ProtocolError` (1002) for a one-byte payload or a code no peer may
    send, :class:`InvalidPayload` (1007) for a reason that is not UTF-8.

    >>> parse_close(b"\\x03\\xe9bye")
    Close(code=1001, reason='bye')
    >>> parse_close(b"")
    Close(code=None, reason='')
    """
    if not payload:
        return Close(None, "")
    if len(payload) == 1:
        raise ProtocolError("close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(f"close frame with the invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("close reason is not UTF-8") from None
    return Close(code, reason)


def close_payload(code: int | None = 1000, reason: str = "") -> bytes:
    """The payload of a close frame with ``code`` and ``reason`` (``code=None``:
    an empty payload, which carries no reason). ``ValueError`` for a code no
    peer may send or a reason over 123 bytes of UTF-8.

    >>> close_payload(1000, "done")
    b'\\x03\\xe8done'
    """
    if code is None:
        if reason:
            raise ValueError("a close frame without a code has no reason")
        return b""
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise ValueError(f"{code} is not a close code a peer may send")
    data = reason.encode("utf-8")
    if len(data) > MAX_CONTROL_PAYLOAD - 2:
        raise ValueError(f"a close reason is at most 123 bytes of UTF-8, got {len(data)}")
    return code.to_bytes(2, "big") + data


def error_close_payload(error: ProtocolError) -> bytes | None:
    """The close payload answering ``error`` (its code and message, the message
    cut to fit), or ``None`` when it has no close code (a handshake error)."""
    if error.code is None:
        return None
    reason = error.message.encode("utf-8")[: MAX_CONTROL_PAYLOAD - 2]
    return error.code.to_bytes(2, "big") + reason.decode("utf-8", "ignore").encode("utf-8")
