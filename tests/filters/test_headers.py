"""set_request_headers / set_response_headers, forwarded_headers, request_id."""

from __future__ import annotations

import gzip
import http.client
import importlib
import json
import os
import re
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from filters.headers import new_request_id, request_of
from pipeline import ConfigError, Context, Data, Event, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.testing import run_layout
from protocols.http import Headers, RequestHead, ResponseHead
from tests.helpers import free_port, run_trioxy


def request(*fields: tuple[str, str], version: str = "1.1") -> RequestHead:
    return RequestHead("GET", "/x", Headers(list(fields)), version)


def response(*fields: tuple[str, str]) -> ResponseHead:
    return ResponseHead(200, "OK", Headers(list(fields)))


async def through(build: Any, head: Any, ctx: Context | None = None) -> tuple[Any, list[Event]]:
    """Run one message with ``head`` through the layout ``build`` makes; the head out."""
    proxy = Proxy()
    build(proxy.pipeline("main"))
    events = [MessageStart(head), Data(b"body"), MessageEnd(), StreamEnd()]
    out = await run_layout(proxy.layout("main"), events, context=ctx)
    assert out[1:] == events[1:]  # only the head changes
    return out[0].head, out  # type: ignore[union-attr]


# set_*_headers --------------------------------------------------------------------


async def test_set_request_headers_removes_sets_adds_in_that_order() -> None:
    original = request(("Host", "a"), ("Cookie", "x"), ("X-Tag", "1"), ("x-tag", "2"))
    head, _ = await through(
        lambda p: p.set_request_headers(
            set={"X-Tag": "only", "X-New": lambda ctx, h: h.method},
            add={"X-Multi": "a", "x-tag": "appended"},
            remove=["cookie"],
        ),
        original,
    )
    assert head.headers.items() == [
        ("Host", "a"),
        ("X-Tag", "only"),
        ("X-New", "GET"),
        ("X-Multi", "a"),
        ("x-tag", "appended"),
    ]
    assert original.headers.get_all("x-tag") == ["1", "2"]  # the input head is untouched


async def test_a_value_function_returning_none_leaves_the_header_alone() -> None:
    head, _ = await through(
        lambda p: p.set_request_headers(set={"Host": lambda ctx, h: None}), request(("Host", "a"))
    )
    assert head.headers["Host"] == "a"


async def test_set_request_headers_ignores_responses_and_vice_versa() -> None:
    head, _ = await through(lambda p: p.set_request_headers(set={"X": "1"}), response())
    assert "X" not in head.headers
    head, _ = await through(lambda p: p.set_response_headers(set={"X": "1"}), request())
    assert "X" not in head.headers
    head, _ = await through(
        lambda p: p.set_response_headers(remove=["Server"]), response(("Server", "s"))
    )
    assert "Server" not in head.headers


async def test_a_value_function_gets_the_context() -> None:
    ctx = Context().set(user="ada")
    head, _ = await through(
        lambda p: p.set_response_headers(add={"X-User": lambda c, h: c.user}), response(), ctx
    )
    assert head.headers["X-User"] == "ada"


