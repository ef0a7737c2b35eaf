"""Graceful shutdown of HTTP connections, over real loopback sockets.

A reverse proxy (``demux_http -> mux_http -> connect``) is served in-process with
a long grace period (30 s) in front of a small keep-alive HTTP/1.1 backend that
can hold an answer until the test releases it. On shutdown an idle keep-alive
client connection is closed at once, a request in flight gets its response (with
``Connection: close``) and then the connection closes, and the pooled upstream
connections close; an L4 relay keeps its grace period. ``trio.fail_after`` bounds
are hang guards, far below the grace period, not measures of speed.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial

import pytest
import trio
import trio.testing

from pipeline import Proxy, StreamEnd
from pipeline.live import ServerStopping, ShutdownNotice, shutdown_notice
from pipeline.runtime import Server, serve
from pipeline.testing import open_pipeline
from tests.helpers import ROOT, Process, free_port, run_trioxy

GRACE = 30.0  # long: a test that waited for it would hit its hang guard first
GUARD = 10.0  # hang guard for what must happen "at once"


# The backend ---------------------------------------------------------------------


@dataclass
class Backend:
    """A keep-alive HTTP/1.1 server answering ``GET path`` with the path as body.

    ``/slow...`` is answered once :attr:`release` is set; ``/stream...`` writes
    its head and half its body at once, the rest once :attr:`release` is set."""

    port: int = 0
    requests: list[str] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)  # a request came
    release: trio.Event = field(default_factory=trio.Event)
    closed: trio.Event = field(default_factory=trio.Event)  # a connection was closed to it
    connections: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                self.requests.append(path)
                self.arrived.set()
                body = path.encode()
                start = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                if path.startswith("/slow"):
                    await self.release.wait()
                    await stream.send_all(start + body)
                elif path.startswith("/stream"):
                    await stream.send_all(start + body[:3])
                    await self.release.wait()
                    await stream.send_all(body[3:])
                else:
                    await stream.send_all(start + body)
        except trio.BrokenResourceError:
            pass
        finally:
            self.closed.set()

    async def echo(self, stream: trio.SocketStream) -> None:
        """A TCP echo server (for the L4 relay)."""
        try:
            while chunk := await stream.receive_some(65536):
                await stream.send_all(chunk)
        except trio.BrokenResourceError:
            pass


@asynccontextmanager
async def started(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """Serve ``handler`` on a loopback port for the block; the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        try:
            yield listeners[0].socket.getsockname()[1]
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Running:
    server: Server
    stopped: trio.Event  # serve() returned


@asynccontextmanager
async def proxy_to(backend: Backend, echo_port: int | None = None) -> AsyncIterator[Running]:
    """The reverse proxy in front of ``backend`` (and an L4 relay to ``echo_port``,
    its second port), served with the long grace period; stopped at the end."""
    proxy = Proxy()
    (
        proxy.listen("127.0.0.1:0")
        .demux_http()
        .to(
            lambda p: p.mux_http(key=lambda ctx: "backend").to(
                lambda s: s.connect(f"127.0.0.1:{backend.port}")
            )
        )
    )
    if echo_port is not None:
        proxy.listen("127.0.0.1:0").connect(f"127.0.0.1:{echo_port}")
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[Server]) -> None:
        try:
            await serve(
                proxy.build(), grace_period=GRACE, handle_signals=False, task_status=task_status
            )
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(run)
        try:
            yield Running(server, stopped)
        finally:
            server.shutdown(immediate=True)


# A raw HTTP client -----------------------------------------------------------------


