"""mux_http in memory: the pool (reuse, retirement, limits, idle time), the retry,
and the proxy header rules. The upstream is an in-memory server speaking real HTTP
through h11, standing where ``connect`` would be."""

from __future__ import annotations

import importlib
import logging
import re
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio
import trio.testing

from filters.http_mux import MuxHttp
from pipeline import (
    ConfigError,
    ConnectionReset,
    ConnectRefused,
    Data,
    Event,
    Filter,
    MessageEnd,
    MessageStart,
    Proxy,
    StreamEnd,
)
from pipeline.live import service_nursery
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, RequestHead

Answer = Callable[[h11.Request, bytes, int], "list[Any] | BaseException | None"]


class Upstream:
    """Shared by every connection of a test: what each one received."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or (lambda req, body, n: ok(req.target))
        self.connections: list[list[h11.Request]] = []
        self.open = 0
        self.gate: trio.Event | None = None  # when set: answers wait for it


def ok(text: bytes | str, *extra: tuple[str, str]) -> list[Any]:
    body = text.encode() if isinstance(text, str) else text
    headers = [("Content-Length", str(len(body))), *extra]
    return [h11.Response(status_code=200, headers=headers), h11.Data(data=body), h11.EndOfMessage()]


class FakeServer(Filter):
    """One connection to the in-memory upstream: HTTP bytes in, HTTP bytes out."""

    name = "fake_server"

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.conn = h11.Connection(h11.SERVER)
        self.requests: list[h11.Request] | None = None
        self.body = b""
        self.request: Any = None
        self.ended = False

    async def on_event(self, event: Event) -> None:
        if self.requests is None:
            self.requests = []
            self.upstream.connections.append(self.requests)
            self.upstream.open += 1
        if isinstance(event, Data):
            self.conn.receive_data(event.data)
            await self._run()

    async def _run(self) -> None:
        assert self.requests is not None
        while not self.ended:
            ev = self.conn.next_event()
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Request):
                self.request, self.body = ev, b""
                self.requests.append(ev)
            elif isinstance(ev, h11.Data):
                self.body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                if self.upstream.gate is not None:
                    await self.upstream.gate.wait()
                n = len(self.upstream.connections)
                answer = self.upstream.answer(self.request, self.body, n)
                if answer is None:
                    return  # never answers
                if isinstance(answer, BaseException):
                    await self._end(answer)
                    return
                out = b""
                raw = False
                for item in answer:
                    if isinstance(item, bytes):
                        out += item  # raw bytes, then the server closes
                        raw = True
                    else:
                        out += self.conn.send(item) or b""
                await self.output(Data(out))
                if raw or self.conn.our_state is h11.MUST_CLOSE:
                    await self._end(None)
                    return
                self.conn.start_next_cycle()

    async def _end(self, error: BaseException | None) -> None:
        self.ended = True
        self.upstream.open -= 1
        await self.output(StreamEnd(error))

    def close(self) -> None:
        if self.requests is not None and not self.ended:
            self.ended = True
            self.upstream.open -= 1


def client(upstream: Upstream, **options: Any) -> Any:
    proxy = Proxy()
    (proxy.pipeline("client").mux_http(**options).to(lambda p: p.add_filter(FakeServer, upstream)))
    return proxy.layout("client")


def get(path: str = "/", *fields: tuple[str, str], method: str = "GET") -> RequestHead:
    return RequestHead(method, path, Headers([("Host", "backend"), *fields]))


async def request(lay: Any, head: RequestHead, body: bytes = b"") -> list[Event]:
    events: list[Event] = [MessageStart(head)]
    if body:
        events.append(Data(body))
    return await run_layout(lay, [*events, MessageEnd(), StreamEnd()])


@asynccontextmanager
async def services() -> AsyncIterator[trio.Nursery]:
    """A long-lived service nursery, as the runtime provides: pooled connections
    outlive the streams that opened them."""
    async with trio.open_nursery() as nursery:
        token = service_nursery.set(nursery)
        try:
            yield nursery
        finally:
            service_nursery.reset(token)
            nursery.cancel_scope.cancel()


def mux_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioxy.mux_http"]


# Reuse ---------------------------------------------------------------------------------


async def test_requests_of_many_streams_reuse_one_connection() -> None:
    async with services():
        upstream = Upstream()
        lay = client(upstream)
        for path in ("/a", "/b", "/c"):
            out = await request(lay, get(path))
            assert isinstance(out[0], MessageStart) and out[0].head.status == 200
            assert join_data(out) == path.encode() and out[-1] == StreamEnd()
        assert [[r.target for r in c] for c in upstream.connections] == [[b"/a", b"/b", b"/c"]]


async def test_keys_separate_connections() -> None:
    async with services():
        upstream = Upstream()
        lay = client(upstream, key=lambda ctx: ctx.tenant)
        for tenant in ("x", "y", "x"):
            async with open_pipeline(lay) as h:
                h.pipeline.context.set(tenant=tenant)
                await h.send(MessageStart(get("/" + tenant)), MessageEnd(), StreamEnd())
                await h.settle()
        assert [[r.target for r in c] for c in upstream.connections] == [[b"/x", b"/x"], [b"/y"]]


@pytest.mark.parametrize(
    "closing",
    [
        ok("bye", ("Connection", "close")),
        # HTTP/1.0 without keep-alive, delimited by the close
        [b"HTTP/1.0 200 OK\r\n\r\nbye"],
    ],
)
async def test_a_connection_the_server_closes_is_not_reused(closing: Any) -> None:
    async with services():
        answers = iter([closing, ok("next")])
        upstream = Upstream(lambda req, body, n: next(answers))
        lay = client(upstream)
        first = await request(lay, get("/1"))
        assert join_data(first) == b"bye"
        second = await request(lay, get("/2"))
        assert join_data(second) == b"next"
        assert [len(c) for c in upstream.connections] == [1, 1]


async def test_server_eof_while_idle_retires_the_connection() -> None:
    async with services():
        upstream = Upstream()
        lay = client(upstream)
        await request(lay, get("/1"))
        [session] = lay.specs[0].state.keys["backend"].idle
        await session.pipeline.filters[0].output(StreamEnd())  # the server closes
        assert len(lay.specs[0].state) == 0
        await request(lay, get("/2"))
        assert len(upstream.connections) == 2


async def test_max_connections_per_key_makes_requests_wait() -> None:
    async with services():
        upstream = Upstream()
        upstream.gate = trio.Event()
        lay = client(upstream, max_connections_per_key=1)
        outputs: list[list[Event]] = []

        async def one(path: str) -> None:
            outputs.append(await request(lay, get(path)))

        async with trio.open_nursery() as nursery:
            for path in ("/1", "/2", "/3"):
                nursery.start_soon(one, path)
            await trio.testing.wait_all_tasks_blocked()
            keys = lay.specs[0].state.keys["backend"]
            assert upstream.open == 1 and len(keys.waiters) == 2  # two wait for the one
            upstream.gate.set()
        assert sorted(join_data(o) for o in outputs) == [b"/1", b"/2", b"/3"]
        assert len(upstream.connections) == 1  # the limit held: all three on one connection


async def test_idle_connections_close_after_max_idle(autojump_clock: Any) -> None:
    async with services():
        upstream = Upstream()
        lay = client(upstream, max_idle=30)
        await request(lay, get("/1"))
        await trio.sleep(20)
        await request(lay, get("/2"))  # reused: idle for 20s only
        assert len(lay.specs[0].state) == 1
        await trio.sleep(29)
        assert len(lay.specs[0].state) == 1
        await trio.sleep(2)  # 31s idle
        assert len(lay.specs[0].state) == 0 and upstream.open == 0
        assert [len(c) for c in upstream.connections] == [2]


# Failures and the retry ----------------------------------------------------------------------


async def test_idempotent_request_is_retried_once_on_another_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with services():
        caplog.set_level(logging.INFO)
        upstream = Upstream(
            lambda req, body, n: ConnectionReset("reset by peer") if n == 1 else ok("second try")
        )
        out = await request(client(upstream), get("/r"))
        assert join_data(out) == b"second try"
        assert len(upstream.connections) == 2
        [record] = mux_logs(caplog)
        assert "GET /r: retrying" in record.getMessage() and "reset by peer" in record.getMessage()


async def test_a_post_that_was_sent_is_not_retried() -> None:
    async with services():
        upstream = Upstream(lambda req, body, n: ConnectionReset("reset by peer"))
        out = await request(client(upstream), get("/p", method="POST"), b"data")
        assert out == [StreamEnd(out[-1].error)] and isinstance(out[-1].error, ConnectionReset)  # type: ignore[union-attr]
        assert len(upstream.connections) == 1


async def test_a_request_never_sent_is_retried_whatever_its_method() -> None:
    async with services():
        upstream = Upstream(lambda req, body, n: ConnectRefused("refused") if n == 1 else ok("ok"))
        out = await request(client(upstream), get("/p", method="POST"), b"data")
        assert join_data(out) == b"ok"


async def test_the_retry_fails_too() -> None:
    async with services():
        upstream = Upstream(lambda req, body, n: ConnectionReset(f"reset {n}"))
        out = await request(client(upstream), get("/r"))
        [end] = out
        assert isinstance(end, StreamEnd) and str(end.error) == "reset 2"
        assert len(upstream.connections) == 2  # once, not more


async def test_a_failure_after_the_response_started_is_passed_on() -> None:
    async with services():
        upstream = Upstream(
            lambda req, body, n: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"]
        )
        # the server sends half the body and closes
        out = await request(client(upstream), get("/half"))
        assert out[0].head.status == 200  # type: ignore[union-attr]
        assert join_data(out) == b"01234"
        assert isinstance(out[-1], StreamEnd) and out[-1].error.status == 502  # type: ignore[union-attr]
        assert len(upstream.connections) == 1  # no retry once the response started


async def test_a_stream_closed_before_its_response_closes_the_connection() -> None:
    async with services():
        upstream = Upstream(lambda req, body, n: None)  # never answers
        lay = client(upstream)
        async with open_pipeline(lay) as h:
            await h.send(MessageStart(get("/slow")), MessageEnd())
            await h.settle()
            assert upstream.open == 1
        assert upstream.open == 0 and len(lay.specs[0].state) == 0


# Proxy header rules --------------------------------------------------------------------------


async def test_hop_by_hop_headers_and_expect_are_not_forwarded() -> None:
    async with services():
        upstream = Upstream(
            lambda req, body, n: ok("x", ("Keep-Alive", "timeout=5"), ("Connection", "keep-alive"))
        )
        head = get(
            "/h",
            ("Connection", "X-Secret"),
            ("X-Secret", "1"),
            ("Proxy-Connection", "keep-alive"),
            ("Expect", "100-continue"),
            ("Accept", "*/*"),
        )
        out = await request(client(upstream), head, b"body")
        [[sent]] = upstream.connections
        names = {k.decode() for k, _ in sent.headers}
        assert names == {"host", "accept", "content-length"}
        response = out[0].head  # type: ignore[union-attr]
        assert response.headers.items() == [("Content-Length", "1")]


@pytest.mark.parametrize(
    "options",
    [
        {"max_idle": 0},
        {"max_idle": "x"},
        {"max_connections_per_key": -1},
        {"key": "host"},
        {"max_line": 0},
        {"max_request_body": -1},
    ],
)
def test_options_are_checked_at_load(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Proxy().pipeline("p").mux_http(**options).to(lambda p: p.dump())


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.http_mux").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/http_mux.py example", "exec"), {})


def test_is_registered() -> None:
    from pipeline.plugins import filter_registry

    assert filter_registry()["mux_http"] is MuxHttp


async def test_a_request_head_that_cannot_be_written_ends_the_stream() -> None:
    async with services():
        upstream = Upstream()
        out = await request(client(upstream), get("/", ("Content-Length", "x")), b"body")
        [end] = out
        assert isinstance(end, StreamEnd) and "invalid request" in str(end.error)
        assert upstream.connections == []  # nothing was sent


async def test_no_retry_once_a_byte_of_the_response_arrived() -> None:
    async with services():
        upstream = Upstream(lambda req, body, n: [b"HTTP/1.1 200 O"])  # then closes
        out = await request(client(upstream), get("/partial"))
        [end] = out
        assert isinstance(end, StreamEnd) and end.error.status == 502  # type: ignore[union-attr]
        assert len(upstream.connections) == 1


async def test_a_request_body_over_the_buffer_limit_is_413() -> None:
    async with services():
        upstream = Upstream()
        lay = client(upstream, max_request_body=10)
        out = await run_layout(
            lay,
            [MessageStart(get("/big", method="POST")), Data(b"x" * 6), Data(b"y" * 6)],
        )
        [end] = out
        assert isinstance(end, StreamEnd) and end.error.status == 413  # type: ignore[union-attr]
        assert upstream.connections == []
        small = await request(lay, get("/small", method="POST"), b"z" * 10)
        assert join_data(small) == b"/small"


def test_options_are_checked_per_type_after_a_valid_set() -> None:
    """Constructors skip the checks for an argument set seen valid before: a value
    equal to a valid one but of another type (True == 1) is still refused."""
    Proxy().pipeline("ok").mux_http(max_connections_per_key=1).to(lambda p: p.dump())
    with pytest.raises(ConfigError):
        Proxy().pipeline("p").mux_http(max_connections_per_key=True).to(lambda p: p.dump())
