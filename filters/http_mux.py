"""``mux_http``: requests to upstream servers over a shared pool of connections.

``mux_http(key=None, max_idle=10.0, max_connections_per_key=0).to(layout)`` sends
each request it receives to a server over an upstream connection taken from a
pool shared by every stream of the same builder call (every client connection,
every request under a ``demux_http``), and outputs the server's response. The
``layout`` carries the bytes, usually just ``connect``; each pooled connection is
a live **session** ``encode_http_request -> layout -> decode_http_response``.

* ``key``: ``key(ctx)`` (plain or ``async def``), evaluated per request with the
  request's context; requests with equal keys share connections. Default: the
  context variable ``target`` if set, else the request's ``Host`` header. With
  the default key and ``target`` set (the server ``balance`` picked), a new
  connection that reached another server (``connect`` failed over) carries its
  request, then closes instead of joining the pool: pooled under the key, it
  would take later requests meant for the picked server (a sticky session's,
  once that server is back) to the other one.
* ``max_idle``: a connection idle for that many seconds is closed (``None``:
  kept until the server closes it).
* ``max_connections_per_key``: at most that many connections per key (0:
  unlimited); beyond it requests wait, first come first served, for a connection
  to become free.
* the response limits (``max_line``, ``max_header_bytes``, ``max_headers``,
  ``max_body``) are those of ``decode_http_response``.

A connection carries one request at a time (no upstream pipelining): a request
takes the most recently used idle connection of its key, else opens one, else
waits. Requests are buffered whole before they are written (as nginx does by
default), the head and a small body in one write: ``max_request_body`` (16 MiB;
``None``: no limit) bounds that buffer, a larger request ends the stream with a
413 :class:`~protocols.http.ProtocolError`. Responses stream back as they arrive.

Proxy rules applied here: hop-by-hop headers are removed from every request
forwarded and every response returned (:func:`filters.http_codec.strip_hop_by_hop`),
and so is ``Expect: 100-continue`` (the server side, ``encode_http_response``,
answers it; the upstream gets the body at once).

WebSocket upgrades. A request whose context has
``ctx.vars[filters.http_codec.WEBSOCKET_UPGRADE]`` (set by ``demux_http`` for a
checked ``Upgrade: websocket`` request) keeps its ``Upgrade`` and ``Connection:
upgrade`` and goes on a new connection (never an idle one; counted with its key
but not held to ``max_connections_per_key``). A ``101`` answer is checked
against the request's ``Sec-WebSocket-Key`` (``check_response``; a bad one ends
the stream with an :class:`~pipeline.errors.UpstreamError`, 502, and closes the
connection); after it, the stream's ``Data`` is written to the connection as it
comes, its ``StreamEnd`` half-closes it, the upstream's bytes are the 101's
body, and the connection is never reused. Any other answer is an ordinary
response on a connection reusable by the usual rules.

Reuse and its end. After a response the connection is kept only if the server
keeps it: a response with ``Connection: close``, an HTTP/1.0 response without
keep-alive, a response delimited by the connection's close, or the server's EOF
(seen while idle) retires the connection before another request is written on
it. A stream closed before its response is complete (the client went away)
closes the connection it was using.

Shutdown. When the server begins its graceful shutdown
(:class:`pipeline.live.ShutdownNotice`), the pool closes its idle connections, and
a connection whose request completes after that is closed instead of going back
to the pool (unless a request is waiting for it), so the servers see the proxy
leave at once.

Failures and the retry. When the connection fails before any byte of the
response arrived -- refused, reset, closed, timed out -- a request that was never
sent (``ConnectRefused``, ``ConnectTimeout``) or whose method is idempotent (GET,
HEAD, OPTIONS, PUT, DELETE, TRACE) is retried **once** on another connection
(a balancer in ``connect`` picks another server); the retry is logged on the
``trioxy.mux_http`` logger. Otherwise the stream ends with ``StreamEnd(error)``
(a ``demux_http`` in front answers 502 or 504). A failure after the response
started ends the stream with the error (the client connection closes). The
stream's own ``StreamEnd`` is passed on after its response.

Example (runnable): two requests over one pooled connection to a stand-in server
(a ``replace_data`` filter playing the socket), counting the connections used::

    import trio
    from pipeline import MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.live import service_nursery
    from pipeline.testing import join_data, run_layout
    from protocols.http import Headers, RequestHead

    connections = set()

    def server(ctx):
        connections.add(ctx.id)      # each upstream connection has its own context
        return b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok"

    proxy = Proxy()
    (proxy.pipeline("client")
        .mux_http(key=lambda ctx: "backend")
        .to(lambda p: p.replace_data(lambda ctx, data: server(ctx))))

    async def main():
        # Pooled connections live in the service nursery (the runtime sets it).
        async with trio.open_nursery() as services:
            service_nursery.set(services)
            for path in ("/a", "/b"):
                head = RequestHead("GET", path, Headers([("Host", "backend")]))
                out = await run_layout(proxy.layout("client"),
                                       [MessageStart(head), MessageEnd(), StreamEnd()])
                assert join_data(out) == b"ok" and out[-1] == StreamEnd()
            services.cancel_scope.cancel()

    trio.run(main)
    assert len(connections) == 1
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import trio

from pipeline.address import format_address
from pipeline.errors import ConnectRefused, ConnectTimeout, PipelineError, UpstreamError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.layout import Layout
from pipeline.live import Pipeline, ShutdownNotice, service_nursery, shutdown_notice
from protocols.http import ProtocolError, RequestHead, ResponseHead
from protocols.http.writer import InvalidHeadError
from protocols.websocket.errors import HandshakeError
from protocols.websocket.handshake import check_request, check_response

from ._callback import as_async
from .balance import parse_target
from .http_codec import (
    JOIN_LIMIT,
    WEBSOCKET_UPGRADE,
    DecodeHttpResponse,
    EncodeHttpRequest,
    HttpClientState,
    strip_hop_by_hop,
)

__all__ = ["HttpPool", "HttpSession", "MuxHttp"]

log = logging.getLogger("trioxy.mux_http")

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
#: Request headers the proxy answers itself: ``Expect`` (100-continue, the only
#: expectation defined, is answered by the server side; the body is sent whole).
_ANSWERED_HERE = frozenset(("expect",))


class _Waiter:
    """A request waiting for a connection of a full key."""

    __slots__ = ("event", "open_new", "session")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.session: HttpSession | None = None  # handed over by a finished request
        self.open_new = False  # a slot was freed: open a connection


class _KeyPool:
    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[HttpSession] = []  # oldest first
        self.count = 0  # connections open (idle or busy)
        self.waiters: deque[_Waiter] = deque()


class HttpSession:
    """One upstream connection: ``encode_http_request -> layout ->
    decode_http_response``, carrying one request at a time."""

    __slots__ = (
        "client",
        "closed",
        "decoder",
        "encoder",
        "idle_since",
        "key",
        "keys",
        "mark",
        "pipeline",
        "pool",
        "started",
        "stream",
        "target_key",
        "tunnel",
        "used",
        "websocket_key",
        "writing",
    )

    def __init__(self, pool: HttpPool, key: Hashable, layout: Layout, opener: MuxHttp) -> None:
        self.pool = pool
        self.key = key
        self.keys = pool.key_pool(key)
        self.stream: MuxHttp | None = None  # the request in flight, if any
        self.started = False  # a byte of its response arrived
        self.writing = False
        self.closed = False
        self.used = 0  # requests carried
        self.mark = 0  # the server's byte count when the request in flight was sent
        self.idle_since = 0.0
        # A WebSocket upgrade's connection: the key its 101 must answer, and
        # whether the 101 came (the connection is then a relay, never reused).
        self.websocket_key: str | None = None
        self.tunnel = False
        # The key is the target the balancer picked (``ctx.target``): checked
        # against the server the connection reached, once, when its first
        # response is complete.
        self.target_key = False
        context = opener.pipeline.context.child()
        nursery = service_nursery.get() or opener.pipeline.nursery
        decoder = self.decoder = DecodeHttpResponse(*pool.limits)
        encoder = self.encoder = EncodeHttpRequest()
        pipeline = self.pipeline = Pipeline(layout, context, nursery, decoder.on_event)
        decoder.pipeline = encoder.pipeline = pipeline
        decoder.output = self.on_output
        encoder.output = pipeline.input
        self.client = HttpClientState.of(context)

    def usable(self) -> bool:
        return not self.closed and not self.pipeline.nursery.cancel_scope.cancel_called

    async def send(self, stream: MuxHttp, events: list[Event]) -> None:
        """Write ``stream``'s whole request."""
        self.stream = stream
        self.started = False
        self.mark = self.client.bytes_in
        self.used += 1
        stream._session = self
        pieces: list[bytes] = []
        encode = self.encoder.encode
        for event in events:
            encode(event, pieces)
        self.writing = True
        try:
            size = sum(map(len, pieces))
            if len(pieces) == 1 or size <= 4 * JOIN_LIMIT:
                await self.pipeline.input(Data(pieces[0] if len(pieces) == 1 else b"".join(pieces)))
            else:
                for piece in pieces:
                    if self.closed:
                        break
                    await self.pipeline.input(Data(piece))
        except BaseException:
            self.writing = False
            self.close()  # interrupted mid-request: the connection is unusable
            raise
        self.writing = False
        if self.stream is None and not self.closed:
            # The response was complete before the write returned (an in-memory
            # server, or one answering before the end of the body): the request
            # is written too now, so the connection is as reusable as it says.
            self._reuse()

    async def on_output(self, event: Event) -> None:
        """The decoded responses (and the end) of the connection."""
        kind = type(event)
        if kind is StreamEnd:
            self._ended(event.error)  # type: ignore[union-attr]
            return
        stream = self.stream
        if stream is None:
            return  # nothing asked (a decoder error follows soon)
        if kind is MessageStart:
            self.started = True
            head: ResponseHead = event.head  # type: ignore[union-attr]
            if self.websocket_key is not None and head.status == 101:
                if not await self._switch(stream, head):
                    return
                stripped = strip_hop_by_hop(head.headers, keep_upgrade=True)
            else:
                stripped = strip_hop_by_hop(head.headers)
            if stripped is not None:
                event = MessageStart(head.replace(headers=stripped))
        elif kind is MessageEnd:
            self.stream = None
            stream._session = None
        if not stream._ended and not stream.closed:
            try:
                await stream.output(event)
            except Exception as exc:
                stream._broken(exc)
        if kind is MessageEnd:
            await stream._answered()
            if not self.writing:  # else send() does this when the write returns
                self._reuse()

    async def _switch(self, stream: MuxHttp, head: ResponseHead) -> bool:
        """A 101 to a WebSocket upgrade: checked against the request's key (else
        the stream fails with a 502 and the connection closes); from now on the
        connection relays both ways."""
        key = self.websocket_key
        assert key is not None
        try:
            check_response(head.status, head.headers, key)
        except HandshakeError as exc:
            self.stream = None
            stream._session = None
            self.close()
            stream._ended = True
            stream._waiting = False
            error = UpstreamError(f"bad WebSocket handshake answer: {exc}")
            if not stream.closed:
                await stream.output(StreamEnd(error))
            return False
        self.tunnel = True
        stream._tunnel = self
        return True

    def _reuse(self) -> None:
        """A request and its response are complete: back to the pool, or closed if
        the server is closing the connection."""
        if self.closed:
            return
        if self.target_key:
            self.target_key = False
            if not self._reaches_key():
                self.close()
                return
        if self.client.keep_alive and not self.tunnel:
            self.pool.release(self)
        else:
            self.close()

    def _reaches_key(self) -> bool:
        """Whether the connection reached the server its key names. ``connect``
        may have failed over to another one: pooled under the key, that
        connection would carry later requests meant for the first server (a
        sticky session's, once it is back) to the other one."""
        upstream = self.pipeline.context.get("upstream")
        if upstream is None:
            return True  # no connect reported (an in-memory server)
        try:
            return bool(upstream == format_address(*parse_target(self.key)))
        except (TypeError, ValueError):
            return True  # a key that is not an address says nothing

    def _ended(self, error: BaseException | None) -> None:
        stream = self.stream
        # "Started": any byte of the response arrived, even an incomplete head.
        started = self.started or self.client.bytes_in > self.mark
        self.stream = None
        self.close()
        if stream is not None:
            stream._session = None
            stream._failed(error, started, self.used > 1)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pool.retire(self)
        self.pipeline.close()

    def __repr__(self) -> str:
        return f"<HttpSession {self.key!r} used={self.used}>"


