"""``accept_proxy_protocol`` and ``connect_proxy_protocol``: the client's address across a proxy.

A load balancer that relays TCP (HAProxy, a cloud load balancer, another trioxy)
can open each connection with a PROXY protocol header (v1 text or v2 binary,
:mod:`protocols.proxy_protocol`) naming the client it relays. These two filters
are the two ends.

``accept_proxy_protocol(timeout=5.0).to(layout)`` reads the header at the start
of the stream, then runs ``layout`` on the rest of the bytes, unchanged, in a
child context that knows the original addresses:

=========================  ======================================================
in the sub-pipeline        value
=========================  ======================================================
``ctx.remote``             the original client ``(ip, port)`` (the header's source)
``ctx.local``              the address the client connected to (its destination)
``ctx.client_address``     the same as ``ctx.remote``, by name
``ctx.proxy_address``      the load balancer: the connection's real peer
``ctx.proxy_protocol``     the whole :class:`~protocols.proxy_protocol.ProxyHeader`
                           (version, command, family, TLVs: ``.tlv(type)``,
                           ``.authority``)
=========================  ======================================================

Since ``ctx.remote`` is the original client, everything downstream that reports
the client (``forwarded_headers``' ``X-Forwarded-For``, logs) reports the right
one. A header without addresses -- v2 ``LOCAL`` (the balancer's own health
check), v2 family ``UNSPEC``, v1 ``PROXY UNKNOWN``, or a ``UNIX`` family -- is
accepted and leaves ``ctx.remote``/``ctx.local`` as the real connection's.

A stream that does not start with a valid header gets one warning line on the
``trioxy.proxy_protocol`` logger and is closed (``StreamEnd(ProtocolError)``)
without opening the sub-pipeline; so is one whose header is not complete
``timeout`` seconds after its first byte (``StreamEnd(ReadTimeout)``). (Before
the first byte nothing runs: a client that connects and sends nothing is the
listener's ``idle_timeout``'s business.) A stream that ends before sending a
byte ends quietly. After the header, events pass both ways unchanged, half-close
(``StreamEnd()``) included.

``connect_proxy_protocol(version=1, tlvs=None)`` goes just before ``connect``:
it outputs a header for the stream when the stream's pipeline starts, before any
event (so a server that speaks first, and waits for the header to do so, is
heard), or, with a ``tlvs`` function, before the stream's first ``Data`` (or its
``StreamEnd``, for a stream with no data); then it passes every event on. The
header names ``ctx.remote`` as the source and ``ctx.local`` as the destination
-- after ``accept_proxy_protocol``, the original client and destination, so
chaining the two passes the client along. IPv4-mapped IPv6 addresses count as
IPv4; addresses that are not IPs, or of two families, give ``PROXY UNKNOWN``
(v2: family ``UNSPEC``). ``tlvs`` (v2 only) adds TLVs: a list of
``(type, bytes)`` pairs or :class:`~protocols.proxy_protocol.TLV`, or a function
``fn(ctx)`` (plain or ``async def``) returning one.

Example (runnable): the receiving end, in memory; the sub-pipeline answers with
the client address it learned::

    import trio
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout

    proxy = Proxy()
    (proxy.pipeline("backend")
        .accept_proxy_protocol()
        .to(lambda p: p.replace_data(lambda ctx, d: f"{ctx.remote[0]} says {d.decode()}".encode())))

    header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\\r\\n"
    out = trio.run(run_layout, proxy.layout("backend"), [Data(header + b"hi"), StreamEnd()])
    assert join_data(out) == b"192.0.2.7 says hi" and out[-1] == StreamEnd()

In a proxy: ``listen(8443).accept_proxy_protocol().to(lambda p:
p.connect_proxy_protocol(version=2).connect(BACKEND))`` relays the balancer's
client to a backend that speaks the PROXY protocol too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import trio

from pipeline.context import Context
from pipeline.errors import ReadTimeout
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.live import Pipeline
from protocols.proxy_protocol import TLV, Family, ProtocolError, ProxyHeader, encode, parse

from ._callback import as_async

__all__ = ["AcceptProxyProtocol", "ConnectProxyProtocol"]

log = logging.getLogger("trioxy.proxy_protocol")


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _peer(ctx: Context) -> str:
    if ctx.remote is None:
        return "?"
    host, port = ctx.remote
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AcceptProxyProtocol(Filter):
    """Read a PROXY protocol header, then run the sub-pipeline; see the module docs."""

    name = "accept_proxy_protocol"
    joint = True

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = _positive_seconds("timeout", timeout)
        #: The header, once read.
        self.header: ProxyHeader | None = None
        self._sub: Pipeline | None = None
        self._buffer = b""
        self._ended = False
        self._timer: trio.CancelScope | None = None

    async def on_event(self, event: Event) -> None:
        sub = self._sub
        if sub is not None:
            await sub.input(event)
            return
        if self._ended:
            return
        kind = type(event)
        if kind is Data:
            if self._timer is None:
                self._start_timer()
            buffer = self._buffer = self._buffer + event.data  # type: ignore[union-attr]
            try:
                parsed = parse(buffer)
            except ProtocolError as exc:
                await self._reject(exc)
                return
            if parsed is None:
                return
            header, size = parsed
            self._buffer = b""
            assert self._timer is not None
            self._timer.cancel()
            sub = self._open(header)
            if size < len(buffer):
                await sub.input(Data(buffer[size:]))
        elif kind is StreamEnd:
            if self._buffer:
                await self._reject(ProtocolError("the stream ended inside the header"))
            else:
                self._ended = True  # connected and left: nothing to say
                await self.output(StreamEnd(event.error))  # type: ignore[union-attr]
        # Message events before the header carry no bytes: nothing to do with them.

    def _open(self, header: ProxyHeader) -> Pipeline:
        self.header = header
        ctx = self.pipeline.context
        if header.proxied and header.family in (Family.INET, Family.INET6):
            source, destination = header.source, header.destination
            assert isinstance(source, tuple) and isinstance(destination, tuple)
            child = Context(remote=source, local=destination, parent=ctx)
        else:
            child = ctx.child()
        child.set(proxy_protocol=header, client_address=child.remote, proxy_address=ctx.remote)
        sub = self._sub = self.pipeline.sub(self.sub_layout, self.output, context=child)
        return sub

    def _start_timer(self) -> None:
        scope = self._timer = trio.CancelScope()

        async def expire() -> None:
            with scope:
                await trio.sleep(self.timeout)
                await self._reject(
                    ReadTimeout(f"no complete PROXY protocol header after {self.timeout:g}s")
                )

        self.pipeline.start_task(expire, name="PROXY protocol header timeout")

    async def _reject(self, error: Exception) -> None:
        if self._ended or self._sub is not None:
            return
        self._ended = True
        self._buffer = b""
        log.warning("%s: bad PROXY protocol header: %s", _peer(self.pipeline.context), error)
        await self.output(StreamEnd(error))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _tlvs(items: Iterable[Any]) -> tuple[TLV, ...]:
    found: list[TLV] = []
    for item in items:
        if isinstance(item, TLV):
            tlv = item
        else:
            kind, value = item
            tlv = TLV(kind, bytes(value))
        if isinstance(tlv.type, bool) or not isinstance(tlv.type, int) or not 0 <= tlv.type <= 255:
            raise ValueError(f"a TLV type is 0-255, got {tlv.type!r}")
        if len(tlv.value) > 0xFFFF:
            raise ValueError(f"TLV 0x{tlv.type:02x} is longer than 65535 bytes")
        found.append(tlv)
    return tuple(found)


class ConnectProxyProtocol(Filter):
    """Send a PROXY protocol header before the stream; see the module docs."""

    name = "connect_proxy_protocol"

    def __init__(
        self,
        version: int = 1,
        tlvs: Iterable[TLV | tuple[int, bytes]] | Callable[..., Any] | None = None,
    ) -> None:
        if version not in (1, 2) or isinstance(version, bool):
            raise ValueError(f"version must be 1 or 2, got {version!r}")
        self.version = version
        self._tlvs: tuple[TLV, ...] = ()
        self._tlv_fn: Callable[..., Any] | None = None
        if tlvs is not None:
            if version == 1:
                raise ValueError("TLVs need version=2 (v1 headers have none)")
            if callable(tlvs):
                self._tlv_fn = as_async(tlvs)
            else:
                try:
                    self._tlvs = _tlvs(tlvs)
                except TypeError:
                    raise ValueError(
                        f"tlvs must be a list of (type, bytes) or a function, got {tlvs!r}"
                    ) from None
        self._sent = False
        self._sending: trio.Event | None = None  # set once the header sent at start is out

    def on_start(self) -> None:
        """Without a TLV function the header is known at once: it goes out now,
        before any event, so that a server that speaks first (and, like Postfix,
        waits for the header before its greeting) is heard. A function may read
        what the first events put in the context: it waits for them."""
        if self._tlv_fn is None and not self._sent:
            self._sent = True
            self._sending = trio.Event()
            self.pipeline.start_task(self._send_header, name="connect_proxy_protocol header")

    async def _send_header(self) -> None:
        assert self._sending is not None
        try:
            await self.output(Data(await self.header()))
        finally:
            self._sending.set()

    async def on_event(self, event: Event) -> None:
        if not self._sent:
            if type(event) is Data or type(event) is StreamEnd:
                self._sent = True
                await self.output(Data(await self.header()))
        elif self._sending is not None:
            await self._sending.wait()  # the header goes first
            self._sending = None
        await self.output(event)

    async def header(self) -> bytes:
        """The header for this stream, from its context."""
        ctx = self.pipeline.context
        tlvs = self._tlvs
        if self._tlv_fn is not None:
            tlvs = _tlvs(await self._tlv_fn(ctx) or ())
        header = ProxyHeader.from_addresses(ctx.remote, ctx.local, version=self.version, tlvs=tlvs)
        return encode(header)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [AcceptProxyProtocol, ConnectProxyProtocol]
