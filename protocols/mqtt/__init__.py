"""A sans-IO MQTT 3.1.1 and 5.0 codec: bytes in, typed packets out, and back.

::

    from protocols.mqtt import Connect, Decoder, Publish, encode

    wire = encode(Connect(client_id="c1", protocol_version=5), 5)
    wire += encode(Publish("sensors/t", b"21.5", qos=1, packet_id=1), 5)
    decoder = Decoder()                  # server side: learns the version from CONNECT
    connect, publish = decoder.feed(wire)
    assert decoder.version == 5 and publish.payload == b"21.5"

Packets are in :mod:`~protocols.mqtt.packets`, properties in
:mod:`~protocols.mqtt.properties`, the decoder and encoder in
:mod:`~protocols.mqtt.codec`, topic matching in :mod:`~protocols.mqtt.topics`.
"""

from .codec import (
    CLIENT_PACKETS,
    CONNACK_REASON_CODES,
    MAX_PACKET_SIZE,
    SERVER_PACKETS,
    Decoder,
    Framer,
    encode,
    error_answer,
    packet_end,
)
from .errors import ProtocolError
from .packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
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
    Will,
)
from .properties import EMPTY_PROPERTIES, Properties
from .topics import TopicPattern, topic_matches

__all__ = [
    "CLIENT_PACKETS",
    "CONNACK_REASON_CODES",
    "EMPTY_PROPERTIES",
    "MAX_PACKET_SIZE",
    "SERVER_PACKETS",
    "Auth",
    "ConnAck",
    "Connect",
    "Decoder",
    "Disconnect",
    "Framer",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "ProtocolError",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "Subscribe",
    "Subscription",
    "TopicPattern",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "encode",
    "error_answer",
    "packet_end",
    "topic_matches",
]
