"""HTTP/1.1 codec filters: bytes to messages and back, for servers and clients.

Four filters put the sans-IO codec of :mod:`protocols.http` into pipelines:

* ``decode_http_request()`` and ``encode_http_response()``: the server side of a
  connection. The decoder turns the client's bytes into requests
  (``MessageStart(RequestHead), Data*, MessageEnd(trailers)``), the encoder turns
  responses back into bytes.
* ``encode_http_request()`` and ``decode_http_response()``: the client side of a
  connection to a server, in the same pipeline around the filter that carries the
  bytes (``connect``).

Pairs. The decoder and the encoder of one connection work together through an
object they keep in the context (``ctx.vars``, never inherited by child contexts):

* server side: the decoder records each request it outputs (method, version,
  keep-alive, ``Expect: 100-continue``) in order; the encoder takes the record of
  the request each response answers. A response to ``HEAD`` is written without a
  body (its ``Content-Length`` is kept as the server gave it); when the request (or
  the response head, with ``Connection: close``) turns keep-alive off, the encoder
  writes ``Connection: close``, outputs ``StreamEnd()`` after the response, and the
  decoder reads no further request;
* client side: the encoder tells the response parser the method of every request
  it writes (a response to ``HEAD`` has no body), and the decoder records whether
  the server keeps the connection open after each response
  (:attr:`HttpClientState.keep_alive`), which a connection pool reads.

Wire framing (both encoders). The head's framing headers decide: a
``Content-Length`` is kept and the body passes through as it is; a chunked head
is written chunked (trailers from ``MessageEnd`` go in the last chunk). A head
with neither is held with the first chunk of its body: if the message ends
there, the body is known and gets a ``Content-Length`` (a request without any
body is written as it is); otherwise the message is sent chunked to an HTTP/1.1
peer and close-delimited (with ``Connection: close``) to an HTTP/1.0 client --
so such a streamed body's first chunk waits for its second. The start line is
written as HTTP/1.1. A head and a small first chunk of body go out in one write.

``Expect: 100-continue`` (server side). The encoder writes ``HTTP/1.1 100
Continue`` when the body is needed: the request's head has passed the decoder's
output (the filters after it accepted the request and are waiting for its body),
the request is the oldest one not yet answered, and no byte of its response has
been written. A request that becomes the oldest later gets its ``100 Continue``
then, if its body is still incomplete. A final response written before the body
arrived closes the connection (the client may or may not send the body).

Failure answers (``encode_http_response``). A ``StreamEnd(error)`` that arrives
before the current response started is answered: an
:class:`~pipeline.errors.UpstreamError` with its ``status`` (502 refused or reset,
504 timeouts), a :class:`~protocols.http.ProtocolError` with its ``status`` (400,
413, 414, 431, 501, 505), anything else 500. The answer has a short
``text/plain`` body naming the reason and ``Connection: close``; one line goes to
the ``trioxy.http`` logger (client address, request line, status and reason); then
the encoder outputs ``StreamEnd()`` (the client's socket is half-closed, so the
answer is not lost to a reset). An error after the response started cannot be
answered: the encoder logs it and outputs the ``StreamEnd(error)``, which closes
the connection. A client whose own socket failed (an ``OSError``) gets no answer.

Hop-by-hop headers are not the encoders' business: they write what the head says
(apart from the framing and ``Connection`` headers they own). A proxy removes them
with :func:`strip_hop_by_hop`, which ``mux_http`` applies to every request it
forwards and every response it returns.

Limits (decoders): ``max_line`` (request or status line, 414 / 502),
``max_header_bytes`` and ``max_headers`` (431 / 502), ``max_body`` (413 / 502;
``None``: no limit).

Example (runnable): a server that answers every request with its path, in memory::

    import trio
    from pipeline import Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout
    from protocols.http import Headers, ResponseHead

    def answer(ctx, head, body):
        return ResponseHead(200, "OK", Headers()), head.path.encode()

    proxy = Proxy()
    (proxy.pipeline("hello")
        .decode_http_request()
        .replace_message(answer)
        .encode_http_response())

    request = b"GET /hi HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
    out = trio.run(run_layout, proxy.layout("hello"), [request])
    assert join_data(out).startswith(b"HTTP/1.1 200 OK\\r\\n")
    assert join_data(out).endswith(b"Content-Length: 3\\r\\n\\r\\n/hi")
    assert out[-1] == StreamEnd()
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, TypeVar

import trio

from pipeline.errors import PipelineError, UpstreamError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import Headers, ProtocolError, RequestHead, ResponseHead
from protocols.http.parser import EndOfMessage, RequestParser, ResponseParser, request_flags
from protocols.http.writer import (
    REASONS,
    InvalidHeadError,
    body_framing,
    chunk,
    last_chunk,
    request_head_bytes,
    response_head_bytes,
)
from protocols.websocket.errors import HandshakeError
from protocols.websocket.handshake import check_request

__all__ = [
    "WEBSOCKET_UPGRADE",
    "DecodeHttpRequest",
    "DecodeHttpResponse",
    "EncodeHttpRequest",
    "EncodeHttpResponse",
    "HttpClientState",
    "HttpServerState",
    "RequestInfo",
    "error_status",
    "strip_hop_by_hop",
]

log = logging.getLogger("trioxy.http")

SERVER_STATE = "_http_server"
#: ``ctx.vars`` key set (True) in the context of a request that ``demux_http``
#: passes on as a WebSocket upgrade: ``mux_http`` keeps its ``Upgrade``.
WEBSOCKET_UPGRADE = "_websocket_upgrade"
CLIENT_STATE = "_http_client"

#: A head and a first body chunk up to this size are joined into one write; a
#: larger chunk is written on its own rather than copied.
JOIN_LIMIT = 16384

_HOP_BY_HOP = frozenset(
    ("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade")
)
_HOP_LENGTHS = frozenset(len(n) for n in _HOP_BY_HOP)
# strip_hop_by_hop's (names, name lengths) for each ``also`` set seen.
_ALSO: dict[frozenset[str], tuple[frozenset[str], frozenset[int]]] = {}
_NO_BODY_STATUS = frozenset((204, 304))


# Hop-by-hop headers ------------------------------------------------------------


def strip_hop_by_hop(
    headers: Headers, keep_upgrade: bool = False, also: frozenset[str] = frozenset()
) -> Headers | None:
    """``headers`` without the hop-by-hop fields a proxy must not forward (RFC 9110
    7.6.1): ``Connection`` and every header it names, ``Keep-Alive``,
    ``Proxy-Connection``, ``TE``, ``Trailer`` and ``Upgrade`` (kept, with
    ``Connection: upgrade``, when ``keep_upgrade``: an upgrade is being passed on).
    ``Transfer-Encoding`` is left for the encoder, which chooses the framing.

    ``also``: more (lower-case) names to remove in the same pass.

    Returns ``None`` when there is nothing to remove (the common case costs one
    pass and no copy), else a new :class:`Headers`.

    >>> strip_hop_by_hop(Headers([("Host", "a"), ("Connection", "close, X-Y"), ("x-y", "1")]))
    Headers([('Host', 'a')])
    """
    items = headers.items()
    if also:
        cached = _ALSO.get(also)
        if cached is None:
            cached = (_HOP_BY_HOP | also, _HOP_LENGTHS | {len(n) for n in also})
            if len(_ALSO) < 64:
                _ALSO[also] = cached
        removed, lengths = cached
    else:
        removed, lengths = _HOP_BY_HOP, _HOP_LENGTHS
    # One pass finds what to remove and the Connection values; a name is
    # compared by its length first, so most fields cost no lower().
    found = False
    connection: list[str] = []
    for name, value in items:
        if len(name) in lengths:
            lname = name.lower()
            if lname in removed:
                found = True
                if lname == "connection":
                    connection.append(value)
    if not found:
        return None
    names = set(removed)
    sizes = set(lengths)  # a superset is harmless: it only costs a lower()
    for value in connection:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                names.add(token)
                sizes.add(len(token))
    if keep_upgrade:
        names.discard("upgrade")
    kept = [(k, v) for k, v in items if len(k) not in sizes or k.lower() not in names]
    if keep_upgrade and "upgrade" in headers:
        kept.append(("Connection", "upgrade"))
    return Headers.from_list(kept)


_NO_TOKENS: frozenset[str] = frozenset()


def _connection_tokens(headers: Headers) -> frozenset[str] | set[str]:
    """The tokens of the ``Connection`` fields of ``headers``, lower-case, as
    :meth:`Headers.has_token` compares them (one pass; none: an empty set)."""
    tokens: set[str] | None = None
    for name, value in headers.items():
        if len(name) == 10 and name.lower() == "connection":
            if tokens is None:
                tokens = set()
            for part in value.split(","):
                tokens.add(part.strip().lower())
    return _NO_TOKENS if tokens is None else tokens


def error_status(error: BaseException) -> int:
    """The HTTP status answering ``error``: an upstream error's or a protocol
    error's own ``status``, else 500."""
    if isinstance(error, (UpstreamError, ProtocolError)):
        return int(error.status)
    return 500


