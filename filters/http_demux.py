"""``demux_http``: an HTTP/1.1 server, one sub-pipeline per request.

``demux_http(max_pending=64, max_line=8192, max_header_bytes=65536,
max_headers=100, max_body=None).to(layout)`` is Pipy's ``demuxHTTP``: it reads
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
from pipeline.events import Event, MessageStart
from pipeline.filter import Filter, Output
from pipeline.hookspecs import hookimpl

from .demux import Demux
from .headers import remember_request
from .http_codec import DecodeHttpRequest, EncodeHttpResponse, HttpServerState

__all__ = ["DemuxHttp"]


class DemuxHttp(Demux):
    """``demux_http(max_pending=64, max_line=8192, max_header_bytes=65536,
    max_headers=100, max_body=None)``: see the module docs."""

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
    ) -> None:
        super().__init__(max_pending)
        self._decoder = DecodeHttpRequest(max_line, max_header_bytes, max_headers, max_body)
        self._encoder = EncodeHttpResponse()
        self._input: Output | None = None

    def _wire(self) -> Output:
        """Chain decoder -> demux -> encoder -> our output, on the first event (the
        pipeline sets ``output`` and ``pipeline`` after the constructor)."""
        decoder, encoder = self._decoder, self._encoder
        decoder.pipeline = encoder.pipeline = self.pipeline
        decoder.spec = encoder.spec = self.spec
        HttpServerState.of(self.pipeline.context).encoder = encoder  # for 100 Continue
        encoder.output = self.output
        self.output = encoder.on_event  # what Demux writes its answers to
        decoder.output = super().on_event
        self._input = decoder.on_event
        return decoder.on_event

    def _message_context(self, start: MessageStart) -> Context:
        # Response-side filters (compress_http, request_id...) read the request
        # they answer from here: events flow one way, so they never see it pass.
        ctx = self.pipeline.context.child()
        remember_request(ctx, start.head)
        return ctx

    async def on_event(self, event: Event) -> None:
        feed = self._input or self._wire()
        await feed(event)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [DemuxHttp]
