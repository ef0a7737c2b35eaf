"""scripts/demo.py (what `make run` starts), end to end over loopback."""

from __future__ import annotations

import socket

from tests.helpers import free_port, run_trioxy


def test_the_demo_echoes_through_the_proxy() -> None:
    listen, echo = free_port(), free_port()
    env = {"LISTEN": f"127.0.0.1:{listen}", "ECHO_LISTEN": f"127.0.0.1:{echo}"}
    with run_trioxy("scripts/demo.py", env=env) as proc:
        proc.wait_listening(listen)
        proc.wait_listening(echo)
        with socket.create_connection(("127.0.0.1", listen), timeout=10) as conn:
            conn.sendall(b"hello, trioxy\n" * 1000)
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
        assert received == b"hello, trioxy\n" * 1000
        assert proc.stop() == 0
        err = proc.stderr
    assert f"TCP proxy on 127.0.0.1:{listen} -> echo service on 127.0.0.1:{echo}" in err
    assert "try:" in err


def test_a_bad_setting_is_one_line() -> None:
    with run_trioxy("scripts/demo.py", env={"LISTEN": "nowhere"}) as proc:
        assert proc.wait() == 2
        lines = proc.stderr.strip().splitlines()
    assert lines[-1].endswith(
        "demo.py:30: LISTEN='nowhere': bad address 'nowhere': expected 'host:port'"
    )