_MESSAGE_END = MessageEnd()


def _message_end(trailers: Headers | None) -> MessageEnd:
    """``MessageEnd(trailers)``; events are frozen, so the common one (no
    trailers) is one shared instance rather than one per message."""
    return _MESSAGE_END if trailers is None else MessageEnd(trailers)


# Per-connection state -----------------------------------------------------------


class RequestInfo:
    """What the response encoder needs to know about one request."""

    __slots__ = (
        "body_done",
        "continue_sent",
        "decided",
        "expects_continue",
        "head",
        "keep_alive",
        "method",
        "switched",
        "version",
    )

    def __init__(self, head: RequestHead | None, keep_alive: bool, expects_continue: bool) -> None:
        self.head = head
        self.method = head.method if head is not None else "GET"
        self.version = head.version if head is not None else "1.1"
        self.keep_alive = keep_alive
        self.expects_continue = expects_continue
        self.continue_sent = False
        self.body_done = False
        # A WebSocket upgrade being passed on (see filters.http_demux): set when
        # the answer's head is known, ``switched`` if it was the 101.
        self.decided: trio.Event | None = None
        self.switched = False

    def decide(self, switched: bool) -> None:
        """The answer to this upgrade request is known (or never will be)."""
        decided = self.decided
        if decided is not None and not decided.is_set():
            self.switched = switched
            decided.set()

    @property
    def line(self) -> str:
        """The request line, for logs (made only when a log needs it)."""
        head = self.head
        if head is None:
            return "-"
        return f"{head.method} {head.target} HTTP/{head.version}"


