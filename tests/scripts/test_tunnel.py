"""The TLS tunnel end to end on loopback: ``scripts/tunnel_client.py`` and
``scripts/tunnel_server.py`` as ``trioxy run`` subprocesses, with real peers:
curl (SOCKS5 client and HTTP), ``python -m http.server``, and echo and
"firehose" TCP servers run by the test.

What is checked:

* 200 concurrent streams through ``FORWARD``, every byte echoed back and
  compared, over at most ``LINKS`` TLS connections;
* curl through ``SOCKS_LISTEN`` (``--socks5-hostname``), through
  ``HTTP_LISTEN`` (``-p -x``, a ``CONNECT`` tunnel) and through a ``FORWARD``,
  a 2 MiB body compared byte for byte;
* a stream whose reader reads nothing does not hold up another stream on the
  same (single) link;
* the server killed with SIGKILL mid-stream: the open streams are closed at
  once, and new streams go through once the server is back;
* the server stopped gracefully (SIGINT): an open stream goes on until it ends,
  then the server exits without waiting out its grace period for idle links;
* a client certificate from another CA is refused by the server, and a server
  certificate from another CA by the client;
* ``ALLOW``: a target outside it gets SOCKS reply ``0x02`` (curl says so), a
  name allowed through its resolved address works, an allowed target that
  refuses gets ``0x05``; a ``CONNECT`` to a refused target gets ``502``; a
  ``FORWARD`` to a refused target is closed;
* bad settings stop either script with one line and exit status 2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ipaddress
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import trio

from tests.helpers import ROOT, Process, free_port, http_server, port_of, run_trioxy, socket_table
from tests.tls_helpers import Certs, certs

__all__ = ["certs"]  # the module-scoped fixture, used by name

CLIENT = ROOT / "scripts" / "tunnel_client.py"
SERVER = ROOT / "scripts" / "tunnel_server.py"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


# Peers -----------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    """Echo everything back, as it comes; close after the client's EOF."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        while data := sock.recv(65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that differ from stream to stream and along the stream."""
    out = bytearray()
    block = seed.to_bytes(4, "big")
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


FIREHOSE_SIZE = 64 * 1024 * 1024


