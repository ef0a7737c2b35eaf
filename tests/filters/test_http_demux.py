"""demux_http in memory: a sub-pipeline per request, responses in request order,
failures answered, 100-continue. Responses are read back with h11."""

from __future__ import annotations

import importlib
import logging
import re
import textwrap
from typing import Any

import h11
import pytest
import trio
import trio.testing

from filters.http_demux import DemuxHttp
from pipeline import (
    ConfigError,
    ConnectTimeout,
    Data,
    Event,
    Filter,
    MessageEnd,
    MessageStart,
    Proxy,
    StreamEnd,
)
from pipeline.context import Context
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, RequestHead, ResponseHead


class Answer(Filter):
    """Answers each request with its path and body, after ``?delay=`` seconds,
    from a task (as ``connect`` would); ``/fail`` fails, ``/mute`` ends silently."""

    name = "answer"

    def __init__(self) -> None:
        self.head: RequestHead | None = None
        self.body = b""

    async def on_event(self, event: Event) -> None:
        if isinstance(event, MessageStart):
            self.head = event.head
        elif isinstance(event, Data):
            self.body += event.data
        elif isinstance(event, MessageEnd):
            self.pipeline.start_task(self._answer)

    async def _answer(self) -> None:
        head = self.head
        assert head is not None
        query = head.query
        if query.startswith("delay="):
            await trio.sleep(float(query[6:]))
        if head.path == "/fail":
            await self.output(StreamEnd(ConnectTimeout("upstream too slow", "10.0.0.1:80")))
            return
        if head.path == "/mute":
            await self.output(StreamEnd())
            return
        payload = head.path.encode() + b":" + self.body
        headers = Headers([("Content-Length", str(len(payload)))])
        await self.output(MessageStart(ResponseHead(200, "OK", headers)))
        await self.output(Data(payload))
        await self.output(MessageEnd())


def server(**options: Any) -> Any:
    proxy = Proxy()
    proxy.pipeline("server").demux_http(**options).to(lambda p: p.add_filter(Answer))
    return proxy.layout("server")


def responses(data: bytes, methods: list[str]) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    out = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            assert event is not h11.NEED_DATA, f"incomplete: {data!r}"
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        out.append((status, headers, body))
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return out


def http_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioxy.http"]


