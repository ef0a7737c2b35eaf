"""What a real mosquitto sends (CONNACK, SUBACK, PUBLISH, PUBACK, PUBREC, PUBREL,
PUBCOMP, UNSUBACK, PINGRESP, DISCONNECT) decodes with our codec, and mosquitto
accepts the packets we encode, in MQTT 3.1.1 and 5.0."""

from __future__ import annotations

import pytest

from protocols.mqtt import (
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    PingReq,
    PingResp,
    Properties,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    encode,
    error_answer,
)

from .mqtt_broker import mosquitto, needs_mosquitto, raw_client

pytestmark = needs_mosquitto


@pytest.mark.parametrize("version", [4, 5])
def test_full_session_with_mosquitto(version: int) -> None:
    v5 = version == 5
    with mosquitto() as port, raw_client(port, version) as client:
        props = Properties(session_expiry_interval=0, receive_maximum=16) if v5 else Properties()
        client.send(Connect(f"codec-{version}", version, keep_alive=30, properties=props))
        connack = client.receive()
        assert isinstance(connack, ConnAck) and connack.reason_code == 0
        assert not connack.session_present

        # A retained message first, so the subscription gets it.
        client.send(Publish("codec/retained", b"kept", qos=1, retain=True, packet_id=1))
        # 5.0: 0x10 No matching subscribers (the message is still retained).
        assert client.receive() == PubAck(1, 0x10 if v5 else 0)

        sub_props = Properties(subscription_identifiers=(42,)) if v5 else Properties()
        client.send(Subscribe(2, (Subscription("codec/#", 2),), sub_props))
        suback = client.receive()
        assert isinstance(suback, SubAck) and suback.packet_id == 2
        assert suback.reason_codes == (2,)
        retained = client.receive()
        assert isinstance(retained, Publish)
        assert (retained.topic, retained.payload, retained.retain) == (
            "codec/retained",
            b"kept",
            True,
        )
        if v5:
            assert retained.properties.subscription_identifiers == (42,)
        if retained.qos:
            assert retained.packet_id is not None
            client.send(PubAck(retained.packet_id))

        # QoS 2 both ways: our PUBLISH, and mosquitto delivering it back to us.
        user = Properties(user_properties=(("origin", "codec"),)) if v5 else Properties()
        client.send(Publish("codec/q2", b"exactly once", qos=2, packet_id=3, properties=user))
        seen: list[object] = []
        delivered = None
        while True:
            packet = client.receive()
            seen.append(type(packet))
            if isinstance(packet, PubRec):
                assert packet.packet_id == 3
                client.send(PubRel(3))
            elif isinstance(packet, PubComp):
                assert packet.packet_id == 3
            elif isinstance(packet, Publish):
                delivered = packet
                assert packet.packet_id is not None
                client.send(PubRec(packet.packet_id))
            elif isinstance(packet, PubRel):
                assert delivered is not None and packet.packet_id == delivered.packet_id
                client.send(PubComp(packet.packet_id))
                break
        assert PubComp in seen
        assert delivered is not None
        assert (delivered.topic, delivered.payload, delivered.qos) == (
            "codec/q2",
            b"exactly once",
            2,
        )
        if v5:
            assert delivered.properties.user_properties == (("origin", "codec"),)

        client.send(PingReq())
        assert client.receive() == PingResp()

        client.send(Unsubscribe(4, ("codec/#",)))
        unsuback = client.receive()
        assert isinstance(unsuback, UnsubAck) and unsuback.packet_id == 4
        assert unsuback.reason_codes == ((0,) if v5 else ())

        client.send(Disconnect())
        assert client.read_to_eof() == b""


def test_mosquitto_sends_a_v5_disconnect_we_decode() -> None:
    """A wildcard in a PUBLISH topic is malformed: mosquitto answers DISCONNECT
    0x81, which decodes with our codec and is what our error_answer gives."""
    bad = b"\x30\x03\x00\x01+"
    with mosquitto() as port, raw_client(port, 5) as client:
        client.send(Connect("wild", 5))
        assert isinstance(client.receive(), ConnAck)
        client.send_bytes(bad)
        theirs = Decoder(version=5).feed(client.read_to_eof())
    ours = Decoder()
    ours.feed(encode(Connect("wild", 5), 5))
    with pytest.raises(ProtocolError) as info:
        ours.feed(bad)
    assert error_answer(info.value) == (theirs[0], 5)
    assert theirs == [Disconnect(0x81)]


def test_mosquitto_refuses_an_unknown_protocol_level_as_we_do() -> None:
    """CONNECT with protocol level 6: mosquitto's CONNACK is the one our
    error_answer gives (3.1.1 form, return code 1)."""
    body = b"\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c"
    wire = b"\x10" + bytes((len(body),)) + body
    with mosquitto() as port, raw_client(port, 4) as client:
        client.send_bytes(wire)
        theirs = client.read_to_eof()
    with pytest.raises(ProtocolError) as info:
        Decoder().feed(wire)
    answer = error_answer(info.value)
    assert answer is not None
    assert theirs == encode(*answer)
