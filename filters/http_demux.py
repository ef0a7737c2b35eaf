"""``demux_http``: an HTTP/1.1 server, one sub-pipeline per request.

``demux_http(max_pending=64, max_line=8192, max_header_bytes=65536,
max_headers=100, max_body=None, websocket="relay").to(layout)`` is Pipy's ``demuxHTTP``: it reads
the client's bytes as requests, runs a sub-pipeline of ``layout`` for each request
(with a child context, so per-request variables never leak into the next request),
and writes each sub-pipeline's answer back as the response, in request order --
pipelined requests included.

It is ``decode_http_request(...)``, ``demux(max_pending).to(layout)`` and
``encode_http_response()`` fused into one filter (the three are chained inside it,
which saves a hop per event); everything their docs say holds:

* the request limits are the decoder's; a malformed or oversized request is
  answered 400/413/414/431/501/505 with ``Connection: close`` after the responses
  to the requests before it;
* a sub-pipeline that fails before its response started -- ``connect`` refused
  (502), an upstream timeout (504), a protocol error, a script error (500) -- gets
  an error response, one line on the ``trioxy.http`` logger, and the connection
  closes; the responses of later requests are dropped. A failure after the
  response started closes the connection. A sub-pipeline that ends without
  answering at all is a failure too (500): every request needs its response;
* keep-alive, ``HEAD``, ``Expect: 100-continue`` and the response framing are the
  encoder's (see :mod:`filters.http_codec`).

WebSocket (``websocket="relay"``, the default). A request asking for
``Upgrade: websocket`` is checked (``protocols.websocket.check_request``: 400,
or 426 for a version other than 13) and its sub-pipeline's context gets
``ctx.vars[filters.http_codec.WEBSOCKET_UPGRADE] = True``, on which ``mux_http``
forwards it with its ``Upgrade`` on a connection of its own. Nothing after the
request head is parsed until its answer's head is known: a ``101`` goes to the
client and the connection becomes a byte relay (the bytes after the request
head, then everything the client sends, go to that sub-pipeline as ``Data``
after the request's ``MessageEnd``, then its ``StreamEnd``; the ``101``'s body
is what comes back, its end ends the connection); any other answer and the
connection goes on as HTTP/1.1. ``websocket=None``: the request is an ordinary
one (``mux_http`` strips ``Upgrade``), as every other upgrade (``h2c``...)
always is. To read the frames, put ``decode_websocket``/``encode_websocket``
around ``mux_http`` in the request's layout (they pass HTTP messages through).
See "WebSocket through the reverse proxy" in docs/http.md.

Graceful shutdown (as nginx and HAProxy do it). When the server begins to shut
down (:class:`pipeline.live.ShutdownNotice`), a connection does not keep the
server waiting for its grace period just because the client keeps it open:

* a connection idle between two requests (no request being received or answered)
  is closed at once;
* a connection with requests in flight answers them; the response to the last
  one carries ``Connection: close`` (unless its head was already written) and
  the connection closes after it, as after any ``Connection: close`` response.
  A request that starts arriving after that one is not read (RFC 9112 9.6: the
  client sends it again elsewhere);
* a connection accepted just before the shutdown began answers its first
  request, with ``Connection: close``.

Other streams (an L4 relay) keep the whole grace period.

The sub-pipeline receives the request (``MessageStart(RequestHead), Data*,
MessageEnd(trailers)``, then ``StreamEnd()``) and outputs one response
(``MessageStart(ResponseHead), Data*, MessageEnd``). In a reverse proxy it is
``mux_http().to(...connect...)``; a script can also answer by itself.

Example (runnable): a server answering every request with its own path, fed two
pipelined requests in memory::

    import trio
    from pipeline import Proxy
    from pipeline.testing import join_data, run_layout
    from protocols.http import Headers, ResponseHead

    def answer(ctx, head, body):
        headers = Headers([("Content-Type", "text/plain")])
        return ResponseHead(200, "OK", headers), head.path.encode()

    proxy = Proxy()
    proxy.pipeline("server").demux_http().to(lambda p: p.replace_message(answer))

    requests = (b"GET /first HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
                b"GET /second HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    out = join_data(trio.run(run_layout, proxy.layout("server"), [requests]))
    assert out.count(b"HTTP/1.1 200 OK\\r\\n") == 2
    assert out.index(b"/first") < out.index(b"/second") and out.endswith(b"/second")
"""

