"""The tls suite: its configs, commands, certificate, time estimate and report,
and its check (full TLS 1.3 handshakes, ``ok``) against real TLS servers. No
benchmark is run: tests do not measure time. The wrk output below was captured
from a real run over HTTPS."""

from __future__ import annotations

import shutil
import socket
import ssl
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from bench import common, run, suite_tls
from tests.bench.helpers import assert_replaces_only_its_section, needs_openssl, threaded_server

# wrk 4.1.0 -t1 -c50 -d1s --latency -H 'Connection: close' https://..., nginx 1.22.1.
WRK_HTTPS_CLOSE = """\
Running 1s test @ https://127.0.0.1:18443/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.47ms    4.58ms  43.59ms   91.89%
    Req/Sec     1.19k   185.53     1.31k    90.00%
  Latency Distribution
     50%    9.09ms
     75%    9.56ms
     90%   13.04ms
     99%   31.27ms
  1221 requests in 1.04s, 171.70KB read
Requests/sec:   1178.22
Transfer/sec:    165.69KB
"""


def test_parse_wrk_over_https_with_connection_close() -> None:
    r = common.parse_wrk(WRK_HTTPS_CLOSE)
    assert (r.rps, r.requests, r.errors) == (1178.22, 1221, "")
    assert (r.p50_ms, r.p99_ms) == pytest.approx((9.09, 31.27))


def test_the_suite_is_registered() -> None:
    assert run.SUITE_MODULES["tls"] is suite_tls
    assert common.SUITE_CONTENDERS["tls"] == ("nginx", "haproxy", "trioxy")
    assert common.SUITE_BENCHES["tls"] == suite_tls.BENCHES == ("keepalive", "handshake")
    assert "openssl" in common.SUITE_TOOLS["tls"] and "openssl" in common.TOOL_PACKAGES
    assert "tls" in run.parse_args([]).suites
    opts = run.parse_args(["--suite", "tls", "--trioxy-tls-cmd", "trioxy run x.py"])
    assert opts.suites == ["tls"] and opts.tls_cmd == "trioxy run x.py"
    assert run.parse_args([]).tls_cmd == ".venv/bin/trioxy run scripts/tls_offload.py"
    only = run.parse_args(["--only", "handshake"])
    assert only.only == ["handshake"] and only.output is None


def test_default_duration_stays_under_four_minutes() -> None:
    full = run.suite_estimate(run.parse_args(["--suite", "tls"]), "tls")
    assert 2 * 60 < full < 4 * 60
    half = run.suite_estimate(run.parse_args(["--suite", "tls", "--only", "keepalive"]), "tls")
    assert full / 2 - 10 < half < full / 2 + 10
    assert run.suite_estimate(run.parse_args(["--suite", "tls", "--only", "qps"]), "tls") == 0
    assert run.estimate_seconds(run.parse_args([])) < 25 * 60


def test_wrk_commands() -> None:
    opts = run.parse_args(["--suite", "tls"])
    keep = suite_tls.wrk_tls_argv(opts, "/usr/bin/wrk", "https://127.0.0.1:1/", close=False)
    assert keep == ["/usr/bin/wrk", "-t1", "-c50", "-d10s", "--latency", "https://127.0.0.1:1/"]
    close = suite_tls.wrk_tls_argv(opts, "wrk", "https://127.0.0.1:1/", close=True)
    assert close[-3:] == ["-H", "Connection: close", "https://127.0.0.1:1/"]
    shown = suite_tls.wrk_tls_command(opts, close=True)
    assert shown == (
        "taskset -c 1 wrk -t1 -c50 -d10s --latency -H 'Connection: close' https://127.0.0.1:PORT/"
    )
    unpinned = run.parse_args(["--suite", "tls", "--no-pin", "--quick"])
    assert suite_tls.wrk_tls_command(unpinned, close=False).startswith("wrk -t1 -c50 -d3s ")


