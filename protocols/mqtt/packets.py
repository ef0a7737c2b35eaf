"""The fifteen MQTT control packets as frozen, slotted dataclasses.

One class per packet type; the same classes serve MQTT 3.1.1 (protocol level 4)
and 5.0 (level 5). Fields that only exist in 5.0 (``properties``, reason codes of
acknowledgements, DISCONNECT and AUTH) keep their defaults in 3.1.1, where the
encoder refuses anything else. Where 3.1.1 has a code, it lives in the same
field: CONNACK's return code (0-5) in :attr:`ConnAck.reason_code`, SUBACK's return
codes (0, 1, 2, 0x80) in :attr:`SubAck.reason_codes`.

Packets are shared between filters, so they are immutable; use
``dataclasses.replace(packet, field=value)`` to make a changed copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from .properties import EMPTY_PROPERTIES, Properties

__all__ = [
    "Auth",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
]


class PacketType(IntEnum):
    """The control packet type: the high nibble of the fixed header's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(frozen=True, slots=True)
class Will:
    """The will message of a CONNECT: published by the server if the client goes
    away without a normal DISCONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT: the first packet a client sends. ``protocol_version`` is the
    protocol level (4: MQTT 3.1.1, 5: MQTT 5.0); the connection uses it from then
    on. ``clean_start`` is 3.1.1's Clean Session flag."""

    type: ClassVar[PacketType] = PacketType.CONNECT
    client_id: str = ""
    protocol_version: int = 4
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK: the server's answer to CONNECT. ``reason_code`` is the 5.0 reason
    code (0 success, >= 0x80 refused) or the 3.1.1 return code (0 accepted, 1
    unacceptable protocol version, 2 identifier rejected, 3 server unavailable,
    4 bad user name or password, 5 not authorized)."""

    type: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH: an application message. ``packet_id`` is ``None`` for QoS 0 and
    a non-zero identifier for QoS 1 and 2. In 5.0 ``topic`` may be empty when the
    ``topic_alias`` property names it."""

    type: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class _PublishAck:
    """The fields the four acknowledgements of a PUBLISH flow share. Each is still
    its own packet type: an acknowledgement equals only one of its own class."""

    type: ClassVar[PacketType]
    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class PubAck(_PublishAck):
    """PUBACK: acknowledges a QoS 1 PUBLISH."""

    type: ClassVar[PacketType] = PacketType.PUBACK


@dataclass(frozen=True, slots=True)
class PubRec(_PublishAck):
    """PUBREC: first answer to a QoS 2 PUBLISH."""

    type: ClassVar[PacketType] = PacketType.PUBREC


@dataclass(frozen=True, slots=True)
class PubRel(_PublishAck):
    """PUBREL: answers PUBREC (fixed-header flags 0b0010)."""

    type: ClassVar[PacketType] = PacketType.PUBREL


@dataclass(frozen=True, slots=True)
class PubComp(_PublishAck):
    """PUBCOMP: ends the QoS 2 exchange."""

    type: ClassVar[PacketType] = PacketType.PUBCOMP


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options. ``retain_handling``: 0
    send retained messages on subscribe, 1 only if the subscription is new, 2 do
    not send them. ``no_local``, ``retain_as_published`` and ``retain_handling``
    are 5.0 only."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (fixed-header flags 0b0010): at least one subscription."""

    type: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK: one code per subscription, in order: the granted QoS (0-2) or a
    failure (0x80 in 3.1.1; a 5.0 reason code >= 0x80)."""

    type: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (fixed-header flags 0b0010): at least one topic filter."""

    type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK: in 5.0 one reason code per topic filter; in 3.1.1 none."""

    type: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ: keep-alive from the client."""

    type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP: the server's answer to PINGREQ."""

    type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT: the sender closes the connection (5.0: with a reason code; a
    server may send it too)."""

    type: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH (5.0 only): extended authentication exchange."""

    type: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
