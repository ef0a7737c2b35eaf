"""scripts/forward_proxy.py end to end: ``trioxy run`` as a subprocess, real curl
as the client, a real HTTP server (Python's ``http.server``, reporting the
request it got) and ``openssl s_server`` as targets."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline import Context, StreamEnd
from pipeline.script import load_script
from protocols.http import Headers, RequestHead
from tests.helpers import ROOT, Process, free_port, run_trioxy
from tests.tls_helpers import Certs, certs, s_server

__all__ = ["certs"]  # the fixture, imported for pytest

SCRIPT = ROOT / "scripts" / "forward_proxy.py"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@contextmanager
def origin() -> Iterator[int]:
    """An HTTP/1.1 server answering every request with JSON: its request line,
    its headers and the client's port."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps(
                {
                    "line": self.requestline,
                    "headers": list(self.headers.items()),
                    "client": self.client_address[1],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_OPTIONS = do_GET

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = json.dumps({"line": self.requestline, "length": len(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def forward_proxy(**env: str) -> Iterator[tuple[str, Process]]:
    port = free_port()
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{port}", **env}) as proc:
        proc.wait_listening(port)
        yield f"http://127.0.0.1:{port}", proc


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl's result, its output decoded with CRLFs kept."""
    done = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_plain_requests_are_forwarded_in_origin_form(tmp_path: Path) -> None:
    with origin() as web, forward_proxy() as (proxy, proc):
        url = f"http://127.0.0.1:{web}"
        result = curl(
            "-x",
            proxy,
            "-D",
            "-",
            "-U",
            "ann:unused",  # no USERS: credentials are not for the origin's eyes
            "-H",
            "Connection: X-Secret",
            "-H",
            "X-Secret: 1",
            "-H",
            "Proxy-Connection: keep-alive",
            f"{url}/a/b?c=d",
            f"{url}/second",
            f"{url}?only=query",
        )
        options = curl("-x", proxy, "-X", "OPTIONS", f"{url}")
        (tmp_path / "body").write_bytes(b"x" * 3_000_000)  # curl sends Expect: 100-continue
        post = curl("-x", proxy, "--data-binary", f"@{tmp_path / 'body'}", f"{url}/upload")
    assert result.returncode == 0, result.stderr + proc.stderr
    heads = re.findall(r"HTTP/1.1 200 OK\r\n(.*?)\r\n\r\n", result.stdout, re.S)
    assert len(heads) == 3 and all(re.search(r"^Via: 1.1 trioxy-", h, re.M) for h in heads)
    answers = [json.loads(body) for body in re.findall(r"\r\n\r\n(\{.*?\})", result.stdout)]
    assert [a["line"] for a in answers] == [
        "GET /a/b?c=d HTTP/1.1",
        "GET /second HTTP/1.1",
        "GET /?only=query HTTP/1.1",
    ]
    headers = dict(answers[0]["headers"])
    assert headers["Host"] == f"127.0.0.1:{web}"
    assert re.fullmatch(r"1\.1 trioxy-[0-9a-f]{8}", headers["Via"])
    assert not {"Proxy-Authorization", "Proxy-Connection", "Connection", "X-Secret"} & set(headers)
    # One pooled upstream connection carried all three requests.
    assert len({a["client"] for a in answers}) == 1
    assert json.loads(options.stdout)["line"] == "OPTIONS / HTTP/1.1"
    assert json.loads(post.stdout) == {"line": "POST /upload HTTP/1.1", "length": 3_000_000}


def test_connect_tunnels_to_plain_and_tls_targets(certs: Certs) -> None:
    cert, key = certs.server("localhost")
    with origin() as web, s_server(cert, key) as tls_port:
        allow = f"127.0.0.1:{web},localhost:{tls_port}"
        with forward_proxy(ALLOW=allow) as (proxy, proc):
            tunnelled = curl("-p", "-x", proxy, f"http://127.0.0.1:{web}/through")
            https = curl("--cacert", certs.ca, "-x", proxy, f"https://localhost:{tls_port}/")
    assert tunnelled.returncode == 0, tunnelled.stderr + proc.stderr
    answer = json.loads(tunnelled.stdout)
    # Through the tunnel the request is the client's own: no Via from the proxy.
    assert answer["line"] == "GET /through HTTP/1.1" and "Via" not in dict(answer["headers"])
    assert https.returncode == 0, https.stderr + proc.stderr
    assert "s_server" in https.stdout  # openssl's -www status page, over verified TLS


def test_tunnel_failures_reach_curl() -> None:
    with origin() as web, forward_proxy(ALLOW="127.0.0.1:*,*.invalid:*") as (proxy, proc):
        refused = curl("-p", "-x", proxy, f"http://127.0.0.1:{free_port()}/")
        unresolved = curl("-p", "-x", proxy, "http://no-such-host.invalid/")
        forbidden = curl("-p", "-x", proxy, f"http://localhost:{web}/")
        plain_refused = curl("-x", proxy, "-i", f"http://127.0.0.1:{free_port()}/")
    for result, status in [(refused, 502), (unresolved, 502), (forbidden, 403)]:
        assert result.returncode == 56, result.stderr
        assert f"CONNECT tunnel failed, response {status}" in result.stderr
    assert plain_refused.stdout.startswith("HTTP/1.1 502 Bad Gateway\r\n")
    assert "connection refused" in plain_refused.stdout
    assert re.search(r"'CONNECT localhost:\d+ HTTP/1.1': 403 Forbidden", proc.stderr)


def test_the_default_allows_tunnels_to_port_443_only() -> None:
    with origin() as web, forward_proxy() as (proxy, _):
        forbidden = curl("-p", "-x", proxy, f"http://127.0.0.1:{web}/")
        # Allowed, but nothing listens on 127.0.0.1:443 here: refused, so 502.
        allowed = curl("-p", "-x", proxy, "http://127.0.0.1:443/")
    assert "response 403" in forbidden.stderr
    assert allowed.returncode == 0 or "response 502" in allowed.stderr, allowed.stderr


def test_users_need_credentials_for_both_kinds() -> None:
    with (
        origin() as web,
        forward_proxy(ALLOW="127.0.0.1:*", USERS="ann:s3:cret,bob:x") as (
            proxy,
            proc,
        ),
    ):
        url = f"http://127.0.0.1:{web}/"
        tunnel_anonymous = curl("-p", "-x", proxy, url)
        tunnel_wrong = curl("-p", "-x", proxy, "-U", "ann:nope", url)
        tunnel_ok = curl("-p", "-x", proxy, "-U", "ann:s3:cret", url)
        plain_anonymous = curl("-x", proxy, "-i", url)
        plain_ok = curl("-x", proxy, "-U", "ann:s3:cret", url)
    for result in (tunnel_anonymous, tunnel_wrong):
        assert result.returncode == 56 and "response 407" in result.stderr
    assert plain_anonymous.stdout.startswith("HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert 'Proxy-Authenticate: Basic realm="trioxy"' in plain_anonymous.stdout
    assert json.loads(tunnel_ok.stdout)["line"] == "GET / HTTP/1.1", proc.stderr
    ok = json.loads(plain_ok.stdout)
    assert ok["line"] == "GET / HTTP/1.1" and "Proxy-Authorization" not in dict(ok["headers"])


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on one connection, half-close, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_requests_the_proxy_cannot_forward() -> None:
    with origin() as web, forward_proxy(ALLOW="127.0.0.1:*") as (proxy, _):
        port = int(proxy.rsplit(":", 1)[1])
        origin_form = curl("-i", f"{proxy}/not-a-proxy-request")
        https_url = exchange(port, b"GET https://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
        loop = curl("-i", "-x", proxy, f"{proxy}/loop")
        # The first request decides: a CONNECT after a plain request meets demux_http.
        late_connect = exchange(
            port,
            f"GET http://127.0.0.1:{web}/ HTTP/1.1\r\nHost: x\r\n\r\n"
            f"CONNECT 127.0.0.1:{web} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        )
    assert origin_form.stdout.startswith("HTTP/1.1 400 Bad Request\r\n")
    assert "not a proxy request" in origin_form.stdout
    assert https_url.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert loop.stdout.startswith("HTTP/1.1 508 Loop Detected\r\n")
    first, second = late_connect.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK\r\n") and second.startswith(b"501 Not Implemented\r\n")


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("ALLOW", "example.com", "bad pattern 'example.com': give a port"),
        ("ALLOW", "*:0", "ports are 1-65535"),
        ("USERS", "ann", "expected user:password pairs"),
        ("CONNECT_TIMEOUT", "soon", "expected a number of seconds"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(name: str, value: str, reason: str) -> None:
    with run_trioxy(SCRIPT, env={"LISTEN": "127.0.0.1:0", name: value}) as proc:
        status = proc.wait()
    assert status == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(rf"forward_proxy\.py:\d+: {name}='{re.escape(value)}': ", lines[0])
    assert reason in lines[0]


def test_to_origin_form() -> None:
    """The head rewrite alone: IPv6 targets, default and empty ports, fragments,
    OPTIONS to the server itself, Proxy-* headers, Host from the URL."""
    to_origin_form = load_script(SCRIPT).module.to_origin_form
    cases = [
        ("GET", "http://[::1]:8080/x?y#frag", "[::1]:8080", "/x?y", "[::1]:8080"),
        ("GET", "http://Example.COM", "example.com:80", "/", "Example.COM"),
        ("GET", "HTTP://example.com:/p", "example.com:80", "/p", "example.com"),
        ("OPTIONS", "http://example.com", "example.com:80", "*", "example.com"),
    ]
    for method, target, expected, path, host in cases:
        ctx = Context()
        head = RequestHead(method, target, Headers([("Host", "wrong"), ("Proxy-Foo", "1")]))
        new = to_origin_form(ctx, head)
        assert (ctx.target, new.target, new.headers["Host"]) == (expected, path, host)
        assert "Proxy-Foo" not in new.headers
    for target, status in [("http://u:p@a.test/", 400), ("http://a b/", 400), ("ftp://a/", 501)]:
        end = to_origin_form(Context(), RequestHead("GET", target, Headers()))
        assert isinstance(end, StreamEnd) and end.error.status == status, target
