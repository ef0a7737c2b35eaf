"""The benchmark harness's shared machinery: tools, processes, runs, reports.

Every suite (``bench/suite_*.py``) starts its backend and contenders with
:class:`ProcessRegistry`, runs its load generator through :func:`interleave`
(round-robin repetitions, CPU and noise accounting in :func:`measure`) and returns
:class:`BenchResult` objects, which :func:`results_lines` renders as Markdown and
:func:`write_section` puts into its own section of ``BENCHMARKS.md``.
``bench/run.py`` is the command line that ties them together.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = Path(__file__).resolve().parent / "conf"
DEFAULT_OUTPUT = REPO / "BENCHMARKS.md"
DEFAULT_TRIOXY_CMD = ".venv/bin/trioxy run scripts/tcp_proxy.py"
#: The same proxy with a pass-through filter, forcing the event path (no splice).
EVENTS_TRIOXY_CMD = ".venv/bin/trioxy run bench/conf/tcp_proxy_events.py"

#: The HTTP reverse proxy the http suite runs (``LISTEN``, ``UPSTREAMS`` in its environment).
DEFAULT_TRIOXY_HTTP_CMD = ".venv/bin/trioxy run scripts/reverse_proxy.py"
#: The mqtt suite's two gateways: devices -> edge -> (smux link) -> cloud -> broker.
DEFAULT_MQTT_EDGE_CMD = ".venv/bin/trioxy run scripts/mqtt_edge.py"
DEFAULT_MQTT_CLOUD_CMD = ".venv/bin/trioxy run scripts/mqtt_cloud.py"
#: The dns suite's caching DNS proxy and plain UDP relay.
DEFAULT_DNS_CMD = ".venv/bin/trioxy run scripts/dns_proxy.py"
DEFAULT_UDP_CMD = ".venv/bin/trioxy run scripts/udp_proxy.py"
#: The tls suite's TLS offload (``LISTEN``, ``UPSTREAMS``, ``CERT``, ``KEY``...).
DEFAULT_TLS_CMD = ".venv/bin/trioxy run scripts/tls_offload.py"
#: The tunnel suite's two ends: load -> client end (FORWARD) -> TLS smux links ->
#: server end -> backend.
DEFAULT_TUNNEL_CLIENT_CMD = ".venv/bin/trioxy run scripts/tunnel_client.py"
DEFAULT_TUNNEL_SERVER_CMD = ".venv/bin/trioxy run scripts/tunnel_server.py"

#: Contenders of each suite, in report order; ``--contenders`` picks among their union.
SUITE_CONTENDERS = {
    "l4": ("direct", "haproxy", "trioxy", "trioxy-events"),
    "http": ("direct", "nginx", "haproxy", "trioxy"),
    # trioxy = scripts/mqtt_edge.py + scripts/mqtt_cloud.py in front of the broker
    "mqtt": ("direct", "trioxy"),
    # trioxy = scripts/dns_proxy.py, cache on (hits); trioxy-nocache = CACHE_SIZE=0
    # (every query forwarded); trioxy-udp = scripts/udp_proxy.py (L4 relay)
    "dns": ("direct", "trioxy", "trioxy-nocache", "trioxy-udp"),
    # TLS termination in front of a plain-HTTP backend; trioxy = scripts/tls_offload.py
    "tls": ("nginx", "haproxy", "trioxy"),
    # trioxy = scripts/tunnel_client.py + scripts/tunnel_server.py (mutual-TLS smux links)
    "tunnel": ("direct", "trioxy"),
}
CONTENDERS = tuple(dict.fromkeys(c for cs in SUITE_CONTENDERS.values() for c in cs))
SUITES = tuple(SUITE_CONTENDERS)
#: Benchmarks of each suite (``--only`` picks among them).
SUITE_BENCHES = {
    "l4": ("bulk", "rps"),
    "http": ("small", "large"),
    "mqtt": ("qos1",),
    "dns": ("qps",),
    "tls": ("keepalive", "handshake"),
    "tunnel": ("bulk1", "bulk4", "conns"),
}
BENCHES = tuple(b for bs in SUITE_BENCHES.values() for b in bs)

#: Debian package providing each external tool.
TOOL_PACKAGES = {
    "iperf3": "iperf3",
    "wrk": "wrk",
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "taskset": "util-linux",
    "mosquitto": "mosquitto",
    "dnsperf": "dnsperf",
    "dnsmasq": "dnsmasq-base",
    "openssl": "openssl",
}
#: Tools each contender / suite needs.
SUITE_TOOLS = {
    "l4": ("iperf3", "wrk", "nginx"),
    "http": ("wrk", "nginx"),
    "mqtt": ("mosquitto",),
    "dns": ("dnsperf", "dnsmasq"),
    "tls": ("wrk", "nginx", "openssl"),
    "tunnel": ("iperf3", "wrk", "nginx", "openssl"),
}
#: Tools whose versions a suite's section names.
SUITE_REPORT_TOOLS = {
    "l4": ("haproxy", "nginx", "iperf3", "wrk"),
    "http": ("haproxy", "nginx", "wrk"),
    "mqtt": ("mosquitto",),
    "dns": ("dnsmasq", "dnsperf"),
    "tls": ("haproxy", "nginx", "wrk", "openssl"),
    "tunnel": ("iperf3", "wrk", "nginx", "openssl"),
}
CONTENDER_TOOLS: dict[str, tuple[str, ...]] = {c: () for c in CONTENDERS}
CONTENDER_TOOLS |= {"nginx": ("nginx",), "haproxy": ("haproxy",)}

TIMES = "\u00d7"  # multiplication sign (ruff flags the literal character)
#: A run during which other processes used more than this (% of one CPU) is noisy.
NOISY_PCT = 15.0
#: Under this median CPU use (% of its core) a proxy was not the bottleneck.
SATURATED_PCT = 85.0
#: Warn (and say so in BENCHMARKS.md) when this share of all CPUs was busy before a run.
BUSY_WARN_PCT = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(Exception):
    """A one-line, user-facing error."""


class ContenderSkipped(BenchError):
    """A contender that cannot run yet (its script does not exist): reported as
    skipped, with the reason, instead of as a failure."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def ensure_tools(names: Sequence[str], install: bool) -> dict[str, str]:
    """Return {tool: path}; apt-get install what is missing (when allowed)."""
    missing = [n for n in names if find_tool(n) is None]
    if missing and install:
        if os.geteuid() != 0:
            raise BenchError(
                f"missing tools {', '.join(missing)} and not root: "
                f"apt-get install {' '.join(TOOL_PACKAGES[n] for n in missing)}"
            )
        if shutil.which("apt-get") is None:
            raise BenchError(f"missing tools {', '.join(missing)} and no apt-get to install them")
        pkgs = sorted({TOOL_PACKAGES[n] for n in missing})
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]
        log(f"installing {' '.join(pkgs)}")
        r = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
        if r.returncode != 0:
            log("apt-get install failed; running apt-get update and retrying")
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            r = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
            if r.returncode != 0:
                tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:]
                raise BenchError(f"apt-get install {' '.join(pkgs)} failed: {' '.join(tail)}")
        # the Debian packages start their services; we do not want them running
        for svc in ("nginx", "haproxy", "iperf3"):
            if svc in pkgs or (svc == "nginx" and "nginx-light" in pkgs):
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(["systemctl", "stop", svc], capture_output=True, timeout=30)
        missing = [n for n in names if find_tool(n) is None]
    if missing:
        wanted = " ".join(TOOL_PACKAGES[n] for n in missing)
        raise BenchError(
            f"missing tool(s): {', '.join(missing)} (apt-get install -y {wanted}, "
            "or run without --no-install as root)"
        )
    return {n: str(find_tool(n)) for n in names}


