"""scripts/gateway.py (what ``make run`` starts) end to end: ``trioxy run`` as a
subprocess on free ports, real curl.

Expected bodies of static files are the files of examples/www; the API answers
come from the script's own demo backends, which name themselves.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.plugins import filter_registry
from tests.helpers import ROOT, TRIOXY, Process, free_port, run_trioxy

SCRIPT = ROOT / "scripts" / "gateway.py"
SITE = ROOT / "examples" / "www"
CURL = ["curl", "--silent", "--show-error", "--max-time", "20"]

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
    pytest.mark.skipif(
        not {"demux_http", "mux_http", "serve_static", "serve_http", "route"}
        <= set(filter_registry()),
        reason="the HTTP filters are not all registered in pipeline.plugins yet",
    ),
]


@dataclass
class Gateway:
    proc: Process
    listen: int
    backends: list[int]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listen}"


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def curl(url: str, tmp: Path) -> Answer:
    body = tmp / "curl-body"
    result = subprocess.run(
        [*CURL, "--output", str(body), "--write-out", "%{http_code}\t%{content_type}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    status, _, content_type = result.stdout.partition("\t")
    return Answer(int(status), content_type, body.read_bytes())


def stop(proc: Process) -> int:
    """Stop the gateway with one SIGINT; its exit status. The gateway's pooled
    keep-alive connections to its own backends are open streams of the same
    process, but idle HTTP connections close at once on shutdown: they do not
    hold it for the grace period (30 s; the wait below is a hang guard)."""
    proc.proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=10)


@contextmanager
def start(**env: str) -> Iterator[Gateway]:
    """Run the gateway on free ports (``env`` added) until the block ends."""
    listen, backends = free_port(), [free_port(), free_port()]
    env = {
        "LISTEN": f"127.0.0.1:{listen}",
        "BACKENDS": ",".join(f"127.0.0.1:{port}" for port in backends),
        **env,
    }
    with run_trioxy(SCRIPT, env=env) as proc:
        for port in (listen, *backends):
            proc.wait_listening(port)
        yield Gateway(proc, listen, backends)
        assert stop(proc) == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with start() as running:
        yield running


def test_the_printed_urls_answer_site_api_and_404(gateway: Gateway, tmp_path: Path) -> None:
    urls = re.findall(r"try (http://\S+)", gateway.proc.stderr)
    base = gateway.base
    assert urls == [f"{base}/", f"{base}/api/hello", f"{base}/missing.html"]
    index, api, missing = (curl(url, tmp_path) for url in urls)

    assert (index.status, index.content_type) == (200, "text/html; charset=utf-8")
    assert index.body == (SITE / "index.html").read_bytes()

    assert (api.status, api.content_type) == (200, "application/json")
    assert json.loads(api.body)["path"] == "/api/hello"

    assert missing.status == 404


def test_a_static_asset(gateway: Gateway, tmp_path: Path) -> None:
    for name, content_type in [("style.css", "text/css"), ("logo.png", "image/png")]:
        got = curl(f"{gateway.base}/{name}", tmp_path)
        assert (got.status, got.body) == (200, (SITE / name).read_bytes())
        assert got.content_type.startswith(content_type)
    got = curl(f"{gateway.base}/docs/", tmp_path)
    assert (got.status, got.body) == (200, (SITE / "docs" / "index.html").read_bytes())


def test_the_api_alternates_between_the_two_backends(gateway: Gateway, tmp_path: Path) -> None:
    answers = [json.loads(curl(f"{gateway.base}/api/hello", tmp_path).body) for _ in range(4)]
    names = [answer["backend"] for answer in answers]
    assert set(names) == {"api-1", "api-2"}
    assert names[0] != names[1] and names[:2] == names[2:]  # round-robin
    assert {answer["path"] for answer in answers} == {"/api/hello"}
    assert all(answer["method"] == "GET" and answer["time"] for answer in answers)


def test_requests_of_one_client_connection_are_balanced_one_by_one(
    gateway: Gateway,
) -> None:
    # One curl, three URLs: one kept-alive connection (curl's num_connects is 0
    # for a reused one), a backend picked per request.
    urls = [f"{gateway.base}/api/{n}" for n in ("a", "b", "c")]
    result = subprocess.run(
        [*CURL, "--write-out", "\t%{num_connects}\n", *urls],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [connects for _, connects in lines] == ["1", "0", "0"]
    answers = [json.loads(body) for body, _ in lines]
    assert [answer["path"] for answer in answers] == ["/api/a", "/api/b", "/api/c"]
    names = [answer["backend"] for answer in answers]
    assert names[0] != names[1] and names[0] == names[2]


def test_the_backends_answer_health_checks_and_404_outside_the_api(
    gateway: Gateway, tmp_path: Path
) -> None:
    for number, port in enumerate(gateway.backends, 1):
        got = curl(f"http://127.0.0.1:{port}/health", tmp_path)
        assert got.status == 200
        assert json.loads(got.body) == {"backend": f"api-{number}", "healthy": True}
        got = curl(f"http://127.0.0.1:{port}/elsewhere", tmp_path)
        assert got.status == 404 and json.loads(got.body)["backend"] == f"api-{number}"


def test_failing_health_checks_mark_both_backends_down(tmp_path: Path) -> None:
    # The backends have no /nowhere: every check fails with a 404.
    with start(HEALTH_PATH="/nowhere", HEALTH_INTERVAL="0.05") as gateway:
        first = curl(f"{gateway.base}/api/x", tmp_path)  # starts the checks
        assert first.status == 200
        expected = [f"backend 127.0.0.1:{port} DOWN" for port in gateway.backends]
        deadline = time.monotonic() + 15
        while not all(line in gateway.proc.stderr for line in expected):
            assert time.monotonic() < deadline, gateway.proc.stderr
            time.sleep(0.05)
        assert "HTTP 404" in gateway.proc.stderr
        # With every backend down, requests still go to one of them.
        again = curl(f"{gateway.base}/api/y", tmp_path)
        assert again.status == 200 and json.loads(again.body)["path"] == "/api/y"


def test_trioxy_check_prints_the_graph_and_no_urls() -> None:
    result = subprocess.run(
        [TRIOXY, "check", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "serve_static" in result.stdout and "mux_http" in result.stdout
    assert "http://" not in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_starts_the_gateway() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "--dry-run", "run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == ".venv/bin/trioxy run scripts/gateway.py"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("BACKENDS", "nowhere", "bad address 'nowhere': expected 'host:port'"),
        ("ROOT", "/no/such/dir", "no such directory"),
        ("HEALTH_PATH", "health", "expected a path starting with '/'"),
        ("HEALTH_INTERVAL", "0", "expected a positive number of seconds"),
    ],
)
def test_a_bad_setting_is_one_line(name: str, value: str, reason: str) -> None:
    line = next(
        number
        for number, text in enumerate(SCRIPT.read_text().splitlines(), 1)
        if text.startswith(f'{name} = setting("{name}"')
    )
    with run_trioxy(SCRIPT, env={name: value}) as proc:
        assert proc.wait() == 2
        last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith(f"gateway.py:{line}: {name}={value!r}: {reason}")
