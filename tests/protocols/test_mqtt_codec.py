"""The MQTT codec, sans-IO: round trips of every packet type in both versions,
malformed packets and the reason each one gets, limits, framing, fuzzing."""

from __future__ import annotations

import importlib
import re
import textwrap
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.mqtt import (
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Framer,
    Packet,
    PingReq,
    Properties,
    ProtocolError,
    PubAck,
    Publish,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
    error_answer,
    packet_end,
)
from protocols.mqtt.topics import TopicPattern, topic_matches

from .mqtt_strategies import client_packets, connects, server_packets, topic_filters, topic_names

VERSIONS = [4, 5]
FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def feed_split(decoder: Decoder, data: bytes, cuts: list[int]) -> list[Packet]:
    """Feed ``data`` in pieces cut at ``cuts``; every packet that came out."""
    out: list[Packet] = []
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        out += decoder.feed(data[last:cut])
        last = cut
    return out


def connect_bytes(version: int) -> bytes:
    return encode(Connect(client_id="c", protocol_version=version), version)


# Round trips ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@FUZZ
@given(data=st.data())
def test_client_packets_round_trip(version: int, data: st.DataObject) -> None:
    connect = data.draw(connects(version))
    packets = data.draw(st.lists(client_packets(version), max_size=6))
    wire = encode(connect, version) + b"".join(encode(p, version) for p in packets)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    decoder = Decoder()
    assert feed_split(decoder, wire, cuts) == [connect, *packets]
    assert decoder.version == version


@pytest.mark.parametrize("version", VERSIONS)
@FUZZ
@given(data=st.data())
def test_server_packets_round_trip(version: int, data: st.DataObject) -> None:
    packets = data.draw(st.lists(server_packets(version), min_size=1, max_size=6))
    wire = b"".join(encode(p, version) for p in packets)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    assert feed_split(Decoder(version=version), wire, cuts) == packets


def test_every_packet_type_is_generated() -> None:
    """The round trips above cover all fifteen types (a guard against a strategy
    silently losing one)."""
    seen: set[int] = set()

    @settings(max_examples=400, database=None)
    @given(st.one_of(client_packets(5), server_packets(5), connects(5)))
    def collect(packet: Packet) -> None:
        seen.add(packet.type)

    collect()
    assert seen == set(range(1, 16))


def test_large_publish_split_in_many_chunks() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = connect_bytes(5) + encode(Publish("big/one", payload, qos=1, packet_id=9), 5)
    decoder = Decoder()
    out: list[Packet] = []
    for i in range(0, len(wire), 1000):
        out += decoder.feed(wire[i : i + 1000])
    assert len(out) == 2 and isinstance(out[1], Publish) and out[1].payload == payload


# Malformed packets and their reason codes --------------------------------------


def after_connect(version: int, body: bytes) -> ProtocolError:
    """The error from feeding ``body`` after a valid CONNECT."""
    decoder = Decoder()
    decoder.feed(connect_bytes(version))
    with pytest.raises(ProtocolError) as info:
        decoder.feed(body)
    return info.value


