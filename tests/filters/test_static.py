"""serve_static: files, types, validators, conditional and range requests, gzip,
the cache and its invalidation, and every path-traversal vector we know of.

In memory: each request is ``MessageStart(RequestHead), MessageEnd`` fed to a
pipeline whose only filter is ``serve_static``; the response is read back from its
output. Expected bytes come from the files themselves (slices, ``gzip.decompress``),
dates from :mod:`email.utils`.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import importlib
import os
import pwd
import re
import stat
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from filters._static_cache import FileCache, FileChanged, read_whole, validator
from filters._static_http import UNSATISFIABLE, etag_matches, http_date, parse_etags, parse_range
from filters.static import StaticFileError
from pipeline import ConfigError, Data, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, RequestHead, ResponseHead
from tests.helpers import here

MiB = 1 << 20
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(2000))
BINARY = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A site below ``tmp_path/www``, and a secret file beside it (outside)."""
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    (tmp_path / "www2").mkdir()
    (tmp_path / "www2" / "sibling.txt").write_text("TOP SECRET sibling\n")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>home</h1>\n")
    (www / "hello.txt").write_text("hello\n")
    (www / "style.css").write_text("body { color: black }\n" * 50)
    (www / "app.js").write_text("console.log('hi');\n" * 50)
    (www / "data.bin").write_bytes(BINARY)
    (www / "big.txt").write_text(TEXT)
    (www / "empty.txt").write_bytes(b"")
    (www / "docs").mkdir()
    (www / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (www / "docs" / "page.html").write_text("<p>page</p>\n")
    (www / "nodex").mkdir()
    (www / "nodex" / "a.txt").write_text("a\n")
    (www / ".env").write_text("TOP SECRET=1\n")
    return www


def site(root: Path, **options: object) -> Layout:
    proxy = Proxy()
    proxy.pipeline("site").serve_static(root, **options)
    return proxy.layout("site")


async def ask(
    layout: Layout, target: str = "/", *headers: tuple[str, str], method: str = "GET"
) -> tuple[ResponseHead, bytes]:
    """One request; the response head and body (checked to be one whole message)."""
    request = RequestHead(method, target, Headers(list(headers)))
    out = await run_layout(layout, [MessageStart(request), MessageEnd()])
    assert type(out[0]) is MessageStart and type(out[-1]) is MessageEnd, out
    assert all(type(e) is Data for e in out[1:-1]), out
    head = out[0].head
    assert isinstance(head, ResponseHead)
    return without_date(head), join_data(out)


def without_date(head: ResponseHead) -> ResponseHead:
    """``head`` without its ``Date``, which must be now (give or take the test's
    own duration), so that two answers can be compared whole."""
    date = email.utils.parsedate_to_datetime(head.headers["Date"]).timestamp()
    assert abs(date - time.time()) < 60
    headers = head.headers.copy()
    headers.remove("Date")
    return head.replace(headers=headers)


def cache_of(layout: Layout) -> FileCache:
    cache: FileCache = layout.specs[0].state.cache
    return cache


def last_modified(path: Path) -> str:
    return email.utils.formatdate(path.stat().st_mtime_ns // 10**9, usegmt=True)


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.static").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found
    exec(compile(textwrap.dedent(found.group(1)), "filters/static.py example", "exec"), {})


# Files and types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("hello.txt", "text/plain; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "application/javascript; charset=utf-8"),
        ("data.bin", "application/octet-stream"),
    ],
)
async def test_a_file_is_served_with_its_type_and_validators(
    root: Path, name: str, ctype: str
) -> None:
    head, body = await ask(site(root), "/" + name)
    path = root / name
    st = path.stat()
    assert head.status == 200 and head.reason == "OK"
    assert body == path.read_bytes()
    assert head.headers["Content-Type"] == ctype
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["ETag"] == f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    assert head.headers["Last-Modified"] == last_modified(path)
    assert head.headers["Accept-Ranges"] == "bytes"
    assert "Content-Encoding" not in head.headers


async def test_more_types(root: Path) -> None:
    for name, ctype in [
        ("logo.png", "image/png"),
        ("pic.svg", "image/svg+xml; charset=utf-8"),
        ("font.woff2", "font/woff2"),
        ("x.json", "application/json; charset=utf-8"),
        ("archive.tar.gz", "application/gzip"),
        ("notes.custom", "text/x-custom; charset=utf-8"),
    ]:
        (root / name).write_bytes(b"0123456789")
        head, _ = await ask(site(root, types={".custom": "text/x-custom"}), "/" + name)
        assert head.headers["Content-Type"] == ctype, name
        assert "Content-Encoding" not in head.headers


async def test_an_empty_file(root: Path) -> None:
    head, body = await ask(site(root), "/empty.txt")
    assert (head.status, body, head.headers["Content-Length"]) == (200, b"", "0")


