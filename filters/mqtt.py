"""MQTT 3.1.1 / 5.0 filters: decoding, encoding, authorisation, access lists, and
the broker-side end of an MQTT proxy.

A packet is a message: ``MessageStart(packet)``, then for a PUBLISH one
``Data(payload)`` (none for an empty payload), then ``MessageEnd()``. The packet
is a frozen object from :mod:`protocols.mqtt` (``Connect``, ``Publish``,
``Subscribe``...) with every header field. A ``Publish`` in ``MessageStart``
keeps its ``payload`` too: it is the same ``bytes`` object as the ``Data`` event,
so keeping it costs nothing (removing it would copy the packet). **The payload
that counts is the one in the Data events**: ``encode_mqtt`` encodes what
``Data`` carries, so ``replace_data`` can rewrite payloads.

======================================  ==============================================
builder method                          what it does
======================================  ==============================================
``decode_mqtt(side="server")``          bytes -> packet messages (``side="client"``:
                                        what a broker sends)
``encode_mqtt(version=None)``           packet messages -> bytes; answers a decoding
                                        error (see below)
``authorize_mqtt(check)``               ``check(ctx, connect)`` accepts or refuses
                                        each CONNECT
``acl_mqtt(publish=, subscribe=)``      topics a client may publish to / subscribe to
``proxy_mqtt().to(upstream)``           sends the client's packets to ``upstream``
                                        (``encode_mqtt().connect(BROKER)``), writes
                                        the broker's bytes and the local answers back
======================================  ==============================================

Context variables, set by ``decode_mqtt`` from the CONNECT (server side) before
it outputs the CONNECT: ``ctx.mqtt_version`` (4 or 5), ``ctx.mqtt_client_id``,
``ctx.mqtt_username`` (``None`` without one). A ``branch`` after ``decode_mqtt``
sees them on its first event, so it routes a whole connection by client id or
user name; :func:`matches_topic` makes a condition on a packet's topic for
callbacks such as ``handle_message_start``.

Answers made by the proxy. Filters in the middle of a pipeline cannot write to
the client, so ``authorize_mqtt`` and ``acl_mqtt`` output their answers as
messages whose head is a :class:`Reply` (``MessageStart(Reply(packet)),
MessageEnd()``). ``proxy_mqtt`` writes them to the client, between the broker's
packets (it tracks the broker's packet boundaries, so an answer never lands
inside a broker packet), and sends everything else to its sub-pipeline. Without
a proxy (a pipeline that serves MQTT itself), ``encode_mqtt`` encodes a
``Reply`` like any packet.

Errors. A malformed packet makes ``decode_mqtt`` output the packets before it,
then ``StreamEnd(ProtocolError)``. The answer to the client is written by
whichever of ``proxy_mqtt`` or ``encode_mqtt`` faces the client (as an HTTP
response encoder answers 400): MQTT 5.0 gets a DISCONNECT with the reason code
(0x81 Malformed Packet, 0x82 Protocol Error, 0x95 Packet too large...), or a
CONNACK with it when the CONNECT itself is bad; MQTT 3.1.1 gets a CONNACK 0x01
for an unsupported protocol level and otherwise the connection is just closed.
``proxy_mqtt`` then closes its broker connection without a DISCONNECT, so the
broker publishes the client's will, as it would for any broken client. A
refused CONNECT (``authorize_mqtt``, or a will topic ``acl_mqtt`` denies) ends
the stream with ``StreamEnd(Refused)`` after the CONNACK; the broker is never
contacted.

Example (runnable): an authenticating, topic-restricted MQTT proxy in front of a
broker, checked here in memory with packets made by our own codec::

    import trio
    from pipeline import Proxy, StreamEnd
    from pipeline.testing import run_layout, join_data
    from protocols.mqtt import ConnAck, Connect, Decoder, encode

    def check(ctx, connect):
        return connect.username == "sensor" and connect.password == b"secret"

    proxy = Proxy()
    (proxy.pipeline("mqtt")
        .decode_mqtt(max_packet_size=64 * 1024)
        .authorize_mqtt(check)
        .acl_mqtt(publish=["sensors/#"], subscribe=["commands/+"])
        .proxy_mqtt().to(lambda p: p.encode_mqtt().connect("127.0.0.1:1883")))

    intruder = encode(Connect("c1", 5, username="sensor", password=b"guess"), 5)
    out = trio.run(run_layout, proxy.layout("mqtt"), [intruder, StreamEnd()])
    assert Decoder(version=5).feed(join_data(out)) == [ConnAck(reason_code=0x87)]
    assert out[-1].error.reason_code == 0x87          # StreamEnd(Refused)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.live import Pipeline
from protocols.mqtt import (
    CONNACK_REASON_CODES,
    ConnAck,
    Connect,
    Decoder,
    Framer,
    Packet,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    encode,
    error_answer,
)
from protocols.mqtt.topics import TopicPattern

from ._callback import as_async

__all__ = [
    "AclMqtt",
    "AuthorizeMqtt",
    "DecodeMqtt",
    "EncodeMqtt",
    "ProxyMqtt",
    "Refused",
    "Reply",
    "matches_topic",
]

_END = MessageEnd()
#: The default bound on one packet: generous for telemetry, small enough that a
#: client cannot make the proxy buffer much (the protocol allows 256 MiB).
DEFAULT_MAX_PACKET_SIZE = 1 << 20

# CONNACK codes: MQTT 5.0 reason codes and the 3.1.1 return code closest to each.
NOT_AUTHORIZED = 0x87
_V311_RETURN_CODES = {0x84: 1, 0x85: 2, 0x88: 3, 0x89: 3, 0x86: 4, 0x8C: 4, 0x87: 5}


@dataclass(frozen=True, slots=True)
class Reply:
    """The head of a message that answers the client directly (made by
    ``authorize_mqtt`` and ``acl_mqtt``): ``proxy_mqtt`` or ``encode_mqtt`` writes
    ``packet`` to the client; it never reaches the broker."""

    packet: Packet


class Refused(Exception):
    """A CONNECT was refused; carried by ``StreamEnd`` after the CONNACK.
    ``reason_code`` is the MQTT 5.0 reason code the CONNACK gave."""

    def __init__(self, message: str, reason_code: int = NOT_AUTHORIZED) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def matches_topic(pattern: str) -> Callable[[Any, Any], bool]:
    """A condition ``fn(ctx, packet)``: true for a PUBLISH whose topic matches
    ``pattern`` (``+``/``#`` wildcards) and for a SUBSCRIBE whose every filter
    stays inside it; false for anything else. For ``handle_message_start`` and
    other per-packet callbacks::

        from filters.mqtt import matches_topic

        is_alarm = matches_topic("alarms/#")

        def count_alarms(ctx, packet):
            if is_alarm(ctx, packet):
                ctx.set(alarms=ctx.get("alarms", 0) + 1)
    """
    compiled = TopicPattern(pattern)

    def condition(ctx: Any, packet: Any) -> bool:
        kind = type(packet)
        if kind is Publish:
            return compiled.matches(packet.topic)
        if kind is Subscribe:
            return all(compiled.covers(s.topic_filter) for s in packet.subscriptions)
        return False

    condition.__name__ = f"matches_topic({pattern!r})"
    return condition


def _positive_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"max_packet_size must be an int >= 2, got {value!r}")
    return value


def _version_of(ctx: Any, fixed: int | None) -> int | None:
    return fixed if fixed is not None else ctx.get("mqtt_version")


class DecodeMqtt(Filter):
    """``decode_mqtt(side="server", max_packet_size=1 MiB, version=None)``: bytes
    to packet messages.

    ``side="server"`` decodes what a client sends: the first packet must be a
    CONNECT, whose protocol level sets the version (and ``ctx.mqtt_version``,
    ``ctx.mqtt_client_id``, ``ctx.mqtt_username``). ``side="client"`` decodes
    what a broker sends, in ``version`` or else ``ctx.mqtt_version``.
    ``max_packet_size`` bounds one packet, header included (0x95 beyond it).
    """

    name = "decode_mqtt"

    def __init__(
        self,
        side: Literal["server", "client"] = "server",
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        version: int | None = None,
    ) -> None:
        if side not in ("server", "client"):
            raise ValueError(f"side must be 'server' or 'client', got {side!r}")
        if version not in (None, 4, 5):
            raise ValueError(f"version must be 4, 5 or None, got {version!r}")
        self.side = side
        self.max_packet_size = _positive_size(max_packet_size)
        self.version = version
        self._decoder: Decoder | None = None
        self._failed = False

    def _new_decoder(self) -> Decoder:
        if self.side == "server":
            return Decoder(self.version, side="server", max_packet_size=self.max_packet_size)
        version = _version_of(self.context, self.version)
        if version is None:
            raise PipelineError(
                "decode_mqtt(side='client') needs version= or a server-side decode_mqtt "
                "earlier in the stream (ctx.mqtt_version)"
            )
        return Decoder(version, max_packet_size=self.max_packet_size)

    async def on_event(self, event: Event) -> None:
        if self._failed:
            return
        kind = type(event)
        if kind is Data:
            decoder = self._decoder or self._new_decoder()
            self._decoder = decoder
            try:
                packets = decoder.feed(event.data)  # type: ignore[union-attr]
            except ProtocolError as exc:
                self._failed = True
                await self._output_packets(exc.packets)
                await self.output(StreamEnd(exc))
                return
            await self._output_packets(packets)
        elif kind is StreamEnd:
            await self.output(event)
        # Message events in a byte stream carry nothing: dropped.

    async def _output_packets(self, packets: Iterable[Packet]) -> None:
        output = self.output
        for packet in packets:
            kind = type(packet)
            if kind is Publish:
                await output(MessageStart(packet))
                if packet.payload:  # type: ignore[union-attr]
                    await output(Data(packet.payload))  # type: ignore[union-attr]
                await output(_END)
                continue
            if kind is Connect:
                self.context.set(
                    mqtt_version=packet.protocol_version,  # type: ignore[union-attr]
                    mqtt_client_id=packet.client_id,  # type: ignore[union-attr]
                    mqtt_username=packet.username,  # type: ignore[union-attr]
                )
            await output(MessageStart(packet))
            await output(_END)


class EncodeMqtt(Filter):
    """``encode_mqtt(version=None)``: packet messages to bytes, in ``version`` or
    else ``ctx.mqtt_version`` (a CONNECT is encoded in its own version). A PUBLISH
    carries the payload of its ``Data`` events. A ``Reply`` head is encoded as its
    packet. ``StreamEnd(ProtocolError)`` is answered (DISCONNECT/CONNACK, see the
    module docs) before it is passed on. ``Data`` outside messages passes as is."""

    name = "encode_mqtt"

    def __init__(self, version: int | None = None) -> None:
        if version not in (None, 4, 5):
            raise ValueError(f"version must be 4, 5 or None, got {version!r}")
        self.version = version
        self._packet: Packet | None = None
        self._chunks: list[bytes] | None = None  # the payload of the PUBLISH in progress

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is MessageStart:
            head = event.head  # type: ignore[union-attr]
            if type(head) is Reply:
                head = head.packet
            self._packet = head
            self._chunks = [] if type(head) is Publish else None
        elif kind is Data:
            if self._chunks is not None:
                self._chunks.append(event.data)  # type: ignore[union-attr]
            elif self._packet is None:
                await self.output(event)
        elif kind is MessageEnd:
            packet, self._packet = self._packet, None
            if packet is None:
                return
            chunks, self._chunks = self._chunks, None
            if chunks is not None:
                packet = _with_payload(packet, chunks)  # type: ignore[arg-type]
            await self.output(Data(encode(packet, self._version(packet))))
        else:
            error = event.error  # type: ignore[union-attr]
            if isinstance(error, ProtocolError):
                answer = error_answer(error)
                if answer is not None:
                    await self.output(Data(encode(*answer)))
            await self.output(event)

    def _version(self, packet: Packet) -> int:
        if type(packet) is Connect:
            return packet.protocol_version
        version = _version_of(self.context, self.version)
        if version is None:
            raise PipelineError("encode_mqtt: no version= and no ctx.mqtt_version")
        return int(version)


def _with_payload(packet: Publish, chunks: list[bytes]) -> Publish:
    # The common case (payload untouched) keeps the packet: no copy, no new object.
    if len(chunks) == 1:
        if chunks[0] is packet.payload:
            return packet
        return Publish(
            packet.topic,
            chunks[0],
            packet.qos,
            packet.retain,
            packet.dup,
            packet.packet_id,
            packet.properties,
        )
    payload = b"".join(chunks)
    if payload == packet.payload:
        return packet
    return Publish(
        packet.topic,
        payload,
        packet.qos,
        packet.retain,
        packet.dup,
        packet.packet_id,
        packet.properties,
    )


def _connack_refusal(version: int, code: int) -> ConnAck:
    if version == 5:
        return ConnAck(False, code)
    return ConnAck(False, _V311_RETURN_CODES.get(code, 5))


async def _refuse(f: Filter, connect: Connect, code: int, why: str) -> None:
    await f.output(MessageStart(Reply(_connack_refusal(connect.protocol_version, code))))
    await f.output(_END)
    await f.output(StreamEnd(Refused(f"CONNECT of {connect.client_id!r} refused: {why}", code)))


class AuthorizeMqtt(Filter):
    """``authorize_mqtt(check)``: ``check(ctx, connect)`` (plain or ``async
    def``) decides each CONNECT. A true value (``True``, a user record...) or the
    reason code ``0`` accepts it; a false one (``False``, ``None``) refuses it
    with 0x87 Not authorized; a CONNACK reason code (0x86 bad user name or
    password, 0x8A banned...) refuses it with that code; any other integer
    refuses it with 0x87.
    3.1.1 clients get the closest return code (0x87 -> 5, 0x86 -> 4...). A refusal
    is a ``Reply(CONNACK)`` then ``StreamEnd(Refused)``; nothing is forwarded.
    After an accepted CONNECT every event passes untouched."""

    name = "authorize_mqtt"

    def __init__(self, check: Callable[..., Any]) -> None:
        if not callable(check):
            raise TypeError(f"authorize_mqtt() expects a function, got {check!r}")
        self.check: Callable[..., Awaitable[Any]] = as_async(check)
        self._state = 0  # 0: before CONNECT, 1: accepted, 2: refused

    async def on_event(self, event: Event) -> None:
        state = self._state
        if state == 1:
            await self.output(event)
            return
        if state == 2:
            return
        if type(event) is MessageStart and type(event.head) is Connect:
            connect: Connect = event.head
            verdict = await self.check(self.context, connect)
            if type(verdict) is int:  # a reason code (bool is not int here)
                accepted = verdict == 0
                code = verdict if verdict in CONNACK_REASON_CODES else NOT_AUTHORIZED
            else:
                accepted = bool(verdict)
                code = NOT_AUTHORIZED
            if accepted:
                self._state = 1
                await self.output(event)
                return
            self._state = 2
            await _refuse(self, connect, code, "by authorize_mqtt")
            return
        await self.output(event)


_PLACEHOLDERS = ("{client_id}", "{username}")


def _texts(name: str, value: Any) -> tuple[str, ...] | None:
    """The patterns of an ``acl_mqtt`` argument, checked (placeholders and all)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    texts = tuple(value)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"{name}: expected topic filters, got {text!r}")
        try:
            TopicPattern(_fill(text, "x", "x"))
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return texts


