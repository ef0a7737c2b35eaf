"""The IoT multiplexing gateway on one machine: devices -> edge -> cloud -> mosquitto.

Starts a real mosquitto broker, ``scripts/mqtt_cloud.py`` in front of it,
``scripts/mqtt_edge.py`` in front of the cloud (with ``MAX_UPSTREAM=2``), then:

1. 100 paho-mqtt devices (half MQTT 3.1.1, half 5.0) connect to the edge and
   publish a reading each at QoS 1; a dashboard client connected straight to the
   broker receives all 100, and the edge holds only 2 connections to the cloud;
2. the dashboard sends a QoS 1 command to every device; all 100 receive it;
3. a device process is killed: the broker publishes its last will; a device that
   disconnects cleanly leaves no will.

Run it from the repository root (after ``make test`` or ``make run`` set up .venv)::

    .venv/bin/python examples/iot-gateway/run.py

Environment: ``TRIOXY`` (the trioxy command, default ``.venv/bin/trioxy``);
``MOSQUITTO`` (default ``/usr/sbin/mosquitto``). Every port is picked free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[2]
TRIOXY = os.environ.get("TRIOXY", str(ROOT / ".venv" / "bin" / "trioxy"))
MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
DEVICES = 100
MAX_UPSTREAM = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_table() -> list[list[str]]:
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            rows += [line.split() for line in list(lines)[1:]]
    return rows


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args} exited with status {proc.returncode}")
        if any(f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port for f in tcp_table()):
            return
        time.sleep(0.05)
    sys.exit(f"nothing listens on port {port} after {timeout}s")


def connections_to(port: int) -> int:
    return sum(1 for f in tcp_table() if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port)


def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Client:
    """A paho client that remembers what it received."""

    def __init__(self, name: str, port: int, version: int = 4) -> None:
        self.name = name
        self.received: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        self.mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
        self.mqtt.will_set(f"will/{name}", b"offline", qos=1)
        self.mqtt.on_connect = lambda *args: self.connected.set()
        self.mqtt.on_message = self._on_message
        self.mqtt.connect_async("127.0.0.1", port, keepalive=30)
        self.mqtt.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((msg.topic, msg.payload))

    def topics(self, prefix: str) -> list[str]:
        with self.lock:
            return [t for t, _ in self.received if t.startswith(prefix)]

    def stop(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


DYING_DEVICE = """
import sys, time
import paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor-doomed")
c.will_set("will/sensor-doomed", b"offline", qos=1)
c.connect("127.0.0.1", int(sys.argv[1]), keepalive=30)
c.loop_start()
c.publish("sensors/sensor-doomed", b"21.5", qos=1).wait_for_publish(10)
print("ready", flush=True)
time.sleep(600)
"""


def main() -> None:
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[Client] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            broker, cloud, edge = free_port(), free_port(), free_port()
            conf = Path(tmp) / "mosquitto.conf"
            conf.write_text(f"listener {broker} 127.0.0.1\nallow_anonymous true\n")
            for argv, env, port in (
                ([MOSQUITTO, "-c", str(conf)], {}, broker),
                (
                    [TRIOXY, "run", "scripts/mqtt_cloud.py"],
                    {"LISTEN": f"127.0.0.1:{cloud}", "BROKER": f"127.0.0.1:{broker}"},
                    cloud,
                ),
                (
                    [TRIOXY, "run", "scripts/mqtt_edge.py"],
                    {
                        "LISTEN": f"127.0.0.1:{edge}",
                        "CLOUD": f"127.0.0.1:{cloud}",
                        "MAX_UPSTREAM": str(MAX_UPSTREAM),
                    },
                    edge,
                ),
            ):
                proc = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                processes.append(proc)
                wait_listening(port, proc)
            print(
                f"devices -> edge 127.0.0.1:{edge} -> cloud 127.0.0.1:{cloud} "
                f"-> mosquitto 127.0.0.1:{broker}\n"
            )

            dashboard = Client("dashboard", broker)
            clients.append(dashboard)
            dashboard.connected.wait(10)
            dashboard.mqtt.subscribe([("sensors/#", 1), ("will/#", 1)])
            time.sleep(0.3)

            devices = [Client(f"sensor-{i}", edge, 5 if i % 2 else 4) for i in range(DEVICES)]
            clients += devices
            wait_until(lambda: all(d.connected.is_set() for d in devices))
            for d in devices:
                d.mqtt.subscribe(f"commands/{d.name}", qos=1)
            for i, d in enumerate(devices):
                d.mqtt.publish(f"sensors/{d.name}", f"{20 + i % 10}.0".encode(), qos=1)
            wait_until(lambda: len(dashboard.topics("sensors/")) >= DEVICES)
            print(f"1. {DEVICES} devices connected through the edge and published a reading:")
            print(f"    readings at the dashboard: {len(set(dashboard.topics('sensors/')))}")
            print(f"    edge connections to the cloud: {connections_to(cloud)}")

            time.sleep(0.3)
            for d in devices:
                dashboard.mqtt.publish(f"commands/{d.name}", b"report", qos=1)
            wait_until(lambda: all(d.topics("commands/") for d in devices))
            got = sum(1 for d in devices if d.topics("commands/"))
            print("\n2. the dashboard sent a command to every device:")
            print(f"    devices that got it: {got}")

            dying = subprocess.Popen(
                [sys.executable, "-c", DYING_DEVICE, str(edge)], stdout=subprocess.PIPE
            )
            processes.append(dying)  # type: ignore[arg-type]
            assert dying.stdout is not None
            dying.stdout.readline()
            dying.send_signal(signal.SIGKILL)
            dying.wait()
            devices[0].stop()
            wait_until(lambda: bool(dashboard.topics("will/")), 15)
            time.sleep(1.0)
            print("\n3. sensor-doomed killed, sensor-0 disconnected cleanly; wills published:")
            for topic in dashboard.topics("will/"):
                print("   ", topic)
        finally:
            for client in clients:
                client.stop()
            for proc in processes:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


if __name__ == "__main__":
    main()
