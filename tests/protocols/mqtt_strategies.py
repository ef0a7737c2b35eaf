"""Hypothesis strategies for valid MQTT packets of either version.

The property table here is written from the MQTT 5.0 standard (section 2.2.2.2),
independently of :mod:`protocols.mqtt.properties`, so the tests check the codec's
table instead of repeating it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from protocols.mqtt import (
    Auth,
    ConnAck,
    Connect,
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
    Will,
)

WILL = 0
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH = 8, 9, 10, 11, 14, 15

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
level = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#"), max_size=6
)
topic_names = st.lists(level, min_size=1, max_size=4).map("/".join).filter(bool)
topic_filters = st.builds(
    lambda levels, last: "/".join(levels + ([last] if last else [])),
    st.lists(st.one_of(level, st.just("+")), max_size=4),
    st.sampled_from(["", "#", "+"]),
).filter(lambda f: f and not f.startswith("$share/"))
packet_ids = st.integers(1, 0xFFFF)
u8_flag = st.integers(0, 1)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
blob = st.binary(max_size=16)

_REASON = {CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH}
_ALL = {WILL, *range(1, 16)}
PROPERTIES: dict[str, tuple[Any, set[int]]] = {
    "payload_format_indicator": (u8_flag, {PUBLISH, WILL}),
    "message_expiry_interval": (u32, {PUBLISH, WILL}),
    "content_type": (text, {PUBLISH, WILL}),
    "response_topic": (topic_names, {PUBLISH, WILL}),
    "correlation_data": (blob, {PUBLISH, WILL}),
    "session_expiry_interval": (u32, {CONNECT, CONNACK, DISCONNECT}),
    "assigned_client_identifier": (text, {CONNACK}),
    "server_keep_alive": (u16, {CONNACK}),
    "authentication_method": (text, {CONNECT, CONNACK, AUTH}),
    "authentication_data": (blob, {CONNECT, CONNACK, AUTH}),
    "request_problem_information": (u8_flag, {CONNECT}),
    "will_delay_interval": (u32, {WILL}),
    "request_response_information": (u8_flag, {CONNECT}),
    "response_information": (text, {CONNACK}),
    "server_reference": (text, {CONNACK, DISCONNECT}),
    "reason_string": (text, _REASON),
    "receive_maximum": (st.integers(1, 0xFFFF), {CONNECT, CONNACK}),
    "topic_alias_maximum": (u16, {CONNECT, CONNACK}),
    "topic_alias": (st.integers(1, 0xFFFF), {PUBLISH}),
    "maximum_qos": (u8_flag, {CONNACK}),
    "retain_available": (u8_flag, {CONNACK}),
    "maximum_packet_size": (st.integers(1, 0xFFFF_FFFF), {CONNECT, CONNACK}),
    "wildcard_subscription_available": (u8_flag, {CONNACK}),
    "subscription_identifier_available": (u8_flag, {CONNACK}),
    "shared_subscription_available": (u8_flag, {CONNACK}),
}
subscription_id = st.integers(1, 268_435_455)


def properties(kind: int, version: int) -> st.SearchStrategy[Properties]:
    """Valid properties for a packet of ``kind`` (empty in 3.1.1)."""
    if version == 4:
        return st.just(Properties())
    fields: dict[str, Any] = {
        name: st.none() | strategy
        for name, (strategy, kinds) in PROPERTIES.items()
        if kind in kinds
    }
    fields["user_properties"] = st.lists(st.tuples(text, text), max_size=3).map(tuple)
    if kind == PUBLISH:
        fields["subscription_identifiers"] = st.lists(subscription_id, max_size=3).map(tuple)
    elif kind == SUBSCRIBE:
        fields["subscription_identifiers"] = st.lists(subscription_id, max_size=1).map(tuple)
    return st.fixed_dictionaries({}, optional=fields).map(lambda d: Properties(**d))


def wills(version: int) -> st.SearchStrategy[Will]:
    return st.builds(
        Will,
        topic=topic_names,
        payload=blob,
        qos=st.integers(0, 2),
        retain=st.booleans(),
        properties=properties(WILL, version),
    )


def connects(version: int) -> st.SearchStrategy[Connect]:
    def build(username: str | None, password: bytes | None, **kw: Any) -> Connect:
        if version == 4 and username is None:
            password = None  # 3.1.1 has no password without a user name
        return Connect(protocol_version=version, username=username, password=password, **kw)

    return st.builds(
        build,
        client_id=text,
        clean_start=st.booleans(),
        keep_alive=u16,
        username=st.none() | text,
        password=st.none() | blob,
        will=st.none() | wills(version),
        properties=properties(CONNECT, version),
    )


def _codes(version: int, v4: list[int], v5: list[int]) -> st.SearchStrategy[int]:
    return st.sampled_from(v4 if version == 4 else v5)


def connacks(version: int) -> st.SearchStrategy[ConnAck]:
    codes = _codes(
        version,
        list(range(6)),
        [
            0,
            128,
            129,
            130,
            131,
            132,
            133,
            134,
            135,
            136,
            137,
            138,
            140,
            144,
            149,
            151,
            153,
            154,
            155,
            156,
            157,
            159,
        ],
    )
    return st.builds(
        lambda present, code, props: ConnAck(present and not code, code, props),
        st.booleans(),
        codes,
        properties(CONNACK, version),
    )


def publishes(version: int) -> st.SearchStrategy[Publish]:
    def build(qos: int, dup: bool, pid: int, **kw: Any) -> Publish:
        return Publish(qos=qos, dup=dup and qos > 0, packet_id=pid if qos else None, **kw)

    return st.builds(
        build,
        topic=topic_names,
        payload=st.binary(max_size=64),
        qos=st.integers(0, 2),
        retain=st.booleans(),
        dup=st.booleans(),
        pid=packet_ids,
        properties=properties(PUBLISH, version),
    )


def acks(cls: type[PubAck | PubRec | PubRel | PubComp], version: int) -> st.SearchStrategy[Any]:
    if cls in (PubAck, PubRec):
        v5 = [0, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
    else:
        v5 = [0, 0x92]
    return st.builds(
        cls,
        packet_id=packet_ids,
        reason_code=_codes(version, [0], v5),
        properties=properties(cls.type, version),
    )


def subscribes(version: int) -> st.SearchStrategy[Subscribe]:
    if version == 4:
        subscription = st.builds(Subscription, topic_filters, st.integers(0, 2))
    else:
        subscription = st.builds(
            Subscription,
            topic_filters,
            st.integers(0, 2),
            st.booleans(),
            st.booleans(),
            st.integers(0, 2),
        )
    return st.builds(
        Subscribe,
        packet_id=packet_ids,
        subscriptions=st.lists(subscription, min_size=1, max_size=4).map(tuple),
        properties=properties(SUBSCRIBE, version),
    )


def subacks(version: int) -> st.SearchStrategy[SubAck]:
    code = _codes(
        version, [0, 1, 2, 0x80], [0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]
    )
    return st.builds(
        SubAck,
        packet_id=packet_ids,
        reason_codes=st.lists(code, min_size=1, max_size=4).map(tuple),
        properties=properties(SUBACK, version),
    )


def unsubscribes(version: int) -> st.SearchStrategy[Unsubscribe]:
    return st.builds(
        Unsubscribe,
        packet_id=packet_ids,
        topic_filters=st.lists(topic_filters, min_size=1, max_size=4).map(tuple),
        properties=properties(UNSUBSCRIBE, version),
    )


def unsubacks(version: int) -> st.SearchStrategy[UnsubAck]:
    if version == 4:
        return st.builds(UnsubAck, packet_id=packet_ids)
    code = st.sampled_from([0, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91])
    return st.builds(
        UnsubAck,
        packet_id=packet_ids,
        reason_codes=st.lists(code, min_size=1, max_size=4).map(tuple),
        properties=properties(UNSUBACK, version),
    )


def disconnects(version: int) -> st.SearchStrategy[Disconnect]:
    v5 = [0, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93]
    v5 += [0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0]
    v5 += [0xA1, 0xA2]
    return st.builds(
        Disconnect,
        reason_code=_codes(version, [0], v5),
        properties=properties(DISCONNECT, version),
    )


def auths() -> st.SearchStrategy[Auth]:
    return st.builds(
        Auth, reason_code=st.sampled_from([0, 0x18, 0x19]), properties=properties(AUTH, 5)
    )


def client_packets(version: int) -> st.SearchStrategy[Packet]:
    """Packets a client sends after CONNECT."""
    options: list[st.SearchStrategy[Any]] = [
        publishes(version),
        acks(PubAck, version),
        acks(PubRec, version),
        acks(PubRel, version),
        acks(PubComp, version),
        subscribes(version),
        unsubscribes(version),
        st.just(PingReq()),
        disconnects(version),
    ]
    if version == 5:
        options.append(auths())
    return st.one_of(options)


def server_packets(version: int) -> st.SearchStrategy[Packet]:
    """Packets a server sends."""
    options: list[st.SearchStrategy[Any]] = [
        connacks(version),
        publishes(version),
        acks(PubAck, version),
        acks(PubRec, version),
        acks(PubRel, version),
        acks(PubComp, version),
        subacks(version),
        unsubacks(version),
        st.just(PingResp()),
        disconnects(version),
    ]
    if version == 5:
        options.append(auths())
    return st.one_of(options)
