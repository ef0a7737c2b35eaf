"""scripts/static_site.py end to end: ``trioxy run`` as a subprocess, real curl.

Every expected body is the file on disk (or a slice of it); gzip is undone by curl
itself (``--compressed``).
"""

from __future__ import annotations

import gzip
import http.client
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.plugins import filter_registry
from tests.helpers import ROOT, Process, free_port, run_trioxy

SCRIPT = ROOT / "scripts" / "static_site.py"
DEMO_SITE = ROOT / "examples" / "www"

pytestmark = [
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]
needs_demux_http = pytest.mark.skipif(
    "demux_http" not in filter_registry(),
    reason="the demux_http filter (filters/http_demux.py) is not registered yet",
)


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names, the last value of each
    body: bytes


def curl(url: str, *options: str, tmp: Path) -> Response:
    """One request made by curl; its status, headers and body (as curl delivers
    it: decompressed with ``--compressed``)."""
    head_file, body_file = tmp / "curl-head", tmp / "curl-body"
    body_file.write_bytes(b"")
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--dump-header",
            str(head_file),
            "--output",
            str(body_file),
            "--write-out",
            "%{http_code}",
            *options,
            url,
        ],
        capture_output=True,
        check=True,
    )
    headers: dict[str, str] = {}
    for line in head_file.read_text("latin-1").splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Response(int(result.stdout), headers, body_file.read_bytes())


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>test site</h1>\n")
    (www / "lines.txt").write_text("".join(f"line {i:05d}\n" for i in range(20000)))
    shutil.copy(DEMO_SITE / "logo.png", www / "logo.png")
    (www / "docs").mkdir()
    (www / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (www / "leak.txt").symlink_to(tmp_path / "secret.txt")
    return www


@pytest.fixture
def server(site: Path) -> Iterator[tuple[str, Process]]:
    port = free_port()
    env = {"LISTEN": f"127.0.0.1:{port}", "ROOT": str(site)}
    with run_trioxy(SCRIPT, env=env) as proc:
        proc.wait_listening(port)
        yield f"http://127.0.0.1:{port}", proc
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@needs_demux_http
def test_files_types_and_revalidation(
    server: tuple[str, Process], site: Path, tmp_path: Path
) -> None:
    base, _ = server
    for name, ctype in [
        ("index.html", "text/html; charset=utf-8"),
        ("lines.txt", "text/plain; charset=utf-8"),
        ("logo.png", "image/png"),
    ]:
        got = curl(f"{base}/{name}", tmp=tmp_path)
        assert got.status == 200
        assert got.body == (site / name).read_bytes()
        assert got.headers["content-type"] == ctype and "date" in got.headers
        assert got.headers["content-length"] == str((site / name).stat().st_size)
        etag = got.headers["etag"]
        again = curl(f"{base}/{name}", "-H", f"If-None-Match: {etag}", tmp=tmp_path)
        assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)
        since = got.headers["last-modified"]
        again = curl(f"{base}/{name}", "-H", f"If-Modified-Since: {since}", tmp=tmp_path)
        assert (again.status, again.body) == (304, b"")
    got = curl(f"{base}/", tmp=tmp_path)
    assert (got.status, got.body) == (200, b"<h1>test site</h1>\n")
    got = curl(f"{base}/docs?x=1", tmp=tmp_path)
    assert (got.status, got.headers["location"]) == (301, "/docs/?x=1")
    got = curl(f"{base}/docs/", tmp=tmp_path)
    assert (got.status, got.body) == (200, b"<h1>docs</h1>\n")
    got = curl(f"{base}/missing.txt", tmp=tmp_path)
    assert got.status == 404
    got = curl(f"{base}/lines.txt", "-X", "POST", "-d", "x=1", tmp=tmp_path)
    assert (got.status, got.headers["allow"]) == (405, "GET, HEAD")


@needs_demux_http
def test_ranges_head_and_gzip(server: tuple[str, Process], site: Path, tmp_path: Path) -> None:
    base, _ = server
    data = (site / "lines.txt").read_bytes()
    size = len(data)
    for spec, (start, end) in {
        "0-99": (0, 100),
        "1000-": (1000, size),
        "-500": (size - 500, size),
    }.items():
        got = curl(f"{base}/lines.txt", "-r", spec, tmp=tmp_path)
        assert got.status == 206, spec
        assert got.body == data[start:end]
        assert got.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    got = curl(f"{base}/lines.txt", "-r", f"{size}-", tmp=tmp_path)
    assert (got.status, got.headers["content-range"]) == (416, f"bytes */{size}")

    got = curl(f"{base}/lines.txt", "-I", tmp=tmp_path)
    # curl -I writes the head where the body would go: nothing may follow it.
    assert got.status == 200 and got.body.startswith(b"HTTP/1.1 200 OK\r\n")
    assert got.body.index(b"\r\n\r\n") == len(got.body) - 4
    assert got.headers["content-length"] == str(size)

    got = curl(f"{base}/lines.txt", "--compressed", tmp=tmp_path)
    assert got.status == 200 and got.body == data  # curl decompressed it
    assert got.headers["content-encoding"] == "gzip"
    assert int(got.headers["content-length"]) < size // 3
    assert got.headers["vary"] == "Accept-Encoding"
    # A file changed on disk is served at once, compressed afresh.
    (site / "lines.txt").write_text("new content\n" * 1000)
    got = curl(f"{base}/lines.txt", "--compressed", tmp=tmp_path)
    assert got.body == b"new content\n" * 1000


