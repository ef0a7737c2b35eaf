"""Real packets from paho-mqtt, decoded by our codec, and our encoded answers
accepted by paho: a tiny capture server on a loopback socket (plain sockets and a
thread) answers every flow with :func:`protocols.mqtt.encode`, for MQTT 3.1.1
and 5.0."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocols.mqtt import (
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
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
)
from tests.helpers import wait_until

TIMEOUT = 10.0


class CaptureServer:
    """Accepts one MQTT client, decodes what it sends, answers like a broker."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.packets: list[Packet] = []
        self.version: int | None = None
        self.conn: socket.socket | None = None
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def send(self, packet: Packet) -> None:
        assert self.conn is not None and self.version is not None
        with self.lock:
            self.conn.sendall(encode(packet, self.version))

    def received(self, cls: type[Any]) -> list[Any]:
        return [p for p in list(self.packets) if isinstance(p, cls)]

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            self.conn = conn
            decoder = Decoder()
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for packet in decoder.feed(data):
                    self.version = decoder.version
                    self.packets.append(packet)
                    answer = self._answer(packet)
                    if answer is not None:
                        self.send(answer)
                    if isinstance(packet, Disconnect):
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _answer(self, packet: Packet) -> Packet | None:
        v5 = self.version == 5
        if isinstance(packet, Connect):
            props = Properties(receive_maximum=10, topic_alias_maximum=0) if v5 else Properties()
            return ConnAck(False, 0, props)
        if isinstance(packet, Publish) and packet.qos == 1:
            assert packet.packet_id is not None
            return PubAck(packet.packet_id)
        if isinstance(packet, Publish) and packet.qos == 2:
            assert packet.packet_id is not None
            return PubRec(packet.packet_id)
        if isinstance(packet, PubRel):
            return PubComp(packet.packet_id)
        if isinstance(packet, PubRec):  # the client's answer to our QoS 2 PUBLISH
            return PubRel(packet.packet_id)
        if isinstance(packet, Subscribe):
            codes = tuple(s.qos for s in packet.subscriptions)
            return SubAck(packet.packet_id, codes)
        if isinstance(packet, Unsubscribe):
            codes = tuple(0 for _ in packet.topic_filters) if v5 else ()
            return UnsubAck(packet.packet_id, codes)
        if isinstance(packet, PingReq):
            return PingResp()
        return None


@contextmanager
def capture_server() -> Iterator[CaptureServer]:
    server = CaptureServer()
    server.thread.start()
    try:
        yield server
    finally:
        if server.conn is not None:
            server.conn.close()
        server.listener.close()
        server.thread.join(TIMEOUT)


@contextmanager
def paho_client(protocol: int, client_id: str) -> Iterator[paho.Client]:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    try:
        yield client
    finally:
        client.loop_stop()


def paho_props(packet_type: int, **values: Any) -> PahoProperties:
    props = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


