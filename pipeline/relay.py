"""Relaying bytes between two sockets: the L4 hot path.

:func:`relay` copies bytes both ways between two connected trio sockets until
both directions have reached end of file, and returns a :class:`RelayStats`::

    from pipeline.relay import relay

    async def serve(client):
        upstream = trio.socket.socket()
        await upstream.connect(("127.0.0.1", 8080))
        try:
            stats = await relay(client, upstream, idle_timeout=60)
        finally:
            upstream.close()
        print(stats.a_to_b, stats.b_to_a, stats.error)

Semantics:

* **Half-close.** When one side's read returns EOF, the other side is shut down
  for writing (``shutdown(SHUT_WR)``) and the opposite direction keeps going: a
  client that shuts its write side still receives the whole reply.
* **Errors end both directions.** A reset or a broken pipe on either side stops
  the relay; nothing is raised. ``stats.error`` holds the typed reason
  (:class:`~pipeline.errors.ConnectionReset`, :class:`~pipeline.errors.IdleTimeout`,
  or another :class:`~pipeline.errors.UpstreamError`). The sockets are left open:
  whoever opened them closes them.
* **Idle timeout.** ``idle_timeout`` seconds with no byte moved in either
  direction ends the relay with ``IdleTimeout``. It is detected by a watchdog
  task that samples the byte counters four times per period, so the per-chunk
  path never reads the clock; an idle relay ends between 1 and 1.25 periods after
  the last byte.
* **Zero copy.** On Linux the bytes go through a pipe per direction with
  ``os.splice`` and never enter Python (``splice=None`` picks it when available,
  ``False`` forces the copy path, ``True`` requires ``os.splice``). A socket type
  the kernel cannot splice falls back to copying before any byte moved. The copy
  path reads into one preallocated buffer per direction.

Why the loops look the way they do: each chunk costs system calls and trips
through trio's scheduler, and those are the whole cost of a relay in Python. So
every operation is first tried without waiting and only ``EAGAIN`` makes the task
wait (``trio.lowlevel.wait_readable``/``wait_writable``); a short read (less than
:data:`SHORT_READ` bytes) means the socket is drained, so the next read waits for
readiness instead of spending a system call on a certain ``EAGAIN``. A direction
that never has to wait yields to the scheduler every :data:`YIELD_EVERY` bytes,
so one bulk transfer cannot starve the other connections of the process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .errors import ConnectionReset, IdleTimeout, UpstreamError

__all__ = [
    "PIPE_SIZE",
    "SPLICE_AVAILABLE",
    "RelayStats",
    "error_reason",
    "relay",
    "watch_idle",
]

#: ``os.splice`` exists on this platform (Linux, Python >= 3.10).
SPLICE_AVAILABLE: bool = hasattr(os, "splice")

#: The pipe size asked for with ``F_SETPIPE_SZ`` (the kernel's default is 64 KiB;
#: a larger pipe moves more per system call). Failure is ignored: the default
#: pipe still works, it only needs more calls.
PIPE_SIZE = 1 << 20

#: Bytes a direction may move without waiting before it yields to other tasks.
YIELD_EVERY = 1 << 20

#: A read shorter than this drained the socket: wait for readiness next time.
SHORT_READ = 16384

_F_SETPIPE_SZ: int = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_SPLICE_FLAGS: int = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# splice() on a pair of descriptors it does not support: fall back to copying.
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
_RESET = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


@dataclass(slots=True)
class RelayStats:
    """What a relay did: bytes each way, why it ended, which path it took."""

    a_to_b: int = 0
    b_to_a: int = 0
    error: UpstreamError | None = None
    spliced: bool = False


class _Flow:
    """One direction's byte counter, read by the idle watchdog."""

    __slots__ = ("moved",)

    def __init__(self) -> None:
        self.moved = 0


class _SpliceUnsupported(Exception):
    pass


