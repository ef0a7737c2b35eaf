"""Rewriting HTTP heads: set/add/remove headers, ``X-Forwarded-*`` and ``Via``,
request ids.

These filters change the heads of the HTTP messages that pass through them
(``MessageStart(RequestHead)`` / ``MessageStart(ResponseHead)``); bodies and other
events pass untouched, and a head is never mutated: a changed head is a new one
with a copy of the headers.

Where to put them. Events flow one way: in the per-request sub-pipeline of
``demux_http`` the request goes in at the head and the response comes out of the
filter that answers it (``serve_http``, ``connect``, ``mux_http``...). A filter
placed *before* the answering filter sees the request, one placed *after* it sees
the response::

    demux_http().to(lambda p: p
        .request_id().forwarded_headers()          # rewrite the request
        .mux_http().to(lambda q: q.connect(UPSTREAM))
        .forwarded_headers().request_id())         # rewrite the response

Each filter acts on the heads of the kind it sees, so the same filter can stand on
both sides. What a request-side instance learns and a response-side instance needs
travels in the request's own context (``demux_http`` gives every request a child
context, see :mod:`filters.demux`):

* ``ctx.http_request``: the request head being answered, as it left the last of
  these filters (or ``serve_http``, or ``route``) -- :func:`request_of` reads it.
  ``compress_http`` uses it to read the request's ``Accept-Encoding``.
* ``ctx.request_id``: set by ``request_id`` on the request side, copied onto the
  response by ``request_id`` on the response side.

Header values given to ``set_*_headers`` are strings, or functions
``fn(ctx, head)`` returning a string (or ``None``: leave that header alone),
called for every message.

``request_id`` makes ids from a random per-process prefix (64 bits, from
:func:`secrets.token_hex`, drawn again in a forked worker) and a counter:
``"5f0c3a9e1b2d4c6f-1a"``. That is unique across processes and restarts, like a
uuid4, at the cost of an increment and a format per request instead of 16 random
bytes; it is not unpredictable, so do not use it as a secret.

Example (runnable): the request gets ``X-Forwarded-*``, ``Via`` and an id; the
response -- fed here to a second pipeline, as the answering filter would output it
in the same request context -- gets ``Via`` and the same id::

    from functools import partial

    import trio
    from pipeline import Context, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import run_layout
    from protocols.http import Headers, RequestHead, ResponseHead

    proxy = Proxy()
    (proxy.pipeline("request-side")
        .forwarded_headers()
        .request_id()
        .set_request_headers(set={"X-Env": "test"}, remove=["Cookie"]))
    (proxy.pipeline("response-side")
        .forwarded_headers()
        .request_id()
        .set_response_headers(add={"Server": lambda ctx, head: f"trioxy/{head.status}"}))

    ctx = Context(remote=("192.0.2.7", 51000))
    head = RequestHead("GET", "/", Headers([("Host", "example.com"), ("Cookie", "a=1"),
                                            ("X-Forwarded-For", "198.51.100.1")]))
    events = [MessageStart(head), MessageEnd(), StreamEnd()]
    out = trio.run(partial(run_layout, proxy.layout("request-side"), events, context=ctx))
    sent = out[0].head.headers
    assert sent["X-Forwarded-For"] == "198.51.100.1, 192.0.2.7"
    assert sent["X-Forwarded-Proto"] == "http" and sent["X-Forwarded-Host"] == "example.com"
    assert sent["Via"] == "1.1 trioxy" and sent["X-Env"] == "test" and "Cookie" not in sent
    assert sent["X-Request-Id"] == ctx.request_id

    response = ResponseHead(200, "OK", Headers([("Content-Length", "0")]))
    events = [MessageStart(response), MessageEnd(), StreamEnd()]
    out = trio.run(partial(run_layout, proxy.layout("response-side"), events, context=ctx))
    got = out[0].head.headers
    assert got["Via"] == "1.1 trioxy" and got["Server"] == "trioxy/200"
    assert got["X-Request-Id"] == ctx.request_id
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.context import Context
from pipeline.events import Event, MessageStart
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import RequestHead, ResponseHead

__all__ = [
    "REQUEST_VAR",
    "ForwardedHeaders",
    "RequestId",
    "SetRequestHeaders",
    "SetResponseHeaders",
    "new_request_id",
    "remember_request",
    "request_of",
]

#: The context variable holding the request head a per-request pipeline answers.
REQUEST_VAR = "http_request"

Head = RequestHead | ResponseHead
HeaderValue = str | Callable[[Context, Any], str | None]


def remember_request(ctx: Context, head: RequestHead) -> None:
    """Record ``head`` as the request ``ctx``'s pipeline answers."""
    ctx.vars[REQUEST_VAR] = head


