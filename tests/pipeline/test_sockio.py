"""The event path's socket helpers over real socket pairs: full buffers (EAGAIN),
cancellation and timeouts while blocked, sockets closed under a waiting task."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from pipeline.sockio import send_all, wait_readable

#: More than a socket pair's two kernel buffers can hold: a write of this size
#: must wait for the reader at least once.
BIG = bytes(range(256)) * 32768  # 8 MiB


def socket_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    a, b = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b


async def read_exactly(sock: trio.socket.SocketType, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await sock.recv(65536)
        assert chunk, "EOF before every byte arrived"
        got += chunk
    return bytes(got)


async def test_send_all_through_a_full_buffer_delivers_every_byte_in_order() -> None:
    a, b = socket_pair()
    with a, b:
        received = b""

        async def reader() -> None:
            nonlocal received
            # Every other task is blocked: the writer is waiting for room.
            await trio.testing.wait_all_tasks_blocked()
            received = await read_exactly(b, len(BIG))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await send_all(a, BIG)
        assert received == BIG


async def test_small_writes_in_order() -> None:
    a, b = socket_pair()
    with a, b:
        for part in (b"abc", b"", b"def"):
            await send_all(a, part)
        assert await read_exactly(b, 6) == b"abcdef"


async def test_cancelling_a_blocked_send_all() -> None:
    a, b = socket_pair()
    with a, b:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()

                nursery.start_soon(cancel_when_blocked)
                await send_all(a, BIG)
        assert scope.cancelled_caught
        # The socket is still usable: what was sent is a prefix of the payload.
        a.shutdown(socket.SHUT_WR)
        rest = bytearray()
        while chunk := await b.recv(1 << 20):
            rest += chunk
        assert 0 < len(rest) < len(BIG)
        assert rest == BIG[: len(rest)]


async def test_send_all_timeout(autojump_clock: trio.testing.MockClock) -> None:
    a, b = socket_pair()
    with a, b, pytest.raises(trio.TooSlowError):
        await send_all(a, BIG, timeout=5)


async def test_send_all_on_a_closed_socket() -> None:
    a, b = socket_pair()
    a.close()
    with b, pytest.raises(trio.ClosedResourceError):
        await send_all(a, b"x")


async def test_send_all_to_a_closed_peer_raises_oserror() -> None:
    a, b = socket_pair()
    b.close()
    with a, pytest.raises(OSError):
        await send_all(a, b"x" * 1024)


async def test_closing_the_socket_wakes_a_blocked_send_all() -> None:
    a, b = socket_pair()
    with b:
        async with trio.open_nursery() as nursery:

            async def close_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                a.close()

            nursery.start_soon(close_when_blocked)
            with pytest.raises(trio.ClosedResourceError):
                await send_all(a, BIG)


async def test_wait_readable_returns_the_descriptor_once_readable() -> None:
    a, b = socket_pair()
    with a, b:
        await b.send(b"hi")
        assert await wait_readable(a) == a.fileno()


async def test_wait_readable_timeout(autojump_clock: trio.testing.MockClock) -> None:
    a, b = socket_pair()
    with a, b, pytest.raises(trio.TooSlowError):
        await wait_readable(a, timeout=30)


async def test_wait_readable_on_a_socket_closed_while_waiting() -> None:
    a, b = socket_pair()
    with b:
        async with trio.open_nursery() as nursery:

            async def close_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                a.close()

            nursery.start_soon(close_when_blocked)
            with pytest.raises(trio.ClosedResourceError):
                await wait_readable(a)
        with pytest.raises(trio.ClosedResourceError):
            await wait_readable(a)  # and at once when it is closed already
