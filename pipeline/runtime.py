"""The Trio runtime: listeners, connections, timeouts and graceful shutdown.

:func:`serve` binds every listener of a validated configuration, accepts
connections and runs one live pipeline per connection:

* bytes read from the client enter the pipeline as ``Data`` events, the client's
  end of stream as ``StreamEnd``; what the pipeline outputs is written back
  (``Data``) or ends the client's write side (``StreamEnd``). The connection is
  over when both directions have ended, when the pipeline ends with an error, or
  on a timeout.
* A listener whose layout is a single filter with a ``relay`` method (``connect``
  alone, as in an L4 proxy) skips the event path: the filter relays the two
  sockets itself, with the kernel's zero-copy ``splice`` where it can. Any other
  pipeline is started (:meth:`~pipeline.live.Pipeline.start`) as soon as the
  connection is accepted, before its first byte is read: a ``connect`` to a fixed
  target dials then, so a protocol whose server speaks first works.
* ``max_connections`` bounds the streams served at once: the accept loop waits for
  a free slot before accepting, so excess connections wait in the kernel's backlog
  instead of being refused.
* Startup: once the listeners are bound, the server's long-lived services are set
  up -- :data:`~pipeline.live.service_nursery` and
  :data:`~pipeline.live.shutdown_notice`, which every stream inherits -- and then
  the ``trioxy_startup`` hook runs, so a plugin may start server-long tasks there
  (:mod:`filters.health` starts its active health checks so).
* Shutdown (SIGINT/SIGTERM, or :meth:`Server.shutdown`) closes the listeners,
  starts the :class:`~pipeline.live.ShutdownNotice`, lets open streams finish
  within a grace period, then cancels them. A second signal stops at once. The
  notice is for protocols whose connections idle between exchanges: HTTP closes
  its idle keep-alive connections at once and ends the ones with a request in
  flight after that response (``Connection: close``), see
  :mod:`filters.http_demux`; a stream of any other kind (an L4 relay) gets the
  whole grace period.

Failures of one stream (a script callback raising, a filter's bug, a reset) end
that stream with one log line; they never stop the server.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket as stdsocket
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from .context import Context
from .errors import ConfigError, IdleTimeout, ReadTimeout, WriteTimeout
from .events import Data, Event, StreamEnd
from .live import Pipeline, ShutdownNotice, service_nursery, shutdown_notice
from .plugins import plugin_manager
from .proxy import ListenerSpec, ProxyConfig
from .sockio import READ_SIZE, SHORT_READ, YIELD_EVERY, send_all, wait_readable
from .udp import serve_udp

__all__ = ["ListenError", "Server", "serve", "service_nursery", "shutdown_notice"]

log = logging.getLogger("trioxy.runtime")


class ListenError(ConfigError):
    """A listener could not be opened (address in use, no such address...)."""


@dataclass
class Listener:
    """A bound listening socket and its limits."""

    spec: ListenerSpec
    sock: trio.socket.SocketType
    slots: trio.Semaphore | None
    active: int = 0

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Server:
    """A running server: its listeners, its open streams and the notice its streams
    get when it begins to shut down."""

    listeners: list[Listener]
    grace_period: float
    streams: set[Connection] = field(default_factory=set)
    notice: ShutdownNotice = field(default_factory=ShutdownNotice)
    _stop: trio.Event = field(default_factory=trio.Event)
    _now: trio.Event = field(default_factory=trio.Event)
    _drained: trio.Event = field(default_factory=trio.Event)  # set: stopping, no stream left

    def shutdown(self, immediate: bool = False) -> None:
        """Stop accepting; open streams get the grace period (none if ``immediate``)."""
        self._stop.set()
        if not self.streams:
            self._drained.set()
        if immediate:
            self._now.set()

    @property
    def ports(self) -> list[int]:
        return [listener.sock.getsockname()[1] for listener in self.listeners]


async def bind_listeners(
    specs: Iterable[ListenerSpec], *, reuse_port: bool = False
) -> list[Listener]:
    """Open every listener, or none: the first failure closes the others and raises
    :class:`ListenError` located at the script's ``listen(...)`` line."""
    bound: list[Listener] = []
    try:
        for spec in specs:
            bound.append(await _bind(spec, reuse_port))
    except BaseException:
        for listener in bound:
            listener.sock.close()
        raise
    return bound


async def _bind(spec: ListenerSpec, reuse_port: bool) -> Listener:
    kind = stdsocket.SOCK_STREAM if spec.udp is None else stdsocket.SOCK_DGRAM
    try:
        infos = await trio.socket.getaddrinfo(
            spec.host, spec.port, type=kind, flags=stdsocket.AI_PASSIVE
        )
    except stdsocket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {spec.address}: {exc.strerror}", *spec.location
        ) from None
    family, _, _, _, sockaddr = infos[0]
    sock = trio.socket.socket(family, kind)
    try:
        if spec.udp is None:  # (on UDP it would let two servers share a port)
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
        await sock.bind(sockaddr)
        if spec.udp is None:
            sock.listen(spec.options.backlog)
    except OSError as exc:
        sock.close()
        reason = (
            "address already in use"
            if exc.errno == errno.EADDRINUSE
            else (exc.strerror or str(exc)).lower()
        )
        raise ListenError(f"cannot listen on {spec.address}: {reason}", *spec.location) from None
    limit = spec.options.max_connections
    return Listener(spec, sock, trio.Semaphore(limit) if limit else None)