class HttpServerState:
    """Shared by the request decoder and the response encoder of one connection."""

    __slots__ = ("closing", "encoder", "requests", "tunnel")

    def __init__(self) -> None:
        self.requests: deque[RequestInfo] = deque()  # not yet fully answered, oldest first
        self.closing = False  # no further request is read
        self.encoder: EncodeHttpResponse | None = None
        # The demux_http that passes WebSocket upgrades on (None: upgrades are
        # stripped and the connection goes on as HTTP/1.1).
        self.tunnel: Any = None

    @staticmethod
    def of(ctx: Any) -> HttpServerState:
        state: HttpServerState | None = ctx.vars.get(SERVER_STATE)
        if state is None:
            state = HttpServerState()
            ctx.vars[SERVER_STATE] = state
        return state


class HttpClientState:
    """Shared by the request encoder and the response decoder of one connection."""

    __slots__ = ("bytes_in", "keep_alive", "parser", "pending", "responses")

    def __init__(self) -> None:
        self.bytes_in = 0  # bytes received from the server so far
        self.parser: ResponseParser | None = None
        self.pending: list[str] = []  # methods written before the parser existed
        self.keep_alive = True  # the server keeps the connection after its last response
        self.responses = 0  # responses complete so far

    def expect(self, method: str) -> None:
        parser = self.parser
        if parser is None:
            self.pending.append(method)
        else:
            parser.expect(method)

    @staticmethod
    def of(ctx: Any) -> HttpClientState:
        state: HttpClientState | None = ctx.vars.get(CLIENT_STATE)
        if state is None:
            state = HttpClientState()
            ctx.vars[CLIENT_STATE] = state
        return state


# Body framing (both encoders) ---------------------------------------------------

_LENGTH = 0  # Content-Length or no body: bytes pass through
_CHUNKED = 1
_CLOSE = 2  # close-delimited (HTTP/1.0 peer)
_PENDING = 3  # no framing header: decided by the event after the first


