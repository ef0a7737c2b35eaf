"""DNS messages read and written in their wire form, without dnslib.

A proxy answering from its cache reads little of a query (its ID, flags,
question and EDNS0 payload size) and changes little of a cached answer (the ID,
the RD flag, the question's letter case, the TTLs). Parsing and packing both
with dnslib costs most of a cache hit, so the common case is done here on the
bytes:

* :func:`read_query` reads a plain query (one question, no records but an
  optional EDNS0 OPT record) as a :class:`QuerySummary`, and validates it so
  strictly that dnslib parses whatever it accepts; anything else (compression in
  the question, other records, an answer, another opcode) is ``None``, for the
  full parser.
* :class:`WireMessage` is a :class:`dnslib.DNSRecord` kept as bytes until
  something reads it: its ``header``, ``questions``, ``rr``, ``auth`` and ``ar``
  parse it (once) on first use, and ``pack()`` of a message nobody parsed returns
  its bytes as they are. Filters that look at messages see a ``DNSRecord`` as
  before; the cost is paid only by those that look.
* :func:`answer_template` finds where a cached answer's question and TTLs are,
  and :meth:`AnswerTemplate.answer` writes a copy for a new query: its ID, its RD
  flag, its question as the client wrote it (resolvers randomising the case of
  names check it), the TTLs lowered by the time spent in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dnslib import DNSRecord  # type: ignore[import-untyped]

__all__ = ["AnswerTemplate", "QuerySummary", "WireMessage", "answer_template", "read_query"]

_HEADER = 12
_OPT = 41
_DEFAULT_UDP_SIZE = 512
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class QuerySummary:
    """What a cache needs of a plain query (see :func:`read_query`)."""

    ident: int
    rd: bool
    #: ``(name, qtype, qclass)``, the name in wire form with ASCII letters lowered:
    #: the same for every spelling of one question.
    key: tuple[bytes, int, int]
    #: The question section as the client wrote it.
    question: bytes
    #: The largest UDP answer the client accepts (its EDNS0 size, at least 512).
    udp_size: int


def read_query(wire: bytes) -> QuerySummary | None:
    """A plain query's summary, or ``None`` if ``wire`` is anything else (which
    the full parser then reads, or rejects)."""
    size = len(wire)
    if size < _HEADER + 5:
        return None
    flags = wire[2]
    # QR=0, opcode QUERY, one question, no answer or authority records.
    if flags & 0xF8 or wire[4:10] != b"\x00\x01\x00\x00\x00\x00" or wire[10]:
        return None
    additional = wire[11]
    if additional > 1:
        return None
    i = _HEADER
    while True:
        length = wire[i]
        if length == 0:
            i += 1
            break
        if length > 63:  # a compression pointer (or a reserved label type)
            return None
        i += 1 + length
        if i - _HEADER > _MAX_NAME - 1 or i >= size:
            return None
    name_end = i
    if not wire[_HEADER:name_end].isascii() and not _utf8_labels(wire, name_end):
        return None  # (dnslib refuses such a label: FORMERR, from the full parser)
    i += 4
    if i > size:
        return None
    udp_size = _DEFAULT_UDP_SIZE
    if additional:
        # The one record must be an OPT: root name, TYPE 41, CLASS = payload size.
        if i + 11 > size or wire[i] != 0 or wire[i + 1 : i + 3] != b"\x00\x29":
            return None
        udp_size = max(_DEFAULT_UDP_SIZE, (wire[i + 3] << 8) | wire[i + 4])
        rdlength = (wire[i + 9] << 8) | wire[i + 10]
        i += 11
        end = i + rdlength
        if end != size:
            return None
        while i < end:  # its options: code, length, data
            if i + 4 > end:
                return None
            i += 4 + ((wire[i + 2] << 8) | wire[i + 3])
        if i != end:
            return None
    elif i != size:
        return None
    qtype = (wire[name_end] << 8) | wire[name_end + 1]
    qclass = (wire[name_end + 2] << 8) | wire[name_end + 3]
    return QuerySummary(
        ident=(wire[0] << 8) | wire[1],
        rd=bool(flags & 1),
        key=(wire[_HEADER:name_end].lower(), qtype, qclass),
        question=wire[_HEADER : name_end + 4],
        udp_size=udp_size,
    )


def _utf8_labels(wire: bytes, end: int) -> bool:
    """Whether every label of the name at 12..``end`` is UTF-8, as dnslib requires."""
    i = _HEADER
    while i < end - 1:
        length = wire[i]
        try:
            wire[i + 1 : i + 1 + length].decode()
        except UnicodeDecodeError:
            return False
        i += 1 + length
    return True


def question_key(record: DNSRecord) -> tuple[bytes, int, int]:
    """The :attr:`QuerySummary.key` of a parsed message's first question."""
    q = record.q
    name = b"".join(bytes((len(label),)) + label for label in q.qname.label) + b"\x00"
    return (name.lower(), int(q.qtype), int(q.qclass))


