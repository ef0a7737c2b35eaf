"""A client that gets an error answer and goes away without reading it leaves
no stream behind: the reverse proxy's server (in memory, on loopback sockets)
has no stream open afterwards, and a shutdown then has nothing to wait for.
``trio.fail_after`` bounds are hang guards, not measures of speed."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
import trio

from pipeline.runtime import Server
from tests.filters.test_http_shutdown import GUARD, Backend, proxy_to, started
from tests.helpers import free_port


def close_with_reset(sock: trio.socket.SocketType) -> None:
    """Close so that the kernel sends RST (SO_LINGER 0), as a client killed
    mid-request would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def no_stream_left(server: Server) -> None:
    with trio.fail_after(GUARD):
        while server.streams:
            await trio.sleep(0.01)


BAD_LINE = b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n"
TO_DEAD = b"GET /dead HTTP/1.1\r\nHost: x\r\n\r\n"
BAD_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
)
#: A declared body the client never sends all of, after a bad header: answered
#: 400 while the client still "owes" bytes.
BAD_HEADER_WITH_BODY = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nBad Header: y\r\n\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [BAD_LINE, TO_DEAD, BAD_UPGRADE, BAD_HEADER_WITH_BODY],
    ids=["400-bad-line", "502-dead-upstream", "426-upgrade", "400-body-owed"],
)
@pytest.mark.parametrize(
    "leave",
    [
        pytest.param(lambda sock: sock.close(), id="close"),
        pytest.param(close_with_reset, id="reset"),
        pytest.param(lambda sock: sock.shutdown(socket.SHUT_WR), id="half-close"),
    ],
)
async def test_an_error_answer_left_unread_leaves_no_stream(
    request_bytes: bytes, leave: Callable[[trio.socket.SocketType], None]
) -> None:
    backend = Backend(port=free_port())  # nothing listens there: 502
    async with proxy_to(backend) as running:
        port = running.server.ports[0]
        clients = []
        for _ in range(5):
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            await sock.send(request_bytes)
            clients.append(sock)
        await trio.sleep(0.05)  # (the answers are on their way or written)
        for sock in clients:
            leave(sock)
        await no_stream_left(running.server)
        for sock in clients:
            sock.close()


async def test_an_answered_request_left_unread_on_a_live_upstream_leaves_no_stream() -> None:
    backend = Backend()
    async with started(backend.handle) as backend_port:
        backend.port = backend_port
        async with proxy_to(backend) as running:
            port = running.server.ports[0]
            for path in ("/a", "/slow"):
                sock = trio.socket.socket()
                await sock.connect(("127.0.0.1", port))
                await sock.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                if path == "/slow":
                    with trio.fail_after(GUARD):
                        await backend.arrived.wait()
                close_with_reset(sock)
            backend.release.set()
            await no_stream_left(running.server)
