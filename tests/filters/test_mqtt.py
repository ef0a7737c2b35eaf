"""The MQTT filters: in memory with packets of our codec, then end to end through
``trioxy run`` in front of a real mosquitto, driven by paho-mqtt clients."""

from __future__ import annotations

import importlib
import re
import socket
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.mqtt import Refused, Reply, matches_topic
from pipeline import ConfigError, Data, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.events import Event
from pipeline.filter import Filter
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.mqtt import (
    ConnAck,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    PingReq,
    ProtocolError,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    Will,
    encode,
)
from protocols.mqtt._wire import read_varint
from protocols.mqtt.properties import Properties
from tests.helpers import free_port, run_trioxy, wait_until
from tests.protocols.mqtt_broker import mosquitto, needs_mosquitto, raw_client

TIMEOUT = 10.0


def wire(version: int, *packets: Packet, client_id: str = "dev") -> bytes:
    connect = Connect(client_id, version, username="u")
    return b"".join(encode(p, version) for p in (connect, *packets))


def answers(out: list[Event], version: int) -> list[Packet]:
    return Decoder(version=version).feed(join_data(out))


# Docstrings -------------------------------------------------------------------


def test_module_example_runs() -> None:
    doc = importlib.import_module("filters.mqtt").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/mqtt.py example", "exec"), {})


def test_matches_topic_example_runs() -> None:
    doc = matches_topic.__doc__ or ""
    code = textwrap.dedent(doc.split("::\n", 1)[1])
    namespace: dict[str, Any] = {}
    exec(compile(code, "matches_topic example", "exec"), namespace)
    ctx = Context()
    namespace["count_alarms"](ctx, Publish("alarms/fire", b""))
    namespace["count_alarms"](ctx, Publish("sensors/t", b""))
    assert ctx.alarms == 1


# decode_mqtt / encode_mqtt ------------------------------------------------------


def codec_layout(**decode: Any) -> Any:
    return Proxy().pipeline("codec").decode_mqtt(**decode).encode_mqtt()


@pytest.mark.parametrize("version", [4, 5])
async def test_decode_then_encode_gives_the_same_bytes(version: int) -> None:
    packets = [
        Publish("a/b", b"hello", qos=1, packet_id=1),
        Publish("a/c", b"", qos=0),
        Subscribe(2, (Subscription("a/#", 1),)),
        PingReq(),
        Disconnect(),
    ]
    data = wire(version, *packets)
    # Fed in odd pieces: decode_mqtt reassembles.
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    out = await run_layout(codec_layout(), [*chunks, StreamEnd()])
    assert join_data(out) == data
    assert out[-1] == StreamEnd()


async def test_messages_and_context_variables() -> None:
    seen: list[Any] = []
    proxy = Proxy()
    layout = (
        proxy.pipeline("m")
        .decode_mqtt()
        .handle_message_start(lambda ctx, head: seen.append((ctx.mqtt_client_id, head)))
    )
    publish = Publish("t", b"payload", qos=0)
    out = await run_layout(layout, [wire(5, publish, client_id="c-42"), StreamEnd()])
    connect = Connect("c-42", 5, username="u")
    assert out == [
        MessageStart(connect),
        MessageEnd(),
        MessageStart(publish),
        Data(b"payload"),
        MessageEnd(),
        StreamEnd(),
    ]
    assert [head for _, head in seen] == [connect, publish]
    assert {cid for cid, _ in seen} == {"c-42"}


async def test_payload_rewritten_by_replace_data_is_encoded() -> None:
    layout = (
        Proxy().pipeline("r").decode_mqtt().replace_data(lambda ctx, d: d.upper()).encode_mqtt()
    )
    out = await run_layout(layout, [wire(4, Publish("t", b"abc")), StreamEnd()])
    decoder = Decoder()
    _, publish = decoder.feed(join_data(out))
    assert publish == Publish("t", b"ABC")


