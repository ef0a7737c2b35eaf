"""Incremental HTTP/1.1 parsers: :class:`RequestParser` (server side) and
:class:`ResponseParser` (client side).

Bytes go in with ``feed(data)``; out comes a list of heads, body chunks (``bytes``)
and :class:`EndOfMessage` markers. ``feed(b"")`` says the peer closed. The parsers are
strict where leniency lets two HTTP implementations disagree about where a message ends
(request smuggling, RFC 9112 11.2): conflicting or malformed ``Content-Length``,
``Content-Length`` together with ``Transfer-Encoding``, transfer codings other than a
single final ``chunked``, obs-fold, whitespace before the colon, bare CR or LF where
CRLF is required, control characters in field values, bad chunk size lines. Identical
duplicate ``Content-Length`` values (``5`` twice, or ``5, 5``) are accepted as one, as
h11 does (RFC 9110 8.6 allows it).

Speed matters here (every proxied request passes through): a head is located with
``bytes.find``, checked for stray CR, LF and control characters with one scan of the
whole block, decoded from ISO-8859-1 once and split with ``str`` methods; a field name
seen before is validated by one dict lookup. Body chunks are slices of the bytes fed in
(the whole input when a feed is body only), never copies made byte by byte.

Errors raise :class:`~protocols.http.ProtocolError` with the status a server answers
(400, 413, 414, 431, 501, 505; always 502 from :class:`ResponseParser`); a parser that
raised stays dead and raises the same error again. Events parsed earlier in the feed
that raised are dropped with it: the connection is unusable either way.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from .errors import ProtocolError
from .head import Headers, RequestHead, ResponseHead

__all__ = [
    "EndOfMessage",
    "RequestEvent",
    "RequestParser",
    "ResponseEvent",
    "ResponseParser",
    "expects_100_continue",
    "persistent",
    "request_flags",
]


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The current message is complete; ``trailers`` are the chunked trailer fields
    (``None`` when there were none)."""

    trailers: Headers | None = None


_END: Final = EndOfMessage()

RequestEvent: TypeAlias = "RequestHead | bytes | EndOfMessage"
ResponseEvent: TypeAlias = "ResponseHead | bytes | EndOfMessage"

# RFC 9110 5.6.2: tchar. Field names and methods must be made of these.
_TCHARS: Final = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEXDIGITS: Final = b"0123456789abcdefABCDEF"
# Control characters allowed nowhere in a head or a chunk line: everything below 0x20
# but HTAB, and DEL (CR and LF are only allowed as the CRLF pairs that end lines). The
# fast check is str.isprintable() per value (C speed, false for every control
# character); these searches run only when it fails (HTAB, obs-text) or on chunk lines.
_CTL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CTL_TEXT: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
# Fields whose values decide framing, persistence or routing; every other field is
# stored as received without a second look.
_SPECIAL: Final = frozenset(
    ["content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"]
)
# Longest chunk-size line (size, extensions, CRLF) and the chunk-extension bytes one
# message may carry in total: extensions are never used by real clients, and unbounded
# ones let a peer make the server read without making progress (CVE-2024-22019).
_MAX_CHUNK_LINE: Final = 4096
_MAX_CHUNK_EXT_TOTAL: Final = 16384
# 18 decimal digits stay below 2**63, so a length always fits an int64 downstream.
_MAX_LENGTH_DIGITS: Final = 18
_MAX_CHUNK_SIZE_DIGITS: Final = 16

# Valid field names seen so far, mapped to their lower-case form when the name is one
# of _SPECIAL, to "" otherwise; and valid methods. Names repeat (Host, User-Agent,
# Accept...), so validating one becomes a dict lookup. The caches are bounded: a peer
# inventing names only costs the slow path.
_NAMES: dict[str, str] = {}
_NAMES_MAX: Final = 2048
_METHODS: set[str] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT"}
_METHODS_MAX: Final = 256