async def test_pipelined_responses_come_back_in_request_order() -> None:
    wire = (
        b"GET /slow?delay=0.2 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /fast HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    async with open_pipeline(server()) as h:
        await h.send(wire)
        with trio.fail_after(5):
            await h.ended.wait()
    parsed = responses(h.data, ["GET", "POST", "GET"])
    assert [p[2] for p in parsed] == [b"/slow:", b"/fast:abc", b"/last:"]
    assert h.output[-1] == StreamEnd()


async def test_a_failing_request_is_answered_and_ends_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wire = (
        b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /never HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    ctx = Context(remote=("192.0.2.7", 5000))
    out = await run_layout(server(), [wire], context=ctx)
    parsed = responses(join_data(out), ["GET", "GET", "GET"])
    assert (parsed[0][0], parsed[0][2]) == (200, b"/ok:")
    status, headers, body = parsed[1]
    assert status == 504 and headers[b"connection"] == b"close"
    assert b"upstream too slow" in body
    assert len(parsed) == 2 and out[-1] == StreamEnd()
    [record] = http_logs(caplog)
    assert record.getMessage() == (
        "192.0.2.7:5000 'GET /fail HTTP/1.1': 504 Gateway Timeout: upstream too slow"
    )


async def test_a_sub_pipeline_that_answers_nothing_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = await run_layout(server(), [b"GET /mute HTTP/1.1\r\nHost: h\r\n\r\n"])
    [(status, _, body)] = responses(join_data(out), ["GET"])
    assert status == 500 and b"without answering" in body
    assert len(http_logs(caplog)) == 1


async def test_a_malformed_request_after_good_ones_is_400(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_pipeline(server()) as h:
        await h.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        await h.settle()
        await h.send(b"GET /b HTTP/9.9\r\nHost: h\r\n\r\n")
        await h.settle()
    parsed = responses(h.data, ["GET", "GET"])
    assert [p[0] for p in parsed] == [200, 505]
    [record] = http_logs(caplog)
    assert "505" in record.getMessage()


async def test_expect_100_continue_is_answered_when_the_body_is_needed() -> None:
    head = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    async with open_pipeline(server()) as h:
        await h.send(head)
        await h.settle()
        assert h.data == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any byte of body
        await h.send(b"data")
        await h.settle()
    [(status, headers, body)] = responses(h.data, ["POST"])
    assert (status, body) == (200, b"/up:data")
    assert b"connection" not in headers  # the connection stays open


async def test_100_continue_waits_for_the_earlier_responses() -> None:
    first = b"GET /slow?delay=0.2 HTTP/1.1\r\nHost: h\r\n\r\n"
    second = b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    async with open_pipeline(server()) as h:
        await h.send(first + second)
        await trio.testing.wait_all_tasks_blocked()
        assert h.data == b""  # the 100 may not overtake the first response
        with trio.fail_after(5):
            while b"100 Continue" not in h.data:
                await trio.sleep(0.01)
        assert h.data.index(b"/slow:") < h.data.index(b"100 Continue")
        await h.send(b"ok")
        await h.settle()
    parsed = responses(h.data, ["GET", "PUT"])
    assert [p[2] for p in parsed] == [b"/slow:", b"/up:ok"]


async def test_limits_are_the_decoder_limits() -> None:
    out = await run_layout(
        server(max_body=3), [b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n12345"]
    )
    [(status, headers, _)] = responses(join_data(out), ["POST"])
    assert status == 413 and headers[b"connection"] == b"close"


@pytest.mark.parametrize("options", [{"max_pending": 0}, {"max_headers": 0}, {"max_body": -1}])
def test_options_are_checked_at_load(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Proxy().pipeline("p").demux_http(**options).to(lambda p: p.dump())


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.http_demux").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/http_demux.py example", "exec"), {})


def test_is_registered() -> None:
    from pipeline.plugins import filter_registry

    assert filter_registry()["demux_http"] is DemuxHttp


@pytest.mark.parametrize(
    ("upgrade", "options"),
    [("h2c", {}), ("websocket", {"websocket": None})],
)
async def test_an_upgrade_is_not_passed_on_and_http_goes_on(
    upgrade: str, options: dict[str, Any]
) -> None:
    # Other upgrades than WebSocket, and WebSocket with websocket=None: the
    # request is an ordinary one (the answer is not a 101).
    wire = (
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: "
        + upgrade.encode()
        + b"\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    out = await run_layout(server(**options), [wire])
    parsed = responses(join_data(out), ["GET", "GET"])
    assert [(s, b) for s, _, b in parsed] == [(200, b"/ws:"), (200, b"/next:")]


async def test_connect_is_501(caplog: pytest.LogCaptureFixture) -> None:
    out = await run_layout(server(), [b"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"])
    [(status, headers, _)] = responses(join_data(out), ["CONNECT"])
    assert status == 501 and headers[b"connection"] == b"close"
    assert len(http_logs(caplog)) == 1


async def test_each_request_is_recorded_in_its_context_for_response_side_filters() -> None:
    proxy = Proxy()
    (
        proxy.pipeline("gz")
        .demux_http()
        .to(lambda p: p.serve_http(lambda ctx, req: "x" * 2000).compress_http(min_size=10))
    )
    request = b"GET /a HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n"
    out = await run_layout(proxy.layout("gz"), [Data(request), StreamEnd()])
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/a", headers=[("Host", "h")]))
    client.send(h11.EndOfMessage())
    client.receive_data(join_data(out))
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert (b"content-encoding", b"gzip") in response.headers
