"""Active health checks against real loopback servers."""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from filters.balance import RoundRobin, Sticky
from filters.health import HealthCheck, balancers_in
from pipeline import Filter, Proxy, StreamEnd
from pipeline.runtime import serve
from pipeline.testing import open_pipeline
from tests.helpers import Process, free_port, run_trioxy

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


async def test_checks_start_with_the_server_before_any_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.health")
    backend = HTTPBackend(200)
    async with server(backend) as target:
        down = dead()
        # A long interval: the only check in this test is the one at startup.
        balancer = RoundRobin([target, down], health=HealthCheck("/probe", interval=60, fall=1))
        proxy = Proxy()
        (
            proxy.listen("127.0.0.1:0")
            .demux_http()
            .to(lambda p: p.balance(balancer).mux_http().to(lambda s: s.connect(balancer)))
        )
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                running = await nursery.start(
                    lambda task_status: serve(
                        proxy.build(), handle_signals=False, task_status=task_status
                    )
                )
                assert balancer.checks_running  # started with the server
                while not backend.requests or balancer.available(down):
                    await trio.sleep(0.01)
                assert not running.streams  # no client has come
                running.shutdown()
        assert not balancer.checks_running
    (probe,) = backend.requests
    assert probe.startswith(b"GET /probe HTTP/1.1\r\n")
    assert b"\r\nUser-Agent: trioxy-health-check\r\n" in probe
    assert health_lines(caplog) == [f"backend {down} DOWN (1 failed check: connection refused)"]


def test_the_balancers_of_a_configuration_are_found_wherever_filters_hold_them() -> None:
    checked = HealthCheck(None)
    plain = RoundRobin(["127.0.0.1:1"])
    inner = RoundRobin(["127.0.0.1:2"], health=checked)
    in_kwargs = RoundRobin(["127.0.0.1:3"], health=checked)
    in_list = RoundRobin(["127.0.0.1:4"], health=checked)
    named = RoundRobin(["127.0.0.1:5"], health=checked)
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").connect(plain)
    (
        proxy.listen("127.0.0.1:0")
        .demux_http()
        .to(lambda p: p.balance(Sticky(inner)).mux_http().to(lambda s: s.connect(in_kwargs)))
    )
    proxy.listen("127.0.0.1:0").add_filter(Holder, [{"x": in_list}]).to("named")
    proxy.pipeline("named").connect(named)
    found = list(balancers_in(proxy.build()))
    assert {id(b) for b in found} >= {id(b) for b in (plain, inner, in_kwargs, in_list, named)}
    assert len(found) == len({id(b) for b in found})  # each once
    assert not any(isinstance(b, RoundRobin) and b.checks_running for b in found)


class Holder(Filter):
    """A joint filter holding balancers in a nested argument (as a script's own
    filter might)."""

    name = "holder_test"
    joint = True

    def __init__(self, anything: object) -> None:
        self.anything = anything


def test_a_reverse_proxy_script_checks_its_upstreams_before_any_request(
    tmp_path: Path,
) -> None:
    backend_port, down = free_port(), dead()
    argv = [sys.executable, "-m", "http.server", str(backend_port), "--bind", "127.0.0.1"]
    backend = Process(argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, tmp_path)
    try:
        backend.wait_listening(backend_port)
        port = free_port()
        env = {
            "LISTEN": f"127.0.0.1:{port}",
            "UPSTREAMS": f"127.0.0.1:{backend_port},{down}",
            "HEALTH_PATH": "/probe",
            "HEALTH_INTERVAL": "60",  # one check each, at startup
            "HEALTH_FALL": "1",
        }
        with run_trioxy("scripts/reverse_proxy.py", env=env) as proxy:
            proxy.wait_listening(port)  # (reads /proc: connects to nothing)
            deadline = time.monotonic() + 20
            while "GET /probe " not in backend.stderr or " DOWN " not in proxy.stderr:
                assert time.monotonic() < deadline, (backend.stderr, proxy.stderr)
                time.sleep(0.05)
        log = proxy.stderr
        requests = backend.stderr
    finally:
        backend.close()
    assert f"backend {down} DOWN (1 failed check: connection refused)" in log
    assert requests.count("GET ") == 1  # the check, and no client request


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
