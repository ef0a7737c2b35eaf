#!/usr/bin/env python3
"""trioxy benchmark harness: real load generators against trioxy, HAProxy, nginx
and a direct connection, interleaved in one run, reported as ratios in BENCHMARKS.md.

Suites (one Markdown section each in BENCHMARKS.md, between markers, so that one
suite can be regenerated without touching the others):

* ``l4`` -- TCP relay.
  * bulk throughput: iperf3, one stream, through direct / HAProxy ``mode tcp`` /
    ``trioxy run scripts/tcp_proxy.py``; Gbit/s.
  * small-request RPS: wrk against nginx returning a 2-byte body, through the
    same three; requests/s and latency p50/p99.
* ``http`` -- HTTP reverse proxy: wrk through direct / nginx ``proxy_pass`` /
  HAProxy ``mode http`` / ``trioxy run scripts/reverse_proxy.py`` to an nginx
  backend, for a 2-byte body and for a 1 MiB file; requests/s, MiB/s, p50/p99,
  with ratios and targets against nginx.

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
import tempfile
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

#: Contenders of each suite, in report order; ``--contenders`` picks among their union.
SUITE_CONTENDERS = {
    "l4": ("direct", "haproxy", "trioxy", "trioxy-events"),
    "http": ("direct", "nginx", "haproxy", "trioxy"),
}
CONTENDERS = tuple(dict.fromkeys(c for cs in SUITE_CONTENDERS.values() for c in cs))
SUITES = tuple(SUITE_CONTENDERS)
L4_BENCHES = ("bulk", "rps")
HTTP_BENCHES = ("small", "large")
SUITE_BENCHES = {"l4": L4_BENCHES, "http": HTTP_BENCHES}
#: The http suite's large response.
LARGE_SIZE = 1 << 20

#: Debian package providing each external tool.
TOOL_PACKAGES = {
    "iperf3": "iperf3",
    "wrk": "wrk",
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "taskset": "util-linux",
}
#: Tools each contender / suite needs.
SUITE_TOOLS = {"l4": ("iperf3", "wrk", "nginx"), "http": ("wrk", "nginx")}
CONTENDER_TOOLS = {
    "direct": (),
    "nginx": ("nginx",),
    "haproxy": ("haproxy",),
    "trioxy": (),
    "trioxy-events": (),
}

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
    args = {"nginx": ["-v"], "haproxy": ["-v"], "iperf3": ["--version"], "wrk": ["--version"]}
    if name not in args:
        return "?"
    try:
        r = subprocess.run([path, *args[name]], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    text = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
    if not text:
        return "?"
    line = text[0].strip()
    line = re.sub(r" - https?://\S+", "", line)  # haproxy
    line = re.sub(r"\s*(\[epoll\]\s*)?Copyright.*", "", line)  # wrk
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
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port
    raise BenchError("could not find a free loopback port")


def listening_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(proc: Proc, port: int, timeout: float) -> None:
    """Wait until something listens on ``port`` (without connecting to it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(proc.why_dead())
        if port in listening_ports():
            return
        time.sleep(0.05)
    tail = proc.tail()
    raise BenchError(
        f"{proc.name} not listening on 127.0.0.1:{port} after {timeout:.0f}s"
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


def render(template: str, **values: str) -> str:
    return string.Template((CONF_DIR / template).read_text()).substitute(values)


@dataclass
class Contender:
    """A way to reach a backend: directly, or through a proxy process."""

    name: str
    port: int  # where the load generator connects
    proc: Proc | None = None
    error: str | None = None
    skipped: str | None = None  # not run, and why (e.g. its script does not exist yet)
    command: str = ""
    config_text: str = ""
    peak_rss_kb: int | None = None
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


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
    out: list[Contender] = []
    upstream = f"127.0.0.1:{upstream_port}"
    for name in suite_contenders(opts, suite):
        if name == "direct":
            out.append(Contender(name, upstream_port, command="(no proxy)"))
            continue
        port = free_port(taken)
        c = Contender(name, port)
        out.append(c)
        listen = f"127.0.0.1:{port}"
        try:
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
        except ContenderSkipped as exc:
            c.skipped = str(exc)
            log(f"{label}: {name} skipped: {exc}")
        except BenchError as exc:
            c.error = str(exc)
            log(f"{label}: {name} failed to start: {exc}")
            if c.proc is not None:
                reg.stop(c.proc)
    return out


def stop_contenders(reg: ProcessRegistry, contenders: list[Contender]) -> None:
    for c in contenders:
        if c.proc is not None:
            if c.proc.alive():
                c.peak_rss_kb = tree_peak_rss_kb(c.proc.pid)
            reg.stop(c.proc)


def system_busy_ticks() -> int:
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0
    return sum(fields[:8]) - fields[3] - fields[4]  # minus idle and iowait


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
    if c.proc is not None and not c.proc.alive():
        c.error = c.proc.why_dead()
        return None
    ticks0 = tree_cpu_ticks(c.proc.pid) if c.proc else 0
    sys0, own0, reaped0 = system_busy_ticks(), own_ticks(reg), reaped_and_self_ticks()
    t0 = time.monotonic()
    try:
        sample = run(c)
    except BenchError as exc:
        c.failures.append(str(exc))
        log(f"{label} {c.name} run {rep + 1}/{reps}: FAILED: {exc}")
        if c.proc is not None and not c.proc.alive():
            c.error = f"{exc}; {c.proc.why_dead()}"
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
    if c.proc is not None and wall > 0:
        sample.cpu_pct = 100.0 * (tree_cpu_ticks(c.proc.pid) - ticks0) / CLK_TCK / wall
    extra = f" p50={sample.p50_ms:.3f}ms p99={sample.p99_ms:.3f}ms" if sample.p50_ms else ""
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
    times; the last attempt is kept either way."""
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
                log(f"{label} {c.name} run {rep + 1}/{reps}: noisy, running it again")
                wait_idle(10)


# ------------------------------------------------------------------------- suites


@dataclass
class BenchResult:
    key: str
    title: str
    unit: str
    target_ratio: float
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


def bench_l4_bulk(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> BenchResult:
    backend_port = free_port(taken)
    contenders = start_contenders(reg, opts, tools, backend_port, taken, tmp, "bulk")
    dur = opts.bulk_duration

    def run(c: Contender) -> Sample:
        # a fresh one-shot iperf3 server per run: a broken run cannot wedge the next
        server = reg.start(
            "iperf3-server",
            [tools["iperf3"], "-s", "-1", "-B", "127.0.0.1", "-p", str(backend_port)],
            opts.load_cpu,
        )
        try:
            wait_listening(server, backend_port, 10)
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
        finally:
            reg.stop(server, grace=2)

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


NGINX_BACKEND_COMMAND = "taskset -c {cpu} nginx -e DIR/nginx-error.log -p DIR -c DIR/nginx.conf"


def large_payload() -> bytes:
    """The http suite's 1 MiB file: varied bytes, so a proxy that corrupts or
    truncates the body fails the check."""
    return bytes(range(256)) * (LARGE_SIZE // 256)


def bench_http(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """The http suite: wrk through each contender to an nginx backend, for a tiny
    response (``/``) and a 1 MiB file (``/1m.bin``). One backend serves both
    benchmarks; the contenders are started afresh for each (peak RSS per benchmark)."""
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    payload = large_payload()
    (www / "1m.bin").write_bytes(payload)
    nginx, backend_port, backend_config = start_backend_nginx(
        reg, opts, tools, tmp, taken, "nginx-http-backend.conf", "nginx-backend", www=str(www)
    )
    backend_config = backend_config.replace(str(www), "DIR/www")
    results: list[BenchResult] = []
    try:
        for bench in (b for b in HTTP_BENCHES if b in opts.only):
            large = bench == "large"
            path, expected = ("/1m.bin", payload) if large else ("/", b"ok")
            label = f"http-{bench}"
            contenders = start_contenders(
                reg, opts, tools, backend_port, taken, tmp, label, suite="http"
            )
            try:
                check_and_warm_up(contenders, path, expected, opts, tools, label)

                def run(c: Contender, path: str = path, large: bool = large) -> Sample:
                    text = run_tool(
                        wrk_argv(opts, tools, f"http://127.0.0.1:{c.port}{path}"),
                        timeout=opts.rps_duration + 30,
                        pin_cpu=opts.load_cpu,
                        pin=opts.pin,
                    )
                    r = parse_wrk(text)
                    if r.mib_s is None:
                        raise BenchError("wrk: no Transfer/sec in its output")
                    return Sample(
                        r.mib_s if large else r.rps,
                        p50_ms=r.p50_ms,
                        p99_ms=r.p99_ms,
                        note=r.errors,
                        rps=r.rps,
                        mib_s=r.mib_s,
                    )

                interleave(contenders, run, label, opts, reg)
            finally:
                stop_contenders(reg, contenders)
            url = f"http://127.0.0.1:PORT{path}"
            if large:
                title = f"HTTP 1 MiB responses ({wrk_flags(opts)}, nginx static file)"
                results.append(
                    BenchResult(
                        key=label,
                        title=title,
                        unit="MiB/s",
                        target_ratio=0.5,
                        target_text=f"1 MiB throughput (MiB/s) ≥ 0.5 {TIMES} nginx",
                        load_command=wrk_command(opts, url),
                        backend_command=NGINX_BACKEND_COMMAND.format(cpu=opts.load_cpu),
                        contenders=contenders,
                        backend_config=backend_config,
                        latency=True,
                        reference="nginx",
                        ratio_pairs=HTTP_RATIO_PAIRS,
                        secondary="rps",
                    )
                )
            else:
                title = f'HTTP small responses ({wrk_flags(opts)}, nginx `return 200 "ok"`)'
                results.append(
                    BenchResult(
                        key=label,
                        title=title,
                        unit="req/s",
                        target_ratio=0.30,
                        target_text=f"small-response RPS ≥ 0.30 {TIMES} nginx",
                        load_command=wrk_command(opts, url),
                        backend_command=NGINX_BACKEND_COMMAND.format(cpu=opts.load_cpu),
                        contenders=contenders,
                        backend_config=backend_config,
                        latency=True,
                        reference="nginx",
                        ratio_pairs=HTTP_RATIO_PAIRS,
                        secondary="mib_s",
                        p99_target_ms=5.0,
                    )
                )
    finally:
        reg.stop(nginx)
    return results


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
    versions = ", ".join(
        f"{tool_version(tools[t], t)}" for t in ("haproxy", "nginx", "iperf3", "wrk") if t in tools
    )
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
        out.append(target_line(res, ratios))
        out.append("")
        for note in bottleneck_notes(res):
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


def render_http_section(
    opts: Options,
    results: list[BenchResult],
    tools: dict[str, str],
    started: str,
    took: float,
    busy_before: float,
) -> str:
    out = section_preamble(
        opts,
        tools,
        "http",
        "HTTP (reverse proxy)",
        started,
        took,
        busy_before,
        "Every contender keeps its upstream connections alive (nginx: `keepalive 32`, "
        "HAProxy: `http-reuse always`); *direct* is wrk against the backend itself. "
        "*trioxy* is `scripts/reverse_proxy.py`. Ratios and targets are against nginx; "
        "MiB/s is wrk's Transfer/sec (its MB are MiB).",
    )
    out += results_lines(results)
    out += commands_lines(results)
    first = results[0] if results else None
    configs = {c.name: c.config_text for r in results for c in r.contenders if c.config_text}
    out += config_block(
        "nginx proxy config (`proxy_pass` to a keep-alive `upstream`, one worker):",
        configs.get("nginx", ""),
    )
    out += config_block(
        "HAProxy config (`mode http`, `http-reuse always`, `nbthread 1`):",
        configs.get("haproxy", ""),
    )
    out += config_block(
        "nginx backend config (`/` for the small responses, `/1m.bin` for the 1 MiB file):",
        first.backend_config if first else "",
    )
    return "\n".join(out).rstrip() + "\n"


def render_l4_section(
    opts: Options,
    results: list[BenchResult],
    tools: dict[str, str],
    started: str,
    took: float,
    busy_before: float,
) -> str:
    out = section_preamble(
        opts,
        tools,
        "l4",
        "L4 (TCP relay)",
        started,
        took,
        busy_before,
        "*trioxy, event path* is the same proxy "
        "with a pass-through `handle_data` filter before `connect` "
        "(`bench/conf/tcp_proxy_events.py`): the bytes travel as events through the engine "
        "instead of being spliced, which measures the engine's per-event cost.",
    )
    out += results_lines(results)
    out += commands_lines(results)
    hap_cfg = next(
        (c.config_text for r in results for c in r.contenders if c.name == "haproxy"), ""
    )
    out += config_block(
        "HAProxy config (`mode tcp`, defaults otherwise: no `option splice-*`, "
        "default buffer sizes; `nbthread 1` because it is pinned to one core):",
        hap_cfg,
    )
    out += config_block(
        "nginx backend config (keep-alive connections are reused for the whole run, "
        "so the RPS figure measures relaying requests, not accepting connections):",
        next((r.backend_config for r in results if r.backend_config), ""),
    )
    return "\n".join(out).rstrip() + "\n"


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
        print("  " + target_line(res, ratios))
        for note in bottleneck_notes(res):
            print("  note: " + note)


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
            "Benchmark trioxy against HAProxy, nginx and a direct connection with real load "
            "generators (iperf3, wrk, nginx), interleaved in one run, and write the "
            "results with ratios and targets to BENCHMARKS.md (only the sections of the "
            "suites run are replaced)."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--suite",
        action="append",
        choices=(*SUITES, "all"),
        help="suite to run; repeatable; default: all. l4 = TCP relay "
        "(iperf3 bulk throughput + wrk small-request RPS); http = reverse proxy "
        "(wrk, small and 1 MiB responses, against nginx and HAProxy)",
    )
    p.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}; each suite runs those it "
        "has (l4: "
        + ",".join(SUITE_CONTENDERS["l4"])
        + "; http: "
        + ",".join(SUITE_CONTENDERS["http"])
        + ")",
    )
    p.add_argument(
        "--reps",
        type=int,
        help="runs per contender, the median is reported (default: 3; --quick: 1)",
    )
    p.add_argument(
        "--duration",
        type=float,
        help="seconds per run, for iperf3 and for wrk (default: 10; --quick: 3)",
    )
    p.add_argument(
        "--bulk-duration", type=float, help="seconds per iperf3 run (overrides --duration)"
    )
    p.add_argument("--rps-duration", type=float, help="seconds per wrk run (overrides --duration)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="development mode: 3 s runs and 1 repetition unless --duration/--reps are given",
    )
    p.add_argument(
        "--only",
        choices=(*L4_BENCHES, *HTTP_BENCHES),
        action="append",
        help="run only this benchmark (repeatable): l4's bulk or rps, http's small or "
        "large; for development: implies --no-write, since a section would be incomplete",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    p.add_argument("--wrk-connections", type=int, default=50, help="wrk -c")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of wrk warm-up per contender (0: none)"
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
        "util-linux); fail instead",
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
        "--trioxy-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment variable for trioxy; repeatable",
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
        f"{NOISY_PCT:g} %% of a CPU during it (the last attempt is kept)",
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
    if bulk < 1 or rps < 1:
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
        only=list(a.only or (*L4_BENCHES, *HTTP_BENCHES)),
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

    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="trioxy-bench-"))
    reg = ProcessRegistry(tmp, opts.pin)
    taken: set[int] = set()
    all_results: dict[str, list[BenchResult]] = {}
    busy_before: dict[str, float] = {}
    try:
        with terminate_on_sigterm():
            for suite in opts.suites:
                benches = [b for b in SUITE_BENCHES[suite] if b in opts.only]
                if not benches or not suite_contenders(opts, suite):
                    log(f"suite {suite}: nothing to run (see --only, --contenders)")
                    continue
                busy = wait_idle(opts.wait_idle)
                busy_before[suite] = busy
                if busy > BUSY_WARN_PCT:
                    log(f"warning: machine not idle ({busy:.0f} % of CPUs busy); figures may skew")
                if suite == "l4":
                    log(
                        f"suite l4: contenders {','.join(suite_contenders(opts, suite))}, "
                        f"{opts.reps} reps, "
                        f"bulk {opts.bulk_duration:g}s, rps {opts.rps_duration:g}s"
                    )
                    res = []
                    if "bulk" in opts.only:
                        res.append(bench_l4_bulk(reg, opts, tools, tmp, taken))
                    if "rps" in opts.only:
                        res.append(bench_l4_rps(reg, opts, tools, tmp, taken))
                    all_results[suite] = res
                elif suite == "http":
                    log(
                        f"suite http: contenders {','.join(suite_contenders(opts, suite))}, "
                        f"{opts.reps} reps, {', '.join(benches)}, {opts.rps_duration:g}s each"
                    )
                    all_results[suite] = bench_http(reg, opts, tools, tmp, taken)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        reg.stop_all()
        if opts.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - t0

    for _suite, res in all_results.items():
        print_summary(res)
    if opts.output is not None:
        renderers = {"l4": render_l4_section, "http": render_http_section}
        for suite, res in all_results.items():
            write_section(
                opts.output,
                suite,
                renderers[suite](opts, res, tools, started, took, busy_before[suite]),
            )
        log(f"wrote {opts.output}")
    if opts.json_out is not None:
        payload = {s: results_json(r) for s, r in all_results.items()}
        opts.json_out.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {opts.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