async def test_routing_a_connection_by_user_name() -> None:
    proxy = Proxy()
    hits: list[str] = []
    (
        proxy.pipeline("main")
        .decode_mqtt()
        .branch(
            {
                lambda ctx: ctx.mqtt_username == "admin": lambda p: p.handle_stream_start(
                    lambda ctx: hits.append("admin")
                )
            },
            default=lambda p: p.handle_stream_start(lambda ctx: hits.append("device")),
        )
    )
    admin = encode(Connect("x", 4, username="admin"), 4)
    await run_layout(proxy.layout("main"), [admin, StreamEnd()])
    await run_layout(proxy.layout("main"), [wire(4), StreamEnd()])
    assert hits == ["admin", "device"]


@pytest.mark.parametrize(
    ("version", "bad", "expected"),
    [
        (5, b"\x30\x03\x00\x01+", [Disconnect(0x81)]),
        (5, b"\x30\xff\xff\xff\xff\x01", [Disconnect(0x81)]),
        (5, b"\x10\x00", [Disconnect(0x82)]),
        (4, b"\x30\x03\x00\x01+", []),
    ],
)
async def test_malformed_input_is_answered_by_encode_mqtt(
    version: int, bad: bytes, expected: list[Packet]
) -> None:
    out = await run_layout(codec_layout(), [wire(version) + bad, StreamEnd()])
    end = out[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, ProtocolError)
    connect_len = len(wire(version))
    assert answers([Data(join_data(out)[connect_len:])], version) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200), version=st.sampled_from([4, 5]))
def test_any_bytes_end_the_stream_cleanly(data: bytes, version: int) -> None:
    """Whatever follows a CONNECT, the codec filters output packets and one
    StreamEnd: no exception, no leftover task."""
    out = trio.run(run_layout, codec_layout(), [wire(version) + data, StreamEnd()])
    ends = [e for e in out if isinstance(e, StreamEnd)]
    assert len(ends) == 1 and out[-1] is ends[0]
    assert ends[0].error is None or isinstance(ends[0].error, ProtocolError)


async def test_packet_too_large_and_bad_protocol_level() -> None:
    big = encode(Publish("t", b"x" * 200), 5)
    out = await run_layout(codec_layout(max_packet_size=100), [wire(5) + big])
    assert join_data(out).endswith(encode(Disconnect(0x95), 5))
    level6 = b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c"
    out = await run_layout(codec_layout(), [level6])
    assert join_data(out) == encode(ConnAck(reason_code=1), 4)  # 3.1.1 form, code 1


async def test_client_side_decoding_takes_the_version_from_the_stream() -> None:
    """decode_mqtt(side="client") reads what a broker sends, in the version the
    server-side decode_mqtt of the same stream learnt (or the one given)."""
    broker = encode(ConnAck(True, 0, Properties(receive_maximum=5)), 5) + encode(
        Publish("t", b"p", qos=1, packet_id=3), 5
    )

    class BrokerAnswers(Filter):
        name = "broker_answers"

        async def on_event(self, event: Event) -> None:
            if type(event) is StreamEnd:
                await self.output(Data(broker))
                await self.output(event)

    proxy = Proxy()
    layout = (
        proxy.pipeline("c")
        .decode_mqtt()
        .add_filter(BrokerAnswers)
        .decode_mqtt(side="client")
        .encode_mqtt()
    )
    out = await run_layout(layout, [wire(5), StreamEnd()])
    assert join_data(out) == broker
    fixed = Proxy().pipeline("f").decode_mqtt(side="client", version=5).encode_mqtt(version=5)
    assert join_data(await run_layout(fixed, [broker, StreamEnd()])) == broker


async def test_client_side_without_a_version_is_a_pipeline_error() -> None:
    layout = Proxy().pipeline("n").decode_mqtt(side="client")
    with pytest.raises(BaseExceptionGroup) as info:
        await run_layout(layout, [b"\x20\x02\x00\x00"])
    assert info.group_contains(PipelineError, match="version")


