"""Differential tests: our parsers against h11 (the reference) over the same bytes.

The inputs are a hand-written corpus, the bytes real peers send (curl and Python's
``http.client`` requests captured on a socket, h11's own serializer, Python's
``http.server`` responses) and hypothesis-generated messages. For valid input both
parsers must give the same heads, bodies, trailers, message ends and upgrade bytes
(compared as described in ``http_corpus/reference.py``); where h11 refuses the input,
we must refuse it too. Mutated messages check that direction for any input: h11
refusing and us accepting is allowed only for a documented divergence.

Documented divergences (each has a test below that shows both behaviours):

1. **Bare LF** as a line end in a head: h11 accepts it (RFC 9112 2.2 allows a
   recipient to); we refuse with 400, as the issue requires, because an intermediary
   that reads line ends differently from the next hop is a smuggling vector. Bare CR
   likewise.
2. **Content-Length with Transfer-Encoding**: h11 lets chunked win; we refuse (400).
   RFC 9112 6.3 lets a server reject it, and a proxy must not pass the ambiguity on.
3. **Transfer-Encoding in an HTTP/1.0 message**: h11 reads it as chunked; we refuse
   (400), RFC 9112 6.1 says the framing is faulty.
4. **Control characters** (other than HTAB) and DEL in field values, reason phrases
   and chunk extensions: h11 refuses only NUL and whitespace controls; we refuse them
   all (RFC 9110 5.5: field-vchar is VCHAR or obs-text).
5. **Huge numbers**: h11 allows 20-digit Content-Length values and 20-hex-digit chunk
   sizes; we stop at 18 decimal and 16 hex digits (400), so a length always fits in
   an int64 downstream. No real body comes near.
6. **HTTP versions** other than 1.0 and 1.1: h11 accepts any ``HTTP/d.d``; we answer
   505 (RFC 9110 15.6.6).
7. **Empty lines before a request line**: h11 refuses them; we skip them, as RFC 9112
   2.2 recommends (some clients send a CRLF after a POST body).
8. **After a request that closes the connection** (``Connection: close``, or HTTP/1.0
   without keep-alive), h11 raises on any further bytes; we ignore them (RFC 9112 9.6:
   the server does not process them). HTTP/1.0 with ``Connection: keep-alive``: h11
   never keeps such a connection; we do (RFC 9112 9.3.1). The h11 driver stops where
   h11 must close, so comparisons cover what both parse.
9. **Whitespace before ``;`` in a chunk size line**: RFC 9112 7.1.1 allows it (BWS);
   h11 refuses it, we accept it.
10. **Framing fields in trailers** (Content-Length, Transfer-Encoding, Host): h11
    accepts them; we refuse (RFC 9110 6.5.1 forbids them; a proxy that merged trailers
    into a head would change the framing).
11. **Responses**: a ``101`` answer the client did not ask for is refused by h11 and
    accepted by ours (ResponseParser knows methods, not request headers; the client
    filter only relays a 101 it asked for). Bytes after a response that closes the
    connection: h11 raises, we ignore them (as 8).
12. **Limits**: h11 has a single 16 KiB limit on an incomplete event; we have
    ``max_line``, ``max_header_bytes``, ``max_headers``, ``max_body`` and the chunk line
    limits. The compared inputs stay under all of them.
13. **obs-fold** (a header line starting with SP or HTAB): h11 unfolds it into the
    previous value; we refuse (400). RFC 9112 5.2 allows either; the issue asks for
    refusal, and a fold one hop unfolds and the next does not is a smuggling vector.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from pathlib import Path

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocols.http import ProtocolError, RequestParser, ResponseParser

from ..helpers import http_server
from .http_corpus.capture import capture_requests, fetch_raw
from .http_corpus.reference import (
    Outcome,
    h11_requests,
    h11_responses,
    ours_requests,
    ours_responses,
)
from .http_corpus.strategies import (
    edits,
    mutate,
    pipelined_requests,
    request_bytes,
    response_exchanges,
)

DIFF = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HAND_REQUESTS: list[bytes] = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /index.html?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nUser-Agent: t/1\r\n\r\n",
    b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"get /lower HTTP/1.1\r\nhost: a\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nname=bob&",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:    3   \r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\nabcdefg",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
    b'5\r\nhello\r\nA;ext=1;q="a;b"\r\n0123456789\r\n0\r\nX-Checksum: abc\r\nX-B: 1\r\n\r\n',
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"000005\r\nhello\r\n5   \r\nworld\r\n0\r\n\r\n",
    b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Spaces:   \r\nX-Tab:\tv\t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9 \xff\x80\r\nX-In: a \t b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nUser-Agent: old\r\n\r\n",
    b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
    b"GET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x00",
    # Refused by both:
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX@: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe",
    b"GET / HTTP/1.1\r\nHost: a\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]

HAND_RESPONSES: list[tuple[list[str], bytes]] = [
    (["GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
    (
        ["GET"],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\n\r\n",
    ),
    (["GET"], b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
    (["GET"], b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"),
    (["GET"], b"HTTP/1.1 404 Not \t Found \xe9\r\nContent-Length: 0\r\n\r\n"),
    (["GET"], b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
    (["GET"], b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"),
    (["HEAD"], b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
    (["HEAD"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    (["GET"], b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"),
    (["GET"], b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'),
    (["POST"], b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    (
        ["GET", "HEAD", "GET"],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n",
    ),
    (["CONNECT"], b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03"),
    (["CONNECT"], b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 3\r\n\r\nno!"),
    # Refused by both:
    (["GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"),
    (["GET"], b"HTTP/1.1 2000 OK\r\n\r\n"),
    (["GET"], b"HTTP/1.1 20 OK\r\n\r\n"),
    (["GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
    (["GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
    (["GET"], b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
    (["GET"], b"HTTP/1.1 200 OK\r\nX\r\n\r\n"),
    (["GET"], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
    (["GET"], b"<html>not http</html>"),
]


def same(ours: Outcome, theirs: Outcome) -> bool:
    """Equal outcomes; when both refused the input, only that counts (the events
    before the error differ: a feed that raises returns none of its events)."""
    if ours[1] or theirs[1]:
        return ours[1] == theirs[1]
    return ours == theirs


def agree_on_requests(data: bytes, split_every_byte: bool = False) -> None:
    ours = ours_requests(data)
    assert same(ours, h11_requests(data)), (ours, h11_requests(data))
    if split_every_byte:
        assert same(ours_requests(data, cuts=range(1, len(data))), ours)


def agree_on_responses(methods: list[str], data: bytes, upgrade: bool = False) -> None:
    ours = ours_responses(data, methods)
    theirs = h11_responses(data, methods, upgrade=upgrade)
    assert same(ours, theirs), (ours, theirs)
    assert same(ours_responses(data, methods, cuts=range(1, len(data))), ours)


@pytest.mark.parametrize("data", HAND_REQUESTS)
def test_hand_written_requests(data: bytes) -> None:
    agree_on_requests(data, split_every_byte=True)


@pytest.mark.parametrize(("methods", "data"), HAND_RESPONSES)
def test_hand_written_responses(methods: list[str], data: bytes) -> None:
    agree_on_responses(methods, data)


# Real clients ----------------------------------------------------------------------

CURL = shutil.which("curl")
CURL_COMMANDS: list[list[str]] = [
    ["{url}/plain?q=1"],
    ["-d", "name=value&other=2", "{url}/form"],
    ["-H", "Transfer-Encoding: chunked", "-d", "chunked body", "{url}/chunked"],
    ["-H", "Expect: 100-continue", "-d", "x" * 2000, "{url}/expect"],
    ["-I", "{url}/head"],
    ["--http1.0", "{url}/old"],
    ["-H", "X-Custom: caf\xe9", "-A", "agent with spaces", "-e", "http://ref/", "{url}/hdrs"],
    ["{url}/one", "{url}/two", "-X", "DELETE"],  # two requests on one connection
    ["-x", "{url}", "http://example.com/absolute?x=y"],
    ["-p", "-x", "{url}", "https://example.com/"],  # CONNECT
    ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "{url}/ws"],
    ["-T", "-", "{url}/upload"],  # PUT from stdin: chunked
]


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("args", CURL_COMMANDS, ids=lambda a: " ".join(a)[:40])
def test_curl_requests(args: list[str]) -> None:
    def run_curl(port: int) -> None:
        argv = [str(CURL), "-s", "-o", "/dev/null", "--max-time", "20"]
        argv += [a.format(url=f"http://127.0.0.1:{port}") for a in args]
        subprocess.run(argv, input=b"uploaded from stdin\n", timeout=30, check=False)

    data = capture_requests(run_curl)
    assert data.count(b"\r\n\r\n") >= 1
    ours = ours_requests(data)
    assert not ours[1] and ours[0], data
    agree_on_requests(data, split_every_byte=True)


def _http_client_session(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", "/a?b=c", headers={"X-Mixed-Case": "Value"})
        conn.getresponse().read()
        conn.request("POST", "/json", body=b'{"k": [1, 2]}', headers={"Content-Type": "json"})
        conn.getresponse().read()
        conn.request(
            "PUT", "/stream", body=iter([b"part one, ", b"", b"part two"]), encode_chunked=True
        )
        conn.getresponse().read()
        conn.request("HEAD", "/h")
        conn.getresponse().read()
    finally:
        conn.close()


def test_http_client_requests() -> None:
    data = capture_requests(_http_client_session)
    ours = ours_requests(data)
    assert [m[0][1] for m in ours[0]] == ["GET", "POST", "PUT", "HEAD"]
    assert ours[0][2][1] == b"part one, part two"
    agree_on_requests(data, split_every_byte=True)


def _h11_serialized() -> list[bytes]:
    def client_bytes(*events: object) -> bytes:
        conn = h11.Connection(h11.CLIENT)
        return b"".join(conn.send(e) or b"" for e in events)  # type: ignore[arg-type]

    return [
        client_bytes(
            h11.Request(method="GET", target="/", headers=[("Host", "a"), ("Accept", "*/*")]),
            h11.EndOfMessage(),
        ),
        client_bytes(
            h11.Request(
                method="POST",
                target="/c",
                headers=[("Host", "a"), ("Transfer-Encoding", "chunked")],
            ),
            h11.Data(data=b"first"),
            h11.Data(data=b"second chunk"),
            h11.EndOfMessage(headers=[("X-Trailer", "t"), ("X-Other", "o")]),
        ),
        client_bytes(
            h11.Request(
                method="PUT", target="/l", headers=[("Host", "a"), ("Content-Length", "6")]
            ),
            h11.Data(data=b"abc"),
            h11.Data(data=b"def"),
            h11.EndOfMessage(),
        ),
    ]


def test_h11_serialized_requests() -> None:
    for data in _h11_serialized():
        agree_on_requests(data, split_every_byte=True)
    agree_on_requests(b"".join(_h11_serialized()))


# Real servers ----------------------------------------------------------------------


def test_http_server_responses(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_bytes(b"file content\n" * 100)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("x")
    requests = [
        ("GET", b"GET /file.txt HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("HEAD", b"HEAD /file.txt HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("GET", b"GET /missing HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("GET", b"GET /dir HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("GET", b"GET /dir/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        (
            "GET",
            b"GET /file.txt HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: Fri, 1 Jan 2100 "
            b"00:00:00 GMT\r\n\r\n",
        ),
        ("POST", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
    ]
    with http_server(tmp_path) as port:
        answers = [(method, fetch_raw(port, raw)) for method, raw in requests]
    statuses = []
    for method, data in answers:
        agree_on_responses([method], data)
        messages, error, _ = ours_responses(data, [method])
        assert not error
        statuses.append(messages[-1][0][1])
    assert statuses == [200, 200, 404, 301, 200, 304, 501]


def test_h11_serialized_responses() -> None:
    def exchange(method: str, *events: object) -> bytes:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        while conn.next_event() is not h11.NEED_DATA:
            pass
        return b"".join(conn.send(e) or b"" for e in events)  # type: ignore[arg-type]

    cases = [
        exchange(
            "GET",
            h11.InformationalResponse(status_code=103, headers=[("Link", "</a>")]),
            h11.Response(status_code=200, headers=[("Transfer-Encoding", "chunked")]),
            h11.Data(data=b"streamed"),
            h11.EndOfMessage(headers=[("Server-Timing", "db;dur=53")]),
        ),
        exchange(
            "GET",
            h11.Response(status_code=404, headers=[("Content-Length", "9")]),
            h11.Data(data=b"not found"),
            h11.EndOfMessage(),
        ),
        exchange(
            "HEAD",
            h11.Response(status_code=200, headers=[("Content-Length", "10")]),
            h11.EndOfMessage(),
        ),
        exchange("GET", h11.Response(status_code=204, headers=[]), h11.EndOfMessage()),
    ]
    for method, data in zip(["GET", "GET", "HEAD", "GET"], cases, strict=True):
        agree_on_responses([method], data)


# Generated messages -----------------------------------------------------------------


@DIFF
@given(pipelined_requests())
def test_generated_requests_agree(data: bytes) -> None:
    ours = ours_requests(data)
    assert not ours[1], data
    assert ours == h11_requests(data)


@DIFF
@given(response_exchanges())
def test_generated_responses_agree(exchange: tuple[list[str], bytes]) -> None:
    methods, data = exchange
    ours = ours_responses(data, methods)
    assert not ours[1], data
    assert ours == h11_responses(data, methods)


# Where h11 refuses, we refuse (for any bytes) --------------------------------------

_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def known_divergence(data: bytes) -> bool:
    """Whether ``data`` contains a construct listed as a divergence where h11 is the
    stricter one (we accept what it refuses)."""
    return (
        data.startswith((b"\r\n", b"\n"))  # 7: empty lines before the request line,
        # 7 again: ... of a next request, after a head that ended the message (an
        # approximation: the empty line may also be the start of a body, which both
        # parsers then read the same way, so it hides no other divergence)
        or re.search(rb"\n\r?\n\r?\n", data) is not None
        or re.search(rb"\n[0-9a-fA-F]+[ \t]+;", data) is not None  # 9: BWS before ;
    )


def h11_refuses_ours_too(data: bytes) -> None:
    theirs = h11_requests(data)
    ours = ours_requests(data)
    if theirs[1] and not ours[1]:
        assert known_divergence(data), data
    if not theirs[1] and not ours[1]:
        assert ours == theirs


@DIFF
@given(request_bytes(), edits)
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [(14, 0, b"\n")])
@example(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", [(27, 0, b"\r\n")])  # 7, between requests
def test_mutated_requests_refused_where_h11_refuses(data: bytes, changes: list) -> None:
    h11_refuses_ours_too(mutate(data, changes))


@DIFF
@given(st.binary(max_size=200))
def test_arbitrary_bytes_refused_where_h11_refuses(data: bytes) -> None:
    h11_refuses_ours_too(data)


@DIFF
@given(response_exchanges(), edits)
def test_mutated_responses_refused_where_h11_refuses(exchange: tuple, changes: list) -> None:
    methods, data = exchange
    data = mutate(data, changes)
    theirs = h11_responses(data, methods)
    ours = ours_responses(data, methods)
    if theirs[1] and not ours[1]:
        # 11: a 101 nobody asked for; bytes after a response that closed the
        # connection, or a closed connection with requests unanswered (what to do
        # about those is the client filter's business): h11 objects after every
        # message we both read, complete and equal.
        agreed = ours[0][: len(theirs[0])] == theirs[0]
        assert known_divergence(data) or b"101" in data or agreed, data
    if not theirs[1] and not ours[1]:
        assert ours == theirs


# The divergences, one by one ---------------------------------------------------------


def h11_accepts(data: bytes) -> bool:
    return not h11_requests(data)[1]


def refused_status(data: bytes) -> int:
    with pytest.raises(ProtocolError) as caught:
        parser = RequestParser()
        parser.feed(data)
        parser.feed(b"")
    return caught.value.status


@pytest.mark.parametrize(
    ("number", "data", "status"),
    [
        (1, b"GET / HTTP/1.1\nHost: a\n\n", 400),
        (1, b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n", 400),
        (
            2,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (3, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (4, b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", 400),
        (4, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
        (
            4,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"1;\x01\r\nx\r\n0\r\n\r\n",
            400,
        ),
        (5, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"0" * 19 + b"1\r\n\r\nx", 400),
        (
            5,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"0" * 19
            + b"1\r\nx\r\n0\r\n\r\n",
            400,
        ),
        (6, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        (13, b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", 400),
        (
            10,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: b\r\n\r\n",
            400,
        ),
    ],
)
def test_divergence_we_refuse_what_h11_accepts(number: int, data: bytes, status: int) -> None:
    assert h11_accepts(data), number
    assert refused_status(data) == status


def test_divergence_7_leading_empty_lines() -> None:
    data = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert h11_requests(data)[1]
    assert ours_requests(data) == h11_requests(data[2:])


def test_divergence_8_persistence() -> None:
    closing = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(closing + b"GET /more HTTP/1.1\r\nHost: a\r\n\r\n")
    assert type(conn.next_event()) is h11.Request
    assert type(conn.next_event()) is h11.EndOfMessage
    with pytest.raises(h11.RemoteProtocolError):
        conn.next_event()
    parser = RequestParser()
    assert len(parser.feed(closing + b"GET /more HTTP/1.1\r\nHost: a\r\n\r\n")) == 2
    # HTTP/1.0 keep-alive: h11 closes, we keep the connection.
    keep = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(keep)
    conn.next_event()
    conn.next_event()
    assert conn.their_state is h11.MUST_CLOSE
    parser = RequestParser()
    assert len(parser.feed(keep * 2)) == 4 and parser.keep_alive


def test_divergence_9_whitespace_before_chunk_extension() -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 ;ext\r\nx\r\n0\r\n\r\n"
    )
    assert not h11_accepts(data)
    messages, error, _ = ours_requests(data)
    assert not error and messages[0][1] == b"x"


def test_divergence_11_unrequested_switching_protocols() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframes"
    assert h11_responses(data, ["GET"])[1]
    assert h11_responses(data, ["GET"], upgrade=True)[2] == b"frames"
    assert ours_responses(data, ["GET"])[2] == b"frames"
    parser = ResponseParser()
    parser.expect("GET")
    parser.feed(data)
    assert parser.upgraded