def tool_version(path: str, name: str) -> str:
    """One line naming the tool and its version, for the report."""
    args = {
        "nginx": ["-v"],
        "haproxy": ["-v"],
        "iperf3": ["--version"],
        "wrk": ["--version"],
        "mosquitto": ["-h"],
        "dnsmasq": ["--version"],
        "dnsperf": ["-h"],
        "openssl": ["version"],
    }
    if name not in args:
        return "?"
    try:
        r = subprocess.run([path, *args[name]], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
    if not text:
        return "?"
    if name == "dnsperf":  # "DNS Performance Testing Tool" / "Version 2.10.0"
        version = next((t for t in text if t.startswith("Version ")), "Version ?")
        return "dnsperf " + version.split(None, 1)[1]
    line = text[0].strip()
    line = re.sub(r" - https?://\S+", "", line)  # haproxy
    line = re.sub(r"\s*(\[epoll\]\s*)?Copyright.*", "", line)  # wrk, dnsmasq
    return line.replace("nginx version: ", "").replace("HAProxy version", "HAProxy")


# ----------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        rows = [r.strip() for r in text.strip().splitlines() if r.strip() and "[NOTICE]" not in r]
        return " | ".join(rows[-lines:])

    def why_dead(self) -> str:
        rc = self.popen.poll()
        tail = self.tail()
        return f"{self.name} exited (rc={rc})" + (f": {tail}" if tail else "")


class ProcessRegistry:
    """Starts processes in their own process groups and stops them all."""

    def __init__(self, logdir: Path, pin: bool) -> None:
        self.logdir = logdir
        self.pin = pin
        self.procs: list[Proc] = []
        self._n = 0

    def start(
        self,
        name: str,
        argv: list[str],
        cpu: int | None,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> Proc:
        if cpu is not None and self.pin:
            argv = ["taskset", "-c", str(cpu), *argv]
        self._n += 1
        log_path = self.logdir / f"{self._n:02d}-{name}.log"
        with open(log_path, "wb") as logf:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        proc = Proc(name, popen, log_path, argv)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        if proc in self.procs:
            self.procs.remove(proc)
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # the group may outlive its leader (nginx workers, trioxy workers)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=grace)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc)


def run_tool(argv: list[str], timeout: float, pin_cpu: int | None, pin: bool) -> str:
    """Run a load generator to completion in its own process group; return stdout."""
    if pin_cpu is not None and pin:
        argv = ["taskset", "-c", str(pin_cpu), *argv]
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.communicate(timeout=5)
        raise BenchError(f"{Path(argv[0]).name} timed out after {timeout:.0f}s") from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout=5)
        raise
    text = out.decode(errors="replace")
    if popen.returncode != 0 and not text.strip():
        tail = err.decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"{argv[-1]!r} failed rc={popen.returncode}: {' '.join(tail)}")
    return text


