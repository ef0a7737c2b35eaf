"""WebSocket upgrades through ``demux_http`` and ``mux_http`` end to end:
scripts/reverse_proxy.py under ``trioxy run`` between a ``websockets`` client
and a ``websockets`` server (the library's sync API, in threads), over loopback.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from tests.helpers import ROOT, free_port, run_trioxy, threaded_server

SCRIPT = ROOT / "scripts" / "reverse_proxy.py"


class Upstream:
    """A ``websockets`` echo server that also answers plain HTTP: ``/refuse``
    is answered 403, a request without ``Upgrade`` 200 ``plain``. Records the
    client ports of the requests it saw and the close codes it received."""

    def __init__(self) -> None:
        self.ports: list[int] = []  # one per request: the proxy's connection
        self.closes: list[int | None] = []
        self.lock = threading.Lock()

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        with self.lock:
            self.ports.append(conn.remote_address[1])
        if request.path == "/refuse":
            return conn.respond(403, "refused\n")
        if "upgrade" not in request.headers.get("Connection", "").lower():
            return conn.respond(200, "plain\n")
        return None

    def handler(self, conn: ServerConnection) -> None:
        try:
            for message in conn:
                conn.send(message)
        except ConnectionClosed:
            pass
        rcvd = conn.protocol.close_rcvd
        with self.lock:
            self.closes.append(rcvd.code if rcvd is not None else None)


@contextmanager
def upstream() -> Iterator[tuple[Upstream, int]]:
    up = Upstream()
    with ws_serve(up.handler, "127.0.0.1", 0, process_request=up.process_request) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield up, server.socket.getsockname()[1]
        finally:
            server.shutdown()
            thread.join(10)


def bad_accept_upstream() -> AbstractContextManager[int]:
    """A server answering every request ``101`` with a wrong ``Sec-WebSocket-Accept``."""

    def handle(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"
        )

    return threaded_server(handle)


@contextmanager
def proxy(upstream_port: int) -> Iterator[int]:
    port = free_port()
    env = {
        "LISTEN": f"127.0.0.1:{port}",
        "UPSTREAMS": f"127.0.0.1:{upstream_port}",
        "HEALTH_PATH": "none",
        "HEALTH_INTERVAL": "60",
    }
    with run_trioxy(SCRIPT, env=env) as proc:
        proc.wait_listening(port)
        yield port


def plain_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def echo_exchange(ws: ClientConnection) -> None:
    """Text, binary, a message in three frames and a ping, through the echo
    upstream: each comes back."""
    ws.send("hello")
    assert ws.recv(timeout=10) == "hello"
    ws.send(b"\x00\x01binary")
    assert ws.recv(timeout=10) == b"\x00\x01binary"
    ws.send(["frag", "men", "ted"])  # one message in three frames
    assert ws.recv(timeout=10) == "fragmented"
    assert ws.ping(b"p").wait(10)


def test_messages_ping_and_close_code_pass_through() -> None:
    with upstream() as (up, up_port), proxy(up_port) as port:
        with ws_connect(f"ws://127.0.0.1:{port}/chat", open_timeout=10) as ws:
            echo_exchange(ws)
            # A plain request on the same proxy meanwhile.
            assert plain_get(port) == (200, b"plain\n")
            ws.close(4001, "bye")
        assert ws.protocol.close_rcvd is not None
        assert ws.protocol.close_rcvd.code == 4001  # echoed by the server
        deadline = threading.Event()
        for _ in range(100):
            with up.lock:
                if up.closes:
                    break
            deadline.wait(0.05)
        assert up.closes == [4001]


def test_upgraded_connection_is_never_reused() -> None:
    with upstream() as (up, up_port), proxy(up_port) as port:
        with ws_connect(f"ws://127.0.0.1:{port}/a", open_timeout=10) as ws:
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
        for _ in range(3):
            assert plain_get(port) == (200, b"plain\n")
        with up.lock:
            ports = list(up.ports)
        # The upgrade's connection carried nothing else.
        assert ports.count(ports[0]) == 1


def test_refused_upgrade_is_an_ordinary_response() -> None:
    with upstream() as (_, up_port), proxy(up_port) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/refuse", headers=UPGRADE)
            response = conn.getresponse()
            assert (response.status, response.read()) == (403, b"refused\n")
            conn.request("GET", "/")  # the same client connection goes on
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"plain\n")
        finally:
            conn.close()


def test_invalid_upgrade_request_is_400() -> None:
    with upstream() as (up, up_port), proxy(up_port) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/chat", headers={**UPGRADE, "Sec-WebSocket-Key": "short"})
            response = conn.getresponse()
            assert response.status == 400
            assert b"Sec-WebSocket-Key" in response.read()
        finally:
            conn.close()
        assert up.ports == []


def test_wrong_accept_from_upstream_is_502() -> None:
    with bad_accept_upstream() as up_port, proxy(up_port) as port:
        with pytest.raises(InvalidStatus) as caught:
            ws_connect(f"ws://127.0.0.1:{port}/chat", open_timeout=10)
        response: Any = caught.value.response
        assert response.status_code == 502


def masked_text_frame(text: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    return bytes([0x81, 0x80 | len(text)]) + mask + payload


def test_bytes_sent_with_the_upgrade_request_belong_to_the_websocket() -> None:
    # A client that does not wait for the 101: its first frame arrives in the
    # same write as the request head, and still reaches the server as a frame.
    with upstream() as (_, up_port), proxy(up_port) as port:
        head = "GET /chat HTTP/1.1\r\nHost: x\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items()) + "\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode() + masked_text_frame(b"early"))
            data = b""
            while not data.endswith(b"\x81\x05early"):
                chunk = sock.recv(4096)
                assert chunk, data
                data += chunk
            assert data.startswith(b"HTTP/1.1 101 ")
            assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in data


def test_client_half_close_reaches_the_upstream() -> None:
    # The client ends its side after a close frame without waiting: the
    # upstream sees the close (and the EOF), answers, and the client gets it.
    with upstream() as (up, up_port), proxy(up_port) as port:
        head = "GET /chat HTTP/1.1\r\nHost: x\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items()) + "\r\n"
        close = bytes([0x88, 0x82]) + b"\x00\x00\x00\x00" + (4001).to_bytes(2, "big")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode() + close)
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 101 ")
        assert data.endswith(b"\x88\x02" + (4001).to_bytes(2, "big"))
        for _ in range(100):
            with up.lock:
                if up.closes:
                    break
            threading.Event().wait(0.05)
        assert up.closes == [4001]


def test_unsupported_version_is_426_naming_13() -> None:
    with upstream() as (up, up_port), proxy(up_port) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/chat", headers={**UPGRADE, "Sec-WebSocket-Version": "8"})
            response = conn.getresponse()
            assert response.status == 426
            assert response.getheader("Sec-WebSocket-Version") == "13"
            assert b"Sec-WebSocket-Version" in response.read()
        finally:
            conn.close()
        assert up.ports == []