async def test_cache_control_is_added_to_file_responses(root: Path) -> None:
    head, _ = await ask(site(root, cache_control="max-age=3600"), "/hello.txt")
    assert head.headers["Cache-Control"] == "max-age=3600"
    head, _ = await ask(site(root), "/hello.txt")
    assert "Cache-Control" not in head.headers


async def test_head_has_the_get_headers_and_no_body(root: Path) -> None:
    layout = site(root, max_entry_size=1024)
    for target in ("/hello.txt", "/big.txt", "/data.bin", "/missing", "/docs"):
        get, get_body = await ask(layout, target)
        head, body = await ask(layout, target, method="HEAD")
        assert body == b""
        assert head.status == get.status
        assert head.headers == get.headers
        assert head.headers["Content-Length"] == str(len(get_body))
    gz = ("Accept-Encoding", "gzip")
    get, get_body = await ask(layout, "/app.js", gz)
    head, body = await ask(layout, "/app.js", gz, method="HEAD")
    assert (body, head.headers) == (b"", get.headers)
    assert head.headers["Content-Encoding"] == "gzip"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
async def test_other_methods_are_405_with_allow(root: Path, method: str) -> None:
    head, body = await ask(site(root), "/hello.txt", method=method)
    assert (head.status, head.headers["Allow"]) == (405, "GET, HEAD")
    assert body == b"405 Method Not Allowed\n"
    assert head.headers["Content-Length"] == str(len(body))


async def test_a_request_body_is_ignored_and_the_answer_waits_for_the_end(root: Path) -> None:
    layout = site(root)
    async with open_pipeline(layout) as h:
        await h.send(MessageStart(RequestHead("GET", "/hello.txt")), Data(b"stray body"))
        assert h.output == []
        await h.send(MessageEnd())
        assert h.output[0].head.status == 200 and h.data == b"hello\n"


async def test_several_requests_in_one_stream_then_its_end(root: Path) -> None:
    events = [
        MessageStart(RequestHead("GET", "/hello.txt")),
        MessageEnd(),
        MessageStart(RequestHead("GET", "/missing")),
        MessageEnd(),
        StreamEnd(),
    ]
    out = await run_layout(site(root), events)
    heads = [e.head.status for e in out if type(e) is MessageStart]
    assert heads == [200, 404]
    assert out[-1] == StreamEnd() and sum(type(e) is MessageEnd for e in out) == 2


async def test_under_demux_each_request_gets_its_answer_in_order(root: Path) -> None:
    proxy = Proxy()
    proxy.pipeline("server").demux().to(
        lambda p: p.serve_static(root, max_entry_size=1000, chunk_size=4096)
    )
    events = []
    for method, target in [("GET", "/big.txt"), ("HEAD", "/hello.txt"), ("GET", "/docs")]:
        events += [MessageStart(RequestHead(method, target)), Data(b"ignored"), MessageEnd()]
    out = await run_layout(proxy.layout("server"), [*events, StreamEnd()])
    starts = [i for i, e in enumerate(out) if type(e) is MessageStart]
    assert [out[i].head.status for i in starts] == [200, 200, 301]
    assert join_data(out[: starts[1]]) == (root / "big.txt").read_bytes()
    assert join_data(out[starts[1] : starts[2]]) == b""
    assert out[-1] == StreamEnd() and sum(type(e) is MessageEnd for e in out) == 3


async def test_a_head_that_is_not_http_ends_the_stream(root: Path) -> None:
    out = await run_layout(site(root), [MessageStart("hello"), MessageEnd(), StreamEnd()])
    assert len(out) == 1 and type(out[0]) is StreamEnd
    assert isinstance(out[0].error, PipelineError)


# Directories and errors ---------------------------------------------------------------


async def test_directories_serve_their_index_and_redirect_without_the_slash(root: Path) -> None:
    layout = site(root)
    head, body = await ask(layout, "/")
    assert (head.status, body) == (200, (root / "index.html").read_bytes())
    head, body = await ask(layout, "/docs/")
    assert (head.status, body) == (200, b"<h1>docs</h1>\n")
    head, _ = await ask(layout, "/docs")
    assert (head.status, head.headers["Location"]) == (301, "/docs/")
    head, _ = await ask(layout, "/docs?page=2&x=%20")
    assert (head.status, head.headers["Location"]) == (301, "/docs/?page=2&x=%20")
    # The Location is made from the cleaned path: never "//host/", an open redirect.
    (root / "example.com").mkdir()
    head, _ = await ask(layout, "//example.com")
    assert (head.status, head.headers["Location"]) == (301, "/example.com/")
    (root / "a b").mkdir()
    head, _ = await ask(layout, "/a%20b")
    assert head.headers["Location"] == "/a%20b/"