MALFORMED = [
    # (bytes after CONNECT, reason code (None: 0x81 in 3.1.1, 0x82 in 5.0), message, id).
    # SUBSCRIBE and UNSUBSCRIBE bodies get an empty property block in 5.0.
    (b"\x60\x02\x00\x01", 0x81, "PUBREL with fixed-header flags 0000", "PUBREL flags"),
    (b"\x80\x06\x00\x01\x00\x01a\x00", 0x81, "flags 0000", "SUBSCRIBE flags"),
    (b"\xa0\x05\x00\x01\x00\x01a", 0x81, "flags 0000", "UNSUBSCRIBE flags"),
    (b"\x41\x02\x00\x01", 0x81, "PUBACK with fixed-header flags 0001", "PUBACK flags"),
    (b"\xc1\x00", 0x81, "PINGREQ with fixed-header flags", "PINGREQ flags"),
    (b"\x36\x05\x00\x01a\x00\x01", 0x81, "QoS 3", "PUBLISH QoS 3"),
    (b"\x38\x03\x00\x01a", 0x81, "DUP and QoS 0", "DUP with QoS 0"),
    (b"\x32\x03\x00\x01a", 0x81, "truncated PUBLISH packet identifier", "no packet id"),
    (b"\x32\x05\x00\x01a\x00\x00", 0x81, "packet identifier 0", "packet id 0"),
    (b"\x30\x03\x00\x01+", 0x81, "invalid character", "'+' in PUBLISH topic"),
    (b"\x30\x05\x00\x03a/#", 0x81, "invalid character", "'#' in PUBLISH topic"),
    (b"\x30\x03\x00\x01\x00", 0x81, "invalid character", "U+0000 in a topic"),
    (b"\x30\x05\x00\x03\xed\xa0\x80", 0x81, "not valid UTF-8", "encoded surrogate"),
    (b"\x30\x04\x00\x02\xc3\x28", 0x81, "not valid UTF-8", "invalid UTF-8"),
    (b"\x30\xff\xff\xff\xff\x01", 0x81, "longer than four bytes", "remaining length > 4"),
    (b"\x30\x80\x00", 0x81, "not minimally encoded", "remaining length not minimal"),
    (b"\x00\x00", 0x81, "reserved packet type 0", "packet type 0"),
    (b"\x10\x00", 0x82, "a second CONNECT", "second CONNECT"),
    (b"\x20\x02\x00\x00", 0x82, "not sent in this direction", "CONNACK from a client"),
    (b"\x82\x02\x00\x01", None, "without a subscription", "SUBSCRIBE without subscriptions"),
    (b"\x82\x06\x00\x01\x00\x01#\x03", 0x81, "QoS 3", "subscription QoS 3"),
    (b"\x82\x08\x00\x01\x00\x03a#b\x00", 0x81, "whole last level", "'#' inside a level"),
    (b"\x82\x08\x00\x01\x00\x03#/a\x00", 0x81, "whole last level", "'#' not last"),
    (b"\x82\x08\x00\x01\x00\x03a+/\x00", 0x81, "whole level", "'+' sharing a level"),
    (b"\x82\x05\x00\x01\x00\x01a", 0x81, "without options", "subscription without options"),
    (b"\xa2\x02\x00\x01", None, "without a topic filter", "UNSUBSCRIBE without filters"),
    (b"\xa2\x05\x00\x01\x00\x01#", None, "", "valid UNSUBSCRIBE (control)"),
]


def for_version(body: bytes, version: int) -> bytes:
    """``body`` with an empty property block after the packet id of a 5.0
    SUBSCRIBE/UNSUBSCRIBE (one-byte remaining lengths only)."""
    if version == 5 and body[0] in (0x82, 0xA2):
        return bytes((body[0], body[1] + 1)) + body[2:4] + b"\x00" + body[4:]
    return body


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("body", "code", "match", "why"), MALFORMED, ids=[m[3] for m in MALFORMED])
def test_malformed_after_connect(
    version: int, body: bytes, code: int | None, match: str, why: str
) -> None:
    body = for_version(body, version)
    if not match:  # the control case decodes
        decoder = Decoder()
        decoder.feed(connect_bytes(version))
        assert decoder.feed(body) == [Unsubscribe(1, ("#",))]
        return
    error = after_connect(version, body)
    expected = code if code is not None else (0x82 if version == 5 else 0x81)
    assert (error.reason_code, match in error.message) == (expected, True), error
    assert error.version == version and not error.in_connect


def test_acknowledgement_lengths() -> None:
    assert after_connect(4, b"\x40\x03\x00\x01\x00").message == "PubAck longer than 2 bytes"
    decoder = Decoder()
    decoder.feed(connect_bytes(5))
    assert decoder.feed(b"\x40\x03\x00\x01\x00") == [PubAck(1, 0)]  # fine in 5.0


