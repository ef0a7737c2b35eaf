#!/usr/bin/env python3
"""trioxy benchmark harness: real load generators against trioxy, HAProxy, nginx,
mosquitto, dnsmasq and direct connections, interleaved in one run, reported as
ratios in BENCHMARKS.md.

Suites (one Markdown section each in BENCHMARKS.md, between markers, so that one
suite can be regenerated without touching the others), each in ``bench/suite_*.py``:

* ``l4`` -- TCP relay: iperf3 bulk throughput and wrk small-request RPS through
  direct / HAProxy ``mode tcp`` / ``scripts/tcp_proxy.py`` (and its event path).
* ``http`` -- HTTP reverse proxy: wrk through direct / nginx ``proxy_pass`` /
  HAProxy ``mode http`` / ``scripts/reverse_proxy.py`` to an nginx backend, for a
  2-byte body and a 1 MiB file; targets against nginx.
* ``mqtt`` -- QoS 1 publishing (``bench/mqtt_load.py``) to mosquitto directly and
  through ``scripts/mqtt_edge.py`` + ``scripts/mqtt_cloud.py``.
* ``dns`` -- dnsperf to dnsmasq directly and through ``scripts/dns_proxy.py``
  (cache hits, and with no cache) and ``scripts/udp_proxy.py``.
* ``tls`` -- TLS termination: wrk over HTTPS through nginx ``listen ... ssl`` /
  HAProxy ``bind ... ssl crt`` / ``scripts/tls_offload.py`` to an nginx backend,
  on keep-alive connections and with a full handshake per request.
* ``tunnel`` -- the TLS tunnel: iperf3 (one stream, four streams) and wrk with a
  new connection per request, directly and through ``scripts/tunnel_client.py``
  -> mutual-TLS smux links -> ``scripts/tunnel_server.py``.

The proxy under test is pinned to one core (``taskset -c PROXY_CPU``), the load
generator and the backend to another (``LOAD_CPU``). Each figure is the median of
``--reps`` runs; runs are interleaved round-robin over the contenders. Every process
started is put in its own process group and stopped in ``finally``.

Run ``bench/run.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

# run as a script (bench/run.py): make the repo root importable for ``bench.*``
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import suite_dns, suite_http, suite_l4, suite_mqtt, suite_tls, suite_tunnel
from bench.common import (
    BENCHES,
    BUSY_WARN_PCT,
    CONTENDER_TOOLS,
    CONTENDERS,
    DEFAULT_DNS_CMD,
    DEFAULT_MQTT_CLOUD_CMD,
    DEFAULT_MQTT_EDGE_CMD,
    DEFAULT_OUTPUT,
    DEFAULT_TLS_CMD,
    DEFAULT_TRIOXY_CMD,
    DEFAULT_TRIOXY_HTTP_CMD,
    DEFAULT_TUNNEL_CLIENT_CMD,
    DEFAULT_TUNNEL_SERVER_CMD,
    DEFAULT_UDP_CMD,
    EVENTS_TRIOXY_CMD,
    NOISY_PCT,
    SUITE_BENCHES,
    SUITE_CONTENDERS,
    SUITE_TOOLS,
    SUITES,
    BenchError,
    BenchResult,
    Options,
    ProcessRegistry,
    ensure_tools,
    log,
    print_summary,
    results_json,
    suite_contenders,
    wait_idle,
    write_section,
)

#: Each suite's module: ``run_suite``, ``render_section``, ``estimate_seconds``.
SUITE_MODULES: dict[str, ModuleType] = {
    "l4": suite_l4,
    "http": suite_http,
    "mqtt": suite_mqtt,
    "dns": suite_dns,
    "tls": suite_tls,
    "tunnel": suite_tunnel,
}
#: A default run (every suite) must stay under this; noisy runs are repeated only
#: while the estimate plus the retries so far fit in it.
DEFAULT_BUDGET_MIN = 25.0
#: Waiting for the machine to be idle before each suite, on average.
IDLE_WAIT_S = 5.0


# -------------------------------------------------------------------------- main


class HelpFormatter(argparse.HelpFormatter):
    """Show an option's default, unless it has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=(
            "Benchmark trioxy against HAProxy, nginx, mosquitto, dnsmasq and direct "
            "connections with real load generators (iperf3, wrk, dnsperf, "
            "bench/mqtt_load.py), interleaved in one run, and write the results with "
            "ratios and targets to BENCHMARKS.md (only the sections of the suites run are "
            "replaced). A default run takes about 23 minutes (an estimate is printed at "
            "the start)."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--suite",
        action="append",
        choices=(*SUITES, "all"),
        help="suite to run; repeatable; default: all. l4 = TCP relay "
        "(iperf3 bulk throughput + wrk small-request RPS); http = reverse proxy "
        "(wrk, small and 1 MiB responses, against nginx and HAProxy); mqtt = QoS 1 "
        "publishing through mqtt_edge.py + mqtt_cloud.py vs mosquitto directly; dns = "
        "dnsperf through dns_proxy.py (cache hits, no cache) and udp_proxy.py vs dnsmasq "
        "directly; tls = TLS termination (wrk over HTTPS, keep-alive and a full handshake "
        "per request) through tls_offload.py vs nginx and HAProxy; tunnel = iperf3 (1 and "
        "4 streams) and wrk with a new connection per request through tunnel_client.py + "
        "tunnel_server.py (mutual-TLS smux links) vs directly",
    )
    p.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}; each suite runs those it "
        "has (" + "; ".join(f"{s}: {','.join(cs)}" for s, cs in SUITE_CONTENDERS.items()) + ")",
    )
    p.add_argument(
        "--reps",
        type=int,
        help="runs per contender, the median is reported (default: 3; --quick: 1)",
    )
    p.add_argument(
        "--duration",
        type=float,
        help="seconds per run, for every suite (default: 10, dns 20, tunnel's bulk4 and "
        "conns 5; --quick: 3)",
    )
    p.add_argument(
        "--bulk-duration",
        type=float,
        help="seconds per iperf3 run, l4 bulk and tunnel bulk1 (overrides --duration)",
    )
    p.add_argument(
        "--rps-duration",
        type=float,
        help="seconds per wrk run, l4 rps, http and tls (overrides --duration)",
    )
    p.add_argument(
        "--mqtt-duration", type=float, help="seconds per mqtt_load.py run (overrides --duration)"
    )
    p.add_argument(
        "--dns-duration",
        type=float,
        help="seconds per dnsperf run, dnsperf -l (overrides --duration; default 20)",
    )
    p.add_argument(
        "--tunnel-duration",
        type=float,
        help="seconds per run of the tunnel suite's bulk4 (iperf3 -P 4) and conns (wrk) "
        "benchmarks (overrides --duration; default 5, which keeps the suite near 3 minutes)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="development mode: 3 s runs and 1 repetition unless --duration/--reps are given",
    )
    p.add_argument(
        "--only",
        choices=BENCHES,
        action="append",
        help="run only this benchmark (repeatable): l4's bulk or rps, http's small or "
        "large, mqtt's qos1, dns's qps, tls's keepalive or handshake, tunnel's bulk1, bulk4 "
        "or conns; for development: "
        "implies --no-write, since a section would be incomplete",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    p.add_argument("--wrk-connections", type=int, default=50, help="wrk -c")
    p.add_argument(
        "--mqtt-publishers", type=int, default=50, help="mqtt: publishing clients (mqtt_load.py)"
    )
    p.add_argument(
        "--mqtt-window", type=int, default=10, help="mqtt: QoS 1 messages in flight per publisher"
    )
    p.add_argument(
        "--mqtt-max-upstream",
        type=int,
        help="mqtt: MAX_UPSTREAM of mqtt_edge.py, smux links to the cloud gateway "
        "(default: the script's, 4)",
    )
    p.add_argument("--dns-clients", type=int, default=4, help="dns: dnsperf -c")
    p.add_argument("--dns-outstanding", type=int, default=200, help="dns: dnsperf -q")
    p.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of warm-up per contender, wrk (l4 rps, http, tls, tunnel conns) and "
        "dnsperf (dns); 0: none",
    )
    p.add_argument("--proxy-cpu", type=int, default=0, help="CPU the proxy under test is pinned to")
    p.add_argument(
        "--load-cpu", type=int, default=1, help="CPU the load generator and backend are pinned to"
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="do not apt-get install missing tools (iperf3, wrk, nginx-light, haproxy, "
        "util-linux, mosquitto, dnsperf, dnsmasq-base, openssl); fail instead",
    )
    p.add_argument(
        "--trioxy-cmd",
        default=DEFAULT_TRIOXY_CMD,
        help="command starting the trioxy TCP proxy, relative to the repo root; it gets "
        "LISTEN=127.0.0.1:PORT and UPSTREAMS=127.0.0.1:PORT in its environment",
    )
    p.add_argument(
        "--trioxy-events-cmd",
        default=EVENTS_TRIOXY_CMD,
        help="command starting l4's event-path contender (same environment as --trioxy-cmd)",
    )
    p.add_argument(
        "--trioxy-http-cmd",
        default=DEFAULT_TRIOXY_HTTP_CMD,
        help="command starting the trioxy HTTP reverse proxy of the http suite; it gets "
        "LISTEN=127.0.0.1:PORT and UPSTREAMS=127.0.0.1:PORT in its environment",
    )
    p.add_argument(
        "--mqtt-edge-cmd",
        default=DEFAULT_MQTT_EDGE_CMD,
        help="command starting the mqtt suite's edge gateway; it gets LISTEN and CLOUD",
    )
    p.add_argument(
        "--mqtt-cloud-cmd",
        default=DEFAULT_MQTT_CLOUD_CMD,
        help="command starting the mqtt suite's cloud gateway; it gets LISTEN and BROKER",
    )
    p.add_argument(
        "--dns-cmd",
        default=DEFAULT_DNS_CMD,
        help="command starting the dns suite's DNS proxy (trioxy and trioxy-nocache, "
        "the latter with CACHE_SIZE=0); it gets LISTEN and UPSTREAMS",
    )
    p.add_argument(
        "--udp-cmd",
        default=DEFAULT_UDP_CMD,
        help="command starting the dns suite's UDP relay (trioxy-udp); it gets LISTEN "
        "and UPSTREAMS",
    )
    p.add_argument(
        "--trioxy-tls-cmd",
        default=DEFAULT_TLS_CMD,
        help="command starting the tls suite's TLS offload; it gets LISTEN, UPSTREAMS, "
        "CERT, KEY, MIN_TLS=1.3 and SESSION_TICKETS=off",
    )
    p.add_argument(
        "--tunnel-client-cmd",
        default=DEFAULT_TUNNEL_CLIENT_CMD,
        help="command starting the tunnel suite's client end; it gets SERVER, "
        "SERVER_NAME, CERT, KEY, CA, FORWARD (and LINKS with --tunnel-links)",
    )
    p.add_argument(
        "--tunnel-server-cmd",
        default=DEFAULT_TUNNEL_SERVER_CMD,
        help="command starting the tunnel suite's server end; it gets LISTEN, CERT, KEY, "
        "CA and ALLOW (the backend only)",
    )
    p.add_argument(
        "--tunnel-links",
        type=int,
        help="tunnel: LINKS of tunnel_client.py, TLS links to the server end "
        "(default: the script's, 2)",
    )
    p.add_argument(
        "--trioxy-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for every trioxy process; repeatable",
    )
    p.add_argument(
        "--trioxy-start-timeout",
        type=float,
        default=20.0,
        help="seconds to wait for trioxy to listen",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help=f"before a suite, wait up to this long for the machine to be idle (under "
        f"{BUSY_WARN_PCT:g} %% of CPUs busy); if it is still busy, run anyway and say so "
        "in the report",
    )
    p.add_argument(
        "--noisy-retries",
        type=int,
        default=1,
        metavar="N",
        help=f"repeat a run up to N times when other processes used more than "
        f"{NOISY_PCT:g} %% of a CPU during it (the last attempt is kept), as long as "
        "the time budget allows",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_MIN,
        metavar="MINUTES",
        help="time budget of the whole run: noisy runs are repeated only while the "
        "estimated duration plus the repeats so far fit in it",
    )
    p.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="Markdown file to update (its section for each suite run is replaced)",
    )
    p.add_argument(
        "--no-write", action="store_true", help="print results only; do not update --output"
    )
    p.add_argument("--json", dest="json_out", help="also write raw results as JSON to this file")
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)"
    )
    a = p.parse_args(argv)

    suites = a.suite or ["all"]
    suites = list(SUITES) if "all" in suites else list(dict.fromkeys(suites))
    contenders = [c.strip() for c in a.contenders.split(",") if c.strip()]
    bad = [c for c in contenders if c not in CONTENDERS]
    if bad or not contenders:
        p.error(
            f"--contenders: unknown {', '.join(bad) or '(empty)'}; "
            f"choose from {','.join(CONTENDERS)}"
        )
    contenders = [c for c in CONTENDERS if c in contenders]  # canonical order
    duration = a.duration if a.duration is not None else (3.0 if a.quick else 10.0)
    reps = a.reps if a.reps is not None else (1 if a.quick else 3)
    if reps < 1:
        p.error("--reps must be at least 1")
    env: dict[str, str] = {}
    for item in a.trioxy_env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            p.error(f"--trioxy-env expects KEY=VALUE, got {item!r}")
        env[k] = v
    bulk = a.bulk_duration if a.bulk_duration is not None else duration
    rps = a.rps_duration if a.rps_duration is not None else duration
    mqtt = a.mqtt_duration if a.mqtt_duration is not None else duration
    dns_default = duration if a.duration is not None or a.quick else 20.0
    dns = a.dns_duration if a.dns_duration is not None else dns_default
    tunnel_default = duration if a.duration is not None or a.quick else 5.0
    tunnel = a.tunnel_duration if a.tunnel_duration is not None else tunnel_default
    if a.tunnel_links is not None and a.tunnel_links < 1:
        p.error("--tunnel-links must be at least 1")
    if min(bulk, rps, mqtt, dns, tunnel) < 1:
        p.error("durations must be at least 1 second")
    return Options(
        suites=suites,
        contenders=contenders,
        reps=reps,
        bulk_duration=bulk,
        rps_duration=rps,
        wrk_threads=a.wrk_threads,
        wrk_connections=a.wrk_connections,
        proxy_cpu=a.proxy_cpu,
        load_cpu=a.load_cpu,
        pin=not a.no_pin,
        install=not a.no_install,
        trioxy_cmd=a.trioxy_cmd,
        trioxy_events_cmd=a.trioxy_events_cmd,
        trioxy_http_cmd=a.trioxy_http_cmd,
        trioxy_env=env,
        trioxy_start_timeout=a.trioxy_start_timeout,
        output=None if a.no_write or a.only else Path(a.output),
        json_out=Path(a.json_out) if a.json_out else None,
        keep_tmp=a.keep_tmp,
        warmup=a.warmup,
        wait_idle=max(0.0, a.wait_idle),
        noisy_retries=max(0, a.noisy_retries),
        only=list(a.only or BENCHES),
        mqtt_duration=mqtt,
        mqtt_publishers=a.mqtt_publishers,
        mqtt_window=a.mqtt_window,
        mqtt_max_upstream=a.mqtt_max_upstream,
        mqtt_edge_cmd=a.mqtt_edge_cmd,
        mqtt_cloud_cmd=a.mqtt_cloud_cmd,
        dns_duration=dns,
        dns_clients=a.dns_clients,
        dns_outstanding=a.dns_outstanding,
        dns_cmd=a.dns_cmd,
        udp_cmd=a.udp_cmd,
        budget_s=max(0.0, a.budget * 60),
        tls_cmd=a.trioxy_tls_cmd,
        tunnel_client_cmd=a.tunnel_client_cmd,
        tunnel_server_cmd=a.tunnel_server_cmd,
        tunnel_links=a.tunnel_links,
        tunnel_duration=tunnel,
    )


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def suite_estimate(opts: Options, suite: str) -> float:
    """How long ``suite`` takes if no run has to be repeated: its runs and set-up,
    plus waiting for the machine to be idle before it; 0 if it has nothing to run."""
    contenders = len(suite_contenders(opts, suite))
    if not contenders or not any(b in opts.only for b in SUITE_BENCHES[suite]):
        return 0.0
    estimate: Callable[[Options, int], float] = SUITE_MODULES[suite].estimate_seconds
    return estimate(opts, contenders) + IDLE_WAIT_S