def test_configs_do_the_same_job() -> None:
    """TLS 1.3 only, no session resumption, the certificate given, the forwarded
    headers, keep-alive upstream connections: in all three."""
    nginx = suite_tls.nginx_config("/d", "127.0.0.1:1", "127.0.0.1:2", "/d/c.pem", "/d/k.pem")
    haproxy = suite_tls.haproxy_config("127.0.0.1:1", "127.0.0.1:2", "/d/tls.pem")
    assert "listen 127.0.0.1:1 ssl backlog=4096;" in nginx
    assert "ssl_certificate /d/c.pem;" in nginx and "ssl_certificate_key /d/k.pem;" in nginx
    assert "ssl_protocols TLSv1.3;" in nginx
    assert "ssl_session_tickets off;" in nginx and "ssl_session_cache off;" in nginx
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in nginx
    assert "proxy_set_header X-Forwarded-Proto https;" in nginx
    assert "server 127.0.0.1:2;" in nginx and "keepalive 32;" in nginx
    assert "worker_processes 1;" in nginx
    bind = "bind 127.0.0.1:1 ssl crt /d/tls.pem ssl-min-ver TLSv1.3 no-tls-tickets alpn http/1.1"
    assert bind in haproxy
    assert "tune.ssl.cachesize 0" in haproxy and "nbthread 1" in haproxy
    assert "option forwardfor" in haproxy
    assert "http-request set-header X-Forwarded-Proto https" in haproxy
    assert "http-reuse always" in haproxy and "server s1 127.0.0.1:2" in haproxy
    assert "${" not in nginx + haproxy  # every placeholder filled
    cert = suite_tls.Certificate(Path("/d/c.pem"), Path("/d/k.pem"), Path("/d/tls.pem"))
    env = suite_tls.trioxy_env("127.0.0.1:1", "127.0.0.1:2", cert)
    assert env == {
        "LISTEN": "127.0.0.1:1",
        "UPSTREAMS": "127.0.0.1:2",
        "CERT": "/d/c.pem",
        "KEY": "/d/k.pem",
        "MIN_TLS": "1.3",
        "SESSION_TICKETS": "off",
    }