@pytest.mark.parametrize("version", [4, 5])
def test_paho_client_flows_decode_and_our_answers_satisfy_paho(version: int) -> None:
    v5 = version == 5
    protocol = paho.MQTTv5 if v5 else paho.MQTTv311
    events: dict[str, Any] = {}
    messages: list[paho.MQTTMessage] = []
    with capture_server() as server, paho_client(protocol, f"paho-{version}") as client:
        client.on_connect = lambda c, u, flags, rc, props: events.setdefault("connect", rc)
        client.on_subscribe = lambda c, u, mid, rcs, props: events.setdefault("suback", rcs)
        client.on_unsubscribe = lambda c, u, mid, rcs, props: events.setdefault("unsuback", mid)
        client.on_message = lambda c, u, msg: messages.append(msg)
        client.username_pw_set("alice", "s3cret")
        will_props = paho_props(PacketTypes.WILLMESSAGE, WillDelayInterval=5) if v5 else None
        client.will_set("status/paho", b"gone", qos=1, retain=True, properties=will_props)
        connect_props = (
            paho_props(PacketTypes.CONNECT, SessionExpiryInterval=30, ReceiveMaximum=20)
            if v5
            else None
        )
        client.connect("127.0.0.1", server.port, keepalive=1, properties=connect_props)
        client.loop_start()
        wait_until(lambda: "connect" in events, "CONNACK accepted by paho")
        assert events["connect"] == 0

        # Subscribe, with v5 options.
        if v5:
            options = SubscribeOptions(
                qos=2, noLocal=True, retainAsPublished=True, retainHandling=1
            )
            sub_props = paho_props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7)
            client.subscribe(
                [("cmd/#", options), ("cfg/+", SubscribeOptions(qos=1))], properties=sub_props
            )
        else:
            client.subscribe([("cmd/#", 2), ("cfg/+", 1)])
        wait_until(lambda: "suback" in events, "SUBACK")

        # Publish at every QoS; paho completes the QoS 1 and 2 flows with our acks.
        pub_props = (
            paho_props(
                PacketTypes.PUBLISH,
                ContentType="text/plain",
                UserProperty=[("k", "v"), ("k", "w")],
                MessageExpiryInterval=60,
            )
            if v5
            else None
        )
        infos = [
            client.publish(f"data/q{q}", f"payload {q}".encode(), qos=q, properties=pub_props)
            for q in (0, 1, 2)
        ]
        for info in infos:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()

        # Our PUBLISH packets at every QoS reach paho's on_message.
        for q in (0, 1, 2):
            server.send(Publish(f"cmd/q{q}", b"to client", q, packet_id=100 + q if q else None))
        wait_until(lambda: len(messages) == 3, "three messages delivered to paho")
        wait_until(lambda: server.received(PubComp), "PUBCOMP from paho")

        client.unsubscribe(["cmd/#", "cfg/+"])
        wait_until(lambda: "unsuback" in events, "UNSUBACK")
        wait_until(lambda: server.received(PingReq), "a keep-alive PINGREQ")
        client.disconnect()
        server.thread.join(TIMEOUT)

    assert server.error is None, server.error
    assert sorted((m.topic, m.payload, m.qos) for m in messages) == [
        (f"cmd/q{q}", b"to client", q) for q in (0, 1, 2)
    ]
    assert [type(p) for p in server.received(PubAck)] == [PubAck]  # for our QoS 1
    assert [p.packet_id for p in server.received(PubRec)] == [102]

    (connect,) = server.received(Connect)
    assert connect.protocol_version == version
    assert connect.client_id == f"paho-{version}"
    assert connect.keep_alive == 1
    assert (connect.username, connect.password) == ("alice", b"s3cret")
    assert connect.will is not None
    assert (connect.will.topic, connect.will.payload) == ("status/paho", b"gone")
    assert (connect.will.qos, connect.will.retain) == (1, True)
    if v5:
        assert connect.will.properties.will_delay_interval == 5
        assert connect.properties.session_expiry_interval == 30
        assert connect.properties.receive_maximum == 20

    (subscribe,) = server.received(Subscribe)
    if v5:
        assert subscribe.subscriptions == (
            Subscription("cmd/#", 2, no_local=True, retain_as_published=True, retain_handling=1),
            Subscription("cfg/+", 1),
        )
        assert subscribe.properties.subscription_identifiers == (7,)
    else:
        assert subscribe.subscriptions == (Subscription("cmd/#", 2), Subscription("cfg/+", 1))

    publishes = [p for p in server.received(Publish)]
    assert [(p.topic, p.payload, p.qos) for p in publishes] == [
        (f"data/q{q}", f"payload {q}".encode(), q) for q in (0, 1, 2)
    ]
    assert publishes[0].packet_id is None and all(p.packet_id for p in publishes[1:])
    if v5:
        for p in publishes:
            assert p.properties.content_type == "text/plain"
            assert p.properties.user_properties == (("k", "v"), ("k", "w"))
            assert p.properties.message_expiry_interval == 60
    (pubrel,) = server.received(PubRel)
    assert pubrel.packet_id == publishes[2].packet_id
    (unsubscribe,) = server.received(Unsubscribe)
    assert unsubscribe.topic_filters == ("cmd/#", "cfg/+")
    assert isinstance(server.packets[-1], Disconnect)


@pytest.mark.parametrize(("version", "code"), [(4, 5), (5, 0x87)])
def test_paho_reports_our_refusing_connack(version: int, code: int) -> None:
    """A CONNACK refusal we encode is what paho reports as the reason."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            decoder = Decoder()
            while not decoder.feed(conn.recv(4096)):
                pass
            conn.sendall(encode(ConnAck(False, code), version))

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    result: dict[str, Any] = {}
    protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
    try:
        with paho_client(protocol, "refused") as client:
            client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc)
            client.connect("127.0.0.1", port)
            client.loop_start()
            wait_until(lambda: "rc" in result, "paho's on_connect")
            client.disconnect()
    finally:
        listener.close()
        thread.join(TIMEOUT)
    rc = result["rc"]
    assert rc.is_failure
    assert rc.getName() == "Not authorized"  # paho maps 3.1.1's return code 5 to it too
