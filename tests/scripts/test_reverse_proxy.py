"""scripts/reverse_proxy.py end to end: ``trioxy run`` as a subprocess, real curl,
and real HTTP servers (Python's ``http.server``) that say which backend answered.

The backends run in this process, each on its own thread; a test can stop one
(its port then refuses), start it again on the same port, make its health
endpoint fail, or hold requests to ``/slow`` until it releases them.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from filters.balance import ConsistentHash
from pipeline import Context
from pipeline.plugins import filter_registry
from tests.helpers import ROOT, Process, free_port, run_trioxy

SCRIPT = ROOT / "scripts" / "reverse_proxy.py"

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
    pytest.mark.skipif(
        not {"demux_http", "mux_http"} <= set(filter_registry()),
        reason="demux_http/mux_http are not registered in pipeline.plugins yet",
    ),
]


class Backend:
    """A named HTTP/1.0 server: ``GET /`` answers its name; ``/health`` answers
    ``health`` (a status); ``/slow`` waits for :meth:`release`."""

    def __init__(self, name: str, keep_alive: bool = False) -> None:
        self.name = name
        self.keep_alive = keep_alive
        self.clients: set[int] = set()  # the client ports of its connections
        self.port = free_port()
        self.health = 200
        self.hits: collections.Counter[str] = collections.Counter()
        self.waiting = threading.Semaphore(0)  # one release per /slow request begun
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if backend.keep_alive else "HTTP/1.0"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                backend.hits[path] += 1
                backend.clients.add(self.client_address[1])
                if path == "/slow":
                    backend.waiting.release()
                    backend._release.wait(30)
                status = backend.health if path == "/health" else 200
                body = f"{backend.name}\n".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        if self._server is not None:
            self._release.set()
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None


@contextmanager
def backends(*names: str, keep_alive: bool = False) -> Iterator[list[Backend]]:
    started = [Backend(name, keep_alive) for name in names]
    try:
        for b in started:
            b.start()
        yield started
    finally:
        for b in started:
            b.stop()


@contextmanager
def reverse_proxy(upstreams: list[Backend] | str, **env: str) -> Iterator[tuple[int, Process]]:
    port = free_port()
    targets = upstreams if isinstance(upstreams, str) else ",".join(b.address for b in upstreams)
    settings = {
        "LISTEN": f"127.0.0.1:{port}",
        "UPSTREAMS": targets,
        "HEALTH_INTERVAL": "60",  # one check at startup; tests that watch checks set it
        **env,
    }
    with run_trioxy(SCRIPT, env=settings) as proc:
        proc.wait_listening(port)
        yield port, proc


def curl(port: int, count: int = 1, path: str = "/", *options: str) -> list[str]:
    """``count`` GETs over one client connection; the answering backends' names
    (or ``HTTP <status>`` for an error answer)."""
    url = f"http://127.0.0.1:{port}{path}"
    argv = ["curl", "--silent", "--show-error", "--max-time", "20", *options]
    argv += ["--write-out", "|%{http_code}|\n"]
    result = subprocess.run(argv + [url] * count, capture_output=True, text=True, check=True)
    return [
        body.strip() if status == "200" else f"HTTP {status}"
        for body, status in re.findall(r"(.*?)\|(\d{3})\|\n", result.stdout, re.S)
    ]


def wait_for_line(proc: Process, pattern: str, timeout: float = 20.0) -> list[str]:
    """Wait until the proxy logged a line matching ``pattern``; every such line."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in proc.stderr.splitlines() if re.search(pattern, line)]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line matching {pattern!r}:\n{proc.stderr}")
        time.sleep(0.05)