async def test_index_names_are_tried_in_order(root: Path) -> None:
    (root / "docs" / "default.htm").write_text("default\n")
    head, body = await ask(site(root, index=("default.htm", "index.html")), "/docs/")
    assert body == b"default\n"
    head, body = await ask(site(root, index=("none.html", "index.html")), "/docs/")
    assert body == b"<h1>docs</h1>\n"
    head, _ = await ask(site(root, index=()), "/docs/")
    assert head.status == 404


async def test_not_found(root: Path) -> None:
    layout = site(root)
    for target in ("/missing", "/nodex/", "/docs/missing.html", "/hello.txt/", "/hello.txt/x"):
        head, body = await ask(layout, target)
        assert (head.status, body) == (404, b"404 Not Found\n"), target
        assert head.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_a_fifo_is_not_served_and_not_opened(root: Path) -> None:
    os.mkfifo(root / "pipe.txt")  # opening it for reading would block
    head, _ = await ask(site(root), "/pipe.txt")
    assert head.status == 404


@contextlib.contextmanager
def as_nobody() -> Iterator[None]:
    """Run the block with the effective uid of ``nobody`` when we are root (root
    reads every file regardless of its mode)."""
    if os.geteuid() != 0:
        yield
        return
    nobody = pwd.getpwnam("nobody")
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


async def test_an_unreadable_file_is_403() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # others may enter; the file itself is not readable
        secret = Path(tmp, "locked.txt")
        secret.write_text("TOP SECRET\n")
        secret.chmod(0o000)
        Path(tmp, "open.txt").write_text("open\n")
        Path(tmp, "closed").mkdir(mode=0o700)
        Path(tmp, "closed", "inner.txt").write_text("TOP SECRET inner\n")
        layout = site(Path(tmp))
        with as_nobody():
            head, body = await ask(layout, "/locked.txt")
            assert (head.status, body) == (403, b"403 Forbidden\n")
            head, body = await ask(layout, "/locked.txt", method="HEAD")
            assert head.status == 403
            head, body = await ask(layout, "/closed/inner.txt")
            assert head.status == 403 and b"SECRET" not in body
            head, body = await ask(layout, "/open.txt")
            assert (head.status, body) == (200, b"open\n")


# Conditional requests --------------------------------------------------------------


async def test_if_none_match(root: Path) -> None:
    layout = site(root)
    head, _ = await ask(layout, "/hello.txt")
    etag = head.headers["ETag"]
    for value in (etag, f'"other", {etag}', f"W/{etag}", "*", f'"x,y", W/{etag}'):
        got, body = await ask(layout, "/hello.txt", ("If-None-Match", value))
        assert (got.status, body) == (304, b""), value
        assert got.reason == "Not Modified"
        assert got.headers["ETag"] == etag and "Content-Length" not in got.headers
        assert got.headers["Last-Modified"] == head.headers["Last-Modified"]
    for value in ('"other"', etag[:-2] + '"', "garbage", f"{etag[1:-1]}"):
        got, body = await ask(layout, "/hello.txt", ("If-None-Match", value))
        assert (got.status, body) == (200, b"hello\n"), value
    # Repeated fields are one list.
    got, _ = await ask(layout, "/hello.txt", ("If-None-Match", '"a"'), ("If-None-Match", etag))
    assert got.status == 304
    got, body = await ask(layout, "/hello.txt", ("If-None-Match", etag), method="HEAD")
    assert (got.status, body) == (304, b"")


async def test_if_modified_since(root: Path) -> None:
    layout = site(root)
    path = root / "hello.txt"
    mtime = path.stat().st_mtime_ns // 10**9
    for when in (mtime, mtime + 3600):
        for fmt in (
            "%a, %d %b %Y %H:%M:%S GMT",
            "%A, %d-%b-%y %H:%M:%S GMT",
            "%a %b %d %H:%M:%S %Y",
        ):
            value = time.strftime(fmt, time.gmtime(when))
            head, body = await ask(layout, "/hello.txt", ("If-Modified-Since", value))
            assert (head.status, body) == (304, b""), value
    for value in (email.utils.formatdate(mtime - 1, usegmt=True), "yesterday", ""):
        head, body = await ask(layout, "/hello.txt", ("If-Modified-Since", value))
        assert (head.status, body) == (200, b"hello\n"), value


async def test_if_none_match_takes_precedence_over_if_modified_since(root: Path) -> None:
    layout = site(root)
    fresh = last_modified(root / "hello.txt")
    head, _ = await ask(
        layout, "/hello.txt", ("If-None-Match", '"old"'), ("If-Modified-Since", fresh)
    )
    assert head.status == 200
    head, _ = await ask(layout, "/hello.txt", ("If-Modified-Since", fresh))
    assert head.status == 304


