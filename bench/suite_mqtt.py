"""The ``mqtt`` suite: QoS 1 publish throughput and latency, to mosquitto directly
and through trioxy's IoT gateway pair, ``scripts/mqtt_edge.py`` (devices in, smux
links out) and ``scripts/mqtt_cloud.py`` (links in, one broker session per device).

The load is ``bench/mqtt_load.py``: ``--mqtt-publishers`` clients publishing QoS 1
messages with ``--mqtt-window`` in flight each, and one subscriber connected to the
broker itself measuring publish-to-delivery latency. Both contenders deliver to the
same broker, so *trioxy / direct* is the price of the two gateways. No target:
ratios only.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    BenchError,
    BenchResult,
    Contender,
    Options,
    Proc,
    ProcessRegistry,
    Sample,
    first_backend_config,
    free_port,
    interleave,
    log,
    render,
    run_tool,
    section_renderer,
    start_each,
    start_trioxy,
    stop_contenders,
    suite_contenders,
    wait_listening,
)

#: The one benchmark (``--only qos1``).
BENCHES = ("qos1",)
#: mqtt_load.py's warm-up before it measures (its default).
LOAD_WARMUP_S = 1.0
#: Per-run overhead: starting the Python load generator, connecting 50 clients.
RUN_OVERHEAD_S = 2.0
#: Starting the broker and the gateways.
SETUP_S = 5.0
#: Ratios reported.
MQTT_RATIO_PAIRS = (("trioxy", "direct"),)
LOAD = "bench/mqtt_load.py"


def estimate_seconds(opts: Options, contenders: int) -> float:
    """How long the suite takes with ``contenders`` contenders, without retries."""
    if "qos1" not in opts.only:
        return 0.0
    per_run = opts.mqtt_duration + LOAD_WARMUP_S + RUN_OVERHEAD_S
    return contenders * opts.reps * per_run + SETUP_S


@dataclass
class MqttLoadResult:
    """One line of ``bench/mqtt_load.py`` output."""

    published: int  # messages PUBACKed while measuring
    rate: float  # PUBACKed messages per second
    received: int  # messages the subscriber got while measuring
    p50_ms: float  # publish-to-delivery latency
    p99_ms: float


def parse_mqtt_load(text: str) -> MqttLoadResult:
    """Parse mqtt_load.py's JSON line (the last line of its output)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
        result = MqttLoadResult(
            int(data["published"]),
            float(data["rate"]),
            int(data["received"]),
            float(data["p50_ms"]),
            float(data["p99_ms"]),
        )
    except (IndexError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        last = lines[-1][:200] if lines else "(no output)"
        raise BenchError(f"mqtt_load: unparsable output: {last}") from None
    if result.published == 0:
        raise BenchError("mqtt_load: 0 messages acknowledged")
    if result.received == 0:
        raise BenchError("mqtt_load: the subscriber received no message")
    return result


def start_broker(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> tuple[Proc, int, str]:
    """mosquitto on the load CPU; return it, its port and its config as shown."""
    port = free_port(taken)
    conf = tmp / "mosquitto.conf"
    conf.write_text(render("mosquitto.conf", port=str(port)))
    broker = reg.start("mosquitto", [tools["mosquitto"], "-c", str(conf)], opts.load_cpu)
    try:
        wait_listening(broker, port, 10)
    except BenchError:
        reg.stop(broker)
        raise
    return broker, port, render("mosquitto.conf", port="BROKER_PORT")


def start_contenders(
    reg: ProcessRegistry, opts: Options, broker_port: int, taken: set[int]
) -> list[Contender]:
    """*direct* is the broker itself; *trioxy* is the edge gateway (the process
    the load connects to) with the cloud gateway as its helper, both on the
    proxy CPU."""

    def start(c: Contender) -> None:
        edge_port, cloud_port = c.port, free_port(taken)
        cloud, cloud_cmd = start_trioxy(
            reg,
            opts,
            "mqtt-cloud",
            opts.mqtt_cloud_cmd,
            {"LISTEN": f"127.0.0.1:{cloud_port}", "BROKER": f"127.0.0.1:{broker_port}"},
            cloud_port,
            shown={"LISTEN": "127.0.0.1:CLOUD_PORT", "BROKER": "127.0.0.1:BROKER_PORT"},
        )
        c.helpers.append(cloud)
        edge_env = {"LISTEN": f"127.0.0.1:{edge_port}", "CLOUD": f"127.0.0.1:{cloud_port}"}
        if opts.mqtt_max_upstream is not None:
            edge_env["MAX_UPSTREAM"] = str(opts.mqtt_max_upstream)
        c.proc, edge_cmd = start_trioxy(
            reg,
            opts,
            "mqtt-edge",
            opts.mqtt_edge_cmd,
            edge_env,
            edge_port,
            shown={"CLOUD": "127.0.0.1:CLOUD_PORT"},
        )
        c.command = f"{cloud_cmd}\n{edge_cmd}"

    return start_each(reg, opts, "mqtt", taken, "mqtt", start, direct_port=broker_port)


def load_argv(opts: Options, port: int, broker_port: int) -> list[str]:
    return [
        sys.executable,
        LOAD,
        "--port",
        str(port),
        "--broker-port",
        str(broker_port),
        "--publishers",
        str(opts.mqtt_publishers),
        "--window",
        str(opts.mqtt_window),
        "--duration",
        f"{opts.mqtt_duration:g}",
        "--warmup",
        f"{LOAD_WARMUP_S:g}",
    ]


def run_suite(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """QoS 1 publishing through each contender to one mosquitto."""
    log(
        f"suite mqtt: contenders {','.join(suite_contenders(opts, 'mqtt'))}, {opts.reps} reps, "
        f"{opts.mqtt_duration:g}s each"
    )
    broker, broker_port, broker_config = start_broker(reg, opts, tools, tmp, taken)
    try:
        contenders = start_contenders(reg, opts, broker_port, taken)
        try:

            def run(c: Contender) -> Sample:
                text = run_tool(
                    load_argv(opts, c.port, broker_port),
                    timeout=opts.mqtt_duration + LOAD_WARMUP_S + 30,
                    pin_cpu=opts.load_cpu,
                    pin=opts.pin,
                )
                r = parse_mqtt_load(text)
                note = ""
                if r.received < 0.9 * r.published:
                    note = f"subscriber got {r.received:,} of {r.published:,} messages"
                return Sample(r.rate, p50_ms=r.p50_ms, p99_ms=r.p99_ms, note=note)

            interleave(contenders, run, "mqtt-qos1", opts, reg)
        finally:
            stop_contenders(reg, contenders)
    finally:
        reg.stop(broker)
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    load = " ".join(load_argv(opts, 0, 0)[1:]).replace("--port 0", "--port PORT")
    load = load.replace("--broker-port 0", "--broker-port BROKER_PORT")
    return [
        BenchResult(
            key="mqtt-qos1",
            title=(
                f"MQTT QoS 1 publish ({opts.mqtt_publishers} publishers, "
                f"{opts.mqtt_window} in flight each, {opts.mqtt_duration:g} s)"
            ),
            unit="msg/s",
            target_ratio=None,
            target_text="",
            load_command=f"{pin}.venv/bin/python {load}",
            backend_command=f"{pin}mosquitto -c mosquitto.conf  # listener BROKER_PORT",
            contenders=contenders,
            backend_config=broker_config,
            latency=True,
            reference="direct",
            ratio_pairs=MQTT_RATIO_PAIRS,
        )
    ]


render_section = section_renderer(
    "mqtt",
    "MQTT (IoT gateway)",
    "*direct*: the publishers connect to mosquitto itself. *trioxy*: they connect "
    "to `scripts/mqtt_edge.py`, which carries each device's bytes over smux links to "
    "`scripts/mqtt_cloud.py`, which opens one broker connection per device; both "
    "gateways are pinned to the proxy CPU and their CPU and RSS are added up. msg/s "
    "counts PUBACKs received by the publishers; latency is from publish to delivery "
    "to a QoS 0 subscriber connected to the broker directly. The load generator "
    "(`bench/mqtt_load.py`, Python) shares its core with the broker, so *direct* is "
    "often its ceiling rather than mosquitto's.",
    lambda results: [("mosquitto config:", first_backend_config(results))],
)
