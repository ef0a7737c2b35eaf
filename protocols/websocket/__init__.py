"""A sans-IO WebSocket (RFC 6455) frame codec, over wsproto's frame layer: bytes
in, frames out, and back, each frame kept as it was sent.

::

    from protocols.websocket import Decoder, FrameHead, Opcode, encode_frame

    # What a client sends: a text message in two frames, then a ping (masked).
    wire = encode_frame(FrameHead(Opcode.TEXT, fin=False), b"hel", mask=True)
    wire += encode_frame(FrameHead(Opcode.PING), b"?", mask=True)
    wire += encode_frame(FrameHead(Opcode.CONTINUATION), b"lo", mask=True)
    frames = Decoder(role="server").feed(wire)
    assert [(h.opcode, h.fin, p) for h, p in frames] == [
        (Opcode.TEXT, False, b"hel"), (Opcode.PING, True, b"?"),
        (Opcode.CONTINUATION, True, b"lo")]

Frames and close payloads are in :mod:`~protocols.websocket.frames` (which says
why wsproto's frame decoder, not its connection API), the HTTP/1.1 opening
handshake's helpers in :mod:`~protocols.websocket.handshake`, the exceptions in
:mod:`~protocols.websocket.errors`.
"""

from .errors import HandshakeError, InvalidPayload, MessageTooBig, ProtocolError
from .frames import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_CONTROL_PAYLOAD,
    Close,
    CloseReason,
    Decoder,
    FrameHead,
    Opcode,
    close_payload,
    encode_frame,
    error_close_payload,
    parse_close,
)
from .handshake import accept_key, check_request, check_response, is_upgrade, new_key

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_CONTROL_PAYLOAD",
    "Close",
    "CloseReason",
    "Decoder",
    "FrameHead",
    "HandshakeError",
    "InvalidPayload",
    "MessageTooBig",
    "Opcode",
    "ProtocolError",
    "accept_key",
    "check_request",
    "check_response",
    "close_payload",
    "encode_frame",
    "error_close_payload",
    "is_upgrade",
    "new_key",
    "parse_close",
]
