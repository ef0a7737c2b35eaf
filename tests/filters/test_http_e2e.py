"""The HTTP/1.1 reverse proxy end to end: ``demux_http -> mux_http -> connect``
served in-process on loopback, in front of a real h11 server (a thread), driven by
curl and by a raw-socket client."""

from __future__ import annotations

import logging
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import h11
import pytest
import trio
import trio.testing

from pipeline import Proxy
from pipeline.runtime import Server, serve
from tests.helpers import free_port

CURL = "/usr/bin/curl"


# The backend: a small threaded h11 server -------------------------------------------


class Backend:
    """What the backend saw: one entry per connection, the requests on each."""

    def __init__(self) -> None:
        self.connections: list[list[tuple[str, str]]] = []
        self.lock = threading.Lock()
        self.port = 0


def _handler(backend: Backend) -> type[socketserver.BaseRequestHandler]:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            with backend.lock:
                seen: list[tuple[str, str]] = []
                backend.connections.append(seen)
            conn = h11.Connection(h11.SERVER)
            while True:
                request = self._next(conn, sock)
                if request is None:
                    return
                method = request.method.decode()
                target = request.target.decode()
                with backend.lock:
                    seen.append((method, target))
                body = b""
                while True:
                    event = self._next(conn, sock)
                    if event is None:
                        return
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                if not self._answer(conn, sock, method, target, body):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return

        def _next(self, conn: h11.Connection, sock: socket.socket) -> Any:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        conn.receive_data(sock.recv(65536))
                    except OSError:
                        return None
                    continue
                if isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                    return None
                return event

        def _answer(
            self, conn: h11.Connection, sock: socket.socket, method: str, target: str, body: bytes
        ) -> bool:
            def send(event: Any) -> None:
                data = conn.send(event)
                if data:
                    sock.sendall(data)

            if target == "/slow":  # never answers
                time.sleep(3)
                return False
            if target == "/half":  # promises 100 bytes, sends 10, closes
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                return False
            if target == "/chunked":
                send(
                    h11.Response(
                        status_code=200, reason=b"OK", headers=[("Transfer-Encoding", "chunked")]
                    )
                )
                for part in (b"first,", b"second,", b"third"):
                    send(h11.Data(data=part))
                send(h11.EndOfMessage(headers=[("X-Checksum", "abc123")]))
                return True
            if target == "/close":
                payload = b"closing"
                headers = [("Content-Length", str(len(payload))), ("Connection", "close")]
                send(h11.Response(status_code=200, reason=b"OK", headers=headers))
                send(h11.Data(data=payload))
                send(h11.EndOfMessage())
                return False
            payload = body if target.startswith("/echo") else f"hello {target}".encode()
            headers = [("Content-Length", str(len(payload))), ("X-Path", target)]
            send(h11.Response(status_code=200, reason=b"OK", headers=headers))
            if method != "HEAD":
                send(h11.Data(data=payload))
            send(h11.EndOfMessage())
            return True

    return Handler


@contextmanager
def h11_backend() -> Iterator[Backend]:
    backend = Backend()

    class TCPServer(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    server = TCPServer(("127.0.0.1", 0), _handler(backend))
    backend.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# The proxy ------------------------------------------------------------------------------


@asynccontextmanager
async def proxy_to(upstream: str, **connect_args: Any) -> AsyncIterator[int]:
    proxy = Proxy()
    (
        proxy.listen("127.0.0.1:0")
        .demux_http()
        .to(lambda p: p.mux_http().to(lambda p2: p2.connect(upstream, **connect_args)))
    )
    config = proxy.build()
    pool = config.listeners[0].layout.specs[0].subs[0].layout.specs[0].state
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, config, grace_period=1.0, handle_signals=False)
        )
        try:
            yield server.ports[0]
            with trio.fail_after(5):  # every client stream is over: none is left behind
                while server.streams:
                    await trio.sleep(0.01)
            await trio.testing.wait_all_tasks_blocked()
            # What is left runs for the pool only: one connect task per pooled
            # connection and the idle sweeper, no per-request task of any kind.
            names = task_names()
            assert sum(n.startswith("connect ") for n in names) == len(pool), names
            assert not [n for n in names if "mux_http" in n or "Connection" in n], names
        finally:
            server.shutdown(immediate=True)
    # serve() returned: its nursery (pooled connections included) has no task left.