class HttpPool:
    """The upstream connections of one ``mux_http`` builder call, by key."""

    def __init__(
        self,
        max_idle: float | None,
        max_connections_per_key: int,
        limits: tuple[int, int, int, int | None],
    ) -> None:
        self.max_idle = max_idle
        self.max_connections = max_connections_per_key
        self.limits = limits
        self.keys: dict[Hashable, _KeyPool] = {}
        self._sweeping: trio.Nursery | None = None  # where the idle sweeper runs
        self._notice: ShutdownNotice | None = None  # the server's, once subscribed to

    def key_pool(self, key: Hashable) -> _KeyPool:
        keys = self.keys.get(key)
        if keys is None:
            keys = self.keys[key] = _KeyPool()
        return keys

    def open_dedicated(self, key: Hashable, layout: Layout, stream: MuxHttp) -> HttpSession:
        """A new connection of ``key`` for a WebSocket upgrade: never an idle one
        (counted with the key's connections, but not held to its limit: an
        upgraded connection may last for hours)."""
        keys = self.key_pool(key)
        keys.count += 1
        return HttpSession(self, key, layout, stream)

    def take_idle(self, key: Hashable) -> HttpSession | None:
        """An idle connection of ``key``, if there is one (the fast path, no await)."""
        keys = self.keys.get(key)
        if keys is None:
            return None
        idle = keys.idle
        while idle:
            session = idle.pop()  # the most recently used: the least likely closed
            if session.usable():
                return session
            session.close()
        return None

    async def acquire(self, key: Hashable, layout: Layout, stream: MuxHttp) -> HttpSession:
        """A connection of ``key`` for one request: an idle one, a new one, or the
        first to become free when the key is full."""
        keys = self.key_pool(key)
        while True:
            idle = self.take_idle(key)
            if idle is not None:
                return idle
            limit = self.max_connections
            if not limit or keys.count < limit:
                keys.count += 1
                return HttpSession(self, key, layout, stream)
            waiter = _Waiter()
            keys.waiters.append(waiter)
            try:
                await waiter.event.wait()
            except BaseException:
                if waiter.session is not None:
                    self.release(waiter.session)
                elif waiter.open_new:
                    keys.count -= 1
                    self._free_slot(keys)
                else:
                    keys.waiters.remove(waiter)
                raise
            if waiter.open_new:
                return HttpSession(self, key, layout, stream)
            session = waiter.session
            if session is not None and session.usable():
                return session
            # closed between the hand-over and now (the server's EOF): look again

    def release(self, session: HttpSession) -> None:
        """``session`` finished a request and may carry another."""
        keys = session.keys
        if not session.usable():
            session.close()
            return
        if keys.waiters:
            waiter = keys.waiters.popleft()
            waiter.session = session
            waiter.event.set()
            return
        if self._shutting_down():
            session.close()  # an idle connection would only hold the server up
            return
        session.idle_since = trio.current_time()
        keys.idle.append(session)
        if self.max_idle is not None:
            self._sweep_soon(session)

    def _shutting_down(self) -> bool:
        """Whether the server is shutting down. The pool is made when the script
        loads, before any server: it subscribes to the notice of the server it
        serves the first time a connection comes back to it."""
        notice = shutdown_notice.get()
        if notice is None:
            return False
        if notice is not self._notice:
            self._notice = notice
            notice.subscribe(self.close)  # closes the idle connections
        return notice.started

    def retire(self, session: HttpSession) -> None:
        """``session`` is closed: forget it and free its slot."""
        keys = session.keys
        try:
            keys.idle.remove(session)
        except ValueError:
            pass
        keys.count -= 1
        self._free_slot(keys)

    def _free_slot(self, keys: _KeyPool) -> None:
        if keys.waiters:
            waiter = keys.waiters.popleft()
            keys.count += 1
            waiter.open_new = True
            waiter.event.set()

    def _sweep_soon(self, session: HttpSession) -> None:
        nursery = self._sweeping
        if nursery is not None and not nursery.cancel_scope.cancel_called:
            return
        nursery = session.pipeline.nursery  # where the connections of this pool live
        self._sweeping = nursery
        nursery.start_soon(self._sweep, nursery)

    async def _sweep(self, nursery: trio.Nursery) -> None:
        """Close connections idle for ``max_idle``; runs while any is idle."""
        max_idle = self.max_idle
        assert max_idle is not None
        try:
            while True:
                oldest = math.inf
                now = trio.current_time()
                for keys in list(self.keys.values()):
                    for session in list(keys.idle):
                        deadline = session.idle_since + max_idle
                        if deadline <= now:
                            log.debug("connection %r idle for %gs: closed", session, max_idle)
                            session.close()
                        else:
                            oldest = min(oldest, deadline)
                if oldest == math.inf:
                    return
                await trio.sleep_until(oldest)
        finally:
            if self._sweeping is nursery:
                self._sweeping = None

    def close(self) -> None:
        """Close every idle connection (busy ones close when their stream does)."""
        for keys in list(self.keys.values()):
            for session in list(keys.idle):
                session.close()

    def __len__(self) -> int:
        return sum(k.count for k in self.keys.values())


