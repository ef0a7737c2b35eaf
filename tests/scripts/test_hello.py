"""scripts/hello.py end to end: ``trioxy run`` as a subprocess, real curl and the
standard library's http.client over loopback."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import subprocess

import pytest

from tests.helpers import ROOT, free_port, run_trioxy

SCRIPT = ROOT / "scripts" / "hello.py"
BODY = b"Hello, world\n"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def header_fields(head: str) -> dict[str, str]:
    """The fields of a response head as curl printed it, names lower-cased."""
    lines = head.split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}


def curl(*args: str) -> str:
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "20", *args],
        capture_output=True,
        check=True,
    )
    return result.stdout.decode()


@needs_curl
def test_curl_gets_hello_on_any_path_over_one_kept_alive_connection() -> None:
    port = free_port()
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        # Three transfers in one curl run: it reuses the connection when the
        # server keeps it alive (num_connects is 0 for a reused one).
        out = curl(
            "--include",
            "--write-out",
            "\n[%{http_code} %{num_connects} %{size_download}]\n",
            f"{base}/",
            f"{base}/any/path?x=1",
            "--data-binary",
            "ignored body",
            f"{base}/post",
        )
        assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    stats = re.findall(r"\[(\d+) (\d+) (\d+)\]", out)
    assert stats == [("200", "1", "13"), ("200", "0", "13"), ("200", "0", "13")], out
    responses = out.split("HTTP/1.1 ")[1:]
    assert len(responses) == 3
    for response in responses:
        head, _, rest = response.partition("\r\n\r\n")
        assert head.startswith("200 OK\r\n")
        fields = header_fields(head)
        assert fields["content-length"] == "13"
        assert fields["content-type"] == "text/plain; charset=utf-8"
        assert rest.startswith(BODY.decode())


@needs_curl
def test_head_gets_the_length_and_no_body() -> None:
    port = free_port()
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        out = curl("--head", "--write-out", "[%{size_download}]", f"http://127.0.0.1:{port}/x")
    assert out.startswith("HTTP/1.1 200 OK\r\n")
    head, _, rest = out.partition("\r\n\r\n")
    assert header_fields(head)["content-length"] == "13"
    assert rest == "[0]"  # no body byte was received


def test_http_client_keep_alive_and_a_bad_request_does_not_stop_the_server() -> None:
    port = free_port()
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            for path in ("/a", "/b/c", "/"):
                conn.request("GET", path)
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, BODY)
                assert response.getheader("Content-Length") == "13"
                assert not response.will_close
            first_socket = conn.sock
            conn.request("GET", "/again")
            assert conn.getresponse().read() == BODY
            assert conn.sock is first_socket  # still the same connection
        finally:
            conn.close()
        # Garbage gets a 400 and a closed connection...
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 400 ")
        # ...and the server goes on serving.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", "/after")
            assert conn.getresponse().read() == BODY
        finally:
            conn.close()
        assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_listen_is_one_line_and_exit_2() -> None:
    with run_trioxy(SCRIPT, env={"LISTEN": "nowhere"}) as proc:
        assert proc.wait() == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(r"hello\.py:\d+: LISTEN='nowhere': ", lines[0]), lines[0]
