"""The PROXY protocol, versions 1 and 2, sans-IO.

A proxy that forwards a TCP connection (HAProxy, a cloud load balancer, trioxy's
``connect_proxy_protocol``) sends one *header* before the connection's own bytes,
saying who the client was and what address it connected to. The receiver reads
the header, remembers the addresses and passes the rest on unchanged. The
reference is HAProxy's ``proxy-protocol.txt`` (version 2.x).

Version 1 is one line of text, at most 107 bytes with its CRLF::

    PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\\r\\n
    PROXY TCP6 2001:db8::1 2001:db8::2 51234 443\\r\\n
    PROXY UNKNOWN\\r\\n                      (addresses not known: use the real ones)

Version 2 is binary: a 12-byte signature, a version/command byte (``LOCAL``:
a health check by the proxy itself, the addresses are to be ignored; ``PROXY``:
a relayed connection), an address family/transport byte, a length, the addresses
and then *TLVs* (type-length-value extensions: ALPN, the TLS SNI as
``AUTHORITY``, a unique id, a CRC32C of the header, TLS details...).

Both decode to one frozen :class:`ProxyHeader`::

    from protocols.proxy_protocol import ProxyHeader, encode, parse

    wire = b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\\r\\nGET / HTTP/1.1\\r\\n"
    header, size = parse(wire)
    assert header.source == ("192.0.2.1", 51234) and wire[size:].startswith(b"GET")
    v2 = ProxyHeader.from_addresses(header.source, header.destination, version=2)
    assert parse(encode(v2))[0].source == ("192.0.2.1", 51234)

:func:`parse` returns ``None`` while the bytes are a prefix of a header that may
still be valid (read more and call it again with everything), and raises
:class:`ProtocolError` as soon as they cannot be one. Decisions where the
specification leaves room:

* ``LOCAL`` (v2): the whole address block is discarded, as the specification
  says (``source``/``destination`` are ``None``, ``tlvs`` empty), whatever the
  family and length.
* ``PROXY`` with family ``UNSPEC`` (v2) and ``PROXY UNKNOWN`` (v1): accepted,
  with no addresses (the receiver uses the connection's own); v2 TLVs are kept.
* a v2 ``CRC32C`` TLV is checked; a mismatch is a :class:`ProtocolError`.
* v1 is parsed strictly (single spaces, addresses of the declared family, ports
  0-65535); v2 rejects versions other than 2, unknown commands, families and
  transports, an address block shorter than its family needs, and TLVs that
  overrun the header.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

__all__ = [
    "SIGNATURE",
    "TLV",
    "V1_MAX_SIZE",
    "Command",
    "Family",
    "ProtocolError",
    "ProxyHeader",
    "TLVType",
    "Transport",
    "crc32c",
    "encode",
    "parse",
]

#: The 12 bytes that open every version 2 header.
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 header, CRLF included.
V1_MAX_SIZE = 107
_V1_PREFIX = b"PROXY "


class ProtocolError(Exception):
    """Bytes that are not a valid PROXY protocol header. The connection cannot be
    used: a receiver closes it."""


class Command(enum.IntEnum):
    """Version 2 command (version 1 is always ``PROXY``)."""

    LOCAL = 0
    PROXY = 1


class Family(enum.IntEnum):
    """Address family: ``UNSPEC`` means the addresses are not given."""

    UNSPEC = 0
    INET = 1
    INET6 = 2
    UNIX = 3


class Transport(enum.IntEnum):
    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


class TLVType(enum.IntEnum):
    """The TLV types the specification defines (others are kept as plain ints)."""

    ALPN = 0x01
    AUTHORITY = 0x02
    CRC32C = 0x03
    NOOP = 0x04
    UNIQUE_ID = 0x05
    SSL = 0x20
    NETNS = 0x30


_ADDRESS_SIZE = {Family.UNSPEC: 0, Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}
_UNIX_PATH = 108

#: An address: ``(ip, port)`` for INET and INET6, a path for UNIX.
Address = tuple[str, int] | str


@dataclass(frozen=True, slots=True)
class TLV:
    """One version 2 extension, kept as received (``type`` may be any 0-255)."""

    type: int
    value: bytes = b""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded header (either version), or one to encode.

    ``source`` is the original client, ``destination`` the address it connected
    to: ``(ip, port)`` for ``INET``/``INET6``, a path for ``UNIX``, ``None`` when
    unknown (``UNSPEC``, ``LOCAL``). IP addresses are in their canonical text form.
    """

    version: int = 2
    command: Command = Command.PROXY
    family: Family = Family.UNSPEC
    transport: Transport = Transport.STREAM
    source: Address | None = None
    destination: Address | None = None
    tlvs: tuple[TLV, ...] = ()

    @classmethod
    def from_addresses(
        cls,
        source: tuple[str, int] | None,
        destination: tuple[str, int] | None,
        *,
        version: int = 1,
        tlvs: tuple[TLV, ...] = (),
    ) -> ProxyHeader:
        """The header a proxy sends for a TCP connection from ``source`` to
        ``destination``. IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, what a
        dual-stack socket reports) count as IPv4. When either address is missing
        or not an IP address, or the two families differ, the header says the
        addresses are unknown (v1 ``PROXY UNKNOWN``, v2 family ``UNSPEC``)."""
        src = _ip_endpoint(source)
        dst = _ip_endpoint(destination)
        if src is None or dst is None or src[0].version != dst[0].version:
            return cls(version, Command.PROXY, Family.UNSPEC, Transport.UNSPEC, tlvs=tlvs)
        family = Family.INET if src[0].version == 4 else Family.INET6
        return cls(
            version,
            Command.PROXY,
            family,
            Transport.STREAM,
            (str(src[0]), src[1]),
            (str(dst[0]), dst[1]),
            tlvs,
        )

    @property
    def proxied(self) -> bool:
        """Whether the header carries the client's addresses (a ``PROXY`` command
        with an ``INET``, ``INET6`` or ``UNIX`` family): otherwise a receiver uses
        the connection's own endpoints."""
        return (
            self.command is Command.PROXY
            and self.family is not Family.UNSPEC
            and self.source is not None
        )

    def tlv(self, type: int) -> bytes | None:
        """The value of the first TLV of ``type``, or ``None``."""
        for t in self.tlvs:
            if t.type == type:
                return t.value
        return None

    @property
    def authority(self) -> str | None:
        """The ``AUTHORITY`` TLV (the host name the client asked for, e.g. its TLS
        SNI), decoded; ``None`` if absent."""
        value = self.tlv(TLVType.AUTHORITY)
        return None if value is None else value.decode("utf-8", "replace")