async def test_if_match_and_if_unmodified_since(root: Path) -> None:
    layout = site(root)
    head, _ = await ask(layout, "/hello.txt")
    etag, modified = head.headers["ETag"], head.headers["Last-Modified"]
    assert (await ask(layout, "/hello.txt", ("If-Match", etag)))[0].status == 200
    assert (await ask(layout, "/hello.txt", ("If-Match", "*")))[0].status == 200
    got, body = await ask(layout, "/hello.txt", ("If-Match", '"old"'))
    assert (got.status, body) == (412, b"412 Precondition Failed\n")
    # If-Match is a strong comparison: a weak tag never matches.
    assert (await ask(layout, "/hello.txt", ("If-Match", f"W/{etag}")))[0].status == 412
    assert (await ask(layout, "/hello.txt", ("If-Unmodified-Since", modified)))[0].status == 200
    mtime = (root / "hello.txt").stat().st_mtime_ns // 10**9
    early = email.utils.formatdate(mtime - 10, usegmt=True)
    assert (await ask(layout, "/hello.txt", ("If-Unmodified-Since", early)))[0].status == 412
    # If-Match decides alone when present.
    both = (("If-Match", etag), ("If-Unmodified-Since", early))
    assert (await ask(layout, "/hello.txt", *both))[0].status == 200


# Ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_entry_size", [1 * MiB, 1000])  # cached body, streamed file
async def test_single_ranges(root: Path, max_entry_size: int) -> None:
    layout = site(root, max_entry_size=max_entry_size, chunk_size=4096)
    data = (root / "big.txt").read_bytes()
    size = len(data)
    cases = {
        "bytes=0-99": (0, 100),
        "bytes=100-": (100, size),
        "bytes=-500": (size - 500, size),
        f"bytes=-{size + 10}": (0, size),
        f"bytes=5000-{size + 1000}": (5000, size),
        "bytes=7-7": (7, 8),
        "BYTES = 10 - 19": (10, 20),
        "bytes=0-99,": (0, 100),
    }
    for value, (start, end) in cases.items():
        head, body = await ask(layout, "/big.txt", ("Range", value), ("Accept-Encoding", "gzip"))
        assert head.status == 206 and head.reason == "Partial Content", value
        assert body == data[start:end], value
        assert head.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert head.headers["Content-Length"] == str(end - start)
        assert "Content-Encoding" not in head.headers  # ranges are never gzipped


async def test_unsatisfiable_ranges_are_416(root: Path) -> None:
    layout = site(root)
    size = (root / "big.txt").stat().st_size
    for value in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        head, body = await ask(layout, "/big.txt", ("Range", value))
        assert head.status == 416, value
        assert head.headers["Content-Range"] == f"bytes */{size}"
        assert body == b"416 Range Not Satisfiable\n"
    head, _ = await ask(layout, "/empty.txt", ("Range", "bytes=0-"))
    assert (head.status, head.headers["Content-Range"]) == (416, "bytes */0")


async def test_ranges_that_are_ignored_give_the_whole_file(root: Path) -> None:
    layout = site(root)
    data = (root / "big.txt").read_bytes()
    for value in (
        "bytes=0-9,20-29",  # several ranges: whole file, not multipart
        "bytes=9-3",
        "bytes=abc",
        "bytes=1",
        "bytes=--5",
        "bytes=²-5",
        "items=0-5",
        "0-5",
    ):
        head, body = await ask(layout, "/big.txt", ("Range", value))
        assert (head.status, body) == (200, data), value
        assert "Content-Range" not in head.headers
    head, body = await ask(layout, "/empty.txt", ("Range", "bytes=-5"))
    assert (head.status, body) == (200, b"")
    # HEAD ignores Range (RFC 9110 14.2: only GET has ranges).
    head, _ = await ask(layout, "/big.txt", ("Range", "bytes=0-9"), method="HEAD")
    assert (head.status, head.headers["Content-Length"]) == (200, str(len(data)))


async def test_if_range(root: Path) -> None:
    layout = site(root)
    data = (root / "big.txt").read_bytes()
    head, _ = await ask(layout, "/big.txt")
    etag, modified = head.headers["ETag"], head.headers["Last-Modified"]
    r = ("Range", "bytes=0-9")
    for value, partial in [
        (etag, True),
        (modified, True),
        ('"stale"', False),
        (f"W/{etag}", False),  # If-Range needs a strong validator
        ("Mon, 01 Jan 2001 00:00:00 GMT", False),
        ("junk", False),
    ]:
        got, body = await ask(layout, "/big.txt", r, ("If-Range", value))
        assert (got.status, body) == ((206, data[:10]) if partial else (200, data)), value


# gzip ---------------------------------------------------------------------------------