def test_bad_arguments_are_load_errors() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match="side"):
        proxy.pipeline("a").decode_mqtt(side="middle")
    with pytest.raises(ConfigError, match="max_packet_size"):
        proxy.pipeline("b").decode_mqtt(max_packet_size=0)
    with pytest.raises(ConfigError, match="version"):
        proxy.pipeline("c").encode_mqtt(version=3)
    with pytest.raises(ConfigError, match="publish"):
        proxy.pipeline("d").acl_mqtt(publish=["a/#/b"])
    with pytest.raises(ConfigError, match="subscribe"):
        proxy.pipeline("d2").acl_mqtt(subscribe=["a/{client_id}#"])
    with pytest.raises(ConfigError, match="function"):
        proxy.pipeline("e").authorize_mqtt("yes")


# authorize_mqtt -------------------------------------------------------------------


def auth_layout(check: Callable[..., Any]) -> Any:
    return Proxy().pipeline("auth").decode_mqtt().authorize_mqtt(check).encode_mqtt()


@pytest.mark.parametrize(
    ("version", "verdict", "connack"),
    [
        (5, False, 0x87),
        (5, None, 0x87),
        (5, 0x86, 0x86),
        (5, 0x8A, 0x8A),
        (5, 0x42, 0x87),  # not a CONNACK code
        (5, "", 0x87),
        (4, False, 5),
        (4, 0x86, 4),
    ],
)
async def test_refused_connect(version: int, verdict: Any, connack: int) -> None:
    out = await run_layout(auth_layout(lambda ctx, c: verdict), [wire(version, PingReq())])
    assert answers(out, version) == [ConnAck(False, connack)]
    end = out[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, Refused)


@pytest.mark.parametrize("verdict", [True, 0, {"user": "alice"}])
async def test_accepted_connect_passes_everything(verdict: Any) -> None:
    async def check(ctx: Context, connect: Connect) -> Any:
        await trio.sleep(0)
        return verdict

    data = wire(5, PingReq())
    out = await run_layout(auth_layout(check), [data, StreamEnd()])
    assert join_data(out) == data and out[-1] == StreamEnd()


# acl_mqtt ------------------------------------------------------------------------


def acl_layout(**acl: Any) -> Any:
    return Proxy().pipeline("acl").decode_mqtt().acl_mqtt(**acl).encode_mqtt()


def split_packets(data: bytes) -> list[bytes]:
    """Encoded packets one by one, by their fixed headers."""
    out = []
    pos = 0
    while pos < len(data):
        length, body = read_varint(data, pos + 1, len(data))
        out.append(data[pos : body + length])
        pos = body + length
    return out


async def run_acl(version: int, *packets: Packet, **acl: Any) -> list[Packet]:
    """Everything the layout outputs after the CONNECT, decoded: the packets it
    forwards (client packets) and its replies (server packets), in order."""
    out = await run_layout(acl_layout(**acl), [wire(version, *packets), StreamEnd()])
    forwarded = Decoder(version=version, side="server")
    replies = Decoder(version=version)
    result: list[Packet] = []
    for one in split_packets(join_data(out)[len(wire(version)) :]):
        result += (forwarded if one[0] >> 4 in (3, 6, 8) else replies).feed(one)
    return result


@pytest.mark.parametrize("version", [4, 5])
async def test_allowed_publish_and_subscribe_pass(version: int) -> None:
    packets = [
        Publish("sensors/a", b"1", qos=1, packet_id=1),
        Subscribe(2, (Subscription("sensors/+/t", 1),)),
    ]
    out = await run_acl(version, *packets, publish="sensors/#", subscribe=["sensors/#"])
    assert out == packets


async def test_denied_publish_v5() -> None:
    out = await run_acl(
        5,
        Publish("secret", b"0", qos=0),
        Publish("secret", b"1", qos=1, packet_id=1),
        Publish("secret", b"2", qos=2, packet_id=2),
        Publish("ok", b"3", qos=0),
        publish=["ok"],
    )
    assert out == [PubAck(1, 0x87), PubRec(2, 0x87), Publish("ok", b"3")]


async def test_denied_publish_v311_is_acknowledged_and_dropped() -> None:
    out = await run_acl(
        4,
        Publish("secret", b"0", qos=0),
        Publish("secret", b"1", qos=1, packet_id=1),
        Publish("secret", b"2", qos=2, packet_id=2),
        PubRel(2),
        PubRel(9),  # not ours: forwarded
        publish=["ok"],
    )
    assert out == [PubAck(1), PubRec(2), PubComp(2), PubRel(9)]


