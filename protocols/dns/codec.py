"""Parsing, TCP framing, and the answers a DNS server builds itself."""

from __future__ import annotations

from dnslib import QTYPE, RCODE, DNSHeader, DNSRecord  # type: ignore[import-untyped]

from .errors import FORMERR, ProtocolError

__all__ = [
    "DEFAULT_UDP_SIZE",
    "MAX_MESSAGE",
    "TcpFramer",
    "answer_ttl",
    "client_udp_size",
    "error_reply",
    "frame",
    "parse",
    "truncate",
]

#: The UDP payload a client without EDNS0 accepts (RFC 1035 4.2.1).
DEFAULT_UDP_SIZE = 512
#: The largest DNS message (the TCP length prefix is 16 bits).
MAX_MESSAGE = 65535
_HEADER = 12
_OPT = QTYPE.OPT  # 41, the EDNS0 pseudo-record


def parse(data: bytes) -> DNSRecord:
    """One DNS message from its wire form. Anything that is not one raises
    :class:`ProtocolError` (with the FORMERR answer to send, when one can be
    addressed), never another exception."""
    if len(data) < _HEADER:
        raise ProtocolError(f"a DNS message needs a 12-byte header, got {len(data)} bytes")
    try:
        return DNSRecord.parse(data)
    except Exception as exc:  # dnslib raises DNSError, but also struct/Index/Unicode errors
        raise ProtocolError(
            f"malformed DNS message: {type(exc).__name__}: {exc}",
            answer=_error_from_bytes(data, FORMERR),
        ) from None


def _error_from_bytes(data: bytes, rcode: int) -> bytes | None:
    """An answer with ``rcode`` to a message that did not parse: its ID and opcode,
    no question. ``None`` for a message too short to have an ID or itself an answer
    (answering an answer invites loops)."""
    if len(data) < 3 or data[2] & 0x80:
        return None
    header = DNSHeader(
        id=int.from_bytes(data[:2], "big"),
        qr=1,
        opcode=(data[2] >> 3) & 0xF,
        rd=data[2] & 1,
        ra=1,
        rcode=rcode,
    )
    return bytes(DNSRecord(header).pack())


def error_reply(query: DNSRecord, rcode: int) -> DNSRecord:
    """An answer to ``query`` with ``rcode`` (e.g. ``RCODE.SERVFAIL``) and no records:
    the query's ID, opcode, RD flag and question(s)."""
    h = query.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=1, rcode=rcode)
    return DNSRecord(header, questions=list(query.questions))


def client_udp_size(query: DNSRecord) -> int:
    """The largest UDP answer ``query``'s sender accepts: its EDNS0 payload size
    (RFC 6891 6.2.3; never below 512), or 512 without EDNS0."""
    for rr in query.ar:
        if rr.rtype == _OPT:
            return max(DEFAULT_UDP_SIZE, min(int(rr.rclass), MAX_MESSAGE))
    return DEFAULT_UDP_SIZE


def truncate(reply: DNSRecord, limit: int, size: int | None = None) -> DNSRecord:
    """``reply`` itself if its wire form fits in ``limit`` bytes; otherwise a copy
    with TC set, the question and the EDNS0 record, and no other record, so the
    client asks again over TCP (RFC 7766 5).

    ``size`` is the reply's size when known (the length it arrived with): well
    under the limit, the reply is not packed just to measure it. (Near the limit
    it is, since dnslib may compress names differently from the server.)"""
    if size is None or size > limit * 3 // 4:
        size = len(reply.pack())
    if size <= limit:
        return reply
    header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, q=len(reply.questions))
    header.tc = 1
    cut = DNSRecord(header, questions=list(reply.questions))
    for rr in reply.ar:
        if rr.rtype == _OPT:
            cut.add_ar(rr)
    return cut


def answer_ttl(reply: DNSRecord) -> int | None:
    """How long ``reply`` may be cached, in seconds, or ``None`` when it must not be.

    A positive answer lives as long as its shortest record. A negative one
    (NXDOMAIN, or NOERROR with no answer: NODATA) lives min(SOA TTL, SOA MINIMUM)
    from the SOA in its authority section, and without one is not cached
    (RFC 2308 3, 5). Other RCODEs (SERVFAIL, REFUSED...) and truncated answers are
    never cached."""
    header = reply.header
    if header.tc:
        return None
    rcode = header.rcode
    if rcode == RCODE.NOERROR and reply.rr:
        return min(int(rr.ttl) for rr in reply.rr)
    if rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
        for rr in reply.auth:
            if rr.rtype == QTYPE.SOA:
                return min(int(rr.ttl), int(rr.rdata.times[4]))
    return None


def frame(message: bytes) -> bytes:
    """``message`` with its TCP length prefix."""
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"a DNS message is at most {MAX_MESSAGE} bytes, got {len(message)}")
    return len(message).to_bytes(2, "big") + message


class TcpFramer:
    """Cuts a DNS-over-TCP byte stream into messages (each after a 2-byte length).

    :meth:`feed` takes bytes as they arrive and returns the messages completed by
    them, whole, in order: a message may span any number of segments, and a
    segment may hold several messages. A zero length raises
    :class:`ProtocolError` (the stream cannot be resynchronised after it)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        start = 0
        end = len(buffer)
        while end - start >= 2:
            size = (buffer[start] << 8) | buffer[start + 1]
            if size == 0:
                raise ProtocolError("a DNS-over-TCP message of length 0")
            if end - start - 2 < size:
                break
            messages.append(bytes(buffer[start + 2 : start + 2 + size]))
            start += 2 + size
        if start:
            del buffer[:start]
        return messages

    @property
    def pending(self) -> int:
        """Bytes held, waiting for the rest of a message."""
        return len(self._buffer)
