"""``compress_http`` and ``decompress_http``: gzip and deflate content codings.

``compress_http(level=6, min_size=256, types=COMPRESSIBLE_TYPES)`` compresses
response bodies, streaming: each ``Data`` in gives one compressed ``Data`` out (a
zlib sync flush per chunk, so a body that trickles -- server-sent events, a long
poll -- is not held back), and the body is never gathered whole. Put it after the
filter that answers, in the per-request sub-pipeline of ``demux_http``::

    demux_http().to(lambda p: p.serve_http(app).compress_http())

How it knows what the client accepts: the request's ``Accept-Encoding`` is read
from the request head recorded in the request's context, ``ctx.http_request``
(:func:`filters.headers.request_of`). ``serve_http`` records it; so do ``route``,
``request_id``, ``forwarded_headers`` and ``set_request_headers`` when the request
passes through them, and ``compress_http`` itself on the heads of requests that
pass through it (so in a proxy ``p.compress_http().connect(...).compress_http()``
works too). With no request known the response passes unchanged.

A response is compressed when all of these hold:

* the request accepts ``gzip`` or ``deflate`` (``Accept-Encoding`` q-values are
  honoured, ``*`` stands for codings not named, ``q=0`` refuses; the coding with
  the highest q wins, gzip on a tie);
* the request is not ``HEAD`` and the status is not 1xx, 204, 206 or 304;
* the response has no ``Content-Encoding`` yet, no ``Content-Range``, and no
  ``Cache-Control: no-transform``;
* its ``Content-Type`` is one of ``types`` (``"text/*"`` style wildcards allowed);
* its ``Content-Length``, when it has one, is at least ``min_size`` bytes.

A compressed response loses its ``Content-Length`` (the encoder then frames the
body with chunked encoding, or by closing, for HTTP/1.0), gains
``Content-Encoding`` and ``Vary: Accept-Encoding``, and a strong ``ETag`` becomes
weak (``W/"..."``): the bytes differ from the uncompressed representation's. A
response of a compressible type that is sent uncompressed because of the request
gets ``Vary: Accept-Encoding`` too, so caches keep the variants apart.

``decompress_http(max_size=64 MiB)`` undoes a ``Content-Encoding`` of ``gzip``
(also ``x-gzip``) or ``deflate`` (zlib-wrapped, or raw as some servers send it) on
any message, request or response, so that scripts can read bodies; other codings
pass unchanged. It removes ``Content-Encoding`` and ``Content-Length`` (an empty
body -- a response to ``HEAD``, a 304 -- stays empty). A body
that inflates beyond ``max_size`` bytes (a zip bomb), or that is not valid
compressed data, ends the stream with ``StreamEnd(ProtocolError)`` -- status 413
for a request, 502 for a response -- instead of the rest of the message; the
decompressor never produces more than ``max_size + 1`` bytes at once.

Example (runnable)::

    import gzip

    import trio
    from pipeline import Data, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout
    from protocols.http import Headers, RequestHead

    proxy = Proxy()
    (proxy.pipeline("per-request")
        .serve_http(lambda ctx, request: "hello, compression! " * 100)
        .compress_http())

    request = RequestHead("GET", "/", Headers([("Accept-Encoding", "br;q=1, gzip;q=0.8")]))
    out = trio.run(run_layout, proxy.layout("per-request"),
                   [MessageStart(request), MessageEnd(), StreamEnd()])
    head = out[0].head
    assert head.headers["Content-Encoding"] == "gzip"
    assert head.headers["Vary"] == "Accept-Encoding" and "Content-Length" not in head.headers
    assert gzip.decompress(join_data(out)) == b"hello, compression! " * 100
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import ProtocolError, RequestHead, ResponseHead

from .headers import remember_request, request_of

__all__ = [
    "COMPRESSIBLE_TYPES",
    "CompressHttp",
    "DecompressHttp",
    "choose_coding",
    "parse_accept_encoding",
]

#: Media types worth compressing by default.
COMPRESSIBLE_TYPES: tuple[str, ...] = (
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/ld+json",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
)

# zlib window bits: 16 + 15 writes/reads a gzip wrapper, 15 a zlib one, -15 raw.
_WBITS = {"gzip": 31, "deflate": 15}
_NO_BODY_STATUS = frozenset({204, 206, 304})


@lru_cache(maxsize=256)
def parse_accept_encoding(value: str) -> dict[str, float]:
    """``Accept-Encoding`` as ``{coding: q}`` (codings lower-cased; a malformed q
    counts as 0, refusing that coding). Cached: clients repeat the same header."""
    accepted: dict[str, float] = {}
    for item in value.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        accepted[coding] = q
    return accepted


def choose_coding(accept_encoding: str | None) -> str | None:
    """``"gzip"``, ``"deflate"`` or ``None`` (send identity) for a request's
    ``Accept-Encoding`` header value (``None`` when the request has none)."""
    if not accept_encoding:
        return None
    accepted = parse_accept_encoding(accept_encoding)
    star = accepted.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in ("gzip", "deflate"):  # gzip first: it wins ties
        q = accepted.get(coding, accepted.get("x-gzip", star) if coding == "gzip" else star)
        if q > best_q:
            best, best_q = coding, q
    return best


def _type_matcher(types: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for t in types:
        if not isinstance(t, str) or "/" not in t:
            raise ValueError(f"a media type looks like 'text/html' or 'text/*', got {t!r}")
        t = t.strip().lower()
        if t.endswith("/*"):
            prefixes.append(t[:-1])
        else:
            exact.add(t)
    return frozenset(exact), tuple(prefixes)


class CompressHttp(Filter):
    """``compress_http(level=6, min_size=256, types=COMPRESSIBLE_TYPES)``: gzip or
    deflate the response bodies the client accepts (see the module docs)."""

    name = "compress_http"

    def __init__(
        self, level: int = 6, min_size: int = 256, types: Iterable[str] = COMPRESSIBLE_TYPES
    ) -> None:
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise ValueError(f"level is 1 (fast) to 9 (small), got {level!r}")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ValueError(f"min_size must be a whole number of bytes >= 0, got {min_size!r}")
        if isinstance(types, str):
            raise TypeError("types is a list of media types, e.g. ['text/*']")
        self.level = level
        self.min_size = min_size
        self.exact_types, self.type_prefixes = _type_matcher(types)
        self.compressor: Any = None  # zlib.Compress of the response being compressed

    async def on_event(self, event: Event) -> None:
        compressor = self.compressor
        kind = type(event)
        if kind is Data:
            if compressor is not None:
                data = compressor.compress(event.data)  # type: ignore[union-attr]
                data += compressor.flush(zlib.Z_SYNC_FLUSH)
                event = Data(data)
        elif kind is MessageStart:
            head = event.head  # type: ignore[union-attr]
            if type(head) is ResponseHead:
                event = self._start_response(head, event)  # type: ignore[arg-type]
            elif type(head) is RequestHead:
                remember_request(self.context, head)
        elif kind is MessageEnd:
            if compressor is not None:
                self.compressor = None
                await self.output(Data(compressor.flush()))
        elif kind is StreamEnd:
            self.compressor = None
        await self.output(event)

    def _start_response(self, head: ResponseHead, event: MessageStart) -> MessageStart:
        request = request_of(self.context)
        if request is None or request.method == "HEAD":
            return event
        status = head.status
        if status < 200 or status in _NO_BODY_STATUS:
            return event
        headers = head.headers
        if "content-encoding" in headers or "content-range" in headers:
            return event
        if headers.has_token("cache-control", "no-transform"):
            return event
        content_type = headers.get("content-type")
        if content_type is None or not self._compressible(content_type):
            return event
        length = headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) < self.min_size:
            return event
        coding = choose_coding(request.headers.get("accept-encoding"))
        changed = headers.copy()
        if not (headers.has_token("vary", "accept-encoding") or headers.has_token("vary", "*")):
            changed.add("Vary", "Accept-Encoding")
        if coding is not None:
            changed.remove("content-length")
            changed.set("Content-Encoding", coding)
            etag = changed.get("etag")
            if etag is not None and not etag.startswith("W/"):
                changed.set("ETag", "W/" + etag)
            self.compressor = zlib.compressobj(self.level, zlib.DEFLATED, _WBITS[coding])
        return MessageStart(head.replace(headers=changed))

    def _compressible(self, content_type: str) -> bool:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in self.exact_types:
            return True
        return any(media.startswith(p) for p in self.type_prefixes)


class DecompressHttp(Filter):
    """``decompress_http(max_size=67108864)``: undo gzip/deflate content coding of
    message bodies, with at most ``max_size`` decompressed bytes a message."""

    name = "decompress_http"

    def __init__(self, max_size: int = 64 << 20) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be a whole number of bytes >= 1, got {max_size!r}")
        self.max_size = max_size
        self.coding = ""
        self.decompressor: Any = None
        self.size = 0
        self.too_large_status = 502  # 413 for a request, 502 for a response
        self.bad_data_status = 502  # 400 for a request, 502 for a response
        self.first = True  # no byte fed yet (a deflate body may turn out raw)
        self.failed = False

    async def on_event(self, event: Event) -> None:
        if self.failed:
            return
        kind = type(event)
        if kind is Data:
            if self.decompressor is not None:
                await self._feed(event.data)  # type: ignore[union-attr]
                return
        elif kind is MessageStart:
            event = self._start(event)  # type: ignore[arg-type]
        elif kind is MessageEnd:
            if self.decompressor is not None:
                await self._finish()
                if self.failed:
                    return
        elif kind is StreamEnd:
            self.decompressor = None
        await self.output(event)

    def _start(self, event: MessageStart) -> MessageStart:
        head = event.head
        self.decompressor = None
        if not isinstance(head, (RequestHead, ResponseHead)):
            return event
        value = head.headers.get("content-encoding")
        if value is None:
            return event
        coding = value.strip().lower()
        if coding == "x-gzip":
            coding = "gzip"
        if coding not in _WBITS:
            return event  # identity, several codings, br...: left alone
        headers = head.headers.copy()
        headers.remove("content-encoding")
        headers.remove("content-length")
        self.coding = coding
        self.decompressor = zlib.decompressobj(_WBITS[coding])
        self.size = 0
        self.first = True
        is_request = isinstance(head, RequestHead)
        self.too_large_status = 413 if is_request else 502
        self.bad_data_status = 400 if is_request else 502
        return MessageStart(head.replace(headers=headers))

    async def _feed(self, data: bytes) -> None:
        while data:
            d = self.decompressor
            budget = self.max_size - self.size + 1
            try:
                out = d.decompress(data, budget)
            except zlib.error as exc:
                if self.first and self.coding == "deflate":
                    # Some servers send raw deflate, without the zlib wrapper.
                    self.decompressor = zlib.decompressobj(-15)
                    self.first = False
                    continue
                await self._fail(f"bad {self.coding} data: {exc}", self.bad_data_status)
                return
            self.first = False
            if not await self._emit(out):
                return
            if d.eof:
                rest = d.unused_data
                if rest and self.coding == "gzip":  # another gzip member follows
                    self.decompressor = zlib.decompressobj(_WBITS["gzip"])
                    data = rest
                    continue
                return  # bytes after the end of the stream are ignored
            data = d.unconsumed_tail

    async def _emit(self, out: bytes) -> bool:
        """Output decompressed bytes; False (and the stream failed) past max_size."""
        self.size += len(out)
        if self.size > self.max_size:
            await self._fail(f"decompressed body over {self.max_size} bytes", self.too_large_status)
            return False
        if out:
            await self.output(Data(out))
        return True

    async def _finish(self) -> None:
        d = self.decompressor
        if self.first:  # no byte at all: an empty body (a HEAD or 304 response)
            self.decompressor = None
            return
        try:
            rest = d.flush(self.max_size - self.size + 1)
        except zlib.error as exc:
            await self._fail(f"bad {self.coding} data: {exc}", self.bad_data_status)
            return
        if not await self._emit(rest):
            return
        self.decompressor = None
        if not d.eof:
            await self._fail(f"truncated {self.coding} body", self.bad_data_status)

    async def _fail(self, message: str, status: int) -> None:
        self.failed = True
        self.decompressor = None
        await self.output(StreamEnd(ProtocolError(f"decompress_http: {message}", status)))


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [CompressHttp, DecompressHttp]
