"""protocols.http's writer: round trips through our parser and h11, framing, and the
heads it refuses to write (header injection, response splitting)."""

from __future__ import annotations

from http import HTTPStatus

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.http import (
    REASONS,
    EndOfMessage,
    Headers,
    InvalidHeadError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    body_framing,
    chunk,
    last_chunk,
    request_head_bytes,
    response_head_bytes,
)

from .http_corpus.reference import h11_requests, h11_responses, normalise
from .http_corpus.strategies import VCHARS, plain_names, tokens

ROUND = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values as a head holds them: no surrounding whitespace (the parser strips it).
clean_values = st.text(alphabet=VCHARS + " \t\xe9\xff", max_size=20).map(lambda v: v.strip(" \t"))
fields = st.lists(st.tuples(plain_names, clean_values), max_size=6)
bodies = st.lists(st.binary(min_size=0, max_size=30), max_size=4)


def encode_body(headers: Headers, parts: list[bytes], trailers: Headers | None) -> bytes:
    framing = body_framing(headers)
    if framing == "chunked":
        return b"".join(chunk(p) for p in parts) + last_chunk(trailers)
    return b"".join(parts)


@st.composite
def requests(draw: st.DrawFn) -> tuple[RequestHead, list[bytes], Headers | None]:
    items = [("Host", "example.com"), *draw(fields)]
    parts = draw(bodies)
    trailers = None
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "length":
        items.append(("Content-Length", str(sum(map(len, parts)))))
    elif framing == "chunked":
        items.append(("Transfer-Encoding", "chunked"))
        trailers = Headers(draw(fields)) or None
    else:
        parts = []
    method = draw(st.sampled_from(["GET", "POST", "PUT"]) | tokens.filter(lambda m: m != "CONNECT"))
    target = draw(st.text(alphabet=VCHARS, max_size=20).map(lambda t: "/" + t))
    return RequestHead(method, target, Headers(items), "1.1"), parts, trailers


@ROUND
@given(requests())
def test_request_round_trip(request: tuple[RequestHead, list[bytes], Headers | None]) -> None:
    head, parts, trailers = request
    wire = request_head_bytes(head) + encode_body(head.headers, parts, trailers)
    items = RequestParser().feed(wire)
    assert items[0] == head
    assert b"".join(i for i in items if type(i) is bytes) == b"".join(parts)
    assert items[-1] == EndOfMessage(trailers)
    messages, error, _ = h11_requests(wire)
    assert not error
    assert messages == [
        (
            ("request", head.method, head.target, "1.1", normalise(head.headers.items())),
            b"".join(parts),
            normalise(trailers.items()) if trailers else (),
        )
    ]


@ROUND
@given(
    st.integers(200, 599),
    st.text(alphabet=VCHARS + " ", max_size=15),
    fields,
    bodies,
    st.booleans(),
)
def test_response_round_trip(
    status: int, reason: str, items: list, parts: list[bytes], use_chunked: bool
) -> None:
    headers = Headers(items)
    if use_chunked:
        headers.add("Transfer-Encoding", "chunked")
    else:
        headers.add("Content-Length", str(sum(map(len, parts))))
    head = ResponseHead(status, reason, headers)
    wire = response_head_bytes(head)
    if status in (204, 304):  # no body, whatever the framing fields say
        parts = []
    else:
        wire += encode_body(headers, parts, None)
    parser = ResponseParser()
    parser.expect("GET")
    got = parser.feed(wire)
    expected_reason = reason or REASONS.get(status, "")
    assert got[0] == head.replace(reason=expected_reason)
    assert b"".join(i for i in got if type(i) is bytes) == b"".join(parts)
    assert got[-1] == EndOfMessage()
    messages, error, _ = h11_responses(wire, ["GET"])
    assert not error
    assert messages[0][0][1:4] == (status, expected_reason, "1.1")
    assert messages[0][1] == b"".join(parts)


