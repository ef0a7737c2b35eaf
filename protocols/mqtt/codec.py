"""Decoding and encoding MQTT 3.1.1 and 5.0 packets.

:class:`Decoder` turns a byte stream into packets, :func:`encode` one packet into
bytes for a protocol version (4: 3.1.1, 5: 5.0)::

    from protocols.mqtt import ConnAck, Connect, Decoder, Publish, encode

    server_side = Decoder(max_packet_size=1 << 20)   # learns the version from CONNECT
    data = encode(Connect("c1", 4), 4) + encode(Publish("a/b", b"hi", 1, packet_id=7), 4)
    assert server_side.feed(data[:5]) == []          # incomplete: nothing yet
    connect, publish = server_side.feed(data[5:])
    assert server_side.version == 4 and publish.topic == "a/b"

    client_side = Decoder(version=4)                 # what a server sends to a client
    assert client_side.feed(bytes([0x20, 2, 0, 0])) == [ConnAck()]

Malformed input raises :class:`~protocols.mqtt.errors.ProtocolError` with the
MQTT 5.0 reason code of the fault; :func:`error_answer` is the packet a server
sends back before closing (a 5.0 DISCONNECT or CONNACK with that code; for 3.1.1
only a CONNACK 0x01 for an unacceptable protocol level, otherwise nothing: 3.1.1
servers just close). Encoding an invalid packet (a wildcard in a PUBLISH topic,
5.0 fields with version 4, a packet identifier of 0...) raises ``ValueError``:
that is a bug of the caller, not bad input from the network.

:class:`Framer` only finds packet boundaries in a byte stream (the fixed headers),
for code that relays packets without decoding them; :func:`packet_end` does the
same for one packet in a buffer.

Checked on decoding: fixed-header flags per packet type (0b0010 for PUBREL,
SUBSCRIBE, UNSUBSCRIBE, 0 for the others; PUBLISH QoS 3 and DUP with QoS 0 are
malformed), the remaining length (at most four bytes, minimally encoded; a
packet over ``max_packet_size`` is 0x95 as soon as its header arrives, before its
body is buffered), non-zero packet identifiers, properties (see
:mod:`~protocols.mqtt.properties`), reason codes valid for their packet, CONNECT
flags (reserved bit, will QoS/retain without will, will QoS 3, password without
user name in 3.1.1), SUBSCRIBE options (reserved bits, Retain Handling 3),
UTF-8 strings (well-formed, no U+0000), topic names (no wildcards) and filters
(``#`` alone and last, ``+`` alone in its level), at least one topic per
SUBSCRIBE/UNSUBSCRIBE, CONNECT first and only once (server side), and the
direction: a server-side decoder refuses packets only servers send, and the
other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ._wire import (
    check_topic_filter,
    check_topic_name,
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
    read_u16,
    read_varint,
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
from .properties import EMPTY_PROPERTIES, WILL, Properties, decode_properties, encode_properties

__all__ = [
    "CLIENT_PACKETS",
    "CONNACK_REASON_CODES",
    "MAX_PACKET_SIZE",
    "SERVER_PACKETS",
    "Decoder",
    "Framer",
    "encode",
    "error_answer",
    "fixed_header",
    "packet_end",
]

#: The largest packet MQTT can express: a 5-byte fixed header and 268435455 bytes.
MAX_PACKET_SIZE = 268_435_460

T = PacketType
#: Packet types a client sends (a server-side decoder accepts these).
CLIENT_PACKETS = frozenset(
    {
        T.CONNECT,
        T.PUBLISH,
        T.PUBACK,
        T.PUBREC,
        T.PUBREL,
        T.PUBCOMP,
        T.SUBSCRIBE,
        T.UNSUBSCRIBE,
        T.PINGREQ,
        T.DISCONNECT,
        T.AUTH,
    }
)
#: Packet types a server sends (a client-side decoder accepts these).
SERVER_PACKETS = frozenset(
    {
        T.CONNACK,
        T.PUBLISH,
        T.PUBACK,
        T.PUBREC,
        T.PUBREL,
        T.PUBCOMP,
        T.SUBACK,
        T.UNSUBACK,
        T.PINGRESP,
        T.DISCONNECT,
        T.AUTH,
    }
)

# Reason codes each packet may carry (MQTT 5.0) and 3.1.1's return codes.
#: The reason codes a 5.0 CONNACK may carry (0 success, the others refusals).
CONNACK_REASON_CODES = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C}
    | {0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
_PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL_CODES = frozenset({0x00, 0x92})
_SUBACK_CODES_5 = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E})
_SUBACK_CODES_5 |= {0xA1, 0xA2}
_UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_DISCONNECT_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90}
    | {0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F}
    | {0xA0, 0xA1, 0xA2}
)
_AUTH_CODES = frozenset({0x00, 0x18, 0x19})
_CONNACK_CODES_4 = frozenset(range(6))
_SUBACK_CODES_4 = frozenset({0, 1, 2, 0x80})
_ACK_CODES: dict[int, frozenset[int]] = {
    T.PUBACK: _PUBACK_CODES,
    T.PUBREC: _PUBACK_CODES,
    T.PUBREL: _PUBREL_CODES,
    T.PUBCOMP: _PUBREL_CODES,
}
_ACK_CLASSES: dict[int, type[PubAck | PubRec | PubRel | PubComp]] = {
    T.PUBACK: PubAck,
    T.PUBREC: PubRec,
    T.PUBREL: PubRel,
    T.PUBCOMP: PubComp,
}
_PING_REQ = PingReq()
_PING_RESP = PingResp()

Side = Literal["server", "client"]


# Decoding -------------------------------------------------------------------


class Decoder:
    """An incremental MQTT decoder for one direction of one connection.

    ``version=None`` (the default) decodes what a client sends to a server: the
    first packet must be CONNECT, whose protocol level (4 or 5) sets
    :attr:`version` for the rest of the stream. ``version=4`` or ``5`` decodes what
    a server sends to a client (``side="server"`` with a version decodes a
    client's packets after a CONNECT seen elsewhere). ``max_packet_size`` bounds a
    whole packet, fixed header included (0x95 beyond it).

    :meth:`feed` returns the packets complete so far. After a
    :class:`ProtocolError` the decoder is dead: every later call raises it again.
    The error's ``packets`` holds the packets that were complete before the fault
    in that same call, so nothing valid is lost.
    """

    __slots__ = ("_accepts", "_error", "_have", "_need", "_parts", "max_packet_size", "version")

    def __init__(
        self,
        version: int | None = None,
        *,
        side: Side | None = None,
        max_packet_size: int = MAX_PACKET_SIZE,
    ) -> None:
        if version not in (None, 4, 5):
            raise ValueError(f"version must be None, 4 or 5, got {version!r}")
        if side is None:
            side = "server" if version is None else "client"
        if side not in ("server", "client"):
            raise ValueError(f"side must be 'server' or 'client', got {side!r}")
        if side == "client" and version is None:
            raise ValueError("a client-side decoder needs the version it connected with")
        if not isinstance(max_packet_size, int) or max_packet_size < 2:
            raise ValueError(f"max_packet_size must be an int >= 2, got {max_packet_size!r}")
        self.version = version
        self.max_packet_size = max_packet_size
        self._accepts = CLIENT_PACKETS if side == "server" else SERVER_PACKETS
        self._parts: list[bytes] = []  # an incomplete packet's bytes, in pieces
        self._have = 0  # their total length
        self._need = 0  # the length of that packet once its header is known, else 0
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Packet]:
        """Add bytes from the stream; the packets they complete, in order."""
        if self._error is not None:
            raise self._error
        parts = self._parts
        if parts:
            # Wait for the rest of a known-length packet without copying.
            self._have += len(data)
            if self._have < self._need:
                parts.append(data)
                return []
            parts.append(data)
            buf = b"".join(parts)
            parts.clear()
            self._have = 0
        else:
            buf = data
        packets: list[Packet] = []
        append = packets.append
        pos = 0
        size = len(buf)
        limit = self.max_packet_size
        # After CONNECT (server side) or from the start (client side), a PUBLISH
        # goes straight to its parser: the hot path has no method call in between.
        version = self.version
        try:
            while pos < size:
                if pos + 1 >= size:
                    break
                byte = buf[pos + 1]
                if byte < 0x80:
                    length = byte
                    body = pos + 2
                elif pos + 2 < size and 0 < buf[pos + 2] < 0x80:  # two bytes: common too
                    length = (byte & 0x7F) | (buf[pos + 2] << 7)
                    body = pos + 3
                else:
                    header = fixed_header(buf, pos)
                    if header is None:
                        break  # the remaining length itself is incomplete
                    length, body = header
                end = body + length
                if end - pos > limit:
                    raise ProtocolError(
                        f"packet of {end - pos} bytes exceeds the maximum of {limit}", 0x95
                    )
                if end > size:
                    break
                first = buf[pos]
                if first >> 4 == 3 and version is not None:
                    append(_publish(buf, body, end, first & 0x0F, version))
                else:
                    append(self._packet(first >> 4, first & 0x0F, buf, body, end))
                    version = self.version
                pos = end
        except ProtocolError as exc:
            if exc.version is None:
                exc.version = self.version
            exc.packets = packets
            self._error = exc
            raise
        if pos < size:
            rest = buf[pos:] if pos else buf
            parts.append(rest)
            self._have = len(rest)
            self._need = self._known_length(rest)
        return packets

    @staticmethod
    def _known_length(rest: bytes) -> int:
        """The full length of the packet ``rest`` begins, if its header is complete."""
        if len(rest) < 2:
            return 0
        try:
            length, body = read_varint(rest, 1, len(rest))
        except ProtocolError:
            return 0  # incomplete; a bad one is reported when parsed
        return body + length

    def _packet(self, kind: int, flags: int, data: bytes, pos: int, end: int) -> Packet:
        version = self.version
        if kind == 0 or (kind == 15 and version == 4):
            raise ProtocolError(f"reserved packet type {kind}")
        ptype = T(kind)
        if ptype not in self._accepts:
            raise ProtocolError(f"{ptype.name} is not sent in this direction", 0x82)
        if version is None:
            if ptype is not T.CONNECT:
                raise ProtocolError(f"{ptype.name} before CONNECT", 0x82)
            if flags:
                raise ProtocolError("CONNECT with fixed-header flags set", in_connect=True)
            try:
                connect = _connect(data, pos, end)
            except ProtocolError as exc:
                exc.in_connect = True
                raise
            self.version = connect.protocol_version
            return connect
        if ptype is T.CONNECT:
            raise ProtocolError("a second CONNECT", 0x82)
        if ptype is T.PUBLISH:
            return _publish(data, pos, end, flags, version)
        expected = 2 if ptype in (T.PUBREL, T.SUBSCRIBE, T.UNSUBSCRIBE) else 0
        if flags != expected:
            raise ProtocolError(f"{ptype.name} with fixed-header flags {flags:04b}")
        return _PARSERS[ptype](data, pos, end, version)


def _fail(message: str, code: int = 0x81) -> ProtocolError:
    return ProtocolError(message, code)


def _packet_id(data: bytes, pos: int, end: int) -> tuple[int, int]:
    pid, pos = read_u16(data, pos, end)
    if not pid:
        raise _fail("packet identifier 0")
    return pid, pos


def _connect(data: bytes, pos: int, end: int) -> Connect:
    name, pos = read_string(data, pos, end)
    if pos >= end:
        raise _fail("truncated CONNECT")
    level = data[pos]
    pos += 1
    if name == "MQIsdp" or (name == "MQTT" and level not in (4, 5)):
        raise ProtocolError(f"unsupported protocol {name} level {level}", 0x84)
    if name != "MQTT":
        raise _fail(f"unknown protocol name {name!r}")
    try:
        return _connect_rest(data, pos, end, level)
    except ProtocolError as exc:
        exc.version = level
        raise


def _connect_rest(data: bytes, pos: int, end: int, version: int) -> Connect:
    if pos >= end:
        raise _fail("truncated CONNECT")
    flags = data[pos]
    keep_alive, pos = read_u16(data, pos + 1, end)
    if flags & 0x01:
        raise _fail("CONNECT reserved flag set")
    has_will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if not has_will and (will_qos or will_retain):
        raise _fail("will QoS or retain without a will")
    if will_qos == 3:
        raise _fail("will QoS 3")
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if version == 4 and has_password and not has_username:
        raise _fail("password without user name")
    props = EMPTY_PROPERTIES
    if version == 5:
        props, pos = decode_properties(data, pos, end, T.CONNECT)
    client_id, pos = read_string(data, pos, end)
    will = None
    if has_will:
        will_props = EMPTY_PROPERTIES
        if version == 5:
            will_props, pos = decode_properties(data, pos, end, WILL)
        topic, pos = read_string(data, pos, end)
        problem = check_topic_name(topic)
        if problem:
            raise _fail(f"will {problem}")
        payload, pos = read_binary(data, pos, end)
        will = Will(topic, payload, will_qos, will_retain, will_props)
    username = password = None
    if has_username:
        username, pos = read_string(data, pos, end)
    if has_password:
        password, pos = read_binary(data, pos, end)
    if pos != end:
        raise _fail("bytes after the CONNECT payload")
    return Connect(
        client_id, version, bool(flags & 0x02), keep_alive, username, password, will, props
    )


def _connack(data: bytes, pos: int, end: int, version: int) -> ConnAck:
    if pos + 2 > end:
        raise _fail("truncated CONNACK")
    flags, code = data[pos], data[pos + 1]
    if flags & 0xFE:
        raise _fail("CONNACK reserved flags set")
    props = EMPTY_PROPERTIES
    if version == 5:
        if code not in CONNACK_REASON_CODES:
            raise _fail(f"invalid CONNACK reason code 0x{code:02X}")
        props, pos = decode_properties(data, pos + 2, end, T.CONNACK)
    else:
        if code not in _CONNACK_CODES_4:
            raise _fail(f"invalid CONNACK return code {code}")
        pos += 2
    if pos != end:
        raise _fail("bytes after CONNACK")
    if flags and code:
        raise _fail("CONNACK session present with a refusal")
    return ConnAck(bool(flags), code, props)


def _publish(data: bytes, pos: int, end: int, flags: int, version: int) -> Publish:
    qos = (flags >> 1) & 3
    if qos == 3:
        raise _fail("PUBLISH with QoS 3")
    if flags & 8 and not qos:
        raise _fail("PUBLISH with DUP and QoS 0")
    if pos + 2 > end:
        raise _fail("truncated PUBLISH")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise _fail("PUBLISH topic runs past the end of the packet")
    raw = data[pos + 2 : stop]
    try:
        topic = raw.decode()
    except UnicodeDecodeError:
        raise _fail("PUBLISH topic is not valid UTF-8") from None
    if b"\x00" in raw or b"+" in raw or b"#" in raw:
        raise _fail(f"invalid character in PUBLISH topic {topic!r}")
    pos = stop
    packet_id = None
    if qos:
        if pos + 2 > end:
            raise _fail("truncated PUBLISH packet identifier")
        packet_id = (data[pos] << 8) | data[pos + 1]
        if not packet_id:
            raise _fail("packet identifier 0")
        pos += 2
    props = EMPTY_PROPERTIES
    if version == 5:
        if pos < end and not data[pos]:
            pos += 1  # no properties: the common case
        else:
            props, pos = decode_properties(data, pos, end, T.PUBLISH)
        if not topic and props.topic_alias is None:
            raise _fail("empty PUBLISH topic without a topic alias", 0x82)
    elif not topic:
        raise _fail("empty PUBLISH topic")
    return Publish(topic, data[pos:end], qos, bool(flags & 1), bool(flags & 8), packet_id, props)


def _ack(kind: int) -> Callable[[bytes, int, int, int], Packet]:
    cls = _ACK_CLASSES[kind]
    codes = _ACK_CODES[kind]

    def parse(data: bytes, pos: int, end: int, version: int) -> Packet:
        pid, pos = _packet_id(data, pos, end)
        if pos == end:
            return cls(pid)
        if version == 4:
            raise _fail(f"{cls.__name__} longer than 2 bytes")
        code = data[pos]
        if code not in codes:
            raise _fail(f"invalid {cls.__name__} reason code 0x{code:02X}")
        props = EMPTY_PROPERTIES
        if pos + 1 < end:
            props, pos = decode_properties(data, pos + 1, end, kind)
            if pos != end:
                raise _fail(f"bytes after {cls.__name__}")
        return cls(pid, code, props)

    return parse


def _subscribe(data: bytes, pos: int, end: int, version: int) -> Subscribe:
    pid, pos = _packet_id(data, pos, end)
    props = EMPTY_PROPERTIES
    if version == 5:
        props, pos = decode_properties(data, pos, end, T.SUBSCRIBE)
    subs = []
    while pos < end:
        topic_filter, pos = read_string(data, pos, end)
        problem = check_topic_filter(topic_filter)
        if problem:
            raise _fail(problem)
        if pos >= end:
            raise _fail("subscription without options")
        options = data[pos]
        pos += 1
        qos = options & 3
        if qos == 3:
            raise _fail("subscription with QoS 3")
        if version == 4:
            if options & 0xFC:
                raise _fail("subscription options reserved bits set")
            subs.append(Subscription(topic_filter, qos))
            continue
        if options & 0xC0:
            raise _fail("subscription options reserved bits set")
        retain_handling = (options >> 4) & 3
        if retain_handling == 3:
            raise _fail("subscription with Retain Handling 3")
        if topic_filter.startswith("$share/"):
            shared = _check_shared(topic_filter, bool(options & 4))
            if shared:
                raise _fail(*shared)
        subs.append(
            Subscription(topic_filter, qos, bool(options & 4), bool(options & 8), retain_handling)
        )
    if not subs:
        raise _fail("SUBSCRIBE without a subscription", 0x82 if version == 5 else 0x81)
    return Subscribe(pid, tuple(subs), props)


def _check_shared(topic_filter: str, no_local: bool) -> tuple[str, int] | None:
    """Why a 5.0 shared subscription ``$share/NAME/filter`` is invalid (and the
    reason code), or ``None``."""
    parts = topic_filter.split("/", 2)
    if len(parts) < 3 or not parts[1] or not parts[2] or "+" in parts[1] or "#" in parts[1]:
        return f"invalid shared subscription {topic_filter!r}", 0x81
    if no_local:
        return "No Local on a shared subscription", 0x82
    return None


def _suback(data: bytes, pos: int, end: int, version: int) -> SubAck:
    pid, pos = _packet_id(data, pos, end)
    props = EMPTY_PROPERTIES
    codes = _SUBACK_CODES_4
    if version == 5:
        props, pos = decode_properties(data, pos, end, T.SUBACK)
        codes = _SUBACK_CODES_5
    reason_codes = tuple(data[pos:end])
    if not reason_codes:
        raise _fail("SUBACK without a reason code")
    for code in reason_codes:
        if code not in codes:
            raise _fail(f"invalid SUBACK code 0x{code:02X}")
    return SubAck(pid, reason_codes, props)


def _unsubscribe(data: bytes, pos: int, end: int, version: int) -> Unsubscribe:
    pid, pos = _packet_id(data, pos, end)
    props = EMPTY_PROPERTIES
    if version == 5:
        props, pos = decode_properties(data, pos, end, T.UNSUBSCRIBE)
    filters = []
    while pos < end:
        topic_filter, pos = read_string(data, pos, end)
        problem = check_topic_filter(topic_filter)
        if problem:
            raise _fail(problem)
        filters.append(topic_filter)
    if not filters:
        raise _fail("UNSUBSCRIBE without a topic filter", 0x82 if version == 5 else 0x81)
    return Unsubscribe(pid, tuple(filters), props)


def _unsuback(data: bytes, pos: int, end: int, version: int) -> UnsubAck:
    pid, pos = _packet_id(data, pos, end)
    if version == 4:
        if pos != end:
            raise _fail("UNSUBACK longer than 2 bytes")
        return UnsubAck(pid)
    props, pos = decode_properties(data, pos, end, T.UNSUBACK)
    reason_codes = tuple(data[pos:end])
    if not reason_codes:
        raise _fail("UNSUBACK without a reason code")
    for code in reason_codes:
        if code not in _UNSUBACK_CODES:
            raise _fail(f"invalid UNSUBACK reason code 0x{code:02X}")
    return UnsubAck(pid, reason_codes, props)


def _empty(packet: PingReq | PingResp) -> Callable[[bytes, int, int, int], Packet]:
    def parse(data: bytes, pos: int, end: int, version: int) -> Packet:
        if pos != end:
            raise _fail(f"{type(packet).__name__} with a body")
        return packet

    return parse


def _reason_only(
    cls: type[Disconnect | Auth], kind: int, codes: frozenset[int]
) -> Callable[[bytes, int, int, int], Packet]:
    def parse(data: bytes, pos: int, end: int, version: int) -> Packet:
        if pos == end:
            return cls()
        if version == 4:
            raise _fail(f"{cls.__name__.upper()} with a body")
        code = data[pos]
        if code not in codes:
            raise _fail(f"invalid {cls.__name__.upper()} reason code 0x{code:02X}")
        props = EMPTY_PROPERTIES
        if pos + 1 < end:
            props, pos = decode_properties(data, pos + 1, end, kind)
            if pos != end:
                raise _fail(f"bytes after {cls.__name__.upper()}")
        return cls(code, props)

    return parse


_PARSERS: dict[int, Callable[[bytes, int, int, int], Packet]] = {
    T.CONNACK: _connack,
    T.PUBACK: _ack(T.PUBACK),
    T.PUBREC: _ack(T.PUBREC),
    T.PUBREL: _ack(T.PUBREL),
    T.PUBCOMP: _ack(T.PUBCOMP),
    T.SUBSCRIBE: _subscribe,
    T.SUBACK: _suback,
    T.UNSUBSCRIBE: _unsubscribe,
    T.UNSUBACK: _unsuback,
    T.PINGREQ: _empty(_PING_REQ),
    T.PINGRESP: _empty(_PING_RESP),
    T.DISCONNECT: _reason_only(Disconnect, T.DISCONNECT, _DISCONNECT_CODES),
    T.AUTH: _reason_only(Auth, T.AUTH, _AUTH_CODES),
}


def fixed_header(data: bytes, pos: int) -> tuple[int, int] | None:
    """The remaining length of the packet starting at ``pos`` and the index where
    its body starts, or ``None`` while ``data`` ends inside the remaining length.
    A remaining length longer than four bytes or not minimally encoded raises
    :class:`ProtocolError` (0x81)."""
    size = len(data)
    i = pos + 1
    stop = min(pos + 5, size)
    while i < stop and data[i] >= 0x80:
        i += 1
    if i >= stop < pos + 5:
        return None
    return read_varint(data, pos + 1, size)


def packet_end(data: bytes, pos: int) -> int | None:
    """The index just past the packet starting at ``pos``, or ``None`` if ``data``
    does not hold all of it yet (for code that relays whole packets without
    decoding them). A bad remaining length raises :class:`ProtocolError`."""
    header = fixed_header(data, pos)
    if header is None:
        return None
    end = header[0] + header[1]
    return end if end <= len(data) else None


class Framer:
    """Finds packet boundaries in a byte stream by reading only fixed headers.

    ``feed(data)`` consumes bytes; :attr:`at_boundary` tells whether the bytes
    fed so far end exactly at the end of a packet, the safe place to insert
    another packet into the stream. A bad remaining length raises
    :class:`ProtocolError`."""

    __slots__ = ("_header", "_remaining")

    def __init__(self) -> None:
        self._remaining = 0  # bytes of the current packet's body still to come
        self._header = b""  # an incomplete fixed header

    @property
    def at_boundary(self) -> bool:
        return not self._remaining and not self._header

    def feed(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        while pos < size:
            if self._remaining:
                take = min(self._remaining, size - pos)
                self._remaining -= take
                pos += take
                continue
            old = len(self._header)
            header = self._header + data[pos : pos + 5 - old]
            known = fixed_header(header, 0)
            if known is None:  # the remaining length is still incomplete
                self._header = header
                return
            length, body = known
            pos += body - old
            self._header = b""
            self._remaining = length


# Encoding -------------------------------------------------------------------


def encode(packet: Packet, version: int = 4) -> bytes:
    """``packet`` on the wire for protocol ``version`` (4: 3.1.1, 5: 5.0)."""
    if version == 5:
        v5 = True
    elif version == 4:
        v5 = False
    else:
        raise ValueError(f"version must be 4 or 5, got {version!r}")
    return _ENCODERS[packet.type](packet, v5)


def _frame(first: int, body: bytes | bytearray) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def _props(props: Properties, kind: int, v5: bool) -> bytes:
    if v5:
        return encode_properties(props, kind)
    if props is not EMPTY_PROPERTIES and props != EMPTY_PROPERTIES:
        raise ValueError("properties need MQTT 5.0")
    return b""


def _check_id(packet_id: int | None) -> bytes:
    if not isinstance(packet_id, int) or not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier must be in 1..65535, got {packet_id!r}")
    return packet_id.to_bytes(2, "big")


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, got {qos!r}")


def _encode_connect(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, Connect)
    if p.protocol_version != (5 if v5 else 4):
        raise ValueError("encode a CONNECT with its own protocol_version")
    if not 0 <= p.keep_alive <= 0xFFFF:
        raise ValueError(f"keep_alive must be in 0..65535, got {p.keep_alive}")
    flags = 0x02 if p.clean_start else 0
    payload = [encode_string(p.client_id)]
    will = p.will
    if will is not None:
        _check_qos(will.qos)
        problem = check_topic_name(will.topic)
        if problem:
            raise ValueError(f"will {problem}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += (
            _props(will.properties, WILL, v5),
            encode_string(will.topic),
            encode_binary(will.payload),
        )
    if p.username is not None:
        flags |= 0x80
        payload.append(encode_string(p.username))
    if p.password is not None:
        if not v5 and p.username is None:
            raise ValueError("MQTT 3.1.1 needs a user name with a password")
        flags |= 0x40
        payload.append(encode_binary(p.password))
    head = b"\x00\x04MQTT" + bytes((5 if v5 else 4, flags)) + p.keep_alive.to_bytes(2, "big")
    return _frame(0x10, head + _props(p.properties, T.CONNECT, v5) + b"".join(payload))


def _encode_connack(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, ConnAck)
    codes = CONNACK_REASON_CODES if v5 else _CONNACK_CODES_4
    if p.reason_code not in codes:
        raise ValueError(f"invalid CONNACK code {p.reason_code:#x}")
    if p.session_present and p.reason_code:
        raise ValueError("a refused CONNACK cannot have session_present")
    body = bytes((1 if p.session_present else 0, p.reason_code))
    return _frame(0x20, body + _props(p.properties, T.CONNACK, v5))


def _encode_publish(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, Publish)
    qos = p.qos
    _check_qos(qos)
    if p.dup and not qos:
        raise ValueError("DUP needs QoS 1 or 2")
    topic = p.topic
    if topic or not v5 or p.properties.topic_alias is None:
        problem = check_topic_name(topic)
        if problem:
            raise ValueError(problem)
    parts = [encode_string(topic)]
    if qos:
        parts.append(_check_id(p.packet_id))
    elif p.packet_id is not None:
        raise ValueError("a QoS 0 PUBLISH has no packet identifier")
    if v5:
        props = p.properties
        parts.append(b"\x00" if props is EMPTY_PROPERTIES else encode_properties(props, 3))
    elif p.properties is not EMPTY_PROPERTIES and p.properties != EMPTY_PROPERTIES:
        raise ValueError("properties need MQTT 5.0")
    parts.append(p.payload)
    length = sum(map(len, parts))
    first = 0x30 | (qos << 1) | (8 if p.dup else 0) | (1 if p.retain else 0)
    return b"".join((bytes((first,)), encode_varint(length), *parts))


def _encode_ack(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, (PubAck, PubRec, PubRel, PubComp))
    kind = p.type
    first = (kind << 4) | (2 if kind == T.PUBREL else 0)
    pid = _check_id(p.packet_id)
    if not v5:
        if p.reason_code:
            raise ValueError("reason codes need MQTT 5.0")
        _props(p.properties, kind, v5)
        return _frame(first, pid)
    if p.reason_code not in _ACK_CODES[kind]:
        raise ValueError(f"invalid {kind.name} reason code {p.reason_code:#x}")
    if p.properties is EMPTY_PROPERTIES or p.properties == EMPTY_PROPERTIES:
        if not p.reason_code:
            return _frame(first, pid)
        return _frame(first, pid + bytes((p.reason_code,)))
    return _frame(first, pid + bytes((p.reason_code,)) + encode_properties(p.properties, kind))


def _encode_subscribe(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, Subscribe)
    if not p.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one subscription")
    parts = [_check_id(p.packet_id), _props(p.properties, T.SUBSCRIBE, v5)]
    for sub in p.subscriptions:
        problem = check_topic_filter(sub.topic_filter)
        if problem:
            raise ValueError(problem)
        _check_qos(sub.qos)
        options = sub.qos
        if v5:
            if sub.retain_handling not in (0, 1, 2):
                raise ValueError(f"retain_handling must be 0, 1 or 2, not {sub.retain_handling}")
            if sub.topic_filter.startswith("$share/"):
                shared = _check_shared(sub.topic_filter, sub.no_local)
                if shared:
                    raise ValueError(shared[0])
            options |= (
                (4 if sub.no_local else 0)
                | (8 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        elif sub.no_local or sub.retain_as_published or sub.retain_handling:
            raise ValueError("subscription options other than QoS need MQTT 5.0")
        parts += (encode_string(sub.topic_filter), bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _encode_suback(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, SubAck)
    codes = _SUBACK_CODES_5 if v5 else _SUBACK_CODES_4
    if not p.reason_codes or any(c not in codes for c in p.reason_codes):
        raise ValueError(f"invalid SUBACK codes {p.reason_codes!r}")
    body = _check_id(p.packet_id) + _props(p.properties, T.SUBACK, v5) + bytes(p.reason_codes)
    return _frame(0x90, body)


def _encode_unsubscribe(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, Unsubscribe)
    if not p.topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    parts = [_check_id(p.packet_id), _props(p.properties, T.UNSUBSCRIBE, v5)]
    for topic_filter in p.topic_filters:
        problem = check_topic_filter(topic_filter)
        if problem:
            raise ValueError(problem)
        parts.append(encode_string(topic_filter))
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, UnsubAck)
    pid = _check_id(p.packet_id)
    if not v5:
        if p.reason_codes:
            raise ValueError("UNSUBACK reason codes need MQTT 5.0")
        _props(p.properties, T.UNSUBACK, v5)
        return _frame(0xB0, pid)
    if not p.reason_codes or any(c not in _UNSUBACK_CODES for c in p.reason_codes):
        raise ValueError(f"invalid UNSUBACK reason codes {p.reason_codes!r}")
    props = encode_properties(p.properties, T.UNSUBACK)
    return _frame(0xB0, pid + props + bytes(p.reason_codes))


def _encode_ping(p: Packet, v5: bool) -> bytes:
    return b"\xc0\x00" if p.type == T.PINGREQ else b"\xd0\x00"


def _encode_reason_only(p: Packet, v5: bool) -> bytes:
    assert isinstance(p, (Disconnect, Auth))
    kind = p.type
    first = kind << 4
    if not v5:
        if kind == T.AUTH:
            raise ValueError("AUTH needs MQTT 5.0")
        if p.reason_code:
            raise ValueError("reason codes need MQTT 5.0")
        _props(p.properties, kind, v5)
        return _frame(first, b"")
    codes = _AUTH_CODES if kind == T.AUTH else _DISCONNECT_CODES
    if p.reason_code not in codes:
        raise ValueError(f"invalid {kind.name} reason code {p.reason_code:#x}")
    if p.properties is EMPTY_PROPERTIES or p.properties == EMPTY_PROPERTIES:
        if not p.reason_code:
            return _frame(first, b"")
        return _frame(first, bytes((p.reason_code,)))
    return _frame(first, bytes((p.reason_code,)) + encode_properties(p.properties, kind))


_ENCODERS: dict[int, Callable[[Packet, bool], bytes]] = {
    T.CONNECT: _encode_connect,
    T.CONNACK: _encode_connack,
    T.PUBLISH: _encode_publish,
    T.PUBACK: _encode_ack,
    T.PUBREC: _encode_ack,
    T.PUBREL: _encode_ack,
    T.PUBCOMP: _encode_ack,
    T.SUBSCRIBE: _encode_subscribe,
    T.SUBACK: _encode_suback,
    T.UNSUBSCRIBE: _encode_unsubscribe,
    T.UNSUBACK: _encode_unsuback,
    T.PINGREQ: _encode_ping,
    T.PINGRESP: _encode_ping,
    T.DISCONNECT: _encode_reason_only,
    T.AUTH: _encode_reason_only,
}


# Answering errors ---------------------------------------------------------------


def error_answer(error: ProtocolError) -> tuple[Packet, int] | None:
    """What a server sends a client whose bytes raised ``error``, as ``(packet,
    version)`` for :func:`encode`, or ``None`` when it should just close.

    MQTT 5.0: a CONNACK with the reason code if the fault is in the CONNECT, else
    a DISCONNECT with it. MQTT 3.1.1 (and a CONNECT whose level is unknown): a
    CONNACK 0x01 (unacceptable protocol version) for an unsupported protocol
    level, otherwise nothing.
    """
    if error.version == 5:
        if error.in_connect:
            return ConnAck(reason_code=error.reason_code), 5
        return Disconnect(reason_code=error.reason_code), 5
    if error.in_connect and error.reason_code == 0x84:
        return ConnAck(reason_code=1), 4
    return None
