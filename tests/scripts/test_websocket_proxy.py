"""scripts/websocket_proxy.py under ``trioxy run``, between a ``websockets``
client (or a raw socket, for what a library would not send) and a
``websockets`` echo server: frames decoded both ways through ``demux_http`` and
``mux_http``, counted, logged, limited.
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.filters.test_http_websocket import (
    UPGRADE,
    Upstream,
    echo_exchange,
    masked_text_frame,
    upstream,
)
from tests.helpers import ROOT, Process, free_port, run_trioxy

SCRIPT = ROOT / "scripts" / "websocket_proxy.py"


@contextmanager
def proxy(upstream_port: int, **env: str) -> Iterator[tuple[int, Process]]:
    port = free_port()
    settings = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{upstream_port}"}
    with run_trioxy(SCRIPT, env={**settings, **env}) as proc:
        proc.wait_listening(port)
        yield port, proc


def closes_of(data: bytes) -> list[int]:
    """The codes of the (unmasked) close frames in a server's bytes after its 101."""
    return [int.from_bytes(m.group(1), "big") for m in re.finditer(rb"\x88[\x02-\x7d](..)", data)]


def closes_seen(up: Upstream) -> list[int | None]:
    """The close codes the upstream received, once it has seen one (its handler
    records it as the connection ends, which may be after the client's end)."""
    for _ in range(200):
        with up.lock:
            if up.closes:
                return list(up.closes)
        time.sleep(0.05)
    return []


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def upgrade_head(path: str = "/chat") -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
    return (head + "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items()) + "\r\n").encode()


def test_frames_pass_both_ways_and_are_counted() -> None:
    with upstream() as (up, up_port), proxy(up_port, LOG_FRAMES="yes") as (port, proc):
        # No compression: the payload sizes on the wire are the messages' own.
        with ws_connect(f"ws://127.0.0.1:{port}/chat", open_timeout=10, compression=None) as ws:
            echo_exchange(ws)
            ws.close(4001, "bye")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4001
        # client: 5 + 8 + 4+3+3 + 1 (ping) + 2+3 (close) bytes in 8 frames
        # (websockets ends a fragmented message with an empty frame); the server
        # echoes the fragmented message as one frame and answers the ping.
        proc.wait_for(lambda: "websocket /chat from" in proc.stderr, "the summary line")
        assert re.search(
            r"websocket /chat from 127\.0\.0\.1:\d+: client 8 frames 29 bytes \(close 4001\), "
            r"server 5 frames 29 bytes \(close 4001\)",
            proc.stderr,
        ), proc.stderr
        log = proc.stderr
        assert "websocket /chat: client TEXT (more to come)" in log
        assert "websocket /chat: client CONTINUATION" in log
        assert "websocket /chat: server PONG" in log
        assert closes_seen(up) == [4001]


def test_compressed_frames_pass_and_limits_count_wire_bytes() -> None:
    # permessage-deflate (negotiated by default) passes through: a 100 kB
    # message that compresses well fits a 1 kB frame limit.
    with upstream() as (_, up_port), proxy(up_port, MAX_FRAME_SIZE="1000") as (port, _):
        with ws_connect(f"ws://127.0.0.1:{port}/z", open_timeout=10) as ws:
            assert ws.protocol.extensions, "permessage-deflate was not negotiated"
            ws.send("a" * 100_000)
            assert ws.recv(timeout=10) == "a" * 100_000


def test_client_frame_over_the_limit_is_closed_1009_at_both_ends() -> None:
    with upstream() as (up, up_port), proxy(up_port, MAX_FRAME_SIZE="100") as (port, proc):
        with ws_connect(f"ws://127.0.0.1:{port}/big", open_timeout=10, compression=None) as ws:
            ws.send("x" * 50)
            assert ws.recv(timeout=10) == "x" * 50
            ws.send("y" * 200)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        # The proxy told the server, whose echo of the close reached the client.
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
        proc.wait_for(lambda: "closing with 1009" in proc.stderr, "the warning")
        assert closes_seen(up) == [1009]


def test_server_frame_over_the_limit_is_closed_1009_to_the_client() -> None:
    # Three frames of 60 bytes each pass (no message limit); the server's echo
    # is one frame of 180 bytes: over MAX_FRAME_SIZE on the way back.
    with upstream() as (_, up_port), proxy(up_port, MAX_FRAME_SIZE="100") as (port, proc):
        with ws_connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10, compression=None) as ws:
            ws.send(["a" * 60, "b" * 60, "c" * 60])
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
        proc.wait_for(lambda: "from the server, closing with 1009" in proc.stderr, "warning")


def test_fragmented_message_over_the_limit_is_1009() -> None:
    env = {"MAX_MESSAGE_SIZE": "150"}
    with upstream() as (up, up_port), proxy(up_port, **env) as (port, _):
        with ws_connect(f"ws://127.0.0.1:{port}/m", open_timeout=10, compression=None) as ws:
            ws.send(["a" * 60, "b" * 60, "c" * 60])
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
        # The server was told 1009; its answer to a close in the middle of a
        # fragmented message is its own 1002 (see docs/websocket.md).
        assert closes_seen(up) == [1009]
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1002


def test_text_that_is_not_utf8_is_1007() -> None:
    # A raw client: websockets would not send it.
    with upstream() as (up, up_port), proxy(up_port) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_head() + masked_text_frame(b"ok\xff"))
            data = read_all(sock)
        assert data.startswith(b"HTTP/1.1 101 ")
        assert closes_of(data.partition(b"\r\n\r\n")[2]) == [1007]
        assert closes_seen(up) == [1007]


def test_unmasked_client_frame_is_1002() -> None:
    with upstream() as (up, up_port), proxy(up_port) as (port, _):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(upgrade_head() + b"\x81\x02hi")
            data = read_all(sock)
        assert closes_of(data.partition(b"\r\n\r\n")[2]) == [1002]
        assert closes_seen(up) == [1002]


def test_plain_requests_and_refused_upgrades_are_ordinary_http() -> None:
    with upstream() as (_, up_port), proxy(up_port) as (port, proc):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/refuse", headers=UPGRADE)
            response = conn.getresponse()
            assert (response.status, response.read()) == (403, b"refused\n")
            conn.request("GET", "/")  # the same connection goes on as HTTP
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"plain\n")
        finally:
            conn.close()
    assert "websocket /" not in proc.stderr  # no frame, no summary


def test_bad_setting_is_one_line() -> None:
    with run_trioxy(SCRIPT, env={"MAX_FRAME_SIZE": "lots"}) as proc:
        assert proc.wait() == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "websocket_proxy.py:" in lines[0], lines
        assert "MAX_FRAME_SIZE='lots'" in lines[0]
