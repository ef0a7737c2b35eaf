"""TLS ClientHello parsing, sans-IO: read SNI and ALPN without terminating TLS.

A TLS connection opens with the client's ``ClientHello`` handshake message, sent
in clear inside one or more TLS *records*. It names the server the client wants
(the ``server_name`` extension, SNI) and the application protocols it offers
(``application_layer_protocol_negotiation``, ALPN). A proxy that only routes TLS
-- passthrough by SNI -- needs these two and nothing else: it never decrypts.

Wire format (RFC 8446 section 5.1 and 4.1.2; TLS 1.0 to 1.3 share it)::

    record:      content_type u8 (22 = handshake) | version u16 | length u16 | fragment
    handshake:   msg_type u8 (1 = client_hello) | length u24 | body
    ClientHello: legacy_version u16 | random [32] | session_id <0..32> (u8 length)
                 | cipher_suites <2..2^16-2> (u16 length) | compression <1..255> (u8)
                 | extensions <0..2^16-1> (u16 length, optional): type u16 | data <u16>

A ClientHello may be split across records, and a record across reads:
:class:`ClientHelloParser` takes bytes as they arrive and answers once the whole
message is in. Nothing here decrypts or validates cryptography; it checks the
structure strictly (lengths consistent, extensions not repeated, a host name
that is ASCII) and raises :class:`ProtocolError` on anything else, including a
stream that is not TLS at all (:class:`NotTls`: plain HTTP on a TLS port).

Example (runnable)::

    from protocols.tls import ClientHelloParser, build_client_hello

    wire = build_client_hello(server_name="api.example", alpn=["h2", "http/1.1"])
    parser = ClientHelloParser()
    assert parser.feed(wire[:7]) is None          # not complete yet
    hello = parser.feed(wire[7:])
    assert hello.server_name == "api.example"
    assert hello.alpn_protocols == ("h2", "http/1.1")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "MAX_HELLO_SIZE",
    "ClientHello",
    "ClientHelloParser",
    "NotTls",
    "ProtocolError",
    "build_client_hello",
    "parse_client_hello",
]

#: Record content type of handshake messages.
HANDSHAKE = 22
#: Handshake message type of a ClientHello.
CLIENT_HELLO = 1
#: Extension types read here.
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

#: The largest ClientHello accepted (handshake body, bytes). Real ones are well
#: under 2 KiB (a few KiB with post-quantum key shares); the bound keeps a
#: stream that only claims a huge message from making the parser buffer it.
MAX_HELLO_SIZE = 65536

_MAX_RECORD = 16384 + 2048  # TLSPlaintext.length limit, with the slack TLS 1.2 allows


class ProtocolError(Exception):
    """The bytes are not a well-formed ClientHello."""


class NotTls(ProtocolError):
    """The stream does not start with a TLS handshake record (plain HTTP, SSH...)."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello says, as far as routing needs it.

    ``server_name`` is the SNI host name, lower-cased (``None`` when the client sent
    none, as clients do when connecting to an IP address); ``alpn_protocols`` the
    ALPN protocol names offered, in the client's order (``()`` if none);
    ``supported_versions`` the TLS versions of the ``supported_versions`` extension
    (``0x0304`` is TLS 1.3; empty for a client that only speaks TLS 1.2 or older);
    ``extensions`` every extension as ``(type, data)``, in wire order."""

    legacy_version: int
    random: bytes
    session_id: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: bytes
    extensions: tuple[tuple[int, bytes], ...]
    server_name: str | None
    alpn_protocols: tuple[str, ...]
    supported_versions: tuple[int, ...]


class ClientHelloParser:
    """Incremental parser: :meth:`feed` bytes from the start of a TLS stream until
    it returns the :class:`ClientHello`. It keeps only the handshake bytes (the
    caller keeps the raw stream to pass it on)."""

    __slots__ = ("_buffer", "_handshake", "max_size", "result")

    def __init__(self, max_size: int = MAX_HELLO_SIZE) -> None:
        self.max_size = max_size
        self._buffer = b""  # record bytes not yet taken apart
        self._handshake = bytearray()  # handshake payload gathered from records
        #: The ClientHello, once parsed.
        self.result: ClientHello | None = None

    def feed(self, data: bytes) -> ClientHello | None:
        """Take the next bytes of the stream; the ClientHello once complete, else
        ``None``. Raises :class:`ProtocolError` (:class:`NotTls` if the very first
        bytes are not a TLS handshake record). Bytes after the ClientHello are
        ignored; feeding after a result returns it again."""
        if self.result is not None:
            return self.result
        buffer = self._buffer + data if self._buffer else data
        handshake = self._handshake
        while len(buffer) >= 5:
            content_type = buffer[0]
            length = int.from_bytes(buffer[3:5], "big")
            if content_type != HANDSHAKE or buffer[1] != 3:
                if not handshake:
                    raise NotTls(f"not a TLS handshake record (first bytes {bytes(buffer[:5])!r})")
                raise ProtocolError(f"record of type {content_type} inside the ClientHello")
            if length == 0 or length > _MAX_RECORD:
                raise ProtocolError(f"bad record length {length}")
            if len(buffer) < 5 + length:
                break
            handshake += buffer[5 : 5 + length]
            buffer = buffer[5 + length :]
            if len(handshake) >= 4:
                if handshake[0] != CLIENT_HELLO:
                    raise ProtocolError(f"handshake message {handshake[0]} is not a ClientHello")
                size = int.from_bytes(handshake[1:4], "big")
                if size > self.max_size:
                    raise ProtocolError(f"ClientHello of {size} bytes, over {self.max_size}")
                if len(handshake) >= 4 + size:
                    self.result = _parse_body(bytes(handshake[4 : 4 + size]))
                    self._buffer = b""
                    self._handshake = bytearray()
                    return self.result
        if len(buffer) >= 1 and not handshake and (buffer[0] != HANDSHAKE):
            raise NotTls(f"not a TLS handshake record (first bytes {bytes(buffer[:5])!r})")
        self._buffer = bytes(buffer)
        return None


def parse_client_hello(data: bytes, max_size: int = MAX_HELLO_SIZE) -> ClientHello:
    """The ClientHello at the start of ``data`` (records included); raises
    :class:`ProtocolError` if it is malformed or incomplete."""
    hello = ClientHelloParser(max_size).feed(data)
    if hello is None:
        raise ProtocolError("incomplete ClientHello")
    return hello


class _Reader:
    """Bounds-checked reads from a bytes object."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolError(f"ClientHello truncated in {what}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str) -> bytes:
        return self.take(self.uint(length_size, what), what)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _parse_body(body: bytes) -> ClientHello:
    r = _Reader(body)
    legacy_version = r.uint(2, "legacy_version")
    random = r.take(32, "random")
    session_id = r.vector(1, "session_id")
    if len(session_id) > 32:
        raise ProtocolError("session_id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise ProtocolError("bad cipher_suites length")
    cipher_suites = tuple(
        int.from_bytes(suites[i : i + 2], "big") for i in range(0, len(suites), 2)
    )
    compression = r.vector(1, "compression_methods")
    if not compression:
        raise ProtocolError("no compression method")
    extensions: list[tuple[int, bytes]] = []
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    if r.left:
        ext = _Reader(r.vector(2, "extensions"))
        if r.left:
            raise ProtocolError("bytes after the extensions")
        seen: set[int] = set()
        while ext.left:
            kind = ext.uint(2, "extension type")
            data = ext.vector(2, "extension data")
            if kind in seen:
                raise ProtocolError(f"extension {kind} repeated")
            seen.add(kind)
            extensions.append((kind, data))
            if kind == EXT_SERVER_NAME:
                server_name = _server_name(data)
            elif kind == EXT_ALPN:
                alpn = _alpn(data)
            elif kind == EXT_SUPPORTED_VERSIONS:
                versions = _versions(data)
    return ClientHello(
        legacy_version,
        random,
        session_id,
        cipher_suites,
        compression,
        tuple(extensions),
        server_name,
        alpn,
        versions,
    )


def _server_name(data: bytes) -> str | None:
    # The server's own extension is empty (in its ServerHello); a client's holds a
    # list with at most one name per type (RFC 6066 section 3), host_name = 0.
    if not data:
        return None
    r = _Reader(data)
    names = _Reader(r.vector(2, "server_name list"))
    if r.left or not names.left:
        raise ProtocolError("bad server_name extension")
    host: str | None = None
    while names.left:
        name_type = names.uint(1, "server_name type")
        name = names.vector(2, "server_name")
        if name_type != 0:
            continue  # no other type is defined; skip rather than fail
        if host is not None:
            raise ProtocolError("two host names in server_name")
        if not name or len(name) > 255 or not name.isascii() or b"\x00" in name:
            raise ProtocolError(f"bad host name in server_name: {name[:64]!r}")
        host = name.decode("ascii").lower()
    return host


def _alpn(data: bytes) -> tuple[str, ...]:
    r = _Reader(data)
    items = _Reader(r.vector(2, "ALPN list"))
    if r.left or not items.left:
        raise ProtocolError("bad ALPN extension")
    protocols: list[str] = []
    while items.left:
        name = items.vector(1, "ALPN protocol")
        if not name:
            raise ProtocolError("empty ALPN protocol name")
        protocols.append(name.decode("latin-1"))
    return tuple(protocols)


def _versions(data: bytes) -> tuple[int, ...]:
    r = _Reader(data)
    raw = r.vector(1, "supported_versions")
    if r.left or not raw or len(raw) % 2:
        raise ProtocolError("bad supported_versions extension")
    return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2))


