"""UDP listeners: one virtual stream, and one live pipeline, per peer address.

UDP has no connections, so a UDP listener makes them up: the first datagram from a
peer address (host and port) starts a stream for that peer, with a fresh
:class:`~pipeline.context.Context` (``remote`` is the peer, ``ctx.transport`` is
``"udp"``) and a live pipeline of the listener's layout. Then:

* **one datagram is one** ``Data`` **event**. Datagram boundaries are the message
  boundaries of UDP protocols (a DNS query is one datagram), so they are preserved
  both ways: each ``Data`` the pipeline outputs is sent to the peer as one datagram.
  Filters used on UDP must not merge or split ``Data`` events (a decoder such as
  ``decode_dns`` takes each one whole); an empty ``Data`` output is not sent.
* a peer silent for ``idle_timeout`` seconds (nothing received from it and nothing
  sent to it) ends its stream: the pipeline gets ``StreamEnd()`` and is closed.
  The stream ends between one and two periods of silence (a watchdog, so the hot
  path only bumps a counter). A pipeline that outputs ``StreamEnd`` ends the stream
  at once; the peer's next datagram starts a new one.
* at most ``max_peers`` streams run at once; a datagram from a new peer beyond that
  is dropped. Each peer has a queue of ``queue_size`` datagrams waiting for its
  pipeline; when the pipeline is slower than the peer and the queue is full, new
  datagrams are dropped (UDP may drop; senders retry). Drops are counted
  (:attr:`UdpEndpoint.dropped`) and logged on the first one and once per 1000.
* on shutdown a UDP listener stops at once: it has no connection to drain, so its
  streams are cancelled with it.

A script declares one with :meth:`pipeline.Proxy.listen_udp`::

    from pipeline import Proxy

    proxy = Proxy()
    proxy.listen_udp("127.0.0.1:5300", idle_timeout=30).connect_udp("127.0.0.1:53")

A TCP and a UDP listener may share a port (``dns_proxy.py`` does).
"""

from __future__ import annotations

import logging
import socket as stdsocket
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .address import host_port as _addr
from .context import Context
from .events import Data, Event, StreamEnd
from .live import Pipeline
from .sockio import YIELD_EVERY, fileno, wait_readable

if TYPE_CHECKING:
    from .proxy import ListenerSpec

__all__ = ["UdpEndpoint", "UdpOptions", "serve_udp"]

log = logging.getLogger("trioxy.udp")

#: The largest UDP payload (IPv4: 65535 - 8 - 20); a datagram is read whole.
MAX_DATAGRAM = 65535
#: A drop is logged on the first one and then once per this many.
LOG_DROPS_EVERY = 1000


