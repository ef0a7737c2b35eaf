"""HTTP/1.1 serializers: heads to bytes, chunked coding, and the framing a head asks for.

The writers check what they write: a CR, LF or NUL in a header name or value, or a
name that is not a token, raises :class:`InvalidHeadError` instead of producing bytes
that a peer would read as two headers or two messages (response splitting). Names and
values are encoded ISO-8859-1, the inverse of what the parser does.

>>> response_head_bytes(ResponseHead(404, headers=Headers([("Content-Length", "0")])))
b'HTTP/1.1 404 Not Found\\r\\nContent-Length: 0\\r\\n\\r\\n'
>>> chunk(b"hello") + last_chunk(Headers([("X-Sum", "5")]))
b'5\\r\\nhello\\r\\n0\\r\\nX-Sum: 5\\r\\n\\r\\n'
"""

from __future__ import annotations

from typing import Final, Literal

from .head import Headers, RequestHead, ResponseHead

__all__ = [
    "REASONS",
    "InvalidHeadError",
    "body_framing",
    "chunk",
    "last_chunk",
    "request_head_bytes",
    "response_head_bytes",
]


class InvalidHeadError(ValueError):
    """A head (or trailer section) that cannot be written as valid HTTP/1.1."""


#: Reason phrases of RFC 9110 section 15 (and a few registered elsewhere).
REASONS: Final[dict[int, str]] = {
    100: "Continue",
    101: "Switching Protocols",
    102: "Processing",
    103: "Early Hints",
    200: "OK",
    201: "Created",
    202: "Accepted",
    203: "Non-Authoritative Information",
    204: "No Content",
    205: "Reset Content",
    206: "Partial Content",
    207: "Multi-Status",
    208: "Already Reported",
    226: "IM Used",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    423: "Locked",
    424: "Failed Dependency",
    425: "Too Early",
    426: "Upgrade Required",
    428: "Precondition Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates",
    507: "Insufficient Storage",
    508: "Loop Detected",
    511: "Network Authentication Required",
}

_TCHARS: Final = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Names already checked (the same few names are written over and over).
_GOOD_NAMES: set[str] = set()
_GOOD_NAMES_MAX: Final = 2048


def _check_name(name: str) -> None:
    if name in _GOOD_NAMES:
        return
    if not name or name.strip(_TCHARS):
        raise InvalidHeadError(f"invalid header name: {name!r}")
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(name)


def _fields_text(headers: Headers) -> str:
    """The header lines, each ended by CRLF, then the blank line."""
    parts: list[str] = []
    good = _GOOD_NAMES
    for name, value in headers.items():
        if name not in good:
            _check_name(name)
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    # Names are tokens; so a CR or LF anywhere but at the ends of lines came from a
    # value. One count over the text instead of one search per value.
    lines = len(parts)
    if text.count("\n") != lines or text.count("\r") != lines or "\0" in text:
        bad = next((v for _, v in headers.items() if "\r" in v or "\n" in v or "\0" in v), text)
        raise InvalidHeadError(f"CR, LF or NUL in a header value: {bad[:60]!r}")
    return text


def _encode(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise InvalidHeadError(f"head not encodable as ISO-8859-1: {exc}") from None


def _check_version(version: str) -> None:
    if version not in ("1.1", "1.0"):
        raise InvalidHeadError(f"unsupported HTTP version: {version!r}")


def request_head_bytes(head: RequestHead) -> bytes:
    """The request line, the header lines and the blank line, as sent on the wire."""
    _check_version(head.version)
    method, target = head.method, head.target
    if not method or method.strip(_TCHARS):
        raise InvalidHeadError(f"invalid method: {method!r}")
    if not target or not target.isascii() or not target.isprintable() or " " in target:
        raise InvalidHeadError(f"invalid request target: {target!r}")
    return _encode(f"{method} {target} HTTP/{head.version}\r\n" + _fields_text(head.headers))


def response_head_bytes(head: ResponseHead) -> bytes:
    """The status line, the header lines and the blank line. An empty ``reason`` is
    replaced by the standard phrase from :data:`REASONS` (or left empty)."""
    _check_version(head.version)
    status = head.status
    if not 100 <= status <= 999:
        raise InvalidHeadError(f"invalid status code: {status!r}")
    reason = head.reason or REASONS.get(status, "")
    if "\r" in reason or "\n" in reason or "\0" in reason:
        raise InvalidHeadError(f"CR, LF or NUL in the reason phrase: {reason!r}")
    return _encode(f"HTTP/{head.version} {status} {reason}\r\n" + _fields_text(head.headers))


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of the chunked transfer coding. Empty data gives ``b""``
    (an empty chunk would be read as the last one)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Headers | None = None) -> bytes:
    """The last chunk, the trailer fields if any, and the final CRLF."""
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + _encode(_fields_text(trailers))


def body_framing(headers: Headers) -> int | Literal["chunked"] | None:
    """How a message with ``headers`` frames its body: its ``Content-Length``,
    ``"chunked"`` (``Transfer-Encoding`` ending in chunked, which wins over a
    Content-Length, RFC 9112 6.3), or ``None`` when it says neither."""
    length: int | None = None
    chunked: bool | None = None
    for name, value in headers.items():
        size = len(name)
        if size == 14 and name.lower() == "content-length":
            for part in value.split(","):
                part = part.strip(" \t")
                if not (part.isdigit() and part.isascii()):
                    raise InvalidHeadError(f"invalid Content-Length: {value!r}")
                n = int(part)
                if length is not None and n != length:
                    raise InvalidHeadError("conflicting Content-Length values")
                length = n
        elif size == 17 and name.lower() == "transfer-encoding":
            last = value.rpartition(",")[2].strip(" \t").lower()
            chunked = last == "chunked"
    if chunked is not None:
        if not chunked:
            raise InvalidHeadError("Transfer-Encoding without chunked last")
        return "chunked"
    return length