@needs_demux_http
def test_one_keep_alive_connection_serves_every_kind_of_answer(
    server: tuple[str, Process], site: Path
) -> None:
    """http.client on one connection: a wrongly framed answer (a body after a 304
    or a HEAD, a wrong Content-Length) would garble the answers after it."""
    base, _ = server
    data = (site / "lines.txt").read_bytes()
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=20)
    try:
        conn.request("GET", "/lines.txt")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, data)
        etag = first.getheader("ETag")
        sock = conn.sock
        for method, path, headers, status, body in [
            ("GET", "/lines.txt", {"If-None-Match": etag}, 304, b""),
            ("HEAD", "/lines.txt", {}, 200, b""),
            ("GET", "/lines.txt", {"Range": "bytes=10-19"}, 206, data[10:20]),
            ("GET", "/lines.txt", {"Range": "bytes=-0"}, 416, b"416 Range Not Satisfiable\n"),
            ("GET", "/docs", {}, 301, b"301 Moved Permanently\n"),
            ("GET", "/missing", {}, 404, b"404 Not Found\n"),
            ("DELETE", "/lines.txt", {}, 405, b"405 Method Not Allowed\n"),
            ("GET", "/lines.txt", {"Accept-Encoding": "gzip"}, 200, None),
            ("GET", "/", {}, 200, b"<h1>test site</h1>\n"),
        ]:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            got = response.read()
            assert response.status == status, (method, path, headers)
            if body is None:
                assert gzip.decompress(got) == data
            else:
                assert got == body, (method, path, headers)
        assert conn.sock is sock  # still the first connection
    finally:
        conn.close()


@needs_demux_http
def test_concurrent_downloads_of_a_streamed_file(
    server: tuple[str, Process], site: Path, tmp_path: Path
) -> None:
    """A file over max_entry_size (1 MiB) is read from disk a chunk at a time, in
    worker threads; six clients at once each get every byte, ranges included."""
    base, _ = server
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    (site / "large.bin").write_bytes(data)
    ranges = [None, None, None, "1000000-2999999", "-12345", "0-"]
    clients = []
    for i, spec in enumerate(ranges):
        argv = ["curl", "--silent", "--show-error", "--max-time", "60", "--output"]
        argv += [str(tmp_path / f"out{i}"), f"{base}/large.bin"]
        clients.append(subprocess.Popen([*argv, *(["-r", spec] if spec else [])]))
    try:
        assert [c.wait(timeout=90) for c in clients] == [0] * len(clients)
    finally:
        for c in clients:
            c.kill()
            c.wait()
    expected = [data, data, data, data[1000000:3000000], data[-12345:], data]
    for i, want in enumerate(expected):
        assert (tmp_path / f"out{i}").read_bytes() == want, ranges[i]


@needs_demux_http
def test_traversal_attempts_leak_nothing(server: tuple[str, Process], tmp_path: Path) -> None:
    base, _ = server
    for path in (
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%252e%252e/secret.txt",
        "/secret.txt%00.html",
        "//secret.txt",
        "/leak.txt",
    ):
        got = curl(base + path, "--path-as-is", tmp=tmp_path)
        assert got.status in (400, 403, 404), path
        assert b"SECRET" not in got.body, path


@needs_demux_http
def test_the_default_root_is_the_demo_site(tmp_path: Path) -> None:
    port = free_port()
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        for name in ("", "style.css", "app.js", "logo.png", "lines.txt", "docs/"):
            got = curl(f"http://127.0.0.1:{port}/{name}", tmp=tmp_path)
            expected = DEMO_SITE / (name + "index.html" if name.endswith("/") or not name else name)
            assert (got.status, got.body) == (200, expected.read_bytes()), name
    assert f"serving {DEMO_SITE} on http://127.0.0.1:{port}/" in proc.stderr


def script_line(text: str) -> int:
    """The line of the script that holds ``text``."""
    for number, line in enumerate(SCRIPT.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} is not in {SCRIPT}")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROOT": "/nonexistent/www"}, "ROOT='/nonexistent/www': no such directory"),
        ({"ROOT": str(SCRIPT)}, f"ROOT={str(SCRIPT)!r}: not a directory"),
        ({"LISTEN": "nowhere"}, "LISTEN='nowhere': bad address 'nowhere': expected 'host:port'"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(env: dict[str, str], message: str) -> None:
    name = next(iter(env))
    line = script_line(f'{name} = setting("{name}"')
    with run_trioxy(SCRIPT, env=env) as proc:
        assert proc.wait() == 2
        lines = proc.stderr.strip().splitlines()
    assert lines == [f"trioxy: {SCRIPT}:{line}: {message}"]