@pytest.mark.parametrize(("version", "failure"), [(4, 0x80), (5, 0x87)])
async def test_denied_subscribe_refuses_the_whole_packet(version: int, failure: int) -> None:
    subscribe = Subscribe(3, (Subscription("sensors/a"), Subscription("#")))
    out = await run_acl(version, subscribe, subscribe=["sensors/#"])
    assert out == [SubAck(3, (failure, failure))]
    shared = Subscribe(4, (Subscription("$share/g/sensors/a"),))
    assert await run_acl(version, shared, subscribe=["sensors/#"]) == [shared]
    assert await run_acl(
        version, Subscribe(5, (Subscription("a/+"),)), deny_subscribe=["a/secret"]
    ) == [SubAck(5, (failure,))]


async def test_topic_alias_is_resolved() -> None:
    first = Publish("secret/x", b"1", properties=Properties(topic_alias=1))
    again = Publish("", b"2", qos=1, packet_id=5, properties=Properties(topic_alias=1))
    out = await run_acl(5, first, again, deny_publish="secret/#")
    assert out == [PubAck(5, 0x87)]


@pytest.mark.parametrize("version", [4, 5])
async def test_per_client_topics(version: int) -> None:
    mine = Publish("devices/dev/t", b"1", qos=1, packet_id=1)
    theirs = Publish("devices/other/t", b"2", qos=1, packet_id=2)
    subscribe = Subscribe(3, (Subscription("cmd/u/+"),))
    out = await run_acl(
        version,
        mine,
        theirs,
        subscribe,
        publish="devices/{client_id}/#",
        subscribe="cmd/{username}/#",
    )
    assert out == [mine, PubAck(2, 0x87 if version == 5 else 0), subscribe]


@pytest.mark.parametrize(("version", "code"), [(4, 2), (5, 0x85)])
async def test_a_client_id_that_cannot_fill_a_topic_level_is_refused(
    version: int, code: int
) -> None:
    layout = acl_layout(publish="devices/{client_id}/#")
    for client_id in ("a/b", "+", ""):
        connect = encode(Connect(client_id, version), version)
        out = await run_layout(layout, [connect])
        assert answers(out, version) == [ConnAck(False, code)]
        assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, Refused)
    # Without a placeholder, any client id is fine.
    out = await run_layout(acl_layout(publish="x"), [encode(Connect("a/b", 5), 5), StreamEnd()])
    assert out[-1] == StreamEnd()


async def test_denied_will_topic_refuses_connect() -> None:
    connect = Connect("d", 5, will=Will("secret/will", b"bye"))
    out = await run_layout(acl_layout(publish=["ok/#"]), [encode(connect, 5)])
    assert answers(out, 5) == [ConnAck(False, 0x87)]
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, Refused)


# proxy_mqtt in memory ---------------------------------------------------------------


class FakeBroker(Filter):
    """Upstream stand-in: answers the first message with half a PUBLISH, and the
    other half when the test says so."""

    name = "fake_broker"
    release: trio.Event
    half = encode(Publish("from/broker", b"x" * 50), 5)

    def __init__(self) -> None:
        self.started = False

    async def on_event(self, event: Event) -> None:
        if not self.started and type(event) is Data:
            self.started = True
            await self.output(Data(self.half[:20]))
            self.pipeline.start_task(self._rest)

    async def _rest(self) -> None:
        await FakeBroker.release.wait()
        await self.output(Data(self.half[20:]))


async def test_proxy_writes_replies_between_broker_packets() -> None:
    FakeBroker.release = trio.Event()
    proxy = Proxy()
    layout = (
        proxy.pipeline("p")
        .decode_mqtt()
        .acl_mqtt(publish=["ok"])
        .proxy_mqtt()
        .to(lambda p: p.encode_mqtt().add_filter(FakeBroker))
    )
    async with open_pipeline(layout) as h:
        await h.send(wire(5))
        await h.settle()
        assert h.data == FakeBroker.half[:20]
        await h.send(encode(Publish("denied", b"", qos=1, packet_id=7), 5))
        await h.settle()
        assert h.data == FakeBroker.half[:20]  # the PUBACK waits for the boundary
        FakeBroker.release.set()
        await h.settle()
        assert Decoder(version=5).feed(h.data) == [
            Publish("from/broker", b"x" * 50),
            PubAck(7, 0x87),
        ]


