"""Socket I/O for the event path, shared by the runtime and the filters that own sockets.

Why not ``await sock.send(...)``/``await sock.recv(...)``: each of trio's socket
methods is a checkpoint plus a cancel-shielded yield to the scheduler around one
system call, which on a busy stream costs about as much as the system call itself.
The event path instead tries the system call first and waits for readiness
(``trio.lowlevel.wait_readable``/``wait_writable``) only on ``EAGAIN``, as
:mod:`pipeline.relay` does for byte relays. A read or write that completes at once
is then no checkpoint at all, so the *loops* that call them keep a budget
(:data:`YIELD_EVERY` chunks) and yield when it runs out: one busy stream cannot
starve the others, and a cancellation still lands within a few chunks.

These helpers fetch the descriptor from the socket after every wait, and a loop
using a socket that another task may close (a filter's socket, closed with its
pipeline) must do the same rather than keep the number across an ``await``: a
closed socket then reads as closed (:exc:`trio.ClosedResourceError`) instead of
the task using a descriptor number that the kernel may already have given to
another connection.
"""

from __future__ import annotations

import os

import trio

__all__ = ["READ_SIZE", "SHORT_READ", "YIELD_EVERY", "fileno", "send_all", "wait_readable"]

#: The largest chunk read at once; one ``Data`` event per read.
READ_SIZE = 65536

#: A read shorter than this drained the socket: the next read waits for
#: readiness first instead of spending a system call on a certain ``EAGAIN``.
SHORT_READ = 16384

#: Chunks a read loop may handle without waiting before it yields to other tasks.
YIELD_EVERY = 16


def fileno(sock: trio.socket.SocketType) -> int:
    """``sock``'s descriptor, or :exc:`trio.ClosedResourceError` once it is closed."""
    fd = sock.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the socket was closed")
    return fd


async def wait_readable(sock: trio.socket.SocketType, timeout: float | None = None) -> int:
    """Wait until ``sock`` has something to read (data, EOF or an error) and
    return its descriptor. Raises :exc:`trio.TooSlowError` after ``timeout``
    seconds (``None``: no limit), :exc:`trio.ClosedResourceError` if the socket is
    (or gets) closed."""
    fd = fileno(sock)
    if timeout is None:
        await trio.lowlevel.wait_readable(fd)
    else:
        with trio.fail_after(timeout):
            await trio.lowlevel.wait_readable(fd)
    return fileno(sock)


async def send_all(sock: trio.socket.SocketType, data: bytes, timeout: float | None = None) -> None:
    """Write all of ``data`` to ``sock``, however many sends it takes, waiting for
    room only when the socket's buffer is full.

    ``timeout`` bounds the time spent waiting for this ``data`` to be accepted
    (:exc:`trio.TooSlowError`; ``None``: no limit). Raises the socket's
    ``OSError`` (or :exc:`trio.ClosedResourceError`) for the caller to turn into
    its own end-of-stream reason. When every byte is accepted at once this is no
    checkpoint: callers that loop keep a yield budget (see the module docs)."""
    fd = sock.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the socket was closed")
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):
        if timeout is None:
            await _send_rest(sock, data, sent)
        else:
            with trio.fail_after(timeout):
                await _send_rest(sock, data, sent)


async def _send_rest(sock: trio.socket.SocketType, data: bytes, sent: int) -> None:
    view = memoryview(data)
    size = len(view)
    wait_writable = trio.lowlevel.wait_writable
    write = os.write
    while sent < size:
        await wait_writable(fileno(sock))
        try:
            sent += write(fileno(sock), view[sent:])
        except BlockingIOError:
            pass  # a spurious wake-up: wait again