async def test_gzip_for_text_when_accepted(root: Path) -> None:
    layout = site(root)
    plain, plain_body = await ask(layout, "/big.txt")
    head, body = await ask(layout, "/big.txt", ("Accept-Encoding", "gzip, deflate, br"))
    assert head.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == (root / "big.txt").read_bytes() == plain_body
    assert head.headers["Content-Length"] == str(len(body)) and len(body) < len(plain_body)
    assert head.headers["Vary"] == plain.headers["Vary"] == "Accept-Encoding"
    assert head.headers["ETag"] != plain.headers["ETag"]
    assert head.headers["Content-Type"] == plain.headers["Content-Type"]
    # Compressed once: the second answer is the cached one, byte for byte.
    again, again_body = await ask(layout, "/big.txt", ("Accept-Encoding", "gzip"))
    assert again_body == body and again.headers == head.headers
    # Its own ETag revalidates it.
    got, _ = await ask(
        layout, "/big.txt", ("Accept-Encoding", "gzip"), ("If-None-Match", head.headers["ETag"])
    )
    assert got.status == 304 and got.headers["Vary"] == "Accept-Encoding"
    got, _ = await ask(layout, "/big.txt", ("If-None-Match", head.headers["ETag"]))
    assert got.status == 200  # not the identity's tag


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("br;q=1, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0, *", False),
        ("*;q=0", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=abc", False),
        ("gzip;q=2", False),
        ("", False),
    ],
)
async def test_accept_encoding_q_values(root: Path, accept: str, gzipped: bool) -> None:
    head, body = await ask(site(root), "/style.css", ("Accept-Encoding", accept))
    data = (root / "style.css").read_bytes()
    if gzipped:
        assert head.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body) == data
    else:
        assert "Content-Encoding" not in head.headers and body == data
    assert head.headers["Vary"] == "Accept-Encoding"


async def test_no_gzip_for_binary_types_tiny_files_or_when_disabled(root: Path) -> None:
    gz = ("Accept-Encoding", "gzip")
    head, body = await ask(site(root), "/data.bin", gz)
    assert "Content-Encoding" not in head.headers and "Vary" not in head.headers
    assert body == BINARY
    # gzip would make "hello\n" larger: the file itself is sent (still with Vary).
    head, body = await ask(site(root), "/hello.txt", gz)
    assert "Content-Encoding" not in head.headers and body == b"hello\n"
    assert head.headers["Vary"] == "Accept-Encoding"
    head, body = await ask(site(root, gzip=False), "/big.txt", gz)
    assert "Content-Encoding" not in head.headers and "Vary" not in head.headers