@dataclass(frozen=True, slots=True)
class UdpOptions:
    """Limits of a UDP listener (see the module docs).

    * ``idle_timeout``: seconds a peer may stay silent before its stream ends
      (``None``: streams end only when their pipeline ends them).
    * ``max_peers``: streams (peer addresses) served at once.
    * ``queue_size``: datagrams a peer may have waiting for its pipeline.
    """

    idle_timeout: float | None = 60.0
    max_peers: int = 10000
    queue_size: int = 128

    def __post_init__(self) -> None:
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError("idle_timeout must be positive (or None for no limit)")
        for name in ("max_peers", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")


class _Peer:
    """One peer's virtual stream: its queue of datagrams and its task's state."""

    __slots__ = ("activity", "addr", "context", "ended", "queue", "scope", "wakeup")

    def __init__(self, addr: Any, context: Context) -> None:
        self.addr = addr
        self.context = context
        self.queue: deque[bytes] = deque()
        self.wakeup: trio.Event | None = None
        self.activity = 0
        self.ended = False
        self.scope = trio.CancelScope()

    def __repr__(self) -> str:
        host, port = self.context.remote or ("?", 0)
        return f"udp stream #{self.context.id} from {host}:{port}"


class UdpEndpoint:
    """A bound UDP listener serving its peers (made and run by :func:`serve_udp`)."""

    def __init__(self, spec: ListenerSpec, sock: trio.socket.SocketType) -> None:
        assert spec.udp is not None
        self.spec = spec
        self.options: UdpOptions = spec.udp
        self.sock = sock
        self.peers: dict[Any, _Peer] = {}
        #: Datagrams dropped (peer queue full, or too many peers).
        self.dropped = 0
        self._local = _addr(sock.getsockname())
        self._sendto: Any = None  # set by run()

    async def run(self) -> None:
        """Receive datagrams and dispatch them to their peers' streams, forever."""
        sock = self.sock
        # The system calls are tried before waiting, as in pipeline.sockio: a plain
        # socket object on the same descriptor (detached, never closed, here) gives
        # the non-blocking recvfrom/sendto that trio's socket does not expose.
        raw = stdsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
        self._sendto = raw.sendto
        try:
            await self._receive(raw)
        finally:
            raw.detach()

    async def _receive(self, raw: stdsocket.socket) -> None:
        sock = self.sock
        recvfrom = raw.recvfrom
        peers = self.peers
        max_peers = self.options.max_peers
        queue_size = self.options.queue_size
        budget = YIELD_EVERY
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    data, addr = recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    await wait_readable(sock)
                    budget = YIELD_EVERY
                    continue
                except OSError as exc:
                    # An unconnected socket may still report an ICMP error for a
                    # datagram it sent; it concerns one peer, not the listener.
                    log.debug("%s: receive error ignored: %s", self.spec.address, exc)
                    continue
                budget -= 1
                if not budget:  # a flood must not starve the peers' tasks
                    budget = YIELD_EVERY
                    await trio.lowlevel.checkpoint()
                peer = peers.get(addr)
                if peer is None:
                    if len(peers) >= max_peers:
                        self._drop("too many peers", addr)
                        continue
                    peer = _Peer(
                        addr,
                        Context(local=self._local, remote=_addr(addr), listener=self.address),
                    )
                    peer.context.vars["transport"] = "udp"
                    peers[addr] = peer
                    nursery.start_soon(self._serve_peer, peer)
                queue = peer.queue
                if len(queue) >= queue_size:
                    self._drop("peer queue full", addr)
                    continue
                queue.append(data)
                peer.activity += 1
                wakeup = peer.wakeup
                if wakeup is not None:
                    peer.wakeup = None
                    wakeup.set()

    @property
    def address(self) -> str:
        return self.spec.address

    def _drop(self, why: str, addr: Any) -> None:
        self.dropped += 1
        if self.dropped % LOG_DROPS_EVERY == 1:
            log.warning(
                "%s: datagram from %s dropped (%s); %d dropped so far",
                self.address,
                _addr(addr),
                why,
                self.dropped,
            )

    async def _serve_peer(self, peer: _Peer) -> None:
        sock = self.sock
        sendto = self._sendto
        addr = peer.addr

        async def output(event: Event) -> None:
            kind = type(event)
            if kind is Data:
                data = event.data  # type: ignore[union-attr]
                if data:
                    try:
                        sendto(data, addr)
                    except BlockingIOError:  # the send buffer is full: wait once
                        try:
                            await trio.lowlevel.wait_writable(fileno(sock))
                            sendto(data, addr)
                        except (OSError, trio.ClosedResourceError) as exc:
                            log.debug("%r: send failed: %s", peer, exc)
                    except OSError as exc:  # e.g. no route: the datagram is lost
                        log.debug("%r: send failed: %s", peer, exc)
                    peer.activity += 1
            elif kind is StreamEnd:
                error = event.error  # type: ignore[union-attr]
                if error is not None:
                    log.debug("%r: pipeline ended with %r", peer, error)
                self._forget(peer)
                peer.scope.cancel()

        try:
            with peer.scope:
                async with trio.open_nursery() as nursery:
                    pipeline = Pipeline(self.spec.layout, peer.context, nursery, output)
                    try:
                        pipeline.start()
                        await self._pump(peer, pipeline)
                    finally:
                        pipeline.close()
                        nursery.cancel_scope.cancel()
        except Exception as exc:
            cause = _single(exc)
            log.error("%r: closed after an error: %s: %s", peer, type(cause).__name__, cause)
        finally:
            self._forget(peer)

    async def _pump(self, peer: _Peer, pipeline: Pipeline) -> None:
        queue = peer.queue
        feed = pipeline.input
        idle = self.options.idle_timeout
        while True:
            while queue:
                await feed(Data(queue.popleft()))
            seen = peer.activity
            wakeup = peer.wakeup = trio.Event()
            if idle is None:
                await wakeup.wait()
                continue
            with trio.move_on_after(idle):
                await wakeup.wait()
            if not wakeup.is_set() and peer.activity == seen and not queue:
                log.debug("%r: idle for %gs, ended", peer, idle)
                self._forget(peer)  # a datagram from now on starts a new stream
                await feed(StreamEnd())
                return

    def _forget(self, peer: _Peer) -> None:
        if not peer.ended:
            peer.ended = True
            if self.peers.get(peer.addr) is peer:
                del self.peers[peer.addr]


async def serve_udp(spec: ListenerSpec, sock: trio.socket.SocketType) -> None:
    """Serve a bound UDP listener until cancelled (the runtime's entry point)."""
    await UdpEndpoint(spec, sock).run()


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
