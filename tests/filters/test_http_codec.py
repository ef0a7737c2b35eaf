"""The HTTP codec filters in memory: decoding, framing choices, keep-alive, HEAD,
100-continue and failure answers. Encoded bytes are read back with h11 (a peer we
did not write) rather than compared with hand-written bytes where framing is
what is tested."""

from __future__ import annotations

import importlib
import logging
import re
import textwrap
from typing import Any

import h11
import pytest

from filters.http_codec import strip_hop_by_hop
from pipeline import (
    ConfigError,
    ConnectRefused,
    Data,
    Event,
    MessageEnd,
    MessageStart,
    PipelineError,
    Proxy,
    ReadTimeout,
    StreamEnd,
)
from pipeline.context import Context
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, ProtocolError, RequestHead, ResponseHead


def layout(build: Any) -> Any:
    proxy = Proxy()
    build(proxy.pipeline("main"))
    return proxy.layout("main")


def h11_responses(data: bytes, methods: list[str]) -> list[tuple[h11.Response, bytes, list[Any]]]:
    """Read ``data`` as the responses to requests of ``methods``, with h11."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    out = []
    for method in methods:
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        response: Any = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(b"")  # the stream is over: close-delimited bodies end
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((response, body, list(event.headers)))
                break
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            break
        conn.start_next_cycle()
    return out


def response(status: int = 200, *fields: tuple[str, str], reason: str = "OK") -> MessageStart:
    return MessageStart(ResponseHead(status, reason, Headers(list(fields))))


# decode_http_request --------------------------------------------------------------------


async def test_decoder_turns_bytes_into_requests_across_odd_splits() -> None:
    wire = (
        b"POST /up?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 9\r\n\r\n"
        b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    pieces = [wire[i : i + 5] for i in range(0, len(wire), 5)]
    out = await run_layout(layout(lambda p: p.decode_http_request()), [*pieces, StreamEnd()])
    starts = [e.head for e in out if isinstance(e, MessageStart)]
    assert [(h.method, h.target, h.path, h.query) for h in starts] == [
        ("POST", "/up?x=1", "/up", "x=1"),
        ("GET", "/next", "/next", ""),
    ]
    ends = [e for e in out if isinstance(e, MessageEnd)]
    assert ends[0].tail is not None and ends[0].tail.get("x-sum") == "9"
    first_body = out[1 : out.index(ends[0])]
    assert join_data(first_body) == b"abcde"
    assert out[-1] == StreamEnd()


@pytest.mark.parametrize(
    ("wire", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"b" * 70000 + b"\r\n\r\n", 431),
    ],
)
async def test_decoder_ends_with_the_protocol_error(wire: bytes, status: int) -> None:
    out = await run_layout(layout(lambda p: p.decode_http_request()), [wire])
    [end] = out
    assert isinstance(end, StreamEnd) and isinstance(end.error, ProtocolError)
    assert end.error.status == status


async def test_decoder_max_body_is_413() -> None:
    wire = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"
    out = await run_layout(layout(lambda p: p.decode_http_request(max_body=5)), [wire])
    assert isinstance(out[-1], StreamEnd) and out[-1].error.status == 413  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [0, -1, "10", True])
def test_decoder_limits_are_checked_at_load(bad: Any) -> None:
    with pytest.raises(ConfigError, match="max_line"):
        Proxy().pipeline("x").decode_http_request(max_line=bad)


# encode_http_response: framing ----------------------------------------------------------


async def serve_events(
    requests: bytes, answers: list[list[Event]], *, remote: tuple[str, int] = ("10.1.2.3", 4567)
) -> list[Event]:
    """Decode ``requests`` and answer them, in order, with ``answers`` (each a
    response's events), through decode_http_request -> encode_http_response."""
    queue = list(answers)

    def answer(ctx: Any, head: Any, body: bytes) -> list[Event]:
        return queue.pop(0)

    lay = layout(lambda p: p.decode_http_request().replace_message(answer).encode_http_response())
    return await run_layout(lay, [requests], context=Context(remote=remote))


GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


async def test_content_length_passes_through_and_keep_alive_stays() -> None:
    out = await serve_events(
        GET, [[response(200, ("Content-Length", "5")), Data(b"hello"), MessageEnd()]]
    )
    assert join_data(out) == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert not any(isinstance(e, StreamEnd) for e in out)  # the connection stays open


async def test_a_whole_body_without_framing_gets_a_content_length() -> None:
    out = await serve_events(GET, [[response(200), Data(b"abc"), MessageEnd()]])
    [(resp, body, _)] = h11_responses(join_data(out), ["GET"])
    assert dict(resp.headers)[b"content-length"] == b"3" and body == b"abc"


async def test_a_streamed_body_without_framing_is_chunked_with_trailers() -> None:
    answer = [
        response(200),
        Data(b"ab"),
        Data(b"cd"),
        Data(b"ef"),
        MessageEnd(Headers([("X-T", "1")])),
    ]
    out = await serve_events(GET, [answer])
    [(resp, body, trailers)] = h11_responses(join_data(out), ["GET"])
    assert dict(resp.headers)[b"transfer-encoding"] == b"chunked"
    assert body == b"abcdef" and trailers == [(b"x-t", b"1")]


async def test_http10_client_gets_a_close_delimited_body() -> None:
    request = b"GET / HTTP/1.0\r\n\r\n"
    answer = [
        response(200, ("Transfer-Encoding", "chunked")),
        Data(b"ab"),
        Data(b"cd"),
        MessageEnd(),
    ]
    out = await serve_events(request, [answer])
    data = join_data(out)
    assert b"transfer-encoding" not in data.lower() and data.endswith(b"\r\n\r\nabcd")
    assert b"Connection: close" in data
    assert out[-1] == StreamEnd()


async def test_http10_keep_alive_is_kept_and_said() -> None:
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    out = await serve_events(
        request, [[response(200, ("Content-Length", "1")), Data(b"x"), MessageEnd()]]
    )
    assert b"Connection: keep-alive\r\n" in join_data(out)
    assert not any(isinstance(e, StreamEnd) for e in out)


async def test_head_response_has_no_body_and_keeps_its_length() -> None:
    requests = b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + GET
    answers = [
        [response(200, ("Content-Length", "5")), MessageEnd()],
        [response(200, ("Content-Length", "2")), Data(b"ok"), MessageEnd()],
    ]
    out = await serve_events(requests, answers)
    parsed = h11_responses(join_data(out), ["HEAD", "GET"])
    assert [(dict(r.headers)[b"content-length"], b) for r, b, _ in parsed] == [
        (b"5", b""),
        (b"2", b"ok"),
    ]


async def test_connection_close_closes_after_the_response() -> None:
    requests = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET
    answers = [[response(200, ("Content-Length", "1")), Data(b"1"), MessageEnd()]] * 2
    out = await serve_events(requests, answers)
    assert join_data(out).count(b"HTTP/1.1 200") == 1  # the second request is not read
    assert b"Connection: close\r\n" in join_data(out)
    assert out[-1] == StreamEnd()


# encode_http_response: failures -----------------------------------------------------------


def http_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trioxy.http"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConnectRefused("no upstream answered: 127.0.0.1:9: connection refused"), 502),
        (ReadTimeout("nothing read for 1s"), 504),
        (ProtocolError("bad chunk", 400), 400),
        (PipelineError("the script failed"), 500),
    ],
)
async def test_a_failure_before_the_response_is_answered(
    error: BaseException, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    lay = layout(
        lambda p: (
            p.decode_http_request()
            .replace_message(lambda ctx, h, b: StreamEnd(error))
            .encode_http_response()
        )
    )
    out = await run_layout(
        lay, [b"GET /x?y HTTP/1.1\r\nHost: h\r\n\r\n"], context=Context(remote=("10.1.2.3", 4567))
    )
    [(resp, body, _)] = h11_responses(join_data(out), ["GET"])
    assert resp.status_code == status
    assert dict(resp.headers)[b"connection"] == b"close"
    assert str(error) in body.decode()
    assert out[-1] == StreamEnd()  # a clean close: the answer is not lost to a reset
    [record] = http_logs(caplog)
    message = record.getMessage()
    assert message.startswith("10.1.2.3:4567 'GET /x?y HTTP/1.1': ")
    assert str(status) in message and str(error) in message


async def test_a_failure_after_the_response_started_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failure = ConnectRefused("reset")
    answer = [response(200, ("Content-Length", "10")), Data(b"01234"), StreamEnd(failure)]
    lay = layout(
        lambda p: (
            p.decode_http_request().replace_message(lambda ctx, h, b: answer).encode_http_response()
        )
    )
    out = await run_layout(lay, [GET])
    assert join_data(out) == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234"
    assert out[-1] == StreamEnd(failure)
    [record] = http_logs(caplog)
    assert "interrupted" in record.getMessage()


async def test_head_failure_answer_has_no_body() -> None:
    lay = layout(
        lambda p: (
            p.decode_http_request()
            .replace_message(lambda ctx, h, b: StreamEnd(ConnectRefused("x")))
            .encode_http_response()
        )
    )
    out = await run_layout(lay, [b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"])
    data = join_data(out)
    assert data.startswith(b"HTTP/1.1 502 ") and data.endswith(b"\r\n\r\n")


# Client side --------------------------------------------------------------------------------


async def test_client_pair_round_trip_with_head_and_interim_responses() -> None:
    """encode_http_request -> a canned server -> decode_http_response: the decoder
    learns each request's method from the encoder (HEAD: no body)."""
    server_bytes = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"  # to HEAD: no body follows
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    written: list[bytes] = []

    def server(ctx: Any, data: bytes) -> bytes | None:
        written.append(data)
        return server_bytes if len(written) == 2 else None

    lay = layout(lambda p: p.encode_http_request().replace_data(server).decode_http_response())
    head = RequestHead("HEAD", "/a", Headers([("Host", "h")]))
    post = RequestHead("POST", "/b", Headers([("Host", "h")]))
    async with open_pipeline(lay) as h:
        await h.send(
            MessageStart(head), MessageEnd(), MessageStart(post), Data(b"xy"), MessageEnd()
        )
        await h.settle()
        state = h.pipeline.context.vars["_http_client"]
        assert state.keep_alive is False and state.responses == 2
    out = h.output
    starts = [e.head for e in out if isinstance(e, MessageStart)]
    assert [s.status for s in starts] == [200, 201]
    assert join_data(out) == b"ok"
    # the request bytes, read by h11 as a server would
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"".join(written))
    events = []
    while (event := conn.next_event()) is not h11.NEED_DATA:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
    requests = [e for e in events if isinstance(e, h11.Request)]
    assert [(r.method, r.target) for r in requests] == [(b"HEAD", b"/a"), (b"POST", b"/b")]
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"xy"
    assert dict(requests[1].headers)[b"content-length"] == b"2"


async def test_response_decoder_error_is_502() -> None:
    lay = layout(
        lambda p: (
            p.encode_http_request()
            .replace_data(lambda ctx, d: b"SPAM\r\n\r\n")
            .decode_http_response()
        )
    )
    out = await run_layout(lay, [MessageStart(RequestHead()), MessageEnd()])
    assert isinstance(out[-1], StreamEnd) and out[-1].error.status == 502  # type: ignore[union-attr]


# Helpers -----------------------------------------------------------------------------------------


def test_strip_hop_by_hop() -> None:
    headers = Headers(
        [
            ("Host", "h"),
            ("Connection", "keep-alive, X-Private"),
            ("Keep-Alive", "timeout=5"),
            ("x-private", "1"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
            ("Accept", "*/*"),
        ]
    )
    assert strip_hop_by_hop(headers) == Headers([("Host", "h"), ("Accept", "*/*")])
    kept = strip_hop_by_hop(headers, keep_upgrade=True)
    assert kept is not None and kept.get("upgrade") == "websocket"
    assert kept.get("connection") == "upgrade"
    assert strip_hop_by_hop(Headers([("Host", "h")])) is None  # nothing to do: no copy


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.http_codec").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/http_codec.py example", "exec"), {})


async def test_a_response_head_that_cannot_be_written_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = [response(200, ("Content-Length", "ten")), Data(b"0123456789"), MessageEnd()]
    out = await serve_events(GET, [bad])
    [(resp, body, _)] = h11_responses(join_data(out), ["GET"])
    assert resp.status_code == 500 and b"invalid response" in body
    assert out[-1] == StreamEnd()
    assert len(http_logs(caplog)) == 1


async def test_response_decoder_relays_the_bytes_after_a_101() -> None:
    # After a 101 the server's bytes are the new protocol's: they come out as
    # the 101's body (the ones in the head's read too), and EOF ends it.
    written: list[bytes] = []

    def server(ctx: Any, data: bytes) -> bytes | None:
        written.append(data)
        if len(written) == 1:
            return (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nab"
            )
        return b"cd"

    lay = layout(lambda p: p.encode_http_request().replace_data(server).decode_http_response())
    head = RequestHead("GET", "/", Headers([("Host", "h"), ("Upgrade", "x")]))
    out = await run_layout(lay, [MessageStart(head), MessageEnd(), Data(b"1"), StreamEnd()])
    assert isinstance(out[0], MessageStart) and out[0].head.status == 101
    assert join_data(out) == b"abcd"
    assert out[-2:] == [MessageEnd(), StreamEnd()]