class _BodyWriter:
    """The framing state of the message an encoder is writing."""

    __slots__ = ("framing", "held", "held_head", "peer_10")

    def __init__(self) -> None:
        self.framing = _LENGTH
        self.held_head: Any = None  # a head waiting for the event that decides framing
        self.held: bytes | None = None  # the first chunk, held with the head
        self.peer_10 = False


# Both decoders ---------------------------------------------------------------------

_P = TypeVar("_P", RequestParser, ResponseParser)


class _Decoder(Filter):
    """What both decoders share: their limits, checked when the filter is made,
    and the parser made with them on the first event."""

    def __init__(
        self,
        max_line: int = 8192,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
        max_body: int | None = None,
    ) -> None:
        for name, value in (
            ("max_line", max_line),
            ("max_header_bytes", max_header_bytes),
            ("max_headers", max_headers),
            ("max_body", max_body),
        ):
            if value is None and name == "max_body":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._limits = (max_line, max_header_bytes, max_headers, max_body)
        self._done = False

    def _new_parser(self, cls: type[_P]) -> _P:
        max_line, max_header_bytes, max_headers, max_body = self._limits
        return cls(
            max_line=max_line,
            max_header_bytes=max_header_bytes,
            max_headers=max_headers,
            max_body=max_body,
        )


# Server side: requests in ----------------------------------------------------------


class DecodeHttpRequest(_Decoder):
    """``decode_http_request(max_line=8192, max_header_bytes=65536, max_headers=100,
    max_body=None)``: the client's bytes in, requests out. See the module docs."""

    name = "decode_http_request"

    _parser: RequestParser | None = None
    _state: HttpServerState | None = None
    _current: RequestInfo | None = None

    def _start(self) -> RequestParser:
        self._parser = self._new_parser(RequestParser)
        state = self._state = HttpServerState.of(self.pipeline.context)
        if state.encoder is None:
            # The encoder of this connection, for 100 Continue (found once).
            for f in self.pipeline.filters:
                if isinstance(f, EncodeHttpResponse):
                    state.encoder = f
                    break
        return self._parser

    async def on_event(self, event: Event) -> None:
        if self._done:
            return
        kind = type(event)
        parser = self._parser or self._start()
        if kind is Data:
            data = event.data  # type: ignore[union-attr]
            if not data:
                return
        elif kind is StreamEnd:
            if event.error is not None:  # type: ignore[union-attr]
                self._done = True
                await self.output(event)
                return
            data = b""
        else:
            return  # messages are not ours to decode
        try:
            items = parser.feed(data)
        except ProtocolError as exc:
            self._done = True
            await self.output(StreamEnd(exc))
            return
        await self._emit(parser, items)
        if kind is StreamEnd and not self._done:
            self._done = True
            await self.output(event)

    async def _emit(self, parser: RequestParser, items: list[Any]) -> None:
        output = self.output
        state = self._state
        assert state is not None
        for item in items:
            if self._done:
                return
            if type(item) is bytes:
                await output(Data(item))
            elif type(item) is EndOfMessage:
                info = self._current
                if info is not None:
                    info.body_done = True
                    self._current = None
                if parser.upgraded:
                    if info is not None and info.decided is not None:
                        await self._upgrade(parser, info, items, item.trailers)
                        continue
                    # Other upgrades are not passed on (a proxy strips Upgrade),
                    # so the connection goes on as HTTP/1.1 after this request.
                    items.extend(parser.resume())
                await output(_message_end(item.trailers))
                if state.closing:
                    self._done = True  # the last request of this connection
                    return
            else:
                head: RequestHead = item
                if head.method == "CONNECT":
                    self._done = True
                    error = ProtocolError("CONNECT tunnels are not supported here", 501)
                    await output(StreamEnd(error))
                    return
                # From the head, not the parser: one feed may parse several
                # requests, and the parser's flags describe the last one.
                keep_alive, expects_continue = request_flags(head)
                info = RequestInfo(head, keep_alive, expects_continue)
                # (The parser's flag describes the last head it parsed, maybe a
                # later one: the headers confirm it.)
                if parser._message_upgrade and state.tunnel is not None:
                    refused = _check_upgrade(head, info)
                    if refused is not None:
                        self._done = True
                        await output(StreamEnd(refused))
                        return
                if not info.keep_alive:
                    state.closing = True
                self._current = info
                state.requests.append(info)
                await output(MessageStart(head))
                # The head was accepted downstream: its body is needed now.
                if info.expects_continue and not info.body_done:
                    encoder = state.encoder
                    if encoder is not None and state.requests[0] is info:
                        await encoder.send_continue(info)

    async def _upgrade(
        self, parser: RequestParser, info: RequestInfo, items: list[Any], trailers: Any
    ) -> None:
        """The WebSocket upgrade request ``info`` is complete: its sub-pipeline
        keeps its input open, and no byte after it is parsed until its answer
        is known. A 101 makes the rest of the connection a relay (the bytes
        after the request head are the upgraded protocol's); any other answer
        and the connection goes on as HTTP/1.1."""
        state = self._state
        assert state is not None and info.decided is not None
        tunnel = state.tunnel
        tunnel.hold_input()
        await self.output(_message_end(trailers))
        await info.decided.wait()
        if info.switched:
            self._done = True
            items.clear()
            await tunnel.start_relay(parser.take_trailing())
            return
        await tunnel.release_input()
        if state.closing:
            self._done = True
            items.clear()
            return
        items.extend(parser.resume())


