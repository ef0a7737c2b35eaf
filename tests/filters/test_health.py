"""Active health checks against real loopback servers."""

from __future__ import annotations

import importlib
import logging
import re
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from filters.balance import RoundRobin
from filters.health import HealthCheck
from pipeline import Proxy, StreamEnd
from pipeline.runtime import serve
from pipeline.testing import open_pipeline
from tests.helpers import free_port

Handler = Callable[[trio.socket.SocketType], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A loopback TCP server running ``handler`` per connection; its address."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    async def one(sock: trio.socket.SocketType) -> None:
        with sock:
            try:
                await handler(sock)
            except OSError:
                pass

    with listener:
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                while True:
                    sock, _ = await listener.accept()
                    nursery.start_soon(one, sock)

            nursery.start_soon(accept)
            try:
                yield f"127.0.0.1:{listener.getsockname()[1]}"
            finally:
                nursery.cancel_scope.cancel()


class HTTPBackend:
    """Answers every request with ``status``; records the requests."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[bytes] = []

    async def __call__(self, sock: trio.socket.SocketType) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await sock.recv(4096)
            if not chunk:
                return
            data += chunk
        self.requests.append(data)
        await sock.send(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % self.status)


def dead() -> str:
    return f"127.0.0.1:{free_port()}"


def health_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trioxy.health"]


# One probe ------------------------------------------------------------------------------


async def test_http_probe_sends_a_get_and_reads_the_status() -> None:
    backend = HTTPBackend(200)
    async with server(backend) as target:
        check = HealthCheck("/healthz?full=1", timeout=5)
        assert await check.probe(target) is None
        backend.status = 302
        assert await check.probe(target) is None
        backend.status = 503
        assert await check.probe(target) == "HTTP 503"
        assert await HealthCheck("/", host="app.example", timeout=5).probe(target) == "HTTP 503"
    first = backend.requests[0].decode()
    assert first.startswith("GET /healthz?full=1 HTTP/1.1\r\n")
    assert f"\r\nHost: {target}\r\n" in first
    assert "\r\nConnection: close\r\n" in first
    assert "\r\nHost: app.example\r\n" in backend.requests[-1].decode()


async def test_probe_failures_have_short_reasons() -> None:
    async def silent(sock: trio.socket.SocketType) -> None:
        await trio.sleep_forever()

    async def garbage(sock: trio.socket.SocketType) -> None:
        await sock.recv(4096)
        await sock.send(b"SSH-2.0-OpenSSH\r\n")

    async def hangs_up(sock: trio.socket.SocketType) -> None:
        await sock.recv(4096)

    check = HealthCheck(timeout=0.3)
    assert await check.probe(dead()) == "connection refused"
    async with server(silent) as target:
        assert await check.probe(target) == "timed out after 0.3s"
        assert await HealthCheck(None, timeout=5).probe(target) is None  # TCP: accepted
    async with server(garbage) as target:
        assert await check.probe(target) == "not an HTTP answer: b'SSH-2.0-OpenSSH'"
    async with server(hangs_up) as target:
        assert await check.probe(target) == "closed without answering"
    assert await HealthCheck(None, timeout=5).probe(dead()) == "connection refused"
    reason = await HealthCheck(timeout=5).probe("no-such-host.invalid:80")
    assert reason is not None and reason.startswith("cannot resolve 'no-such-host.invalid'")


# Rise and fall over time ------------------------------------------------------------------


async def test_down_after_fall_and_up_after_rise_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.health")
    good, flappy = HTTPBackend(200), HTTPBackend(503)
    async with server(good) as a, server(flappy) as b:
        balancer = RoundRobin([a, b], health=HealthCheck("/", interval=0.02, rise=2, fall=3))
        check = balancer.health
        assert check is not None
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(check.run, balancer)
                while balancer.available(b):
                    await trio.sleep(0.01)
                assert [balancer.select() for _ in range(4)] == [a] * 4
                flappy.status = 200
                while not balancer.available(b):
                    await trio.sleep(0.01)
                for _ in range(5):  # more good checks: nothing more is logged
                    await trio.sleep(0.03)
                nursery.cancel_scope.cancel()
        assert sorted(balancer.select() for _ in range(4)) == sorted([a, b] * 2)
    assert health_lines(caplog) == [
        f"backend {b} DOWN (3 failed checks: HTTP 503)",
        f"backend {b} UP (2 good checks)",
    ]


# Where the checks run -------------------------------------------------------------------


async def test_checks_start_with_the_first_stream_and_end_with_the_services() -> None:
    async def echo(sock: trio.socket.SocketType) -> None:
        while chunk := await sock.recv(4096):
            await sock.send(chunk)

    async with server(echo) as target:
        balancer = RoundRobin([target], health=HealthCheck(None, interval=0.05))
        layout = Proxy().pipeline("up").connect(balancer)
        assert not balancer.checks_running  # building a layout starts nothing
        async with open_pipeline(layout) as h:
            await h.send(b"ping", StreamEnd())
            with trio.fail_after(10):
                await h.ended.wait()
            assert balancer.checks_running
            assert h.data == b"ping"
        await trio.testing.wait_all_tasks_blocked()
        assert not balancer.checks_running  # the harness's service nursery ended


async def test_checks_stop_when_the_server_stops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.health")
    backend = HTTPBackend(200)
    async with server(backend) as target:
        down = dead()
        balancer = RoundRobin([target, down], health=HealthCheck(interval=0.02, fall=1))
        proxy = Proxy()
        proxy.listen("127.0.0.1:0").connect(balancer)
        config = proxy.build()
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                running = await nursery.start(
                    lambda task_status: serve(
                        config, handle_signals=False, grace_period=1, task_status=task_status
                    )
                )
                client = trio.socket.socket()
                await client.connect(("127.0.0.1", running.ports[0]))
                await client.send(b"GET / HTTP/1.0\r\n\r\n")
                answer = await client.recv(100)
                client.close()
                while balancer.available(down):
                    await trio.sleep(0.01)
                assert balancer.checks_running
                running.shutdown()
        assert not balancer.checks_running
    assert answer.startswith(b"HTTP/1.1 200")
    assert health_lines(caplog) == [f"backend {down} DOWN (1 failed check: connection refused)"]


# Configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "health"}, "bad health check path"),
        ({"path": "/a b"}, "bad health check path"),
        ({"interval": 0}, "interval"),
        ({"timeout": -1}, "timeout"),
        ({"rise": 0}, "rise"),
        ({"fall": 1.5}, "fall"),
        ({"host": "a\r\nb"}, "host"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HealthCheck(**kwargs)


def test_defaults_and_repr() -> None:
    check = HealthCheck()
    assert (check.path, check.interval, check.timeout, check.rise, check.fall) == (
        "/",
        2.0,
        1.0,
        2,
        3,
    )
    assert HealthCheck(interval=0.5).timeout == 0.5
    assert repr(HealthCheck(None)) == "HealthCheck(tcp, interval=2, timeout=1, rise=2, fall=3)"


def test_module_example_runs() -> None:
    doc = importlib.import_module("filters.health").__doc__ or ""
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", doc)
    exec(compile(textwrap.dedent(blocks[-1]), "filters/health.py example", "exec"), {})


def test_example_port_really_refuses() -> None:
    """The docstring's trick (bind, close, connect) gives a refusing port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as c, pytest.raises(ConnectionRefusedError):
        c.connect(("127.0.0.1", port))