async def relay(
    a: trio.socket.SocketType,
    b: trio.socket.SocketType,
    *,
    idle_timeout: float | None = None,
    splice: bool | None = None,
    buffer_size: int = 65536,
) -> RelayStats:
    """Relay bytes between ``a`` and ``b`` until both directions are at EOF, an
    error or the idle timeout; see the module docs. Never raises for network
    errors; cancellation propagates as usual."""
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError("idle_timeout must be positive (or None for no limit)")
    if buffer_size < 1:
        raise ValueError("buffer_size must be at least 1")
    if splice and not SPLICE_AVAILABLE:
        raise ValueError("splice=True but os.splice is not available here")
    use_splice = SPLICE_AVAILABLE if splice is None else splice
    stats = RelayStats()
    forward, backward = _Flow(), _Flow()
    pipes: list[int] = []
    try:
        if use_splice:
            try:
                for _ in range(2):
                    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                    pipes += (r, w)
                    try:
                        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
                    except OSError:
                        pass  # over pipe-max-size or the per-user quota: 64 KiB will do
            except OSError:
                if splice:
                    raise
                use_splice = False  # out of descriptors for pipes: copying needs none
        spliced = [use_splice, use_splice]

        async with trio.open_nursery() as nursery:
            remaining = 2

            async def direction(
                src: trio.socket.SocketType, dst: trio.socket.SocketType, flow: _Flow, i: int
            ) -> None:
                nonlocal remaining
                src_fd, dst_fd = src.fileno(), dst.fileno()
                try:
                    if spliced[i]:
                        try:
                            await _pump_splice(src_fd, dst_fd, pipes[2 * i], pipes[2 * i + 1], flow)
                        except _SpliceUnsupported:
                            spliced[i] = False
                            await _pump_copy(src_fd, dst_fd, flow, buffer_size)
                    else:
                        await _pump_copy(src_fd, dst_fd, flow, buffer_size)
                except (OSError, trio.ClosedResourceError) as exc:
                    if stats.error is None:
                        stats.error = error_reason(exc)
                    nursery.cancel_scope.cancel()
                    return
                try:
                    dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                except OSError:
                    pass  # the peer is already gone; its own direction will say so
                remaining -= 1
                if remaining == 0:
                    nursery.cancel_scope.cancel()  # stops the watchdog

            nursery.start_soon(direction, a, b, forward, 0)
            nursery.start_soon(direction, b, a, backward, 1)
            if idle_timeout is not None:

                async def watchdog(timeout: float) -> None:
                    await watch_idle(lambda: forward.moved + backward.moved, timeout)
                    if stats.error is None:
                        stats.error = IdleTimeout(f"nothing moved for {timeout:g}s")
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watchdog, idle_timeout)
    finally:
        for fd in pipes:
            os.close(fd)
        stats.a_to_b, stats.b_to_a = forward.moved, backward.moved
    stats.spliced = spliced[0] and spliced[1]
    return stats


async def watch_idle(probe: Callable[[], int], timeout: float) -> None:
    """Return once ``probe()`` (a counter of bytes moved) has not changed for
    ``timeout`` seconds; it is sampled four times per period, so this returns
    between ``timeout`` and ``1.25 * timeout`` after the last change."""
    period = timeout / 4
    last = probe()
    quiet = 0
    while quiet < 4:
        await trio.sleep(period)
        now = probe()
        if now == last:
            quiet += 1
        else:
            last, quiet = now, 0


async def _pump_splice(src: int, dst: int, pipe_r: int, pipe_w: int, flow: _Flow) -> None:
    """Move bytes ``src`` → pipe → ``dst`` until EOF on ``src``."""
    splice = os.splice
    wait_readable = trio.lowlevel.wait_readable
    wait_writable = trio.lowlevel.wait_writable
    flags = _SPLICE_FLAGS
    budget = YIELD_EVERY
    drained = False
    while True:
        if drained:
            await wait_readable(src)
            budget = YIELD_EVERY
        try:
            n = splice(src, pipe_w, PIPE_SIZE, flags=flags)
        except BlockingIOError:
            drained = True
            continue
        except OSError as exc:
            if exc.errno in _UNSUPPORTED and flow.moved == 0:
                raise _SpliceUnsupported from exc
            raise
        if n == 0:
            return
        # Drain the pipe completely before reading more, so the bytes never wait
        # in the kernel while this task waits for the source.
        left = n
        while True:
            try:
                left -= splice(pipe_r, dst, left, flags=flags)
            except BlockingIOError:
                await wait_writable(dst)
                budget = YIELD_EVERY
                continue
            if not left:
                break
        flow.moved += n
        drained = n < SHORT_READ
        budget -= n
        if budget <= 0 and not drained:
            budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()


async def _pump_copy(src: int, dst: int, flow: _Flow, size: int) -> None:
    """Move bytes ``src`` → buffer → ``dst`` until EOF on ``src``."""
    buf = bytearray(size)
    view = memoryview(buf)
    bufs = [buf]  # readv() takes a list: make it once
    readv = os.readv
    write = os.write
    wait_readable = trio.lowlevel.wait_readable
    wait_writable = trio.lowlevel.wait_writable
    budget = YIELD_EVERY
    drained = False
    while True:
        if drained:
            await wait_readable(src)
            budget = YIELD_EVERY
        try:
            n = readv(src, bufs)
        except BlockingIOError:
            drained = True
            continue
        if n == 0:
            return
        chunk = view if n == size else view[:n]
        sent = 0
        while True:
            try:
                sent += write(dst, chunk[sent:] if sent else chunk)
            except BlockingIOError:
                await wait_writable(dst)
                budget = YIELD_EVERY
                continue
            if sent == n:
                break
        flow.moved += n
        drained = n < SHORT_READ and n < size
        budget -= n
        if budget <= 0 and not drained:
            budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()


def error_reason(exc: BaseException) -> UpstreamError:
    """The typed reason a relay ended on a socket error."""
    if isinstance(exc, trio.ClosedResourceError):
        return ConnectionReset("socket closed while relaying")
    if isinstance(exc, OSError) and exc.errno in _RESET:
        return ConnectionReset(exc.strerror or "connection reset")
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return ConnectionReset("connection timed out (no answer from the peer)")
    return UpstreamError(f"relay failed: {exc}")
