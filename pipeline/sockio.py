"""Small socket helpers shared by the runtime and the filters that own sockets."""

from __future__ import annotations

import trio

__all__ = ["send_all"]


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    """Write all of ``data`` to ``sock``, however many sends it takes. Raises the
    socket's ``OSError`` (or ``trio.ClosedResourceError``) for the caller to turn
    into its own end-of-stream reason."""
    sent = await sock.send(data)
    if sent < len(data):
        view = memoryview(data)
        while sent < len(view):
            sent += await sock.send(view[sent:])