def request_of(ctx: Context) -> RequestHead | None:
    """The request head recorded with :func:`remember_request`, or ``None``."""
    head = ctx.get(REQUEST_VAR)
    return head if isinstance(head, RequestHead) else None


# Request ids ------------------------------------------------------------------

_prefix = secrets.token_hex(8)
_counter = itertools.count(1)


def _reseed() -> None:
    global _prefix, _counter
    _prefix = secrets.token_hex(8)
    _counter = itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A new id: this process's random prefix, a dash, a counter in hex."""
    return f"{_prefix}-{next(_counter):x}"


# Header rewriting --------------------------------------------------------------


def _check_values(arg: str, values: Mapping[str, HeaderValue] | None) -> tuple[Any, ...]:
    if values is None:
        return ()
    if not isinstance(values, Mapping):
        raise TypeError(f"{arg} must be a mapping of header name to value, got {values!r}")
    for name, value in values.items():
        if not isinstance(name, str) or not name or any(c in name for c in " :\r\n"):
            raise ValueError(f"{arg}: bad header name {name!r}")
        if not (isinstance(value, str) or callable(value)):
            raise TypeError(f"{arg}[{name!r}] must be a str or a function (ctx, head)")
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            raise ValueError(f"{arg}[{name!r}]: a header value cannot hold CR or LF")
    return tuple(values.items())


def _value(value: HeaderValue, ctx: Context, head: Head) -> str | None:
    if isinstance(value, str):
        return value
    result = value(ctx, head)
    if result is None:
        return None
    text = str(result)
    if "\r" in text or "\n" in text:
        raise ValueError("a header value cannot hold CR or LF")
    return text


class _SetHeaders(Filter):
    """Shared code of set_request_headers / set_response_headers."""

    kind: type[RequestHead] | type[ResponseHead]

    def __init__(
        self,
        set: Mapping[str, HeaderValue] | None = None,
        add: Mapping[str, HeaderValue] | None = None,
        remove: Iterable[str] = (),
    ) -> None:
        self.set_items = _check_values("set", set)
        self.add_items = _check_values("add", add)
        if isinstance(remove, str):
            raise TypeError("remove is a list of header names, e.g. ['Cookie']")
        self.remove_names = tuple(remove)
        if not (self.set_items or self.add_items or self.remove_names):
            raise ValueError("nothing to do: give set=, add= or remove=")

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart and type(event.head) is self.kind:
            head: Head = event.head
            ctx = self.pipeline.context
            headers = head.headers.copy()
            for name in self.remove_names:
                headers.remove(name)
            for name, value in self.set_items:
                text = _value(value, ctx, head)
                if text is not None:
                    headers.set(name, text)
            for name, value in self.add_items:
                text = _value(value, ctx, head)
                if text is not None:
                    headers.add(name, text)
            head = head.replace(headers=headers)
            if type(head) is RequestHead:
                remember_request(ctx, head)
            event = MessageStart(head)
        await self.output(event)


class SetRequestHeaders(_SetHeaders):
    """``set_request_headers(set=None, add=None, remove=())``: on each request head,
    delete the ``remove`` headers, replace (or create) the ``set`` ones, append the
    ``add`` ones, in that order. Values are strings or ``fn(ctx, head)``."""

    name = "set_request_headers"
    kind = RequestHead