def _check_upgrade(head: RequestHead, info: RequestInfo) -> ProtocolError | None:
    """A request asking for ``Upgrade: websocket`` under a ``demux_http`` that
    passes them on: checked (RFC 6455 4.2.1) and marked for the switch. Other
    upgrades (``h2c``...) are left as they are (stripped downstream). Returns
    the error refusing a bad one (400, or 426 for a wrong version)."""
    if not head.headers.has_token("upgrade", "websocket"):
        return None
    try:
        check_request(head.method, head.headers)
    except HandshakeError as exc:
        return ProtocolError(f"bad WebSocket upgrade: {exc}", exc.status)
    info.decided = trio.Event()
    return None


# Server side: responses out -------------------------------------------------------

_DEFAULT_REQUEST = RequestInfo(None, True, False)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class EncodeHttpResponse(Filter):
    """``encode_http_response()``: responses in, bytes for the client out, failures
    answered. See the module docs."""

    name = "encode_http_response"

    def __init__(self) -> None:
        self._state: HttpServerState | None = None
        self._request: RequestInfo | None = None  # the request being answered
        self._body = _BodyWriter()
        self._no_body = False
        self._close_after = False
        self._started = False  # a response head is out (or held) and not finished
        self._head_out = False  # bytes of the current response were output
        self._ended = False
        self._interim: trio.Event | None = None  # set while a 100 Continue is being written

    def _state_of(self) -> HttpServerState:
        state = HttpServerState.of(self.pipeline.context)
        state.encoder = self
        self._state = state
        return state

    async def send_continue(self, info: RequestInfo) -> None:
        """Write ``100 Continue`` for ``info`` if no byte of its response is out."""
        if info.continue_sent or self._ended or self._started:
            return
        info.continue_sent = True
        done = self._interim = trio.Event()
        try:
            await self.output(Data(_CONTINUE))
        finally:
            self._interim = None
            done.set()

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        if self._interim is not None:
            await self._interim.wait()
        kind = type(event)
        try:
            if kind is Data:
                if self._started:
                    await self._write_body(event.data)  # type: ignore[union-attr]
            elif kind is MessageStart:
                await self._start_response(event.head)  # type: ignore[union-attr]
            elif kind is MessageEnd:
                if self._started:
                    await self._end_response(event.tail)  # type: ignore[union-attr]
            elif kind is StreamEnd:
                error = event.error  # type: ignore[union-attr]
                if error is None:
                    self._ended = True
                    await self.output(event)
                else:
                    await self._fail(error)
        except InvalidHeadError as exc:
            # A head the filters made that cannot be written: answered 500 if no
            # byte of it went out, else the connection closes.
            if not self._ended:
                await self._fail(PipelineError(f"invalid response: {exc}"))

    # A response --------------------------------------------------------------

    async def _start_response(self, head: ResponseHead) -> None:
        state = self._state or self._state_of()
        requests = state.requests
        info = requests[0] if requests else _DEFAULT_REQUEST
        status = head.status
        if status < 200 and status != 101:
            # An interim response (the filters may pass one on): written as is,
            # to HTTP/1.1 clients only (RFC 9110 15.2).
            if info.version == "1.1":
                await self.output(Data(response_head_bytes(head)))
                if status == 100 and info is not _DEFAULT_REQUEST:
                    info.continue_sent = True
            return
        self._request = info
        self._started = True
        self._head_out = False
        if info.decided is not None:  # a WebSocket upgrade passed on
            if status == 101:
                await self._switch(head, info)
                return
            info.decide(False)
        headers = head.headers
        tokens = _connection_tokens(headers)
        said_close = "close" in tokens
        close = not info.keep_alive or said_close
        if info.expects_continue and not info.body_done and not info.continue_sent:
            close = True  # the client may still send the body we never asked for
        changed: Headers | None = None
        body = self._body
        body.peer_10 = info.version == "1.0"
        no_body = info.method == "HEAD" or status in _NO_BODY_STATUS or status == 101
        self._no_body = no_body
        if no_body:
            body.framing = _LENGTH
        else:
            framing = body_framing(headers)
            if type(framing) is int:
                body.framing = _LENGTH
            elif framing == "chunked":
                if body.peer_10:
                    changed = headers.copy()
                    changed.remove("transfer-encoding")
                    body.framing = _CLOSE
                    close = True
                else:
                    body.framing = _CHUNKED
            else:
                body.framing = _PENDING
        if close:
            if not said_close:
                if changed is None:
                    changed = headers.copy()
                changed.set("Connection", "close")
        elif body.peer_10 and "keep-alive" not in tokens:
            if changed is None:
                changed = headers.copy()
            changed.set("Connection", "keep-alive")
        self._close_after = close
        if changed is not None:
            head = head.replace(headers=changed, version="1.1")
        elif head.version != "1.1":
            head = head.replace(version="1.1")
        body.held_head = head  # written with the first chunk of body, or at the end

    async def _switch(self, head: ResponseHead, info: RequestInfo) -> None:
        """The upstream accepted the WebSocket upgrade: the 101 goes out now (the
        client sends nothing before it), its "body" is the upstream's bytes,
        relayed as they come, and its end ends the connection."""
        body = self._body
        body.framing = _LENGTH
        body.held_head = None
        self._no_body = False
        self._close_after = True
        if head.version != "1.1":
            head = head.replace(version="1.1")
        await self.output(Data(self._head_bytes(head)))
        info.decide(True)

    async def _write_body(self, data: bytes) -> None:
        body = self._body
        if self._no_body or not data:
            return
        head = body.held_head
        if body.framing == _PENDING:
            if body.held is None:
                body.held = data
                return
            await self._decide(chunked=True)
            head = body.held_head
        if body.framing == _CHUNKED:
            data = chunk(data)
        if head is not None:
            head_bytes = self._head_bytes(head)
            if len(data) <= JOIN_LIMIT:
                await self.output(Data(head_bytes + data))
                return
            await self.output(Data(head_bytes))
        await self.output(Data(data))

    def _head_bytes(self, head: ResponseHead) -> bytes:
        """``head`` on the wire, as the held head goes out (once per response). A
        head that cannot be written raises before anything counts as out, so the
        failure can still be answered."""
        data = response_head_bytes(head)
        self._body.held_head = None
        self._head_out = True
        return data

    async def _decide(self, chunked: bool) -> None:
        """The framing of a head without a framing header, now that the event after
        its first chunk of body is known."""
        body = self._body
        head: ResponseHead = body.held_head
        held = body.held or b""
        body.held = None
        headers = head.headers.copy()
        if not chunked:
            headers.set("Content-Length", str(len(held)))
            body.framing = _LENGTH
        elif body.peer_10:
            body.framing = _CLOSE
            if not self._close_after:
                self._close_after = True
                headers.set("Connection", "close")
        else:
            headers.set("Transfer-Encoding", "chunked")
            body.framing = _CHUNKED
        head_bytes = self._head_bytes(head.replace(headers=headers))
        if body.framing == _CHUNKED and held:
            held = chunk(held)
        await self.output(Data(head_bytes + held if len(held) <= JOIN_LIMIT else head_bytes))
        if len(held) > JOIN_LIMIT:
            await self.output(Data(held))

    async def _end_response(self, trailers: Headers | None) -> None:
        body = self._body
        if body.framing == _PENDING:
            await self._decide(chunked=False)
        tail = b""
        if body.framing == _CHUNKED and not self._no_body:
            tail = last_chunk(trailers)
        head = body.held_head
        if head is not None:
            await self.output(Data(self._head_bytes(head) + tail))
        elif tail:
            await self.output(Data(tail))
        self._started = False
        self._request = None
        state = self._state
        assert state is not None
        if state.requests:
            state.requests.popleft()
        if self._close_after:
            self._ended = True
            state.closing = True
            await self.output(StreamEnd())
            return
        if state.requests:
            following = state.requests[0]
            if following.expects_continue and not following.body_done:
                await self.send_continue(following)

    # Failures ------------------------------------------------------------------

    async def _fail(self, error: BaseException) -> None:
        self._ended = True
        state = self._state or self._state_of()
        state.closing = True
        for pending in state.requests:
            pending.decide(False)  # (a decoder waiting for an upgrade's answer)
        info = self._request or (state.requests[0] if state.requests else None)
        client = self._client()
        line = info.line if info is not None else "-"
        if isinstance(error, OSError):
            log.debug("%s %r: client connection failed: %s", client, line, error)
            await self.output(StreamEnd(error))
            return
        if self._started and self._head_out:  # bytes of it are out
            log.warning(
                "%s %r: response interrupted, connection closed: %s",
                client,
                line,
                _reason(error),
            )
            await self.output(StreamEnd(error))
            return
        status = error_status(error)
        reason = REASONS.get(status, "Error")
        log.warning("%s %r: %d %s: %s", client, line, status, reason, _reason(error))
        text = f"{status} {reason}: {_reason(error)}\n".encode("utf-8", "replace")
        fields = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(text))),
            ("Connection", "close"),
        ]
        if status == 426:  # (a WebSocket version we do not pass on: RFC 6455 4.4)
            fields.append(("Sec-WebSocket-Version", "13"))
        headers = Headers.from_list(fields)
        head_bytes = response_head_bytes(ResponseHead(status, reason, headers))
        if info is not None and info.method == "HEAD":
            text = b""
        await self.output(Data(head_bytes + text))
        await self.output(StreamEnd())

    def _client(self) -> str:
        remote = self.pipeline.context.remote
        if remote is None:
            return "-"
        host, port = remote
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.replace("\r", " ").replace("\n", " ")[:200]


