"""Loopback helpers shared by the tunnel filters' tests (``accept_socks`` /
``connect_socks`` and ``accept_http_tunnel`` / ``connect_http_tunnel``): a served
proxy, a recording TCP backend, curl, and a small web listener."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from pipeline import Proxy
from tests.helpers import is_listening, serving

__all__ = [
    "Backend",
    "backend",
    "curl",
    "daemon",
    "exchange",
    "read_all",
    "serving",
    "to_target",
    "web",
]


@dataclass
class Backend:
    """A TCP server that records each connection's peer, sends ``banner`` at once,
    then (``eof_first``) shuts its write side; it records everything the client
    sends until the client's half-close, then answers ``b"got " + that`` (unless
    it already shut its side). A lost half-close shows as a hang, a lost byte as
    a wrong answer."""

    banner: bytes = b""
    eof_first: bool = False
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            peer = stream.socket.getpeername()
            self.peers.append((peer[0], peer[1]))
            if self.banner:
                await stream.send_all(self.banner)
            if self.eof_first:
                await stream.send_eof()
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
            self.received.append(b"".join(chunks))
            if not self.eof_first:
                await stream.send_all(b"got " + b"".join(chunks))


@asynccontextmanager
async def backend(
    banner: bytes = b"", eof_first: bool = False, host: str = "127.0.0.1"
) -> AsyncIterator[Backend]:
    """A :class:`Backend` listening on ``host``, port 0; stopped on the way out."""
    b = Backend(banner, eof_first)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, b.handle, 0, host=host))
        b.port = listeners[0].socket.getsockname()[1]
        yield b
        nursery.cancel_scope.cancel()


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything ``stream`` delivers up to its end."""
    chunks = []
    while data := await stream.receive_some(65536):
        chunks.append(data)
    return b"".join(chunks)


async def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload`` to ``127.0.0.1:port``, half-close, and read to the end;
    a reset shows as ``b"<reset>"`` after what came before it."""
    chunks = []
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as s:
            await s.send_all(payload)
            await s.send_eof()
            try:
                while data := await s.receive_some(65536):
                    chunks.append(data)
            except trio.BrokenResourceError:
                chunks.append(b"<reset>")
    return b"".join(chunks)


@asynccontextmanager
async def daemon(
    argv: Sequence[str], port: int, log_path: Path, group: bool = False
) -> AsyncIterator[None]:
    """Run the server ``argv`` (stdout and stderr to ``log_path``) until it listens
    on loopback ``port``; stop it on the way out: SIGTERM, then SIGKILL after 5
    s. ``group``: it runs in its own session and the whole process group is
    stopped (for servers that fork workers)."""
    name = Path(argv[0]).name
    log = log_path.open("wb")
    process = await trio.lowlevel.open_process(
        list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=group
    )

    def stop(sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass

    try:
        with trio.fail_after(10):
            while not is_listening(port):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode}:\n" + log_path.read_text()
                    )
                await trio.sleep(0.05)
        yield
    finally:
        stop(signal.SIGTERM)
        with trio.move_on_after(5) as waited:
            await process.wait()
        if waited.cancelled_caught:
            stop(signal.SIGKILL)
            await process.wait()
        log.close()


def to_target(p: Any) -> None:
    """The usual sub-pipeline of a tunnel server end: ``connect`` to ``ctx.target``."""
    p.connect(lambda ctx: ctx.target, connect_timeout=5)


async def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """curl with ``args`` (10 s at most), its output captured, its exit code not checked."""
    return await trio.run_process(
        ["curl", "-sS", "--max-time", "10", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def web(proxy: Proxy, address: str) -> None:
    """A listener answering every HTTP request with ``hello from <its address>``."""
    (
        proxy.listen(address)
        .demux_http()
        .to(lambda p: p.serve_http(lambda ctx, req: f"hello from {ctx.local[0]}\n"))
    )
