"""Drive our parsers and h11 over the same bytes and reduce both to comparable outcomes.

An outcome is ``(messages, error, trailing)``: ``messages`` is a list of
``(head, body, trailers)`` where ``head`` is a tuple (``("request", method, target,
version, fields)`` or ``("response", status, reason, version, fields)``), ``body`` the
concatenated body bytes and ``trailers`` the trailer fields (``fields`` are
``(name, value)`` pairs, names in their original case: h11 keeps it in
``raw_items()``); ``error`` is whether the parser refused the input; ``trailing`` the
bytes held after an upgrade or tunnel (``None`` when there was none). Interim (1xx)
responses are messages too.

Normalisation, where h11 deliberately differs in representation only: h11 folds
identical duplicate ``Content-Length`` fields into the first one and keeps one value of
a ``5, 5`` list; it lower-cases ``Transfer-Encoding`` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import h11

from protocols.http import EndOfMessage, Headers, ProtocolError, RequestHead, ResponseHead
from protocols.http.parser import RequestParser, ResponseParser

Fields = tuple[tuple[str, str], ...]
Message = tuple[tuple[Any, ...], bytes, Fields]
Outcome = tuple[list[Message], bool, bytes | None]


def normalise(fields: Iterable[tuple[str, str]]) -> Fields:
    """Our fields the way h11 represents the same head."""
    out: list[tuple[str, str]] = []
    seen_length = False
    for name, value in fields:
        lname = name.lower()
        if lname == "content-length":
            if seen_length:
                continue
            seen_length = True
            value = value.split(",")[0].strip(" \t")
        elif lname == "transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return tuple(out)


def _h11_fields(headers: Any) -> Fields:
    return tuple((n.decode("latin-1"), v.decode("latin-1")) for n, _, v in headers._full_items)


def split_feed(parser: Any, data: bytes, cuts: Sequence[int]) -> list[Any]:
    """Feed ``data`` cut at ``cuts`` (sorted offsets); raises what the parser raises."""
    items: list[Any] = []
    start = 0
    for cut in [*cuts, len(data)]:
        if cut > start:
            items += parser.feed(data[start:cut])
            start = cut
    return items


def _collect(items: list[Any], messages: list[Message]) -> None:
    for item in items:
        if isinstance(item, RequestHead):
            head: tuple[Any, ...] = (
                "request",
                item.method,
                item.target,
                item.version,
                normalise(item.headers.items()),
            )
            messages.append((head, b"", ()))
        elif isinstance(item, ResponseHead):
            head = ("response", item.status, item.reason, item.version)
            messages.append(((*head, normalise(item.headers.items())), b"", ()))
        elif isinstance(item, EndOfMessage):
            trailers = normalise(item.trailers.items()) if item.trailers else ()
            head, body, _ = messages[-1]
            messages[-1] = (head, body, trailers)
        else:
            assert type(item) is bytes and item, item
            head, body, trailers = messages[-1]
            messages[-1] = (head, body + item, trailers)


def ours_requests(data: bytes, cuts: Sequence[int] = (), eof: bool = True) -> Outcome:
    """Our RequestParser over ``data``. Like the h11 driver, it stops at an upgrade."""
    parser = RequestParser()
    messages: list[Message] = []
    try:
        _collect(split_feed(parser, data, cuts), messages)
        if eof and not parser.upgraded:
            _collect(parser.feed(b""), messages)
    except ProtocolError:
        return messages, True, None
    return messages, False, parser.take_trailing() if parser.upgraded else None


def ours_responses(
    data: bytes, methods: Sequence[str], cuts: Sequence[int] = (), eof: bool = True
) -> Outcome:
    parser = ResponseParser()
    for method in methods:
        parser.expect(method)
    messages: list[Message] = []
    try:
        _collect(split_feed(parser, data, cuts), messages)
        if eof and not parser.upgraded:
            _collect(parser.feed(b""), messages)
    except ProtocolError:
        return messages, True, None
    return messages, False, parser.take_trailing() if parser.upgraded else None


def _both_done(conn: h11.Connection) -> bool:
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


def h11_requests(data: bytes, eof: bool = True) -> Outcome:
    """h11 as a server over ``data``: each complete request gets an empty 200 so that
    the next one can be read. Where h11 must close after a request (``Connection:
    close``, or any HTTP/1.0 request: h11 never keeps those alive) it stops there, as
    our parser ignores what follows such a request (see the divergences)."""
    conn = h11.Connection(h11.SERVER)
    messages: list[Message] = []
    conn.receive_data(data)
    fed_eof = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return messages, True, None
        if event is h11.NEED_DATA:
            if eof and not fed_eof:
                conn.receive_data(b"")
                fed_eof = True
                continue
            return messages, False, None
        if event is h11.PAUSED:
            if conn.their_state in (h11.MIGHT_SWITCH_PROTOCOL, h11.SWITCHED_PROTOCOL):
                return messages, False, conn.trailing_data[0]
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.states[h11.CLIENT] is not h11.DONE:
                return messages, False, None  # MUST_CLOSE: nothing more is parsed
            conn.start_next_cycle()
            continue
        if isinstance(event, h11.ConnectionClosed):
            return messages, False, None
        if isinstance(event, h11.Request):
            head = (
                "request",
                event.method.decode("latin-1"),
                event.target.decode("latin-1"),
                event.http_version.decode("latin-1"),
                _h11_fields(event.headers),
            )
            messages.append((head, b"", ()))
        elif isinstance(event, h11.Data):
            head, body, trailers = messages[-1]
            messages[-1] = (head, body + bytes(event.data), trailers)
        elif isinstance(event, h11.EndOfMessage):
            head, body, _ = messages[-1]
            messages[-1] = (head, body, _h11_fields(event.headers))
            if conn.their_state is h11.MUST_CLOSE:
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                return messages, False, None


def _h11_request(method: str, upgrade: bool) -> h11.Request:
    target = "example.com:443" if method == "CONNECT" else "/"
    headers = [("Host", "example.com")]
    if upgrade:
        headers += [("Connection", "upgrade"), ("Upgrade", "websocket")]
    return h11.Request(method=method, target=target, headers=headers)


def h11_responses(
    data: bytes, methods: Sequence[str], eof: bool = True, upgrade: bool = False
) -> Outcome:
    """h11 as a client that sent one request per method (the next one after the
    previous response is complete: h11 does not pipeline), reading ``data``."""
    conn = h11.Connection(h11.CLIENT)
    pending = list(methods)
    messages: list[Message] = []
    if not pending:
        return messages, bool(data), None
    conn.send(_h11_request(pending.pop(0), upgrade))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    fed_eof = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return messages, True, None
        if event is h11.NEED_DATA:
            if eof and not fed_eof:
                conn.receive_data(b"")
                fed_eof = True
                continue
            return messages, False, None
        if event is h11.PAUSED:
            if conn.their_state is h11.SWITCHED_PROTOCOL:
                return messages, False, conn.trailing_data[0]
            if _both_done(conn) and pending:
                conn.start_next_cycle()
                conn.send(_h11_request(pending.pop(0), upgrade))
                conn.send(h11.EndOfMessage())
                continue
            # Bytes after the last expected response (or after a closing one): h11
            # refuses them; so do we (a response nobody asked for).
            return messages, True, None
        if isinstance(event, h11.ConnectionClosed):
            return messages, False, None
        if isinstance(event, (h11.Response, h11.InformationalResponse)):
            head = (
                "response",
                event.status_code,
                event.reason.decode("latin-1"),
                event.http_version.decode("latin-1"),
                _h11_fields(event.headers),
            )
            messages.append((head, b"", ()))
        elif isinstance(event, h11.Data):
            head, body, trailers = messages[-1]
            messages[-1] = (head, body + bytes(event.data), trailers)
        elif isinstance(event, h11.EndOfMessage):
            head, body, _ = messages[-1]
            messages[-1] = (head, body, _h11_fields(event.headers))
            if _both_done(conn) and pending:
                conn.start_next_cycle()
                conn.send(_h11_request(pending.pop(0), upgrade))
                conn.send(h11.EndOfMessage())


def headers_of(fields: Iterable[tuple[str, str]]) -> Headers:
    return Headers(list(fields))
