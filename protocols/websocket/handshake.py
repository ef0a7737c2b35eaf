"""The HTTP/1.1 side of a WebSocket (RFC 6455 section 4): the opening handshake's
key and accept values, and the checks of an upgrade request and its ``101``
answer, for an HTTP proxy that passes ``Upgrade: websocket`` on.

Headers are :class:`protocols.http.Headers` or any list of ``(name, value)``
pairs. ::

    from protocols.websocket.handshake import accept_key, check_request, check_response

    request = [("Host", "a"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
               ("Sec-WebSocket-Version", "13")]
    key = check_request("GET", request)
    answer = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
              ("Sec-WebSocket-Accept", accept_key(key))]
    check_response(101, answer, key)     # raises HandshakeError when it does not fit
    assert accept_key(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

:func:`split_head` and :func:`parse_head` find and read an HTTP head in raw
bytes, as ``decode_websocket(handshake=True)`` does to pass the handshake
through untouched.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from wsproto.utilities import generate_accept_token, generate_nonce

from ..http import Headers
from .errors import HandshakeError

__all__ = [
    "MAX_HEAD_SIZE",
    "accept_key",
    "check_request",
    "check_response",
    "is_upgrade",
    "new_key",
    "parse_head",
    "split_head",
]

#: The largest HTTP head :func:`split_head` looks for an end in.
MAX_HEAD_SIZE = 65536

HeaderList = Headers | Iterable[tuple[str, str]]


def _headers(headers: HeaderList) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key`` for a client's request (16 random bytes,
    base64)."""
    return generate_nonce().decode("ascii")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server answers ``key`` with (base64 of the
    SHA-1 of the key and RFC 6455's GUID)."""
    return generate_accept_token(key.strip().encode("ascii")).decode("ascii")


def is_upgrade(headers: HeaderList) -> bool:
    """Whether a request or response head asks for, or agrees to, a WebSocket:
    ``Upgrade`` lists ``websocket`` and ``Connection`` lists ``upgrade``
    (case-insensitive)."""
    h = _headers(headers)
    return h.has_token("upgrade", "websocket") and h.has_token("connection", "upgrade")


def check_request(method: str, headers: HeaderList) -> str:
    """Check an opening request (RFC 6455 4.2.1) and return its
    ``Sec-WebSocket-Key``. :class:`HandshakeError` says what is wrong, with the
    status to answer: 400, or 426 for a version other than 13 (answer it with
    ``Sec-WebSocket-Version: 13``)."""
    h = _headers(headers)
    if method != "GET":
        raise HandshakeError(f"a WebSocket opens with GET, not {method}")
    if not is_upgrade(h):
        raise HandshakeError("not an upgrade to websocket (Upgrade and Connection headers)")
    versions = h.get_all("sec-websocket-version")
    if [v.strip() for v in versions] != ["13"]:
        raise HandshakeError(f"unsupported Sec-WebSocket-Version {versions!r}", 426)
    keys = h.get_all("sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(f"expected one Sec-WebSocket-Key, got {len(keys)}")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise HandshakeError(f"Sec-WebSocket-Key is not base64: {key[:40]!r}") from None
    if len(raw) != 16:
        raise HandshakeError(f"Sec-WebSocket-Key must encode 16 bytes, not {len(raw)}")
    return key


def check_response(status: int, headers: HeaderList, key: str) -> None:
    """Check the answer to a request sent with ``key`` (RFC 6455 4.1): ``101``,
    an upgrade to websocket, and the ``Sec-WebSocket-Accept`` that ``key``
    calls for. Raises :class:`HandshakeError` (status 502: the server is at
    fault)."""
    if status != 101:
        raise HandshakeError(f"the server answered {status}, not 101", 502)
    h = _headers(headers)
    if not is_upgrade(h):
        raise HandshakeError("the 101 does not upgrade to websocket", 502)
    accept = h.get_all("sec-websocket-accept")
    if len(accept) != 1 or accept[0].strip() != accept_key(key):
        raise HandshakeError(f"wrong Sec-WebSocket-Accept {accept!r}", 502)


def split_head(buf: bytes | bytearray) -> int:
    """Where the HTTP head at the start of ``buf`` ends (the index after its
    blank line), or -1 when it has not ended yet."""
    end = buf.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_head(block: bytes) -> tuple[str, Headers]:
    """The start line and the header fields of an HTTP head (as found by
    :func:`split_head`), read leniently: lines without a colon are skipped. The
    head is passed on as it came, so this only has to tell what it says.

    >>> line, h = parse_head(b"HTTP/1.1 101 OK\\r\\nUpgrade: websocket\\r\\n\\r\\n")
    >>> line, h["upgrade"]
    ('HTTP/1.1 101 OK', 'websocket')
    """
    lines = block.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name and name == name.strip():
            fields.append((name, value.strip(" \t")))
    return lines[0], Headers.from_list(fields)