V5_ONLY = [
    (b"\x82\x07\x00\x01\x00\x00\x01a\xc0", 0x81, "reserved bits", "options reserved bits"),
    (b"\x82\x07\x00\x01\x00\x00\x01a\x30", 0x81, "Retain Handling 3", "Retain Handling 3"),
    (b"\x30\x04\x00\x00\x00\x00", 0x82, "without a topic alias", "empty topic, no alias"),
    (b"\x30\x07\x00\x01a\x03\x23\x00\x00", 0x82, "topic_alias must not be 0", "alias 0"),
    (b"\x30\x08\x00\x01a\x04\x01\x00\x01\x00", 0x82, "given twice", "property twice"),
    (b"\x30\x06\x00\x01a\x02\x01\x02", 0x81, "must not be 2", "payload format 2"),
    (b"\x30\x06\x00\x01a\x02\x7f\x00", 0x81, "unknown property", "unknown property"),
    (b"\x30\x07\x00\x01a\x03\x11\x00\x00", 0x81, "not allowed", "property not allowed"),
    (b"\x30\x06\x00\x01a\x05\x01\x00", 0x81, "past the end", "property block too long"),
    (b"\x40\x03\x00\x01\x05", 0x81, "invalid PubAck reason code", "PUBACK reason code"),
    (b"\xe0\x01\x05", 0x81, "invalid DISCONNECT reason code", "DISCONNECT reason code"),
    (
        b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00",
        0x82,
        "subscription identifier given twice",
        "two subscription identifiers in SUBSCRIBE",
    ),
    (b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", 0x82, "must not be 0", "sub id 0"),
    (b"\x82\x0f\x00\x01\x00\x00\x09$share/ga\x00", 0x81, "shared", "share without filter"),
    (b"\x82\x10\x00\x01\x00\x00\x0a$share/+/a\x00", 0x81, "shared", "'+' in a share name"),
    (b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04", 0x82, "No Local", "No Local, shared"),
]


@pytest.mark.parametrize(("body", "code", "match", "why"), V5_ONLY, ids=[m[3] for m in V5_ONLY])
def test_malformed_v5(body: bytes, code: int, match: str, why: str) -> None:
    error = after_connect(5, body)
    assert (error.reason_code, match in error.message) == (code, True), error
    assert error_answer(error) == (Disconnect(code), 5)


def test_v311_specifics() -> None:
    assert after_connect(4, b"\xf0\x00").reason_code == 0x81  # AUTH is reserved in 3.1.1
    assert after_connect(4, b"\x82\x06\x00\x01\x00\x01a\x04").reason_code == 0x81  # No Local
    assert after_connect(4, b"\xe0\x01\x00").reason_code == 0x81  # DISCONNECT with a body
    assert error_answer(after_connect(4, b"\x00\x00")) is None  # 3.1.1: just close


def test_shared_subscriptions() -> None:
    shared = Subscribe(1, (Subscription("$share/g/a/+", 1),))
    for version in VERSIONS:
        decoder = Decoder()
        decoder.feed(connect_bytes(version))
        assert decoder.feed(encode(shared, version)) == [shared]
    with pytest.raises(ValueError):
        encode(Subscribe(1, (Subscription("$share/g/a", no_local=True),)), 5)
    # In 3.1.1 "$share" means nothing special.
    decoder = Decoder()
    decoder.feed(connect_bytes(4))
    assert decoder.feed(encode(Subscribe(1, (Subscription("$share/x"),)), 4))


def test_user_properties_may_repeat_and_keep_order() -> None:
    props = Properties(user_properties=(("a", "1"), ("a", "2"), ("b", "")))
    wire = connect_bytes(5) + encode(Publish("t", b"x", properties=props), 5)
    assert Decoder().feed(wire)[1] == Publish("t", b"x", properties=props)


def connect_error(wire: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        Decoder().feed(wire)
    assert info.value.in_connect
    return info.value


def connect_body(flags: int, level: int = 4, tail: bytes = b"\x00\x01c") -> bytes:
    body = b"\x00\x04MQTT" + bytes((level, flags)) + b"\x00\x3c"
    if level == 5:
        body += b"\x00"
    body += tail
    return b"\x10" + bytes((len(body),)) + body


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (0x03, "reserved flag"),
        (0x08, "will QoS without will"),
        (0x20, "will retain without will"),
        (0x1C, "will QoS 3"),
    ],
)
@pytest.mark.parametrize("level", VERSIONS)
def test_connect_flags(flags: int, why: str, level: int) -> None:
    error = connect_error(connect_body(flags, level))
    assert error.reason_code == 0x81 and error.version == level
    answer = error_answer(error)
    assert answer == ((ConnAck(reason_code=0x81), 5) if level == 5 else None)


def test_password_without_username() -> None:
    wire = connect_body(0x40, 4, b"\x00\x01c\x00\x02pw")
    assert connect_error(wire).reason_code == 0x81
    # MQTT 5.0 allows a password without a user name.
    connect = Decoder().feed(connect_body(0x40, 5, b"\x00\x01c\x00\x02pw"))[0]
    assert connect == Connect("c", 5, password=b"pw", clean_start=False, keep_alive=60)


@pytest.mark.parametrize("level", [3, 6, 0])
def test_unsupported_protocol_level(level: int) -> None:
    error = connect_error(connect_body(0x02, level))
    assert error.reason_code == 0x84
    assert error_answer(error) == (ConnAck(reason_code=1), 4)
    assert encode(ConnAck(reason_code=1), 4) == b"\x20\x02\x00\x01"


def test_mqtt_3_1_is_unsupported() -> None:
    body = b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x01c"
    assert connect_error(b"\x10" + bytes((len(body),)) + body).reason_code == 0x84


def test_wrong_protocol_name_and_first_packet() -> None:
    body = b"\x00\x04MQTX\x04\x02\x00\x3c\x00\x01c"
    assert connect_error(b"\x10" + bytes((len(body),)) + body).reason_code == 0x81
    with pytest.raises(ProtocolError) as info:
        Decoder().feed(encode(PingReq(), 4))
    assert info.value.reason_code == 0x82 and error_answer(info.value) is None


def test_will_topic_must_be_a_topic_name() -> None:
    connect = Connect("c", 5, will=Will("ok"))
    wire = bytearray(encode(connect, 5))
    will_topic_at = wire.index(b"\x00\x02ok")
    wire[will_topic_at + 2 : will_topic_at + 4] = b"o#"
    assert connect_error(bytes(wire)).reason_code == 0x81


def test_packet_too_large_before_the_body_arrives() -> None:
    decoder = Decoder(max_packet_size=100)
    decoder.feed(connect_bytes(5))
    header = b"\x30\xe8\x07"  # a PUBLISH of 1000 bytes, header only
    with pytest.raises(ProtocolError) as info:
        decoder.feed(header)
    assert info.value.reason_code == 0x95
    assert error_answer(info.value) == (Disconnect(0x95), 5)
    exactly = encode(Publish("t", b"x" * 94), 5)
    assert len(exactly) == 100
    decoder = Decoder(max_packet_size=100)
    assert len(decoder.feed(connect_bytes(5) + exactly)) == 2


def test_packets_before_an_error_are_kept_and_the_decoder_stays_dead() -> None:
    decoder = Decoder()
    good = connect_bytes(4) + encode(PingReq(), 4)
    with pytest.raises(ProtocolError) as info:
        decoder.feed(good + b"\x00\x00")
    assert [p.type for p in info.value.packets] == [1, 12]
    with pytest.raises(ProtocolError):
        decoder.feed(encode(PingReq(), 4))


def test_client_side_direction() -> None:
    with pytest.raises(ProtocolError) as info:
        Decoder(version=4).feed(encode(Subscribe(1, (Subscription("a"),)), 4))
    assert info.value.reason_code == 0x82
    assert Decoder(version=4).feed(b"\x20\x02\x01\x00") == [ConnAck(True, 0)]
    with pytest.raises(ProtocolError):
        Decoder(version=4).feed(b"\x20\x02\x01\x05")  # session present with a refusal


def test_decoder_arguments() -> None:
    for bad in (
        dict(version=3),
        dict(side="client"),
        dict(side="both", version=4),
        dict(max_packet_size=1),
    ):
        with pytest.raises(ValueError):
            Decoder(**bad)  # type: ignore[arg-type]


# Encoding refuses invalid packets -----------------------------------------------


@pytest.mark.parametrize(
    ("packet", "version"),
    [
        (Publish("a/+"), 4),
        (Publish("a", qos=1), 4),  # no packet id
        (Publish("a", packet_id=3), 4),  # QoS 0 with an id
        (Publish("a", qos=3, packet_id=1), 4),
        (Publish("a", dup=True), 4),
        (Publish("a", properties=Properties(topic_alias=1)), 4),  # 5.0 only
        (Publish("", properties=Properties(content_type="x")), 5),
        (Publish("a", properties=Properties(session_expiry_interval=1)), 5),
        (PubAck(0), 5),
        (PubAck(1, 0x92), 5),
        (PubAck(1, 0x80), 4),
        (PubRel(1, properties=Properties(topic_alias=1)), 5),
        (Subscribe(1, ()), 4),
        (Subscribe(1, (Subscription("a#"),)), 4),
        (Subscribe(1, (Subscription("a", no_local=True),)), 4),
        (Subscribe(1, (Subscription("a", retain_handling=3),)), 5),
        (SubAck(1, (3,)), 4),
        (UnsubAck(1, (0,)), 4),
        (UnsubAck(1), 5),
        (Unsubscribe(1, ()), 5),
        (Connect("c", 5), 4),
        (Connect("c", 4, password=b"x"), 4),
        (Connect("\x00", 4), 4),
        (Connect("\ud800", 4), 4),
        (Connect("c", 4, will=Will("a/#")), 4),
        (ConnAck(True, 5), 4),
        (ConnAck(False, 6), 4),
        (Disconnect(0x81), 4),
        (Disconnect(0x05), 5),
        (Publish("a", properties=Properties(receive_maximum=0)), 5),
    ],
)
def test_encode_refuses(packet: Packet, version: int) -> None:
    with pytest.raises(ValueError):
        encode(packet, version)


def test_encode_known_bytes() -> None:
    # Fixed points from the standard's own layouts.
    assert encode(PingReq(), 4) == b"\xc0\x00"
    assert encode(PubRel(10), 4) == b"\x62\x02\x00\x0a"
    assert encode(PubAck(10), 5) == b"\x40\x02\x00\x0a"  # reason 0, no properties: short form
    assert encode(Disconnect(), 5) == b"\xe0\x00"
    assert encode(Publish("a", b"", qos=0), 4) == b"\x30\x03\x00\x01a"
    assert encode(Publish("a", b"x" * 200), 4)[:3] == b"\x30\xcb\x01"  # two-byte length


# Fuzzing: only packets or ProtocolError -----------------------------------------


def decode_all(decoder: Decoder, data: bytes, cuts: list[int]) -> None:
    try:
        feed_split(decoder, data, cuts)
    except ProtocolError as exc:
        assert 0x80 <= exc.reason_code <= 0xA2


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_fuzz_arbitrary_bytes_server_side(data: bytes, cuts: list[int]) -> None:
    decode_all(Decoder(max_packet_size=200), data, cuts)


@pytest.mark.parametrize("version", VERSIONS)
@FUZZ
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5))
def test_fuzz_arbitrary_bytes(version: int, data: bytes, cuts: list[int]) -> None:
    decode_all(Decoder(version=version), data, cuts)
    decoder = Decoder()
    decoder.feed(connect_bytes(version))
    decode_all(decoder, data, cuts)


