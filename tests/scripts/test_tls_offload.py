"""scripts/tls_offload.py end to end: ``trioxy run`` as a subprocess, real curl
over HTTPS (certificates made by ``openssl`` at test time), and plain-HTTP
backends (Python's ``http.server``, one thread each) that answer with their name
and the headers the proxy added."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, Process, free_port, run_trioxy
from tests.tls_helpers import Certs, certs

__all__ = ["certs"]  # the fixture, imported for pytest

SCRIPT = ROOT / "scripts" / "tls_offload.py"
HANDSHAKE_LINE = "accept_tls: TLS handshake with client"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class Backend:
    """A plain-HTTP/1.1 server answering every GET with JSON: its name, the path,
    and the request headers the proxy may have added."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.clients: set[int] = set()  # client ports: one per upstream connection
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                backend.clients.add(self.client_address[1])
                body = json.dumps(
                    {
                        "backend": backend.name,
                        "path": self.path,
                        "proto": self.headers.get("X-Forwarded-Proto"),
                        "for": self.headers.get("X-Forwarded-For"),
                        "subject": self.headers.get_all("X-Client-Subject"),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@contextmanager
def backends(*names: str) -> Iterator[list[Backend]]:
    started: list[Backend] = []
    try:
        for name in names:
            b = Backend(name)
            started.append(b)
            b.thread.start()
        yield started
    finally:
        for b in started:
            b.server.shutdown()
            b.server.server_close()
            b.thread.join()


@contextmanager
def offload(
    certs: Certs, upstreams: list[Backend] | str, **env: str
) -> Iterator[tuple[int, Process]]:
    """The script on a free port with the test CA's certificate for 127.0.0.1 and
    ``localhost``; yields (port, process)."""
    cert, key = certs.server("localhost", "127.0.0.1")
    port = free_port()
    targets = upstreams if isinstance(upstreams, str) else ",".join(b.address for b in upstreams)
    settings = {
        "LISTEN": f"127.0.0.1:{port}",
        "UPSTREAMS": targets,
        "CERT": cert,
        "KEY": key,
        **env,
    }
    with run_trioxy(SCRIPT, env=settings) as proc:
        proc.wait_listening(port)
        yield port, proc


def curl(
    port: int, *options: str, count: int = 1, scheme: str = "https"
) -> subprocess.CompletedProcess[str]:
    """``count`` GETs of ``/`` over one connection; each answer on its own line as
    ``BODY|STATUS|HTTP-VERSION``."""
    argv = ["curl", "--silent", "--show-error", "--max-time", "20", *options]
    argv += ["--write-out", "|%{http_code}|%{http_version}\n"]
    argv += [f"{scheme}://127.0.0.1:{port}/"] * count
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def answers(done: subprocess.CompletedProcess[str]) -> list[tuple[dict[str, Any], str, str]]:
    """The JSON bodies, statuses and HTTP versions of a successful curl run."""
    assert done.returncode == 0, done.stderr
    return [
        (json.loads(body), status, version)
        for body, status, version in re.findall(r"(.*?)\|(\d{3})\|([\d.]+)\n", done.stdout, re.S)
    ]


def warnings(proc: Process) -> list[str]:
    return [line for line in proc.stderr.splitlines() if " WARNING " in line or " ERROR " in line]


def handshake_lines(proc: Process) -> list[str]:
    return [line for line in proc.stderr.splitlines() if HANDSHAKE_LINE in line]


def test_https_to_plain_upstreams_round_robin_over_pooled_connections(certs: Certs) -> None:
    with backends("A", "B") as ups, offload(certs, ups) as (port, proc):
        forged = ("--header", "X-Client-Subject: CN=root")
        got = answers(curl(port, "--cacert", certs.ca, *forged, count=6))
        log = proc.stderr
    assert [body["backend"] for body, _, _ in got] == ["A", "B"] * 3
    # curl offers h2 first: ALPN settled on HTTP/1.1, the protocol trioxy speaks.
    assert {(status, version) for _, status, version in got} == {("200", "1.1")}
    assert {body["proto"] for body, _, _ in got} == {"https"}
    assert {body["for"] for body, _, _ in got} == {"127.0.0.1"}
    # No mutual TLS: no subject, and the client's own header is not passed on.
    assert {body["subject"] for body, _, _ in got} == {None}
    assert [len(b.clients) for b in ups] == [1, 1]  # one pooled connection each
    assert "Traceback" not in log


def test_min_tls_refuses_older_clients_with_one_line_and_serves_on(certs: Certs) -> None:
    with backends("A") as ups, offload(certs, ups, MIN_TLS="1.3") as (port, proc):
        old = curl(port, "--cacert", certs.ca, "--tls-max", "1.2")
        assert old.returncode != 0
        proc.wait_for(lambda: len(handshake_lines(proc)) == 1, "the handshake failure logged")
        got = answers(curl(port, "--cacert", certs.ca, "--tlsv1.3"))
        [line] = handshake_lines(proc)
    assert [body["backend"] for body, _, _ in got] == ["A"]
    assert "no TLS version in common" in line


def test_plain_http_to_the_https_port_is_one_line_and_serving_goes_on(certs: Certs) -> None:
    with backends("A") as ups, offload(certs, ups) as (port, proc):
        plain = curl(port, scheme="http")
        assert plain.returncode != 0 or "|400|" in plain.stdout  # never a backend's answer
        assert "backend" not in plain.stdout
        proc.wait_for(lambda: len(handshake_lines(proc)) == 1, "the handshake failure logged")
        got = answers(curl(port, "--cacert", certs.ca))
        [line] = handshake_lines(proc)
        assert warnings(proc) == [line]
    assert [body["backend"] for body, _, _ in got] == ["A"]
    assert "plain HTTP sent to a TLS port" in line


def test_a_client_that_does_not_trust_the_certificate_fails_on_its_side(certs: Certs) -> None:
    with backends("A") as ups, offload(certs, ups) as (port, _):
        # The system CAs do not know the test CA: curl refuses the server.
        untrusted = curl(port)
        other = curl(port, "--cacert", certs.other_ca)
        got = answers(curl(port, "--cacert", certs.ca))
    assert untrusted.returncode == other.returncode == 60  # peer certificate not verified
    assert [body["backend"] for body, _, _ in got] == ["A"]


def test_mutual_tls_requires_a_client_certificate_from_client_ca(certs: Certs) -> None:
    alice_cert, alice_key = certs.client("alice")
    mallory_cert, mallory_key = certs.client("mallory", other_ca=True)
    with backends("A") as ups, offload(certs, ups, CLIENT_CA=certs.ca) as (port, proc):
        alice = answers(
            curl(
                port,
                "--cacert",
                certs.ca,
                "--cert",
                alice_cert,
                "--key",
                alice_key,
                # a header claiming another identity is dropped, not passed on
                "--header",
                "X-Client-Subject: CN=root",
            )
        )
        anonymous = curl(port, "--cacert", certs.ca)
        proc.wait_for(lambda: len(handshake_lines(proc)) == 1, "the first failure logged")
        mallory = curl(port, "--cacert", certs.ca, "--cert", mallory_cert, "--key", mallory_key)
        proc.wait_for(lambda: len(handshake_lines(proc)) == 2, "the second failure logged")
        again = answers(curl(port, "--cacert", certs.ca, "--cert", alice_cert, "--key", alice_key))
        lines = handshake_lines(proc)
    [(body, status, _)] = alice
    assert status == "200" and body["subject"] == ["CN=alice,O=trioxy tests"]
    assert "backend" not in anonymous.stdout and "backend" not in mallory.stdout
    assert "a client certificate is required" in lines[0]
    assert "certificate verify failed" in lines[1]
    assert [b["backend"] for b, _, _ in again] == ["A"]
    assert len(lines) == 2 and len(warnings(proc)) == 2, proc.stderr  # nothing else logged


def resumed(port: int, ca: str) -> list[bool]:
    """Two HTTPS requests on two connections, the second offering the first's
    TLS session; whether each connection resumed a session."""
    context = ssl.create_default_context(cafile=ca)
    session = None
    reused = []
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while tls.recv(65536):  # the answer; TLS 1.3 tickets come with it
                    pass
                reused.append(tls.session_reused)
                session = tls.session
    return reused


@pytest.mark.parametrize(("tickets", "expected"), [("on", [False, True]), ("off", [False, False])])
def test_session_tickets_make_returning_clients_resume(
    certs: Certs, tickets: str, expected: list[bool]
) -> None:
    with backends("A") as ups, offload(certs, ups, SESSION_TICKETS=tickets) as (port, _):
        assert resumed(port, certs.ca) == expected


def test_no_upstream_answers_502(certs: Certs) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with offload(certs, dead) as (port, proc):
        done = curl(port, "--cacert", certs.ca, "--output", "/dev/null")
        log = proc.stderr
    assert done.returncode == 0 and done.stdout.startswith("|502|")
    assert "no upstream answered" in log


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CERT": ""}, "CERT='': required: the server certificate chain, a PEM file"),
        ({"CERT": "/nonexistent/cert.pem"}, "CERT='/nonexistent/cert.pem': no such file"),
        ({"KEY": "@cert"}, "KEY='@cert': not the certificate's private key"),
        ({"CERT": "@key"}, "CERT='@key': not the server certificate chain"),
        ({"CLIENT_CA": "/nonexistent/ca.pem"}, "CLIENT_CA='/nonexistent/ca.pem': no such file"),
        ({"ALPN": "h2,http/1.1"}, "ALPN='h2,http/1.1': expected http/1.1"),
        ({"MIN_TLS": "1.1"}, "MIN_TLS='1.1': expected 1.2 or 1.3"),
        ({"UPSTREAMS": "8080"}, "UPSTREAMS='8080': "),
        ({"HANDSHAKE_TIMEOUT": "0"}, "HANDSHAKE_TIMEOUT='0': "),
        ({"SESSION_TICKETS": "no"}, "SESSION_TICKETS='no': expected on or off"),
    ],
)
def test_bad_settings_stop_at_load_with_one_line(
    certs: Certs, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    cert, key = certs.server("localhost")
    files = {"@cert": cert, "@key": key}
    settings = {"LISTEN": f"127.0.0.1:{free_port()}", "CERT": cert, "KEY": key}
    settings |= {name: files.get(value, value) for name, value in env.items()}
    message = message.replace("@cert", cert).replace("@key", key)
    with run_trioxy(SCRIPT, env=settings) as proc:
        status = proc.wait(30)
    lines = proc.stderr.strip().splitlines()
    assert status == 2
    assert len(lines) == 1, proc.stderr
    assert re.search(r"tls_offload\.py:\d+: ", lines[0]) and message in lines[0], lines[0]


def test_a_key_that_does_not_match_the_certificate_stops_at_load(certs: Certs) -> None:
    cert, _ = certs.server("localhost")
    _, other_key = certs.server("other.test")
    env = {"LISTEN": f"127.0.0.1:{free_port()}", "CERT": cert, "KEY": other_key}
    with run_trioxy(SCRIPT, env=env) as proc:
        status = proc.wait(30)
    lines = proc.stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, proc.stderr
    assert "tls_offload.py:" in lines[0] and "key values mismatch" in lines[0]