def _ip_endpoint(
    address: tuple[str, int] | None,
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int] | None:
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host, port = address[0], address[1]
    try:
        ip = ipaddress.ip_address(str(host).strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, port
    return ip, port


# Parsing -------------------------------------------------------------------------


def parse(data: bytes) -> tuple[ProxyHeader, int] | None:
    """The header at the start of ``data`` and its size in bytes; ``None`` if
    ``data`` is too short to tell yet; :class:`ProtocolError` if it does not start
    with a valid header."""
    head = data[:12]
    if head == SIGNATURE[: len(head)]:
        return _parse_v2(data) if len(head) == 12 else None
    head = data[:6]
    if head == _V1_PREFIX[: len(head)]:
        return _parse_v1(data) if len(head) == 6 else None
    raise ProtocolError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX_SIZE)
    if end < 0:
        if b"\n" in data[:V1_MAX_SIZE]:
            raise ProtocolError("PROXY v1 header: line not ended by CRLF")
        if len(data) >= V1_MAX_SIZE:
            raise ProtocolError(f"PROXY v1 header longer than {V1_MAX_SIZE} bytes")
        return None
    size = end + 2
    parts = data[6:end].split(b" ")
    if parts[0] == b"UNKNOWN":  # the rest of the line is to be ignored
        return ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC), size
    if parts[0] == b"TCP4":
        family = Family.INET
    elif parts[0] == b"TCP6":
        family = Family.INET6
    else:
        raise ProtocolError(f"PROXY v1 header: unknown protocol {_show(parts[0])}")
    if len(parts) != 5:
        raise ProtocolError("PROXY v1 header: expected 'PROXY TCPn SRC DST SPORT DPORT'")
    src = _v1_ip(parts[1], family)
    dst = _v1_ip(parts[2], family)
    header = ProxyHeader(
        1,
        Command.PROXY,
        family,
        Transport.STREAM,
        (src, _v1_port(parts[3])),
        (dst, _v1_port(parts[4])),
    )
    return header, size