def mutate(wire: bytes, how: st.DataObject) -> bytes:
    out = bytearray(wire)
    for _ in range(how.draw(st.integers(1, 4))):
        op = how.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        at = how.draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << how.draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = how.draw(st.integers(0, 255))
        elif op == "insert":
            out.insert(at, how.draw(st.integers(0, 255)))
        elif out:
            del out[at]
    return bytes(out)


@pytest.mark.parametrize("version", VERSIONS)
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_client_packets(version: int, data: st.DataObject) -> None:
    packets = data.draw(st.lists(client_packets(version), min_size=1, max_size=3))
    wire = encode(data.draw(connects(version)), version)
    wire += b"".join(encode(p, version) for p in packets)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=5))
    decode_all(Decoder(), mutate(wire, data), cuts)


@pytest.mark.parametrize("version", VERSIONS)
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_server_packets(version: int, data: st.DataObject) -> None:
    packets = data.draw(st.lists(server_packets(version), min_size=1, max_size=3))
    wire = b"".join(encode(p, version) for p in packets)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=5))
    decode_all(Decoder(version=version), mutate(wire, data), cuts)


@FUZZ
@given(data=st.data())
def test_decoded_mutations_encode_back(data: st.DataObject) -> None:
    """Whatever the decoder accepts, the encoder can write again, identically
    decodable: decode is never more lenient than encode."""
    version = data.draw(st.sampled_from(VERSIONS))
    packets = data.draw(st.lists(server_packets(version), min_size=1, max_size=3))
    wire = mutate(b"".join(encode(p, version) for p in packets), data)
    try:
        decoded = Decoder(version=version).feed(wire)
    except ProtocolError:
        return
    again = b"".join(encode(p, version) for p in decoded)
    assert Decoder(version=version).feed(again) == decoded


