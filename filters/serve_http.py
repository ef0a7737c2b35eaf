"""``serve_http``: answer HTTP requests with a Python function.

``serve_http(handler, max_body=1 MiB)`` goes in the per-request sub-pipeline of
``demux_http``::

    def hello(ctx, request):
        return f"Hello, {request.query_params.get('name', 'world')}\\n"

    proxy.listen(8000).demux_http().to(lambda p: p.serve_http(hello))

For each request message it collects the head and the whole body into a
:class:`Request`, calls ``handler(ctx, request)`` (a plain function or ``async
def``), and outputs the response message: ``MessageStart(ResponseHead)``, one
``Data`` with the body (none when it is empty), ``MessageEnd()``.

What a handler may return, and what goes out:

===============================  ===================================================
returned                         response
===============================  ===================================================
:class:`Response`                as given (``Response(404, "no such user")``)
``str``                          200, ``text/plain; charset=utf-8``, UTF-8 body
``bytes``                        200, ``application/octet-stream``
``dict`` or ``list``             200, ``application/json``, the value as JSON
``(status, body)``               ``body`` converted as above, with ``status``
===============================  ===================================================

Anything else (``None`` included: a forgotten ``return``) is a handler bug and is
answered like an exception. ``Content-Length`` is always set from the body (and
not sent for 1xx/204/304, which have no body); a ``Transfer-Encoding`` a handler
set is dropped. For a ``HEAD`` request the handler runs as for ``GET`` and the
response keeps its ``Content-Length`` but carries no body.

Errors: a handler that raises is answered ``500 Internal Server Error`` with a
short text body, and one line is logged on the ``trioxy.http`` logger (the
traceback at DEBUG level); the next request is served as usual. A body over
``max_body`` bytes is answered ``413`` as soon as it is known (from
``Content-Length``, or when the bytes pass the bound), with ``Connection:
close``, and the rest of that request is dropped; the handler is not called. A
message that is not an HTTP request (``serve_http`` placed without
``demux_http`` before it) ends the stream with ``StreamEnd(PipelineError)``.

The request being answered is recorded in the context as ``ctx.http_request``
(:func:`filters.headers.request_of`), so that response-side filters placed after
``serve_http`` -- ``compress_http``, ``request_id`` -- can see it.

Example (runnable)::

    import trio
    from filters.serve_http import Response
    from pipeline import Data, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import run_layout
    from protocols.http import Headers, RequestHead

    async def users(ctx, request):
        if request.method == "POST":
            return 201, {"created": request.json()["name"]}
        return Response(404, "no such user\\n")

    proxy = Proxy()
    proxy.pipeline("per-request").serve_http(users)

    post = RequestHead("POST", "/users", Headers([("Content-Type", "application/json")]))
    events = [MessageStart(post), Data(b'{"name": "ada"}'), MessageEnd(), StreamEnd()]
    out = trio.run(run_layout, proxy.layout("per-request"), events)
    head, body = out[0].head, out[1].data
    assert (head.status, body) == (201, b'{"created":"ada"}')
    assert head.headers["Content-Type"] == "application/json"
    assert head.headers["Content-Length"] == str(len(body))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import Headers, RequestHead, ResponseHead
from protocols.http.writer import REASONS

from ._callback import as_async
from .headers import remember_request

__all__ = ["Handler", "Request", "Response", "ServeHttp", "to_response"]

log = logging.getLogger("trioxy.http")

HeadersLike: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


class Request:
    """A whole HTTP request, as a handler receives it.

    ``head`` (the :class:`~protocols.http.RequestHead`) and ``body`` (``bytes``),
    with shortcuts: ``method``, ``target``, ``path``, ``query`` (the raw query
    string), ``headers``, ``query_params`` (a dict, the first value of each name,
    decoded), ``text`` (the body decoded with the ``charset`` of its
    ``Content-Type``, UTF-8 by default) and ``json()``.
    """

    __slots__ = ("_query_params", "body", "head")

    def __init__(self, head: RequestHead, body: bytes = b"") -> None:
        self.head = head
        self.body = body
        self._query_params: dict[str, str] | None = None

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def target(self) -> str:
        return self.head.target

    @property
    def path(self) -> str:
        return self.head.path

    @property
    def query(self) -> str:
        return self.head.query

    @property
    def headers(self) -> Headers:
        return self.head.headers

    @property
    def query_params(self) -> dict[str, str]:
        params = self._query_params
        if params is None:
            params = {}
            for name, value in parse_qsl(self.head.query, keep_blank_values=True):
                params.setdefault(name, value)
            self._query_params = params
        return params

    @property
    def text(self) -> str:
        charset = "utf-8"
        content_type = self.head.headers.get("content-type") or ""
        for part in content_type.split(";")[1:]:
            key, _, value = part.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} body={len(self.body)}B>"


class Response:
    """What a handler returns: ``Response(status=200, body=b"", headers=None,
    content_type=None)``.

    ``body`` is ``bytes`` or ``str`` (encoded as UTF-8). ``content_type`` defaults
    to ``text/plain; charset=utf-8`` for a ``str`` body and
    ``application/octet-stream`` for a non-empty ``bytes`` body, unless
    ``headers`` has a ``Content-Type``. :meth:`json` makes a JSON response.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes | str = b"",
        headers: HeadersLike | None = None,
        content_type: str | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 999:
            raise ValueError(f"status must be an int from 100 to 999, got {status!r}")
        if isinstance(body, str):
            encoded = body.encode()
            default_type: str | None = "text/plain; charset=utf-8"
        elif isinstance(body, (bytes, bytearray, memoryview)):
            encoded = bytes(body)
            default_type = "application/octet-stream" if encoded else None
        else:
            raise TypeError(f"a response body is bytes or str, got {type(body).__name__}")
        if encoded and (status < 200 or status in (204, 304)):
            raise ValueError(f"a {status} response has no body")
        fields = headers.copy() if isinstance(headers, Headers) else Headers(headers)
        if content_type is not None:
            fields.set("Content-Type", content_type)
        elif default_type is not None and (not len(fields) or "content-type" not in fields):
            fields.add("Content-Type", default_type)
        self.status = status
        self.body = encoded
        self.headers = fields

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: HeadersLike | None = None) -> Response:
        """A response whose body is ``value`` as compact JSON."""
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, body, headers, "application/json")

    def head(self) -> ResponseHead:
        """The response head, with ``Content-Length`` set from the body (a 304 keeps
        the one the handler gave: it describes the representation not sent)."""
        # One pass over the fields (made per request): Transfer-Encoding goes;
        # Content-Length goes (no body), stays (304) or is set from the body, at
        # the place of the first one, as Headers.set would.
        status = self.status
        keep_length = status == 304
        length = None if keep_length or status < 200 or status == 204 else str(len(self.body))
        fields: list[tuple[str, str]] = []
        placed = False
        for name, value in self.headers.items():
            n = len(name)
            if n == 17 and name.lower() == "transfer-encoding":
                continue
            if n == 14 and not keep_length and name.lower() == "content-length":
                if length is not None and not placed:
                    fields.append((name, length))
                    placed = True
                continue
            fields.append((name, value))
        if length is not None and not placed:
            fields.append(("Content-Length", length))
        return ResponseHead(status, REASONS.get(status, ""), Headers.from_list(fields))

    def __repr__(self) -> str:
        return f"<Response {self.status} body={len(self.body)}B>"


