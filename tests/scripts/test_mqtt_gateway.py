"""The IoT multiplexing gateway end to end: paho-mqtt devices -> mqtt_edge ->
mqtt_cloud -> a real mosquitto broker.

What is checked, with real clients we did not write:

* 500 concurrent devices, half MQTT 3.1.1 and half 5.0, each publishing at QoS
  0, 1 and 2 and receiving a QoS 1 command: QoS 1 and 2 messages all arrive, QoS
  2 exactly once, QoS 0 at most once;
* the edge never has more than ``MAX_UPSTREAM`` connections to the cloud;
* retained messages and persistent sessions (a message queued for an offline
  device is delivered when it reconnects through the gateway);
* the last will is published when a device process dies, and not when a device
  disconnects cleanly;
* the edge <-> cloud link breaking (the relay between them killed): no device's
  will is published, the devices are disconnected, they reconnect through new
  links once the relay is back, and their messages flow again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.helpers import (
    ROOT,
    Process,
    free_port,
    mosquitto,
    port_of,
    run_trioxy,
    socket_table,
    wait_until,
)

DEVICES = 500
MAX_UPSTREAM = 4


def established_to(port: int) -> int:
    """TCP connections in state ESTABLISHED whose remote port is ``port``."""
    return sum(f[3] == "01" and port_of(f[2]) == port for f in socket_table("tcp"))


class Monitor:
    """A client connected straight to the broker, recording what it receives."""

    def __init__(self, port: int) -> None:
        self.messages: Counter[tuple[str, bytes]] = Counter()
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="monitor")
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([("up/#", 2), ("will/#", 1)])
        assert self.subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages[(msg.topic, msg.payload)] += 1

    def count(self, topic_prefix: str) -> int:
        with self.lock:
            return sum(n for (t, _), n in self.messages.items() if t.startswith(topic_prefix))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Device:
    """One paho client connected through the edge."""

    def __init__(self, name: str, port: int, version: int, clean: bool = True) -> None:
        self.name = name
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kwargs: dict[str, object] = {}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol, **kwargs
        )
        self.client.will_set(f"will/{name}", b"gone", qos=1)
        self.client.reconnect_delay_set(0.2, 1)
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.connects = 0
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.port = port
        self.version = version
        self.clean = clean

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        self.connects += 1
        client.subscribe(f"down/{self.name}", qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.received.append((msg.topic, msg.payload))

    def start(self) -> None:
        if self.version == 5:
            self.client.connect_async("127.0.0.1", self.port, keepalive=30, clean_start=self.clean)
        else:
            self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def gateway(tmp_path: Path) -> Iterator[dict[str, object]]:
    """mosquitto, the cloud, a relay (tcp_proxy) and the edge, all stopped at the end."""
    with ExitStack() as stack:
        broker = stack.enter_context(mosquitto(tmp_path))
        cloud_port, relay_port, edge_port = free_port(), free_port(), free_port()
        cloud = stack.enter_context(
            run_trioxy(
                "scripts/mqtt_cloud.py",
                {"LISTEN": f"127.0.0.1:{cloud_port}", "BROKER": f"127.0.0.1:{broker}"},
            )
        )
        cloud.wait_listening(cloud_port)
        relay_env = {"LISTEN": f"127.0.0.1:{relay_port}", "UPSTREAMS": f"127.0.0.1:{cloud_port}"}
        relays: list[Process] = []

        def start_relay() -> Process:
            proc = stack.enter_context(run_trioxy("scripts/tcp_proxy.py", relay_env))
            proc.wait_listening(relay_port)
            relays.append(proc)
            return proc

        start_relay()
        edge = stack.enter_context(
            run_trioxy(
                "scripts/mqtt_edge.py",
                {
                    "LISTEN": f"127.0.0.1:{edge_port}",
                    "CLOUD": f"127.0.0.1:{relay_port}",
                    "MAX_UPSTREAM": str(MAX_UPSTREAM),
                },
            )
        )
        edge.wait_listening(edge_port)
        yield {
            "broker": broker,
            "edge": edge_port,
            "relay": relay_port,
            "relays": relays,
            "start_relay": start_relay,
            "procs": (cloud, edge),
        }


DEVICE_SCRIPT = """
import sys, time
import paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sys.argv[2],
                protocol=mqtt.MQTTv5 if sys.argv[3] == "5" else mqtt.MQTTv311)