# Client side: requests out --------------------------------------------------------

_REQUEST_NO_BODY = frozenset(("GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"))


class EncodeHttpRequest(Filter):
    """``encode_http_request()``: requests in, bytes for the server out. Tells the
    paired ``decode_http_response`` each request's method. See the module docs."""

    name = "encode_http_request"

    def __init__(self) -> None:
        self._state: HttpClientState | None = None
        self._body = _BodyWriter()

    def encode(self, event: Event, out: list[bytes]) -> None:
        """Append the bytes for ``event`` to ``out`` (synchronous: ``mux_http``
        encodes a whole request at once and writes it with one call)."""
        kind = type(event)
        body = self._body
        if kind is Data:
            data: bytes = event.data  # type: ignore[union-attr]
            if not data:
                return
            if body.framing == _PENDING:
                if body.held is None:
                    body.held = data
                    return
                self._decide(True, out)
            held = body.held_head
            if held is not None:
                body.held_head = None
                out.append(request_head_bytes(held))
            out.append(chunk(data) if body.framing == _CHUNKED else data)
        elif kind is MessageStart:
            head: RequestHead = event.head  # type: ignore[union-attr]
            state = self._state
            if state is None:
                state = self._state = HttpClientState.of(self.pipeline.context)
            state.expect(head.method)
            framing = body_framing(head.headers)
            if head.version != "1.1":
                head = head.replace(version="1.1")
            if framing is None:
                body.framing = _PENDING
            elif framing == "chunked":
                body.framing = _CHUNKED
            else:
                body.framing = _LENGTH
            body.held_head = head
        elif kind is MessageEnd:
            if body.framing == _PENDING:
                self._decide(False, out)
            head = body.held_head
            if head is not None:
                body.held_head = None
                out.append(request_head_bytes(head))
            if body.framing == _CHUNKED:
                out.append(last_chunk(event.tail))  # type: ignore[union-attr]

    def _decide(self, chunked: bool, out: list[bytes]) -> None:
        body = self._body
        head: RequestHead = body.held_head
        held = body.held
        body.held = None
        body.held_head = None
        if held is None and head.method.upper() in _REQUEST_NO_BODY:
            out.append(request_head_bytes(head))  # no body, nothing to frame
            body.framing = _LENGTH
            return
        headers = head.headers.copy()
        if chunked:
            headers.set("Transfer-Encoding", "chunked")
            body.framing = _CHUNKED
        else:
            headers.set("Content-Length", str(len(held or b"")))
            body.framing = _LENGTH
        out.append(request_head_bytes(head.replace(headers=headers)))
        if held:
            out.append(chunk(held) if chunked else held)

    async def on_event(self, event: Event) -> None:
        if type(event) is StreamEnd:
            await self.output(event)
            return
        out: list[bytes] = []
        self.encode(event, out)
        if out:
            await self.output(Data(out[0] if len(out) == 1 else b"".join(out)))


