"""pipeline.relay over real loopback TCP sockets, in both the splice and the copy
path: integrity, half-close, resets, idle timeout, descriptors and tasks."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import pytest
import trio
import trio.testing

from pipeline.errors import ConnectionReset, IdleTimeout
from pipeline.relay import SPLICE_AVAILABLE, RelayStats, relay

MODES = [
    pytest.param(
        True,
        id="splice",
        marks=pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice is not available"),
    ),
    pytest.param(False, id="copy"),
]


async def tcp_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """Two ends of a fresh loopback TCP connection."""
    listener = trio.socket.socket()
    try:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        left = trio.socket.socket()
        await left.connect(listener.getsockname())
        right, _ = await listener.accept()
        return left, right
    finally:
        listener.close()


@dataclass
class Chain:
    """client <-> (a) relay (b) <-> server, each arrow a loopback connection."""

    client: trio.socket.SocketType
    a: trio.socket.SocketType
    b: trio.socket.SocketType
    server: trio.socket.SocketType

    def close(self) -> None:
        for s in (self.client, self.a, self.b, self.server):
            s.close()


@asynccontextmanager
async def chain() -> AsyncIterator[Chain]:
    client, a = await tcp_pair()
    b, server = await tcp_pair()
    c = Chain(client, a, b, server)
    try:
        yield c
    finally:
        c.close()


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = await sock.send(view[: 1 << 20])
        view = view[sent:]


async def read_to_eof(sock: trio.socket.SocketType) -> bytes:
    chunks = []
    while chunk := await sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def all_tasks() -> list[trio.lowlevel.Task]:
    found: list[trio.lowlevel.Task] = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        found.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


async def run_relay(c: Chain, **kwargs: object) -> RelayStats:
    return await relay(c.a, c.b, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("splice", MODES)
async def test_integrity_both_ways(splice: bool) -> None:
    up = os.urandom(6 << 20)
    down = os.urandom(5 << 20) + b"tail"
    async with chain() as c:
        got: dict[str, bytes] = {}

        async def client() -> None:
            async with trio.open_nursery() as n:

                async def upload() -> None:
                    await send_all(c.client, up)
                    c.client.shutdown(socket.SHUT_WR)

                n.start_soon(upload)
                got["down"] = await read_to_eof(c.client)

        async def server() -> None:
            # Send the reply while the upload is still arriving: both ways at once.
            async with trio.open_nursery() as n:

                async def reply() -> None:
                    await send_all(c.server, down)
                    c.server.shutdown(socket.SHUT_WR)

                n.start_soon(reply)
                got["up"] = await read_to_eof(c.server)

        async with trio.open_nursery() as n:
            n.start_soon(client)
            n.start_soon(server)
            stats = await run_relay(c, splice=splice)

    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    assert stats == RelayStats(len(up), len(down), None, splice)


@pytest.mark.parametrize("splice", MODES)
async def test_client_half_close_still_gets_the_whole_reply(splice: bool) -> None:
    reply = os.urandom(3 << 20)
    async with chain() as c:
        async with trio.open_nursery() as n:
            n.start_soon(partial(run_relay, c, splice=splice))

            await send_all(c.client, b"request")
            c.client.shutdown(socket.SHUT_WR)
            # The server sees the request, then EOF, and only then answers.
            assert await read_to_eof(c.server) == b"request"
            await send_all(c.server, reply)
            c.server.shutdown(socket.SHUT_WR)
            assert await read_to_eof(c.client) == reply


@pytest.mark.parametrize("splice", MODES)
async def test_server_half_close_first(splice: bool) -> None:
    async with chain() as c:
        async with trio.open_nursery() as n:
            result: list[RelayStats] = []

            async def run() -> None:
                result.append(await run_relay(c, splice=splice))

            n.start_soon(run)
            await send_all(c.server, b"banner")
            c.server.shutdown(socket.SHUT_WR)
            assert await read_to_eof(c.client) == b"banner"
            # The other direction still works after the server's EOF.
            await send_all(c.client, b"late upload")
            c.client.shutdown(socket.SHUT_WR)
            assert await read_to_eof(c.server) == b"late upload"
        assert result == [RelayStats(len(b"late upload"), len(b"banner"), None, splice)]


@pytest.mark.parametrize("splice", MODES)
async def test_reset_ends_both_directions_without_raising(splice: bool) -> None:
    async with chain() as c:
        async with trio.open_nursery() as n:
            result: list[RelayStats] = []

            async def run() -> None:
                result.append(await run_relay(c, splice=splice))

            n.start_soon(run)
            await send_all(c.client, b"hello")
            assert await c.server.recv(100) == b"hello"
            # SO_LINGER 0: close() sends RST instead of FIN.
            c.server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.server.close()
        [stats] = result
        assert isinstance(stats.error, ConnectionReset)
        assert stats.a_to_b == 5


@pytest.mark.parametrize("splice", MODES)
async def test_idle_timeout(splice: bool) -> None:
    async with chain() as c:
        await send_all(c.client, b"one chunk, then silence")
        stats = await run_relay(c, splice=splice, idle_timeout=0.2)
        assert isinstance(stats.error, IdleTimeout)
        assert stats.a_to_b == len(b"one chunk, then silence")
        assert await c.server.recv(100) == b"one chunk, then silence"


@pytest.mark.parametrize("splice", MODES)
async def test_no_descriptor_or_task_left_behind(splice: bool) -> None:
    async with chain() as c:
        fds = open_fds()
        tasks = len(all_tasks())
        async with trio.open_nursery() as n:
            n.start_soon(partial(run_relay, c, splice=splice))
            await trio.testing.wait_all_tasks_blocked()
            if splice:
                assert open_fds() == fds + 4  # a pipe each way while it runs
            await send_all(c.client, b"x" * 100_000)
            c.client.shutdown(socket.SHUT_WR)
            c.server.shutdown(socket.SHUT_WR)
            assert len(await read_to_eof(c.server)) == 100_000
            assert await read_to_eof(c.client) == b""
        assert open_fds() == fds
        assert len(all_tasks()) == tasks


@pytest.mark.parametrize("splice", MODES)
async def test_cancelled_relay_closes_its_pipes(splice: bool) -> None:
    async with chain() as c:
        fds = open_fds()
        with trio.move_on_after(0.1):
            await run_relay(c, splice=splice)
        assert open_fds() == fds
        # The sockets are still the caller's and still work.
        await send_all(c.client, b"after")
        assert await c.a.recv(10) == b"after"


async def test_auto_mode_picks_splice_when_available() -> None:
    async with chain() as c:
        c.client.shutdown(socket.SHUT_WR)
        c.server.shutdown(socket.SHUT_WR)
        stats = await run_relay(c)
    assert stats.spliced is SPLICE_AVAILABLE
    assert stats.error is None


@pytest.mark.skipif(not SPLICE_AVAILABLE, reason="os.splice is not available")
async def test_unix_socketpair_relays_too() -> None:
    """splice on AF_UNIX stream sockets: works, or falls back to copying."""
    a, client = trio.socket.socketpair()
    b, server = trio.socket.socketpair()
    try:
        async with trio.open_nursery() as n:
            n.start_soon(relay, a, b)
            await send_all(client, b"ping" * 10000)
            client.shutdown(socket.SHUT_WR)
            assert await read_to_eof(server) == b"ping" * 10000
            server.shutdown(socket.SHUT_WR)
            assert await read_to_eof(client) == b""
    finally:
        for s in (a, b, client, server):
            s.close()


async def test_bad_arguments() -> None:
    async with chain() as c:
        with pytest.raises(ValueError, match="idle_timeout"):
            await relay(c.a, c.b, idle_timeout=0)
        with pytest.raises(ValueError, match="buffer_size"):
            await relay(c.a, c.b, buffer_size=0)