# Parser states.
_HEAD: Final = 0  # waiting for a start line and header block
_LENGTH: Final = 1  # Content-Length body, self._remaining bytes left
_CHUNK_SIZE: Final = 2  # waiting for a chunk size line
_CHUNK_DATA: Final = 3  # inside a chunk, self._remaining bytes left
_CHUNK_CRLF: Final = 4  # the CRLF after chunk data (self._crlf is what is left of it)
_TRAILERS: Final = 5  # the trailer section after the last chunk
_UNTIL_EOF: Final = 6  # response body delimited by the connection closing
_PAUSED: Final = 7  # upgrade or tunnel: bytes are held, not parsed
_CLOSING: Final = 8  # a non-persistent message ended: nothing more is parsed
_CLOSED: Final = 9  # EOF was fed
_DEAD: Final = 10  # a ProtocolError was raised


def _is_token(text: str) -> bool:
    return bool(text) and not text.strip(_TCHARS)


def _field_name_error(name: str, colon: str) -> ProtocolError:
    if name[:1] in (" ", "\t"):
        return ProtocolError("obsolete line folding (obs-fold) in the header block")
    if not colon:
        return ProtocolError(f"header line without a colon: {name[:40]!r}")
    if not name:
        return ProtocolError("empty header field name")
    if name[-1] in " \t":
        return ProtocolError(f"whitespace between field name and colon: {name[:40]!r}")
    return ProtocolError(f"invalid character in field name: {name[:40]!r}")


def _lower_name(name: str, colon: str) -> str:
    """``name`` lower-cased if it is one of ``_SPECIAL``, else ``""``, after checking
    it is a token (the slow path of the cache)."""
    if not colon or not _is_token(name):
        raise _field_name_error(name, colon)
    lname = name.lower()
    if lname not in _SPECIAL:
        lname = ""
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = lname
    return lname


def _find_block_end(buf: bytes, pos: int) -> int:
    """The index just past the blank line ending the header block starting at
    ``pos``, or -1. A blank line is also looked for the way h11 and lenient parsers
    see one (``LF LF``, ``LF CR LF``) so that a block using bare LFs is refused as soon
    as it is complete, rather than waited on until the size limit."""
    end = buf.find(b"\n\r\n", pos)
    lf_lf = buf.find(b"\n\n", pos, None if end < 0 else end + 1)
    if lf_lf >= 0:
        return lf_lf + 2
    return end if end < 0 else end + 3


def _split_block(buf: bytes, start: int, end: int) -> list[str]:
    """The lines of the block ``buf[start:end]`` (which ends with its blank line), as
    ``str``, without the blank line. CR and LF left inside a line (not part of a CRLF
    pair) are refused by the callers' checks of each part of the line."""
    lines = buf[start:end].decode("latin-1").split("\r\n")
    if lines[-1] or lines[-2]:
        raise ProtocolError("bare CR or LF in the header block (CRLF required)")
    del lines[-2:]
    return lines


def _check_text(text: str, what: str) -> None:
    """The slow path for a value that is not ``str.isprintable()``: HTAB and obs-text
    (0x80-0xFF) are allowed, other control characters, CR and LF are not."""
    if _CTL_TEXT.search(text) is not None:
        if "\r" in text or "\n" in text:
            raise ProtocolError(f"bare CR or LF in {what} (CRLF required)")
        raise ProtocolError(f"control character in {what}: {text[:40]!r}")