class SetResponseHeaders(_SetHeaders):
    """``set_response_headers(set=None, add=None, remove=())``: the same, on each
    response head."""

    name = "set_response_headers"
    kind = ResponseHead


class ForwardedHeaders(Filter):
    """``forwarded_headers(for_=True, proto=True, host=True, via="trioxy")``: on a
    request, append the client's address to ``X-Forwarded-For`` (after the list a
    previous proxy sent), set ``X-Forwarded-Proto`` (``https`` when the stream is
    TLS, else ``http``) and ``X-Forwarded-Host`` (the request's ``Host``), and add
    ``Via: <version> <via>``; on a response, add ``Via`` only. ``via=None`` adds no
    ``Via``; each of the ``X-Forwarded-*`` can be turned off."""

    name = "forwarded_headers"

    def __init__(
        self, for_: bool = True, proto: bool = True, host: bool = True, via: str | None = "trioxy"
    ) -> None:
        if via is not None and (not isinstance(via, str) or not via or "\n" in via or "," in via):
            raise ValueError(f"via must be a pseudonym such as 'trioxy', got {via!r}")
        self.for_ = for_
        self.proto = proto
        self.host = host
        self.via = via

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart:
            head = event.head
            kind = type(head)
            if kind is RequestHead:
                event = MessageStart(self._request(head))
            elif kind is ResponseHead and self.via is not None:
                headers = head.headers.copy()
                headers.add("Via", f"{head.version} {self.via}")
                event = MessageStart(head.replace(headers=headers))
        await self.output(event)

    def _request(self, head: RequestHead) -> RequestHead:
        ctx = self.pipeline.context
        headers = head.headers.copy()
        if self.for_ and ctx.remote is not None:
            client = ctx.remote[0]
            if ":" in client:  # RFC 7239 quoting is for Forwarded; XFF takes bare v6
                client = client.strip("[]")
            previous = ", ".join(v for v in headers.get_all("X-Forwarded-For") if v.strip())
            headers.set("X-Forwarded-For", f"{previous}, {client}" if previous else client)
        if self.proto:
            headers.set("X-Forwarded-Proto", "https" if ctx.tls else "http")
        if self.host:
            host = headers.get("Host")
            if host is not None:
                headers.set("X-Forwarded-Host", host)
        if self.via is not None:
            headers.add("Via", f"{head.version} {self.via}")
        head = head.replace(headers=headers)
        remember_request(ctx, head)
        return head


class RequestId(Filter):
    """``request_id(header="X-Request-Id")``: on a request, keep its id (a header
    value of at most 200 visible characters) or give it a new one
    (:func:`new_request_id`), and record it as ``ctx.request_id``; on a response,
    set the header to ``ctx.request_id`` when one was recorded and the response
    has none."""

    name = "request_id"

    def __init__(self, header: str = "X-Request-Id") -> None:
        if not isinstance(header, str) or not header or any(c in header for c in " :\r\n"):
            raise ValueError(f"bad header name {header!r}")
        self.header = header

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart:
            head = event.head
            kind = type(head)
            ctx = self.pipeline.context
            if kind is RequestHead:
                current = head.headers.get(self.header)
                if current is not None and 0 < len(current) <= 200 and current.isprintable():
                    ctx.vars["request_id"] = current
                    remember_request(ctx, head)
                else:
                    rid = new_request_id()
                    ctx.vars["request_id"] = rid
                    headers = head.headers.copy()
                    headers.set(self.header, rid)
                    head = head.replace(headers=headers)
                    remember_request(ctx, head)
                    event = MessageStart(head)
            elif kind is ResponseHead:
                rid = ctx.get("request_id")
                if rid is not None and self.header not in head.headers:
                    headers = head.headers.copy()
                    headers.add(self.header, rid)
                    event = MessageStart(head.replace(headers=headers))
        await self.output(event)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [SetRequestHeaders, SetResponseHeaders, ForwardedHeaders, RequestId]