def _show(raw: bytes) -> str:
    return repr(raw[:40].decode("ascii", "replace"))


def _v1_ip(raw: bytes, family: Family) -> str:
    try:
        text = raw.decode("ascii")
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv4Address(text) if family is Family.INET else ipaddress.IPv6Address(text)
        )
    except ValueError:
        kind = "IPv4" if family is Family.INET else "IPv6"
        raise ProtocolError(f"PROXY v1 header: {_show(raw)} is not an {kind} address") from None
    return str(ip)


def _v1_port(raw: bytes) -> int:
    if not raw or len(raw) > 5 or not raw.isdigit():
        raise ProtocolError(f"PROXY v1 header: bad port {_show(raw)}")
    port = int(raw)
    if port > 0xFFFF:
        raise ProtocolError(f"PROXY v1 header: port {port} out of range")
    return port


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProtocolError(f"PROXY v2 header: unsupported version {version}")
    if command > 1:
        raise ProtocolError(f"PROXY v2 header: unknown command {command}")
    family_code, transport_code = data[13] >> 4, data[13] & 0x0F
    if family_code > 3:
        raise ProtocolError(f"PROXY v2 header: unknown address family {family_code}")
    if transport_code > 2:
        raise ProtocolError(f"PROXY v2 header: unknown transport {transport_code}")
    family, transport = Family(family_code), Transport(transport_code)
    size = 16 + int.from_bytes(data[14:16], "big")
    if len(data) < size:
        return None
    if command == Command.LOCAL:  # the block is discarded, family included
        return ProxyHeader(2, Command.LOCAL, family, transport), size
    block = data[16:size]
    address_size = _ADDRESS_SIZE[family]
    if len(block) < address_size:
        raise ProtocolError(
            f"PROXY v2 header: {family.name} needs {address_size} address bytes, got {len(block)}"
        )
    source: Address | None = None
    destination: Address | None = None
    if family is Family.INET:
        source = (str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big"))
        destination = (str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big"))
    elif family is Family.INET6:
        source = (str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big"))
        destination = (
            str(ipaddress.IPv6Address(block[16:32])),
            int.from_bytes(block[34:36], "big"),
        )
    elif family is Family.UNIX:
        source = _unix_path(block[:_UNIX_PATH])
        destination = _unix_path(block[_UNIX_PATH:address_size])
    tlvs = _parse_tlvs(data, 16 + address_size, size)
    return ProxyHeader(2, Command.PROXY, family, transport, source, destination, tlvs), size


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _parse_tlvs(data: bytes, pos: int, end: int) -> tuple[TLV, ...]:
    tlvs: list[TLV] = []
    crc_at = -1
    while pos < end:
        if end - pos < 3:
            raise ProtocolError("PROXY v2 header: truncated TLV")
        kind = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        start = pos + 3
        pos = start + length
        if pos > end:
            raise ProtocolError(f"PROXY v2 header: TLV 0x{kind:02x} overruns the header")
        value = data[start:pos]
        if kind == TLVType.CRC32C:
            if length != 4:
                raise ProtocolError("PROXY v2 header: CRC32C TLV must be 4 bytes")
            crc_at = start
        tlvs.append(TLV(kind, value))
    if crc_at >= 0:
        expected = int.from_bytes(data[crc_at : crc_at + 4], "big")
        zeroed = data[:crc_at] + b"\0\0\0\0" + data[crc_at + 4 : end]
        if crc32c(zeroed) != expected:
            raise ProtocolError("PROXY v2 header: CRC32C checksum mismatch")
    return tuple(tlvs)


# Encoding ------------------------------------------------------------------------


def encode(header: ProxyHeader, *, checksum: bool = False) -> bytes:
    """The bytes of ``header`` in its ``version``. With ``checksum`` (v2 only) a
    ``CRC32C`` TLV is appended and filled in. Raises ``ValueError`` for a header
    that cannot be encoded (a UNIX or UDP address in v1, a bad address...)."""
    if header.version == 1:
        if checksum:
            raise ValueError("a v1 header has no checksum")
        return _encode_v1(header)
    if header.version == 2:
        return _encode_v2(header, checksum)
    raise ValueError(f"PROXY protocol version must be 1 or 2, not {header.version!r}")


def _encode_v1(header: ProxyHeader) -> bytes:
    if header.command is Command.LOCAL or header.family is Family.UNSPEC:
        return b"PROXY UNKNOWN\r\n"
    if header.family is Family.UNIX or header.transport is not Transport.STREAM:
        raise ValueError("PROXY v1 carries only TCP over IPv4 or IPv6")
    if header.tlvs:
        raise ValueError("PROXY v1 has no TLVs")
    src, sport = _ip_address(header.source, header.family)
    dst, dport = _ip_address(header.destination, header.family)
    proto = "TCP4" if header.family is Family.INET else "TCP6"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def _ip_address(
    address: Address | None, family: Family
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    if not isinstance(address, tuple) or len(address) != 2:
        raise ValueError(f"{family.name} address must be (ip, port), got {address!r}")
    host, port = address
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv4Address(host) if family is Family.INET else ipaddress.IPv6Address(host)
        )
    except ValueError:
        raise ValueError(f"{host!r} is not an address of family {family.name}") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"bad port {port!r}")
    return ip, port


def _encode_v2(header: ProxyHeader, checksum: bool) -> bytes:
    family = header.family
    if header.command is Command.LOCAL or family is Family.UNSPEC:
        block = bytes(_ADDRESS_SIZE[family])
    elif family is Family.UNIX:
        block = _unix_block(header.source) + _unix_block(header.destination)
    else:
        src, sport = _ip_address(header.source, family)
        dst, dport = _ip_address(header.destination, family)
        block = src.packed + dst.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    parts = [block]
    for t in header.tlvs:
        if not 0 <= t.type <= 0xFF:
            raise ValueError(f"TLV type {t.type!r} out of range")
        parts.append(bytes((t.type,)) + len(t.value).to_bytes(2, "big") + t.value)
    if checksum:
        parts.append(bytes((TLVType.CRC32C, 0, 4)) + b"\0\0\0\0")
    body = b"".join(parts)
    if len(body) > 0xFFFF:
        raise ValueError("PROXY v2 header longer than 65535 bytes")
    wire = (
        SIGNATURE
        + bytes((0x20 | header.command, family << 4 | header.transport))
        + len(body).to_bytes(2, "big")
        + body
    )
    if checksum:
        wire = wire[:-4] + crc32c(wire).to_bytes(4, "big")
    return wire


def _unix_block(path: Address | None) -> bytes:
    if not isinstance(path, str):
        raise ValueError(f"UNIX address must be a path, got {path!r}")
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) > _UNIX_PATH or b"\0" in raw:
        raise ValueError(f"bad UNIX path {path!r} (at most {_UNIX_PATH} bytes, no NUL)")
    return raw.ljust(_UNIX_PATH, b"\0")


# CRC32C (Castagnoli), as the CRC32C TLV needs it -----------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """The CRC32C of ``data`` (headers are small: a table-driven loop is enough)."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
