"""compress_http / decompress_http in memory; results checked with zlib and gzip."""

from __future__ import annotations

import gzip
import importlib
import re
import shutil
import subprocess
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.compress import choose_coding, parse_accept_encoding
from pipeline import ConfigError, Data, Event, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, ProtocolError, RequestHead, ResponseHead
from tests.helpers import free_port, run_trioxy

TEXT = b"The quick brown fox jumps over the lazy dog. " * 40


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br", "gzip"),
        ("deflate, gzip", "gzip"),  # a tie goes to gzip
        ("gzip;q=0.5, deflate", "deflate"),
        ("GZIP ; Q=0.1", "gzip"),
        ("x-gzip", "gzip"),
        ("*", "gzip"),
        ("*;q=0.2, gzip;q=0.1", "deflate"),
        ("gzip;q=0, *", "deflate"),
        ("gzip;q=0, deflate;q=0, *", None),
        ("identity", None),
        ("identity;q=0", None),  # nothing else offered: identity is sent anyway
        ("br", None),
        ("gzip;q=abc", None),
        ("gzip;q=1.5", None),
        (" , ,gzip", "gzip"),
    ],
)
def test_accept_encoding_negotiation(header: str | None, coding: str | None) -> None:
    assert choose_coding(header) == coding


def test_accept_encoding_parse() -> None:
    assert parse_accept_encoding("gzip;q=0.8, br, *;q=0") == {"gzip": 0.8, "br": 1.0, "*": 0.0}


def req(accept: str | None = "gzip", method: str = "GET") -> RequestHead:
    return RequestHead(method, "/", Headers([("Accept-Encoding", accept)] if accept else []))


def resp(
    status: int = 200,
    content_type: str | None = "text/html",
    length: int | None = None,
    **extra: str,
) -> ResponseHead:
    fields = [("Content-Type", content_type)] if content_type else []
    if length is not None:
        fields.append(("Content-Length", str(length)))
    fields += [(k.replace("_", "-"), v) for k, v in extra.items()]
    return ResponseHead(status, "", Headers(fields))


async def exchange(
    request: RequestHead | None, response: ResponseHead, body: list[bytes], **kwargs: Any
) -> tuple[ResponseHead, bytes, list[Event]]:
    """Pass a request, then a response, through compress_http; the response out."""
    proxy = Proxy()
    proxy.pipeline("main").compress_http(**kwargs)
    events: list[Event] = []
    if request is not None:
        events += [MessageStart(request), MessageEnd()]
    events += [MessageStart(response), *map(Data, body), MessageEnd(), StreamEnd()]
    out = await run_layout(proxy.layout("main"), events)
    starts = [e for e in out if isinstance(e, MessageStart)]
    head = starts[-1].head
    after = out[out.index(starts[-1]) :]
    return head, join_data(after), out


async def test_gzip_streams_each_chunk_at_once() -> None:
    proxy = Proxy()
    proxy.pipeline("main").compress_http()
    inflate = zlib.decompressobj(31)
    async with open_pipeline(proxy.layout("main")) as h:
        await h.send(MessageStart(req("gzip")), MessageEnd(), MessageStart(resp()))
        for chunk in (b"first chunk " * 30, b"second " * 50, b"third"):
            before = len(h.output)
            await h.send(Data(chunk))
            new = h.output[before:]
            assert len(new) == 1 and isinstance(new[0], Data)
            # everything sent so far can be decompressed now: nothing is held back
            assert inflate.decompress(new[0].data) == chunk
        await h.send(MessageEnd(), StreamEnd())
        await h.settle()
    tail = join_data(h.output[-3:])
    assert inflate.decompress(tail) == b"" and inflate.eof
    head = h.output[2].head  # type: ignore[union-attr]
    assert head.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(join_data(h.output)) == b"first chunk " * 30 + b"second " * 50 + b"third"


async def test_gzip_response_headers() -> None:
    head, body, _ = await exchange(
        req("gzip"), resp(length=len(TEXT), ETag='"v1"', Vary="Cookie"), [TEXT]
    )
    assert gzip.decompress(body) == TEXT
    assert len(body) < len(TEXT)
    assert "Content-Length" not in head.headers
    assert head.headers["Content-Encoding"] == "gzip"
    assert head.headers.get_all("Vary") == ["Cookie", "Accept-Encoding"]
    assert head.headers["ETag"] == 'W/"v1"'


async def test_deflate_is_zlib_wrapped() -> None:
    head, body, _ = await exchange(req("deflate"), resp(), [TEXT[:500], TEXT[500:]], level=9)
    assert head.headers["Content-Encoding"] == "deflate"
    assert zlib.decompress(body) == TEXT


async def test_request_events_pass_through() -> None:
    _, _, out = await exchange(req("gzip"), resp(), [TEXT])
    assert out[:2] == [MessageStart(req("gzip")), MessageEnd()]