def _parse_fields(
    lines: list[str], first: int, max_headers: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(fields, special)``: every field of ``lines[first:]`` as received (value
    without surrounding whitespace), and the ones named in ``_SPECIAL`` as
    ``(lower-case name, value)``."""
    if len(lines) - first > max_headers:
        raise ProtocolError(f"more than {max_headers} header fields", 431)
    fields: list[tuple[str, str]] = []
    special: list[tuple[str, str]] = []
    names = _NAMES
    for i in range(first, len(lines)):
        name, colon, value = lines[i].partition(":")
        lname = names.get(name)
        if lname is None or not colon:
            lname = _lower_name(name, colon)
        value = value.strip(" \t")
        if not value.isprintable():
            _check_text(value, "a field value")
        fields.append((name, value))
        if lname:
            special.append((lname, value))
    return fields, special


def _content_length(value: str, current: int | None) -> int:
    """The length a ``Content-Length`` value gives; ``current`` is the length an
    earlier ``Content-Length`` field gave (equal duplicates fold into one)."""
    length: int | None = current
    for part in value.split(","):
        part = part.strip(" \t")
        if not (part.isdigit() and part.isascii()):
            raise ProtocolError(f"invalid Content-Length: {value[:40]!r}")
        if len(part) > _MAX_LENGTH_DIGITS:
            raise ProtocolError(f"Content-Length too large: {value[:40]!r}")
        n = int(part)
        if length is not None and n != length:
            raise ProtocolError("conflicting Content-Length values")
        length = n
    assert length is not None
    return length


def _transfer_codings(values: list[str]) -> None:
    """Check the ``Transfer-Encoding`` values of a message: the only supported coding
    is one ``chunked``, last (RFC 9112 6.1, 6.3)."""
    codings = [c.strip(" \t").lower() for v in values for c in v.split(",")]
    if "" in codings:
        raise ProtocolError("empty transfer coding in Transfer-Encoding")
    if codings.count("chunked") > 1:
        raise ProtocolError("chunked applied more than once")
    if "chunked" in codings and codings[-1] != "chunked":
        raise ProtocolError("chunked is not the final transfer coding")
    if codings != ["chunked"]:
        unknown = ", ".join(c for c in codings if c != "chunked")
        raise ProtocolError(f"unsupported transfer coding: {unknown[:60]!r}", 501)


def _connection_tokens(values: list[str]) -> set[str]:
    return {t.strip(" \t").lower() for v in values for t in v.split(",")}


def _persistent(version: str, connection: list[str]) -> bool:
    if not connection:
        return version == "1.1"
    tokens = _connection_tokens(connection)
    return "close" not in tokens and (version == "1.1" or "keep-alive" in tokens)


def _connection_and_expect(headers: Headers) -> tuple[list[str], list[str]]:
    """The ``Connection`` and the ``Expect`` values of ``headers``, in one pass; a
    name is compared by its length first, so most fields cost no ``lower()``."""
    connection: list[str] = []
    expect: list[str] = []
    for name, value in headers.items():
        n = len(name)
        if n == 10 and name.lower() == "connection":
            connection.append(value)
        elif n == 6 and name.lower() == "expect":
            expect.append(value)
    return connection, expect


def persistent(head: RequestHead | ResponseHead) -> bool:
    """Whether the connection may carry another message after the one ``head``
    starts (RFC 9112 9.3): HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with
    ``Connection: keep-alive``. The parsers' ``keep_alive`` attribute says the same of
    the latest head they parsed; this answers it for any head (several pipelined
    requests can arrive in one feed). A response whose body runs until the
    connection closes ends the connection whatever its head says."""
    return _persistent(head.version, _connection_and_expect(head.headers)[0])


def expects_100_continue(head: RequestHead) -> bool:
    """Whether the request ``head`` asks for ``100 Continue`` before its body (an
    HTTP/1.0 request's expectation is ignored, RFC 9110 10.1.1)."""
    return request_flags(head)[1]


def request_flags(head: RequestHead) -> tuple[bool, bool]:
    """``(persistent(head), expects_100_continue(head))`` in one pass over the
    fields: what a server needs of every request it reads, as the parser decides it."""
    connection, expect = _connection_and_expect(head.headers)
    version = head.version
    return _persistent(version, connection), bool(expect) and version == "1.1" and (
        "100-continue" in _connection_tokens(expect)
    )


class _Parser:
    """What requests and responses share: buffering, body framing, chunked coding,
    trailers, limits, EOF and errors."""

    _ERROR_STATUS: int | None = None  # a fixed status for every error (502 for responses)

    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
        max_body: int | None = None,
    ) -> None:
        self._max_line = max_line
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body = max_body
        # Bytes received but not parsed yet: an incomplete head, chunk size line or
        # trailer section, or (paused) the bytes after an upgrade.
        self._pending = bytearray()
        # Where the search for the end of the incomplete element in _pending resumes
        # (so a head arriving a byte at a time is scanned once, not once per byte),
        # and whether its first line is known to be complete.
        self._scan = 0
        self._line_done = False
        self._state = _HEAD
        self._remaining = 0  # bytes left in a Content-Length body or the current chunk
        self._body_seen = 0  # body bytes of the current message (for max_body)
        self._crlf = b"\r\n"  # what is still expected after the current chunk's data
        self._ext_total = 0  # chunk-extension bytes of the current message
        self._error: ProtocolError | None = None
        self._message_keep_alive = True
        self._message_upgrade = False
        self.keep_alive = True
        self.upgraded = False
        self.expects_continue = False

    # The subclasses' head parser: the block is buf[pos:end]; appends to ``out``.
    def _parse_head(self, buf: bytes, pos: int, end: int, out: list[Any]) -> None:
        raise NotImplementedError

    def _incomplete_head(self, buf: bytes, pos: int) -> None:
        """Refuse a head that already exceeds a limit although it is not complete."""
        size = len(buf) - pos
        if size > self._max_line and buf.find(b"\n", pos, pos + self._max_line + 1) < 0:
            raise ProtocolError(f"start line longer than {self._max_line} bytes", 414)
        if size > self._max_header_bytes:
            raise ProtocolError(f"header block larger than {self._max_header_bytes} bytes", 431)

    def _check_head_size(self, buf: bytes, pos: int, end: int) -> None:
        line_end = buf.find(b"\n", pos, end)
        if line_end - pos > self._max_line:
            raise ProtocolError(f"start line longer than {self._max_line} bytes", 414)
        if end - pos > self._max_header_bytes:
            raise ProtocolError(f"header block larger than {self._max_header_bytes} bytes", 431)

    def _fail(self, error: ProtocolError) -> ProtocolError:
        if self._ERROR_STATUS is not None:
            error = ProtocolError(error.message, self._ERROR_STATUS)
        self._error = error
        self._state = _DEAD
        self._pending = bytearray()
        return error

    def _feed(self, data: bytes) -> list[Any]:
        if self._error is not None:
            raise ProtocolError(self._error.message, self._error.status)
        if type(data) is not bytes:
            data = bytes(data)
        state = self._state
        if state >= _PAUSED:
            if state == _PAUSED:
                self._pending += data
            elif not data:
                self._state = _CLOSED
            return []
        if not data:
            try:
                return self._eof()
            except ProtocolError as exc:
                raise self._fail(exc) from None
        pending = self._pending
        if pending:
            pending += data
            if self._still_incomplete(pending):
                return []
            buf = bytes(pending)
            self._pending = bytearray()
        else:
            buf = data
        out: list[Any] = []
        try:
            pos = self._run(buf, 0, out)
        except ProtocolError as exc:
            raise self._fail(exc) from None
        if pos < len(buf):
            self._pending = bytearray(memoryview(buf)[pos:])
            self._scan = 0
            self._line_done = False
        return out

    def _still_incomplete(self, pending: bytearray) -> bool:
        """Whether the element ``pending`` begins with (a head, trailer section or chunk
        size line) is still incomplete after new bytes were added, looking only at
        what was not searched before. ``False`` also when a limit is exceeded: the
        full parse then raises exactly the error it would raise on the same bytes
        fed at once."""
        state = self._state
        start = self._scan
        if state == _HEAD or state == _TRAILERS:
            if pending[0] == 13:  # a CR first: a blank line or an error, decided by _run
                return False
            if pending.find(b"\n\r\n", start) >= 0 or pending.find(b"\n\n", start) >= 0:
                return False
            if state == _HEAD and not self._line_done:
                lf = pending.find(b"\n", start)
                if lf > self._max_line or (lf < 0 and len(pending) > self._max_line):
                    return False
                self._line_done = lf >= 0
            if len(pending) > self._max_header_bytes:
                return False
            # The end pattern is 3 bytes long: it may begin in the last 2 searched.
            self._scan = max(0, len(pending) - 2)
            return True
        if state == _CHUNK_SIZE:
            if pending.find(b"\n", start) >= 0 or len(pending) >= _MAX_CHUNK_LINE:
                return False
            self._scan = len(pending)
            return True
        return False

    def _eof(self) -> list[Any]:
        state = self._state
        pending = len(self._pending)
        if state == _UNTIL_EOF:
            self._state = _CLOSED
            return [EndOfMessage()]
        if state == _HEAD and pending == 0:
            self._state = _CLOSED
            return []
        if state == _HEAD:
            raise ProtocolError("connection closed in the middle of a message head")
        raise ProtocolError("connection closed in the middle of a message body")

    def _run(self, buf: bytes, pos: int, out: list[Any]) -> int:
        """Parse ``buf`` from ``pos`` as far as it goes; returns where it stopped."""
        size = len(buf)
        while pos < size:
            state = self._state
            if state == _HEAD:
                # RFC 9112 2.2: a server SHOULD ignore empty lines before a request
                # line (some clients send CRLF after a POST body).
                while buf.startswith(b"\r\n", pos):
                    pos += 2
                if pos >= size:
                    break
                first = buf[pos]
                if first == 10 or (first == 13 and pos + 1 < size):
                    raise ProtocolError("bare CR or LF before the start line")
                if first == 13:
                    break  # perhaps the first half of a CRLF
                end = _find_block_end(buf, pos)
                if end < 0:
                    self._incomplete_head(buf, pos)
                    break
                self._check_head_size(buf, pos, end)
                self._parse_head(buf, pos, end, out)
                pos = end
            elif state == _LENGTH:
                remaining = self._remaining
                available = size - pos
                if available <= remaining:
                    out.append(buf if pos == 0 else buf[pos:])
                    self._remaining = remaining - available
                    pos = size
                    self.expects_continue = False
                    if available == remaining:
                        self._end_message(out, None)
                else:
                    out.append(buf[pos : pos + remaining])
                    pos += remaining
                    self._remaining = 0
                    self._end_message(out, None)
            elif state == _CHUNK_DATA:
                remaining = self._remaining
                available = size - pos
                if available < remaining:
                    out.append(buf if pos == 0 else buf[pos:])
                    self._remaining = remaining - available
                    pos = size
                else:
                    out.append(buf[pos : pos + remaining])
                    pos += remaining
                    self._remaining = 0
                    self._crlf = b"\r\n"
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                expected = self._crlf
                got = buf[pos : pos + len(expected)]
                if not expected.startswith(got):
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += len(got)
                if got == expected:
                    self._state = _CHUNK_SIZE
                else:
                    self._crlf = expected[len(got) :]
            elif state == _CHUNK_SIZE:
                lf = buf.find(b"\n", pos, pos + _MAX_CHUNK_LINE)
                if lf < 0:
                    if size - pos >= _MAX_CHUNK_LINE:
                        raise ProtocolError("chunk size line too long")
                    break
                self._chunk_size_line(buf, pos, lf)
                pos = lf + 1
            elif state == _TRAILERS:
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                    self._end_message(out, None)
                    continue
                first = buf[pos]
                if first == 10 or (first == 13 and pos + 1 < size):
                    raise ProtocolError("bare CR or LF in the trailer section")
                if first == 13:
                    break  # perhaps the first half of the final CRLF
                end = _find_block_end(buf, pos)
                if end < 0:
                    if size - pos > self._max_header_bytes:
                        raise ProtocolError("trailer section too large", 431)
                    break
                if end - pos > self._max_header_bytes:
                    raise ProtocolError("trailer section too large", 431)
                lines = _split_block(buf, pos, end)
                fields, special = _parse_fields(lines, 0, self._max_headers)
                for lname, _ in special:
                    if lname in ("content-length", "transfer-encoding", "host"):
                        raise ProtocolError(f"{lname} is not allowed in trailers")
                pos = end
                self._end_message(out, Headers.from_list(fields))
            elif state == _UNTIL_EOF:
                out.append(buf if pos == 0 else buf[pos:])
                pos = size
            else:  # _PAUSED or _CLOSING: what follows is not ours to parse
                break
        if self._state == _CLOSING:
            # RFC 9112 9.6: nothing after a "close" message is processed.
            return size
        return pos

    def _chunk_size_line(self, buf: bytes, pos: int, lf: int) -> None:
        line = buf[pos:lf]
        if not line.endswith(b"\r") or b"\r" in line[:-1]:
            raise ProtocolError("chunk size line not ended by CRLF")
        size_part, semicolon, ext = line[:-1].partition(b";")
        if semicolon:
            if _CTL.search(ext) is not None:
                raise ProtocolError("control character in a chunk extension")
            self._ext_total += len(ext) + 1
            if self._ext_total > _MAX_CHUNK_EXT_TOTAL:
                raise ProtocolError("too many chunk extension bytes")
        # RFC 9112 7.1.1 allows whitespace (BWS) before the extensions; h11 also
        # accepts it at the end of the line.
        size_part = size_part.rstrip(b" \t")
        if not size_part or size_part.strip(_HEXDIGITS):
            raise ProtocolError(f"invalid chunk size: {size_part[:20]!r}")
        if len(size_part) > _MAX_CHUNK_SIZE_DIGITS:
            raise ProtocolError("chunk size too large")
        n = int(size_part, 16)
        if n == 0:
            self._state = _TRAILERS
            return
        self._count_body(n)
        self._remaining = n
        self._state = _CHUNK_DATA
        self.expects_continue = False

    def _count_body(self, n: int) -> None:
        self._body_seen += n
        if self._max_body is not None and self._body_seen > self._max_body:
            raise ProtocolError(f"body larger than {self._max_body} bytes", 413)

    def _start_body(self, framing: int | str | None, out: list[Any]) -> None:
        """Enter the body state that ``framing`` (from the head) calls for."""
        self._body_seen = 0
        self._ext_total = 0
        if framing == "chunked":
            self._state = _CHUNK_SIZE
        elif framing == "eof":
            self._state = _UNTIL_EOF
            self._message_keep_alive = self.keep_alive = False
        elif framing:
            assert isinstance(framing, int)
            self._count_body(framing)
            self._remaining = framing
            self._state = _LENGTH
        else:
            self._end_message(out, None)

    def _end_message(self, out: list[Any], trailers: Headers | None) -> None:
        # Frozen, so one instance serves every message without trailers.
        out.append(_END if trailers is None else EndOfMessage(trailers))
        self.expects_continue = False
        self.keep_alive = self._message_keep_alive
        if self._message_upgrade:
            self.upgraded = True
            self._state = _PAUSED
        elif not self._message_keep_alive:
            self._state = _CLOSING
        else:
            self._state = _HEAD

    def _framing(self, special: list[tuple[str, str]], version: str) -> int | str | None:
        """Content-Length, ``"chunked"`` or ``None`` from the head's framing fields,
        refusing every ambiguous combination."""
        length: int | None = None
        codings: list[str] | None = None
        for lname, value in special:
            if lname == "content-length":
                length = _content_length(value, length)
            elif lname == "transfer-encoding":
                if codings is None:
                    codings = []
                codings.append(value)
        if codings is None:
            return length
        if version == "1.0":
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            # framing (1.0 peers do not know chunked; an intermediary may disagree).
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 message")
        if length is not None:
            raise ProtocolError("both Content-Length and Transfer-Encoding")
        _transfer_codings(codings)
        return "chunked"

    def take_trailing(self) -> bytes:
        """The bytes received after the message that switched protocols (upgrade or
        tunnel accepted): they belong to the new protocol. The parser parses nothing
        more after this."""
        data = bytes(self._pending)
        self._pending = bytearray()
        self._state = _CLOSED
        return data


def _version_error(version: str) -> ProtocolError:
    if (
        len(version) == 8
        and version.startswith("HTTP/")
        and version[5].isdigit()
        and version[6] == "."
        and version[7].isdigit()
        and version.isascii()
    ):
        return ProtocolError(f"unsupported HTTP version: {version!r}", 505)
    return ProtocolError(f"invalid HTTP version: {version[:20]!r}")


_VERSIONS: Final = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}