@FUZZ
@given(data=st.data())
def test_decoded_client_mutations_encode_back(data: st.DataObject) -> None:
    """The same for what a server-side decoder accepts, CONNECT included."""
    version = data.draw(st.sampled_from(VERSIONS))
    packets = data.draw(st.lists(client_packets(version), max_size=3))
    wire = encode(data.draw(connects(version)), version)
    wire = mutate(wire + b"".join(encode(p, version) for p in packets), data)
    decoder = Decoder()
    try:
        decoded = decoder.feed(wire)
    except ProtocolError:
        return
    if not decoded:
        return
    assert decoder.version is not None
    again = b"".join(encode(p, decoder.version) for p in decoded)
    assert Decoder().feed(again) == decoded


# Framer and topics ----------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_framer_finds_every_boundary(data: st.DataObject) -> None:
    packets = data.draw(st.lists(server_packets(5), min_size=1, max_size=5))
    encoded = [encode(p, 5) for p in packets]
    wire = b"".join(encoded)
    boundaries = {0}
    total = 0
    for e in encoded:
        total += len(e)
        boundaries.add(total)
    framer = Framer()
    fed = 0
    for size in [*data.draw(st.lists(st.integers(1, 40), max_size=30)), len(wire)]:
        chunk = wire[fed : fed + size]
        framer.feed(chunk)
        fed += len(chunk)
        assert framer.at_boundary == (fed in boundaries)


