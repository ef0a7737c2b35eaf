"""MQTT 5.0 properties (section 2.2.2): every property identifier, its data type,
the packets it may appear in, and its reading and writing.

:class:`Properties` has one field per property, ``None`` (or ``()``) when absent.
``user_properties`` (0x26) may repeat and keeps its pairs in order;
``subscription_identifiers`` (0x0B) may repeat in a PUBLISH sent to a client (one
per matching subscription) and appears at most once in a SUBSCRIBE. Any other
property given twice is a Protocol Error (0x82); an unknown identifier, a
property in a packet that does not allow it, or a value outside its range is a
Malformed Packet (0x81) -- except the values the standard calls a Protocol Error
(a zero Receive Maximum, Topic Alias, Maximum Packet Size or Subscription
Identifier).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ._wire import encode_binary, encode_string, encode_varint, read_binary, read_string
from ._wire import read_varint as _read_varint
from .errors import ProtocolError

__all__ = ["EMPTY_PROPERTIES", "WILL", "Properties", "decode_properties", "encode_properties"]

#: The pseudo packet type of a CONNECT's will properties (type 0 is reserved).
WILL = 0


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """The properties of one MQTT 5.0 packet (or of a will)."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __bool__(self) -> bool:
        return self != EMPTY_PROPERTIES

    def __repr__(self) -> str:
        given = (
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) not in (None, ())
        )
        return f"Properties({', '.join(given)})"


EMPTY_PROPERTIES = Properties()

# Data types.
_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)


def _mask(*types: int) -> int:
    return sum(1 << t for t in set(types))


# Packet type numbers (see packets.PacketType; not imported, to avoid a cycle).
_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP = 1, 2, 3, 4, 5, 6, 7
_SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK, _DISCONNECT, _AUTH = 8, 9, 10, 11, 14, 15
_ALL = _mask(WILL, *range(1, 16))
_REASON_STRING = _mask(
    _CONNACK, _PUBACK, _PUBREC, _PUBREL, _PUBCOMP, _SUBACK, _UNSUBACK, _DISCONNECT, _AUTH
)


@dataclass(frozen=True, slots=True)
class _Spec:
    ident: int
    name: str
    kind: int
    packets: int  # bit mask of the packet types that allow it
    low: int = 0  # the smallest valid value of an integer property
    high: int | None = None  # the largest, if smaller than the type allows
    low_is_protocol_error: bool = False


_SPECS = (
    _Spec(0x01, "payload_format_indicator", _BYTE, _mask(_PUBLISH, WILL), high=1),
    _Spec(0x02, "message_expiry_interval", _U32, _mask(_PUBLISH, WILL)),
    _Spec(0x03, "content_type", _STRING, _mask(_PUBLISH, WILL)),
    _Spec(0x08, "response_topic", _STRING, _mask(_PUBLISH, WILL)),
    _Spec(0x09, "correlation_data", _BINARY, _mask(_PUBLISH, WILL)),
    _Spec(
        0x0B,
        "subscription_identifiers",
        _VARINT,
        _mask(_PUBLISH, _SUBSCRIBE),
        low=1,
        low_is_protocol_error=True,
    ),
    _Spec(0x11, "session_expiry_interval", _U32, _mask(_CONNECT, _CONNACK, _DISCONNECT)),
    _Spec(0x12, "assigned_client_identifier", _STRING, _mask(_CONNACK)),
    _Spec(0x13, "server_keep_alive", _U16, _mask(_CONNACK)),
    _Spec(0x15, "authentication_method", _STRING, _mask(_CONNECT, _CONNACK, _AUTH)),
    _Spec(0x16, "authentication_data", _BINARY, _mask(_CONNECT, _CONNACK, _AUTH)),
    _Spec(0x17, "request_problem_information", _BYTE, _mask(_CONNECT), high=1),
    _Spec(0x18, "will_delay_interval", _U32, _mask(WILL)),
    _Spec(0x19, "request_response_information", _BYTE, _mask(_CONNECT), high=1),
    _Spec(0x1A, "response_information", _STRING, _mask(_CONNACK)),
    _Spec(0x1C, "server_reference", _STRING, _mask(_CONNACK, _DISCONNECT)),
    _Spec(0x1F, "reason_string", _STRING, _REASON_STRING),
    _Spec(
        0x21,
        "receive_maximum",
        _U16,
        _mask(_CONNECT, _CONNACK),
        low=1,
        low_is_protocol_error=True,
    ),
    _Spec(0x22, "topic_alias_maximum", _U16, _mask(_CONNECT, _CONNACK)),
    _Spec(0x23, "topic_alias", _U16, _mask(_PUBLISH), low=1, low_is_protocol_error=True),
    _Spec(0x24, "maximum_qos", _BYTE, _mask(_CONNACK), high=1),
    _Spec(0x25, "retain_available", _BYTE, _mask(_CONNACK), high=1),
    _Spec(0x26, "user_properties", _PAIR, _ALL),
    _Spec(
        0x27,
        "maximum_packet_size",
        _U32,
        _mask(_CONNECT, _CONNACK),
        low=1,
        low_is_protocol_error=True,
    ),
    _Spec(0x28, "wildcard_subscription_available", _BYTE, _mask(_CONNACK), high=1),
    _Spec(0x29, "subscription_identifier_available", _BYTE, _mask(_CONNACK), high=1),
    _Spec(0x2A, "shared_subscription_available", _BYTE, _mask(_CONNACK), high=1),
)
_BY_ID = {s.ident: s for s in _SPECS}
_BY_NAME = {s.name: s for s in _SPECS}
_TYPE_HIGH = {_BYTE: 0xFF, _U16: 0xFFFF, _U32: 0xFFFF_FFFF, _VARINT: 268_435_455}
assert {f.name for f in fields(Properties)} == set(_BY_NAME)