class Client:
    """One client connection, reading responses by their ``Content-Length``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, path: str) -> None:
        await self.stream.send_all(f"GET {path} HTTP/1.1\r\nHost: backend\r\n\r\n".encode())

    async def _more(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise EOFError(f"EOF after {self.buffer!r}")
        self.buffer += chunk

    async def head(self) -> dict[str, str]:
        """The next response head: its status line and lower-cased fields."""
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        raw, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status, *lines = raw.decode().split("\r\n")
        fields = {"status": status}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        return fields

    async def body(self, head: dict[str, str]) -> bytes:
        size = int(head["content-length"])
        while len(self.buffer) < size:
            await self._more()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return body

    async def response(self) -> tuple[dict[str, str], bytes]:
        head = await self.head()
        return head, await self.body(head)

    async def eof(self) -> bool:
        """Whether the server ended the connection (and sent nothing more)."""
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:  # reset: closed too, less politely
            return True
        return chunk == b"" and self.buffer == b""

    async def aclose(self) -> None:
        await self.stream.aclose()


# The tests -------------------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_at_once() -> None:
    backend = Backend()
    async with started(backend.handle) as backend.port, proxy_to(backend) as running:
        client = await Client.open(running.server.ports[0])
        await client.send("/first")
        head, body = await client.response()
        assert body == b"/first" and head.get("connection") != "close"  # kept alive
        running.server.shutdown()
        with trio.fail_after(GUARD):
            assert await client.eof()
            await running.stopped.wait()  # and serve() returned: nothing else held it
        await client.aclose()
        assert backend.requests == ["/first"]


async def test_a_connection_that_never_sent_a_request_is_closed_at_once() -> None:
    backend = Backend()
    async with started(backend.handle) as backend.port, proxy_to(backend) as running:
        client = await Client.open(running.server.ports[0])
        await trio.testing.wait_all_tasks_blocked()  # accepted, waiting for a request
        running.server.shutdown()
        with trio.fail_after(GUARD):
            assert await client.eof()
            await running.stopped.wait()
        await client.aclose()
        assert backend.requests == []


async def test_a_request_in_flight_gets_its_response_with_connection_close() -> None:
    backend = Backend()
    async with started(backend.handle) as backend.port, proxy_to(backend) as running:
        client = await Client.open(running.server.ports[0])
        await client.send("/warm")  # an earlier request: the connection is kept alive
        assert (await client.response())[1] == b"/warm"
        await client.send("/slow")
        with trio.fail_after(GUARD):
            while backend.requests[-1:] != ["/slow"]:
                await trio.sleep(0.01)
        running.server.shutdown()
        with trio.fail_after(GUARD):
            await running.server.notice.wait()
        assert not running.stopped.is_set()  # the request in flight holds it
        backend.release.set()
        with trio.fail_after(GUARD):
            head, body = await client.response()
            assert body == b"/slow"
            assert head["status"] == "HTTP/1.1 200 OK"
            assert head["connection"] == "close"
            assert await client.eof()
            await client.aclose()  # the client closes in turn...
            await running.stopped.wait()  # ...and the server is done


async def test_a_request_sent_after_the_last_one_is_not_read() -> None:
    backend = Backend()
    async with started(backend.handle) as backend.port, proxy_to(backend) as running:
        client = await Client.open(running.server.ports[0])
        await client.send("/slow")
        with trio.fail_after(GUARD):
            await backend.arrived.wait()
        running.server.shutdown()
        with trio.fail_after(GUARD):
            await running.server.notice.wait()
        await client.send("/too-late")  # pipelined after the last request
        await trio.testing.wait_all_tasks_blocked()
        backend.release.set()
        with trio.fail_after(GUARD):
            head, body = await client.response()
            assert (body, head["connection"]) == (b"/slow", "close")
            assert await client.eof()
            await client.aclose()
            await running.stopped.wait()
        assert backend.requests == ["/slow"]  # never forwarded


async def test_a_response_already_started_ends_the_connection_when_complete() -> None:
    backend = Backend()
    async with started(backend.handle) as backend.port, proxy_to(backend) as running:
        client = await Client.open(running.server.ports[0])
        await client.send("/stream")
        with trio.fail_after(GUARD):
            head = await client.head()  # written before the shutdown: keep-alive
        assert "connection" not in head
        running.server.shutdown()
        with trio.fail_after(GUARD):
            await running.server.notice.wait()
        backend.release.set()
        with trio.fail_after(GUARD):
            assert await client.body(head) == b"/stream"
            assert await client.eof()  # closed once the response is complete
            await running.stopped.wait()
        await client.aclose()


async def test_pooled_upstream_connections_close_while_an_l4_stream_keeps_its_grace() -> None:
    backend = Backend()
    async with (
        started(backend.handle) as backend.port,
        started(backend.echo) as echo_port,
        proxy_to(backend, echo_port) as running,
    ):
        http_port, relay_port = running.server.ports
        client = await Client.open(http_port)
        await client.send("/pooled")
        assert (await client.response())[1] == b"/pooled"
        await client.aclose()  # the upstream connection stays in the pool
        relay = await trio.open_tcp_stream("127.0.0.1", relay_port)
        await relay.send_all(b"ping")
        assert await relay.receive_some(10) == b"ping"
        assert not backend.closed.is_set()
        running.server.shutdown()
        with trio.fail_after(GUARD):
            await backend.closed.wait()  # the pool closed its idle connection
        # The L4 stream is still served, within its grace period.
        assert not running.stopped.is_set()
        await relay.send_all(b"pong")
        with trio.fail_after(GUARD):
            assert await relay.receive_some(10) == b"pong"
        await relay.send_eof()
        with trio.fail_after(GUARD):
            assert await relay.receive_some(10) == b""
            await relay.aclose()
            await running.stopped.wait()
        assert backend.connections == 1


# In memory: the filter and the notice alone ---------------------------------------


def answering() -> Proxy:
    proxy = Proxy()
    proxy.pipeline("server").demux_http().to(
        lambda p: p.serve_http(lambda ctx, request: (200, request.path.encode()))
    )
    return proxy


async def test_in_memory_an_idle_connection_ends_with_server_stopping() -> None:
    notice = ShutdownNotice()
    token = shutdown_notice.set(notice)
    try:
        async with open_pipeline(answering().layout("server")) as h:
            await h.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            await h.settle()
            assert h.data.endswith(b"\r\n\r\n/a") and not h.ended.is_set()
            notice.start()
            with trio.fail_after(GUARD):
                await h.ended.wait()
            end = h.output[-1]
            assert isinstance(end, StreamEnd) and isinstance(end.error, ServerStopping)
            assert b"Connection: close" not in h.data  # nothing more was written
    finally:
        shutdown_notice.reset(token)


async def test_in_memory_a_connection_made_after_the_start_answers_one_request() -> None:
    notice = ShutdownNotice()
    notice.start()
    token = shutdown_notice.set(notice)
    try:
        async with open_pipeline(answering().layout("server")) as h:
            await h.send(
                b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            with trio.fail_after(GUARD):
                await h.ended.wait()
    finally:
        shutdown_notice.reset(token)
    assert h.data.count(b"HTTP/1.1 200 OK") == 1
    assert b"\r\nConnection: close\r\n" in h.data and h.data.endswith(b"/one")
    assert h.output[-1] == StreamEnd()  # a clean end: the client reads it all


# Through `trioxy run` and SIGINT -------------------------------------------------------


@contextmanager
def http_backend() -> Iterator[int]:
    """``python -m http.server`` (HTTP/1.0, closes after each answer)."""
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    proc = Process(argv, {"PATH": "/usr/bin:/bin"}, ROOT / "docs")
    try:
        proc.wait_listening(port)
        yield port
    finally:
        proc.close()


def test_sigint_stops_at_once_despite_an_idle_keep_alive_client() -> None:
    with http_backend() as upstream:
        port = free_port()
        env = {
            "LISTEN": f"127.0.0.1:{port}",
            "UPSTREAMS": f"127.0.0.1:{upstream}",
            "HEALTH_PATH": "none",
        }
        with run_trioxy("scripts/reverse_proxy.py", env=env, args=["--grace-period", "30"]) as proc:
            proc.wait_listening(port)
            with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as client:
                client.sendall(b"GET /cli.md HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += client.recv(65536)
                head = answer.split(b"\r\n\r\n")[0].lower()
                assert head.startswith(b"http/1.1 200 ")
                assert b"connection: close" not in head  # kept alive
                proc.proc.send_signal(signal.SIGINT)
                while client.recv(65536):  # the rest of the body, then EOF
                    pass
                # Far below the 30 s grace period (a hang guard, not a speed test).
                assert proc.wait(timeout=GUARD) == 0
            log = proc.stderr
    assert "SIGINT: shutting down" in log
    assert "stream(s) still open" not in log


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
