"""The ``dns`` suite: DNS queries per second over UDP, with dnsperf, to dnsmasq
directly and through trioxy:

* *trioxy* -- ``scripts/dns_proxy.py`` with its cache (the default size): after
  the warm-up every query is a cache hit;
* *trioxy, no cache* -- the same with ``CACHE_SIZE=0``: every query is decoded,
  forwarded to dnsmasq and its answer relayed;
* *trioxy udp_proxy* -- ``scripts/udp_proxy.py``, a plain L4 UDP relay that does
  not look at the payload.

dnsmasq answers every name under ``bench.test`` itself (``--address``), from no
file and with no upstream, so nothing leaves the machine. Its answers carry a TTL
(``--local-ttl``), without which the proxy's cache would keep nothing. No target:
ratios against *direct* only.
"""

from __future__ import annotations

import re
import socket
import struct
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
    free_port,
    interleave,
    log,
    run_tool,
    section_renderer,
    start_each,
    start_trioxy,
    stop_contenders,
    suite_contenders,
    wait_listening,
)

#: The one benchmark (``--only qps``).
BENCHES = ("qps",)
#: The zone dnsmasq answers for, and its one answer.
ZONE = "bench.test"
ANSWER = "10.0.0.1"
#: Distinct names in the query file (all cached after the warm-up).
NAMES = 1000
#: TTL of dnsmasq's answers: longer than the whole suite.
TTL = 3600
#: Per-run overhead: dnsperf waits for its last answers.
RUN_OVERHEAD_S = 1.0
#: Starting dnsmasq and the proxies.
SETUP_S = 5.0
#: Ratios reported.
DNS_RATIO_PAIRS = (
    ("trioxy", "direct"),
    ("trioxy-nocache", "direct"),
    ("trioxy-udp", "direct"),
    ("trioxy", "trioxy-nocache"),
)


def estimate_seconds(opts: Options, contenders: int) -> float:
    """How long the suite takes with ``contenders`` contenders, without retries."""
    if "qps" not in opts.only:
        return 0.0
    warm = contenders * (opts.warmup + RUN_OVERHEAD_S)
    return contenders * opts.reps * (opts.dns_duration + RUN_OVERHEAD_S) + warm + SETUP_S


@dataclass
class DnsperfResult:
    """The statistics dnsperf prints at the end of a run."""

    qps: float
    sent: int
    completed: int
    lost: int
    avg_ms: float
    min_ms: float
    max_ms: float
    rcodes: str  # e.g. "NOERROR 270187 (100.00%)"

    @property
    def lost_pct(self) -> float:
        return 100.0 * self.lost / self.sent if self.sent else 0.0


def parse_dnsperf(text: str) -> DnsperfResult:
    """Parse dnsperf's ``Statistics:`` block (dnsperf 2.x)."""

    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, text, re.M)

    sent = find(r"^\s*Queries sent:\s+(\d+)")
    completed = find(r"^\s*Queries completed:\s+(\d+)")
    lost = find(r"^\s*Queries lost:\s+(\d+)")
    qps = find(r"^\s*Queries per second:\s+([\d.]+)")
    latency = find(r"^\s*Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)")
    if not (sent and completed and lost and qps and latency):
        last = text.strip().splitlines()[-1:] if text.strip() else ["(no output)"]
        raise BenchError(f"dnsperf: unparsable output: {' '.join(last)[:200]}")
    rcodes = find(r"^\s*Response codes:\s+(.*)$")
    result = DnsperfResult(
        qps=float(qps.group(1)),
        sent=int(sent.group(1)),
        completed=int(completed.group(1)),
        lost=int(lost.group(1)),
        avg_ms=float(latency.group(1)) * 1e3,
        min_ms=float(latency.group(2)) * 1e3,
        max_ms=float(latency.group(3)) * 1e3,
        rcodes=rcodes.group(1).strip() if rcodes else "",
    )
    if result.completed == 0:
        raise BenchError(f"dnsperf: 0 of {result.sent} queries answered")
    return result


def write_queries(path: Path) -> None:
    """dnsperf's input: ``NAMES`` distinct A queries under the zone."""
    path.write_text("".join(f"h{i}.{ZONE} A\n" for i in range(NAMES)))


def dnsmasq_argv(tool: str, port: int) -> list[str]:
    """dnsmasq answering ``*.bench.test`` locally: no config file, no
    /etc/resolv.conf, no /etc/hosts, no query log, in the foreground."""
    return [
        tool,
        "--no-daemon",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        f"--address=/{ZONE}/{ANSWER}",
        f"--local-ttl={TTL}",
    ]


def start_dnsmasq(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], taken: set[int]
) -> tuple[Proc, int]:
    port = free_port(taken)
    proc = reg.start("dnsmasq", dnsmasq_argv(tools["dnsmasq"], port), opts.load_cpu)
    try:
        wait_listening(proc, port, 10, udp=True)
    except BenchError:
        reg.stop(proc)
        raise
    return proc, port


