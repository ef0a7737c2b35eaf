"""protocols.http's parsers: framing, persistence, limits, upgrades, and the request
smuggling vectors they refuse.

Smuggling vectors refused (each is a case of ``SMUGGLING`` below, fed whole and one
byte at a time, and must give the same status both ways):

- ``Content-Length`` together with ``Transfer-Encoding`` (400; h11 lets TE win).
- Duplicate ``Content-Length`` fields with different values (400). Identical duplicates
  (two fields, or a ``5, 5`` list) are folded into one, as h11 does (RFC 9110 8.6):
  every reader agrees on the length, and the head keeps the fields as received.
- Comma lists in ``Content-Length`` with differing values (400), or an empty member.
- Non-digit, signed, hex, space-separated, unicode-digit or over-long (more than 18
  digits) ``Content-Length`` (400).
- ``Transfer-Encoding`` other than exactly one ``chunked``, last: ``chunked, gzip`` and
  ``chunked`` twice (in one field or two) are 400, ``xchunked``, ``gzip, chunked`` and
  ``identity`` are 501 (codings we do not implement), an empty member is 400;
  ``Transfer-Encoding`` in an HTTP/1.0 message is 400 (RFC 9112 6.1).
- obs-fold: a header line starting with SP or HTAB (400).
- Whitespace between a field name and its colon (400).
- Bare LF where CRLF is required: ending the request line, a header line, the header
  block, a chunk size line, chunk data; and bare CR anywhere in a head (400).
- Bad chunk sizes: non-hex, empty, signed, ``0x`` prefixed, overflow (more than 16 hex
  digits), leading whitespace, chunk-extension abuse (control characters, a line over
  4 KiB, more than 16 KiB of extensions in one message), chunk data not followed by
  CRLF (400).
- NUL, CR, LF or another control character in a field value (400).
- Invalid token characters in the method or a field name (400).
- An HTTP/1.1 request without ``Host`` (400), with two ``Host`` fields (400).
- Framing fields (``Content-Length``, ``Transfer-Encoding``, ``Host``) in trailers (400).

Absolute-form targets (a forward proxy's requests) are accepted.
"""

from __future__ import annotations

import doctest

import pytest

import protocols.http.parser
import protocols.http.writer
from protocols.http import (
    EndOfMessage,
    Headers,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    expects_100_continue,
    persistent,
    request_flags,
)

from .http_corpus.reference import split_feed

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def post(headers: bytes, body: bytes = b"") -> bytes:
    return b"POST /submit HTTP/1.1\r\nHost: example.com\r\n" + headers + b"\r\n" + body


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked\r\n", body)