ResponseLike: TypeAlias = Response | str | bytes | dict[str, Any] | list[Any] | tuple[int, Any]
Handler: TypeAlias = Callable[[Context, Request], ResponseLike | Awaitable[ResponseLike]]


def to_response(result: Any) -> Response:
    """A handler's return value as a :class:`Response` (see the module docs);
    ``TypeError`` for anything else."""
    if isinstance(result, Response):
        return result
    status = 200
    if isinstance(result, tuple):
        if len(result) != 2 or isinstance(result[0], bool) or not isinstance(result[0], int):
            raise TypeError(f"a handler returned {result!r}; a tuple is (status, body)")
        status, result = result
    if isinstance(result, (str, bytes)):
        return Response(status, result)
    if isinstance(result, (dict, list)):
        return Response.json(result, status)
    raise TypeError(
        f"a handler returned {type(result).__name__}; return a Response, str, bytes, "
        "dict, list or (status, body)"
    )


_MESSAGE_END = MessageEnd()  # frozen: one instance serves every response


def _error_response(status: int, close: bool = False) -> Response:
    headers = [("Connection", "close")] if close else None
    return Response(status, f"{REASONS.get(status, 'Error')}\n", headers)


class ServeHttp(Filter):
    """``serve_http(handler, max_body=1048576)``: answer each request message with
    ``handler(ctx, request)``'s response (see the module docs)."""

    name = "serve_http"

    def __init__(self, handler: Handler, max_body: int = 1 << 20) -> None:
        if not callable(handler):
            raise TypeError(f"serve_http() takes a function (ctx, request), got {handler!r}")
        if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 0:
            raise ValueError(f"max_body must be a whole number of bytes >= 0, got {max_body!r}")
        self.handler = as_async(handler)
        self.handler_name = getattr(handler, "__qualname__", repr(handler))
        self.max_body = max_body
        self.head: RequestHead | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.failed = False  # fed something that is not HTTP: the stream has ended

    async def on_event(self, event: Event) -> None:
        if self.failed:
            return
        kind = type(event)
        if kind is Data:
            if self.head is not None:
                data = event.data  # type: ignore[union-attr]
                self.size += len(data)
                if self.size > self.max_body:
                    await self._too_large()
                else:
                    self.chunks.append(data)
        elif kind is MessageStart:
            await self._start(event.head)  # type: ignore[union-attr]
        elif kind is MessageEnd:
            head = self.head
            if head is not None:
                body = b"".join(self.chunks)
                self.head, self.chunks = None, []
                await self._answer(head, body)
        elif kind is StreamEnd:
            if self.head is not None:  # the request did not end: nothing to answer
                self.head, self.chunks = None, []
                error = event.error or PipelineError(  # type: ignore[union-attr]
                    "serve_http: the stream ended inside a request"
                )
                event = StreamEnd(error)
            await self.output(event)

    async def _start(self, head: Any) -> None:
        if not isinstance(head, RequestHead):
            self.failed = True
            error = PipelineError(
                f"serve_http expects HTTP requests (put it after demux_http), got {head!r}"
            )
            await self.output(StreamEnd(error))
            return
        remember_request(self.context, head)
        self.head, self.chunks, self.size = head, [], 0
        length = head.headers.get("content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            await self._too_large()

    async def _too_large(self) -> None:
        head = self.head
        assert head is not None
        # Data still arriving for this request is dropped: self.head is None.
        self.head, self.chunks = None, []
        await self._send(head, _error_response(413, close=True))

    async def _answer(self, head: RequestHead, body: bytes) -> None:
        request = Request(head, body)
        try:
            response = to_response(await self.handler(self.context, request))
        except Exception as exc:
            log.error(
                "serve_http: %s %s: handler %s failed: %s: %s",
                head.method,
                head.target,
                self.handler_name,
                type(exc).__name__,
                exc,
            )
            log.debug("handler traceback", exc_info=exc)
            response = _error_response(500)
        await self._send(head, response)

    async def _send(self, request: RequestHead, response: Response) -> None:
        await self.output(MessageStart(response.head()))
        if response.body and request.method != "HEAD":
            await self.output(Data(response.body))
        await self.output(_MESSAGE_END)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [ServeHttp]