# Client side: responses in -----------------------------------------------------------


class DecodeHttpResponse(_Decoder):
    """``decode_http_response(max_line=8192, max_header_bytes=65536, max_headers=100,
    max_body=None)``: the server's bytes in, responses out. Interim responses (1xx
    but 101) are dropped. After a ``101`` the server's bytes are the new
    protocol's: they come out as the 101's body, as they arrive, and the
    server's EOF ends it. See the module docs."""

    name = "decode_http_response"

    _parser: ResponseParser | None = None
    _state: HttpClientState | None = None
    _interim = False  # inside a 1xx response (dropped)
    _relay = False  # after a 101: the bytes are the new protocol's, passed as they come

    def _start(self) -> ResponseParser:
        parser = self._parser = self._new_parser(ResponseParser)
        state = self._state = HttpClientState.of(self.pipeline.context)
        for method in state.pending:
            parser.expect(method)
        state.pending.clear()
        state.parser = parser
        return parser

    async def on_event(self, event: Event) -> None:
        if self._done:
            if self._relay:
                await self._relayed(event)
            return
        kind = type(event)
        parser = self._parser or self._start()
        if kind is Data:
            data = event.data  # type: ignore[union-attr]
            if not data:
                return
            self._state.bytes_in += len(data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            if event.error is not None:  # type: ignore[union-attr]
                self._done = True
                await self.output(event)
                return
            data = b""
        else:
            return
        try:
            items = parser.feed(data)
        except ProtocolError as exc:
            self._done = True
            state = self._state
            assert state is not None
            state.keep_alive = False
            await self.output(StreamEnd(exc))
            return
        output = self.output
        for item in items:
            if type(item) is bytes:
                if not self._interim:
                    await output(Data(item))
            elif type(item) is EndOfMessage:
                if self._interim:
                    self._interim = False
                    continue
                state = self._state
                assert state is not None
                if parser.upgraded:
                    # A 101: the rest of the connection is the new protocol's,
                    # the "body" of the 101, ended by the server's EOF.
                    state.keep_alive = False
                    self._done = self._relay = True
                    trailing = parser.take_trailing()
                    if trailing:
                        await output(Data(trailing))
                    if kind is StreamEnd:
                        await self._relayed(event)
                    return
                state.keep_alive = parser.keep_alive
                state.responses += 1
                await output(_message_end(item.trailers))
            elif isinstance(item, ResponseHead):
                if item.status < 200 and item.status != 101:
                    self._interim = True
                    continue
                await output(MessageStart(item))
        if kind is StreamEnd:
            self._done = True
            state = self._state
            assert state is not None
            state.keep_alive = False
            await output(event)

    async def _relayed(self, event: Event) -> None:
        """After a 101: the server's bytes as they come; its end ends the 101."""
        kind = type(event)
        if kind is Data:
            await self.output(event)
        elif kind is StreamEnd:
            self._relay = False
            if event.error is None:  # type: ignore[union-attr]
                await self.output(_MESSAGE_END)
            await self.output(event)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [DecodeHttpRequest, EncodeHttpResponse, EncodeHttpRequest, DecodeHttpResponse]