def task_names() -> list[str]:
    names: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                names.append(child.name)
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return names


async def curl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [CURL, "-s", "--max-time", "20", *args],
        stdin=data,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def raw_exchange(
    port: int, pieces: list[bytes], *, pause: float = 0.02, until_close: bool = True
) -> bytes:
    """Send ``pieces`` as separate TCP segments, then read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received = bytearray()
    async with stream:
        for piece in pieces:
            await stream.send_all(piece)
            await trio.sleep(pause)
        with trio.fail_after(10):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
    return bytes(received)


def split_odd(data: bytes, sizes: tuple[int, ...] = (1, 7, 13, 2, 31, 5)) -> list[bytes]:
    pieces, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        pieces.append(data[i : i + n])
        i += n
        k += 1
    return pieces


def http_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioxy.http"]


def parse_responses(data: bytes, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse responses with h11 as a client would (a peer we did not write); header
    names come lowercased."""
    conn = h11.Connection(h11.CLIENT)
    out = []
    conn.receive_data(data)
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA, "a response is incomplete"
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                for k, v in event.headers:
                    headers[k.decode()] = v.decode()
                break
        out.append((status, headers, body))
        if conn.our_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return out


# Tests -----------------------------------------------------------------------------------


async def test_curl_keep_alive_reuses_one_upstream_connection() -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            urls = [f"http://127.0.0.1:{port}/n{i}" for i in range(5)]
            done = await curl(*urls)
            assert done.returncode == 0, done.stderr
            assert done.stdout == b"".join(f"hello /n{i}".encode() for i in range(5))
            again = await curl(f"http://127.0.0.1:{port}/again")
            assert again.stdout == b"hello /again"
        requests = [r for c in backend.connections for r in c]
        assert requests == [("GET", f"/n{i}") for i in range(5)] + [("GET", "/again")]
        assert len(backend.connections) == 1  # two clients, six requests, one connection