SMUGGLING: list[tuple[str, bytes, int]] = [
    ("cl-and-te", post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    ("te-and-cl", post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"), 400),
    ("cl-duplicate-differs", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"), 400),
    ("cl-list-differs", post(b"Content-Length: 5, 6\r\n", b"hello!"), 400),
    ("cl-list-empty-member", post(b"Content-Length: 5,\r\n", b"hello"), 400),
    ("cl-empty", post(b"Content-Length: \r\n"), 400),
    ("cl-signed-plus", post(b"Content-Length: +5\r\n", b"hello"), 400),
    ("cl-signed-minus", post(b"Content-Length: -5\r\n"), 400),
    ("cl-hex", post(b"Content-Length: 0x5\r\n", b"hello"), 400),
    ("cl-inner-space", post(b"Content-Length: 1 2\r\n", b"hello"), 400),
    ("cl-underscore", post(b"Content-Length: 1_0\r\n", b"helloworld"), 400),
    ("cl-unicode-digit", post(b"Content-Length: \xb2\r\n", b"he"), 400),
    ("cl-huge", post(b"Content-Length: 1" + b"0" * 18 + b"\r\n"), 400),
    ("te-chunked-gzip", post(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"), 400),
    ("te-chunked-twice", post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"), 400),
    (
        "te-chunked-two-fields",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    ("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"), 501),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), 501),
    ("te-identity", post(b"Transfer-Encoding: identity\r\n"), 501),
    ("te-empty-member", post(b"Transfer-Encoding: , chunked\r\n", b"0\r\n\r\n"), 400),
    (
        "te-in-http10",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("obs-fold-space", post(b"X-A: 1\r\n continued\r\n"), 400),
    ("obs-fold-tab", post(b"X-A: 1\r\n\tcontinued\r\n"), 400),
    ("obs-fold-first-line", b"GET / HTTP/1.1\r\n Host: x\r\nHost: x\r\n\r\n", 400),
    ("space-before-colon", post(b"Content-Length : 5\r\n", b"hello"), 400),
    ("tab-before-colon", post(b"Transfer-Encoding\t: chunked\r\n", b"0\r\n\r\n"), 400),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare-lf-header-line", b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", 400),
    ("bare-lf-block-end", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n", 400),
    ("bare-cr-request-line", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    ("bare-lf-chunk-size", chunked(b"5\nhello\r\n0\r\n\r\n"), 400),
    ("bare-lf-after-chunk-data", chunked(b"5\r\nhello\n0\r\n\r\n"), 400),
    ("bare-lf-last-chunk", chunked(b"5\r\nhello\r\n0\n\r\n"), 400),
    ("chunk-data-overrun", chunked(b"5\r\nhelloXX\r\n0\r\n\r\n"), 400),
    ("chunk-size-non-hex", chunked(b"g\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-size-signed", chunked(b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-size-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-size-leading-space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-size-underscore", chunked(b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"), 400),
    ("chunk-size-overflow", chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-ext-control", chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-ext-nul", chunked(b"5;a\x00b\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-ext-long-line", chunked(b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), 400),
    ("chunk-ext-too-many", chunked(b"1;" + b"e" * 3000 + b"\r\nx\r\n") * 6 + b"0\r\n\r\n", 400),
    ("nul-in-value", post(b"X-A: a\x00b\r\n"), 400),
    ("control-in-value", post(b"X-A: a\x1bb\r\n"), 400),
    ("del-in-value", post(b"X-A: a\x7fb\r\n"), 400),
    ("bad-token-method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bad-token-name", post(b"X@A: 1\r\n"), 400),
    ("non-ascii-name", post(b"X-\xe9: 1\r\n"), 400),
    ("empty-name", post(b": 1\r\n"), 400),
    ("no-colon", post(b"X-A 1\r\n"), 400),
    ("no-host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("cl-in-trailers", chunked(b"0\r\nContent-Length: 5\r\n\r\n"), 400),
    ("te-in-trailers", chunked(b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
    ("host-in-trailers", chunked(b"0\r\nHost: other\r\n\r\n"), 400),
    ("two-spaces-in-request-line", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bad-version", b"GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400),
    ("lower-case-version", b"GET / http/1.1\r\nHost: x\r\n\r\n", 400),
    ("version-2", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("version-0.9", b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
]


def feed_all(parser: RequestParser | ResponseParser, data: bytes, eof: bool = False) -> list:
    items = list(parser.feed(data))
    if eof:
        items += parser.feed(b"")
    return items


def bytewise(parser: RequestParser | ResponseParser, data: bytes) -> list:
    return split_feed(parser, data, range(1, len(data)))


@pytest.mark.parametrize(
    ("raw", "status"), [case[1:] for case in SMUGGLING], ids=[case[0] for case in SMUGGLING]
)
def test_smuggling_vector_refused(raw: bytes, status: int) -> None:
    whole = RequestParser()
    with pytest.raises(ProtocolError) as caught:
        feed_all(whole, raw, eof=True)
    assert caught.value.status == status
    # Dead afterwards: the same error again, whatever comes.
    with pytest.raises(ProtocolError) as again:
        whole.feed(GET)
    assert (again.value.status, again.value.message) == (status, caught.value.message)
    # Split anywhere: the same verdict.
    with pytest.raises(ProtocolError) as split:
        bytewise(RequestParser(), raw)
        raise AssertionError("no error fed byte by byte")  # pragma: no cover
    assert split.value.status == status


def test_identical_content_lengths_fold_into_one() -> None:
    for headers in (b"Content-Length: 5\r\nContent-Length: 5\r\n", b"Content-Length: 5, 5\r\n"):
        items = RequestParser().feed(post(headers, b"helloGET"))
        assert items[1:] == [b"hello", EndOfMessage()]
        # The head keeps the fields as received.
        assert items[0].headers.get_all("content-length") == headers[16:-2].decode().split(
            "\r\nContent-Length: "
        )


def test_request_fields_kept_as_received() -> None:
    raw = (
        b"GET http://example.com/a?b=c HTTP/1.1\r\n"
        b"host: example.com\r\nX-Dup: 1\r\nX-DUP:  2 \t\r\nEmpty:\r\nX-Obs: caf\xe9\tok\r\n\r\n"
    )
    [head, end] = RequestParser().feed(raw)
    assert head == RequestHead(
        "GET",
        "http://example.com/a?b=c",
        Headers(
            [
                ("host", "example.com"),
                ("X-Dup", "1"),
                ("X-DUP", "2"),
                ("Empty", ""),
                ("X-Obs", "caf\xe9\tok"),
            ]
        ),
        "1.1",
    )
    assert head.headers.get_all("x-dup") == ["1", "2"]
    assert end == EndOfMessage()


def test_pipelined_requests_in_one_feed_and_at_every_split() -> None:
    raw = (
        GET
        + post(b"Content-Length: 5\r\n", b"hello")
        + chunked(b"3;ext=1\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n")
        + b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    whole = RequestParser().feed(raw)
    heads = [i for i in whole if isinstance(i, RequestHead)]
    assert [h.method for h in heads] == ["GET", "POST", "POST", "OPTIONS"]
    assert [i for i in whole if type(i) is bytes] == [b"hello", b"abc"]
    assert [i for i in whole if isinstance(i, EndOfMessage)] == [
        EndOfMessage(),
        EndOfMessage(),
        EndOfMessage(Headers([("X-Sum", "9")])),
        EndOfMessage(),
    ]

    def merged(items: list) -> list:
        out: list = []
        for item in items:
            if type(item) is bytes and out and type(out[-1]) is bytes:
                out[-1] += item
            else:
                out.append(item)
        return out

    for cut in range(1, len(raw)):
        parser = RequestParser()
        assert merged(parser.feed(raw[:cut]) + parser.feed(raw[cut:])) == whole, cut
    assert merged(bytewise(RequestParser(), raw)) == whole


def test_body_chunks_are_slices_of_the_input() -> None:
    parser = RequestParser()
    body = b"x" * 100_000
    [_head] = parser.feed(post(b"Content-Length: 300000\r\n"))
    assert parser.feed(body)[0] is body  # a body-only feed is handed out as is
    assert parser.feed(body) == [body]
    assert parser.feed(body + b"GET") == [body, EndOfMessage()]


def test_keep_alive_rules() -> None:
    cases = [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", False),
    ]
    for raw, keep_alive in cases:
        parser = RequestParser()
        [head, _] = parser.feed(raw)
        assert parser.keep_alive is keep_alive, raw
        assert persistent(head) is keep_alive, raw


def test_persistence_of_each_pipelined_request() -> None:
    # parser.keep_alive describes the latest head; persistent() any head.
    first = b"GET /1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"
    second = b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    parser = RequestParser()
    items = parser.feed(first + second)
    heads = [i for i in items if isinstance(i, RequestHead)]
    assert [persistent(h) for h in heads] == [True, False]
    assert [expects_100_continue(h) for h in heads] == [True, False]
    assert [request_flags(h) for h in heads] == [(True, True), (False, False)]
    assert not parser.keep_alive


def test_request_flags_agree_with_the_parser() -> None:
    cases = [
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: foo, 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nconnection: upgrade, Close\r\n\r\n",
        b"GET / HTTP/1.0\r\nCONNECTION: Keep-Alive\r\n\r\n",
    ]
    for raw in cases:
        parser = RequestParser()
        head = parser.feed(raw)[0]
        assert isinstance(head, RequestHead)
        assert request_flags(head) == (parser.keep_alive, parser.expects_continue), raw


def test_a_head_trickling_in_byte_by_byte() -> None:
    # Each byte is searched once (the incomplete head is not rescanned per feed);
    # the result is the same as for the head fed at once.
    big = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"f" * 30_000 + b"\r\n\r\n"
    parser = RequestParser()
    assert bytewise(parser, big) == RequestParser().feed(big)
    with pytest.raises(ProtocolError) as caught:
        bytewise(RequestParser(max_header_bytes=20_000), big)
    assert caught.value.status == 431


def test_nothing_is_parsed_after_a_closing_request() -> None:
    parser = RequestParser()
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    items = parser.feed(raw + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [type(i) for i in items] == [RequestHead, EndOfMessage]
    assert parser.feed(b"garbage\r\n\r\n") == []
    assert parser.feed(b"") == []


def test_leading_empty_lines_are_ignored() -> None:
    items = RequestParser().feed(b"\r\n\r\n" + GET)
    assert [type(i) for i in items] == [RequestHead, EndOfMessage]


def test_expect_100_continue() -> None:
    parser = RequestParser()
    [_head] = parser.feed(post(b"Expect: 100-Continue\r\nContent-Length: 5\r\n"))
    assert parser.expects_continue
    assert parser.feed(b"hel") == [b"hel"]
    assert not parser.expects_continue
    parser = RequestParser()
    parser.feed(chunked(b"")[:-2] + b"Expect: 100-continue\r\n\r\n")
    assert parser.expects_continue
    parser.feed(b"5\r\n")
    assert not parser.expects_continue
    # Ignored in HTTP/1.0 (RFC 9110 10.1.1), and meaningless without a body.
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert not parser.expects_continue
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
    assert not parser.expects_continue


def test_upgrade_pauses_and_hands_over_the_trailing_bytes() -> None:
    raw = b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    parser = RequestParser()
    items = parser.feed(raw + b"\x81\x05hello")
    assert [type(i) for i in items] == [RequestHead, EndOfMessage]
    assert parser.upgraded
    assert parser.feed(b"\x81\x01!") == []  # held, not parsed
    assert parser.take_trailing() == b"\x81\x05hello\x81\x01!"


def test_refused_upgrade_resumes_http() -> None:
    raw = b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n"
    parser = RequestParser()
    assert len(parser.feed(raw + b"GET /next HTTP/1.1\r\nHo")) == 2
    assert parser.upgraded
    assert parser.feed(b"st: x\r\n\r\n") == []
    [head, end] = parser.resume()
    assert not parser.upgraded
    assert (head.target, end) == ("/next", EndOfMessage())
    assert parser.feed(GET)[0].target == "/"


def test_connect_is_a_tunnel() -> None:
    parser = RequestParser()
    items = parser.feed(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03"
    )
    assert items[0].target == "example.com:443"
    assert parser.upgraded
    assert parser.take_trailing() == b"\x16\x03"


def test_eof() -> None:
    assert RequestParser().feed(b"") == []
    parser = RequestParser()
    parser.feed(GET)
    assert parser.feed(b"") == []
    for partial in (b"GET / HT", post(b"Content-Length: 5\r\n", b"he"), chunked(b"5\r\nhe")):
        parser = RequestParser()
        parser.feed(partial)
        with pytest.raises(ProtocolError) as caught:
            parser.feed(b"")
        assert caught.value.status == 400


@pytest.mark.parametrize(
    ("raw", "status", "limits"),
    [
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, {"max_line": 64}),
        (b"GET /" + b"a" * 100, 414, {"max_line": 64}),  # not even complete
        (GET[:-2] + b"X-Big: " + b"b" * 200 + b"\r\n\r\n", 431, {"max_header_bytes": 128}),
        (GET[:-2] + b"X-Big: " + b"b" * 200, 431, {"max_header_bytes": 128}),
        (GET[:-2] + b"X: 1\r\n" * 5 + b"\r\n", 431, {"max_headers": 5}),
        (post(b"Content-Length: 11\r\n", b"hello world"), 413, {"max_body": 10}),
        (chunked(b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"), 413, {"max_body": 10}),
        (chunked(b"0\r\n" + b"X: 1\r\n" * 101 + b"\r\n"), 431, {}),
    ],
)
def test_limits(raw: bytes, status: int, limits: dict[str, int]) -> None:
    with pytest.raises(ProtocolError) as caught:
        RequestParser(**limits).feed(raw)
    assert caught.value.status == status
    with pytest.raises(ProtocolError) as split:
        bytewise(RequestParser(**limits), raw)
    assert split.value.status == status


def test_limits_are_inclusive() -> None:
    line = b"GET /" + b"a" * 50 + b" HTTP/1.1\r\n"
    raw = line + b"Host: x\r\n" + b"X: 1\r\n" * 4 + b"\r\n"
    parser = RequestParser(max_line=len(line), max_header_bytes=len(raw), max_headers=5)
    assert len(parser.feed(raw)) == 2
    parser = RequestParser(max_body=5)
    assert parser.feed(post(b"Content-Length: 5\r\n", b"hello"))[1:] == [b"hello", EndOfMessage()]


# Responses -------------------------------------------------------------------------


def responses(raw: bytes, *methods: str, eof: bool = False) -> list:
    parser = ResponseParser()
    for method in methods:
        parser.expect(method)
    return feed_all(parser, raw, eof)


def test_response_bodies_by_method_and_status() -> None:
    with_length = b"Content-Length: 3\r\n\r\n"
    assert responses(b"HTTP/1.1 200 OK\r\n" + with_length + b"abc", "GET")[1:] == [
        b"abc",
        EndOfMessage(),
    ]
    for status, method in ((b"204", "GET"), (b"304", "GET"), (b"200", "HEAD")):
        items = responses(b"HTTP/1.1 " + status + b" X\r\n" + with_length, method)
        assert items[1:] == [EndOfMessage()], (status, method)


def test_interim_responses_do_not_answer_the_request() -> None:
    parser = ResponseParser()
    parser.expect("POST")
    items = parser.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    statuses = [i.status for i in items if isinstance(i, ResponseHead)]
    assert statuses == [100, 103, 201]
    assert items[-2:] == [b"ok", EndOfMessage()]


def test_response_body_until_eof() -> None:
    parser = ResponseParser()
    parser.expect("GET")
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\nsome")[1:] == [b"some"]
    assert not parser.keep_alive
    assert parser.feed(b" body") == [b" body"]
    assert parser.feed(b"") == [EndOfMessage()]


def test_response_switching_protocols_and_connect() -> None:
    parser = ResponseParser()
    parser.expect("GET")
    items = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    assert [type(i) for i in items] == [ResponseHead, EndOfMessage]
    assert parser.upgraded and parser.take_trailing() == b"\x81\x00"
    parser = ResponseParser()
    parser.expect("CONNECT")
    parser.feed(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01")
    assert parser.upgraded and parser.take_trailing() == b"\x16\x03\x01"
    parser = ResponseParser()
    parser.expect("CONNECT")
    items = parser.feed(b"HTTP/1.1 407 Auth\r\nContent-Length: 1\r\n\r\nx")
    assert items[1:] == [b"x", EndOfMessage()] and not parser.upgraded


def test_response_keep_alive_and_pipelining() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na" * 2 + (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\nb\r\n0\r\n\r\n"
    )
    parser = ResponseParser()
    for _ in range(3):
        parser.expect("GET")
    items = parser.feed(raw)
    assert [i for i in items if type(i) is bytes] == [b"a", b"a", b"b"]
    assert not parser.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 20x OK\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"HTTP/3.0 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",  # then EOF
    ],
)
def test_bad_responses_are_502(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        responses(raw, "GET", eof=True)
    assert caught.value.status == 502


def test_response_without_a_request_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        responses(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
    assert caught.value.status == 502
    assert responses(b"", eof=True) == []


def test_response_limits_are_502() -> None:
    parser = ResponseParser(max_body=3)
    parser.expect("GET")
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    assert caught.value.status == 502


def test_docstring_examples() -> None:
    for module in (protocols.http.parser, protocols.http.writer):
        assert doctest.testmod(module).failed == 0, module.__name__