class _Firehose(socketserver.BaseRequestHandler):
    """After one line from the client, send ``FIREHOSE_SIZE`` bytes, then close;
    ``sent`` counts the bytes the kernel took so far."""

    sent = 0

    def handle(self) -> None:
        sock: socket.socket = self.request
        # A small send buffer: what the firehose has sent is close to what the
        # tunnel has taken in.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.recv(100)
        data = pattern(1024 * 1024, seed=7)
        try:
            for _ in range(FIREHOSE_SIZE // len(data)):
                sock.sendall(data)
                _Firehose.sent += len(data)
        except OSError:
            return  # the test gave up on it
        sock.shutdown(socket.SHUT_WR)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


@contextmanager
def tcp_server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """Serve ``handler`` on a loopback port (a thread per connection) for the block."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def established_to(port: int) -> int:
    """TCP connections in state ESTABLISHED whose remote port is ``port``."""
    return sum(f[3] == "01" and port_of(f[2]) == port for f in socket_table("tcp"))


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        check=False,
    )


def closed_without_data(sock: socket.socket) -> bool:
    """Whether the peer closes ``sock`` sending nothing (EOF or a reset)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


# The tunnel ------------------------------------------------------------------------


@dataclass
class Tunnel:
    server: Process
    client: Process
    server_port: int
    socks: int
    http: int
    forwards: list[int]
    server_env: dict[str, str]


@contextmanager
def tunnel(
    certs: Certs,
    targets: list[str],
    allow: str = "127.0.0.1/32:*",
    links: int = 2,
    client_cert: tuple[str, str] | None = None,
    client_ca: str | None = None,
) -> Iterator[Tunnel]:
    """Both ends: the server on a free port, the client with SOCKS_LISTEN,
    HTTP_LISTEN and one FORWARD per target; every process stopped at the end."""
    server_cert, server_key = certs.server("tunnel.test", "127.0.0.1")
    cert, key = client_cert or certs.client("alice")
    server_port, socks, http = free_port(), free_port(), free_port()
    forwards = [free_port() for _ in targets]
    server_env = {
        "LISTEN": f"127.0.0.1:{server_port}",
        "CERT": server_cert,
        "KEY": server_key,
        "CA": certs.ca,
        "ALLOW": allow,
    }
    client_env = {
        "SERVER": f"127.0.0.1:{server_port}",
        "CERT": cert,
        "KEY": key,
        "CA": client_ca or certs.ca,
        "SOCKS_LISTEN": f"127.0.0.1:{socks}",
        "HTTP_LISTEN": f"127.0.0.1:{http}",
        "FORWARD": ",".join(f"127.0.0.1:{p}={t}" for p, t in zip(forwards, targets, strict=True)),
        "LINKS": str(links),
    }
    with ExitStack() as stack:
        server = stack.enter_context(run_trioxy(SERVER, server_env))
        server.wait_listening(server_port)
        client = stack.enter_context(run_trioxy(CLIENT, client_env))
        client.wait_listening(socks)
        client.wait_listening(http)
        for port in forwards:
            client.wait_listening(port)
        yield Tunnel(server, client, server_port, socks, http, forwards, server_env)
    for proc in (server, client):
        assert "Traceback" not in proc.stderr, proc.stderr


async def echo_stream(port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a new connection to ``port`` (then EOF) while reading
    what comes back until EOF; what came back."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = bytearray()
    async with stream:

        async def send() -> None:
            view = memoryview(payload)
            for i in range(0, len(payload), 16384):
                await stream.send_all(view[i : i + 16384])
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)


# Tests -----------------------------------------------------------------------------


def test_200_concurrent_streams_every_byte_back(certs: Certs) -> None:
    with tcp_server(_Echo) as echo, tunnel(certs, [f"127.0.0.1:{echo}"], links=2) as tun:
        port = tun.forwards[0]
        results: dict[int, bool] = {}

        async def one(i: int) -> None:
            payload = pattern(1 + (i * 7919) % 131072, seed=i)
            results[i] = await echo_stream(port, payload) == payload

        async def main() -> None:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for i in range(200):
                        nursery.start_soon(one, i)

        trio.run(main)
        assert len(results) == 200
        assert [i for i, ok in results.items() if not ok] == []
        # The streams shared LINKS connections to the server.
        assert established_to(tun.server_port) == 2


@needs_curl
def test_curl_through_socks_http_connect_and_forward(certs: Certs, tmp_path: Path) -> None:
    body = pattern(2 * 1024 * 1024, seed=1)
    (tmp_path / "big.bin").write_bytes(body)
    with http_server(tmp_path) as web, tunnel(certs, [f"127.0.0.1:{web}"]) as tun:
        # The name is resolved by the server end (and allowed through its address).
        via_socks = curl(
            "--socks5-hostname", f"127.0.0.1:{tun.socks}", f"http://localhost:{web}/big.bin"
        )
        assert via_socks.returncode == 0, via_socks.stderr
        assert via_socks.stdout == body
        # curl -p: a CONNECT tunnel, then plain HTTP in it.
        via_connect = curl(
            "-p", "-x", f"http://127.0.0.1:{tun.http}", f"http://localhost:{web}/big.bin"
        )
        assert via_connect.returncode == 0, via_connect.stderr
        assert via_connect.stdout == body
        via_forward = curl(f"http://127.0.0.1:{tun.forwards[0]}/big.bin")
        assert via_forward.returncode == 0, via_forward.stderr
        assert via_forward.stdout == body
    # The server end's audit line: who asked for what ("localhost" went to the
    # address ALLOW checked).
    audit = re.findall(
        r"CN=alice,O=trioxy tests \(127\.0\.0\.1:\d+\): stream to (\S+)", tun.server.stderr
    )
    assert audit == [f"127.0.0.1:{web}"] * 3, tun.server.stderr


def test_a_slow_reader_does_not_stall_the_other_streams(certs: Certs) -> None:
    with (
        tcp_server(_Echo) as echo,
        tcp_server(_Firehose) as firehose,
        tunnel(certs, [f"127.0.0.1:{firehose}", f"127.0.0.1:{echo}"], links=1) as tun,
    ):
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.settimeout(60)
        with slow:
            slow.connect(("127.0.0.1", tun.forwards[0]))
            slow.sendall(b"go\n")
            first = slow.recv(1)  # the firehose is flowing, and now nobody reads it
            assert first
            # Meanwhile another stream on the same link moves many times the
            # flow-control window, in both directions.
            for i in range(8):
                payload = pattern(1024 * 1024, seed=100 + i)
                assert trio.run(echo_stream, tun.forwards[1], payload) == payload
            assert established_to(tun.server_port) == 1
            # The slow stream's window is full and the tunnel has stopped taking
            # the firehose's bytes: most of them wait in the firehose. (What the
            # tunnel holds is bounded by the window and the sockets' buffers, a
            # few MiB; without per-stream flow control it takes in everything.)
            assert _Firehose.sent < FIREHOSE_SIZE // 2, _Firehose.sent
            # The slow stream lost nothing meanwhile.
            received = bytearray(first)
            while chunk := slow.recv(1 << 20):
                received += chunk
        block = pattern(1024 * 1024, seed=7)
        assert len(received) == FIREHOSE_SIZE
        assert received == block * (FIREHOSE_SIZE // len(block))


def test_server_killed_open_streams_fail_new_ones_work_after_restart(certs: Certs) -> None:
    with tcp_server(_Echo) as echo, tunnel(certs, [f"127.0.0.1:{echo}"]) as tun:
        port = tun.forwards[0]
        with socket.create_connection(("127.0.0.1", port), timeout=20) as open_stream:
            open_stream.sendall(b"ping")
            assert open_stream.recv(100) == b"ping"
            tun.server.stop(signal.SIGKILL)
            # The stream is closed (not left hanging) once its link is gone.
            assert closed_without_data(open_stream)
        assert "smux link failed with 1 open streams" in tun.client.stderr
        # While the server is down new streams fail (and are closed) too.
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"hello?")
            assert closed_without_data(sock)
        with run_trioxy(SERVER, tun.server_env) as restarted:
            restarted.wait_listening(tun.server_port)
            # The first stream may still meet the backoff of the failed attempts;
            # the client keeps retrying (each attempt a new stream), and then
            # every stream goes through.
            payload = pattern(300_000, seed=3)
            for _ in range(100):
                if trio.run(echo_stream, port, payload) == payload:
                    break
            else:
                pytest.fail(f"no stream went through after the restart:\n{tun.client.stderr}")
            for i in range(5):
                payload = pattern(100_000, seed=10 + i)
                assert trio.run(echo_stream, port, payload) == payload
        assert "Traceback" not in restarted.stderr


def test_a_graceful_stop_waits_for_open_streams_not_for_idle_links(certs: Certs) -> None:
    with tcp_server(_Echo) as echo, tunnel(certs, [f"127.0.0.1:{echo}"]) as tun:
        port = tun.forwards[0]
        payload = pattern(10_000, seed=5)
        assert trio.run(echo_stream, port, payload) == payload  # a link, idle now
        with socket.create_connection(("127.0.0.1", port), timeout=20) as busy:
            busy.sendall(b"before")
            assert busy.recv(100) == b"before"
            tun.server.proc.send_signal(signal.SIGINT)
            tun.server.wait_for(lambda: "shutting down" in tun.server.stderr, "the shutdown")
            # The open stream goes on during the grace period...
            busy.sendall(b"during")
            assert busy.recv(100) == b"during"
            busy.shutdown(socket.SHUT_WR)
            assert busy.recv(100) == b""
        # ...and once it has ended the server stops: its links were told GOAWAY
        # and ended (the grace period is 30 s; nothing still open was cut).
        assert tun.server.wait(timeout=20) == 0
        assert "still open" not in tun.server.stderr, tun.server.stderr


@pytest.mark.parametrize("wrong", ["client certificate", "server certificate"])
def test_a_certificate_from_another_ca_is_refused(certs: Certs, wrong: str) -> None:
    with tcp_server(_Echo) as echo:
        mallory = certs.client("mallory", other_ca=True)
        with tunnel(
            certs,
            [f"127.0.0.1:{echo}"],
            client_cert=mallory if wrong == "client certificate" else None,
            client_ca=certs.other_ca if wrong == "server certificate" else None,
        ) as tun:
            with socket.create_connection(("127.0.0.1", tun.forwards[0]), timeout=20) as sock:
                sock.sendall(b"hello?")
                assert closed_without_data(sock)
            failed = tun.server if wrong == "client certificate" else tun.client
            failed.wait_for(lambda: "certificate verify failed" in failed.stderr, "the TLS refusal")
    line = next(ln for ln in failed.stderr.splitlines() if "certificate verify failed" in ln)
    assert ("accept_tls" if wrong == "client certificate" else "connect_tls") in line


@needs_curl
def test_allow_list_and_socks_replies(certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "hi.txt").write_text("hi\n")
    closed = free_port()
    with http_server(tmp_path) as web:
        allow = f"127.0.0.1/32:{web},127.0.0.1:{closed},localhost:{closed}"
        with tunnel(certs, [f"127.0.0.2:{web}"], allow=allow) as tun:
            proxy = f"127.0.0.1:{tun.socks}"
            ok = curl("--socks5-hostname", proxy, f"http://127.0.0.1:{web}/hi.txt")
            assert (ok.returncode, ok.stdout) == (0, b"hi\n"), ok.stderr
            # Outside ALLOW: another address, another port of an allowed one.
            for url in (f"http://127.0.0.2:{web}/", f"http://127.0.0.1:{web + 1}/"):
                refused = curl("--socks5-hostname", proxy, url)
                assert refused.returncode == 97, refused.stderr
                assert refused.stderr.rstrip().endswith(b"(2)"), refused.stderr
            # Allowed, but nobody listens there: the server's outcome, 0x05.
            for host in ("127.0.0.1", "localhost"):
                down = curl("--socks5-hostname", proxy, f"http://{host}:{closed}/")
                assert down.returncode == 97, down.stderr
                assert down.stderr.rstrip().endswith(b"(5)"), down.stderr
            # An HTTP CONNECT outside ALLOW: 502, with the reason.
            connect = curl("-p", "-x", f"http://127.0.0.1:{tun.http}", f"http://127.0.0.2:{web}/")
            assert connect.returncode == 56, connect.stderr
            assert b"CONNECT tunnel failed, response 502" in connect.stderr
            # A FORWARD to a target outside ALLOW: the connection is closed.
            with socket.create_connection(("127.0.0.1", tun.forwards[0]), timeout=20) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert closed_without_data(sock)
    assert f"SOCKS CONNECT to 127.0.0.2:{web} not allowed" in tun.server.stderr


def load_server(monkeypatch: pytest.MonkeyPatch, certs: Certs, allow: str) -> ModuleType:
    """``scripts/tunnel_server.py`` imported as a module, with ``ALLOW=allow``."""
    cert, key = certs.server("tunnel.test", "127.0.0.1")
    for name, value in (("CERT", cert), ("KEY", key), ("CA", certs.ca), ("ALLOW", allow)):
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("tunnel_server_under_test", SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (as trioxy's loader does)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("10.1.2.3", 22, True),
        ("10.1.2.3", 80, True),
        ("11.0.0.1", 22, False),
        ("wiki.internal", 443, True),
        ("a.b.WIKI.internal.", 443, True),
        ("internal", 443, False),  # *.internal is its subdomains only
        ("wiki.internal", 80, False),
        ("db.example", 5432, True),
        ("db.example", 5433, False),
        ("x.db.example", 5432, False),
        ("fd00::1", 8080, True),
        ("fd00::1", 8090, False),
        ("192.168.1.9", 8005, True),
        ("192.168.1.9", 8010, False),
    ],
)
def test_allow_rules(
    monkeypatch: pytest.MonkeyPatch, certs: Certs, host: str, port: int, allowed: bool
) -> None:
    allow = (
        "10.0.0.0/8:*, *.internal:443, db.example:5432, [fd00::]/8:8000-8089, 192.168.1.9:8000-8009"
    )
    rules = load_server(monkeypatch, certs, allow).ALLOW
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        assert rules.name_allowed(host, port) is allowed
    else:
        assert rules.address_allowed(ip, port) is allowed


@pytest.mark.parametrize(
    ("script", "name", "value"),
    [
        (SERVER, "ALLOW", ""),
        (SERVER, "ALLOW", "10.0.0.0/33:*"),
        (SERVER, "ALLOW", "10.0.0.0/8"),
        (SERVER, "ALLOW", "*.internal:0"),
        (SERVER, "ALLOW", "bad name!:80"),
        (SERVER, "CERT", "/nonexistent.pem"),
        (SERVER, "LISTEN", "nowhere"),
        (CLIENT, "FORWARD", "127.0.0.1:7000"),
        (CLIENT, "FORWARD", "127.0.0.1:7000=10.0.0.5:0"),
        (CLIENT, "HTTP_LISTEN", "none"),  # (and no FORWARD, no SOCKS_LISTEN)
        (CLIENT, "LINKS", "0"),
        (CLIENT, "CA", ""),
        (CLIENT, "OPEN_TIMEOUT", "soon"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    certs: Certs, script: Path, name: str, value: str
) -> None:
    cert, key = certs.server("tunnel.test", "127.0.0.1")
    env = {"CERT": cert, "KEY": key, "CA": certs.ca}
    if script == SERVER:
        env |= {"LISTEN": "127.0.0.1:0", "ALLOW": "*:*"}
    else:
        env |= {"SOCKS_LISTEN": "127.0.0.1:0", "FORWARD": "", "SERVER": "127.0.0.1:9"}
    env[name] = value
    if name == "HTTP_LISTEN":
        env["SOCKS_LISTEN"] = "none"
    with run_trioxy(script, env=env) as proc:
        status = proc.wait()
    assert status == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    pattern_ = rf"{script.name}:\d+: {name}='{re.escape(value)}': "
    if value == "":  # (an empty value falls back to the default, also empty)
        pattern_ = rf"{script.name}:\d+: {name}='': required"
    assert re.search(pattern_, lines[0]), lines[0]
