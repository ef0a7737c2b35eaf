"""protocols.tls: the ClientHello parser, on real hellos (OpenSSL's, through
Python's ssl), split at every point and across records, and fuzzed."""

from __future__ import annotations

import ssl
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocols.tls
from protocols.tls import (
    ClientHello,
    ClientHelloParser,
    NotTls,
    ProtocolError,
    build_client_hello,
    parse_client_hello,
)


def openssl_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    """The first flight of a real OpenSSL client (no server needed)."""
    context = ssl.create_default_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def rerecord(wire: bytes, size: int) -> bytes:
    """The same handshake bytes re-split into records of ``size`` bytes."""
    assert wire[0] == 22
    length = int.from_bytes(wire[3:5], "big")
    payload = wire[5 : 5 + length]
    return b"".join(
        b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        for chunk in (payload[i : i + size] for i in range(0, len(payload), size))
    )


def test_module_example_runs() -> None:
    doc = protocols.tls.__doc__ or ""
    code = doc.split("Example (runnable)::", 1)[1]
    exec(textwrap.dedent(code), {})


def test_a_real_openssl_hello() -> None:
    wire = openssl_hello("API.Example.com", ["h2", "http/1.1"])
    hello = parse_client_hello(wire)
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "api.example.com"  # lower-cased
    assert hello.alpn_protocols == ("h2", "http/1.1")
    assert 0x0304 in hello.supported_versions  # TLS 1.3 offered
    assert hello.legacy_version == 0x0303 and len(hello.random) == 32
    assert 0x1302 in hello.cipher_suites  # TLS_AES_256_GCM_SHA384
    assert [kind for kind, _ in hello.extensions][:1] != []


def test_no_sni_and_no_alpn() -> None:
    hello = parse_client_hello(openssl_hello(None))
    assert hello.server_name is None and hello.alpn_protocols == ()


def test_every_split_point_and_records_of_any_size() -> None:
    wire = openssl_hello("split.example", ["http/1.1"])
    for cut in range(1, len(wire)):
        parser = ClientHelloParser()
        assert parser.feed(wire[:cut]) is None, cut
        hello = parser.feed(wire[cut:])
        assert hello is not None and hello.server_name == "split.example", cut
    for size in (1, 3, 100, 500):
        parser = ClientHelloParser()
        pieces = rerecord(wire, size)
        results = [parser.feed(pieces[i : i + 7]) for i in range(0, len(pieces), 7)]
        assert results[-1] is not None and results[-1].alpn_protocols == ("http/1.1",)
        assert all(r is None for r in results[:-1]) or size > 7


def test_bytes_after_the_hello_are_ignored_and_the_result_is_kept() -> None:
    wire = build_client_hello("x.test")
    parser = ClientHelloParser()
    hello = parser.feed(wire + b"\x17\x03\x03\x00\x05hello")
    assert hello is not None and hello.server_name == "x.test"
    assert parser.feed(b"anything") is hello


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"GET / HTTP/1.1\r\n", NotTls),
        (b"SSH-2.0-OpenSSH_9.2\r\n", NotTls),
        (b"\x80\x2e\x01\x03\x01", NotTls),  # SSLv2-style hello
        (b"\x16\x03\x01\x00\x00", ProtocolError),  # empty record
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", ProtocolError),  # a ServerHello
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", ProtocolError),  # claims 16 MiB
        (b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03", ProtocolError),  # truncated body
    ],
)
def test_malformed_input(wire: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        ClientHelloParser().feed(wire)


def test_malformed_extensions() -> None:
    bad_host = (0, b"\x00\x06\x00\x00\x03a\xffb")
    with pytest.raises(ProtocolError, match="host name"):
        parse_client_hello(build_client_hello(extra_extensions=(bad_host,)))
    with pytest.raises(ProtocolError, match="repeated"):
        parse_client_hello(build_client_hello("a.test", extra_extensions=((0, b""),)))
    with pytest.raises(ProtocolError, match="ALPN"):
        parse_client_hello(build_client_hello(extra_extensions=((16, b"\x00\x02\x00\x00"),)))
    with pytest.raises(ProtocolError, match="over"):
        ClientHelloParser(max_size=100).feed(build_client_hello("a" * 200))
    with pytest.raises(ProtocolError, match="incomplete"):
        parse_client_hello(build_client_hello("a.test")[:-3])


@given(st.binary(max_size=600))
def test_fuzz_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    parser = ClientHelloParser()
    try:
        parser.feed(b"\x16\x03\x01" + data)
    except ProtocolError:
        pass


_REAL = build_client_hello("fuzz.example", ["h2", "http/1.1"])


@given(st.integers(0, len(_REAL) - 1), st.integers(0, 255), st.integers(1, 50))
def test_fuzz_mutated_hellos_raise_only_protocol_error(pos: int, value: int, cut: int) -> None:
    wire = bytearray(_REAL)
    wire[pos] = value
    parser = ClientHelloParser()
    try:
        parser.feed(bytes(wire[:cut]))
        hello = parser.feed(bytes(wire[cut:]))
    except ProtocolError:
        return
    assert hello is None or isinstance(hello, ClientHello)