def query(name: str, qid: int = 0x4242) -> bytes:
    """A DNS query for ``name``'s A record (recursion desired)."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def check_answer(port: int, name: str = f"h0.{ZONE}") -> None:
    """Ask ``name`` once over UDP and check the answer is NOERROR with ``ANSWER``:
    a contender that answers wrong is reported as failed, not measured."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        try:
            s.sendto(query(name), ("127.0.0.1", port))
            reply = s.recv(4096)
        except OSError as exc:
            raise BenchError(f"query for {name}: {exc}") from None
    if len(reply) < 12:
        raise BenchError(f"query for {name}: short reply ({len(reply)} bytes)")
    qid, flags, _qd, ancount = struct.unpack("!HHHH", reply[:8])
    rcode = flags & 0xF
    if qid != 0x4242 or rcode != 0 or ancount < 1:
        raise BenchError(f"query for {name}: id={qid:#x} rcode={rcode} answers={ancount}")
    if reply[-4:] != socket.inet_aton(ANSWER):  # the A record's address comes last
        raise BenchError(f"query for {name}: answer is not {ANSWER}")


def start_contenders(
    reg: ProcessRegistry, opts: Options, upstream_port: int, taken: set[int]
) -> list[Contender]:
    upstream = f"127.0.0.1:{upstream_port}"

    def start(c: Contender) -> None:
        name, port = c.name, c.port
        env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": upstream}
        cmd = opts.udp_cmd if name == "trioxy-udp" else opts.dns_cmd
        if name == "trioxy-nocache":
            env["CACHE_SIZE"] = "0"
        c.proc, c.command = start_trioxy(reg, opts, f"dns-{name}", cmd, env, port, udp=True)

    return start_each(reg, opts, "dns", taken, "dns", start, direct_port=upstream_port)


def dnsperf_argv(opts: Options, tool: str, port: int, queries: Path, duration: float) -> list[str]:
    return [
        tool,
        "-s",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        str(queries),
        "-l",
        f"{duration:g}",
        "-c",
        str(opts.dns_clients),
        "-q",
        str(opts.dns_outstanding),
        "-O",
        "suppress=timeout",
    ]


def check_and_warm_up(
    contenders: list[Contender], opts: Options, tools: dict[str, str], queries: Path
) -> None:
    """One checked query through each contender, then a short dnsperf run (which
    also fills trioxy's cache with every name of the query file)."""
    for c in contenders:
        if c.error or c.skipped:
            continue
        try:
            check_answer(c.port)
            if opts.warmup > 0:
                run_tool(
                    dnsperf_argv(opts, tools["dnsperf"], c.port, queries, max(1.0, opts.warmup)),
                    timeout=opts.warmup + 30,
                    pin_cpu=opts.load_cpu,
                    pin=opts.pin,
                )
        except BenchError as exc:
            c.error = f"check failed: {exc}"
            dead = c.dead()
            if dead is not None:
                c.error += f"; {dead.why_dead()}"
            log(f"dns: {c.name}: {c.error}")


def run_suite(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """dnsperf through each contender to one dnsmasq."""
    log(
        f"suite dns: contenders {','.join(suite_contenders(opts, 'dns'))}, {opts.reps} reps, "
        f"{opts.dns_duration:g}s each"
    )
    queries = tmp / "queries.txt"
    write_queries(queries)
    dnsmasq, upstream_port = start_dnsmasq(reg, opts, tools, taken)
    try:
        check_answer(upstream_port)
        contenders = start_contenders(reg, opts, upstream_port, taken)
        try:
            check_and_warm_up(contenders, opts, tools, queries)

            def run(c: Contender) -> Sample:
                text = run_tool(
                    dnsperf_argv(opts, tools["dnsperf"], c.port, queries, opts.dns_duration),
                    timeout=opts.dns_duration + 30,
                    pin_cpu=opts.load_cpu,
                    pin=opts.pin,
                )
                r = parse_dnsperf(text)
                note = "" if r.rcodes.startswith("NOERROR") else f"rcodes: {r.rcodes}"
                return Sample(r.qps, avg_ms=r.avg_ms, lost_pct=r.lost_pct, note=note)

            interleave(contenders, run, "dns-qps", opts, reg)
        finally:
            stop_contenders(reg, contenders)
    finally:
        reg.stop(dnsmasq)
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    load = dnsperf_argv(opts, "dnsperf", 0, Path("queries.txt"), opts.dns_duration)
    backend = dnsmasq_argv("dnsmasq", 0)
    return [
        BenchResult(
            key="dns-qps",
            title=(
                f"DNS queries/s (dnsperf -c {opts.dns_clients} -q {opts.dns_outstanding} "
                f"-l {opts.dns_duration:g}, {NAMES} names, dnsmasq)"
            ),
            unit="queries/s",
            target_ratio=None,
            target_text="",
            load_command=pin + " ".join(load).replace("-p 0", "-p PORT"),
            backend_command=pin + " ".join(backend).replace("--port=0", "--port=PORT"),
            contenders=contenders,
            reference="direct",
            ratio_pairs=DNS_RATIO_PAIRS,
            avg_latency=True,
            notes=[
                "dnsperf 2.10 reports the average latency, not percentiles; *lost* is the "
                "share of queries not answered within its 5 s timeout."
            ],
        )
    ]


render_section = section_renderer(
    "dns",
    "DNS (caching proxy, UDP relay)",
    f"Queries over UDP for {NAMES} names under `{ZONE}`, which dnsmasq answers "
    f"itself (TTL {TTL} s). *direct*: dnsperf to dnsmasq. *trioxy*: "
    "`scripts/dns_proxy.py` with its cache, warmed up, so every measured query is a "
    "cache hit. *trioxy, no cache*: the same with `CACHE_SIZE=0`, every query "
    "forwarded to dnsmasq. *trioxy udp_proxy*: `scripts/udp_proxy.py`, an L4 UDP "
    "relay that does not parse DNS. dnsmasq and dnsperf share the load CPU.",
)
