"""The ``l4`` suite: a TCP relay, trioxy's ``scripts/tcp_proxy.py`` (and its event
path) against HAProxy ``mode tcp`` and a direct connection.

* bulk throughput: iperf3, one stream, Gbit/s (a fresh one-shot server per run);
* small-request RPS: wrk against nginx returning a 2-byte body, req/s, p50/p99.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import (
    NGINX_BACKEND_COMMAND,
    TIMES,
    BenchError,
    BenchResult,
    Contender,
    Options,
    ProcessRegistry,
    Sample,
    check_and_warm_up,
    first_backend_config,
    free_port,
    interleave,
    iperf3_server,
    log,
    parse_wrk,
    run_tool,
    section_renderer,
    start_backend_nginx,
    start_contenders,
    stop_contenders,
    suite_contenders,
    wrk_argv,
    wrk_command,
)

#: The benchmarks, in order (``--only bulk`` / ``--only rps``).
BENCHES = ("bulk", "rps")
#: Per-run overhead on top of the load's duration: iperf3 server start, wrk start.
RUN_OVERHEAD_S = 1.5
#: Per-benchmark overhead: starting and checking the contenders.
SETUP_S = 5.0


def estimate_seconds(opts: Options, contenders: int) -> float:
    """How long the suite takes with ``contenders`` contenders, without retries."""
    total = 0.0
    if "bulk" in opts.only:
        total += contenders * opts.reps * (opts.bulk_duration + RUN_OVERHEAD_S) + SETUP_S
    if "rps" in opts.only:
        total += contenders * opts.reps * (opts.rps_duration + RUN_OVERHEAD_S) + SETUP_S
        total += contenders * (opts.warmup + 1.0)
    return total


def run_suite(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """Run the suite's benchmarks chosen with ``--only``."""
    log(
        f"suite l4: contenders {','.join(suite_contenders(opts, 'l4'))}, {opts.reps} reps, "
        f"bulk {opts.bulk_duration:g}s, rps {opts.rps_duration:g}s"
    )
    res = []
    if "bulk" in opts.only:
        res.append(bench_l4_bulk(reg, opts, tools, tmp, taken))
    if "rps" in opts.only:
        res.append(bench_l4_rps(reg, opts, tools, tmp, taken))
    return res


def parse_iperf3(text: str) -> float:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        first = text.strip().splitlines()[:1]
        raise BenchError(f"iperf3: unparsable output: {' '.join(first)[:200]}") from None
    if data.get("error"):
        raise BenchError(f"iperf3: {data['error']}")
    try:
        bps = float(data["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise BenchError("iperf3: no end.sum_received in output") from None
    if bps <= 0:
        raise BenchError("iperf3: 0 bits/s received")
    return bps / 1e9


def bench_l4_bulk(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> BenchResult:
    backend_port = free_port(taken)
    contenders = start_contenders(reg, opts, tools, backend_port, taken, tmp, "bulk")
    dur = opts.bulk_duration

    def run(c: Contender) -> Sample:
        with iperf3_server(reg, opts, tools, backend_port):
            text = run_tool(
                [
                    tools["iperf3"],
                    "-c",
                    "127.0.0.1",
                    "-p",
                    str(c.port),
                    "-t",
                    f"{dur:g}",
                    "-J",
                ],
                timeout=dur + 30,
                pin_cpu=opts.load_cpu,
                pin=opts.pin,
            )
        return Sample(parse_iperf3(text))

    try:
        interleave(contenders, run, "l4-bulk", opts, reg)
    finally:
        stop_contenders(reg, contenders)
    return BenchResult(
        key="l4-bulk",
        title=f"L4 bulk throughput (iperf3, 1 stream, {dur:g} s)",
        unit="Gbit/s",
        target_ratio=1.5,
        target_text=f"L4 bulk ≥ 1.5 {TIMES} HAProxy Gbit/s",
        load_command=f"taskset -c {opts.load_cpu} iperf3 -c 127.0.0.1 -p PORT -t {dur:g} -J",
        backend_command=f"taskset -c {opts.load_cpu} iperf3 -s -1 -B 127.0.0.1 -p PORT"
        "  # a fresh server per run",
        contenders=contenders,
    )


def bench_l4_rps(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> BenchResult:
    nginx, backend_port, backend_config = start_backend_nginx(
        reg, opts, tools, tmp, taken, "nginx-tiny.conf", "nginx"
    )
    try:
        contenders = start_contenders(reg, opts, tools, backend_port, taken, tmp, "rps")
        try:
            check_and_warm_up(contenders, "/", b"ok", opts, tools, "l4-rps")

            def run(c: Contender) -> Sample:
                text = run_tool(
                    wrk_argv(opts, tools, f"http://127.0.0.1:{c.port}/"),
                    timeout=opts.rps_duration + 30,
                    pin_cpu=opts.load_cpu,
                    pin=opts.pin,
                )
                r = parse_wrk(text)
                return Sample(r.rps, p50_ms=r.p50_ms, p99_ms=r.p99_ms, note=r.errors)

            interleave(contenders, run, "l4-rps", opts, reg)
        finally:
            stop_contenders(reg, contenders)
    finally:
        reg.stop(nginx)
    return BenchResult(
        key="l4-rps",
        title=(
            f"L4 small-request RPS (wrk -t{opts.wrk_threads} -c{opts.wrk_connections}"
            f' -d{opts.rps_duration:g}s, nginx `return 200 "ok"`)'
        ),
        unit="req/s",
        target_ratio=0.35,
        target_text=f"L4 small-request RPS ≥ 0.35 {TIMES} HAProxy",
        load_command=wrk_command(opts, "http://127.0.0.1:PORT/"),
        backend_command=NGINX_BACKEND_COMMAND.format(cpu=opts.load_cpu),
        contenders=contenders,
        backend_config=backend_config,
        latency=True,
    )


def _configs(results: list[BenchResult]) -> list[tuple[str, str]]:
    # (the first haproxy's config, even an empty one)
    hap_cfg = next(
        (c.config_text for r in results for c in r.contenders if c.name == "haproxy"), ""
    )
    return [
        (
            "HAProxy config (`mode tcp`, defaults otherwise: no `option splice-*`, "
            "default buffer sizes; `nbthread 1` because it is pinned to one core):",
            hap_cfg,
        ),
        (
            "nginx backend config (keep-alive connections are reused for the whole run, "
            "so the RPS figure measures relaying requests, not accepting connections):",
            first_backend_config(results),
        ),
    ]


render_section = section_renderer(
    "l4",
    "L4 (TCP relay)",
    "*trioxy, event path* is the same proxy "
    "with a pass-through `handle_data` filter before `connect` "
    "(`bench/conf/tcp_proxy_events.py`): the bytes travel as events through the engine "
    "instead of being spliced, which measures the engine's per-event cost.",
    _configs,
)