async def test_pipelined_requests_split_at_odd_boundaries_match_the_backend() -> None:
    body = b"x" * 3000
    requests = (
        b"GET /one HTTP/1.1\r\nHost: b\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: b\r\nContent-Length: 3000\r\n\r\n"
        + body
        + b"HEAD /three HTTP/1.1\r\nHost: b\r\n\r\n"
        b"POST /echo2 HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    methods = ["GET", "POST", "HEAD", "POST", "GET"]
    with h11_backend() as backend:
        direct = await raw_exchange(backend.port, [requests])
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            proxied = await raw_exchange(port, split_odd(requests), pause=0.001)
    # Content-Length framed responses pass through byte for byte, in order.
    assert proxied == direct
    parsed = parse_responses(proxied, methods)
    assert [p[2] for p in parsed] == [b"hello /one", body, b"", b"hello world", b"hello /last"]
    assert parsed[2][1]["content-length"] == "12"  # HEAD: no body, length kept


async def test_curl_chunked_upload_and_expect_100_continue() -> None:
    payload = bytes(range(256)) * 8000  # 2 MB: curl asks with Expect: 100-continue
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            url = f"http://127.0.0.1:{port}/echo"
            chunked = await curl("-T", "-", url, data=payload[:100000])
            assert chunked.returncode == 0, chunked.stderr
            assert chunked.stdout == payload[:100000]
            expecting = await curl(
                "-v", "--expect100-timeout", "15", "--data-binary", "@-", url, data=payload
            )
            assert expecting.returncode == 0, expecting.stderr
            assert expecting.stdout == payload
            assert b"> Expect: 100-continue" in expecting.stderr
            assert b"< HTTP/1.1 100 Continue" in expecting.stderr


async def test_curl_head_and_trailers() -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            head = await curl("-sI", f"http://127.0.0.1:{port}/h")
            direct = await curl("-sI", f"http://127.0.0.1:{backend.port}/h")
            assert head.returncode == 0 and head.stdout == direct.stdout
            assert b"Content-Length: 8" in head.stdout
            request = (
                b"GET /chunked HTTP/1.1\r\nHost: b\r\nTE: trailers\r\nConnection: close\r\n\r\n"
            )
            data = await raw_exchange(port, [request])
    [(status, headers, body)] = parse_responses(data, ["GET"])
    assert (status, body) == (200, b"first,second,third")
    assert headers["x-checksum"] == "abc123"  # the trailer came through


async def test_http10_client_gets_a_close_delimited_body() -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            done = await curl("-0", "-i", f"http://127.0.0.1:{port}/chunked")
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert body == b"first,second,third"
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head


async def test_upstream_refused_is_502_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dead = free_port()
    async with proxy_to(f"127.0.0.1:{dead}") as port:
        done = await curl("-i", f"http://127.0.0.1:{port}/x")
    assert done.stdout.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"Connection: close" in done.stdout
    [record] = http_logs(caplog)
    assert "GET /x HTTP/1.1" in record.getMessage()
    assert "502" in record.getMessage() and "refused" in record.getMessage()
    assert record.getMessage().startswith("127.0.0.1:")
    retries = [r for r in caplog.records if r.name == "trioxy.mux_http"]
    assert len(retries) == 1 and "retrying" in retries[0].getMessage()


async def test_upstream_silent_is_504(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}", idle_timeout=0.3) as port:
            done = await curl("-i", "-X", "POST", "-d", "x", f"http://127.0.0.1:{port}/slow")
    assert done.stdout.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    [record] = http_logs(caplog)
    assert "POST /slow HTTP/1.1" in record.getMessage() and "504" in record.getMessage()


async def test_upstream_closing_mid_response_closes_the_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            done = await curl(f"http://127.0.0.1:{port}/half")
    assert done.returncode == 18  # curl: transfer closed with outstanding data
    assert done.stdout == b"0123456789"
    [record] = http_logs(caplog)
    assert "GET /half HTTP/1.1" in record.getMessage()
    assert "interrupted" in record.getMessage()


async def test_upstream_connection_close_retires_the_connection() -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            urls = [f"http://127.0.0.1:{port}/{p}" for p in ("close", "a", "close", "b")]
            done = await curl(*urls)
            assert done.returncode == 0, done.stderr
            assert done.stdout == b"closinghello /aclosinghello /b"
    assert [len(c) for c in backend.connections] == [1, 2, 1]


async def test_malformed_request_is_400_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            good = b"GET /ok HTTP/1.1\r\nHost: b\r\n\r\n"
            data = await raw_exchange(port, [good, b"GARBAGE\r\n\r\n"], pause=0.2)
    responses = parse_responses(data, ["GET", "GET"])
    assert [r[0] for r in responses] == [200, 400]
    assert responses[1][1]["connection"] == "close"
    [record] = http_logs(caplog)
    assert "400" in record.getMessage()
    assert backend.connections == [[("GET", "/ok")]]


async def test_oversized_header_block_is_431(caplog: pytest.LogCaptureFixture) -> None:
    with h11_backend() as backend:
        async with proxy_to(f"127.0.0.1:{backend.port}") as port:
            request = (
                b"GET /big HTTP/1.1\r\nHost: b\r\n" + b"X-Filler: " + b"a" * 70000 + b"\r\n\r\n"
            )
            data = await raw_exchange(port, [request])
    [(status, headers, _)] = parse_responses(data, ["GET"])
    assert status == 431 and headers["connection"] == "close"
    [record] = http_logs(caplog)
    assert "431" in record.getMessage()
    assert backend.connections == []