def upstream_connections(port: int) -> int:
    """Open (ESTABLISHED or CLOSE_WAIT) loopback connections to ``port`` from a
    client (read from /proc: nothing is connected to)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] in ("01", "08") and int(fields[2].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def wait_closed(backend: Backend, timeout: float = 10.0) -> None:
    """Wait until the proxy holds no connection to ``backend`` (so its balancer
    no longer counts one in flight)."""
    deadline = time.monotonic() + timeout
    while upstream_connections(backend.port):
        if time.monotonic() > deadline:
            raise AssertionError(f"connections to {backend.name} still open")
        time.sleep(0.02)


# Load distribution ------------------------------------------------------------------------


def test_round_robin_spreads_requests_evenly() -> None:
    with backends("A", "B", "C") as ups, reverse_proxy(ups) as (port, _):
        answers = curl(port, 9)
    assert collections.Counter(answers) == {"A": 3, "B": 3, "C": 3}


def test_pooled_keep_alive_connections_still_balance_per_request() -> None:
    with (
        backends("A", "B", "C", keep_alive=True) as ups,
        reverse_proxy(ups, HEALTH_PATH="none") as (port, _),
    ):
        answers = curl(port, 12)
    assert collections.Counter(answers) == {"A": 4, "B": 4, "C": 4}
    # One pooled upstream connection per backend carried its 4 requests.
    assert [len(b.clients) for b in ups] == [1, 1, 1]


def test_weighted_round_robin_follows_the_weights() -> None:
    with backends("A", "B", "C") as ups:
        weighted = f"{ups[0].address}=2,{ups[1].address},{ups[2].address}"
        with reverse_proxy(weighted, BALANCE="weighted-round-robin") as (port, _):
            answers = curl(port, 8)
    assert collections.Counter(answers) == {"A": 4, "B": 2, "C": 2}


@contextmanager
def slow_requests(port: int, busy: list[Backend]) -> Iterator[list[subprocess.Popen[str]]]:
    """One ``/slow`` request in flight on each of ``busy`` (started one after the
    other, each held by its backend), released when the block ends."""
    with ExitStack() as stack:
        clients = []
        for b in busy:
            argv = ["curl", "--silent", "--max-time", "30", f"http://127.0.0.1:{port}/slow"]
            client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            stack.callback(client.wait)
            clients.append(client)
            assert b.waiting.acquire(timeout=20), f"/slow did not reach {b.name}"
        stack.callback(lambda: [b.release() for b in busy])
        yield clients


def test_least_connections_avoids_busy_backends() -> None:
    with backends("A", "B", "C") as ups, reverse_proxy(ups, BALANCE="least-conn") as (port, _):
        a, b, c = ups
        # Ties go round-robin: the first slow request lands on A, the second on B.
        with slow_requests(port, [a, b]) as held:
            quick = []
            for _ in range(4):
                quick += curl(port)
                wait_closed(c)
    assert quick == ["C"] * 4
    assert [client.communicate()[0] for client in held] == ["A\n", "B\n"]


def test_power_of_two_choices_prefers_the_idle_backend() -> None:
    with backends("A", "B") as ups, reverse_proxy(ups, BALANCE="p2c") as (port, _):
        holder = subprocess.Popen(
            ["curl", "--silent", "--max-time", "30", f"http://127.0.0.1:{port}/slow"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while not any(b.hits["/slow"] for b in ups) and time.monotonic() < deadline:
                time.sleep(0.02)
            [busy] = [b for b in ups if b.hits["/slow"]]
            [idle] = [b for b in ups if b is not busy]
            # With two backends p2c compares both: the busy one never wins.
            quick = []
            for _ in range(4):
                quick += curl(port)
                wait_closed(idle)
        finally:
            for b in ups:
                b.release()
            holder.wait()
    assert quick == [idle.name] * 4


def test_hash_sends_each_client_address_to_its_backend() -> None:
    with backends("A", "B", "C") as ups, reverse_proxy(ups, BALANCE="hash") as (port, _):
        by_name = {b.address: b.name for b in ups}
        ring = ConsistentHash([b.address for b in ups])
        for last in range(1, 9):
            source = f"127.0.0.{last}"
            answers = curl(port, 3, "/", "--interface", source)
            expected = by_name[ring.select(Context(remote=(source, 0)))]
            assert answers == [expected] * 3, source


def test_sticky_cookie_keeps_a_client_on_its_backend(tmp_path: Path) -> None:
    jar = str(tmp_path / "cookies")
    with (
        backends("A", "B", "C") as ups,
        reverse_proxy(ups, STICKY_COOKIE="srv") as (port, _),
    ):
        headers = subprocess.run(
            [
                "curl",
                "--silent",
                "--dump-header",
                "-",
                "--output",
                "/dev/null",
                "--cookie-jar",
                jar,
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sticky = []
        for _ in range(5):
            sticky += curl(port, 1, "/", "--cookie", jar, "--cookie-jar", jar)
        others = curl(port, 6)  # no cookie: round-robin
    assert re.search(r"(?im)^set-cookie: srv=[0-9a-f]{12}; Path=/; HttpOnly\r?$", headers)
    assert len(set(sticky)) == 1
    assert set(others) == {"A", "B", "C"}


# Failures and health -----------------------------------------------------------------------


def test_failover_while_a_backend_is_down_and_its_return() -> None:
    with backends("A", "B", "C") as ups:
        b = ups[1]
        env = {"HEALTH_INTERVAL": "0.1", "HEALTH_FALL": "3", "HEALTH_RISE": "2"}
        with reverse_proxy(ups, **env) as (port, proc):
            assert sorted(curl(port, 3)) == ["A", "B", "C"]
            b.stop()
            during = curl(port, 6)
            down = wait_for_line(proc, rf"backend {b.address} DOWN")
            after_down = curl(port, 6)
            b.start()
            up = wait_for_line(proc, rf"backend {b.address} UP \(2 good checks\)")
            back = curl(port, 6)
            log = proc.stderr
    assert set(during) <= {"A", "C"} and len(during) == 6  # every request answered
    assert collections.Counter(after_down) == {"A": 3, "C": 3}
    assert collections.Counter(back) == {"A": 2, "B": 2, "C": 2}
    assert len(down) == 1 and len(up) == 1
    assert "trioxy.health" in down[0]
    assert log.count(f"backend {b.address} DOWN") == 1


def test_active_checks_take_a_failing_backend_out_and_back() -> None:
    with backends("A", "B", "C") as ups:
        b = ups[1]
        env = {"HEALTH_INTERVAL": "0.1", "HEALTH_PATH": "/health"}
        with reverse_proxy(ups, **env) as (port, proc):
            assert sorted(curl(port, 3)) == ["A", "B", "C"]  # (the checks started with the server)
            b.health = 503
            wait_for_line(proc, rf"backend {b.address} DOWN \(3 failed checks: HTTP 503\)")
            while_down = curl(port, 6)
            b.health = 200
            wait_for_line(proc, rf"backend {b.address} UP \(2 good checks\)")
            back = curl(port, 6)
            log = proc.stderr
    assert collections.Counter(while_down) == {"A": 3, "C": 3}
    assert collections.Counter(back) == {"A": 2, "B": 2, "C": 2}
    assert b.hits["/health"] >= 5  # 3 failed + 2 good at least
    assert log.count("DOWN") == 1 and log.count(" UP ") == 1


def test_passive_health_takes_a_dead_backend_out() -> None:
    with backends("A", "B") as ups:
        b = ups[1]
        env = {"MAX_FAILS": "2", "FAIL_TIMEOUT": "60"}
        with reverse_proxy(ups, **env) as (port, proc):
            b.stop()
            answers = curl(port, 8)
            [line] = wait_for_line(proc, rf"backend {b.address} DOWN")
    assert answers == ["A"] * 8
    assert "2 failures in a row: connection refused); trying again in 60s" in line


def test_no_backend_answers_502() -> None:
    dead = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with reverse_proxy(dead) as (port, proc):
        assert curl(port, 2) == ["HTTP 502", "HTTP 502"]
        wait_for_line(proc, "no upstream answered")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BALANCE": "fastest"}, "BALANCE='fastest': expected one of"),
        ({"UPSTREAMS": "127.0.0.1:80=x"}, "bad weight"),
        ({"UPSTREAMS": "8081"}, "needs a host"),
        ({"HEALTH_PATH": "health"}, "HEALTH_PATH='health'"),
        ({"STICKY_COOKIE": "a=b"}, "STICKY_COOKIE='a=b'"),
        ({"HEALTH_INTERVAL": "0"}, "HEALTH_INTERVAL='0'"),
    ],
)
def test_bad_settings_stop_at_load(env: dict[str, str], message: str) -> None:
    settings = {"LISTEN": f"127.0.0.1:{free_port()}", **env}
    with run_trioxy(SCRIPT, env=settings) as proc:
        status = proc.wait(30)
    assert status == 2
    assert "reverse_proxy.py:" in proc.stderr and message in proc.stderr
