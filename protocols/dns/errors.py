"""The DNS codec's exception."""

from __future__ import annotations

__all__ = ["ProtocolError"]

#: RCODE 1, Format Error: the server could not interpret the query.
FORMERR = 1


class ProtocolError(Exception):
    """Bytes that are not a valid DNS message (or exceed a limit).

    ``rcode`` is the DNS response code a server answers with (1, FORMERR).
    ``answer`` is that answer, ready to send (the wire form, without TCP framing),
    when enough of the message was readable to address one (its ID, and its
    question when it parsed); ``None`` otherwise (a server then stays silent, as
    RFC 1035 servers do with garbage).
    """

    def __init__(self, message: str, rcode: int = FORMERR, answer: bytes | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rcode = rcode
        self.answer = answer

    def __repr__(self) -> str:
        return f"ProtocolError({self.message!r}, rcode={self.rcode})"