async def serve(
    specs: Iterable[ListenerSpec] | ProxyConfig,
    *,
    grace_period: float = 30.0,
    handle_signals: bool = True,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until shut down. ``task_status.started`` gets the :class:`Server`
    once every listener is bound (use ``await nursery.start(serve, ...)``)."""
    config = specs if isinstance(specs, ProxyConfig) else ProxyConfig(tuple(specs), {})
    listeners = await bind_listeners(config.listeners, reuse_port=reuse_port)
    server = Server(listeners, grace_period)
    hooks = plugin_manager().hook
    refused: Exception | None = None
    try:
        async with trio.open_nursery() as services:
            service_token = service_nursery.set(services)
            notice_token = shutdown_notice.set(server.notice)
            try:
                # The hook runs with the services in place, so that it may start
                # server-long tasks (filters.health starts its checks here).
                try:
                    hooks.trioxy_startup(config=config)
                except Exception as exc:
                    refused = exc  # raised below, outside the nursery: not in a group
                else:
                    await _run(server, services, handle_signals, task_status)
            finally:
                shutdown_notice.reset(notice_token)
                service_nursery.reset(service_token)
                services.cancel_scope.cancel()
        if refused is not None:
            raise refused
    finally:
        for listener in listeners:
            listener.sock.close()
        hooks.trioxy_shutdown(config=config)


async def _run(
    server: Server,
    services: trio.Nursery,
    handle_signals: bool,
    task_status: trio.TaskStatus[Server],
) -> None:
    async with trio.open_nursery() as streams:
        async with trio.open_nursery() as acceptors:
            for listener in server.listeners:
                if listener.spec.udp is not None:  # see pipeline.udp
                    acceptors.start_soon(serve_udp, listener.spec, listener.sock)
                    log.info("listening on udp %s", listener.address)
                    continue
                acceptors.start_soon(_accept_loop, server, listener, streams)
                log.info("listening on %s", listener.address)
            if handle_signals:
                services.start_soon(_watch_signals, server)
            task_status.started(server)
            await server._stop.wait()
            acceptors.cancel_scope.cancel()
        for listener in server.listeners:
            listener.sock.close()
        # Nothing is accepted any more: tell the streams (idle HTTP connections
        # close now, see pipeline.live.ShutdownNotice).
        server.notice.start()
        if server.streams:
            log.info(
                "shutting down: waiting up to %gs for %d open stream(s)",
                server.grace_period,
                len(server.streams),
            )
            with trio.move_on_after(server.grace_period):
                async with trio.open_nursery() as waiter:
                    waiter.start_soon(_cancel_when, server._now, waiter.cancel_scope)
                    await server._drained.wait()
                    waiter.cancel_scope.cancel()
            if server.streams:
                log.warning("closing %d stream(s) still open", len(server.streams))
        streams.cancel_scope.cancel()
    log.info("stopped")


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _watch_signals(server: Server) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if server._stop.is_set():
                log.warning("%s again: stopping now", signal.Signals(signum).name)
                server.shutdown(immediate=True)
            else:
                log.info("%s: shutting down", signal.Signals(signum).name)
                server.shutdown()


async def _accept_loop(server: Server, listener: Listener, streams: trio.Nursery) -> None:
    sock = listener.sock
    slots = listener.slots
    while True:
        if slots is not None:
            await slots.acquire()
        try:
            client, _ = await sock.accept()
        except OSError as exc:
            if slots is not None:
                slots.release()
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.error("%s: cannot accept: %s; pausing 100 ms", listener.address, exc)
                await trio.sleep(0.1)
                continue
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                continue
            raise
        except BaseException:
            if slots is not None:
                slots.release()
            raise
        streams.start_soon(_serve_connection, server, listener, client)


async def _serve_connection(
    server: Server, listener: Listener, client: trio.socket.SocketType
) -> None:
    conn = Connection(listener, client)
    server.streams.add(conn)
    listener.active += 1
    try:
        await conn.run()
    finally:
        listener.active -= 1
        server.streams.discard(conn)
        if not server.streams and server._stop.is_set():
            server._drained.set()
        client.close()
        if listener.slots is not None:
            listener.slots.release()


class Connection:
    """One accepted client connection and the pipeline serving it."""

    __slots__ = (
        "activity",
        "client",
        "context",
        "input_ended",
        "listener",
        "output_ended",
        "scope",
        "write_timeout",
    )

    def __init__(self, listener: Listener, client: trio.socket.SocketType) -> None:
        self.listener = listener
        self.client = client
        try:
            client.setsockopt(stdsocket.IPPROTO_TCP, stdsocket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.context = Context(
            local=_addr(client.getsockname()),
            remote=_peer(client),
            listener=listener.spec.address,
        )
        self.activity = 0
        self.input_ended = False
        self.output_ended = trio.Event()
        self.write_timeout = listener.spec.options.write_timeout
        self.scope = trio.CancelScope()

    def __repr__(self) -> str:
        host, port = self.context.remote or ("?", 0)
        return f"stream #{self.context.id} from {host}:{port}"

    async def run(self) -> None:
        options = self.listener.spec.options
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    pipeline = Pipeline(
                        self.listener.spec.layout, self.context, nursery, self.write
                    )
                    filters = pipeline.filters
                    relay = getattr(filters[0], "relay", None) if len(filters) == 1 else None
                    try:
                        if relay is not None:
                            # A pure byte relay times itself out: its bytes never
                            # pass through this object, so the watchdog below could
                            # not see them.
                            await relay(self.client, options.idle_timeout)
                        else:
                            if options.idle_timeout is not None:
                                nursery.start_soon(self._watch_idle, options.idle_timeout)
                            # Before the first read: a connect to a fixed target
                            # dials now, so a server that speaks first is heard.
                            pipeline.start()
                            await self._pump(pipeline, options.read_timeout)
                    finally:
                        pipeline.close()
                        nursery.cancel_scope.cancel()
        except Exception as exc:
            cause = _single(exc)
            log.error(
                "%s: closed after an error: %s: %s",
                self,
                type(cause).__name__,
                cause,
                exc_info=cause if log.isEnabledFor(logging.DEBUG) else None,
            )

    async def _pump(self, pipeline: Pipeline, read_timeout: float | None) -> None:
        # The reader: each chunk read becomes one Data event, fed through the
        # whole pipeline (down to the sockets the filters write) before the
        # next read; see pipeline.sockio for why reads are tried before waiting.
        client = self.client
        feed = pipeline.input
        read = os.read
        fd = client.fileno()  # the client is closed only after run() returns
        budget = YIELD_EVERY
        drained = False
        while True:
            if drained:
                try:
                    fd = await wait_readable(client, read_timeout)
                except trio.TooSlowError:
                    log.info("%s: %s", self, ReadTimeout(f"nothing read for {read_timeout:g}s"))
                    return
                budget = YIELD_EVERY
            try:
                data = read(fd, READ_SIZE)
            except BlockingIOError:
                drained = True
                continue
            except OSError as exc:
                log.debug("%s: read failed: %s", self, exc)
                await feed(StreamEnd(exc))
                return
            self.activity += 1
            if not data:
                break
            drained = len(data) < SHORT_READ
            await feed(Data(data))
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                if not drained:  # (a drained socket yields in its next wait)
                    await trio.lowlevel.checkpoint()
        self.input_ended = True
        await feed(StreamEnd())
        await self.output_ended.wait()

    async def write(self, event: Event) -> None:
        """The pipeline's output: write ``Data`` to the client, end on ``StreamEnd``."""
        kind = type(event)
        if kind is Data:
            data = event.data  # type: ignore[union-attr]
            if data:
                try:
                    await send_all(self.client, data, self.write_timeout)
                except OSError as exc:
                    log.debug("%s: write failed: %s", self, exc)
                    self.scope.cancel()
                    await trio.lowlevel.checkpoint()  # the cancellation lands here
                except trio.TooSlowError:
                    log.info("%s: %s", self, WriteTimeout("client accepted nothing"))
                    self.scope.cancel()
                    await trio.lowlevel.checkpoint()
                self.activity += 1
        elif kind is StreamEnd:
            if self.output_ended.is_set():
                return
            self.output_ended.set()
            error = event.error  # type: ignore[union-attr]
            if error is not None:
                log.debug("%s: pipeline ended with %r", self, error)
                self.scope.cancel()  # an error: close now, both ways
                return
            try:
                self.client.shutdown(stdsocket.SHUT_WR)
            except OSError:
                self.scope.cancel()

    async def _watch_idle(self, idle_timeout: float) -> None:
        # A watchdog instead of a deadline bumped per event: the hot path only
        # increments a counter. The stream ends between one and two periods idle.
        seen = -1
        while True:
            await trio.sleep(idle_timeout)
            if self.activity == seen:
                log.info("%s: %s", self, IdleTimeout(f"idle for {idle_timeout:g}s, closed"))
                self.scope.cancel()
                return
            seen = self.activity


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _addr(sockaddr: object) -> tuple[str, int]:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return (str(sockaddr), 0)


def _peer(sock: trio.socket.SocketType) -> tuple[str, int]:
    try:
        return _addr(sock.getpeername())
    except OSError:
        return ("?", 0)
