"""The HTTP codec's exception."""

from __future__ import annotations

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """Bytes that are not valid HTTP/1.1 (or exceed a configured limit).

    ``status`` is the answer a server should give before it closes the connection:
    400 for malformed input, 413 body too large, 414 request line too long, 431
    header block too large or too many headers, 501 unsupported transfer coding,
    505 unsupported version. A client-side decoder (parsing a response) uses 502:
    the server, not the client, sent bad bytes. The connection cannot be used
    after a ``ProtocolError``.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __repr__(self) -> str:
        return f"ProtocolError({self.message!r}, status={self.status})"