async def test_client_error_mid_broker_packet_closes_without_an_answer() -> None:
    """A DISCONNECT cannot be written inside the broker's half-sent packet: the
    client connection just ends (with the error)."""
    FakeBroker.release = trio.Event()
    layout = (
        Proxy()
        .pipeline("p")
        .decode_mqtt()
        .proxy_mqtt()
        .to(lambda p: p.encode_mqtt().add_filter(FakeBroker))
    )
    async with open_pipeline(layout) as h:
        await h.send(wire(5))
        await h.settle()
        await h.send(b"\x30\x03\x00\x01+")
        out = await h.settle()
    assert h.data == FakeBroker.half[:20]
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, ProtocolError)


class GarbageBroker(Filter):
    name = "garbage_broker"

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            await self.output(Data(b"\x30\xff\xff\xff\xff\x01"))


async def test_garbage_from_the_broker_ends_the_stream() -> None:
    layout = (
        Proxy()
        .pipeline("p")
        .decode_mqtt()
        .proxy_mqtt()
        .to(lambda p: p.encode_mqtt().add_filter(GarbageBroker))
    )
    out = await run_layout(layout, [wire(5)])
    assert join_data(out) == b""
    end = out[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, ProtocolError)
    assert "from the broker" in end.error.message


async def test_proxy_refusal_never_reaches_upstream() -> None:
    reached: list[Event] = []
    layout = (
        Proxy()
        .pipeline("p")
        .decode_mqtt()
        .authorize_mqtt(lambda ctx, c: False)
        .proxy_mqtt()
        .to(lambda p: p.handle_message_start(lambda ctx, h: reached.append(h)))
    )
    out = await run_layout(layout, [wire(4)])
    assert answers(out, 4) == [ConnAck(False, 5)]
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, Refused)
    assert reached == []


def test_reply_is_a_frozen_head() -> None:
    reply = Reply(PingReq())
    with pytest.raises(AttributeError):
        reply.packet = PingReq()  # type: ignore[misc]


# End to end: trioxy in front of mosquitto, paho clients --------------------------------

SCRIPT = """
import os

from pipeline import Proxy

BROKER = os.environ["BROKER"]


async def check(ctx, connect):
    return connect.username != "intruder"


proxy = Proxy()
(proxy.listen(os.environ["LISTEN"])
    .decode_mqtt(max_packet_size=64 * 1024)
    .authorize_mqtt(check)
    .acl_mqtt(publish=["sensors/#", "status/#"], subscribe=["sensors/#"])
    .proxy_mqtt().to(lambda p: p.encode_mqtt().connect(BROKER)))
"""


