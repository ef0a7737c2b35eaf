"""The ``trioxy`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TRIOXY = str(Path(sys.executable).with_name("trioxy"))

ECHO = """
import os
from pipeline import Proxy
proxy = Proxy()
proxy.listen(os.environ["LISTEN"])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trioxy exited early: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@contextmanager
def trioxy(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [TRIOXY, *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRIOXY, *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_lists_every_command_and_option() -> None:
    top = cli("--help")
    assert top.returncode == 0
    for word in ("run", "check", "--version", "exit status"):
        assert word in top.stdout
    run = cli("run", "--help")
    for word in ("SCRIPT", "--workers", "--grace-period", "--log-level", "TRIOXY_LOG_LEVEL"):
        assert word in run.stdout
    assert "SCRIPT" in cli("check", "--help").stdout
    assert cli("--version").stdout.startswith("trioxy ")


def test_check_prints_the_graph(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "from pipeline import Proxy\n"
        "p = Proxy()\n"
        "p.listen('127.0.0.1:9000', max_connections=10).handle_data(print).to('tail')\n"
        "p.pipeline('tail').link('tail')\n"
    )
    result = cli("check", str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "listen 127.0.0.1:9000  (max_connections=10, idle_timeout=300s)",
        "├── handle_data(print)",
        "└── link('tail')",
        "    └── -> pipeline 'tail'",
        "",
        "pipeline 'tail'",
        "└── link('tail')",
        "    └── -> pipeline 'tail'",
    ]


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_script_error_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    script = tmp_path / "bad.py"
    script.write_text("from pipeline import Proxy\nProxy().listen(80).handle_dat(print)\n")
    result = cli(command, str(script))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"trioxy: {script}:2: unknown filter 'handle_dat' (did you mean 'handle_data'?)"
    ]
    assert "Traceback" not in result.stderr


def test_missing_script_file() -> None:
    result = cli("run", "/nonexistent/script.py")
    assert result.returncode == 2
    assert result.stderr.strip() == "trioxy: /nonexistent/script.py: no such script file"


def test_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("run", str(script), env={"LISTEN": f"127.0.0.1:{port}"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"trioxy: {script}:5: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_serves_and_stops_gracefully_on_a_signal(tmp_path: Path, signum: int) -> None:
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    port = free_port()
    with trioxy("run", str(script), env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        wait_port(port, proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            proc.send_signal(signum)  # a stream is open: it may finish
            time.sleep(0.2)
            conn.sendall(b"pong")
            assert conn.recv(10) == b"pong"
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read() if proc.stderr else ""
    assert f"listening on 127.0.0.1:{port}" in err
    assert "shutting down" in err and "stopped" in err


def test_workers_share_the_port(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    port = free_port()
    with trioxy(
        "run", "--workers", "2", str(script), env={"LISTEN": f"127.0.0.1:{port}"}
    ) as proc:
        wait_port(port, proc)
        for i in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"%d" % i)
                assert conn.recv(10) == b"%d" % i
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read() if proc.stderr else ""
    assert "started 2 workers" in err
    assert err.count(f"listening on 127.0.0.1:{port}") == 2