@pytest.mark.parametrize(
    ("request_head", "response_head", "vary"),
    [
        (req("gzip", method="HEAD"), resp(length=5000), False),
        (req("gzip"), resp(204, content_type=None), False),
        (req("gzip"), resp(304), False),
        (req("gzip"), resp(206, Content_Range="bytes 0-9/100"), False),
        (req("gzip"), resp(Content_Encoding="br"), False),
        (req("gzip"), resp(Cache_Control="public, no-transform"), False),
        (req("gzip"), resp(content_type="image/png"), False),
        (req("gzip"), resp(content_type=None), False),
        (req("gzip"), resp(length=255), False),  # under min_size
        (req(None), resp(), True),  # compressible, but not accepted: Vary still
        (req("br"), resp(), True),
    ],
)
async def test_left_uncompressed(
    request_head: RequestHead, response_head: ResponseHead, vary: bool
) -> None:
    head, body, _ = await exchange(request_head, response_head, [TEXT])
    assert "Content-Encoding" not in head.headers or head.headers["Content-Encoding"] == "br"
    assert body == TEXT
    assert head.headers.has_token("Vary", "Accept-Encoding") == vary


async def test_vary_star_is_kept_alone() -> None:
    head, body, _ = await exchange(req("gzip"), resp(Vary="*"), [TEXT])
    assert head.headers.get_all("Vary") == ["*"]
    assert gzip.decompress(body) == TEXT


async def test_without_a_known_request_the_response_passes_unchanged() -> None:
    head, body, _ = await exchange(None, resp(), [TEXT])
    assert head == resp() and body == TEXT


async def test_types_and_min_size_are_configurable() -> None:
    head, body, _ = await exchange(
        req("gzip"),
        resp(content_type="image/png", length=10),
        [b"0123456789"],
        types=["image/*"],
        min_size=0,
    )
    assert head.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"0123456789"


async def test_request_recorded_by_serve_http_is_used_after_it() -> None:
    proxy = Proxy()
    proxy.pipeline("main").serve_http(lambda ctx, r: TEXT.decode()).compress_http()
    out = await run_layout(
        proxy.layout("main"), [MessageStart(req("deflate, gzip;q=0.5")), MessageEnd(), StreamEnd()]
    )
    assert out[0].head.headers["Content-Encoding"] == "deflate"  # type: ignore[union-attr]
    assert zlib.decompress(join_data(out)) == TEXT


async def test_compress_then_decompress_round_trip() -> None:
    proxy = Proxy()
    proxy.pipeline("main").compress_http().decompress_http()
    chunks = [TEXT[i : i + 100] for i in range(0, len(TEXT), 100)]
    events = [MessageStart(req("gzip")), MessageEnd(), MessageStart(resp()), *map(Data, chunks)]
    out = await run_layout(proxy.layout("main"), [*events, MessageEnd(), StreamEnd()])
    head = out[2].head  # type: ignore[union-attr]
    assert "Content-Encoding" not in head.headers
    assert join_data(out) == TEXT


@pytest.mark.parametrize(
    "bad", [{"level": 0}, {"level": 10}, {"min_size": -1}, {"types": "text/*"}, {"types": ["html"]}]
)
def test_compress_arguments_are_checked_at_load(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Proxy().pipeline("main").compress_http(**bad)


# decompress_http ---------------------------------------------------------------------


async def decompress(
    head: RequestHead | ResponseHead, chunks: list[bytes], **kwargs: Any
) -> list[Event]:
    proxy = Proxy()
    proxy.pipeline("main").decompress_http(**kwargs)
    events = [MessageStart(head), *map(Data, chunks), MessageEnd(), StreamEnd()]
    return await run_layout(proxy.layout("main"), events)


def split(data: bytes, size: int = 37) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize(
    ("coding", "compressed"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT)),
        ("gzip", gzip.compress(TEXT[:700]) + gzip.compress(TEXT[700:])),  # two members
        ("deflate", zlib.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)[2:-4]),  # raw deflate, as some servers send
    ],
)
async def test_decompress_undoes_the_coding(coding: str, compressed: bytes) -> None:
    head = resp(Content_Encoding=coding, Content_Length=str(len(compressed)))
    out = await decompress(head, split(compressed))
    got = out[0].head  # type: ignore[union-attr]
    assert "Content-Encoding" not in got.headers and "Content-Length" not in got.headers
    assert got.headers["Content-Type"] == "text/html"
    assert join_data(out) == TEXT
    assert out[-2:] == [MessageEnd(), StreamEnd()]


async def test_an_empty_coded_body_is_an_empty_body() -> None:
    # A response to HEAD, or a 304, keeps its Content-Encoding and has no body.
    out = await decompress(resp(Content_Encoding="gzip", Content_Length="20"), [])
    assert [type(e) for e in out] == [MessageStart, MessageEnd, StreamEnd]


async def test_other_codings_and_plain_bodies_pass_unchanged() -> None:
    for head in (resp(Content_Encoding="br"), resp(), req()):
        out = await decompress(head, [b"abc"])
        assert out == [MessageStart(head), Data(b"abc"), MessageEnd(), StreamEnd()]