def test_reasons_match_the_standard_library_where_rfc_9110_kept_the_name() -> None:
    renamed = {413, 414, 416, 422}  # RFC 9110 renamed these; older Pythons keep RFC 7231's
    stdlib = {s.value: s.phrase for s in HTTPStatus}
    for status, phrase in REASONS.items():
        if status in stdlib and status not in renamed:
            assert phrase == stdlib[status], status
    assert response_head_bytes(ResponseHead(404)).startswith(b"HTTP/1.1 404 Not Found\r\n")
    # Unknown status, no reason: the status line keeps its space.
    assert response_head_bytes(ResponseHead(599)) == b"HTTP/1.1 599 \r\n\r\n"


def test_chunks() -> None:
    assert chunk(b"") == b""  # an empty chunk would end the body
    assert chunk(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert last_chunk() == b"0\r\n\r\n" == last_chunk(Headers())
    # h11 writes the same bytes for the same chunks and trailers.
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(
            method="POST", target="/", headers=[("Host", "a"), ("Transfer-Encoding", "chunked")]
        )
    )
    theirs = conn.send(h11.Data(data=b"abc")) + conn.send(h11.EndOfMessage(headers=[("X-T", "1")]))
    assert chunk(b"abc") + last_chunk(Headers([("X-T", "1")])) == theirs


def test_body_framing() -> None:
    assert body_framing(Headers([("content-length", "12")])) == 12
    assert body_framing(Headers([("Content-Length", "5, 5")])) == 5
    assert body_framing(Headers([("Transfer-Encoding", "gzip, chunked")])) == "chunked"
    assert body_framing(Headers([("Content-Length", "3"), ("Transfer-Encoding", "chunked")])) == (
        "chunked"
    )
    assert body_framing(Headers([("Host", "a")])) is None
    for bad in (
        [("Content-Length", "x")],
        [("Content-Length", "1"), ("Content-Length", "2")],
        [("Transfer-Encoding", "gzip")],
    ):
        with pytest.raises(InvalidHeadError):
            body_framing(Headers(bad))


@pytest.mark.parametrize(
    "head",
    [
        RequestHead("GET", "/", Headers([("X-A", "a\r\nInjected: yes")])),
        RequestHead("GET", "/", Headers([("X-A", "a\nb")])),
        RequestHead("GET", "/", Headers([("X-A", "a\0b")])),
        RequestHead("GET", "/", Headers([("Bad Name", "v")])),
        RequestHead("GET", "/", Headers([("X-A\r\n", "v")])),
        RequestHead("GET", "/", Headers([("X-A", "\u20ac")])),
        RequestHead("GET", "/a b", Headers()),
        RequestHead("GET", "/a\r\n", Headers()),
        RequestHead("G T", "/", Headers()),
        RequestHead("GET", "/", Headers(), "2"),
    ],
)
def test_invalid_request_heads_are_not_written(head: RequestHead) -> None:
    with pytest.raises(InvalidHeadError):
        request_head_bytes(head)


@pytest.mark.parametrize(
    "head",
    [
        ResponseHead(200, "OK\r\nSet-Cookie: x=1"),
        ResponseHead(200, "", Headers([("Location", "/a\r\n\r\n<html>")])),
        ResponseHead(99),
        ResponseHead(1000),
    ],
)
def test_invalid_response_heads_are_not_written(head: ResponseHead) -> None:
    with pytest.raises(InvalidHeadError):
        response_head_bytes(head)
    with pytest.raises(InvalidHeadError):
        last_chunk(Headers([("X-T", "a\r\nb")]))


def test_head_replace_copies_with_changes() -> None:
    headers = Headers([("Host", "a")])
    request = RequestHead("GET", "/a", headers, "1.0")
    changed = request.replace(target="/b", version="1.1")
    assert changed == RequestHead("GET", "/b", headers, "1.1")
    assert request.target == "/a"  # the original is untouched
    response = ResponseHead(404, "Nope", headers, "1.0")
    assert response.replace(status=200) == ResponseHead(200, "Nope", headers, "1.0")
    with pytest.raises(TypeError):
        request.replace(path="/c")
    with pytest.raises(TypeError):
        response.replace(code=200)