def _lazy(name: str) -> tuple[Any, Any]:
    """A getter and a setter of :class:`WireMessage` field ``name`` (parsing it)."""

    def get(self: WireMessage) -> Any:
        return getattr(self._parse(), name)

    def set_(self: WireMessage, value: Any) -> None:
        setattr(self._parse(), name, value)

    return get, set_


class WireMessage(DNSRecord):  # type: ignore[misc]
    """A :class:`dnslib.DNSRecord` held as its wire form until a field is read.

    ``summary`` is the :class:`QuerySummary` when the bytes are a plain query
    (``None`` otherwise, or for an answer). :attr:`parsed` says whether anything
    read (and so may have changed) the message: until then ``pack()`` is the
    bytes it was made from."""

    def __init__(self, wire: bytes, summary: QuerySummary | None = None) -> None:
        # (DNSRecord.__init__ is not called: its fields come from the parse.)
        self.wire = wire
        self.summary = summary
        self._record: DNSRecord | None = None

    @property
    def parsed(self) -> bool:
        return self._record is not None

    def _parse(self) -> DNSRecord:
        record = self._record
        if record is None:
            # The bytes were checked (a summary) or came from a server whose
            # answer parsed before: dnslib reads them.
            record = self._record = DNSRecord.parse(self.wire)
        return record

    def pack(self) -> Any:
        if self._record is None:
            return self.wire
        return DNSRecord.pack(self)

    header = property(*_lazy("header"))
    questions = property(*_lazy("questions"))
    rr = property(*_lazy("rr"))
    auth = property(*_lazy("auth"))
    ar = property(*_lazy("ar"))


@dataclass(frozen=True, slots=True)
class AnswerTemplate:
    """A cached answer's bytes and where its question and TTLs are."""

    wire: bytes
    question_end: int
    ttl_offsets: tuple[int, ...]
    ttls: tuple[int, ...]

    def answer(self, query: QuerySummary, elapsed: int) -> bytes:
        """This answer for ``query``: its ID, RD flag and question, the TTLs
        lowered by ``elapsed`` seconds (never below 0)."""
        out = bytearray(self.wire)
        out[0] = query.ident >> 8
        out[1] = query.ident & 0xFF
        out[2] = (out[2] & 0xFE) | query.rd
        out[_HEADER : self.question_end] = query.question
        if elapsed > 0:
            for offset, ttl in zip(self.ttl_offsets, self.ttls, strict=True):
                out[offset : offset + 4] = max(0, ttl - elapsed).to_bytes(4, "big")
        return bytes(out)


def _skip_name(wire: bytes, i: int) -> int:
    """The offset after the (possibly compressed) name at ``i``."""
    while True:
        length = wire[i]
        if length == 0:
            return i + 1
        if length & 0xC0 == 0xC0:
            return i + 2
        if length > 63:
            raise ValueError("reserved label type")
        i += 1 + length


def answer_template(wire: bytes) -> AnswerTemplate | None:
    """The template of an answer to one question, or ``None`` if ``wire`` is not
    one that can be walked (it is then served by the slower path)."""
    try:
        if len(wire) < _HEADER or wire[4:6] != b"\x00\x01":
            return None
        records = sum((wire[k] << 8) | wire[k + 1] for k in (6, 8, 10))
        i = _skip_name(wire, _HEADER) + 4
        question_end = i
        offsets: list[int] = []
        ttls: list[int] = []
        for _ in range(records):
            i = _skip_name(wire, i)
            rtype = (wire[i] << 8) | wire[i + 1]
            if rtype != _OPT:  # an OPT's "TTL" holds EDNS flags, not a time
                offsets.append(i + 4)
                ttls.append(int.from_bytes(wire[i + 4 : i + 8], "big"))
            i += 10 + ((wire[i + 8] << 8) | wire[i + 9])
        if i != len(wire):
            return None
    except (IndexError, ValueError):
        return None
    return AnswerTemplate(wire, question_end, tuple(offsets), tuple(ttls))