@FUZZ
@given(packets=st.lists(server_packets(5), min_size=1, max_size=5), cut=st.integers(0, 10**6))
def test_packet_end_finds_each_whole_packet(packets: list[Packet], cut: int) -> None:
    encoded = [encode(p, 5) for p in packets]
    wire = b"".join(encoded)
    pos = 0
    for e in encoded:
        assert packet_end(wire, pos) == pos + len(e)
        pos += len(e)
    # Any proper prefix of the last packet is not whole yet.
    start = len(wire) - len(encoded[-1])
    short = wire[: start + cut % len(encoded[-1])]
    assert packet_end(short, start) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
        (b"\x30\x80\x00", "not minimally encoded"),
    ],
)
def test_packet_end_refuses_a_bad_remaining_length(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        packet_end(data, 0)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("+/+", "/x", True),
        ("a/+/c", "a//c", True),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


@pytest.mark.parametrize(
    ("pattern", "requested", "expected"),
    [
        ("a/#", "a/+/c", True),
        ("a/#", "#", False),
        ("a/+", "a/#", False),
        ("a/+", "a/+", True),
        ("+/b", "x/b", True),
        ("#", "$SYS/#", False),
        ("a/#", "$share/g/a/b", True),
        ("a/b", "a/b", True),
        ("a/b", "a/+", False),
    ],
)
def test_topic_pattern_covers(pattern: str, requested: str, expected: bool) -> None:
    assert TopicPattern(pattern).covers(requested) is expected


@pytest.mark.parametrize(
    ("pattern", "requested", "expected"),
    [
        ("a/+/c", "a/b/+", True),
        ("a/b", "a/c", False),
        ("a/#", "a", True),
        ("a/b/c", "a/b", False),
        ("a/+", "+/b", True),
        ("#", "$SYS/x", False),
        ("$SYS/#", "+/x", False),
        ("$SYS/x", "$SYS/+", True),
        ("secret/#", "$share/g/+/x", True),
    ],
)
def test_topic_pattern_overlaps(pattern: str, requested: str, expected: bool) -> None:
    assert TopicPattern(pattern).overlaps(requested) is expected


@given(topic_filters, topic_filters, topic_names)
def test_overlap_is_symmetric_and_witnessed(a: str, b: str, topic: str) -> None:
    """A topic both match proves an overlap; overlap does not depend on order."""
    pa, pb = TopicPattern(a), TopicPattern(b)
    assert pa.overlaps(b) == pb.overlaps(a)
    if pa.matches(topic) and pb.matches(topic):
        assert pa.overlaps(b)
    if pa.covers(b):
        assert pa.overlaps(b)


def test_topic_pattern_refuses_bad_filters() -> None:
    with pytest.raises(ValueError):
        TopicPattern("a/#/b")


# Docstrings run ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["protocols.mqtt", "protocols.mqtt.topics", "protocols.mqtt.codec"]
)
def test_docstring_examples_run(module: str) -> None:
    doc = importlib.import_module(module).__doc__ or ""
    found = re.search(r"::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), f"{module} example", "exec"), {})


def test_properties_repr_shows_what_is_set() -> None:
    assert repr(Properties(topic_alias=3)) == "Properties(topic_alias=3)"
    assert not Properties() and Properties(topic_alias=3)


def test_replace_keeps_packets_immutable() -> None:
    p = Publish("a", b"x")
    q: Any = replace(p, topic="b")
    assert p.topic == "a" and q.topic == "b"
    with pytest.raises(AttributeError):
        p.topic = "c"  # type: ignore[misc]