async def test_a_value_with_a_newline_is_refused_at_run_time() -> None:
    proxy = Proxy()
    proxy.pipeline("main").set_response_headers(set={"X": lambda c, h: "a\r\nEvil: 1"})
    with pytest.raises(BaseExceptionGroup) as info:
        await run_layout(proxy.layout("main"), [MessageStart(response()), MessageEnd()])
    assert info.group_contains(ValueError, match="CR or LF")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"set": {"Bad Name": "x"}},
        {"set": {"X": "a\nb"}},
        {"add": {"X": 3}},
        {"set": [("X", "1")]},
        {"remove": "Cookie"},
    ],
)
def test_set_headers_arguments_are_checked_at_load(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Proxy().pipeline("main").set_request_headers(**kwargs)


# forwarded_headers ------------------------------------------------------------------


async def test_forwarded_headers_on_a_request() -> None:
    ctx = Context(remote=("192.0.2.1", 5000))
    head, _ = await through(
        lambda p: p.forwarded_headers(),
        request(
            ("Host", "site.example:8080"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-For", "198.51.100.2"),
            ("X-Forwarded-Proto", "https"),
            ("Via", "1.0 edge"),
        ),
        ctx,
    )
    h = head.headers
    assert h.get_all("X-Forwarded-For") == ["203.0.113.9, 198.51.100.2, 192.0.2.1"]
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Host"] == "site.example:8080"
    assert h.get_all("Via") == ["1.0 edge", "1.1 trioxy"]
    assert request_of(ctx) is head  # recorded for the response side


async def test_forwarded_headers_tls_ipv6_and_http10() -> None:
    ctx = Context(remote=("::1", 5000))
    ctx.tls = object()  # what a TLS filter leaves: any truthy TLS info
    head, _ = await through(
        lambda p: p.forwarded_headers(via="edge-7"), request(version="1.0"), ctx
    )
    h = head.headers
    assert h["X-Forwarded-For"] == "::1"
    assert h["X-Forwarded-Proto"] == "https"
    assert "X-Forwarded-Host" not in h  # no Host to copy
    assert h["Via"] == "1.0 edge-7"


async def test_forwarded_headers_can_be_turned_off_one_by_one() -> None:
    ctx = Context(remote=("192.0.2.1", 1))
    head, _ = await through(
        lambda p: p.forwarded_headers(for_=False, proto=False, host=False, via=None),
        request(("Host", "h")),
        ctx,
    )
    assert head.headers.items() == [("Host", "h")]


async def test_forwarded_headers_on_a_response_adds_via_only() -> None:
    head, _ = await through(lambda p: p.forwarded_headers(), response(("Via", "1.1 origin")))
    assert head.headers.items() == [("Via", "1.1 origin"), ("Via", "1.1 trioxy")]
    head, _ = await through(lambda p: p.forwarded_headers(via=None), response())
    assert head == response()


@pytest.mark.parametrize("via", ["", "a,b", 3])
def test_forwarded_headers_via_is_checked(via: Any) -> None:
    with pytest.raises(ConfigError, match="via"):
        Proxy().pipeline("main").forwarded_headers(via=via)


# request_id --------------------------------------------------------------------------


async def test_request_id_is_generated_recorded_and_copied_onto_the_response() -> None:
    ctx = Context()
    head, _ = await through(lambda p: p.request_id(), request(), ctx)
    rid = head.headers["X-Request-Id"]
    assert rid == ctx.request_id
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", rid)
    back, _ = await through(lambda p: p.request_id(), response(), ctx)
    assert back.headers["X-Request-Id"] == rid


async def test_a_client_id_is_kept_and_a_bad_one_replaced() -> None:
    ctx = Context()
    head, out = await through(lambda p: p.request_id("Trace"), request(("trace", "abc-1")), ctx)
    assert ctx.request_id == "abc-1" and head is out[0].head  # type: ignore[union-attr]
    for bad in ("", "x" * 201, "a\x01b"):
        ctx = Context()
        head, _ = await through(lambda p: p.request_id("Trace"), request(("Trace", bad)), ctx)
        assert head.headers.get_all("Trace") == [ctx.request_id] and ctx.request_id != bad


async def test_a_response_with_its_own_id_or_no_recorded_id_is_left_alone() -> None:
    ctx = Context().set(request_id="mine")
    head, _ = await through(lambda p: p.request_id(), response(("X-Request-Id", "theirs")), ctx)
    assert head.headers.get_all("X-Request-Id") == ["theirs"]
    head, _ = await through(lambda p: p.request_id(), response(), Context())
    assert "X-Request-Id" not in head.headers


def test_ids_are_unique_and_a_forked_child_gets_a_new_prefix() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its id and leave at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child.split("-")[0] != new_request_id().split("-")[0]
    assert child.split("-")[1] == "1"


async def test_request_and_response_sides_in_one_per_request_pipeline() -> None:
    """The documented placement: request-side filters, the answering filter,
    response-side filters; the response gets the request's id and Via."""
    proxy = Proxy()
    (
        proxy.pipeline("main")
        .demux()
        .to(
            lambda p: (
                p.request_id()
                .forwarded_headers()
                .serve_http(lambda ctx, req: req.headers["X-Forwarded-For"])
                .forwarded_headers()
                .request_id()
            )
        )
    )
    ctx = Context(remote=("192.0.2.5", 1))
    events: list[Event] = []
    for _ in range(2):
        events += [MessageStart(request(("Host", "h"))), MessageEnd()]
    out = await run_layout(proxy.layout("main"), [*events, StreamEnd()], context=ctx)
    heads = [e.head for e in out if isinstance(e, MessageStart)]
    bodies = [e.data for e in out if isinstance(e, Data)]
    assert bodies == [b"192.0.2.5", b"192.0.2.5"]
    ids = [h.headers["X-Request-Id"] for h in heads]
    assert len(set(ids)) == 2  # one per request: each has its own child context
    assert all(h.headers["Via"] == "1.1 trioxy" for h in heads)
    assert ctx.get("request_id") is None  # nothing leaked into the connection's context


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.headers").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/headers.py example", "exec"), {})


