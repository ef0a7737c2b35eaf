"""The ``tls`` suite: TLS termination in front of a plain-HTTP backend --
trioxy's ``scripts/tls_offload.py`` against nginx (``listen ... ssl``,
``proxy_pass`` to a keep-alive upstream) and HAProxy (``bind ... ssl crt``,
``mode http``), all three doing the same job: TLS 1.3 with one ECDSA P-256
certificate made by ``openssl`` at run time, ``X-Forwarded-For`` and
``X-Forwarded-Proto`` added, pooled keep-alive connections to an nginx backend
answering ``ok``. wrk measures requests/s over HTTPS:

* ``keepalive`` -- 50 keep-alive connections: the cost of the record layer and
  the proxying, one handshake per connection;
* ``handshake`` -- ``Connection: close`` on every request, so each request is a
  new TCP connection and a **full** TLS handshake: wrk would resume its sessions
  (its connections keep them across reconnects), so all three contenders issue
  no session tickets and keep no session cache; the check before measuring
  proves that a client offering its previous session gets a full handshake.

No target: ratios against nginx and HAProxy.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    NGINX_BACKEND_COMMAND,
    BenchError,
    BenchResult,
    Contender,
    Options,
    ProcessRegistry,
    Sample,
    interleave,
    log,
    parse_wrk,
    proxy_configs,
    render,
    run_tool,
    section_renderer,
    start_backend_nginx,
    start_each,
    start_trioxy,
    stop_contenders,
    suite_contenders,
    wait_listening,
    wrk_flags,
)

#: The benchmarks, in order (``--only keepalive`` / ``--only handshake``).
BENCHES = ("keepalive", "handshake")
#: The request header that makes every request a new connection.
CLOSE_HEADER = "Connection: close"
#: Per-run overhead on top of wrk's duration: starting wrk, reading /proc.
RUN_OVERHEAD_S = 1.0
#: Per-benchmark overhead: starting and checking the contenders.
SETUP_S = 5.0
#: Making the certificate, once per suite.
CERT_S = 1.0
#: Ratios reported.
TLS_RATIO_PAIRS = (
    ("trioxy", "nginx"),
    ("trioxy", "haproxy"),
    ("haproxy", "nginx"),
)
#: The subject and names of the certificate every contender presents.
CERT_SUBJECT = "/CN=localhost"
CERT_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1"


def estimate_seconds(opts: Options, contenders: int) -> float:
    """How long the suite takes with ``contenders`` contenders, without retries."""
    benches = len([b for b in BENCHES if b in opts.only])
    if not benches:
        return 0.0
    per_run = opts.rps_duration + RUN_OVERHEAD_S
    setup = SETUP_S + contenders * (opts.warmup + 1.0)
    return benches * (contenders * opts.reps * per_run + setup) + CERT_S


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Certificate:
    """The suite's certificate: ``cert`` and ``key`` PEM files, and ``pem`` both
    in one file (HAProxy's ``crt``). Self-signed, so ``cert`` is also the CA a
    client verifies it with."""

    cert: Path
    key: Path
    pem: Path


def openssl_req_argv(openssl: str, cert: Path, key: Path) -> list[str]:
    """``openssl req`` making a self-signed ECDSA P-256 certificate for
    ``localhost`` and ``127.0.0.1``, valid two days."""
    return [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", CERT_SUBJECT, "-addext", CERT_NAMES,
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip


def make_certificate(openssl: str, directory: Path) -> Certificate:
    """Make the suite's certificate in ``directory`` with the ``openssl`` command."""
    cert, key, pem = directory / "tls-cert.pem", directory / "tls-key.pem", directory / "tls.pem"
    try:
        done = subprocess.run(
            openssl_req_argv(openssl, cert, key), capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"openssl req: {exc}") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise BenchError(f"openssl req failed: {' '.join(tail)}")
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return Certificate(cert, key, pem)


# ------------------------------------------------------------------- contenders


def trioxy_env(listen: str, upstream: str, cert: Certificate) -> dict[str, str]:
    """``scripts/tls_offload.py``'s settings for the suite: the same TLS as the
    others (TLS 1.3 only, no session tickets)."""
    return {
        "LISTEN": listen,
        "UPSTREAMS": upstream,
        "CERT": str(cert.cert),
        "KEY": str(cert.key),
        "MIN_TLS": "1.3",
        "SESSION_TICKETS": "off",
    }


def nginx_config(
    directory: str, listen: str, upstream: str, cert: str, key: str, user_line: str = ""
) -> str:
    return render(
        "nginx-tls.conf",
        dir=directory,
        listen=listen,
        upstream=upstream,
        cert=cert,
        key=key,
        user_line=user_line,
    )


def haproxy_config(listen: str, upstream: str, pem: str) -> str:
    return render("haproxy-tls.cfg", listen=listen, upstream=upstream, pem=pem)


def start_contenders(
    reg: ProcessRegistry,
    opts: Options,
    tools: dict[str, str],
    upstream_port: int,
    taken: set[int],
    tmp: Path,
    cert: Certificate,
    label: str,
) -> list[Contender]:
    """Start each contender on the proxy CPU, listening for HTTPS."""
    upstream = f"127.0.0.1:{upstream_port}"
    shown_upstream = "127.0.0.1:UPSTREAM_PORT"

    def start(c: Contender) -> None:
        name, port = c.name, c.port
        listen = f"127.0.0.1:{port}"
        pin = f"taskset -c {opts.proxy_cpu} " if opts.pin else ""
        if name == "nginx":
            ndir = tmp / f"nginx-tls-{label}"
            ndir.mkdir(exist_ok=True)
            conf = ndir / "nginx.conf"
            # (as the other suites' nginx: its workers keep root's access to DIR)
            user_line = "user root;" if os.geteuid() == 0 else ""
            conf.write_text(
                nginx_config(str(ndir), listen, upstream, str(cert.cert), str(cert.key), user_line)
            )
            c.config_text = nginx_config(
                "DIR", "127.0.0.1:PORT", shown_upstream, "DIR/tls-cert.pem", "DIR/tls-key.pem"
            )
            argv = [tools["nginx"], "-e", str(ndir / "error.log"), "-p", str(ndir)]
            argv += ["-c", str(conf)]
            c.command = f"{pin}nginx -e DIR/error.log -p DIR -c DIR/nginx.conf"
            c.proc = reg.start(f"nginx-tls-{label}", argv, opts.proxy_cpu)
            wait_listening(c.proc, port, 10)
        elif name == "haproxy":
            cfg = tmp / f"haproxy-tls-{label}.cfg"
            cfg.write_text(haproxy_config(listen, upstream, str(cert.pem)))
            c.config_text = haproxy_config("127.0.0.1:PORT", shown_upstream, "DIR/tls.pem")
            argv = [tools["haproxy"], "-f", str(cfg), "-db"]
            c.command = f"{pin}haproxy -f haproxy.cfg -db"
            c.proc = reg.start(f"haproxy-tls-{label}", argv, opts.proxy_cpu)
            wait_listening(c.proc, port, 10)
        elif name == "trioxy":
            env = trioxy_env(listen, upstream, cert)
            shown = {"CERT": "DIR/tls-cert.pem", "KEY": "DIR/tls-key.pem"}
            c.proc, c.command = start_trioxy(
                reg, opts, f"trioxy-tls-{label}", opts.tls_cmd, env, port, shown=shown
            )
        else:
            raise BenchError(f"unknown contender {name}")

    return start_each(reg, opts, "tls", taken, label, start)


# ----------------------------------------------------------------------- checks


@dataclass
class HttpsAnswer:
    """What one HTTPS request on a new connection established."""

    status: int
    body: bytes
    version: str | None
    cipher: str | None
    resumed: bool
    session: ssl.SSLSession | None


def client_context(ca: Path) -> ssl.SSLContext:
    """A client context verifying the suite's certificate (a session can only be
    offered again through the context that made it)."""
    return ssl.create_default_context(cafile=str(ca))


def https_get(
    port: int,
    context: ssl.SSLContext,
    session: ssl.SSLSession | None = None,
    timeout: float = 10.0,
) -> HttpsAnswer:
    """``GET /`` with ``Connection: close`` on a new TLS connection to
    127.0.0.1:``port`` through ``context``, offering ``session`` for
    resumption; the answer is read to the end (which brings TLS 1.3's session
    tickets, if the server sends any)."""
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    chunks = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                # Read while connected: after the server's close they say nothing.
                cipher = tls.cipher()
                version, resumed = tls.version(), tls.session_reused
                tls.sendall(request)
                while True:
                    try:
                        chunk = tls.recv(65536)
                    except ssl.SSLZeroReturnError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                    # TLS 1.3 tickets come after the handshake: the session
                    # is complete once data has followed them.
                    session = tls.session or session
    except (OSError, ssl.SSLError) as exc:
        raise BenchError(f"HTTPS GET /: {exc}") from None
    answer = HttpsAnswer(
        status=0,
        body=b"",
        version=version,
        cipher=cipher[0] if cipher else None,
        resumed=resumed,
        session=session,
    )
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        raise BenchError(f"HTTPS GET /: not an HTTP response: {head[:60]!r}")
    answer.status, answer.body = int(m.group(1)), body
    return answer


def check_contender(port: int, ca: Path) -> str:
    """Check that a contender does the suite's job: ``200 ok`` over TLS 1.3, and a
    full handshake for a client that offers its previous session (no resumption).
    Returns the cipher suite; :class:`BenchError` says what is wrong."""
    context = client_context(ca)
    first = https_get(port, context)
    if (first.status, first.body) != (200, b"ok"):
        raise BenchError(f"GET / answered {first.status} {first.body[:40]!r}, not 200 'ok'")
    if first.version != "TLSv1.3":
        raise BenchError(f"negotiated {first.version}, not TLSv1.3")
    second = https_get(port, context, session=first.session)
    if second.resumed:
        raise BenchError("a returning client resumed its TLS session (expected full handshakes)")
    return first.cipher or "?"


def check_and_warm_up(
    contenders: list[Contender], opts: Options, tools: dict[str, str], ca: Path, label: str
) -> None:
    """:func:`check_contender` each contender, then warm it up with a short wrk run."""
    for c in contenders:
        if c.error or c.skipped:
            continue
        try:
            cipher = check_contender(c.port, ca)
            log(f"{label}: {c.name}: TLSv1.3 {cipher}, full handshakes")
            if opts.warmup > 0:
                run_tool(
                    [tools["wrk"], "-t1", "-c10", f"-d{opts.warmup:g}s", url(c.port)],
                    timeout=opts.warmup + 20,
                    pin_cpu=opts.load_cpu,
                    pin=opts.pin,
                )
        except BenchError as exc:
            c.error = f"check failed: {exc}"
            dead = c.dead()
            if dead is not None:
                c.error += f"; {dead.why_dead()}"
            log(f"{label}: {c.name}: {c.error}")


# ------------------------------------------------------------------------- runs


def url(port: int | str) -> str:
    return f"https://127.0.0.1:{port}/"


def wrk_tls_argv(opts: Options, wrk: str, target: str, close: bool) -> list[str]:
    """wrk's command line; ``close``: every request on a new connection."""
    argv = [wrk, f"-t{opts.wrk_threads}", f"-c{opts.wrk_connections}"]
    argv += [f"-d{opts.rps_duration:g}s", "--latency"]
    if close:
        argv += ["-H", CLOSE_HEADER]
    return [*argv, target]


def wrk_tls_command(opts: Options, close: bool) -> str:
    """The load command as shown in the report."""
    argv = wrk_tls_argv(opts, "wrk", url("PORT"), close)
    if close:
        argv[argv.index(CLOSE_HEADER)] = f"'{CLOSE_HEADER}'"
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    return pin + " ".join(argv)


def run_suite(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """Run the suite's benchmarks chosen with ``--only``."""
    chosen = [b for b in BENCHES if b in opts.only]
    log(
        f"suite tls: contenders {','.join(suite_contenders(opts, 'tls'))}, {opts.reps} reps, "
        f"{', '.join(chosen)}, {opts.rps_duration:g}s each"
    )
    cert = make_certificate(tools["openssl"], tmp)
    www = tmp / "www-tls"
    www.mkdir(exist_ok=True)
    nginx, backend_port, backend_config = start_backend_nginx(
        reg, opts, tools, tmp, taken, "nginx-http-backend.conf", "nginx-tls-backend", www=str(www)
    )
    backend_config = backend_config.replace(str(www), "DIR/www")
    results: list[BenchResult] = []
    try:
        for which in chosen:
            close = which == "handshake"
            label = f"tls-{which}"
            contenders = start_contenders(reg, opts, tools, backend_port, taken, tmp, cert, label)
            try:
                check_and_warm_up(contenders, opts, tools, cert.cert, label)

                def run(c: Contender, close: bool = close) -> Sample:
                    text = run_tool(
                        wrk_tls_argv(opts, tools["wrk"], url(c.port), close),
                        timeout=opts.rps_duration + 30,
                        pin_cpu=opts.load_cpu,
                        pin=opts.pin,
                    )
                    r = parse_wrk(text)
                    return Sample(r.rps, p50_ms=r.p50_ms, p99_ms=r.p99_ms, note=r.errors)

                interleave(contenders, run, label, opts, reg)
            finally:
                stop_contenders(reg, contenders)
            results.append(result(opts, which, contenders, backend_config))
    finally:
        reg.stop(nginx)
    return results


def result(
    opts: Options, which: str, contenders: list[Contender], backend_config: str
) -> BenchResult:
    close = which == "handshake"
    if close:
        title = (
            f"TLS handshakes: a new connection per request ({wrk_flags(opts)}, "
            f"`{CLOSE_HEADER}`, full TLS 1.3 handshakes, ECDSA P-256)"
        )
        notes = [
            "Every request opens a TCP connection and makes a full TLS 1.3 handshake "
            "(no contender issues session tickets or caches sessions; checked before "
            "measuring). wrk's latencies run from writing the request to the end of the "
            "response: they leave out the connect and the handshake. wrk's side of a "
            "handshake (verifying the ECDSA signature costs more than making it) shares "
            "the load CPU with the backend: see *proxy CPU* for which proxies it held back."
        ]
    else:
        title = f"TLS keep-alive requests ({wrk_flags(opts)}, TLS 1.3, ECDSA P-256)"
        notes = []
    pin = f"taskset -c {opts.load_cpu} " if opts.pin else ""
    return BenchResult(
        key=f"tls-{which}",
        title=title,
        unit="req/s",
        target_ratio=None,
        target_text="",
        load_command=wrk_tls_command(opts, close),
        backend_command=NGINX_BACKEND_COMMAND.format(cpu=opts.load_cpu).replace(
            f"taskset -c {opts.load_cpu} ", pin
        ),
        contenders=contenders,
        backend_config=backend_config,
        latency=True,
        reference="nginx",
        ratio_pairs=TLS_RATIO_PAIRS,
        notes=notes,
    )


render_section = section_renderer(
    "tls",
    "TLS termination (HTTPS in front of plain HTTP)",
    "Each contender terminates TLS 1.3 with the same self-signed ECDSA P-256 "
    "certificate (made with `openssl req` at run time), adds `X-Forwarded-For` and "
    "`X-Forwarded-Proto`, and forwards to the nginx backend over keep-alive "
    "connections. *trioxy* is `scripts/tls_offload.py` (`MIN_TLS=1.3 "
    "SESSION_TICKETS=off`); none of the three resumes TLS sessions. No target: "
    "ratios only.",
    proxy_configs(
        "nginx config (`listen ... ssl`, `proxy_pass` to a keep-alive `upstream`, one worker):",
        "HAProxy config (`bind ... ssl crt`, `mode http`, `http-reuse always`, `nbthread 1`):",
        "nginx backend config (`/` answers `ok`):",
    ),
)
