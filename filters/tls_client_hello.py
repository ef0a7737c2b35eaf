"""``handle_tls_client_hello(fn)``: read SNI and ALPN without terminating TLS.

For TLS passthrough: the proxy routes a TLS connection by the server name the
client asks for, and the TLS session runs end to end between the client and the
chosen server (the proxy holds no certificate and sees no plaintext).

``handle_tls_client_hello(fn)`` parses the ``ClientHello`` at the start of the
stream (:mod:`protocols.tls`) and calls ``fn(ctx, hello)`` (plain or ``async
def``) with a :class:`~protocols.tls.ClientHello`: ``hello.server_name`` (SNI,
lower-cased, ``None`` if the client sent none), ``hello.alpn_protocols`` (the
ALPN names offered), ``hello.supported_versions``... The bytes pass on
unchanged, but only once the callback has returned: the ``Data`` events that
carried the ClientHello (it may be split across reads and across TLS records)
are held until it is complete and then passed on as one ``Data``, so the filters
after it -- ``connect`` choosing its target -- see what the callback set.
Everything after passes straight through.

Not a ClientHello (plain HTTP, a malformed or oversized hello, a stream that
ends before the hello is complete): the callback is **not** called, the held
bytes and everything after pass on unchanged, and one DEBUG line goes to the
``trioxy.tls`` logger. Like every ``handle_*`` filter this one never changes or
ends the stream by itself; the filters after it decide -- a ``connect`` target
function reading ``ctx.tls_sni`` fails that stream (one warning) when no name
was set, or can fall back with ``ctx.get("tls_sni", DEFAULT)``. An exception in
the callback propagates like other ``handle_*`` callbacks' (the runtime ends
that stream with one log line).

Example (runnable): the name is known before the first byte passes on, even
with the ClientHello split across two reads::

    import trio
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout
    from protocols.tls import build_client_hello

    seen = []
    proxy = Proxy()
    (proxy.pipeline("sni-router")
        .handle_tls_client_hello(lambda ctx, hello: ctx.set(tls_sni=hello.server_name))
        .handle_data(lambda ctx, data: seen.append(ctx.tls_sni)))

    hello = build_client_hello(server_name="b.example", alpn=["h2"])
    events = [Data(hello[:20]), Data(hello[20:]), Data(b"more"), StreamEnd()]
    out = trio.run(run_layout, proxy.layout("sni-router"), events)
    assert join_data(out) == hello + b"more"
    assert seen == ["b.example", "b.example"]

In a proxy, each name goes to its own backend, still encrypted::

    routes = {"a.example": "10.0.0.1:443", "b.example": "10.0.0.2:443"}
    (proxy.listen(443)
        .handle_tls_client_hello(lambda ctx, hello: ctx.set(tls_sni=hello.server_name))
        .connect(lambda ctx: routes[ctx.tls_sni]))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.events import Data, Event
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.tls import MAX_HELLO_SIZE, ClientHelloParser, ProtocolError

from ._callback import as_async

__all__ = ["HandleTlsClientHello"]

log = logging.getLogger("trioxy.tls")


class HandleTlsClientHello(Filter):
    """``handle_tls_client_hello(fn, max_size=65536)``: ``fn(ctx, hello)`` once the
    stream's ClientHello is in; the bytes pass on unchanged. ``max_size`` bounds
    the ClientHello (bytes); a bigger one is treated as malformed."""

    name = "handle_tls_client_hello"

    def __init__(self, fn: Callable[..., Any], max_size: int = MAX_HELLO_SIZE) -> None:
        if not callable(fn):
            raise TypeError(f"expected a function fn(ctx, hello), got {fn!r}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 64:
            raise ValueError(f"max_size must be an int of at least 64 bytes, got {max_size!r}")
        self.fn = as_async(fn)
        self.max_size = max_size
        self._parser: ClientHelloParser | None = None
        self._held: list[bytes] = []
        self._done = False  # the hello was handled (or given up on): pass through

    async def on_event(self, event: Event) -> None:
        if self._done:
            await self.output(event)
            return
        if type(event) is not Data:
            # The stream ended (or a message event came) before a whole hello.
            await self._give_up("the stream ended before a complete ClientHello")
            await self.output(event)
            return
        data = event.data
        self._held.append(data)
        parser = self._parser
        if parser is None:
            parser = self._parser = ClientHelloParser(self.max_size)
        try:
            hello = parser.feed(data)
        except ProtocolError as exc:
            await self._give_up(str(exc))
            return
        if hello is None:
            return  # wait for the rest of it
        self._done = True
        self._parser = None
        await self.fn(self.pipeline.context, hello)
        await self._pass_held()

    async def _give_up(self, reason: str) -> None:
        self._done = True
        self._parser = None
        log.debug(
            "handle_tls_client_hello: no ClientHello from %s (%s); passing the stream through",
            self.pipeline.context.remote,
            reason,
        )
        await self._pass_held()

    async def _pass_held(self) -> None:
        held, self._held = self._held, []
        if held:
            await self.output(Data(held[0] if len(held) == 1 else b"".join(held)))


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [HandleTlsClientHello]
