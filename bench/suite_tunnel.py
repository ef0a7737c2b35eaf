"""The ``tunnel`` suite: what trioxy's TLS tunnel costs against the direct path.

The tunnel is ``scripts/tunnel_client.py`` (the load connects to its ``FORWARD``
listener) carrying each connection as one smux stream over mutually
authenticated TLS links to ``scripts/tunnel_server.py``, which connects to the
backend (its ``ALLOW`` names only that backend). The certificates (a CA, the
server end's, the client end's; ECDSA P-256) are made with ``openssl`` at run
time. Everything is on 127.0.0.1; *direct* is the load talking to the backend
itself.

* ``bulk1`` -- iperf3, one stream, Gbit/s (a fresh one-shot iperf3 server per run);
* ``bulk4`` -- iperf3 ``-P 4``: four streams at once, on the client end's links;
* ``conns`` -- many small streams: wrk with ``Connection: close`` against nginx
  answering ``ok``, so every request is a new connection, i.e. a new stream
  (its SOCKS5 exchange with the server end, the server end's connection to
  nginx): connections/s.

Pinning: both tunnel ends run on the proxy CPU, the load generator and the
backend on the load CPU (as the mqtt suite's two gateways). A machine with two
cores has no third one to give the second end, and putting it with the load
would make it compete with iperf3 for the core that decides *direct*'s figure.
So the figure is what **one core** of tunnel carries, both ends' work per byte
added up; the CPU of each end is reported (a deployment gives each end its own
machine, where the busier end is the limit). No target: ratios to *direct*.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CLK_TCK,
    NGINX_BACKEND_COMMAND,
    SATURATED_PCT,
    BenchError,
    BenchResult,
    Contender,
    Options,
    ProcessRegistry,
    Sample,
    check_and_warm_up,
    first_backend_config,
    fmt_num,
    free_port,
    interleave,
    iperf3_server,
    log,
    median,
    parse_wrk,
    run_tool,
    section_renderer,
    start_backend_nginx,
    start_each,
    start_trioxy,
    stop_contenders,
    suite_contenders,
    tree_cpu_ticks,
)
from bench.suite_l4 import parse_iperf3

#: The benchmarks, in order (``--only bulk1`` / ``bulk4`` / ``conns``).
BENCHES = ("bulk1", "bulk4", "conns")
#: iperf3's parallel streams in ``bulk4``.
PARALLEL = 4
#: The request header that makes every request a new connection (a new stream).
CLOSE_HEADER = "Connection: close"
#: Per-run overhead on top of the load's duration: iperf3 server start, wrk start.
RUN_OVERHEAD_S = 1.5
#: Per-benchmark overhead: starting both tunnel ends.
SETUP_S = 4.0
#: Making the three certificates, once per suite.
CERT_S = 1.0
#: Ratios reported.
TUNNEL_RATIO_PAIRS = (("trioxy", "direct"),)
#: The names of the tunnel's two processes in the per-end CPU figures.
CLIENT_END, SERVER_END = "tunnel_client", "tunnel_server"
#: The name the server end's certificate is valid for (the client end checks it).
SERVER_NAME = "127.0.0.1"


def estimate_seconds(opts: Options, contenders: int) -> float:
    """How long the suite takes with ``contenders`` contenders, without retries."""
    total = 0.0
    if "bulk1" in opts.only:
        total += contenders * opts.reps * (opts.bulk_duration + RUN_OVERHEAD_S) + SETUP_S
    if "bulk4" in opts.only:
        total += contenders * opts.reps * (opts.tunnel_duration + RUN_OVERHEAD_S) + SETUP_S
    if "conns" in opts.only:
        total += contenders * opts.reps * (opts.tunnel_duration + RUN_OVERHEAD_S) + SETUP_S
        total += contenders * (opts.warmup + 1.0)
    return total + CERT_S if total else 0.0


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class TunnelCertificates:
    """PEM files: the CA both ends trust, the server end's certificate (valid
    for ``SERVER_NAME``) and the client end's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl_argvs(openssl: str, d: Path) -> list[list[str]]:
    """The ``openssl`` commands making the CA and the two certificates it issues
    in ``d`` (all ECDSA P-256, valid two days), in order; the extension files
    they read are written by :func:`make_certificates`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    argvs = [
        [
            openssl, "req", "-x509", *ec, "-days", "2", "-subj", "/CN=trioxy bench tunnel CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
        ]
    ]  # fmt: skip
    for serial, (name, subject) in enumerate(
        (("server", f"/CN={SERVER_NAME}"), ("client", "/O=trioxy bench/CN=tunnel client")), 1
    ):
        argvs.append(
            [
                openssl, "req", *ec, "-subj", subject,
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
            ]
        )  # fmt: skip
        argvs.append(
            [
                openssl, "x509", "-req", "-in", str(d / f"{name}.csr"),
                "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-set_serial", str(serial), "-days", "2",
                "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"),
            ]
        )  # fmt: skip
    return argvs


#: The extensions of each end's certificate (``-extfile``).
EXTENSIONS = {
    "server": f"subjectAltName=IP:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n",
    "client": "extendedKeyUsage=clientAuth\n",
}
COMMON_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    "authorityKeyIdentifier=keyid:always\n"
)


def make_certificates(openssl: str, directory: Path) -> TunnelCertificates:
    """Make the suite's CA and certificates in ``directory`` with ``openssl``."""
    d = directory / "tunnel-certs"
    d.mkdir(exist_ok=True)
    for name, ext in EXTENSIONS.items():
        (d / f"{name}.ext").write_text(ext + COMMON_EXTENSIONS)
    for argv in openssl_argvs(openssl, d):
        try:
            done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"openssl {argv[1]}: {exc}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise BenchError(f"openssl {argv[1]} failed: {' '.join(tail)}")
    return TunnelCertificates(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


# ------------------------------------------------------------------- contenders


def server_env(listen: str, target: str, certs: TunnelCertificates) -> dict[str, str]:
    """``scripts/tunnel_server.py``'s settings: links on ``listen``, client ends
    with a certificate from the suite's CA, streams only to ``target``."""
    return {
        "LISTEN": listen,
        "CERT": str(certs.server_cert),
        "KEY": str(certs.server_key),
        "CA": str(certs.ca),
        "ALLOW": target,
    }


def client_env(
    listen: str, server: str, target: str, certs: TunnelCertificates, links: int | None
) -> dict[str, str]:
    """``scripts/tunnel_client.py``'s settings: one ``FORWARD`` from ``listen`` to
    ``target`` (as the server end sees it) through the server end at ``server``;
    ``links``: its ``LINKS`` (``None``: the script's default)."""
    env = {
        "SERVER": server,
        "SERVER_NAME": SERVER_NAME,
        "CERT": str(certs.client_cert),
        "KEY": str(certs.client_key),
        "CA": str(certs.ca),
        "FORWARD": f"{listen}={target}",
    }
    if links is not None:
        env["LINKS"] = str(links)
    return env


def start_contenders(
    reg: ProcessRegistry,
    opts: Options,
    backend_port: int,
    taken: set[int],
    certs: TunnelCertificates,
    label: str,
) -> list[Contender]:
    """*direct* is the backend itself; *trioxy* is the client end (the process
    the load connects to) with the server end as its helper, both on the proxy
    CPU. Their CPU is added up in *proxy CPU*, and kept apart per end in each
    sample's ``part_cpu_pct``."""
    backend = f"127.0.0.1:{backend_port}"

    def start(c: Contender) -> None:
        client_port, server_port = c.port, free_port(taken)
        certs_shown = {
            "CERT": "DIR/server.pem",
            "KEY": "DIR/server.key",
            "CA": "DIR/ca.pem",
        }
        server, server_cmd = start_trioxy(
            reg,
            opts,
            f"tunnel-server-{label}",
            opts.tunnel_server_cmd,
            server_env(f"127.0.0.1:{server_port}", backend, certs),
            server_port,
            shown={
                "LISTEN": "127.0.0.1:SERVER_PORT",
                "ALLOW": "127.0.0.1:BACKEND_PORT",
                **certs_shown,
            },
        )
        c.helpers.append(server)
        env = client_env(
            f"127.0.0.1:{client_port}",
            f"127.0.0.1:{server_port}",
            backend,
            certs,
            opts.tunnel_links,
        )
        c.proc, client_cmd = start_trioxy(
            reg,
            opts,
            f"tunnel-client-{label}",
            opts.tunnel_client_cmd,
            env,
            client_port,
            shown={
                "SERVER": "127.0.0.1:SERVER_PORT",
                "FORWARD": "127.0.0.1:PORT=127.0.0.1:BACKEND_PORT",
                **certs_shown,
                "CERT": "DIR/client.pem",
                "KEY": "DIR/client.key",
            },
        )
        c.command = f"{server_cmd}\n{client_cmd}"

    return start_each(reg, opts, "tunnel", taken, label, start, direct_port=backend_port)


def part_ticks(c: Contender) -> dict[str, int]:
    """CPU ticks so far of each tunnel end of ``c`` (none for *direct*)."""
    names = (CLIENT_END, SERVER_END)
    return {n: tree_cpu_ticks(p.pid) for n, p in zip(names, c.procs, strict=False)}


def part_cpu(before: dict[str, int], after: dict[str, int], wall: float) -> dict[str, float]:
    """Each end's CPU use over ``wall`` seconds, % of one core."""
    if wall <= 0:
        return {}
    return {n: 100.0 * (after[n] - before.get(n, 0)) / CLK_TCK / wall for n in after}


# ------------------------------------------------------------------------- runs


def iperf3_argv(opts: Options, iperf3: str, port: int | str, streams: int) -> list[str]:
    """The iperf3 client: ``streams`` parallel streams to 127.0.0.1:``port``."""
    duration = opts.bulk_duration if streams == 1 else opts.tunnel_duration
    argv = [iperf3, "-c", "127.0.0.1", "-p", str(port), "-t", f"{duration:g}"]
    if streams > 1:
        argv += ["-P", str(streams)]
    return [*argv, "-J"]


def wrk_close_argv(opts: Options, wrk: str, target: str) -> list[str]:
    """wrk with a new connection per request, for ``tunnel_duration`` seconds."""
    return [
        wrk, f"-t{opts.wrk_threads}", f"-c{opts.wrk_connections}",
        f"-d{opts.tunnel_duration:g}s", "--latency", "-H", CLOSE_HEADER, target,
    ]  # fmt: skip


def shown(opts: Options, argv: list[str]) -> str:
    """A load command as shown in the report (pinned to the load CPU)."""
    words = [f"'{w}'" if " " in w else w for w in argv]
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    return pin + " ".join(words)


def timed(c: Contender, load: list[str], opts: Options, timeout: float) -> tuple[str, Sample]:
    """Run ``load`` on the load CPU; return its output and a sample (value 0,
    to be set) with each tunnel end's CPU use during it."""
    before = part_ticks(c)
    t0 = time.monotonic()
    text = run_tool(load, timeout=timeout, pin_cpu=opts.load_cpu, pin=opts.pin)
    wall = time.monotonic() - t0
    return text, Sample(0.0, part_cpu_pct=part_cpu(before, part_ticks(c), wall))


def bench_bulk(
    reg: ProcessRegistry,
    opts: Options,
    tools: dict[str, str],
    taken: set[int],
    certs: TunnelCertificates,
    streams: int,
) -> BenchResult:
    which = "bulk1" if streams == 1 else "bulk4"
    label = f"tunnel-{which}"
    backend_port = free_port(taken)
    contenders = start_contenders(reg, opts, backend_port, taken, certs, label)
    duration = opts.bulk_duration if streams == 1 else opts.tunnel_duration

    def run(c: Contender) -> Sample:
        with iperf3_server(reg, opts, tools, backend_port):
            text, sample = timed(
                c, iperf3_argv(opts, tools["iperf3"], c.port, streams), opts, duration + 30
            )
        sample.value = parse_iperf3(text)
        return sample

    try:
        interleave(contenders, run, label, opts, reg)
    finally:
        stop_contenders(reg, contenders)
    return bulk_result(opts, streams, contenders)


def bulk_result(opts: Options, streams: int, contenders: list[Contender]) -> BenchResult:
    duration = opts.bulk_duration if streams == 1 else opts.tunnel_duration
    what = "1 stream" if streams == 1 else f"{streams} parallel streams, `-P {streams}`"
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    return BenchResult(
        key=f"tunnel-bulk{streams}",
        title=f"Tunnel bulk throughput (iperf3, {what}, {duration:g} s)",
        unit="Gbit/s",
        target_ratio=None,
        target_text="",
        load_command=shown(opts, iperf3_argv(opts, "iperf3", "PORT", streams)),
        backend_command=f"{pin}iperf3 -s -1 -B 127.0.0.1 -p BACKEND_PORT  # a fresh server per run",
        contenders=contenders,
        reference="direct",
        ratio_pairs=TUNNEL_RATIO_PAIRS,
        notes=end_notes(contenders, "Gbit/s"),
    )


def bench_conns(
    reg: ProcessRegistry,
    opts: Options,
    tools: dict[str, str],
    tmp: Path,
    taken: set[int],
    certs: TunnelCertificates,
) -> BenchResult:
    label = "tunnel-conns"
    nginx, backend_port, backend_config = start_backend_nginx(
        reg, opts, tools, tmp, taken, "nginx-tiny.conf", "nginx-tunnel"
    )
    try:
        contenders = start_contenders(reg, opts, backend_port, taken, certs, label)
        try:
            check_and_warm_up(contenders, "/", b"ok", opts, tools, label)

            def run(c: Contender) -> Sample:
                argv = wrk_close_argv(opts, tools["wrk"], f"http://127.0.0.1:{c.port}/")
                text, sample = timed(c, argv, opts, opts.tunnel_duration + 30)
                r = parse_wrk(text)
                sample.value, sample.p50_ms, sample.p99_ms = r.rps, r.p50_ms, r.p99_ms
                sample.note = r.errors
                return sample

            interleave(contenders, run, label, opts, reg)
        finally:
            stop_contenders(reg, contenders)
    finally:
        reg.stop(nginx)
    return conns_result(opts, contenders, backend_config)


def conns_result(opts: Options, contenders: list[Contender], backend_config: str) -> BenchResult:
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    return BenchResult(
        key="tunnel-conns",
        title=(
            f"Tunnel new streams: a new connection per request (wrk -t{opts.wrk_threads} "
            f"-c{opts.wrk_connections} -d{opts.tunnel_duration:g}s, `{CLOSE_HEADER}`, "
            'nginx `return 200 "ok"`)'
        ),
        unit="conn/s",
        target_ratio=None,
        target_text="",
        load_command=shown(opts, wrk_close_argv(opts, "wrk", "http://127.0.0.1:PORT/")),
        backend_command=NGINX_BACKEND_COMMAND.format(cpu=opts.load_cpu).replace(
            f"taskset -c {opts.load_cpu} ", pin
        ),
        contenders=contenders,
        backend_config=backend_config,
        latency=True,
        reference="direct",
        ratio_pairs=TUNNEL_RATIO_PAIRS,
        notes=[
            "Every request is a new TCP connection to the client end, so a new smux "
            "stream: its SOCKS5 request to the server end and the server end's "
            "connection to nginx (two round trips through the tunnel) come before the "
            "request's bytes. wrk's latencies run from writing the request to the end "
            "of the response, so they include opening the stream (which starts with the "
            "client's first bytes) but not the client's own connect.",
            *end_notes(contenders, "conn/s"),
        ],
    )


def end_notes(contenders: list[Contender], unit: str) -> list[str]:
    """The CPU of each tunnel end (medians over the runs) and, when their shared
    core was the limit, what a core per end would carry at most: the figure
    scaled by both ends' CPU over the busier end's (an upper bound: it assumes
    nothing else, such as the load generator, becomes the limit)."""
    notes = []
    for c in contenders:
        parts = [
            median([s.part_cpu_pct[n] for s in c.samples if n in s.part_cpu_pct])
            for n in (CLIENT_END, SERVER_END)
        ]
        client, server = parts
        if client is None or server is None:
            continue
        note = (
            f"CPU of each tunnel end (medians, % of one core; both on the proxy CPU): "
            f"`tunnel_client.py` {client:.0f} %, `tunnel_server.py` {server:.0f} %."
        )
        value = median([s.value for s in c.samples])
        busier = max(client, server)
        if value is not None and busier > 0 and client + server >= SATURATED_PCT:
            scaled = value * (client + server) / busier
            note += (
                f" Their shared core was the limit: with a core per end the busier one "
                f"would allow at most about {fmt_num(scaled, unit)} {unit}."
            )
        notes.append(note)
    return notes


def run_suite(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """Run the suite's benchmarks chosen with ``--only``."""
    chosen = [b for b in BENCHES if b in opts.only]
    log(
        f"suite tunnel: contenders {','.join(suite_contenders(opts, 'tunnel'))}, "
        f"{opts.reps} reps, {', '.join(chosen)}; bulk1 {opts.bulk_duration:g}s, "
        f"bulk4 and conns {opts.tunnel_duration:g}s"
    )
    certs = make_certificates(tools["openssl"], tmp)
    results: list[BenchResult] = []
    if "bulk1" in chosen:
        results.append(bench_bulk(reg, opts, tools, taken, certs, 1))
    if "bulk4" in chosen:
        results.append(bench_bulk(reg, opts, tools, taken, certs, PARALLEL))
    if "conns" in chosen:
        results.append(bench_conns(reg, opts, tools, tmp, taken, certs))
    return results


def _tunnel_note(opts: Options) -> str:
    links = opts.tunnel_links if opts.tunnel_links is not None else "2 (the script's default)"
    return (
        "*direct*: the load generator talks to the backend itself. *trioxy*: it talks "
        "to `scripts/tunnel_client.py`'s `FORWARD` listener, which carries each "
        "connection as one smux stream over mutually authenticated TLS links (TLS 1.3, "
        "ECDSA P-256 certificates from a CA made with `openssl` at run time; "
        f"`LINKS` = {links}) to `scripts/tunnel_server.py`, which connects to the "
        "backend (`ALLOW` names only it). **Pinning**: both tunnel ends run on the "
        "proxy CPU, the load generator and the backend on the load CPU. The machine "
        "has no third core for the second end, and putting it with the load would make "
        "it compete with iperf3 on the core that sets *direct*'s figure; so *trioxy* is "
        "what one core of tunnel carries, both ends' work added up (*proxy CPU* is their "
        "sum, and each end's share is given under each table: with a core per end, as "
        "in a deployment, the busier end is the limit). No target: ratios to *direct*."
    )


render_section = section_renderer(
    "tunnel",
    "TLS tunnel (tunnel_client.py → tunnel_server.py)",
    _tunnel_note,
    lambda results: [
        ("nginx backend config of the connections benchmark:", first_backend_config(results))
    ],
)