@pytest.mark.parametrize(("head", "status"), [(resp(), 502), (req(), 413)])
async def test_zip_bomb_is_stopped_at_max_size(head: Any, status: int) -> None:
    bomb = gzip.compress(b"\0" * (20 << 20))  # 20 MiB of zeros in ~20 KiB
    head = head.replace(headers=Headers([("Content-Encoding", "gzip")]))
    out = await decompress(head, split(bomb, 4096), max_size=1 << 20)
    assert len(join_data(out)) <= 1 << 20
    end = out[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, ProtocolError)
    assert end.error.status == status and "over 1048576 bytes" in end.error.message
    assert not any(isinstance(e, MessageEnd) for e in out)


async def test_a_bomb_in_one_chunk_never_inflates_past_the_bound() -> None:
    bomb = zlib.compress(b"\0" * (50 << 20))
    out = await decompress(resp(Content_Encoding="deflate"), [bomb], max_size=1000)
    assert sum(len(e) for e in out if isinstance(e, Data)) <= 1000
    assert isinstance(out[-1], StreamEnd) and out[-1].error is not None


@pytest.mark.parametrize(
    ("head", "chunks", "status", "words"),
    [
        (resp(Content_Encoding="gzip"), [b"not gzip at all"], 502, "bad gzip"),
        (
            req().replace(headers=Headers([("Content-Encoding", "gzip")])),
            [b"nope"],
            400,
            "bad gzip",
        ),
        (resp(Content_Encoding="gzip"), [gzip.compress(TEXT)[:-10]], 502, "truncated"),
        (resp(Content_Encoding="deflate"), [b"\xff\xff\xff\xff"], 502, "bad deflate"),
    ],
)
async def test_bad_compressed_data_is_a_protocol_error(
    head: Any, chunks: list[bytes], status: int, words: str
) -> None:
    out = await decompress(head, chunks)
    end = out[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, ProtocolError)
    assert end.error.status == status and words in end.error.message
    assert sum(isinstance(e, StreamEnd) for e in out) == 1


def test_decompress_arguments_are_checked_at_load() -> None:
    with pytest.raises(ConfigError, match="max_size"):
        Proxy().pipeline("main").decompress_http(max_size=0)


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.compress").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/compress.py example", "exec"), {})


# End to end: curl ----------------------------------------------------------------------

E2E_SCRIPT = """
from pipeline import Proxy
from pipeline.settings import address, setting

LISTEN = setting("LISTEN", "127.0.0.1:8000", address)
PAGE = "<p>" + "compressed by trioxy " * 500 + "</p>"


def page(ctx, request):
    return 200, PAGE.encode()


proxy = Proxy()
(proxy.listen(LISTEN)
    .demux_http()
    .to(lambda p: p
        .serve_http(page)
        .set_response_headers(set={"Content-Type": "text/html; charset=utf-8"})
        .compress_http()))
"""

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@needs_curl
@pytest.mark.parametrize(
    ("curl_args", "coding"),
    [
        (["--compressed"], "gzip"),  # curl sends its own Accept-Encoding
        (["--header", "Accept-Encoding: deflate"], "deflate"),
        ([], None),
    ],
)
def test_curl_receives_compressed_pages(
    tmp_path: Path, curl_args: list[str], coding: str | None
) -> None:
    script = tmp_path / "compressed_site.py"
    script.write_text(E2E_SCRIPT)
    page = ("<p>" + "compressed by trioxy " * 500 + "</p>").encode()
    port = free_port()
    with run_trioxy(script, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        result = subprocess.run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--dump-header",
                str(tmp_path / "head.txt"),
                "--output",
                str(tmp_path / "body.bin"),
                *curl_args,
                f"http://127.0.0.1:{port}/",
            ],
            capture_output=True,
            check=True,
        )
        assert result.returncode == 0
    head = (tmp_path / "head.txt").read_text().lower()
    body = (tmp_path / "body.bin").read_bytes()
    assert head.startswith("http/1.1 200")
    assert "vary: accept-encoding" in head
    if coding is None:
        assert "content-encoding" not in head and body == page
        assert f"content-length: {len(page)}" in head
    else:
        assert f"content-encoding: {coding}" in head
        assert "transfer-encoding: chunked" in head
        # --compressed: curl decoded gzip itself; deflate we decode here
        assert (body if coding == "gzip" else zlib.decompress(body)) == page


@given(st.text(max_size=200))
def test_any_accept_encoding_gives_an_answer(header: str) -> None:
    assert choose_coding(header) in (None, "gzip", "deflate")


@settings(max_examples=60, deadline=None)
@given(
    coding=st.sampled_from(["gzip", "deflate"]),
    chunks=st.lists(st.binary(max_size=64), max_size=4),
)
def test_any_bytes_given_to_decompress_end_cleanly(coding: str, chunks: list[bytes]) -> None:
    out = trio.run(decompress, resp(Content_Encoding=coding), chunks)
    end = out[-1]
    assert isinstance(end, StreamEnd)
    assert end.error is None or isinstance(end.error, ProtocolError)
    assert (end.error is None) == isinstance(out[-2], MessageEnd)
