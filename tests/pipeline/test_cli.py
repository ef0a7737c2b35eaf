"""The ``trioxy`` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import TRIOXY, free_port, run_trioxy

ECHO = """
import os
from pipeline import Proxy
proxy = Proxy()
proxy.listen(os.environ["LISTEN"])
"""


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


def test_check_does_not_print_inline_secrets(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "from pipeline import Proxy\n"
        "p = Proxy()\n"
        "p.listen('127.0.0.1:9000').accept_socks(users={'alice': 's3cret-a'}).to('out')\n"
        "p.pipeline('out').connect_socks('10.0.0.1:80', 'bob', 's3cret-b').to('up')\n"
        "p.pipeline('up').connect('127.0.0.1:1080')\n"
    )
    result = cli("check", str(script))
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "accept_socks(***)" in result.stdout
    assert "connect_socks('10.0.0.1:80', 'bob', ***" in result.stdout


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
    with run_trioxy(script, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(10) == b"ping"
            proc.proc.send_signal(signum)  # a stream is open: it may finish
            time.sleep(0.2)
            conn.sendall(b"pong")
            assert conn.recv(10) == b"pong"
        assert proc.wait() == 0
        err = proc.stderr
    assert f"listening on 127.0.0.1:{port}" in err
    assert "shutting down" in err and "stopped" in err


def test_workers_share_the_port(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    port = free_port()
    with run_trioxy(script, env={"LISTEN": f"127.0.0.1:{port}"}, args=["--workers", "2"]) as proc:
        proc.wait_listening(port)
        for i in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"%d" % i)
                assert conn.recv(10) == b"%d" % i
        assert proc.stop(signal.SIGTERM) == 0
        err = proc.stderr
    assert "started 2 workers" in err
    assert err.count(f"listening on 127.0.0.1:{port}") == 2


def test_tune_gc_freezes_what_loading_made() -> None:
    import gc

    from pipeline.cli import tune_gc

    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