@contextmanager
def gateway(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """mosquitto and trioxy in front of it: (proxy port, broker port)."""
    script = tmp_path / "mqtt_proxy.py"
    script.write_text(SCRIPT)
    with mosquitto() as broker:
        port = free_port()
        env = {"LISTEN": f"127.0.0.1:{port}", "BROKER": f"127.0.0.1:{broker}"}
        with run_trioxy(script, env=env) as proc:
            proc.wait_listening(port)
            try:
                yield port, broker
            finally:
                proc.stop()
                assert "Traceback" not in proc.stderr, proc.stderr


class PahoClient:
    """A paho client with its callbacks recorded."""

    def __init__(self, port: int, version: int, client_id: str, username: str = "device"):
        protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        self.connected: list[Any] = []
        self.subacks: list[Any] = []
        self.messages: list[paho.MQTTMessage] = []
        self.acks: dict[int, Any] = {}
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.append(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.append(rcs)
        self.client.on_message = lambda c, u, msg: self.messages.append(msg)
        self.client.on_publish = lambda c, u, mid, rc, p: self.acks.setdefault(mid, rc)
        self.client.username_pw_set(username, "pw")
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        wait_until(lambda: self.connected, f"CONNACK for {client_id}")

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def paho_client(
    port: int, version: int, client_id: str, username: str = "device"
) -> Iterator[PahoClient]:
    client = PahoClient(port, version, client_id, username)
    try:
        yield client
    finally:
        client.close()


@needs_mosquitto
@pytest.mark.parametrize("version", [4, 5])
def test_end_to_end_through_trioxy_and_mosquitto(tmp_path: Path, version: int) -> None:
    with gateway(tmp_path) as (port, broker):
        # A watcher on the broker itself sees what the proxy let through.
        with (
            paho_client(broker, version, "watcher") as watcher,
            paho_client(port, version, "sub") as sub,
            paho_client(port, version, "pub") as pub,
        ):
            assert watcher.connected[0] == 0 and sub.connected[0] == 0
            watcher.client.subscribe("#", qos=2)
            sub.client.subscribe("sensors/#", qos=2)
            wait_until(lambda: len(sub.subacks) == 1 and watcher.subacks, "SUBACKs")
            assert [rc.value for rc in sub.subacks[0]] == [2]

            # A denied subscription gets a failure SUBACK.
            sub.client.subscribe("secret/#", qos=1)
            wait_until(lambda: len(sub.subacks) == 2, "the refusing SUBACK")
            assert sub.subacks[1][0].is_failure

            # Denied publications first, then allowed ones at every QoS: the
            # watcher gets the allowed ones in order, and never the denied ones.
            denied = pub.client.publish("secret/x", b"no", qos=1)
            pub.client.publish("secret/y", b"no", qos=0)
            infos = [
                pub.client.publish(f"sensors/q{q}", f"m{q}".encode(), qos=q) for q in (0, 1, 2)
            ]
            for info in [denied, *infos]:
                info.wait_for_publish(TIMEOUT)
            wait_until(lambda: len(sub.messages) == 3, "three messages through the proxy")
            wait_until(lambda: len(watcher.messages) == 3, "three messages at the broker")
            assert sorted(sub.topics()) == ["sensors/q0", "sensors/q1", "sensors/q2"]
            assert sorted(watcher.topics()) == ["sensors/q0", "sensors/q1", "sensors/q2"]
            if version == 5:
                assert pub.acks[denied.mid].value == 0x87  # PUBACK Not authorized
            else:
                assert pub.acks[denied.mid].value == 0  # acknowledged, dropped


@needs_mosquitto
@pytest.mark.parametrize(("version", "name"), [(4, "Not authorized"), (5, "Not authorized")])
def test_end_to_end_unauthorised_connect(tmp_path: Path, version: int, name: str) -> None:
    with gateway(tmp_path) as (port, _):
        protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, "bad", protocol=protocol)
        client.username_pw_set("intruder", "pw")
        result: list[Any] = []
        client.on_connect = lambda c, u, f, rc, p: result.append(rc)
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            wait_until(lambda: result, "the refusing CONNACK")
        finally:
            client.disconnect()
            client.loop_stop()
        assert result[0].is_failure and result[0].getName() == name


@needs_mosquitto
def test_end_to_end_malformed_bytes(tmp_path: Path) -> None:
    with gateway(tmp_path) as (port, _):
        with raw_client(port, 5) as client:
            client.send(Connect("raw5", 5))
            connack = client.receive()
            assert isinstance(connack, ConnAck) and connack.reason_code == 0
            client.send_bytes(b"\x30\x03\x00\x01+")
            assert Decoder(version=5).feed(client.read_to_eof()) == [Disconnect(0x81)]
        with raw_client(port, 4) as client:
            client.send(Connect("raw4", 4))
            assert client.receive() == ConnAck(False, 0)
            client.send_bytes(b"\x30\x03\x00\x01+")
            assert client.read_to_eof() == b""  # 3.1.1: just closed
        with raw_client(port, 4) as client:
            client.send_bytes(b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c")
            assert client.read_to_eof() == encode(ConnAck(reason_code=1), 4)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(b"\x30\x00")  # a PUBLISH before CONNECT: closed, nothing said
            assert sock.recv(100) == b""