from __future__ import annotations

from pipeline.context import Context
from pipeline.events import Data, Event, MessageStart, StreamEnd
from pipeline.filter import Filter, Output
from pipeline.hookspecs import hookimpl
from pipeline.live import ServerStopping, shutdown_notice

from .demux import Demux
from .headers import remember_request
from .http_codec import (
    WEBSOCKET_UPGRADE,
    DecodeHttpRequest,
    EncodeHttpResponse,
    HttpServerState,
)

__all__ = ["DemuxHttp"]


class DemuxHttp(Demux):
    """``demux_http(max_pending=64, max_line=8192, max_header_bytes=65536,
    max_headers=100, max_body=None, websocket="relay")``: see the module docs."""

    name = "demux_http"
    joint = True
    answer_required = True

    def __init__(
        self,
        max_pending: int = 64,
        max_line: int = 8192,
        max_header_bytes: int = 65536,
        max_headers: int = 100,
        max_body: int | None = None,
        websocket: str | None = "relay",
    ) -> None:
        if websocket not in ("relay", None):
            raise ValueError(f"websocket must be 'relay' or None, got {websocket!r}")
        super().__init__(max_pending)
        self.websocket = websocket
        self._decoder = DecodeHttpRequest(max_line, max_header_bytes, max_headers, max_body)
        self._encoder = EncodeHttpResponse()
        self._input: Output | None = None
        # Graceful shutdown (see the module docs). The notice is the server's: a
        # filter made outside one (a script loading, pipeline.testing) has none.
        self._notice = notice = shutdown_notice.get()
        self._draining = False  # the server is shutting down: the last requests
        self._late = False  # made after the shutdown began: its first request is its last
        self._take_next = False  # draining: the next request is the last one
        self._refusing = False  # draining: a request after the last one is arriving
        self._client: Output | None = None  # draining: the connection's output
        self._client_ended = False  # draining: the connection's output has ended
        self._closing_now = False
        if notice is not None:
            if notice.started:
                self._late = True
            else:
                notice.subscribe(self._on_shutdown)

    def _wire(self) -> Output:
        """Chain decoder -> demux -> encoder -> our output, on the first event (the
        pipeline sets ``output`` and ``pipeline`` after the constructor)."""
        decoder, encoder = self._decoder, self._encoder
        decoder.pipeline = encoder.pipeline = self.pipeline
        decoder.spec = encoder.spec = self.spec
        state = HttpServerState.of(self.pipeline.context)
        state.encoder = encoder  # for 100 Continue
        if self.websocket is not None:
            state.tunnel = self  # WebSocket upgrades are passed on
        encoder.output = self.output
        self.output = encoder.on_event  # what Demux writes its answers to
        decoder.output = super().on_event
        self._input = decoder.on_event
        if self._late:
            self._begin_draining(state, take_next=True)
        return decoder.on_event

    def _message_context(self, start: MessageStart) -> Context:
        # Response-side filters (compress_http, request_id...) read the request
        # they answer from here: events flow one way, so they never see it pass.
        ctx = self.pipeline.context.child()
        remember_request(ctx, start.head)
        info = self._decoder._current  # the request whose head this is
        if info is not None and info.decided is not None:
            # A checked WebSocket upgrade: mux_http keeps its Upgrade and sends
            # it on a connection of its own.
            ctx.vars[WEBSOCKET_UPGRADE] = True
        return ctx

    # WebSocket upgrades (called by the decoder) ---------------------------------

    def hold_input(self) -> None:
        """The upgrade request's ``MessageEnd`` comes next: its sub-pipeline's
        input stays open (what follows may be the upgraded protocol's)."""
        self._hold = True

    async def release_input(self) -> None:
        """The upgrade was refused: the held input ends as any request's does."""
        slot = self._current
        if slot is not None:
            await self._end_input(slot, StreamEnd())

    async def start_relay(self, trailing: bytes) -> None:
        """The 101 went out: from now on the client's bytes (``trailing`` first,
        received after the request head) go to the upgrade's sub-pipeline as
        they come, and its end half-closes the upstream."""
        self._input = super().on_event
        if trailing:
            await Demux.on_event(self, Data(trailing))

    async def on_event(self, event: Event) -> None:
        feed = self._input or self._wire()
        await feed(event)

    # Graceful shutdown -------------------------------------------------------

    def _on_shutdown(self) -> None:
        """The server began to shut down (called by its notice, in its task)."""
        if self._ended or self._draining or not hasattr(self, "pipeline"):
            return  # (no pipeline: an instance the builder made to check arguments)
        if self._input is None:
            self._wire()  # not a byte received yet: idle
        state = HttpServerState.of(self.pipeline.context)
        if state.closing:
            return  # closing already after the requests in flight (Connection: close)
        self._begin_draining(state, take_next=False)

    def _begin_draining(self, state: HttpServerState, take_next: bool) -> None:
        """From now on the connection ends after the requests in flight (after the
        next one, with ``take_next``); with none, it closes at once."""
        self._draining = True
        state.closing = True  # the decoder reads nothing after the request it is reading
        decoder, encoder = self._decoder, self._encoder
        # Swapped in only now, so that the usual path pays nothing for this.
        self._client = encoder.output
        encoder.output = self._to_client
        decoder.output = self._last_requests
        if take_next:
            self._take_next = True
            return
        if state.requests:
            # The newest request not yet answered is the last: its response says
            # so. (The encoder reads this when the response starts.)
            state.requests[-1].keep_alive = False
        if not self._slots:
            self._close_soon()

    async def _last_requests(self, event: Event) -> None:
        """The decoder's output while draining: the requests in flight go on, a
        request starting after them is dropped (the connection closes before
        anything of it is answered)."""
        kind = type(event)
        if kind is MessageStart:
            if not self._take_next:
                self._refusing = True
                return
            self._take_next = False
            state = HttpServerState.of(self.pipeline.context)
            # The decoder records a request before it passes its head on.
            state.requests[-1].keep_alive = False
        elif self._refusing and kind is not StreamEnd:
            return
        await Demux.on_event(self, event)

    async def _to_client(self, event: Event) -> None:
        """The encoder's output while draining: notes that it ended the connection."""
        if type(event) is StreamEnd:
            self._client_ended = True
        assert self._client is not None
        await self._client(event)

    def _answered(self) -> None:
        if self._draining and not self._slots and not self._take_next:
            # The last response is out. If it did not end the connection (its head
            # was written before the shutdown began), close now.
            self._close_soon()

    def _close_soon(self) -> None:
        if not self._closing_now:
            self._closing_now = True
            self.pipeline.start_task(self._close_now, name="demux_http: closing on shutdown")

    async def _close_now(self) -> None:
        if self._client_ended or self._ended:
            return  # ended meanwhile (Connection: close, the client's EOF...)
        self._client_ended = True
        assert self._client is not None
        # Past the encoder, which would answer an error: nothing is being answered.
        await self._client(StreamEnd(ServerStopping("idle connection closed on shutdown")))

    def close(self) -> None:
        notice = self._notice
        if notice is not None:
            notice.unsubscribe(self._on_shutdown)
        super().close()


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [DemuxHttp]