@needs_openssl
def test_the_certificate_is_ecdsa_p256_for_localhost(tmp_path: Path) -> None:
    cert = suite_tls.make_certificate(str(shutil.which("openssl")), tmp_path)
    pem = cert.pem.read_text()
    assert "BEGIN CERTIFICATE" in pem and "PRIVATE KEY" in pem  # HAProxy's crt: both
    info = ssl._ssl._test_decode_cert(str(cert.cert))  # type: ignore[attr-defined]
    assert ("DNS", "localhost") in info["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in info["subjectAltName"]
    text = (
        __import__("subprocess")
        .run(
            ["openssl", "x509", "-in", str(cert.cert), "-noout", "-text"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout
    )
    assert "id-ecPublicKey" in text and "prime256v1" in text


def tls_server(cert: suite_tls.Certificate, **options: Any) -> AbstractContextManager[int]:
    """An HTTPS server on a loopback port answering ``ok`` to each request, with
    ``options`` set on its SSL context (``num_tickets``, ``maximum_version``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.cert), str(cert.key))
    for name, value in options.items():
        setattr(context, name, value)

    def handle(raw: socket.socket) -> None:
        with context.wrap_socket(raw, server_side=True) as tls:
            request = b""
            while b"\r\n\r\n" not in request:
                request += tls.recv(4096)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return threaded_server(handle)


@needs_openssl
def test_check_accepts_full_tls13_handshakes_only(tmp_path: Path) -> None:
    cert = suite_tls.make_certificate(str(shutil.which("openssl")), tmp_path)
    with tls_server(cert, num_tickets=0) as port:
        assert suite_tls.check_contender(port, cert.cert).startswith("TLS_")
    with tls_server(cert) as port:  # tickets: the second connection resumes
        with pytest.raises(common.BenchError, match="resumed its TLS session"):
            suite_tls.check_contender(port, cert.cert)
    with tls_server(cert, num_tickets=0, maximum_version=ssl.TLSVersion.TLSv1_2) as port:
        with pytest.raises(common.BenchError, match=r"negotiated TLSv1\.2, not TLSv1\.3"):
            suite_tls.check_contender(port, cert.cert)
    with tls_server(cert, num_tickets=0) as port:
        with pytest.raises(common.BenchError, match="CERTIFICATE_VERIFY_FAILED"):
            suite_tls.check_contender(port, Path(ssl.get_default_verify_paths().cafile or "/"))


@pytest.mark.skipif(
    not all(common.find_tool(t) for t in ("nginx", "haproxy", "openssl")),
    reason="needs nginx, haproxy and openssl",
)
def test_every_contender_starts_and_passes_the_check(tmp_path: Path) -> None:
    """The suite's real configs: nginx, HAProxy and scripts/tls_offload.py start,
    answer ``ok`` from the backend over TLS 1.3, and resume no session."""
    opts = run.parse_args(["--suite", "tls", "--no-pin", "--warmup", "0"])
    tools = {t: str(common.find_tool(t)) for t in ("nginx", "haproxy", "openssl")}
    reg = common.ProcessRegistry(tmp_path, pin=False)
    taken: set[int] = set()
    cert = suite_tls.make_certificate(tools["openssl"], tmp_path)
    (tmp_path / "www").mkdir()
    try:
        _, backend, _ = common.start_backend_nginx(
            reg, opts, tools, tmp_path, taken, "nginx-http-backend.conf", "b", www=str(tmp_path)
        )
        contenders = suite_tls.start_contenders(
            reg, opts, tools, backend, taken, tmp_path, cert, "test"
        )
        assert [(c.name, c.error, c.skipped) for c in contenders] == [
            ("nginx", None, None),
            ("haproxy", None, None),
            ("trioxy", None, None),
        ]
        suite_tls.check_and_warm_up(contenders, opts, tools, cert.cert, "test")
        assert [c.error for c in contenders] == [None, None, None]
        trioxy = contenders[2]
        assert "MIN_TLS=1.3 SESSION_TICKETS=off" in trioxy.command
        assert "CERT=DIR/tls-cert.pem KEY=DIR/tls-key.pem" in trioxy.command
        assert str(tmp_path) not in contenders[0].config_text + contenders[1].config_text
    finally:
        reg.stop_all()


def test_render_tls_section(tmp_path: Path) -> None:
    opts = run.parse_args(["--suite", "tls"])

    def contender(name: str, *rps: float) -> common.Contender:
        c = common.Contender(name, 1)
        c.samples = [common.Sample(r, p50_ms=1.0, p99_ms=4.0, cpu_pct=100.0) for r in rps]
        c.config_text = f"{name} config"
        return c

    results = [
        suite_tls.result(
            opts,
            which,
            [
                contender("nginx", 20000, 21000),
                contender("haproxy", 18000),
                contender("trioxy", 7000),
            ],
            'return 200 "ok";',
        )
        for which in suite_tls.BENCHES
    ]
    text = suite_tls.render_section(opts, results, {}, "today", 200.0, 0.0)
    assert text.startswith("## TLS termination (HTTPS in front of plain HTTP)")
    assert "`bench/run.py --suite tls`" in text
    assert "### TLS keep-alive requests (wrk -t1 -c50 -d10s, TLS 1.3, ECDSA P-256)" in text
    assert "full TLS 1.3 handshakes" in text and "-H 'Connection: close'" in text
    assert "| trioxy / nginx | 0.34 |" in text and "| HAProxy / nginx | 0.88 |" in text
    assert "Target:" not in text  # no target: ratios only
    assert "nginx config" in text and "haproxy config" in text and 'return 200 "ok";' in text
    assert_replaces_only_its_section(tmp_path, "tls", text)