class RequestParser(_Parser):
    """Server side: bytes from a client in, ``RequestHead``, body ``bytes`` and
    :class:`EndOfMessage` out, request after request.

    After each head, :attr:`keep_alive` says whether another request may follow it
    (RFC 9112 9.3: HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with
    ``Connection: keep-alive``); after a request that ends the connection, further
    bytes are ignored (RFC 9112 9.6). :attr:`expects_continue` is true while the
    current request carries ``Expect: 100-continue`` and none of its body has
    arrived. A ``CONNECT`` request or one carrying ``Upgrade`` sets :attr:`upgraded`
    once complete and pauses the parser: the bytes after it are held, for
    :meth:`take_trailing` (the switch was accepted) or :meth:`resume` (refused).

    >>> p = RequestParser()
    >>> p.feed(b"POST /a HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\n\\r\\nhi")[1:]
    [b'hi', EndOfMessage(trailers=None)]
    """

    def feed(self, data: bytes) -> list[RequestHead | bytes | EndOfMessage]:
        """Parse what has arrived; ``data == b""`` means the peer closed (EOF).

        Raises :class:`ProtocolError` on bad input, with the status to answer; EOF in
        the middle of a request is an error (400), EOF between requests returns ``[]``.
        """
        return self._feed(data)

    def resume(self) -> list[RequestHead | bytes | EndOfMessage]:
        """The upgrade was refused: parse the held bytes as HTTP again."""
        if self._state != _PAUSED:
            return []
        self.upgraded = False
        self._message_upgrade = False
        self._state = _HEAD if self._message_keep_alive else _CLOSING
        held = bytes(self._pending)
        self._pending = bytearray()
        if not held or self._state == _CLOSING:
            return []
        return self._feed(held)

    def _parse_head(self, buf: bytes, pos: int, end: int, out: list[Any]) -> None:
        lines = _split_block(buf, pos, end)
        line = lines[0]
        try:
            method, target, version_text = line.split(" ")
        except ValueError:
            raise ProtocolError(f"malformed request line: {line[:80]!r}") from None
        if method not in _METHODS:
            if not _is_token(method):
                raise ProtocolError(f"invalid method: {method[:20]!r}")
            if len(_METHODS) < _METHODS_MAX:
                _METHODS.add(method)
        if not target or not (target.isascii() and target.isprintable()):
            raise ProtocolError(f"invalid request target: {target[:80]!r}")
        version = _VERSIONS.get(version_text)
        if version is None:
            raise _version_error(version_text)
        fields, special = _parse_fields(lines, 1, self._max_headers)
        hosts = 0
        connection: list[str] = []
        expect = False
        upgrade = False
        for lname, value in special:
            if lname == "host":
                hosts += 1
            elif lname == "connection":
                connection.append(value)
            elif lname == "expect":
                expect = True
            elif lname == "upgrade":
                # As h11 reads it: a list with at least one non-empty member.
                upgrade = upgrade or any(t.strip(" \t") for t in value.split(","))
        if hosts > 1:
            raise ProtocolError("more than one Host header")
        if hosts == 0 and version == "1.1":
            raise ProtocolError("HTTP/1.1 request without Host")
        framing = self._framing(special, version)
        keep_alive = _persistent(version, connection)
        self._message_keep_alive = keep_alive
        self.keep_alive = keep_alive
        self._message_upgrade = upgrade or method == "CONNECT"
        self.expects_continue = (
            expect
            and version == "1.1"
            and "100-continue" in _connection_tokens([v for n, v in special if n == "expect"])
        )
        out.append(RequestHead(method, target, Headers.from_list(fields), version))
        self._start_body(framing, out)


