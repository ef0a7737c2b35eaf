"""scripts/tcp_proxy.py end to end: ``trioxy run`` as a subprocess, real curl,
``python -m http.server`` and a loopback echo server as upstreams."""

from __future__ import annotations

import hashlib
import re
import resource
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from tests.helpers import ROOT, free_port, http_server, run_trioxy

SCRIPT = ROOT / "scripts" / "tcp_proxy.py"
FAILURE_LINE = "no upstream answered"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_text("hello through trioxy\n")
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB
    return tmp_path


def curl(url: str) -> tuple[int, bytes]:
    """(HTTP status, body) fetched by curl."""
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--write-out",
            "\n%{http_code}",
            url,
        ],
        capture_output=True,
        check=True,
    )
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@needs_curl
def test_curl_through_the_proxy(site: Path) -> None:
    with http_server(site) as up:
        port = free_port()
        env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{up}"}
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            assert curl(f"http://127.0.0.1:{port}/hello.txt") == (200, b"hello through trioxy\n")
            status, body = curl(f"http://127.0.0.1:{port}/big.bin")
            assert status == 200
            assert body == (site / "big.bin").read_bytes()
            assert curl(f"http://127.0.0.1:{port}/missing")[0] == 404
        # SIGINT is a clean stop.
        assert proxy.returncode == 0, proxy.stderr
        assert "Traceback" not in proxy.stderr


def test_half_closed_client_gets_the_whole_reply(site: Path) -> None:
    with http_server(site) as up:
        port = free_port()
        env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{up}"}
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                # HTTP/1.0 without keep-alive: the server answers, then closes.
                sock.sendall(b"GET /big.bin HTTP/1.0\r\nHost: test\r\n\r\n")
                sock.shutdown(socket.SHUT_WR)
                response = read_to_eof(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert body == (site / "big.bin").read_bytes()


@needs_curl
def test_dead_first_upstream_fails_over_to_the_second(site: Path) -> None:
    with http_server(site) as up:
        port, dead = free_port(), free_port()
        env = {
            "LISTEN": f"127.0.0.1:{port}",
            "UPSTREAMS": f"127.0.0.1:{dead},127.0.0.1:{up}",
        }
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            # Two requests: round-robin starts one at the dead upstream, one at the live.
            for _ in range(2):
                assert curl(f"http://127.0.0.1:{port}/hello.txt") == (
                    200,
                    b"hello through trioxy\n",
                )
    assert FAILURE_LINE not in proxy.stderr  # failing over is not a failure


def test_all_upstreams_dead_closes_the_client_and_logs_once() -> None:
    port, dead1, dead2 = free_port(), free_port(), free_port()
    env = {
        "LISTEN": f"127.0.0.1:{port}",
        "UPSTREAMS": f"127.0.0.1:{dead1},127.0.0.1:{dead2}",
    }
    with run_trioxy(SCRIPT, env=env) as proxy:
        proxy.wait_listening(port)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"hello?")
            try:
                assert sock.recv(100) == b""  # closed, nothing relayed
            except ConnectionResetError:
                pass  # closed with our bytes unread: a reset is a close too
    lines = [line for line in proxy.stderr.splitlines() if FAILURE_LINE in line]
    assert len(lines) == 1, proxy.stderr
    assert f"127.0.0.1:{dead1}" in lines[0] and f"127.0.0.1:{dead2}" in lines[0]
    assert "refused" in lines[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPSTREAMS", "127.0.0.1:80,9090"),
        ("LISTEN", "nowhere"),
        ("CONNECT_TIMEOUT", "soon"),
        ("IDLE_TIMEOUT", "-1"),
        ("MAX_CONNECTIONS", "0"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(name: str, value: str) -> None:
    with run_trioxy(SCRIPT, env={"LISTEN": "127.0.0.1:0", name: value}) as proxy:
        status = proxy.wait()
    assert status == 2
    lines = proxy.stderr.strip().splitlines()
    assert len(lines) == 1, proxy.stderr
    assert re.search(rf"tcp_proxy\.py:\d+: {name}='{re.escape(value)}': ", lines[0]), lines[0]


async def test_a_thousand_concurrent_connections_keep_every_byte() -> None:
    clients = 1000
    # The proxy holds two sockets and two pipes per connection, and this process
    # a socket at each end: make room (children inherit the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * clients + 1024
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(clients)
    echo_port = listener.getsockname()[1]

    async def echo(sock: trio.socket.SocketType) -> None:
        with sock:
            while chunk := await sock.recv(65536):
                view = memoryview(chunk)
                while view:
                    view = view[await sock.send(view) :]
            sock.shutdown(socket.SHUT_WR)

    async def echo_server(nursery: trio.Nursery) -> None:
        while True:
            sock, _ = await listener.accept()
            nursery.start_soon(echo, sock)

    port = free_port()
    env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{echo_port}"}
    results: dict[int, bool] = {}

    async def client(i: int) -> None:
        # A distinct payload per connection, sent in several chunks.
        payload = hashlib.sha256(b"%d" % i).digest() * (64 + i % 200)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            async with trio.open_nursery() as nursery:

                async def upload() -> None:
                    for start in range(0, len(payload), 1000):
                        await stream.send_all(payload[start : start + 1000])
                    await stream.send_eof()

                nursery.start_soon(upload)
                received = bytearray()
                while chunk := await stream.receive_some(65536):
                    received += chunk
            results[i] = bytes(received) == payload

    try:
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            async with trio.open_nursery() as servers:
                servers.start_soon(echo_server, servers)
                with trio.fail_after(120):
                    async with trio.open_nursery() as nursery:
                        for i in range(clients):
                            nursery.start_soon(client, i)
                servers.cancel_scope.cancel()
            proxy.stop(signal.SIGTERM)
    finally:
        listener.close()
    assert len(results) == clients
    assert all(results.values()), sorted(i for i, ok in results.items() if not ok)[:10]
    assert proxy.returncode == 0, proxy.stderr
    assert FAILURE_LINE not in proxy.stderr