c.will_set("will/" + sys.argv[2], b"gone", qos=1)
c.connect("127.0.0.1", int(sys.argv[1]), keepalive=30)
c.loop_start()
c.publish("up/" + sys.argv[2], b"alive", qos=1).wait_for_publish(10)
print("ready", flush=True)
time.sleep(600)
"""


class Fleet:
    """A subprocess running paho devices (tests/scripts/mqtt_fleet.py)."""

    def __init__(self, port: int, prefix: str, count: int) -> None:
        self.names = [f"{prefix}{i}" for i in range(count)]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("mqtt_fleet.py")),
                str(port),
                prefix,
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the fleet exited (status {self.proc.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("stop")
                self.proc.wait(30)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


FLEETS = 5


@pytest.mark.slow
def test_devices_through_edge_and_cloud(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw, ExitStack() as stack:
        edge_port = int(gw["edge"])  # type: ignore[call-overload]
        relay_port = int(gw["relay"])  # type: ignore[call-overload]
        monitor = Monitor(int(gw["broker"]))  # type: ignore[call-overload]
        stack.callback(monitor.close)

        per_fleet = DEVICES // FLEETS
        fleets = []
        for f in range(FLEETS):
            fleet = Fleet(edge_port, f"f{f}d", per_fleet)
            stack.callback(fleet.close)
            fleets.append(fleet)
        names = [name for fleet in fleets for name in fleet.names]
        assert [fleet.ask("wait")["connected"] for fleet in fleets] == [per_fleet] * FLEETS
        assert 1 <= established_to(relay_port) <= MAX_UPSTREAM

        # Up: QoS 0, 1, 2 from every device. Down: a QoS 1 command to every device.
        for fleet in fleets:
            assert fleet.ask("publish one")["published"] == 3 * per_fleet
        for name in names:
            monitor.client.publish(f"down/{name}", b"cmd", qos=1)
        wait_until(
            lambda: monitor.count("up/") >= 2 * DEVICES,
            "QoS 1 and 2 messages",
            timeout=60,
            interval=0.05,
        )

        def commands_received() -> bool:
            return all(
                all(
                    ["down/" + n, "cmd"] in got
                    for n, got in fleet.ask("status")["received"].items()
                )
                for fleet in fleets
            )

        wait_until(commands_received, "commands to reach every device", timeout=60, interval=0.05)
        time.sleep(0.5)
        with monitor.lock:
            for name in names:
                assert monitor.messages[(f"up/{name}/one/q1", b"m1")] >= 1
                assert monitor.messages[(f"up/{name}/one/q2", b"m2")] == 1
                assert monitor.messages[(f"up/{name}/one/q0", b"m0")] <= 1
        assert established_to(relay_port) <= MAX_UPSTREAM
        assert monitor.count("will/") == 0

        # A device that dies gets its will published; one that disconnects does not.
        proc = subprocess.Popen(
            [sys.executable, "-c", DEVICE_SCRIPT, str(edge_port), "dying", "5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        wait_until(
            lambda: monitor.count("will/dying") == 1,
            "the dead device's will",
            timeout=30,
            interval=0.05,
        )
        leaving = Device("leaving", edge_port, version=4)
        leaving.start()
        wait_until(leaving.connected.is_set, "a device to connect", timeout=20, interval=0.05)
        leaving.stop()
        time.sleep(1.0)
        assert monitor.count("will/leaving") == 0

        # Retained: a device subscribing later gets the retained message.
        monitor.client.publish("cfg/all", b"v1", qos=1, retain=True).wait_for_publish(10)
        late = Device("late", edge_port, version=5)
        late.start()
        stack.callback(late.stop)
        wait_until(late.connected.is_set, "a device to connect", timeout=20, interval=0.05)
        late.client.subscribe("cfg/all", qos=1)
        wait_until(
            lambda: ("cfg/all", b"v1") in late.received,
            "the retained message",
            timeout=20,
            interval=0.05,
        )

        # The link breaks: devices are disconnected, no will is published, and
        # they come back through new links once the relay is back.
        relays: list[Process] = gw["relays"]  # type: ignore[assignment]
        relays[-1].stop(signal.SIGKILL)
        wait_until(
            lambda: all(fleet.ask("status")["connected"] == 0 for fleet in fleets),
            "devices to be disconnected",
            timeout=30,
            interval=0.05,
        )
        gw["start_relay"]()  # type: ignore[operator]
        assert [fleet.ask("wait")["connected"] for fleet in fleets] == [per_fleet] * FLEETS
        assert 1 <= established_to(relay_port) <= MAX_UPSTREAM
        time.sleep(1.0)
        assert monitor.count("will/f") == 0  # no device of the fleets lost its will
        for fleet in fleets:
            assert fleet.ask("publish two")["published"] == 3 * per_fleet
        wait_until(
            lambda: monitor.count("up/") >= 4 * DEVICES,
            "messages after reconnect",
            timeout=60,
            interval=0.05,
        )


@pytest.mark.slow
def test_persistent_session_gets_messages_queued_while_offline(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw, ExitStack() as stack:
        edge_port = int(gw["edge"])  # type: ignore[call-overload]
        monitor = Monitor(int(gw["broker"]))  # type: ignore[call-overload]
        stack.callback(monitor.close)
        for version in (4, 5):
            name = f"persistent-v{version}"
            device = Device(name, edge_port, version=version, clean=False)
            if version == 5:
                device.client.connect_async(
                    "127.0.0.1",
                    edge_port,
                    clean_start=False,
                    properties=_session_expiry(),
                )
                device.client.loop_start()
            else:
                device.start()
            wait_until(device.connected.is_set, "the device to connect", timeout=20, interval=0.05)
            time.sleep(0.3)
            device.stop()
            monitor.client.publish(f"down/{name}", b"queued", qos=1).wait_for_publish(10)
            again = Device(name, edge_port, version=version, clean=False)
            stack.callback(again.stop)
            if version == 5:
                again.client.connect_async(
                    "127.0.0.1", edge_port, clean_start=False, properties=_session_expiry()
                )
                again.client.loop_start()
            else:
                again.start()
            wait_until(
                lambda d=again, n=name: (f"down/{n}", b"queued") in d.received,  # type: ignore[misc]
                "the queued message",
                timeout=20,
                interval=0.05,
            )


def _session_expiry() -> object:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    return props


def test_scripts_check() -> None:
    for script in ("scripts/mqtt_edge.py", "scripts/mqtt_cloud.py"):
        result = subprocess.run(
            [str(ROOT / ".venv/bin/trioxy"), "check", script],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
