"""serve_http in memory: handler results, errors, body bound, HEAD, the Request API."""

from __future__ import annotations

import importlib
import json
import logging
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from filters.headers import request_of
from filters.serve_http import Request, Response, to_response
from pipeline import (
    ConfigError,
    Context,
    Data,
    Event,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, RequestHead, ResponseHead
from protocols.http.writer import REASONS
from tests.helpers import free_port, run_trioxy


def request(
    method: str = "GET", target: str = "/", body: bytes = b"", headers: Any = None
) -> list[Event]:
    head = RequestHead(method, target, Headers(headers or []))
    return [MessageStart(head), *([Data(body)] if body else []), MessageEnd()]


async def serve(handler: Any, *messages: list[Event], **kwargs: Any) -> list[Event]:
    proxy = Proxy()
    proxy.pipeline("main").serve_http(handler, **kwargs)
    events = [e for m in messages for e in m]
    return await run_layout(proxy.layout("main"), [*events, StreamEnd()])


def responses(out: list[Event]) -> list[tuple[ResponseHead, bytes]]:
    """(head, body) of each response message in ``out``."""
    found: list[tuple[ResponseHead, bytes]] = []
    head: ResponseHead | None = None
    body: list[bytes] = []
    for e in out:
        if isinstance(e, MessageStart):
            head, body = e.head, []
        elif isinstance(e, Data):
            body.append(e.data)
        elif isinstance(e, MessageEnd):
            assert head is not None
            found.append((head, b"".join(body)))
    return found


async def one(handler: Any, *args: Any, **kwargs: Any) -> tuple[ResponseHead, bytes]:
    out = await serve(handler, request(*args), **kwargs)
    assert out[-1] == StreamEnd()
    (answer,) = responses(out)
    return answer


# What a handler returns -------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "status", "content_type", "body"),
    [
        ("héllo", 200, "text/plain; charset=utf-8", "héllo".encode()),
        (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
        ({"a": [1, "é"]}, 200, "application/json", '{"a":[1,"é"]}'.encode()),
        ([1, 2], 200, "application/json", b"[1,2]"),
        ((201, "made"), 201, "text/plain; charset=utf-8", b"made"),
        ((202, {"ok": True}), 202, "application/json", b'{"ok":true}'),
        (Response(404, "gone"), 404, "text/plain; charset=utf-8", b"gone"),
        (Response(200, "<p>", content_type="text/html"), 200, "text/html", b"<p>"),
        (Response.json({"x": 1}, 418), 418, "application/json", b'{"x":1}'),
    ],
)
async def test_handler_results(result: Any, status: int, content_type: str, body: bytes) -> None:
    head, got = await one(lambda ctx, req: result)
    assert (head.status, got) == (status, body)
    assert head.headers["Content-Type"] == content_type
    assert head.headers["Content-Length"] == str(len(body))
    assert head.reason == REASONS.get(status, "")  # the codec's standard phrase


async def test_async_handler_and_response_headers() -> None:
    async def handler(ctx: Context, req: Request) -> Response:
        return Response(
            200,
            b"",
            headers={"X-Who": "me", "Content-Length": "999", "Transfer-Encoding": "chunked"},
        )

    head, body = await one(handler)
    assert body == b""
    assert head.headers["X-Who"] == "me"
    assert head.headers["Content-Length"] == "0"  # the real length wins
    assert "Transfer-Encoding" not in head.headers
    assert "Content-Type" not in head.headers  # an empty bytes body has no type


async def test_204_has_no_content_length_and_304_keeps_the_handlers() -> None:
    head, _ = await one(lambda ctx, req: Response(204))
    assert "Content-Length" not in head.headers
    head, _ = await one(lambda ctx, req: Response(304, headers={"Content-Length": "42"}))
    assert head.headers["Content-Length"] == "42"
    with pytest.raises(ValueError):
        Response(204, "body")


@pytest.mark.parametrize("bad", [None, 42, (1, 2, 3), ("200", "x"), object()])
def test_to_response_refuses_other_values(bad: Any) -> None:
    with pytest.raises(TypeError):
        to_response(bad)


@pytest.mark.parametrize("status", [99, 1000, True, "200"])
def test_response_status_is_checked(status: Any) -> None:
    with pytest.raises(ValueError):
        Response(status)


# The request -------------------------------------------------------------------------


async def test_request_conveniences() -> None:
    seen: list[Request] = []

    def handler(ctx: Context, req: Request) -> str:
        seen.append(req)
        assert request_of(ctx) is req.head  # recorded for response-side filters
        return "ok"

    body = "ümlaut".encode("latin-1")
    headers = [("Content-Type", 'text/plain; charset="latin-1"'), ("X-A", "1")]
    await one(handler, "PUT", "/p/a?x=1&y=&x=2&z=%C3%A9", body, headers)
    (req,) = seen
    assert (req.method, req.target, req.path, req.query) == (
        "PUT",
        "/p/a?x=1&y=&x=2&z=%C3%A9",
        "/p/a",
        "x=1&y=&x=2&z=%C3%A9",
    )
    assert req.query_params == {"x": "1", "y": "", "z": "é"}
    assert req.headers["x-a"] == "1"
    assert req.body == body and req.text == "ümlaut"
    assert "PUT /p/a" in repr(req)


async def test_request_json_and_body_in_chunks() -> None:
    def handler(ctx: Context, req: Request) -> Any:
        return {"sum": sum(req.json())}

    head = RequestHead("POST", "/", Headers([("Content-Type", "application/json")]))
    out = await serve(handler, [MessageStart(head), Data(b"[1, 2"), Data(b", 3]"), MessageEnd()])
    assert responses(out)[0][1] == b'{"sum":6}'


# Errors ------------------------------------------------------------------------------


async def test_a_raising_handler_is_a_500_with_one_log_line_and_serving_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def handler(ctx: Context, req: Request) -> str:
        calls.append(req.path)
        if req.path == "/boom":
            raise RuntimeError("kaput")
        return "fine"

    with caplog.at_level(logging.INFO, logger="trioxy.http"):
        out = await serve(handler, request(target="/boom"), request(target="/next"))
    (bad, good) = responses(out)
    assert bad[0].status == 500 and bad[1] == b"Internal Server Error\n"
    assert bad[0].headers["Content-Length"] == str(len(bad[1]))
    assert good == (good[0], b"fine") and good[0].status == 200
    assert calls == ["/boom", "/next"]
    records = [r for r in caplog.records if r.name == "trioxy.http"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "\n" not in line and "GET /boom" in line and "RuntimeError: kaput" in line


async def test_a_handler_returning_none_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def forgot(ctx: Context, req: Request) -> None:
        pass

    with caplog.at_level(logging.ERROR, logger="trioxy.http"):
        head, _ = await one(forgot)
    assert head.status == 500
    assert "returned NoneType" in caplog.text


async def test_content_length_over_max_body_is_413_before_the_body_and_skips_the_handler() -> None:
    calls: list[bytes] = []
    proxy = Proxy()
    proxy.pipeline("main").serve_http(lambda ctx, req: calls.append(req.body) or "ok", max_body=10)
    head = RequestHead("POST", "/", Headers([("Content-Length", "11")]))
    async with open_pipeline(proxy.layout("main")) as h:
        await h.send(MessageStart(head))
        await h.settle()
        (answer, *_rest) = h.output
        assert answer.head.status == 413  # type: ignore[union-attr]
        assert answer.head.headers["Connection"] == "close"  # type: ignore[union-attr]
        assert isinstance(h.output[-1], MessageEnd)
        before = len(h.output)
        await h.send(Data(b"x" * 11), MessageEnd())
        await h.settle()
        assert len(h.output) == before  # the rest of that request is dropped
        # the next request on the stream is served
        await h.send(*request("POST", "/", b"small"), StreamEnd())
        await h.settle()
    assert calls == [b"small"]
    assert responses(h.output)[1][1] == b"ok"


async def test_body_growing_past_max_body_is_413_when_it_passes() -> None:
    proxy = Proxy()
    proxy.pipeline("main").serve_http(lambda ctx, req: "never", max_body=8)
    head = RequestHead("POST", "/", Headers([("Transfer-Encoding", "chunked")]))
    async with open_pipeline(proxy.layout("main")) as h:
        await h.send(MessageStart(head), Data(b"12345678"))
        await h.settle()
        assert h.output == []  # exactly max_body is fine so far
        await h.send(Data(b"9"))
        await h.settle()
        assert h.output[0].head.status == 413  # type: ignore[union-attr]
        await h.send(Data(b"more"), MessageEnd(), StreamEnd())
        await h.settle()
    assert [type(e) for e in h.output] == [MessageStart, Data, MessageEnd, StreamEnd]


async def test_head_request_keeps_the_length_and_sends_no_body() -> None:
    out = await serve(lambda ctx, req: "Hello, world", request("HEAD"))
    assert [type(e) for e in out] == [MessageStart, MessageEnd, StreamEnd]
    assert out[0].head.headers["Content-Length"] == "12"  # type: ignore[union-attr]


async def test_stream_ending_inside_a_request_passes_an_error_on() -> None:
    proxy = Proxy()
    proxy.pipeline("main").serve_http(lambda ctx, req: "x")
    out = await run_layout(
        proxy.layout("main"), [MessageStart(RequestHead()), Data(b"part"), StreamEnd()]
    )
    assert len(out) == 1 and isinstance(out[0], StreamEnd)
    assert isinstance(out[0].error, PipelineError)


async def test_a_non_http_message_is_a_script_error() -> None:
    proxy = Proxy()
    proxy.pipeline("main").serve_http(lambda ctx, req: "x")
    events = [MessageStart("bytes?"), Data(b"x"), MessageEnd(), StreamEnd()]
    out = await run_layout(proxy.layout("main"), events)
    assert len(out) == 1 and isinstance(out[0], StreamEnd)
    assert isinstance(out[0].error, PipelineError) and "demux_http" in str(out[0].error)


@pytest.mark.parametrize(
    ("args", "message"),
    [(("not callable",), "function"), ((print,), None)],
)
def test_arguments_are_checked_at_load(args: tuple[Any, ...], message: str | None) -> None:
    proxy = Proxy()
    if message is None:
        proxy.pipeline("ok").serve_http(*args)
        for bad in (-1, 1.5, True):
            with pytest.raises(ConfigError, match="max_body"):
                proxy.pipeline(f"bad{bad}").serve_http(print, max_body=bad)
    else:
        with pytest.raises(ConfigError, match=message):
            proxy.pipeline("bad").serve_http(*args)


# Under demux: one sub-pipeline per request, answers in order ------------------------


async def test_pipelined_requests_under_demux_are_answered_in_order() -> None:
    proxy = Proxy()

    async def handler(ctx: Context, req: Request) -> str:
        ctx.set(mine=req.path)  # a per-request context: never seen by the next one
        return req.path + (" again" if ctx.get("mine") != req.path else "")

    proxy.pipeline("main").demux().to(lambda p: p.serve_http(handler))
    events = [*request(target="/a"), *request(target="/b", body=b"x"), *request(target="/c")]
    out = await run_layout(proxy.layout("main"), [*events, StreamEnd()])
    assert [body for _, body in responses(out)] == [b"/a", b"/b", b"/c"]
    assert out[-1] == StreamEnd()
    assert join_data(out) == b"/a/b/c"


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.serve_http").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/serve_http.py example", "exec"), {})