def free_port(taken: set[int]) -> int:
    """A loopback port free for both TCP and UDP (the dns suite listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        if port not in taken:
            taken.add(port)
            return port
    raise BenchError("could not find a free loopback port")


def listening_ports(udp: bool = False) -> set[int]:
    """Ports something listens on: TCP sockets in LISTEN state, or (``udp``) bound
    UDP sockets that are not connected, read from ``/proc/net``."""
    tables = ("/proc/net/udp", "/proc/net/udp6") if udp else ("/proc/net/tcp", "/proc/net/tcp6")
    state = "07" if udp else "0A"  # TCP_CLOSE (an unconnected UDP socket), TCP_LISTEN
    ports: set[int] = set()
    for table in tables:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == state and parts[2].endswith(":0000"):
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(proc: Proc, port: int, timeout: float, udp: bool = False) -> None:
    """Wait until something listens on ``port`` (without connecting to it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(proc.why_dead())
        if port in listening_ports(udp):
            return
        time.sleep(0.05)
    tail = proc.tail()
    proto = "udp " if udp else ""
    raise BenchError(
        f"{proc.name} not listening on {proto}127.0.0.1:{port} after {timeout:.0f}s"
        + (f": {tail}" if tail else "")
    )


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_ticks(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def tree_peak_rss_kb(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


# --------------------------------------------------------------------- load tools


@dataclass
class Sample:
    value: float  # Gbit/s or requests/s
    cpu_pct: float | None = None  # proxy CPU use during the run (% of one core)
    p50_ms: float | None = None
    p99_ms: float | None = None
    other_cpu_pct: float | None = None  # CPU used by processes not ours (% of one CPU)
    note: str = ""
    rps: float | None = None  # http suite: requests/s and MiB/s, whichever is not value
    mib_s: float | None = None
    avg_ms: float | None = None  # dns suite: dnsperf's average latency (it has no p99)
    lost_pct: float | None = None  # dns suite: queries lost (% of those sent)
    #: tunnel suite: CPU use of each process of the contender (% of one core), by
    #: name; ``cpu_pct`` is their sum
    part_cpu_pct: dict[str, float] = field(default_factory=dict)


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_time_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"wrk: bad latency {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str
    mib_s: float | None = None  # wrk's Transfer/sec (its "MB" are MiB)


#: wrk's byte units are powers of 1024.
_WRK_BYTE_UNITS = {"": 1.0, "K": 1024.0, "M": 1024.0**2, "G": 1024.0**3, "T": 1024.0**4}


def _wrk_transfer_mib_s(text: str) -> float | None:
    m = re.search(r"^Transfer/sec:\s+([\d.]+)([KMGT]?)B\s*$", text, re.M)
    if not m:
        return None
    return float(m.group(1)) * _WRK_BYTE_UNITS[m.group(2)] / (1024.0 * 1024.0)


def parse_wrk(text: str) -> WrkResult:
    rps_m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    req_m = re.search(r"^\s*(\d+) requests in", text, re.M)
    p50_m = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    p99_m = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    if not (rps_m and req_m and p50_m and p99_m):
        first = text.strip().splitlines()[-1:] if text.strip() else ["(no output)"]
        raise BenchError(f"wrk: unparsable output: {' '.join(first)[:200]}")
    errors = []
    sock = re.search(r"Socket errors: (.*)", text)
    if sock:
        errors.append("socket errors: " + sock.group(1).strip())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors.append(f"non-2xx: {non2xx.group(1)}")
    requests = int(req_m.group(1))
    if requests == 0:
        raise BenchError(
            "wrk: 0 requests completed" + (f" ({'; '.join(errors)})" if errors else "")
        )
    return WrkResult(
        float(rps_m.group(1)),
        _wrk_time_ms(p50_m.group(1)),
        _wrk_time_ms(p99_m.group(1)),
        requests,
        "; ".join(errors),
        _wrk_transfer_mib_s(text),
    )


# ------------------------------------------------------------------------- config


@dataclass
class Options:
    suites: list[str]
    contenders: list[str]
    reps: int
    bulk_duration: float
    rps_duration: float
    wrk_threads: int
    wrk_connections: int
    proxy_cpu: int
    load_cpu: int
    pin: bool
    install: bool
    trioxy_cmd: str
    trioxy_events_cmd: str
    trioxy_http_cmd: str
    trioxy_env: dict[str, str]
    trioxy_start_timeout: float
    output: Path | None
    json_out: Path | None
    keep_tmp: bool
    warmup: float
    wait_idle: float
    noisy_retries: int
    only: list[str]
    mqtt_duration: float = 10.0
    mqtt_publishers: int = 50
    mqtt_window: int = 10
    mqtt_max_upstream: int | None = None  # the edge's MAX_UPSTREAM; None: its default
    mqtt_edge_cmd: str = DEFAULT_MQTT_EDGE_CMD
    mqtt_cloud_cmd: str = DEFAULT_MQTT_CLOUD_CMD
    dns_duration: float = 20.0
    dns_clients: int = 4
    dns_outstanding: int = 200
    dns_cmd: str = DEFAULT_DNS_CMD
    udp_cmd: str = DEFAULT_UDP_CMD
    budget_s: float = 25 * 60.0  # the whole run's time budget (--budget)
    tls_cmd: str = DEFAULT_TLS_CMD  # the tls suite's trioxy (--trioxy-tls-cmd)
    #: the tunnel suite: its two ends, their LINKS (None: the client end's default)
    #: and the seconds per run of its -P 4 and connections benchmarks
    tunnel_client_cmd: str = DEFAULT_TUNNEL_CLIENT_CMD
    tunnel_server_cmd: str = DEFAULT_TUNNEL_SERVER_CMD
    tunnel_links: int | None = None
    tunnel_duration: float = 5.0
    #: noisy runs are repeated only until this time.monotonic(), so that retries
    #: cannot push a full run past its time budget (``--budget``)
    retry_until: float = float("inf")


def render(template: str, **values: str) -> str:
    return string.Template((CONF_DIR / template).read_text()).substitute(values)


@dataclass
class Contender:
    """A way to reach a backend: directly, or through a proxy process."""

    name: str
    port: int  # where the load generator connects
    proc: Proc | None = None
    #: more processes that make up this contender (the mqtt suite's cloud gateway);
    #: their CPU time and RSS count with ``proc``'s
    helpers: list[Proc] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None  # not run, and why (e.g. its script does not exist yet)
    command: str = ""
    config_text: str = ""
    peak_rss_kb: int | None = None
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def procs(self) -> list[Proc]:
        """Every process of the contender (none for *direct*)."""
        return ([self.proc] if self.proc is not None else []) + self.helpers

    def dead(self) -> Proc | None:
        """One of its processes that has exited, if any."""
        return next((p for p in self.procs if not p.alive()), None)


def suite_contenders(opts: Options, suite: str) -> list[str]:
    """The contenders chosen with ``--contenders`` that ``suite`` has, in its order."""
    return [c for c in SUITE_CONTENDERS[suite] if c in opts.contenders]


def trioxy_argv(cmd: str) -> list[str]:
    """``cmd`` split into argv; :class:`ContenderSkipped` when its script does not
    exist (yet), :class:`BenchError` when its program is missing."""
    argv = shlex.split(cmd)
    if not argv:
        raise BenchError("empty trioxy command")
    script = next((a for a in argv if a.endswith(".py")), None)
    if script and not (REPO / script).exists():
        raise ContenderSkipped(f"{script} missing")
    if not (REPO / argv[0]).exists() and shutil.which(argv[0]) is None:
        raise BenchError(f"{argv[0]} not found")
    return argv


def start_each(
    reg: ProcessRegistry,
    opts: Options,
    suite: str,
    taken: set[int],
    label: str,
    start: Callable[[Contender], None],
    direct_port: int | None = None,
) -> list[Contender]:
    """The suite's contenders chosen with ``--contenders``, in its order, each
    started by ``start(c)`` on a free port (``c.port``; ``start`` sets its
    processes and ``command``). With ``direct_port``, *direct* is not started:
    the load goes to that port. A contender that is skipped or fails to start
    keeps why (``skipped``, ``error``: one log line) and its processes are
    stopped."""
    out: list[Contender] = []
    for name in suite_contenders(opts, suite):
        if name == "direct" and direct_port is not None:
            out.append(Contender(name, direct_port, command="(no proxy)"))
            continue
        c = Contender(name, free_port(taken))
        out.append(c)
        try:
            start(c)
        except ContenderSkipped as exc:
            c.skipped = str(exc)
            log(f"{label}: {name} skipped: {exc}")
        except BenchError as exc:
            c.error = str(exc)
            log(f"{label}: {name} failed to start: {exc}")
        if c.skipped or c.error:
            for p in c.procs:
                reg.stop(p)
            c.proc, c.helpers = None, []
    return out


def start_contenders(
    reg: ProcessRegistry,
    opts: Options,
    tools: dict[str, str],
    upstream_port: int,
    taken: set[int],
    tmp: Path,
    label: str,
    suite: str = "l4",
) -> list[Contender]:
    upstream = f"127.0.0.1:{upstream_port}"

    def start(c: Contender) -> None:
        name, port = c.name, c.port
        listen = f"127.0.0.1:{port}"
        if name == "haproxy":
            template = "haproxy-http.cfg" if suite == "http" else "haproxy-tcp.cfg"
            cfg = tmp / f"haproxy-{label}.cfg"
            cfg.write_text(render(template, listen=listen, upstream=upstream))
            c.config_text = render(
                template, listen="127.0.0.1:PORT", upstream="127.0.0.1:UPSTREAM_PORT"
            )
            argv = [tools["haproxy"], "-f", str(cfg), "-db"]
            c.command = f"taskset -c {opts.proxy_cpu} haproxy -f haproxy.cfg -db"
            c.proc = reg.start(f"haproxy-{label}", argv, opts.proxy_cpu)
            wait_listening(c.proc, port, 10)
        elif name == "nginx":
            ndir = tmp / f"nginx-proxy-{label}"
            ndir.mkdir(exist_ok=True)
            user_line = "user root;" if os.geteuid() == 0 else ""
            conf = ndir / "nginx.conf"
            conf.write_text(
                render(
                    "nginx-proxy.conf",
                    dir=str(ndir),
                    listen=listen,
                    upstream=upstream,
                    user_line=user_line,
                )
            )
            c.config_text = render(
                "nginx-proxy.conf",
                dir="DIR",
                listen="127.0.0.1:PORT",
                upstream="127.0.0.1:UPSTREAM_PORT",
                user_line=user_line,
            )
            argv = [tools["nginx"], "-e", str(ndir / "error.log"), "-p", str(ndir)]
            argv += ["-c", str(conf)]
            c.command = (
                f"taskset -c {opts.proxy_cpu} nginx -e DIR/error.log -p DIR -c DIR/nginx.conf"
            )
            c.proc = reg.start(f"nginx-proxy-{label}", argv, opts.proxy_cpu)
            wait_listening(c.proc, port, 10)
        elif name in ("trioxy", "trioxy-events"):
            if suite == "http":
                cmd = opts.trioxy_http_cmd
            elif name == "trioxy":
                cmd = opts.trioxy_cmd
            else:
                cmd = opts.trioxy_events_cmd
            env = {"LISTEN": listen, "UPSTREAMS": upstream, **opts.trioxy_env}
            extra = " ".join(f"{k}={v}" for k, v in opts.trioxy_env.items())
            c.command = (
                f"LISTEN=127.0.0.1:PORT UPSTREAMS=127.0.0.1:PORT {extra} "
                f"taskset -c {opts.proxy_cpu} {cmd}"
            ).replace("  ", " ")
            argv = trioxy_argv(cmd)
            c.proc = reg.start(f"{name}-{label}", argv, opts.proxy_cpu, env=env)
            wait_listening(c.proc, port, opts.trioxy_start_timeout)
        else:
            raise BenchError(f"unknown contender {name}")

    return start_each(reg, opts, suite, taken, label, start, direct_port=upstream_port)


def start_trioxy(
    reg: ProcessRegistry,
    opts: Options,
    name: str,
    cmd: str,
    env: dict[str, str],
    port: int,
    udp: bool = False,
    shown: dict[str, str] | None = None,
) -> tuple[Proc, str]:
    """Start a trioxy script on the proxy CPU with ``env`` (plus ``--trioxy-env``)
    and wait until it listens on ``port`` (UDP with ``udp``); return the process
    and its command line as shown in the report (ports as PORT, or the values in
    ``shown``). Raises
    :class:`ContenderSkipped` when the script does not exist, :class:`BenchError`
    when it does not start."""
    argv = trioxy_argv(cmd)
    full_env = {**env, **opts.trioxy_env}
    shown_env = " ".join(
        f"{k}={re.sub(r'127[.]0[.]0[.]1:[0-9]+', '127.0.0.1:PORT', v)}"
        for k, v in {**full_env, **(shown or {})}.items()
    )
    pin = f"taskset -c {opts.proxy_cpu} " if opts.pin else ""
    proc = reg.start(name, argv, opts.proxy_cpu, env=full_env)
    try:
        wait_listening(proc, port, opts.trioxy_start_timeout, udp=udp)
    except BenchError:
        reg.stop(proc)
        raise
    return proc, f"{shown_env} {pin}{cmd}"


def stop_contenders(reg: ProcessRegistry, contenders: list[Contender]) -> None:
    for c in contenders:
        alive = [p for p in c.procs if p.alive()]
        if alive:
            c.peak_rss_kb = sum(tree_peak_rss_kb(p.pid) for p in alive)
        for p in c.procs:
            reg.stop(p)


def system_busy_ticks() -> int:
    """CPU ticks the machine spent running processes: user, nice, system and steal.

    Interrupt time (irq, softirq) is left out: the kernel charges it to no process,
    so it cannot be told apart from ours, and during a run it is mostly our own
    traffic's (loopback UDP at 70,000 queries/s spends a third of a CPU there)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0
    user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
    return user + nice + system + steal


def own_ticks(reg: ProcessRegistry) -> dict[int, int]:
    """CPU ticks of every process tree the harness is running, by leader pid."""
    return {p.pid: tree_cpu_ticks(p.pid) for p in reg.procs if p.alive()}


def reaped_and_self_ticks() -> float:
    """CPU ticks of this process and of its children already waited for."""

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total * CLK_TCK


def measure(
    c: Contender,
    run: Callable[[Contender], Sample],
    label: str,
    rep: int,
    reps: int,
    reg: ProcessRegistry,
) -> Sample | None:
    """One run of one contender; return the sample, or record the failure.

    Besides the proxy's CPU use it records the *other* CPU use of the machine
    during the run: all CPU time spent, minus what the harness's own processes
    (proxies, backend, load generator, itself) spent. Anything well above zero
    means something else competed for the CPUs and the sample is noisy."""
    if c.error or c.skipped:
        return None
    dead = c.dead()
    if dead is not None:
        c.error = dead.why_dead()
        return None
    ticks0 = sum(tree_cpu_ticks(p.pid) for p in c.procs)
    sys0, own0, reaped0 = system_busy_ticks(), own_ticks(reg), reaped_and_self_ticks()
    t0 = time.monotonic()
    try:
        sample = run(c)
    except BenchError as exc:
        c.failures.append(str(exc))
        log(f"{label} {c.name} run {rep + 1}/{reps}: FAILED: {exc}")
        dead = c.dead()
        if dead is not None:
            c.error = f"{exc}; {dead.why_dead()}"
        elif len(c.failures) >= 2:
            c.error = str(exc)  # do not spend the whole run on timeouts
        return None
    wall = time.monotonic() - t0
    own1 = own_ticks(reg)
    own: float = sum(t - own0.get(pid, 0) for pid, t in own1.items())
    own += reaped_and_self_ticks() - reaped0
    if wall > 0:
        other = (system_busy_ticks() - sys0 - own) / CLK_TCK / wall
        sample.other_cpu_pct = max(0.0, 100.0 * other)
    if c.procs and wall > 0:
        ticks = sum(tree_cpu_ticks(p.pid) for p in c.procs) - ticks0
        sample.cpu_pct = 100.0 * ticks / CLK_TCK / wall
    extra = f" p50={sample.p50_ms:.3f}ms p99={sample.p99_ms:.3f}ms" if sample.p50_ms else ""
    if sample.avg_ms is not None:
        extra += f" avg={sample.avg_ms:.3f}ms lost={sample.lost_pct or 0:.2f}%"
    cpu = f" proxy-cpu={sample.cpu_pct:.0f}%" if sample.cpu_pct is not None else ""
    if sample.other_cpu_pct is not None and sample.other_cpu_pct > NOISY_PCT:
        cpu += f" NOISY: other processes used {sample.other_cpu_pct:.0f}% of a CPU"
    log(f"{label} {c.name} run {rep + 1}/{reps}: {sample.value:,.2f}{extra}{cpu}")
    return sample


def interleave(
    contenders: list[Contender],
    run: Callable[[Contender], Sample],
    label: str,
    opts: Options,
    reg: ProcessRegistry,
) -> None:
    """Round-robin: every repetition runs every contender once, the starting
    contender rotating so that none always runs first. A noisy run (other
    processes competed for the CPUs) is repeated up to ``opts.noisy_retries``
    times, while ``opts.retry_until`` has not passed; the last attempt is kept
    either way."""
    reps = opts.reps
    for rep in range(reps):
        order = contenders[rep % len(contenders) :] + contenders[: rep % len(contenders)]
        for c in order:
            for attempt in range(opts.noisy_retries + 1):
                sample = measure(c, run, label, rep, reps, reg)
                if sample is None:
                    break
                noisy = (sample.other_cpu_pct or 0.0) > NOISY_PCT
                if not noisy or attempt == opts.noisy_retries:
                    c.samples.append(sample)
                    break
                if time.monotonic() > opts.retry_until:
                    log(f"{label} {c.name} run {rep + 1}/{reps}: noisy, kept (time budget spent)")
                    c.samples.append(sample)
                    break
                log(f"{label} {c.name} run {rep + 1}/{reps}: noisy, running it again")
                wait_idle(10)


# ------------------------------------------------------------------------- suites


@dataclass
class BenchResult:
    key: str
    title: str
    unit: str
    target_ratio: float | None  # trioxy / reference must reach this; None: no target
    target_text: str
    load_command: str
    backend_command: str
    contenders: list[Contender]
    backend_config: str = ""
    latency: bool = False
    reference: str = "haproxy"  # the contender the target ratio is against
    ratio_pairs: tuple[tuple[str, str], ...] = ()  # (numerator, denominator); () = l4's
    secondary: str = ""  # "rps" / "mib_s": a second rate column (http suite)
    p99_target_ms: float | None = None  # trioxy's median p99 must stay under this
    avg_latency: bool = False  # average latency and lost columns (dns suite: dnsperf)
    notes: list[str] = field(default_factory=list)  # shown under the table


#: Ratios reported by the l4 suite.
L4_RATIO_PAIRS = (
    ("trioxy", "haproxy"),
    ("trioxy", "direct"),
    ("haproxy", "direct"),
    ("trioxy-events", "haproxy"),
    ("trioxy-events", "trioxy"),
)
#: Ratios reported by the http suite.
HTTP_RATIO_PAIRS = (
    ("trioxy", "nginx"),
    ("trioxy", "haproxy"),
    ("trioxy", "direct"),
    ("nginx", "direct"),
    ("haproxy", "direct"),
)
#: Column titles of the secondary rates.
SECONDARY_UNITS = {"rps": "req/s", "mib_s": "MiB/s"}


@contextlib.contextmanager
def iperf3_server(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], port: int
) -> Iterator[Proc]:
    """A fresh one-shot iperf3 server on ``port`` (load CPU) for one run, so that
    a broken run cannot wedge the next; stopped on the way out."""
    server = reg.start(
        "iperf3-server",
        [tools["iperf3"], "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
        opts.load_cpu,
    )
    try:
        wait_listening(server, port, 10)
        yield server
    finally:
        reg.stop(server, grace=2)


def start_backend_nginx(
    reg: ProcessRegistry,
    opts: Options,
    tools: dict[str, str],
    tmp: Path,
    taken: set[int],
    template: str,
    name: str,
    **values: str,
) -> tuple[Proc, int, str]:
    """Start an nginx backend from ``template`` on the load CPU; return the process,
    its port and its config as shown in the report (paths as DIR, port as PORT)."""
    port = free_port(taken)
    ndir = tmp / name
    ndir.mkdir(exist_ok=True)
    conf_text = render(
        template,
        dir=str(ndir),
        listen=f"127.0.0.1:{port}",
        user_line="user root;" if os.geteuid() == 0 else "",
        **values,
    )
    conf = ndir / "nginx.conf"
    conf.write_text(conf_text)
    nginx = reg.start(
        name,
        [tools["nginx"], "-e", str(ndir / "nginx-error.log"), "-p", str(ndir), "-c", str(conf)],
        opts.load_cpu,
    )
    try:
        wait_listening(nginx, port, 10)
    except BenchError as exc:
        reg.stop(nginx)
        err = ndir / "nginx-error.log"
        detail = err.read_text(errors="replace").strip().splitlines()[-1:] if err.exists() else []
        raise BenchError(f"{exc} {' '.join(detail)}".strip()) from None
    shown = conf_text.replace(str(ndir), "DIR").replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    return nginx, port, shown


def check_and_warm_up(
    contenders: list[Contender],
    path: str,
    expected: bytes,
    opts: Options,
    tools: dict[str, str],
    label: str,
) -> None:
    """GET ``path`` once through each contender and compare the body with
    ``expected``, then warm it up with a short wrk run, so that a broken contender
    is reported clearly (as failed) instead of skewing the figures."""
    for c in contenders:
        if c.error or c.skipped:
            continue
        url = f"http://127.0.0.1:{c.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read()
            if body != expected:
                got = f"{len(body)} bytes" if len(body) > 40 else repr(body)
                raise BenchError(f"GET {path} through {c.name} returned {got}")
            if opts.warmup > 0:
                run_tool(
                    [tools["wrk"], "-t1", "-c10", f"-d{opts.warmup:g}s", url],
                    timeout=opts.warmup + 20,
                    pin_cpu=opts.load_cpu,
                    pin=opts.pin,
                )
        except (OSError, BenchError) as exc:
            c.error = f"check failed: {exc}"
            if c.proc is not None and not c.proc.alive():
                c.error += f"; {c.proc.why_dead()}"
            log(f"{label}: {c.name}: {c.error}")


def wrk_argv(opts: Options, tools: dict[str, str], url: str) -> list[str]:
    return [
        tools["wrk"],
        f"-t{opts.wrk_threads}",
        f"-c{opts.wrk_connections}",
        f"-d{opts.rps_duration:g}s",
        "--latency",
        url,
    ]


def wrk_command(opts: Options, url: str) -> str:
    """The load command as shown in the report."""
    return (
        f"taskset -c {opts.load_cpu} wrk -t{opts.wrk_threads} -c{opts.wrk_connections}"
        f" -d{opts.rps_duration:g}s --latency {url}"
    )


NGINX_BACKEND_COMMAND = "taskset -c {cpu} nginx -e DIR/nginx-error.log -p DIR -c DIR/nginx.conf"


def wrk_flags(opts: Options) -> str:
    return f"wrk -t{opts.wrk_threads} -c{opts.wrk_connections} -d{opts.rps_duration:g}s"


# ------------------------------------------------------------------------ report


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_num(x: float | None, unit: str) -> str:
    if x is None:
        return "—"
    if unit == "Gbit/s":
        return f"{x:.2f}"
    if unit == "MiB/s" and x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.2f}"


def machine_info() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
    }


def cpu_busy_pct(interval: float = 1.0) -> float:
    """Share of all CPUs busy over ``interval`` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    dtotal = total1 - total0
    return 100.0 * (dtotal - (idle1 - idle0)) / dtotal if dtotal > 0 else 0.0


def wait_idle(limit: float) -> float:
    """Wait up to ``limit`` seconds for the machine to be idle; return the last
    busy share measured (percent of all CPUs)."""
    deadline = time.monotonic() + limit
    busy = cpu_busy_pct()
    announced = False
    while busy > BUSY_WARN_PCT and time.monotonic() < deadline:
        if not announced:
            log(f"machine busy ({busy:.0f} % of CPUs); waiting up to {limit:g}s for it to settle")
            announced = True
        busy = cpu_busy_pct()
    return busy


def trioxy_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            timeout=10,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            timeout=10,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (rev or "?") + (" (with uncommitted changes)" if dirty else "")


def contender_label(name: str) -> str:
    return {
        "direct": "direct",
        "haproxy": "HAProxy",
        "nginx": "nginx",
        "trioxy": "trioxy",
        "trioxy-events": "trioxy, event path",
        "trioxy-nocache": "trioxy, no cache",
        "trioxy-udp": "trioxy udp_proxy",
    }.get(name, name)


def result_table(res: BenchResult) -> list[str]:
    lines: list[str] = []
    u = res.unit
    head = f"| contender | {u} (median) | runs |"
    sep = "|---|---:|---|"
    if res.secondary:
        head += f" {SECONDARY_UNITS[res.secondary]} (median) |"
        sep += "---:|"
    if res.latency:
        head += " p50 ms | p99 ms |"
        sep += "---:|---:|"
    if res.avg_latency:
        head += " avg latency ms | lost |"
        sep += "---:|---:|"
    head += " proxy CPU | peak RSS | other CPU | status |"
    sep += "---:|---:|---:|---|"
    lines += [head, sep]
    for c in res.contenders:
        vals = [s.value for s in c.samples]
        med = median(vals)
        runs = ", ".join(fmt_num(v, u) for v in vals) or "—"
        row = f"| {contender_label(c.name)} | {fmt_num(med, u)} | {runs} |"
        if res.secondary:
            rates = [getattr(s, res.secondary) for s in c.samples]
            second = median([r for r in rates if r is not None])
            row += f" {fmt_num(second, SECONDARY_UNITS[res.secondary])} |"
        if res.latency:
            p50 = median([s.p50_ms for s in c.samples if s.p50_ms is not None])
            p99 = median([s.p99_ms for s in c.samples if s.p99_ms is not None])
            row += f" {p50:.3f} |" if p50 is not None else " — |"
            row += f" {p99:.3f} |" if p99 is not None else " — |"
        if res.avg_latency:
            avg = median([s.avg_ms for s in c.samples if s.avg_ms is not None])
            lost = median([s.lost_pct for s in c.samples if s.lost_pct is not None])
            row += f" {avg:.3f} |" if avg is not None else " — |"
            row += f" {lost:.2f} % |" if lost is not None else " — |"
        cpus = [s.cpu_pct for s in c.samples if s.cpu_pct is not None]
        row += f" {median(cpus):.0f} % |" if cpus else " — |"
        row += f" {c.peak_rss_kb / 1024:.1f} MiB |" if c.peak_rss_kb else " — |"
        others = [s.other_cpu_pct for s in c.samples if s.other_cpu_pct is not None]
        row += f" {max(others):.0f} % |" if others else " — |"
        status = []
        if c.skipped:
            status.append(f"skipped: {md_escape(c.skipped)}")
        elif c.error and not c.samples:
            status.append(f"**failed**: {md_escape(c.error)}")
        else:
            ok = len(c.samples)
            status.append(f"ok {ok}/{ok + len(c.failures)}")
            if c.failures:
                status.append(f"failures: {md_escape(c.failures[-1])}")
            notes = {s.note for s in c.samples if s.note}
            if notes:
                status.append(md_escape(sorted(notes)[0]))
        row += " " + "; ".join(status) + " |"
        lines.append(row)
    return lines


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def result_ratios(res: BenchResult) -> tuple[list[str], dict[str, float | None]]:
    med = {c.name: median([s.value for s in c.samples]) for c in res.contenders}
    pairs = res.ratio_pairs or L4_RATIO_PAIRS
    lines = ["| ratio | value |", "|---|---:|"]
    ratios: dict[str, float | None] = {}
    for a, b in pairs:
        if a in med and b in med:
            num, den = med[a], med[b]
            ratios[f"{a}/{b}"] = num / den if num is not None and den else None
            lines.append(f"| {contender_label(a)} / {contender_label(b)} | {fmt_ratio(num, den)} |")
    if res.latency:
        p99 = {
            c.name: median([s.p99_ms for s in c.samples if s.p99_ms is not None])
            for c in res.contenders
        }
        ref = res.reference
        if "trioxy" in p99 and ref in p99:
            lines.append(
                f"| p99 latency trioxy / {contender_label(ref)} "
                f"| {fmt_ratio(p99['trioxy'], p99[ref])} |"
            )
    if res.avg_latency:
        avg = {
            c.name: median([s.avg_ms for s in c.samples if s.avg_ms is not None])
            for c in res.contenders
        }
        for a, b in pairs:
            if a in avg and b in avg:
                lines.append(
                    f"| avg latency {contender_label(a)} / {contender_label(b)} "
                    f"| {fmt_ratio(avg[a], avg[b])} |"
                )
    return lines, ratios


def bottleneck_notes(res: BenchResult) -> list[str]:
    """Say when a proxy did not saturate its core: then the load side limited the
    figure, and a ratio against that proxy understates its capacity."""
    notes = []
    for c in res.contenders:
        cpus = [s.cpu_pct for s in c.samples if s.cpu_pct is not None]
        if c.proc is None and not cpus:
            continue
        used = median(cpus)
        others = [s.other_cpu_pct for s in c.samples if s.other_cpu_pct is not None]
        if others and max(others) > NOISY_PCT:
            notes.append(
                f"{contender_label(c.name)}'s runs were noisy: other processes used up to "
                f"{max(others):.0f} % of a CPU during them; rerun on an idle machine."
            )
        elif used is not None and used < SATURATED_PCT:
            notes.append(
                f"{contender_label(c.name)} used {used:.0f} % of its core: it was not "
                "the bottleneck (the load generator/backend core was), so this figure "
                "understates what it can do."
            )
    return notes


def target_line(res: BenchResult, ratios: dict[str, float | None]) -> str:
    """The target verdicts (met / not met / not measured), or "" when the
    benchmark has no target (only ratios are reported)."""
    if res.target_ratio is None:
        return ""
    ref = res.reference
    name = contender_label(ref)
    r = ratios.get(f"trioxy/{ref}")
    if r is None:
        verdict = f"**not measured** (trioxy or {name} has no result)"
    elif r >= res.target_ratio:
        verdict = f"**met** (trioxy = {r:.2f} {TIMES} {name})"
    else:
        verdict = f"**not met** (trioxy = {r:.2f} {TIMES} {name})"
    noisy = any(
        (s.other_cpu_pct or 0.0) > NOISY_PCT
        for c in res.contenders
        if c.name in ("trioxy", ref)
        for s in c.samples
    )
    if r is not None and noisy:
        verdict += " — *noisy runs, not conclusive*"
    line = f"Target: {res.target_text} — {verdict}"
    if res.p99_target_ms is not None:
        trioxy = next((c for c in res.contenders if c.name == "trioxy"), None)
        p99 = median([s.p99_ms for s in trioxy.samples if s.p99_ms is not None]) if trioxy else None
        limit = f"p99 ≤ {res.p99_target_ms:g} ms"
        if p99 is None:
            line += f"; {limit} — **not measured**"
        else:
            met = "**met**" if p99 <= res.p99_target_ms else "**not met**"
            line += f"; {limit} — {met} (trioxy p99 = {p99:.2f} ms)"
    return line


def section_preamble(
    opts: Options,
    tools: dict[str, str],
    suite: str,
    title: str,
    started: str,
    took: float,
    busy_before: float,
    method_note: str,
) -> list[str]:
    """A suite section's heading, machine, tools and method lines."""
    m = machine_info()
    out: list[str] = []
    out.append(f"## {title}")
    out.append("")
    out.append(
        f"Generated by `bench/run.py --suite {suite}` on {started} in {took:.0f} s. "
        "Regenerate with `make bench` (or `.venv/bin/python bench/run.py`); "
        "this section is replaced as a whole."
    )
    out.append("")
    out.append(f"- Machine: {m['nproc']} CPUs, {m['cpu']}, {m['memory']} RAM, Linux {m['kernel']}")
    out.append(f"- trioxy revision: {trioxy_revision()}; Python {m['python']}")
    versions = ", ".join(tool_version(tools[t], t) for t in SUITE_REPORT_TOOLS[suite] if t in tools)
    out.append(f"- Tools: {versions}")
    pin = (
        f"proxy under test pinned to CPU {opts.proxy_cpu}; load generator and backend "
        f"pinned to CPU {opts.load_cpu} (`taskset -c`)"
        if opts.pin
        else "no CPU pinning (--no-pin)"
    )
    out.append(
        f"- Method: {pin}; median of {opts.reps} runs per contender, runs interleaved "
        "round-robin (starting contender rotates each repetition); all traffic on 127.0.0.1. "
        "*proxy CPU* is the proxy's CPU time over wall time during the runs (100 % = its one "
        "core saturated); *peak RSS* is VmHWM of the proxy process and its children at the "
        "end of its runs; *other CPU* is the most CPU (% of one CPU) that processes not "
        f"started by the harness used during any of the contender's runs (above "
        f"{NOISY_PCT:g} % the figures are noisy). {method_note}"
    )
    if busy_before > BUSY_WARN_PCT:
        out.append(
            f"- **Warning**: the machine was not idle before the run ({busy_before:.0f} % "
            "of all CPUs busy): other load may have skewed these figures."
        )
    out.append("")
    return out


def results_lines(results: list[BenchResult]) -> list[str]:
    """Each benchmark's table, ratios, target verdict and bottleneck notes."""
    out: list[str] = []
    for res in results:
        out.append(f"### {res.title}")
        out.append("")
        out += result_table(res)
        out.append("")
        ratio_lines, ratios = result_ratios(res)
        out += ratio_lines
        out.append("")
        target = target_line(res, ratios)
        if target:
            out.append(target)
            out.append("")
        for note in [*res.notes, *bottleneck_notes(res)]:
            out.append(f"- {note}")
            out.append("")
    return out


def commands_lines(results: list[BenchResult]) -> list[str]:
    cmds: dict[str, str] = {}
    for res in results:
        cmds[f"{res.key} load"] = res.load_command
        cmds[f"{res.key} backend"] = res.backend_command
        for c in res.contenders:
            if c.command and c.name != "direct":
                cmds[f"{c.name} proxy"] = c.command
    return ["### Commands", "", "```", *[f"# {k}\n{v}" for k, v in cmds.items()], "```", ""]


def config_block(intro: str, text: str) -> list[str]:
    return [intro, "", "```", text.strip(), "```", ""] if text else []


def contender_configs(results: list[BenchResult]) -> dict[str, str]:
    """Each contender's config text by name: the last result's that has one."""
    return {c.name: c.config_text for r in results for c in r.contenders if c.config_text}


def first_backend_config(results: list[BenchResult]) -> str:
    """The first backend config of the results that has one (``""``: none)."""
    return next((r.backend_config for r in results if r.backend_config), "")


def proxy_configs(
    nginx: str, haproxy: str, backend: str
) -> Callable[[list[BenchResult]], list[tuple[str, str]]]:
    """The config blocks of the suites where nginx and HAProxy proxy to an nginx
    backend (http, tls), under the intros given: nginx's and HAProxy's config
    (the last result's that has one), then the first result's backend config."""

    def configs(results: list[BenchResult]) -> list[tuple[str, str]]:
        by_name = contender_configs(results)
        return [
            (nginx, by_name.get("nginx", "")),
            (haproxy, by_name.get("haproxy", "")),
            (backend, results[0].backend_config if results else ""),
        ]

    return configs


#: A suite's ``render_section(opts, results, tools, started, took, busy_before)``.
RenderSection = Callable[[Options, list[BenchResult], dict[str, str], str, float, float], str]


def section_renderer(
    suite: str,
    title: str,
    method_note: str | Callable[[Options], str],
    configs: Callable[[list[BenchResult]], Sequence[tuple[str, str]]] = lambda results: (),
) -> RenderSection:
    """A suite's ``render_section``: its whole BENCHMARKS.md section is
    :func:`section_preamble` (with ``method_note``, or what it gives for the
    options), the results, the commands, then one :func:`config_block` per
    ``(intro, text)`` that ``configs`` gives for the results (an empty text
    leaves its block out)."""

    def render_section(
        opts: Options,
        results: list[BenchResult],
        tools: dict[str, str],
        started: str,
        took: float,
        busy_before: float,
    ) -> str:
        note = method_note if isinstance(method_note, str) else method_note(opts)
        out = section_preamble(opts, tools, suite, title, started, took, busy_before, note)
        out += results_lines(results)
        out += commands_lines(results)
        for intro, text in configs(results):
            out += config_block(intro, text)
        return "\n".join(out).rstrip() + "\n"

    return render_section


HEADER = """# Benchmarks

Generated by `bench/run.py` (see `bench/README.md`). Each suite has its own section,
regenerated as a whole by `bench/run.py --suite NAME`; the other sections are kept.
Figures are from one machine and one run: compare the ratios, not the absolutes.
"""


def write_section(path: Path, suite: str, body: str) -> None:
    begin = f"<!-- BEGIN SUITE {suite} -->"
    end = f"<!-- END SUITE {suite} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text)


def results_json(results: list[BenchResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for res in results:
        _, ratios = result_ratios(res)
        out[res.key] = {
            "unit": res.unit,
            "target": res.target_text,
            "ratios": ratios,
            "contenders": {
                c.name: {
                    "median": median([s.value for s in c.samples]),
                    "runs": [s.value for s in c.samples],
                    "p50_ms": median([s.p50_ms for s in c.samples if s.p50_ms is not None]),
                    "p99_ms": median([s.p99_ms for s in c.samples if s.p99_ms is not None]),
                    "cpu_pct": [s.cpu_pct for s in c.samples],
                    "other_cpu_pct": [s.other_cpu_pct for s in c.samples],
                    "rps": median([s.rps for s in c.samples if s.rps is not None]),
                    "mib_s": median([s.mib_s for s in c.samples if s.mib_s is not None]),
                    "avg_ms": median([s.avg_ms for s in c.samples if s.avg_ms is not None]),
                    "lost_pct": median([s.lost_pct for s in c.samples if s.lost_pct is not None]),
                    "peak_rss_kb": c.peak_rss_kb,
                    "skipped": c.skipped,
                    "error": c.error,
                    "failures": c.failures,
                }
                for c in res.contenders
            },
        }
    return out


def print_summary(results: list[BenchResult]) -> None:
    for res in results:
        print(f"\n{res.title}")
        for line in result_table(res):
            print("  " + line)
        ratio_lines, ratios = result_ratios(res)
        for line in ratio_lines[2:]:
            print("  " + line)
        target = target_line(res, ratios)
        if target:
            print("  " + target)
        for note in [*res.notes, *bottleneck_notes(res)]:
            print("  note: " + note)
