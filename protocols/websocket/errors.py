"""The WebSocket codec's exceptions."""

from __future__ import annotations

from typing import Any

__all__ = ["HandshakeError", "InvalidPayload", "MessageTooBig", "ProtocolError"]


class ProtocolError(Exception):
    """Bytes that break RFC 6455 framing, or exceed a configured limit.

    ``code`` is the close code the receiver sends to the peer before it closes
    the connection (RFC 6455 7.4.1): 1002 protocol error here, 1007 for
    :class:`InvalidPayload`, 1009 for :class:`MessageTooBig`; ``None`` when no
    close frame fits (a broken handshake: the peer does not speak frames yet).
    The decoder cannot be used after a ``ProtocolError``.
    """

    default_code: int | None = 1002

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code
        #: Set by the decoder: the frames complete before the fault in the same
        #: ``feed`` call, as ``(head, payload)`` pairs (valid, to be handled
        #: before the error).
        self.frames: list[Any] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code})"


class InvalidPayload(ProtocolError):
    """A text message or a close reason that is not UTF-8 (close code 1007)."""

    default_code = 1007


class MessageTooBig(ProtocolError):
    """A frame or a message larger than the decoder's limit (close code 1009)."""

    default_code = 1009


class HandshakeError(ProtocolError):
    """An HTTP/1.1 upgrade request or response that does not open a WebSocket
    (RFC 6455 4.2.1 / 4.1). No close code: the peer is still speaking HTTP.
    ``status`` is the HTTP status a server answers a bad request with (400, or
    426 with ``Sec-WebSocket-Version: 13`` for an unsupported version)."""

    default_code = None

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