def test_response_json_is_compact_utf8() -> None:
    response = Response.json({"k": "é"})
    assert json.loads(response.body) == {"k": "é"} and b"\xc3\xa9" in response.body


# End to end: curl against a script ------------------------------------------------------

E2E_SCRIPT = """
from pipeline import Proxy
from pipeline.settings import address, setting

LISTEN = setting("LISTEN", "127.0.0.1:8000", address)


def app(ctx, request):
    if request.path == "/boom":
        raise RuntimeError("the handler broke")
    return {"path": request.path, "size": len(request.body)}


proxy = Proxy()
proxy.listen(LISTEN).demux_http().to(lambda p: p.serve_http(app, max_body=100))
"""

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(*args: str) -> tuple[int, bytes]:
    """(status, body) fetched by curl."""
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--write-out",
            "\n%{http_code}",
            *args,
        ],
        capture_output=True,
        check=True,
    )
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body


@needs_curl
def test_curl_errors_bounds_and_recovery(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(E2E_SCRIPT)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with run_trioxy(script, env={"LISTEN": f"127.0.0.1:{port}"}) as proc:
        proc.wait_listening(port)
        assert curl(f"{base}/a") == (200, b'{"path":"/a","size":0}')
        assert curl(f"{base}/boom") == (500, b"Internal Server Error\n")
        assert curl("--data-binary", "x" * 100, f"{base}/up") == (200, b'{"path":"/up","size":100}')
        # over max_body, announced by Content-Length and sent chunked
        assert curl("--data-binary", "x" * 101, f"{base}/up")[0] == 413
        chunked = ["--header", "Transfer-Encoding: chunked", "--data-binary", "y" * 5000]
        assert curl(*chunked, f"{base}/up")[0] == 413
        assert curl(f"{base}/still/serving") == (200, b'{"path":"/still/serving","size":0}')
        assert proc.stop() == 0
    lines = [line for line in proc.stderr.splitlines() if "the handler broke" in line]
    assert len(lines) == 1, proc.stderr
    assert "GET /boom" in lines[0] and "RuntimeError" in lines[0]
    assert "Traceback" not in proc.stderr


def test_response_head_sets_the_length_in_place_and_drops_transfer_encoding() -> None:
    headers = [("A", "1"), ("content-length", "9"), ("Transfer-Encoding", "chunked")]
    head = Response(200, b"hey", [*headers, ("Content-Length", "7"), ("B", "2")]).head()
    assert head.headers.items() == [
        ("A", "1"),
        ("content-length", "3"),
        ("B", "2"),
        ("Content-Type", "application/octet-stream"),
    ]
    assert Response(204, headers=headers).head().headers.items() == [("A", "1")]
    kept = Response(304, headers=headers).head().headers.items()
    assert kept == [("A", "1"), ("content-length", "9")]
