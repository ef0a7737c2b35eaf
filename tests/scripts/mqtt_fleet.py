"""A fleet of paho-mqtt devices in one process, driven over stdin/stdout by a test.

paho's network loop uses ``select()``, which cannot watch file descriptors above
1023, and each client holds three; so a test that wants hundreds of devices runs
several fleets of at most 200 devices each.

Usage: ``python mqtt_fleet.py PORT PREFIX COUNT``. Devices ``PREFIX0..`` connect
(odd ones MQTT 5.0, even ones 3.1.1) with a QoS 1 will on ``will/NAME`` and
subscribe to ``down/NAME`` at QoS 1. Commands, one per line on stdin; each answer
is one JSON line on stdout:

``wait``          wait until every device is connected: ``{"connected": N}``
``publish TAG``   every device publishes ``up/NAME/TAG/q0|q1|q2`` at that QoS and
                  waits for QoS 1/2 acknowledgements: ``{"published": N}``
``status``        ``{"connected": N, "received": {NAME: [[topic, payload], ...]}}``
``stop``          disconnect every device cleanly and exit: ``{"stopped": N}``
"""

from __future__ import annotations

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


class Device:
    def __init__(self, name: str, port: int, version: int) -> None:
        self.name = name
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol
        )
        self.client.will_set(f"will/{name}", b"gone", qos=1)
        self.client.reconnect_delay_set(0.2, 1)
        self.connected = threading.Event()
        self.received: list[tuple[str, str]] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload.decode()))
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *args: object) -> None:
        client.subscribe(f"down/{self.name}", qos=1)
        self.connected.set()


def main() -> None:
    port, prefix, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    devices = [Device(f"{prefix}{i}", port, 5 if i % 2 else 4) for i in range(count)]

    def answer(value: object) -> None:
        print(json.dumps(value), flush=True)

    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "wait":
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(d.connected.is_set() for d in devices):
                time.sleep(0.05)
            time.sleep(0.3)  # the SUBSCRIBE sent on connect reaches the broker
            answer({"connected": sum(d.connected.is_set() for d in devices)})
        elif command == "publish":
            infos = [
                d.client.publish(f"up/{d.name}/{arg}/q{qos}", f"m{qos}".encode(), qos=qos)
                for d in devices
                for qos in (0, 1, 2)
            ]
            for info in infos:
                info.wait_for_publish(60)
            answer({"published": len(infos)})
        elif command == "status":
            answer(
                {
                    "connected": sum(d.connected.is_set() for d in devices),
                    "received": {d.name: d.received for d in devices},
                }
            )
        elif command == "stop":
            for d in devices:
                d.client.disconnect()
                d.client.loop_stop()
            answer({"stopped": len(devices)})
            return


if __name__ == "__main__":
    main()
