"""protocols.socks5: RFC 1928/1929 bytes, round trips, both handshakes, malformed input."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import protocols.socks5 as s5
from protocols.socks5 import (
    ADDRESS_TYPE_NOT_SUPPORTED,
    CONNECTION_REFUSED,
    NO_ACCEPTABLE_METHOD,
    NO_AUTH,
    USERNAME_PASSWORD,
    AddressType,
    AuthReply,
    ClientHandshake,
    Command,
    Greeting,
    MethodChoice,
    NoAcceptableMethod,
    ProtocolError,
    Refused,
    Reply,
    Request,
    ServerHandshake,
    UserPass,
    encode,
)


def test_module_example_runs() -> None:
    doc = s5.__doc__ or ""
    code = doc.split("``connect_socks``::\n")[1].split("\nOnly the protocol")[0]
    exec(textwrap.dedent(code), {})


# Byte-exact messages, written out from the RFCs -----------------------------------


def test_bytes_from_the_rfcs() -> None:
    assert encode(Greeting((NO_AUTH, USERNAME_PASSWORD))) == b"\x05\x02\x00\x02"
    assert encode(MethodChoice(NO_ACCEPTABLE_METHOD)) == b"\x05\xff"
    assert encode(UserPass("ann", "pw")) == b"\x01\x03ann\x02pw"
    assert encode(AuthReply(0)) == b"\x01\x00"
    assert (
        encode(Request(Command.CONNECT, "192.0.2.1", 80))
        == b"\x05\x01\x00\x01\xc0\x00\x02\x01\x00\x50"
    )
    assert encode(Request(Command.CONNECT, "example.com", 443)) == (
        b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    )
    assert (
        encode(Request(Command.BIND, "::1", 1)) == b"\x05\x02\x00\x04" + bytes(15) + b"\x01\x00\x01"
    )
    assert encode(Reply(CONNECTION_REFUSED)) == b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00"


def test_address_type_is_inferred_or_kept() -> None:
    assert Request(1, "10.0.0.1", 1).address_type == AddressType.IPV4
    assert Request(1, "2001:db8::1", 1).address_type == AddressType.IPV6
    assert Request(1, "host", 1).address_type == AddressType.DOMAIN
    # A literal sent as a domain name stays one.
    wire = b"\x05\x01\x00\x03\x081.2.3.4x\x00\x50"
    request, size = s5.decode_request(wire) or (None, 0)
    assert request is not None and size == len(wire)
    assert request.address_type == AddressType.DOMAIN and encode(request) == wire
    assert Request(1, "2001:db8::1", 8080).target == "[2001:db8::1]:8080"


Decoder = Callable[[bytes], Any]


@pytest.mark.parametrize(
    ("decode", "wire", "reason"),
    [
        (s5.decode_greeting, b"\x04\x01\x00", "version 4"),
        (s5.decode_greeting, b"\x05\x00", "no authentication method"),
        (s5.decode_userpass, b"\x05\x01a\x01b", "version 5"),
        (s5.decode_request, b"\x05\x01\x00\x02\x00\x00\x00\x00", "address type 2"),
        (s5.decode_request, b"\x05\x01\x00\x03\x00\x00\x50", "empty domain"),
        (s5.decode_request, b"\x05\x01\x00\x03\x02\xff\xfe\x00\x50", "not UTF-8"),
        (s5.decode_reply, b"\x04\x5a\x00\x00\x00\x00\x00\x00", "version 4"),
    ],
)
def test_malformed(decode: Decoder, wire: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode(wire)


def test_unknown_address_type_names_its_reply() -> None:
    with pytest.raises(ProtocolError) as info:
        s5.decode_request(b"\x05\x01\x00\x09\x00\x00")
    assert info.value.reply == ADDRESS_TYPE_NOT_SUPPORTED


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="domain"):
        encode(Request(1, "a" * 256, 80))
    with pytest.raises(ValueError, match="port"):
        encode(Request(1, "a", 65536))
    with pytest.raises(ValueError, match="username"):
        encode(UserPass("u" * 256, ""))
    with pytest.raises(ValueError, match="methods"):
        encode(Greeting(()))
    with pytest.raises(ValueError, match="domain"):
        ClientHandshake("a" * 300, 80)


# The handshakes -------------------------------------------------------------------


def test_no_auth_handshake_with_pipelined_bytes() -> None:
    client = ClientHandshake("example.com", 80)
    server = ServerHandshake()
    assert server.receive(client.start()) == []
    request_bytes = client.receive(server.data_to_send())
    # The client's first relayed bytes arrive with its request.
    (request,) = server.receive(request_bytes + b"GET /")
    assert request == Request(Command.CONNECT, "example.com", 80) and server.request == request
    assert server.trailing == b""  # not before the reply
    server.reply(0, "10.0.0.1", 4000)
    assert server.done and server.trailing == b"GET /"
    assert client.receive(server.data_to_send() + b"HTTP/1.1") == b""
    assert (
        client.done
        and client.reply == Reply(0, "10.0.0.1", 4000)
        and client.trailing == b"HTTP/1.1"
    )


def test_byte_by_byte() -> None:
    client = ClientHandshake("2001:db8::7", 443, username="ann", password="pw")
    server = ServerHandshake(methods=(USERNAME_PASSWORD,))
    messages: list[Any] = []
    to_server = client.start()
    while not client.done:
        for b in to_server:
            messages += server.receive(bytes((b,)))
        if messages and isinstance(messages[-1], UserPass):
            server.accept_credentials(messages[-1] == UserPass("ann", "pw"))
        elif messages and isinstance(messages[-1], Request) and not server.done:
            server.reply(0)
        to_server = b""
        for b in server.data_to_send():
            to_server += client.receive(bytes((b,)))
    assert messages == [UserPass("ann", "pw"), Request(1, "2001:db8::7", 443)]


def test_no_acceptable_method() -> None:
    server = ServerHandshake(methods=(USERNAME_PASSWORD,))
    with pytest.raises(NoAcceptableMethod):
        server.receive(ClientHandshake("h", 1).start())
    answer = server.data_to_send()
    assert answer == b"\x05\xff" and server.closed
    client = ClientHandshake("h", 1)
    client.start()
    with pytest.raises(Refused, match="none of our authentication methods"):
        client.receive(answer)


def test_bad_credentials() -> None:
    server = ServerHandshake(methods=(USERNAME_PASSWORD,))
    client = ClientHandshake("h", 1, username="ann", password="wrong")
    server.receive(client.start())
    assert server.receive(client.receive(server.data_to_send())) == [UserPass("ann", "wrong")]
    server.accept_credentials(False)
    assert server.closed
    with pytest.raises(Refused, match="rejected the username") as info:
        client.receive(server.data_to_send())
    assert info.value.reply is None


def test_refused_request_and_unknown_address_type() -> None:
    server = ServerHandshake()
    client = ClientHandshake("h", 1)
    server.receive(client.start())
    server.receive(client.receive(server.data_to_send()))
    server.reply(CONNECTION_REFUSED)
    assert server.closed and not server.done
    with pytest.raises(Refused, match="connection refused") as info:
        client.receive(server.data_to_send())
    assert info.value.reply == CONNECTION_REFUSED

    server = ServerHandshake()
    server.receive(b"\x05\x01\x00")
    server.data_to_send()
    with pytest.raises(ProtocolError):
        server.receive(b"\x05\x01\x00\x07")
    assert server.data_to_send() == encode(Reply(ADDRESS_TYPE_NOT_SUPPORTED))


def test_client_rejects_a_method_it_did_not_offer() -> None:
    client = ClientHandshake("h", 1)
    client.start()
    with pytest.raises(ProtocolError, match="not offered"):
        client.receive(b"\x05\x02")


def test_answering_out_of_turn_is_a_bug() -> None:
    server = ServerHandshake()
    with pytest.raises(RuntimeError):
        server.reply(0)
    with pytest.raises(RuntimeError):
        server.accept_credentials(True)


# Hypothesis ------------------------------------------------------------------------

hosts = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,60}", fullmatch=True),
    st.text(min_size=1, max_size=20).filter(lambda h: 0 < len(h.encode()) <= 255),
)
ports = st.integers(0, 65535)
strings = st.text(max_size=20).filter(lambda t: len(t.encode("utf-8", "surrogateescape")) <= 255)
messages = st.one_of(
    st.builds(Greeting, st.lists(st.integers(0, 255), min_size=1, max_size=255).map(tuple)),
    st.builds(MethodChoice, st.integers(0, 255)),
    st.builds(UserPass, strings, strings),
    st.builds(AuthReply, st.integers(0, 255)),
    st.builds(Request, st.integers(0, 255), hosts, ports),
    st.builds(Reply, st.integers(0, 255), hosts, ports),
)
DECODERS: dict[type, Decoder] = {
    Greeting: s5.decode_greeting,
    MethodChoice: s5.decode_method_choice,
    UserPass: s5.decode_userpass,
    AuthReply: s5.decode_auth_reply,
    Request: s5.decode_request,
    Reply: s5.decode_reply,
}


@given(messages, st.binary(max_size=10))
def test_round_trip(message: Any, rest: bytes) -> None:
    wire = encode(message)
    decode = DECODERS[type(message)]
    decoded = decode(wire + rest)
    assert decoded == (message, len(wire))
    assert encode(decoded[0]) == wire
    for i in range(len(wire)):
        assert decode(wire[:i]) is None


@given(st.sampled_from(list(DECODERS.values())), st.binary(max_size=40))
def test_decoders_raise_only_protocol_error(decode: Decoder, data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=30), max_size=6), st.booleans())
def test_server_handshake_fuzz(chunks: list[bytes], auth: bool) -> None:
    server = ServerHandshake(methods=(USERNAME_PASSWORD,) if auth else (NO_AUTH,))
    for chunk in chunks:
        try:
            found = server.receive(chunk)
        except ProtocolError:
            assert server.closed
            return
        for message in found:
            if isinstance(message, UserPass):
                server.accept_credentials(True)
            else:
                server.reply(0)
        server.data_to_send()


@given(st.lists(st.binary(max_size=30), max_size=6))
def test_client_handshake_fuzz(chunks: list[bytes]) -> None:
    client = ClientHandshake("example.com", 80, username="u", password="p")
    client.start()
    for chunk in chunks:
        try:
            client.receive(chunk)
        except (ProtocolError, Refused):
            return