def _check(max_idle: float | None, max_connections_per_key: int, limits: tuple[Any, ...]) -> None:
    if max_idle is not None:
        if isinstance(max_idle, bool) or not isinstance(max_idle, (int, float)):
            raise TypeError(f"max_idle must be a number of seconds or None, got {max_idle!r}")
        if not max_idle > 0 or math.isnan(max_idle):
            raise ValueError("max_idle must be positive (or None: never)")
    value = max_connections_per_key
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"max_connections_per_key must be an int >= 0 (0: unlimited), got {value!r}"
        )
    DecodeHttpResponse(*limits)  # checks the response limits


#: The last argument set that passed MuxHttp's checks (see MuxHttp.__init__).
_last_checked: tuple[Any, ...] | None = None


def _remember_checked(settings: tuple[Any, ...]) -> None:
    global _last_checked
    _last_checked = settings


async def _reraise(exc: BaseException) -> None:
    raise exc


class MuxHttp(Filter):
    """``mux_http(key=None, max_idle=10.0, max_connections_per_key=0, max_line=8192,
    max_header_bytes=65536, max_headers=100, max_body=None, max_request_body=16 MiB)``:
    see the module docs."""

    name = "mux_http"
    joint = True

    def __init__(
        self,
        key: Callable[..., Any] | None = None,
        max_idle: float | None = 10.0,
        max_connections_per_key: int = 0,
        max_line: int = 8192,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
        max_body: int | None = None,
        max_request_body: int | None = 16 << 20,
    ) -> None:
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the context or None, got {key!r}")
        # A mux_http under demux_http is made per request, with the very argument
        # objects the builder checked at load: the checks are skipped when every
        # argument *is* (identity, so True never passes for 1) one of the last
        # set that passed.
        last = _last_checked
        if not (
            last is not None
            and max_idle is last[0]
            and max_connections_per_key is last[1]
            and max_line is last[2]
            and max_header_bytes is last[3]
            and max_headers is last[4]
            and max_body is last[5]
            and max_request_body is last[6]
        ):
            _check(
                max_idle,
                max_connections_per_key,
                (max_line, max_header_bytes, max_headers, max_body),
            )
            if max_request_body is not None and (
                isinstance(max_request_body, bool)
                or not isinstance(max_request_body, int)
                or max_request_body < 0
            ):
                raise ValueError(
                    f"max_request_body must be an int >= 0 or None, got {max_request_body!r}"
                )
            _remember_checked(
                (
                    max_idle,
                    max_connections_per_key,
                    max_line,
                    max_header_bytes,
                    max_headers,
                    max_body,
                    max_request_body,
                )
            )
        self.max_request_body = max_request_body
        self._keyfn = as_async(key) if key is not None else None
        self._size = 0  # body bytes of the request being received
        self._events: list[Event] | None = None  # the request being received
        self._request: list[Event] | None = None  # the request sent, kept for a retry
        self._session: HttpSession | None = None
        self._waiting = False  # a request is out and its response not complete
        self._input_end: StreamEnd | None = None
        self._tries = 0
        self._ended = False
        self.closed = False
        self._websocket_key: str | None = None  # the request is a WebSocket upgrade
        self._tunnel: HttpSession | None = None  # its connection, once the 101 came

    @classmethod
    def shared(
        cls,
        key: Callable[..., Any] | None = None,
        max_idle: float | None = 10.0,
        max_connections_per_key: int = 0,
        max_line: int = 8192,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
        max_body: int | None = None,
        max_request_body: int | None = 16 << 20,
    ) -> HttpPool:
        return HttpPool(
            max_idle, max_connections_per_key, (max_line, max_header_bytes, max_headers, max_body)
        )

    @property
    def pool(self) -> HttpPool:
        pool: HttpPool = self.spec.state
        return pool

    # Requests ------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is Data:
            events = self._events
            if events is not None:
                events.append(event)
                self._size += len(event.data)  # type: ignore[union-attr]
                limit = self.max_request_body
                if limit is not None and self._size > limit:
                    await self._too_large(limit)
            elif self._tunnel is not None:
                await self._tunnel.pipeline.input(event)  # upgraded: the client's bytes
        elif kind is MessageStart:
            head = event.head  # type: ignore[union-attr]
            if isinstance(head, RequestHead):
                stripped = strip_hop_by_hop(head.headers, also=_ANSWERED_HERE)
                if stripped is not None:
                    # (An upgrade has Connection: it is looked for only then.)
                    if self.pipeline.context.vars.get(WEBSOCKET_UPGRADE):
                        self._websocket_key = check_request(head.method, head.headers)
                        stripped = strip_hop_by_hop(
                            head.headers, keep_upgrade=True, also=_ANSWERED_HERE
                        )
                    event = MessageStart(head.replace(headers=stripped))
            self._events = [event]
            self._size = 0
        elif kind is MessageEnd:
            events = self._events
            if events is not None:
                self._events = None
                events.append(event)
                self._request = events
                self._tries = 0
                await self._send()
        elif kind is StreamEnd:
            self._events = None
            tunnel = self._tunnel
            if tunnel is not None and self._input_end is None and not tunnel.closed:
                await tunnel.pipeline.input(StreamEnd())  # half-closes the upstream
            if self._input_end is None:
                self._input_end = event  # type: ignore[assignment]
                if not self._waiting and not self._ended:
                    self._ended = True
                    await self.output(event)

    async def _too_large(self, limit: int) -> None:
        self._events = None
        if not self._ended and not self.closed:
            self._ended = True
            reason = f"request body larger than {limit} bytes (mux_http buffers requests whole)"
            await self.output(StreamEnd(ProtocolError(reason, 413)))

    def _default_key(self, head: Any) -> Hashable:
        target = self.pipeline.context.get("target")
        if target is not None:
            return target  # type: ignore[no-any-return]
        return head.host if isinstance(head, RequestHead) else None

    async def _send(self) -> None:
        request = self._request
        if request is None or self._ended or self.closed:
            return
        self._tries += 1
        self._waiting = True
        fn = self._keyfn
        if fn is None:
            key = self._default_key(request[0].head)  # type: ignore[union-attr]
        else:
            key = await fn(self.pipeline.context)
        pool = self.pool
        if self._websocket_key is not None:
            session = pool.open_dedicated(key, self.sub_layout, self)
            session.websocket_key = self._websocket_key
        else:
            session = pool.take_idle(key) or await pool.acquire(key, self.sub_layout, self)
        if not session.used and fn is None:
            session.target_key = self.pipeline.context.get("target") is not None
        if self.closed:
            self.pool.release(session)
            return
        try:
            await session.send(self, request)
        except InvalidHeadError as exc:
            # A head the filters made that cannot be written: nothing was sent.
            session.stream = None
            session.close()
            self._ended = True
            self._waiting = False
            await self.output(StreamEnd(PipelineError(f"mux_http: invalid request: {exc}")))

    # Responses (called by the session) ----------------------------------------------

    def _broken(self, exc: Exception) -> None:
        """Our output chain raised ``exc`` while the session delivered a response:
        that ends this stream (raised again in its nursery), never the session,
        whose task it was."""
        self._ended = True
        self.pipeline.start_task(_reraise, exc)

    async def _answered(self) -> None:
        self._waiting = False
        self._request = None
        end = self._input_end
        if end is not None and not self._ended and not self.closed:
            self._ended = True
            await self.output(end)

    def _failed(self, error: BaseException | None, started: bool, reused: bool) -> None:
        """The connection carrying our request ended before the response did."""
        if self._ended or self.closed:
            return
        request = self._request
        if not started and request is not None and self._tries < 2:
            method = request[0].head.method  # type: ignore[union-attr]
            never_sent = isinstance(error, (ConnectRefused, ConnectTimeout))
            if never_sent or method in IDEMPOTENT:
                why = error if error is not None else "the server closed the connection"
                log.info(
                    "%s %s: retrying on another connection (%s connection failed: %s)",
                    method,
                    request[0].head.target,  # type: ignore[union-attr]
                    "a reused" if reused else "a new",
                    why,
                )
                self.pipeline.start_task(self._send, name="mux_http retry")
                return
        if error is None:
            error = UpstreamError("the server closed the connection before answering")
        self._ended = True
        self._waiting = False
        self.pipeline.start_task(self.output, StreamEnd(error), name="mux_http failure")

    def close(self) -> None:
        self.closed = True
        session = self._session
        if session is not None:
            self._session = None
            session.stream = None
            session.close()  # its response would have nowhere to go


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [MuxHttp]
