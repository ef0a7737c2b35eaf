"""protocols.proxy_protocol: spec examples byte for byte, round trips, malformed input."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocols.proxy_protocol as pp
from protocols.proxy_protocol import (
    SIGNATURE,
    TLV,
    Command,
    Family,
    ProtocolError,
    ProxyHeader,
    TLVType,
    Transport,
    crc32c,
    encode,
    parse,
)

# Byte-exact headers, written out from HAProxy's proxy-protocol.txt ---------------

V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 51234 443\r\n"
V1_WORST = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"  # noqa: E501
V2_TCP4 = (
    b"\r\n\r\n\x00\r\nQUIT\n"  # signature
    b"\x21"  # version 2, PROXY
    b"\x11"  # AF_INET, STREAM
    b"\x00\x0c"  # 12 bytes of addresses
    b"\xc0\x00\x02\x01"  # 192.0.2.1
    b"\xc6\x33\x64\x07"  # 198.51.100.7
    b"\xc8\x22"  # 51234
    b"\x01\xbb"  # 443
)
V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"  # what HAProxy's health checks send


def test_module_example_runs() -> None:
    doc = pp.__doc__ or ""
    code = doc.split("Both decode to one frozen :class:`ProxyHeader`::\n")[1].split("\n:func:")[0]
    exec(textwrap.dedent(code), {})


def test_v1_tcp4_byte_exact() -> None:
    header = ProxyHeader.from_addresses(("192.0.2.1", 51234), ("198.51.100.7", 443), version=1)
    assert encode(header) == V1_TCP4
    assert parse(V1_TCP4 + b"rest") == (header, len(V1_TCP4))


def test_v1_tcp6_and_longest_header() -> None:
    header, size = parse(V1_TCP6) or (None, 0)
    assert header == ProxyHeader(
        1,
        Command.PROXY,
        Family.INET6,
        Transport.STREAM,
        ("2001:db8::1", 51234),
        ("2001:db8::2", 443),
    )
    assert size == len(V1_TCP6) and encode(header) == V1_TCP6
    # The specification's worst case fits exactly; one byte more does not.
    assert len(V1_WORST) == pp.V1_MAX_SIZE
    assert parse(V1_WORST) == (ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC), 107)
    with pytest.raises(ProtocolError, match="longer than 107"):
        parse(V1_WORST.replace(b"65535 65535", b"65535 65535 "))


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    for wire in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        header, size = parse(wire + b"GET") or (None, 0)
        assert header is not None and size == len(wire)
        assert header.family is Family.UNSPEC and header.source is None and not header.proxied
    assert encode(ProxyHeader(version=1)) == b"PROXY UNKNOWN\r\n"


def test_v2_tcp4_byte_exact() -> None:
    header = ProxyHeader.from_addresses(("192.0.2.1", 51234), ("198.51.100.7", 443), version=2)
    assert encode(header) == V2_TCP4
    assert parse(V2_TCP4 + b"\x16\x03") == (header, len(V2_TCP4))


def test_v2_local_discards_the_address_block() -> None:
    header, size = parse(V2_LOCAL) or (None, 0)
    assert header is not None and size == 16
    assert header.command is Command.LOCAL and not header.proxied and header.source is None
    # LOCAL with an INET family and a block of junk: still accepted, still discarded
    junk = SIGNATURE + b"\x20\x11\x00\x05" + b"\xff" * 5
    parsed = parse(junk)
    assert parsed is not None and parsed[0].command is Command.LOCAL and parsed[1] == len(junk)
    assert parsed[0].source is None and parsed[0].tlvs == ()


def test_v2_unspec_keeps_tlvs() -> None:
    wire = SIGNATURE + b"\x21\x00\x00\x07" + b"\x02\x00\x04host"
    header, _ = parse(wire) or (None, 0)
    assert header is not None and header.family is Family.UNSPEC and not header.proxied
    assert header.authority == "host"


def test_v2_ipv6_unix_and_tlvs() -> None:
    v6 = ProxyHeader(
        2,
        Command.PROXY,
        Family.INET6,
        Transport.DGRAM,
        ("2001:db8::1", 1),
        ("::1", 65535),
        (TLV(TLVType.ALPN, b"h2"), TLV(TLVType.AUTHORITY, b"example.com"), TLV(0xE0, b"")),
    )
    wire = encode(v6)
    assert len(wire) == 16 + 36 + (3 + 2) + (3 + 11) + 3
    assert parse(wire) == (v6, len(wire))
    assert v6.tlv(TLVType.ALPN) == b"h2" and v6.tlv(0x99) is None
    assert v6.authority == "example.com"
    unix = ProxyHeader(2, Command.PROXY, Family.UNIX, Transport.STREAM, "/run/a.sock", "/run/b")
    wire = encode(unix)
    assert len(wire) == 16 + 216 and parse(wire) == (unix, len(wire))


def test_crc32c() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    header = ProxyHeader.from_addresses(("10.0.0.1", 1), ("10.0.0.2", 2), version=2)
    wire = encode(header, checksum=True)
    parsed, size = parse(wire) or (None, 0)
    assert parsed is not None and size == len(wire)
    assert [t.type for t in parsed.tlvs] == [TLVType.CRC32C]
    corrupted = wire[:20] + bytes((wire[20] ^ 1,)) + wire[21:]
    with pytest.raises(ProtocolError, match="CRC32C"):
        parse(corrupted)


def test_from_addresses() -> None:
    mapped = ProxyHeader.from_addresses(("::ffff:192.0.2.1", 5), ("192.0.2.2", 6))
    assert mapped.family is Family.INET and mapped.source == ("192.0.2.1", 5)
    mixed = ProxyHeader.from_addresses(("192.0.2.1", 5), ("2001:db8::1", 6))
    assert mixed.family is Family.UNSPEC and encode(mixed) == b"PROXY UNKNOWN\r\n"
    unknown = ProxyHeader.from_addresses(("?", 0), None, version=2)
    assert encode(unknown) == SIGNATURE + b"\x21\x00\x00\x00"


def test_encode_refuses_what_cannot_be_said() -> None:
    unix = ProxyHeader(1, Command.PROXY, Family.UNIX, Transport.STREAM, "/a", "/b")
    with pytest.raises(ValueError, match="v1"):
        encode(unix)
    with pytest.raises(ValueError, match="not an address"):
        encode(ProxyHeader(2, Command.PROXY, Family.INET, Transport.STREAM, ("::1", 1), ("::1", 2)))
    with pytest.raises(ValueError, match="port"):
        encode(
            ProxyHeader(
                1, Command.PROXY, Family.INET, Transport.STREAM, ("1.2.3.4", 70000), ("1.2.3.4", 1)
            )
        )
    with pytest.raises(ValueError, match="version"):
        encode(ProxyHeader(version=3))
    with pytest.raises(ValueError, match="checksum"):
        encode(ProxyHeader(version=1), checksum=True)


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "unknown protocol"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "expected"),
        (b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n", "expected"),  # a double space
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "not an IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not an IPv6"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "CRLF"),
        (b"PROXY TCP4 " + b"1" * 100, "longer than 107"),
        (SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version 1"),
        (SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "unknown command"),
        (SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "address family"),
        (SIGNATURE + b"\x21\x13\x00\x0c" + bytes(12), "transport"),
        (SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "needs 12"),
        (SIGNATURE + b"\x21\x11\x00\x0e" + bytes(14), "truncated TLV"),
        (SIGNATURE + b"\x21\x11\x00\x10" + bytes(12) + b"\x01\x00\x05x", "overruns"),
        (SIGNATURE + b"\x21\x11\x00\x11" + bytes(12) + b"\x03\x00\x02xx", "4 bytes"),
    ],
)
def test_malformed(wire: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse(wire)


def test_every_prefix_is_incomplete_not_an_error() -> None:
    for wire in (
        V1_TCP4,
        V1_TCP6,
        V2_TCP4,
        V2_LOCAL,
        encode(ProxyHeader(version=2), checksum=True),
    ):
        for i in range(len(wire)):
            assert parse(wire[:i]) is None, (wire, i)


def test_a_wrong_byte_is_caught_before_the_end() -> None:
    # A byte that cannot start a header is rejected at once, not after 107 bytes.
    with pytest.raises(ProtocolError):
        parse(b"PROXZ")
    with pytest.raises(ProtocolError):
        parse(b"\r\n\r\n\x00\r\nQUIX")


# Hypothesis ------------------------------------------------------------------------

ports = st.integers(0, 65535)
ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
tlvs = st.lists(
    st.builds(
        TLV,
        st.integers(0, 255).filter(lambda t: t != TLVType.CRC32C),
        st.binary(max_size=40),
    ),
    max_size=4,
).map(tuple)
paths = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30
).filter(lambda p: len(p.encode()) <= 108)


@st.composite
def headers(draw: st.DrawFn) -> ProxyHeader:
    version = draw(st.sampled_from([1, 2]))
    if version == 1:
        family = draw(st.sampled_from([Family.INET, Family.INET6, Family.UNSPEC]))
        if family is Family.UNSPEC:
            return ProxyHeader(1, Command.PROXY, Family.UNSPEC, Transport.UNSPEC)
        ip = ipv4 if family is Family.INET else ipv6
        return ProxyHeader(
            1,
            Command.PROXY,
            family,
            Transport.STREAM,
            (draw(ip), draw(ports)),
            (draw(ip), draw(ports)),
        )
    command = draw(st.sampled_from(Command))
    family = draw(st.sampled_from(Family))
    transport = draw(st.sampled_from(Transport))
    if command is Command.LOCAL:
        return ProxyHeader(2, command, family, transport)
    source: pp.Address | None = None
    destination: pp.Address | None = None
    if family is Family.INET:
        source, destination = (draw(ipv4), draw(ports)), (draw(ipv4), draw(ports))
    elif family is Family.INET6:
        source, destination = (draw(ipv6), draw(ports)), (draw(ipv6), draw(ports))
    elif family is Family.UNIX:
        source, destination = draw(paths), draw(paths)
    return ProxyHeader(2, command, family, transport, source, destination, draw(tlvs))


@given(headers(), st.binary(max_size=20))
def test_round_trip(header: ProxyHeader, rest: bytes) -> None:
    wire = encode(header)
    assert parse(wire + rest) == (header, len(wire))
    assert encode(parse(wire)[0]) == wire  # type: ignore[index]


@given(headers())
def test_round_trip_with_checksum(header: ProxyHeader) -> None:
    if header.version == 1 or header.command is Command.LOCAL:
        return
    wire = encode(header, checksum=True)
    parsed = parse(wire)
    assert parsed is not None and parsed[0].tlvs[:-1] == header.tlvs


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    try:
        result = parse(data)
    except ProtocolError:
        return
    if result is not None:
        assert 0 < result[1] <= len(data)


@given(headers(), st.data())
def test_corrupted_headers_raise_only_protocol_error(
    header: ProxyHeader, data: st.DataObject
) -> None:
    wire = bytearray(encode(header))
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] = data.draw(st.integers(0, 255))
    try:
        parse(bytes(wire))
    except ProtocolError:
        pass
