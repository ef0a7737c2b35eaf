"""``connect_udp(target)``: send each ``Data`` as a datagram to a server, output its replies.

``connect_udp`` is ``connect`` for UDP: the stream gets its own connected UDP
socket (so the server sees one source port per stream, and the kernel filters out
datagrams from anyone else). Every ``Data`` event is sent as **one datagram**, and
every datagram the server sends back comes out as **one** ``Data`` event: datagram
boundaries are kept both ways (see :mod:`pipeline.udp`). ``MessageStart`` and
``MessageEnd`` carry nothing and are ignored (put an encoder such as ``encode_dns``
before it).

Example (runnable): a UDP echo server, and a pipeline that sends it two datagrams::

    import socket
    import trio
    from pipeline import Data, Proxy
    from pipeline.testing import open_pipeline

    async def main():
        server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]

        async def echo():
            for _ in range(2):
                data, peer = await server.recvfrom(2048)
                await server.sendto(data.upper(), peer)

        proxy = Proxy()
        proxy.pipeline("udp").connect_udp(f"127.0.0.1:{port}", idle_timeout=5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            async with open_pipeline(proxy.layout("udp")) as h:
                await h.send(b"one", b"two")
                while len(h.output) < 2:
                    await trio.sleep(0.01)
                assert h.output == [Data(b"ONE"), Data(b"TWO")]
        server.close()

    trio.run(main)

In a script, a UDP NAT is a UDP listener and ``connect_udp``::

    proxy.listen_udp("0.0.0.0:5300").connect_udp(RoundRobin(["10.0.0.1:53", "10.0.0.2:53"]))

Arguments:

``target``
    ``"host:port"`` (``"[::1]:53"`` for IPv6; a host name is resolved when the stream
    starts), a list of them (the starting point rotates with each stream), a
    function ``fn(ctx) -> "host:port"`` (plain or ``async def``), or a balancer from
    :mod:`filters.balance` (asked ``select(ctx)``; its other targets are the
    failover order) -- the same forms as ``connect``.
``idle_timeout=60.0``
    no datagram either way for this long ends the stream with
    ``StreamEnd(IdleTimeout)`` (``None``: no limit).
``resend=16``
    how many of the datagrams sent to a target that has not answered yet are kept,
    to be sent again to the next target on failover.

Failover. UDP has no handshake, so a dead server shows only as an ICMP "port
unreachable", which the kernel reports on the connected socket as
``ECONNREFUSED``. When that happens before the target has answered anything, the
stream moves to the next target and sends it again the datagrams the dead one
never answered (up to ``resend``). When every target refused, or the target
refuses after it had answered, the stream ends with
``StreamEnd(ConnectRefused)``, logged once on the ``trioxy.connect_udp`` logger. A
server that just stays silent is not detected here (UDP cannot tell silence from a
slow answer): the idle timeout ends the stream. The target used is kept in
``ctx.upstream``.

An input ``StreamEnd`` closes the socket and outputs ``StreamEnd()``: UDP has no
half-close, so answers still on their way are not waited for.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pipeline.address import Rotation, format_address, starting_at
from pipeline.errors import ConnectRefused, IdleTimeout, PipelineError
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.sockio import YIELD_EVERY, fileno, wait_readable
from pipeline.udp import MAX_DATAGRAM

from ._callback import as_async
from .balance import Balancer, parse_target

__all__ = ["ConnectUdp"]

log = logging.getLogger("trioxy.connect_udp")


def _normal(value: object) -> str:
    return format_address(*parse_target(value))


class ConnectUdp(Filter):
    """Relay datagrams to a UDP server; see the module docs."""

    name = "connect_udp"

    def __init__(
        self,
        target: str | list[str] | tuple[str, ...] | Callable[..., Any] | Balancer,
        *,
        idle_timeout: float | None = 60.0,
        resend: int = 16,
    ) -> None:
        self._targets: tuple[str, ...] = ()
        self._balancer: Balancer | None = None
        self._fn: Callable[..., Awaitable[Any]] | None = None
        if isinstance(target, Balancer):
            self._balancer = target
        elif isinstance(target, str):
            self._targets = (_normal(target),)
        elif isinstance(target, (list, tuple)):
            if not target:
                raise ValueError("the target list is empty")
            self._targets = tuple(_normal(t) for t in target)
        elif callable(target):
            self._fn = as_async(target)
        else:
            raise ValueError(
                f"bad target {target!r}: expected 'host:port', a list of them, a function "
                "or a balancer"
            )
        if idle_timeout is not None and (
            isinstance(idle_timeout, bool)
            or not isinstance(idle_timeout, (int, float))
            or idle_timeout <= 0
        ):
            raise ValueError(
                f"idle_timeout must be a positive number or None, got {idle_timeout!r}"
            )
        if isinstance(resend, bool) or not isinstance(resend, int) or resend < 0:
            raise ValueError(f"resend must be an integer >= 0, got {resend!r}")
        self.idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self.resend = resend
        #: The ``"host:port"`` datagrams go to, once the stream started.
        self.upstream: str | None = None
        self.sock: trio.socket.SocketType | None = None
        self._plain: dict[trio.socket.SocketType, socket.socket] = {}
        self._candidates: list[str] = []
        self._unanswered: deque[bytes] = deque(maxlen=resend or 1)
        self._answered = False
        self._switching = False
        self._failures: list[str] = []
        self._ready: trio.Event | None = None
        self._ended = False
        self._moved = 0

    @classmethod
    def shared(cls, *args: Any, **kwargs: Any) -> Any:
        target = args[0] if args else kwargs.get("target")
        if isinstance(target, (list, tuple)) and len(target) > 1:
            return Rotation()
        return None

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        kind = type(event)
        if kind is Data:
            sock = self.sock
            if sock is None:
                sock = await self._started()
                if sock is None:
                    return
            data = event.data  # type: ignore[union-attr]
            if not self._answered and self.resend:
                self._unanswered.append(data)
            try:
                try:
                    self._plain[sock].send(data)
                except BlockingIOError:  # the send buffer is full: wait for room
                    await trio.lowlevel.wait_writable(fileno(sock))
                    self._plain[sock].send(data)
            except (KeyError, trio.ClosedResourceError):
                pass  # closed or replaced while waiting: the datagram is lost (UDP)
            except OSError as exc:
                # The refusal of an earlier datagram surfaces on whichever call
                # comes next, and is consumed by it.
                if exc.errno == errno.ECONNREFUSED:
                    await self._failover(sock)
                else:
                    log.debug("send to %s failed: %s", self.upstream, exc)
            self._moved += 1
        elif kind is StreamEnd:
            await self._end(None)
        elif self._ready is None:
            self._start()

    def _start(self) -> None:
        self._ready = trio.Event()
        self.pipeline.start_task(self._run, name="connect_udp")

    async def _started(self) -> trio.socket.SocketType | None:
        if self._ready is None:
            self._start()
        assert self._ready is not None
        await self._ready.wait()
        return self.sock

    async def _order(self) -> list[str]:
        balancer = self._balancer
        if balancer is not None:
            first = _normal(balancer.select(self.pipeline.context))
            return starting_at(first, balancer.targets)
        if self._fn is not None:
            return [_normal(await self._fn(self.pipeline.context))]
        targets = self._targets
        rotation = getattr(getattr(self, "spec", None), "state", None)
        if isinstance(rotation, Rotation):
            return rotation.order(targets)
        return list(targets)

    async def _open_next(self) -> trio.socket.SocketType | None:
        """A socket connected to the next candidate that resolves, or ``None``."""
        while self._candidates:
            text = self._candidates.pop(0)
            host, port = parse_target(text)
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except socket.gaierror as exc:
                self._failures.append(f"{text}: cannot resolve ({exc.strerror})")
                continue
            family, kind, proto, _, addr = infos[0]
            # A plain socket wrapped by trio: the plain one gives the non-blocking
            # send/recv tried before waiting (as in pipeline.sockio); closing the
            # trio one closes both and wakes a task waiting on it.
            plain = socket.socket(family, kind, proto)
            sock = trio.socket.from_stdlib_socket(plain)
            try:
                await sock.connect(addr)
            except OSError as exc:
                sock.close()
                self._failures.append(f"{text}: {exc.strerror or exc}")
                continue
            self.upstream = text
            self.pipeline.context.set(upstream=text)
            self._plain[sock] = plain
            return sock
        return None

    async def _run(self) -> None:
        assert self._ready is not None
        try:
            try:
                self._candidates = await self._order()
            except Exception as exc:
                failure = PipelineError(f"connect_udp: choosing the target failed: {exc!r}")
                log.warning("%s", failure)
                await self._end(failure)
                return
            self.sock = await self._open_next()
        finally:
            self._ready.set()
        error: BaseException | None = None
        async with trio.open_nursery() as nursery:
            if self.idle_timeout is not None:
                nursery.start_soon(self._watch_idle, self.idle_timeout, nursery.cancel_scope)
            error = await self._read()
            nursery.cancel_scope.cancel()
        if error is None and self.idle_timeout is not None and not self._ended:
            error = IdleTimeout(f"no datagram for {self.idle_timeout:g}s", self.upstream)
        await self._end(error)

    async def _read(self) -> BaseException | None:
        output = self.output
        budget = YIELD_EVERY
        while True:
            sock = self.sock
            if sock is None:
                error = ConnectRefused(
                    "no upstream answered: " + "; ".join(self._failures), self.upstream
                )
                log.warning("connect_udp failed, %s", error)
                return error
            try:
                plain = self._plain.get(sock)
                if plain is None:
                    raise trio.ClosedResourceError
                data = plain.recv(MAX_DATAGRAM)
            except BlockingIOError:
                try:
                    await wait_readable(sock)
                except trio.ClosedResourceError:
                    if self.sock is not sock and not self._ended:
                        continue  # replaced by a failover
                    return None
                budget = YIELD_EVERY
                continue
            except OSError as exc:
                if self.sock is not sock:
                    continue  # closed under us by a failover
                if exc.errno != errno.ECONNREFUSED:
                    return ConnectRefused(f"{self.upstream}: {exc.strerror or exc}", self.upstream)
                await self._failover(sock)
                continue
            except trio.ClosedResourceError:
                if self.sock is not sock and not self._ended:
                    continue  # replaced by a failover
                return None
            if not self._answered:
                self._answered = True
                self._unanswered.clear()
                if self._balancer is not None and self.upstream is not None:
                    self._balancer.succeeded(self.upstream)
            self._moved += 1
            await output(Data(data))
            budget -= 1
            if not budget:  # a busy server must not starve the other streams
                budget = YIELD_EVERY
                await trio.lowlevel.checkpoint()

    async def _failover(self, sock: trio.socket.SocketType) -> None:
        """``sock``'s target refused: move to the next target (unless it had answered
        already) and send it the datagrams left unanswered."""
        if self.sock is not sock or self._switching:
            return  # done (or being done) by the other direction
        self._switching = True
        self._failures.append(f"{self.upstream}: refused")
        if self._balancer is not None and self.upstream is not None:
            self._balancer.failed(self.upstream)
        if self._answered:
            self._candidates.clear()  # it was alive: no silent switch mid-stream
        try:
            new = await self._open_next()
        finally:
            self._switching = False
        if self._ended:
            if new is not None:
                self._close(new)
            return
        # Swapped before the old socket closes: the reader, woken by the close,
        # finds the new one (or None: every target refused).
        self.sock = new
        self._close(sock)
        if new is not None:
            for datagram in list(self._unanswered):
                try:
                    await new.send(datagram)
                except OSError as exc:
                    if exc.errno == errno.ECONNREFUSED:  # this one is dead too
                        await self._failover(new)
                    break

    async def _watch_idle(self, timeout: float, scope: trio.CancelScope) -> None:
        seen = -1
        while True:
            await trio.sleep(timeout)
            if self._moved == seen:
                scope.cancel()
                return
            seen = self._moved

    async def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            self.close()
            await self.output(StreamEnd(error))

    def _close(self, sock: trio.socket.SocketType) -> None:
        self._plain.pop(sock, None)
        sock.close()

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self._close(sock)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [ConnectUdp]