async def test_a_precompressed_sidecar_is_preferred(root: Path) -> None:
    # The sidecar's content differs from a fresh compression, to tell them apart.
    page = root / "docs" / "page.html"
    page.write_text("<p>page</p>\n" * 100)
    sidecar = root / "docs" / "page.html.gz"
    sidecar.write_bytes(gzip.compress(b"<p>precompressed</p>\n"))
    layout = site(root)
    head, body = await ask(layout, "/docs/page.html", ("Accept-Encoding", "gzip"))
    assert head.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"<p>precompressed</p>\n"
    assert head.headers["Content-Type"] == "text/html; charset=utf-8"
    assert head.headers["Last-Modified"] == last_modified(page)
    # Clients that do not accept gzip get the file itself.
    head, body = await ask(layout, "/docs/page.html")
    assert body == page.read_bytes()
    # A sidecar older than its file is stale: compressed afresh instead.
    st = page.stat()
    os.utime(sidecar, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    head, body = await ask(layout, "/docs/page.html", ("Accept-Encoding", "gzip"))
    assert gzip.decompress(body) == page.read_bytes()


async def test_a_large_file_is_gzipped_only_from_its_sidecar(root: Path) -> None:
    layout = site(root, max_entry_size=1000, chunk_size=1000)
    data = (root / "big.txt").read_bytes()
    head, body = await ask(layout, "/big.txt", ("Accept-Encoding", "gzip"))
    assert "Content-Encoding" not in head.headers and body == data
    (root / "big.txt.gz").write_bytes(gzip.compress(data, 9))
    head, body = await ask(layout, "/big.txt", ("Accept-Encoding", "gzip"))
    assert head.headers["Content-Encoding"] == "gzip"
    assert body == (root / "big.txt.gz").read_bytes() and gzip.decompress(body) == data


async def test_a_symlinked_sidecar_is_ignored(root: Path, tmp_path: Path) -> None:
    (tmp_path / "evil.gz").write_bytes(gzip.compress(b"TOP SECRET\n"))
    (root / "style.css.gz").symlink_to(tmp_path / "evil.gz")
    _, body = await ask(site(root), "/style.css", ("Accept-Encoding", "gzip"))
    assert gzip.decompress(body) == (root / "style.css").read_bytes()


async def test_a_gz_file_asked_for_by_name_is_sent_as_is(root: Path) -> None:
    packed = gzip.compress(b"payload")
    (root / "dump.gz").write_bytes(packed)
    head, body = await ask(site(root), "/dump.gz", ("Accept-Encoding", "gzip"))
    assert body == packed and head.headers["Content-Type"] == "application/gzip"
    assert "Content-Encoding" not in head.headers


# Cache ------------------------------------------------------------------------------


async def test_a_changed_file_is_served_at_once(root: Path) -> None:
    layout = site(root)
    path = root / "hello.txt"
    head, body = await ask(layout, "/hello.txt")
    assert body == b"hello\n"
    first_etag = head.headers["ETag"]
    path.write_text("changed, and longer\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    head, body = await ask(layout, "/hello.txt")
    assert body == b"changed, and longer\n" and head.headers["ETag"] != first_etag
    # The gzip form follows the file too.
    (root / "style.css").write_text("p { margin: 0 }\n" * 80)
    st = (root / "style.css").stat()
    os.utime(root / "style.css", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    head, body = await ask(layout, "/style.css", ("Accept-Encoding", "gzip"))
    assert gzip.decompress(body) == b"p { margin: 0 }\n" * 80


async def test_same_size_and_restored_mtime_is_still_a_change(root: Path) -> None:
    layout = site(root)
    path = root / "hello.txt"
    assert (await ask(layout, "/hello.txt"))[1] == b"hello\n"
    st = path.stat()
    path.write_text("HELLO\n")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime (rsync -t)
    assert (await ask(layout, "/hello.txt"))[1] == b"HELLO\n"


async def test_a_file_replaced_by_rename_is_served(root: Path) -> None:
    layout = site(root)
    assert (await ask(layout, "/hello.txt"))[1] == b"hello\n"
    (root / "new.tmp").write_text("renamed\n")
    os.replace(root / "new.tmp", root / "hello.txt")
    assert (await ask(layout, "/hello.txt"))[1] == b"renamed\n"
    (root / "hello.txt").unlink()
    assert (await ask(layout, "/hello.txt"))[0].status == 404


async def test_the_cache_is_bounded_and_least_recently_used_goes_first(root: Path) -> None:
    for i in range(10):
        (root / f"f{i}.bin").write_bytes(bytes([i]) * 1000)
    layout = site(root, cache_size=4000, max_entry_size=1000)
    cache = cache_of(layout)
    for i in range(10):
        _, body = await ask(layout, f"/f{i}.bin")
        assert body == bytes([i]) * 1000
        assert cache.total <= 4000
    assert 0 < len(cache) < 10
    # The most recent entries are the ones kept.
    kept = [i for i in range(10) if str(root / f"f{i}.bin") in cache]
    assert kept == list(range(10 - len(kept), 10))
    # Touching the oldest kept one makes it survive the next insertion.
    oldest = kept[0]
    await ask(layout, f"/f{oldest}.bin")
    await ask(layout, "/f0.bin")
    assert str(root / f"f{oldest}.bin") in cache


async def test_large_files_are_streamed_in_chunks_not_cached(root: Path) -> None:
    layout = site(root, max_entry_size=1000, chunk_size=4096)
    data = (root / "big.txt").read_bytes()
    request = RequestHead("GET", "/big.txt")
    out = await run_layout(layout, [MessageStart(request), MessageEnd()])
    chunks = [e.data for e in out if type(e) is Data]
    assert b"".join(chunks) == data
    assert len(chunks) == -(-len(data) // 4096) and max(map(len, chunks)) == 4096
    cache = cache_of(layout)
    entry = cache.get(str(root / "big.txt"), validator((root / "big.txt").stat()))
    assert entry is not None and entry.body is None
    assert cache.total < 1000  # the metadata only


async def test_a_file_shrinking_while_streamed_ends_the_stream(root: Path) -> None:
    path = root / "big.txt"
    proxy = Proxy()

    def shrink(ctx: object, data: bytes) -> None:
        os.truncate(path, 100)

    proxy.pipeline("site").serve_static(root, max_entry_size=1000, chunk_size=4096).handle_data(
        shrink
    )
    out = await run_layout(
        proxy.layout("site"), [MessageStart(RequestHead("GET", "/big.txt")), MessageEnd()]
    )
    assert type(out[0]) is MessageStart and out[0].head.status == 200
    assert type(out[-1]) is StreamEnd and isinstance(out[-1].error, StaticFileError)
    assert "shrank" in str(out[-1].error)
    assert not any(type(e) is MessageEnd for e in out)


def test_read_whole_refuses_another_version(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("one\n")
    version = validator(path.stat())
    assert read_whole(str(path), version) == b"one\n"
    path.write_text("two, longer\n")
    with pytest.raises(FileChanged):
        read_whole(str(path), version)


def test_cache_accounting() -> None:
    from filters._static_cache import ENTRY_OVERHEAD, Representation

    cache = FileCache(3 * ENTRY_OVERHEAD + 100, 100)

    def rep(key: str) -> Representation:
        return Representation(key, key, (1,), 10, 0, '"x"', [], False)

    a, b = cache.put(rep("a")), cache.put(rep("b"))
    cache.attach(a, b"x" * 60)
    assert cache.total == 2 * ENTRY_OVERHEAD + 60 and a.body == b"x" * 60
    cache.attach(a, b"y" * 60)  # the first body stays
    assert a.body == b"x" * 60
    cache.attach(b, b"z" * 101)  # over max_entry_size: not kept
    assert b.body is None
    cache.put(rep("c"))
    cache.attach(cache.get("c", (1,)) or rep("c"), b"c" * 60)  # 3 entries + 120 > capacity
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.total == 2 * ENTRY_OVERHEAD + 60
    assert cache.get("b", (2,)) is None and "b" not in cache  # stale: dropped
    assert cache.total == ENTRY_OVERHEAD + 60


async def test_cache_size_zero_still_serves(root: Path) -> None:
    layout = site(root, cache_size=0)
    for _ in range(2):
        _, body = await ask(layout, "/big.txt", ("Accept-Encoding", "gzip"))
        assert gzip.decompress(body) == (root / "big.txt").read_bytes()
    assert len(cache_of(layout)) == 0


# Path traversal -------------------------------------------------------------------


TRAVERSALS = [
    ("/../secret.txt", 400),
    ("/docs/../../secret.txt", 400),
    ("/%2e%2e/secret.txt", 400),
    ("/%2E%2e/secret.txt", 400),
    ("/.%2e/secret.txt", 400),
    ("/%2e%2e%2fsecret.txt", 400),
    ("/..%2Fsecret.txt", 400),
    ("/docs/%2e%2e/%2e%2e/secret.txt", 400),
    ("/..\\secret.txt", 400),
    ("/..%5csecret.txt", 400),
    ("/docs%5c..%5c..%5csecret.txt", 400),
    ("/secret.txt%00.html", 400),
    ("/%00", 400),
    ("/%c0%ae%c0%ae/secret.txt", 400),  # overlong UTF-8 for "..": not UTF-8 at all
    ("/%ff", 400),
    ("/%252e%252e/secret.txt", 404),  # decoded once: a file named "%2e%2e"
    ("/%252e%252e%252fsecret.txt", 404),
    ("//secret.txt", 404),
    ("/etc/passwd", 404),
    ("//etc/passwd", 404),
    ("http://example.com/../secret.txt", 400),
    ("http://example.com/%2e%2e/secret.txt", 400),
    ("secret.txt", 400),
    ("../secret.txt", 400),
    ("*", 400),
    ("/.env", 404),
    ("/docs/.%65nv", 404),
    ("/www2/sibling.txt", 404),
    ("/../www2/sibling.txt", 400),
]


@pytest.mark.parametrize(("target", "status"), TRAVERSALS)
async def test_traversal_is_refused(root: Path, target: str, status: int) -> None:
    for method in ("GET", "HEAD"):
        head, body = await ask(site(root), target, method=method)
        assert head.status == status, (target, method)
        assert b"SECRET" not in body


async def test_symlinks_inside_the_root_are_followed_outside_refused(
    root: Path, tmp_path: Path
) -> None:
    (root / "alias.txt").symlink_to("hello.txt")
    (root / "alias-dir").symlink_to("docs")
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (root / "leak-rel.txt").symlink_to("../secret.txt")
    (root / "leak-dir").symlink_to(tmp_path)
    (root / "sibling").symlink_to(tmp_path / "www2")  # a prefix of nothing: www2 != www
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "docs" / "index.html").unlink()
    (root / "docs" / "index.html").symlink_to(tmp_path / "secret.txt")
    layout = site(root)
    assert await ask(layout, "/alias.txt") == await ask(layout, "/hello.txt")
    assert (await ask(layout, "/alias-dir/page.html"))[1] == b"<p>page</p>\n"
    for target in (
        "/leak.txt",
        "/leak-rel.txt",
        "/leak-dir/secret.txt",
        "/sibling/sibling.txt",
        "/docs/",
        "/docs/index.html",
        "/loop-a",
        "/loop-b/x.txt",
    ):
        head, body = await ask(layout, target)
        assert head.status == 404, target
        assert b"SECRET" not in body


async def test_the_root_may_be_a_symlink(root: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(root)
    head, body = await ask(site(tmp_path / "link"), "/hello.txt")
    assert (head.status, body) == (200, b"hello\n")


async def test_hidden_files_when_allowed(root: Path) -> None:
    head, body = await ask(site(root, hidden=True), "/.env")
    assert (head.status, body) == (200, b"TOP SECRET=1\n")


async def test_the_query_is_not_part_of_the_path(root: Path) -> None:
    layout = site(root)
    for target in ("/hello.txt?../../secret.txt", "/hello.txt?x=%2e%2e%2f", "/hello.txt?"):
        assert await ask(layout, target) == await ask(layout, "/hello.txt")
    assert (await ask(layout, "http://example.com/hello.txt?q"))[1] == b"hello\n"
    assert (await ask(layout, "http://example.com"))[1] == b"<h1>home</h1>\n"
    assert (await ask(layout, "/a%20b.txt"))[0].status == 404
    (root / "a b.txt").write_text("spaced\n")
    assert (await ask(layout, "/a%20b.txt"))[1] == b"spaced\n"
    assert (await ask(layout, "/./docs//page.html"))[1] == b"<p>page</p>\n"


# Configuration ------------------------------------------------------------------------


def test_configuration_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    cases: list[tuple[dict[str, object], str]] = [
        ({"root": tmp_path / "missing"}, "is not a directory"),
        ({"root": tmp_path / "file"}, "is not a directory"),
        ({"root": 42}, "root must be a path"),
        ({"root": tmp_path, "index": "index.html"}, "index must be a sequence"),
        ({"root": tmp_path, "index": ("a/b.html",)}, "bad index file name"),
        ({"root": tmp_path, "cache_size": -1}, "cache_size must be at least 0"),
        ({"root": tmp_path, "chunk_size": 0}, "chunk_size must be positive"),
        ({"root": tmp_path, "max_entry_size": 1.5}, "max_entry_size must be an int"),
        ({"root": tmp_path, "cache_control": "a\r\nX: y"}, "bad cache_control"),
        ({"root": tmp_path, "types": {"md": "text/markdown"}}, "bad content type"),
    ]
    for kwargs, message in cases:
        proxy = Proxy()
        line = here() + 1
        proxy.pipeline("site").serve_static(**kwargs)
        with pytest.raises(ConfigError) as info:
            proxy.build()
        assert message in str(info.value), kwargs
        assert info.value.lineno == line and info.value.filename == __file__
        assert str(info.value).startswith(f"{__file__}:{line}: serve_static(): ")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        Proxy().pipeline("site").serve_static(tmp_path, colour="blue")


def test_every_request_gets_a_fresh_filter_sharing_one_cache(root: Path) -> None:
    layout = site(root)
    spec = layout.specs[0]
    assert spec.create() is not spec.create()
    assert spec.state is layout.specs[0].state
    assert stat.S_ISDIR(os.stat(spec.state.root).st_mode)


# Header parsing (filters/_static_http.py) -----------------------------------------------


def test_entity_tag_lists() -> None:
    assert parse_etags('"a", W/"b",  "c,d"') == [(False, '"a"'), (True, '"b"'), (False, '"c,d"')]
    assert parse_etags('"a", junk, "b"') == [(False, '"a"')]  # stops at the bad element
    assert parse_etags('"unterminated') == []
    assert etag_matches('W/"x"', '"x"', weak=True)
    assert not etag_matches('W/"x"', '"x"', weak=False)
    assert etag_matches(" * ", '"x"', weak=False)
    assert not etag_matches('"x-y"', '"x"', weak=True)


def test_http_dates_in_every_form_are_gmt() -> None:
    expected = 784111777  # RFC 9110's example date, 1994-11-06 08:49:37 GMT
    for text in (
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun, 06 Nov 1994 09:49:37 +0100",
    ):
        assert (
            http_date(text)
            == expected
            == email.utils.parsedate_to_datetime("Sun, 06 Nov 1994 08:49:37 GMT").timestamp()
        ), text
    for text in ("", "yesterday", "Sun, 99 Nov 1994 08:49:37 GMT", "1994-11-06"):
        assert http_date(text) is None, text


def test_range_edge_cases() -> None:
    assert parse_range("bytes=0-0", 1) == (0, 1)
    assert parse_range("bytes=0-", 0) == UNSATISFIABLE
    assert parse_range("bytes=-1", 0) is None
    assert parse_range("bytes=-0", 10) == UNSATISFIABLE
    assert parse_range("bytes=10-", 10) == UNSATISFIABLE
    assert parse_range("bytes=9-", 10) == (9, 10)
    assert parse_range("bytes=0-9,", 10) == (0, 10)
    assert parse_range("bytes=0-1,3-4", 10) is None
    assert parse_range("bytes= 1 - 2 ", 10) == (1, 3)
    assert parse_range("bytes=-", 10) is None
    assert parse_range("bytes=+1-2", 10) is None