def build_client_hello(
    server_name: str | None = None,
    alpn: list[str] | tuple[str, ...] = (),
    *,
    extra_extensions: tuple[tuple[int, bytes], ...] = (),
    record_size: int = 16384,
) -> bytes:
    """A minimal ClientHello in TLS records (``record_size`` bytes of handshake per
    record, so tests can split it across records). For tests and examples: it is
    well-formed but offers nothing a real server could complete a handshake with."""

    def vec(data: bytes, size: int) -> bytes:
        return len(data).to_bytes(size, "big") + data

    exts = list(extra_extensions)
    if server_name is not None:
        host = server_name.encode("ascii")
        exts.insert(0, (EXT_SERVER_NAME, vec(b"\x00" + vec(host, 2), 2)))
    if alpn:
        exts.append((EXT_ALPN, vec(b"".join(vec(p.encode("latin-1"), 1) for p in alpn), 2)))
    exts.append((EXT_SUPPORTED_VERSIONS, vec(b"\x03\x04\x03\x03", 1)))
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + vec(os.urandom(32), 1)
        + vec(b"\x13\x01\x13\x02\xc0\x2f", 2)
        + vec(b"\x00", 1)
        + vec(b"".join(kind.to_bytes(2, "big") + vec(data, 2) for kind, data in exts), 2)
    )
    handshake = bytes([CLIENT_HELLO]) + vec(body, 3)
    records = [
        bytes([HANDSHAKE, 3, 1]) + vec(handshake[i : i + record_size], 2)
        for i in range(0, len(handshake), record_size)
    ]
    return b"".join(records)
