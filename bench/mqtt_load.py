"""An MQTT publish load generator: throughput and end-to-end latency.

``PUBLISHERS`` clients connect to ``--port`` (a broker, or a gateway in front of
it) and publish QoS 1 messages to ``bench/<n>``, each keeping ``--window``
messages in flight (a new one goes out as each PUBACK comes back). One
subscriber, connected straight to the broker at ``--broker-port``, receives them
all at QoS 0; every payload starts with its send time, so the subscriber measures
the latency from publish to delivery. After ``--duration`` seconds it prints one
JSON line::

    {"published": 123456, "rate": 12345.6, "received": 123456,
     "p50_ms": 1.2, "p99_ms": 3.4}

``rate`` is PUBACKed messages per second. Run it once against the broker directly
and once through the gateway, in the same conditions, and compare the ratios;
``bench/run.py --suite mqtt`` does exactly that.

It is a small trio program using trioxy's own MQTT codec, so its ceiling is a few
tens of thousands of messages per second on one core: the direct run shows where
that ceiling is on the machine at hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.mqtt import (
    ConnAck,
    Connect,
    Decoder,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
    encode,
)


async def open_session(port: int, client_id: str) -> tuple[trio.SocketStream, Decoder]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(encode(Connect(client_id=client_id, keep_alive=120)))
    decoder = Decoder(4)
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError(f"{client_id}: closed before CONNACK")
        packets = decoder.feed(data)
        if packets:
            if not isinstance(packets[0], ConnAck) or packets[0].reason_code:
                raise ConnectionError(f"{client_id}: refused: {packets[0]!r}")
            return stream, decoder


class Results:
    def __init__(self) -> None:
        self.acked = 0
        self.received = 0
        self.latencies: list[int] = []
        self.measuring = False


async def subscriber(port: int, results: Results, task_status: trio.TaskStatus[None]) -> None:
    stream, decoder = await open_session(port, "bench-subscriber")
    await stream.send_all(encode(Subscribe(1, (Subscription("bench/#", 0),))))
    started = False
    while True:
        data = await stream.receive_some(262144)
        if not data:
            return
        now = time.monotonic_ns()
        for packet in decoder.feed(data):
            if isinstance(packet, SubAck) and not started:
                started = True
                task_status.started()
            elif isinstance(packet, Publish) and results.measuring:
                results.received += 1
                results.latencies.append(now - int.from_bytes(packet.payload[:8], "big"))


async def publisher(
    port: int, n: int, window: int, size: int, results: Results, stop: trio.Event
) -> None:
    stream, decoder = await open_session(port, f"bench-publisher-{n}")
    topic = f"bench/{n}"
    padding = b"x" * max(0, size - 8)
    next_id = 1
    in_flight = 0

    def message() -> bytes:
        nonlocal next_id, in_flight
        packet_id = next_id
        next_id = next_id % 65535 + 1
        in_flight += 1
        payload = time.monotonic_ns().to_bytes(8, "big") + padding
        return encode(Publish(topic, payload, qos=1, packet_id=packet_id))

    await stream.send_all(b"".join(message() for _ in range(window)))
    while not stop.is_set():
        data = await stream.receive_some(65536)
        if not data:
            raise ConnectionError(f"publisher {n}: connection closed")
        acks = sum(1 for p in decoder.feed(data) if isinstance(p, PubAck))
        in_flight -= acks
        if results.measuring:
            results.acked += acks
        if acks and not stop.is_set():
            await stream.send_all(b"".join(message() for _ in range(acks)))
    await stream.aclose()


async def run(args: argparse.Namespace) -> dict[str, float]:
    results = Results()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(subscriber, args.broker_port, results)
        for n in range(args.publishers):
            nursery.start_soon(publisher, args.port, n, args.window, args.payload, results, stop)
        await trio.sleep(args.warmup)
        results.measuring = True
        started = time.monotonic()
        await trio.sleep(args.duration)
        results.measuring = False
        elapsed = time.monotonic() - started
        stop.set()
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    latencies = sorted(results.latencies) or [0]
    return {
        "published": results.acked,
        "rate": round(results.acked / elapsed, 1),
        "received": results.received,
        "p50_ms": round(statistics.median(latencies) / 1e6, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] / 1e6, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="where publishers connect")
    parser.add_argument(
        "--broker-port", type=int, required=True, help="the broker, for the subscriber"
    )
    parser.add_argument("--publishers", type=int, default=50, help="default: 50")
    parser.add_argument("--window", type=int, default=10, help="QoS 1 in flight each; 10")
    parser.add_argument("--payload", type=int, default=64, help="payload bytes; default 64")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds; default 10")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds; default 1")
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(run, args)))


if __name__ == "__main__":
    main()