class ResponseParser(_Parser):
    """Client side: bytes from a server in, ``ResponseHead``, body ``bytes`` and
    :class:`EndOfMessage` out. Call :meth:`expect` with each request's method as the
    request is written, so the parser knows which responses have bodies.

    Interim (1xx) responses other than 101 come out as a head followed by
    :class:`EndOfMessage` and answer no request. ``101`` and a 2xx answer to
    ``CONNECT`` set :attr:`upgraded` and pause the parser (:meth:`take_trailing`).
    Every error has status 502: the server, not our client, sent bad bytes.
    """

    _ERROR_STATUS = 502

    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
        max_body: int | None = None,
    ) -> None:
        super().__init__(
            max_line=max_line,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            max_body=max_body,
        )
        self._methods: deque[str] = deque()

    def expect(self, method: str) -> None:
        """The method of the request whose response comes next (FIFO, one call per
        request written): HEAD answers have no body; a 2xx to CONNECT is a tunnel."""
        self._methods.append(method)

    def feed(self, data: bytes) -> list[ResponseHead | bytes | EndOfMessage]:
        """Parse what has arrived; ``data == b""`` means the server closed (EOF): it
        ends a body that runs until the connection closes."""
        return self._feed(data)

    def _parse_head(self, buf: bytes, pos: int, end: int, out: list[Any]) -> None:
        lines = _split_block(buf, pos, end)
        line = lines[0]
        version = _VERSIONS.get(line[:8])
        if version is None:
            raise _version_error(line[:8])
        code = line[9:12]
        if line[8:9] != " " or len(code) != 3 or not (code.isdigit() and code.isascii()):
            raise ProtocolError(f"malformed status line: {line[:80]!r}")
        status = int(code)
        if status < 100:
            raise ProtocolError(f"invalid status code: {status}")
        # The reason phrase is optional, and so, in practice, is the space before it.
        if len(line) > 12 and line[12] != " ":
            raise ProtocolError(f"malformed status line: {line[:80]!r}")
        reason = line[13:]
        if not reason.isprintable():
            _check_text(reason, "the reason phrase")
        fields, special = _parse_fields(lines, 1, self._max_headers)
        framing = self._framing(special, version)
        keep_alive = _persistent(version, [v for n, v in special if n == "connection"])
        head = ResponseHead(status, reason, Headers.from_list(fields), version)
        if status < 200 and status != 101:
            out.append(head)
            out.append(EndOfMessage())
            return
        if not self._methods:
            raise ProtocolError("response without a request")
        method = self._methods.popleft()
        self._message_keep_alive = keep_alive
        self.keep_alive = keep_alive
        out.append(head)
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self._message_upgrade = True
            self._start_body(None, out)
            self._message_upgrade = False
            return
        if method == "HEAD" or status in (204, 304):
            self._start_body(None, out)
        elif framing is None:
            self._start_body("eof", out)
        else:
            self._start_body(framing, out)