def _fill(text: str, client_id: str, username: str) -> str:
    return text.replace("{client_id}", client_id).replace("{username}", username)


def _compile(
    texts: tuple[str, ...] | None, client_id: str = "", username: str = ""
) -> tuple[TopicPattern, ...] | None:
    if texts is None:
        return None
    return tuple(TopicPattern(_fill(t, client_id, username)) for t in texts)


def _unsafe_in_topic(value: str | None) -> bool:
    """A value that cannot stand for one topic level (it would add levels or
    wildcards to a pattern)."""
    return not value or "/" in value or "+" in value or "#" in value


class AclMqtt(Filter):
    """``acl_mqtt(publish=None, subscribe=None, deny_publish=(), deny_subscribe=())``:
    which topics a client may publish to and subscribe to.

    Each argument is a topic filter or a list of them (``+``/``#`` wildcards).
    ``None`` allows everything; the ``deny_*`` lists win over the allow lists.
    A PUBLISH is allowed if its topic matches (a 5.0 topic alias is resolved);
    a subscription if every topic it can receive stays inside an allowed filter
    (``sensors/#`` allows ``sensors/+/temp``, not ``#``; a shared subscription
    ``$share/g/f`` is judged by ``f``). The will topic of a CONNECT is checked
    like a PUBLISH.

    Per-client topics: ``{client_id}`` and ``{username}`` in a pattern stand for
    the CONNECT's client identifier and user name (``publish="devices/{client_id}/#"``
    lets each device publish under its own topic only). They fill exactly one
    level: a client whose identifier (or user name) is empty or contains ``/``,
    ``+`` or ``#`` is refused at CONNECT (0x85 Client Identifier not valid / 0x87;
    3.1.1: 2 / 5).

    What a client gets for a denied...

    * PUBLISH, MQTT 5.0: QoS 1 a PUBACK 0x87, QoS 2 a PUBREC 0x87, QoS 0 nothing
      (the standard's way to say "not authorized"); the message is dropped.
    * PUBLISH, MQTT 3.1.1 (which has no way to say it): QoS 0 is dropped, QoS 1
      and 2 are acknowledged (PUBACK; PUBREC then PUBCOMP for its PUBREL) and
      dropped, so the client does not resend it forever.
    * SUBSCRIBE: the whole SUBSCRIBE is refused when any of its filters is denied
      (simple and predictable: no partial subscriptions): a SUBACK with 0x87
      (5.0) or 0x80 (3.1.1) for every filter; nothing reaches the broker.
    * CONNECT with a denied will topic: CONNACK 0x87 / 5, as ``authorize_mqtt``.

    Acknowledgements made here may overtake the broker's acknowledgements of
    earlier messages; MQTT clients match acknowledgements by packet identifier.
    """

    name = "acl_mqtt"

    def __init__(
        self,
        publish: str | Iterable[str] | None = None,
        subscribe: str | Iterable[str] | None = None,
        deny_publish: str | Iterable[str] = (),
        deny_subscribe: str | Iterable[str] = (),
    ) -> None:
        texts = (
            _texts("publish", publish),
            _texts("subscribe", subscribe),
            _texts("deny_publish", deny_publish) or (),
            _texts("deny_subscribe", deny_subscribe) or (),
        )
        self._texts = texts
        self._templated = any(
            ph in text for group in texts if group for text in group for ph in _PLACEHOLDERS
        )
        self._set_patterns()
        self._dropping = False  # inside a denied message: drop until its MessageEnd
        self._aliases: dict[int, str] = {}
        self._denied_qos2: set[int] = set()  # 3.1.1 PUBRECs we sent: their PUBREL is ours

    def _set_patterns(self, client_id: str = "", username: str = "") -> None:
        publish, subscribe, deny_publish, deny_subscribe = self._texts
        self.publish = _compile(publish, client_id, username)
        self.subscribe = _compile(subscribe, client_id, username)
        self.deny_publish = _compile(deny_publish, client_id, username) or ()
        self.deny_subscribe = _compile(deny_subscribe, client_id, username) or ()

    def may_publish(self, topic: str) -> bool:
        if any(p.matches(topic) for p in self.deny_publish):
            return False
        return self.publish is None or any(p.matches(topic) for p in self.publish)

    def may_subscribe(self, topic_filter: str) -> bool:
        if any(p.overlaps(topic_filter) for p in self.deny_subscribe):
            return False
        return self.subscribe is None or any(p.covers(topic_filter) for p in self.subscribe)

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is MessageStart:
            head = event.head  # type: ignore[union-attr]
            htype = type(head)
            if htype is Publish:
                if self.may_publish(self._topic(head)):
                    await self.output(event)
                else:
                    self._dropping = True
                    await self._deny_publish(head)
                return
            if htype is Subscribe:
                if not all(self.may_subscribe(s.topic_filter) for s in head.subscriptions):
                    self._dropping = True
                    failure = NOT_AUTHORIZED if self._v5 else 0x80
                    codes = (failure,) * len(head.subscriptions)
                    await self._reply(SubAck(head.packet_id, codes))
                    return
            elif htype is PubRel and head.packet_id in self._denied_qos2:
                self._denied_qos2.discard(head.packet_id)
                self._dropping = True
                await self._reply(PubComp(head.packet_id))
                return
            elif htype is Connect:
                if self._templated:
                    texts = [t for group in self._texts if group for t in group]
                    for value, placeholder, code in (
                        (head.client_id, "{client_id}", 0x85),
                        (head.username, "{username}", NOT_AUTHORIZED),
                    ):
                        if _unsafe_in_topic(value) and any(placeholder in t for t in texts):
                            self._dropping = True
                            why = f"{placeholder[1:-1]} {value!r} cannot fill an acl_mqtt topic"
                            await _refuse(self, head, code, why)
                            return
                    self._set_patterns(head.client_id, head.username or "")
                if head.will is not None and not self.may_publish(head.will.topic):
                    self._dropping = True
                    await _refuse(self, head, NOT_AUTHORIZED, "will topic denied by acl_mqtt")
                    return
        elif self._dropping:
            if kind is MessageEnd:
                self._dropping = False
                return
            if kind is Data:
                return
            self._dropping = False
        await self.output(event)

    @property
    def _v5(self) -> bool:
        return bool(self.context.get("mqtt_version") == 5)

    def _topic(self, publish: Publish) -> str:
        alias = publish.properties.topic_alias
        if alias is None:
            return publish.topic
        if publish.topic:
            self._aliases[alias] = publish.topic
            return publish.topic
        return self._aliases.get(alias, "")  # an unknown alias matches nothing

    async def _deny_publish(self, publish: Publish) -> None:
        pid = publish.packet_id
        if pid is None:
            return
        if self._v5:
            cls = PubAck if publish.qos == 1 else PubRec
            await self._reply(cls(pid, NOT_AUTHORIZED))
        elif publish.qos == 1:
            await self._reply(PubAck(pid))
        else:
            self._denied_qos2.add(pid)
            await self._reply(PubRec(pid))

    async def _reply(self, packet: Packet) -> None:
        await self.output(MessageStart(Reply(packet)))
        await self.output(_END)