def decode_properties(data: bytes, pos: int, end: int, packet_type: int) -> tuple[Properties, int]:
    """The property block at ``pos`` (its length first) of a packet of
    ``packet_type`` (:data:`WILL` for will properties); the position after it."""
    length, pos = _read_varint(data, pos, end)
    if not length:
        return EMPTY_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise ProtocolError("property block runs past the end of the packet")
    values: dict[str, Any] = {}
    bit = 1 << packet_type
    while pos < stop:
        ident = data[pos]
        pos += 1
        spec = _BY_ID.get(ident)
        if spec is None:
            raise ProtocolError(f"unknown property identifier 0x{ident:02X}")
        if not spec.packets & bit:
            raise ProtocolError(f"property {spec.name} is not allowed in this packet")
        kind = spec.kind
        value: Any
        if kind == _BYTE:
            if pos >= stop:
                raise ProtocolError("truncated property")
            value = data[pos]
            pos += 1
        elif kind == _U16:
            if pos + 2 > stop:
                raise ProtocolError("truncated property")
            value = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif kind == _U32:
            if pos + 4 > stop:
                raise ProtocolError("truncated property")
            value = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif kind == _VARINT:
            value, pos = _read_varint(data, pos, stop)
        elif kind == _STRING:
            value, pos = read_string(data, pos, stop)
        elif kind == _BINARY:
            value, pos = read_binary(data, pos, stop)
        else:
            key, pos = read_string(data, pos, stop)
            val, pos = read_string(data, pos, stop)
            value = (key, val)
        if kind <= _VARINT:
            if value < spec.low:
                code = 0x82 if spec.low_is_protocol_error else 0x81
                raise ProtocolError(f"property {spec.name} must not be {value}", code)
            if spec.high is not None and value > spec.high:
                raise ProtocolError(f"property {spec.name} must not be {value}")
        name = spec.name
        if ident == 0x26 or ident == 0x0B:
            if ident == 0x0B and name in values and packet_type != _PUBLISH:
                raise ProtocolError("subscription identifier given twice", 0x82)
            values.setdefault(name, []).append(value)
        elif name in values:
            raise ProtocolError(f"property {name} given twice", 0x82)
        else:
            values[name] = value
    if pos != stop:
        raise ProtocolError("property runs past the end of the property block")
    for name in ("user_properties", "subscription_identifiers"):
        if name in values:
            values[name] = tuple(values[name])
    return Properties(**values), stop


def encode_properties(props: Properties, packet_type: int) -> bytes:
    """The property block (its length first) of ``props`` in a packet of
    ``packet_type``; ``ValueError`` for a property that packet does not allow or
    a value out of range."""
    if props is EMPTY_PROPERTIES:
        return b"\x00"
    out = bytearray()
    bit = 1 << packet_type
    for spec in _SPECS:
        value = getattr(props, spec.name)
        if value is None or value == ():
            continue
        if not spec.packets & bit:
            raise ValueError(f"property {spec.name} is not allowed in this packet")
        values = value if spec.ident in (0x26, 0x0B) else (value,)
        if spec.ident == 0x0B and len(values) > 1 and packet_type != _PUBLISH:
            raise ValueError("only a PUBLISH may carry several subscription identifiers")
        for v in values:
            out.append(spec.ident)
            out += _encode_value(spec, v)
    return encode_varint(len(out)) + out


def _encode_value(spec: _Spec, value: Any) -> bytes:
    kind = spec.kind
    if kind <= _VARINT:
        high = spec.high if spec.high is not None else _TYPE_HIGH[kind]
        if not isinstance(value, int) or not spec.low <= value <= high:
            raise ValueError(f"property {spec.name} must be in {spec.low}..{high}, not {value!r}")
        if kind == _BYTE:
            return bytes((value,))
        if kind == _U16:
            return value.to_bytes(2, "big")
        if kind == _U32:
            return value.to_bytes(4, "big")
        return encode_varint(value)
    if kind == _STRING:
        return encode_string(value)
    if kind == _BINARY:
        return encode_binary(value)
    key, val = value
    return encode_string(key) + encode_string(val)