# End to end: a reverse proxy between http.client and http.server ----------------------

PROXY_SCRIPT = """
from pipeline import Proxy
from pipeline.settings import address, setting

LISTEN = setting("LISTEN", "127.0.0.1:8000", address)
UPSTREAM = setting("UPSTREAM", "127.0.0.1:8080", address)

proxy = Proxy()
(proxy.listen(LISTEN)
    .demux_http()
    .to(lambda p: p
        .request_id()
        .forwarded_headers()
        .set_request_headers(remove=["Cookie"], set={"X-Debug": lambda ctx, h: h.method})
        .mux_http().to(lambda q: q.connect(UPSTREAM))
        .forwarded_headers()
        .request_id()
        .compress_http(min_size=0)))
"""


class EchoHeaders(BaseHTTPRequestHandler):
    """Answers with the request's headers as JSON (a list of pairs)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(list(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_reverse_proxy_rewrites_both_ways(tmp_path: Path) -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    script = tmp_path / "rewriting_proxy.py"
    script.write_text(PROXY_SCRIPT)
    port = free_port()
    env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAM": f"127.0.0.1:{upstream.server_port}"}
    try:
        with run_trioxy(script, env=env) as proc:
            proc.wait_listening(port)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            try:
                answers = []
                for rid in (None, "client-chosen-1"):
                    headers = {"Cookie": "secret", "Accept-Encoding": "gzip"}
                    if rid:
                        headers["X-Request-Id"] = rid
                    conn.request("GET", "/", headers=headers)
                    response = conn.getresponse()
                    body = gzip.decompress(response.read())
                    answers.append((response, dict(json.loads(body))))
            finally:
                conn.close()
        assert "Traceback" not in proc.stderr
    finally:
        upstream.shutdown()
        upstream.server_close()
        thread.join()
    for (response, seen), rid in zip(answers, (None, "client-chosen-1"), strict=True):
        assert seen["X-Forwarded-For"] == "127.0.0.1"
        assert seen["X-Forwarded-Proto"] == "http"
        assert seen["X-Forwarded-Host"] == f"127.0.0.1:{port}"
        assert seen["Via"] == "1.1 trioxy" and seen["X-Debug"] == "GET"
        assert "Cookie" not in seen
        if rid is None:  # made by the proxy
            assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]+", seen["X-Request-Id"])
        else:  # the client's, kept
            assert seen["X-Request-Id"] == rid
        assert response.getheader("X-Request-Id") == seen["X-Request-Id"]
        assert response.getheader("Via") == "1.1 trioxy"
        assert response.getheader("Content-Encoding") == "gzip"