class ProxyMqtt(Filter):
    """``proxy_mqtt().to(upstream)``: the broker-facing end of an MQTT proxy.

    Packet messages go to a sub-pipeline of ``upstream`` (typically
    ``encode_mqtt().connect(BROKER)``), opened on the first one; its output (the
    broker's bytes) is this filter's output, to the client. ``Reply`` messages are
    encoded and written to the client between two broker packets, never inside
    one. ``StreamEnd(ProtocolError)`` is answered to the client as
    ``encode_mqtt`` would and ``StreamEnd(Refused)`` passes on (after the
    refusing CONNACK); both close the sub-pipeline without sending the broker
    anything more, so the broker treats the client as gone (and publishes its
    will). A clean ``StreamEnd`` is passed to the sub-pipeline (``connect``
    half-closes); the stream ends when the broker's side does.
    """

    name = "proxy_mqtt"
    joint = True

    def __init__(self) -> None:
        self._sub: Pipeline | None = None
        self._reply: Packet | None = None  # a Reply message in progress
        self._framer = Framer()
        self._queued: list[bytes] = []  # answers waiting for a packet boundary
        self._writing = False
        self._ended = False

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        kind = type(event)
        if kind is MessageStart and type(event.head) is Reply:  # type: ignore[union-attr]
            self._reply = event.head.packet  # type: ignore[union-attr]
            return
        if self._reply is not None:
            if kind is MessageEnd:
                packet, self._reply = self._reply, None
                await self._answer(encode(packet, self._version()))
            return
        if kind is StreamEnd:
            error = event.error  # type: ignore[union-attr]
            if isinstance(error, (ProtocolError, Refused)):
                await self._fail(error)
                return
            if self._sub is None:
                self._ended = True
                await self.output(event)
                return
        sub = self._sub
        if sub is None:
            sub = self._sub = self.pipeline.sub(self.sub_layout, self._from_upstream)
        await sub.input(event)

    def _version(self) -> int:
        # decode_mqtt sets it before any packet reaches a filter that replies.
        return int(self.context.get("mqtt_version") or 4)

    async def _fail(self, error: BaseException) -> None:
        if self._sub is not None:
            self._sub.close()  # the broker sees the connection drop: the will goes out
        if isinstance(error, ProtocolError) and self._framer.at_boundary:
            answer = error_answer(error)
            if answer is not None:
                self._queued.append(encode(*answer))
        # An answer can only follow a whole broker packet: if the broker was cut
        # mid-packet, the client just sees the connection close.
        if self._queued and self._framer.at_boundary and not self._writing:
            data = b"".join(self._queued)
            self._queued.clear()
            await self.output(Data(data))
        self._ended = True
        await self.output(StreamEnd(error))

    async def _answer(self, data: bytes) -> None:
        self._queued.append(data)
        if not self._writing and self._framer.at_boundary:
            await self._write(None)

    async def _from_upstream(self, event: Event) -> None:
        if self._ended:
            return
        kind = type(event)
        if kind is Data:
            try:
                self._framer.feed(event.data)  # type: ignore[union-attr]
            except ProtocolError as exc:
                exc.message = f"from the broker: {exc.message}"
                self._queued.clear()
                self._ended = True
                if self._sub is not None:
                    self._sub.close()
                await self.output(StreamEnd(exc))
                return
            await self._write(event)
        elif kind is StreamEnd:
            self._ended = True
            if self._queued and self._framer.at_boundary and not self._writing:
                data = b"".join(self._queued)
                self._queued.clear()
                await self.output(Data(data))
            await self.output(event)
        # Message events: the upstream layout must output bytes (end it with
        # connect); messages are not re-encoded here.

    async def _write(self, event: Event | None) -> None:
        """Output ``event`` (a broker chunk) and then the queued answers, if the
        stream is at a packet boundary. One writer at a time."""
        self._writing = True
        try:
            if event is not None:
                await self.output(event)
            while self._queued and self._framer.at_boundary and not self._ended:
                data = b"".join(self._queued)
                self._queued.clear()
                await self.output(Data(data))
        finally:
            self._writing = False


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [DecodeMqtt, EncodeMqtt, AuthorizeMqtt, AclMqtt, ProxyMqtt]