def estimate_seconds(opts: Options) -> float:
    """How long the whole run takes if no run has to be repeated."""
    return sum(suite_estimate(opts, suite) for suite in opts.suites)


def fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    needed = ["taskset"] if opts.pin else []
    for s in opts.suites:
        needed += SUITE_TOOLS[s]
        for c in suite_contenders(opts, s):
            needed += CONTENDER_TOOLS[c]
    try:
        if opts.pin:
            cpus = os.sched_getaffinity(0)
            for cpu in (opts.proxy_cpu, opts.load_cpu):
                if cpu not in cpus:
                    raise BenchError(f"CPU {cpu} not available (have {sorted(cpus)}); use --no-pin")
        tools = ensure_tools(list(dict.fromkeys(needed)), opts.install)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2

    estimate = estimate_seconds(opts)
    log(
        f"estimated duration: {fmt_duration(estimate)} (suites {', '.join(opts.suites)}; "
        f"budget {fmt_duration(opts.budget_s)}, noisy runs are repeated while it allows)"
    )
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="trioxy-bench-"))
    reg = ProcessRegistry(tmp, opts.pin)
    taken: set[int] = set()
    all_results: dict[str, list[BenchResult]] = {}
    busy_before: dict[str, float] = {}
    took: dict[str, float] = {}
    failed: list[str] = []
    try:
        with terminate_on_sigterm():
            for i, suite in enumerate(opts.suites):
                benches = [b for b in SUITE_BENCHES[suite] if b in opts.only]
                if not benches or not suite_contenders(opts, suite):
                    log(f"suite {suite}: nothing to run (see --only, --contenders)")
                    continue
                busy = wait_idle(opts.wait_idle)
                busy_before[suite] = busy
                if busy > BUSY_WARN_PCT:
                    log(f"warning: machine not idle ({busy:.0f} % of CPUs busy); figures may skew")
                # Repeat noisy runs only with the time left once this suite and the
                # next ones have run as estimated (recomputed per suite, so a slow
                # start or earlier repeats are paid for).
                suite_t0 = time.monotonic()
                left = opts.budget_s - (suite_t0 - t0)
                left -= sum(suite_estimate(opts, s) for s in opts.suites[i:]) - IDLE_WAIT_S
                opts.retry_until = suite_t0 + max(0.0, left)
                try:
                    all_results[suite] = SUITE_MODULES[suite].run_suite(
                        reg, opts, tools, tmp, taken
                    )
                except BenchError as exc:
                    # e.g. the backend did not start: the other suites can still run
                    print(f"bench: error: suite {suite}: {exc}", file=sys.stderr)
                    failed.append(suite)
                finally:
                    reg.stop_all()
                took[suite] = time.monotonic() - suite_t0
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        reg.stop_all()
        if opts.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"took {fmt_duration(time.monotonic() - t0)} (estimated {fmt_duration(estimate)})")

    for res in all_results.values():
        print_summary(res)
    if opts.output is not None and all_results:
        for suite, res in all_results.items():
            render_section: Callable[..., str] = SUITE_MODULES[suite].render_section
            write_section(
                opts.output,
                suite,
                render_section(opts, res, tools, started, took[suite], busy_before[suite]),
            )
        log(f"wrote {opts.output} (sections {', '.join(all_results)})")
    if opts.json_out is not None:
        payload = {s: results_json(r) for s, r in all_results.items()}
        opts.json_out.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {opts.json_out}")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
