"""``connect(target)``: send the stream to a server, output what it answers.

``connect`` is the end of the line for a request: every ``Data`` event it receives
goes to a TCP server, and every chunk the server sends back comes out as a
``Data`` event, ended by ``StreamEnd``. It carries bytes: ``MessageStart`` and
``MessageEnd`` are ignored (put an encoder such as ``mux_http`` before it).

Example: an L4 proxy to two servers, and a reverse proxy choosing per request::

    from pipeline import Proxy
    from filters.balance import RoundRobin

    proxy = Proxy()
    proxy.listen(8000).connect(RoundRobin(["127.0.0.1:8081", "127.0.0.1:8082"]))

    def pick(ctx):
        return ctx.target            # set by an earlier filter

    proxy.listen(8001).demux_http().to(lambda p: p.mux_http().connect(pick))

Arguments:

``target``
    ``"host:port"`` (``"[::1]:80"`` for IPv6; a host name is resolved when the
    stream connects); a list of them, tried in order starting from a position
    that rotates with each stream (so the list is also a simple balancer); a
    function ``fn(ctx) -> "host:port"``, plain or ``async def``; or a balancer
    from :mod:`filters.balance`: the first target is the one ``balance(balancer)``
    picked for this message if it did, else ``select(ctx)``; when a target does
    not answer, ``select_other(ctx, tried)`` picks the next among those not yet
    tried. The balancer is told of every connection (``acquire``/``release``),
    every connect's outcome (``succeeded``/``failed``) and of a stream reset by
    its server (``failed``), which drive its health tracking.
``connect_timeout=5.0``
    seconds to establish a connection to one target (name resolution included).
``idle_timeout=60.0``
    nothing moved either way for this long ends the stream (``None``: no limit).
``retries=0``, ``retry_delay=0.5``
    when no target answered, try them all again this many times, after the delay.
``bind=None``
    the source address, ``"host"`` or ``"host:port"`` (an IP address).
``read_buffer=65536``
    the largest chunk read from the server at once.

Behaviour. A fixed target (``"host:port"`` or a list) is dialed as soon as the
stream's pipeline starts (when the client's connection is accepted, or when the
sub-pipeline holding ``connect`` is opened), before any event, so a protocol
whose server speaks first (SMTP, MySQL, an SSH banner) works; a function or a
balancer is asked on the first input event instead, since it may depend on what
the filters before ``connect`` found in it. ``Data`` waits for the connection
(that wait is the backpressure: nothing piles up) and is then sent; an input
``StreamEnd`` half-closes the connection (``shutdown(SHUT_WR)``), so the server's
reply still arrives. The server's EOF gives ``StreamEnd()``; a failure gives
``StreamEnd(error)`` with :class:`~pipeline.errors.ConnectRefused`,
:class:`~pipeline.errors.ConnectTimeout`, :class:`~pipeline.errors.ConnectionReset`
or :class:`~pipeline.errors.IdleTimeout`. When no target answers, one warning
line on the ``trioxy.connect`` logger names every target and why it failed.
The target used is kept as the filter's ``upstream`` and in ``ctx.upstream``.
Sockets have ``TCP_NODELAY`` set: the proxy adds no delay of its own.

Connect outcome. A filter that must know whether the connection was made before
it lets its client go on (``accept_socks`` answers its client only then) leaves a
function in the context variable :data:`CONNECT_WATCH`; ``connect`` calls it once
its attempt is over, before any byte goes out: ``fn(None, (host, port))`` with
the connection's local address, or ``fn(error, None)`` with the error the stream
is about to end with.

Zero copy. A listener whose whole layout is one ``connect`` does not use events
at all: the runtime calls :meth:`Connect.relay`, which relays the two sockets in
the kernel (``splice``), with the same failover, timeouts and logging.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from pipeline.address import format_address, parse_address
from pipeline.errors import (
    ConnectionReset,
    ConnectRefused,
    ConnectTimeout,
    IdleTimeout,
    PipelineError,
    UpstreamError,
)
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.relay import RelayStats, error_reason, watch_idle
from pipeline.relay import relay as relay_sockets
from pipeline.sockio import SHORT_READ, YIELD_EVERY, send_all, wait_readable

from ._callback import as_async
from .balance import PICKED, Balancer, parse_target

__all__ = ["CONNECT_WATCH", "Connect"]

log = logging.getLogger("trioxy.connect")

#: The context variable where a filter before ``connect`` may leave a function
#: ``fn(error, bound)`` that learns how the connection attempt ended (see the
#: module docs); ``accept_socks`` uses it to send its reply at the right time.
CONNECT_WATCH = "connect_watch"

Target = tuple[str, int, str]  # host, port, "host:port" as logged and stored in the context


class _Rotation:
    """Where the next stream starts in a target list; shared by every instance
    made from one builder call (see :meth:`Connect.shared`)."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next = 0


class _DialError(Exception):
    def __init__(self, reason: str, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


def _target(value: object) -> Target:
    host, port = parse_target(value)
    return host, port, format_address(host, port)


def _parse_bind(value: object) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ValueError(f"bad bind address {value!r}: expected 'host' or 'host:port'")
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]"))), 0
    except ValueError:
        pass
    try:
        host, port = parse_address(value, default_host="")
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"bad bind address {value!r}: expected an IP address of this host, "
            "'ip:port' or '[ipv6]:port'"
        ) from None
    return host, port


def _positive(name: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        extra = " (or None for no limit)" if allow_none else ""
        raise ValueError(f"{name} must be a positive number of seconds{extra}, got {value!r}")


class Connect(Filter):
    """Relay the stream to a TCP server; see the module docs."""

    name = "connect"

    def __init__(
        self,
        target: str | list[str] | tuple[str, ...] | Callable[..., Any] | Balancer,
        *,
        connect_timeout: float = 5.0,
        idle_timeout: float | None = 60.0,
        retries: int = 0,
        retry_delay: float = 0.5,
        bind: str | None = None,
        read_buffer: int = 65536,
    ) -> None:
        self._targets: tuple[Target, ...] = ()
        self._balancer: Balancer | None = None
        self._balanced: dict[str, Target] = {}
        self._fn: Callable[..., Awaitable[Any]] | None = None
        if isinstance(target, Balancer):
            self._balancer = target
            self._balanced = {t: _target(t) for t in target.targets}
        elif isinstance(target, str):
            self._targets = (_target(target),)
        elif isinstance(target, (list, tuple)):
            if not target:
                raise ValueError("the target list is empty")
            self._targets = tuple(_target(t) for t in target)
        elif callable(target):
            self._fn = as_async(target)
        else:
            raise ValueError(
                f"bad target {target!r}: expected 'host:port', a list of them, a function "
                "or a balancer"
            )
        _positive("connect_timeout", connect_timeout)
        _positive("idle_timeout", idle_timeout, allow_none=True)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if (
            isinstance(retry_delay, bool)
            or not isinstance(retry_delay, (int, float))
            or retry_delay < 0
        ):
            raise ValueError(f"retry_delay must be a number of seconds >= 0, got {retry_delay!r}")
        if isinstance(read_buffer, bool) or not isinstance(read_buffer, int) or read_buffer < 1:
            raise ValueError(f"read_buffer must be a positive integer, got {read_buffer!r}")
        self.connect_timeout = float(connect_timeout)
        self.idle_timeout = None if idle_timeout is None else float(idle_timeout)
        self.retries = retries
        self.retry_delay = float(retry_delay)
        self.bind = None if bind is None else _parse_bind(bind)
        self.read_buffer = read_buffer

        #: The ``"host:port"`` connected to, once connected.
        self.upstream: str | None = None
        #: The connected socket (``None`` before connecting and after closing).
        self.sock: trio.socket.SocketType | None = None
        #: What :meth:`relay` did, once it is over.
        self.stats: RelayStats | None = None
        self._ready: trio.Event | None = None
        self._error: BaseException | None = None
        self._read_scope: trio.CancelScope | None = None
        self._ended = False
        self._acquired: str | None = None  # the target counted with the balancer
        self._shut = False
        self._moved = 0

    @classmethod
    def shared(cls, *args: Any, **kwargs: Any) -> Any:
        """A target list rotates its starting point across the streams of one
        builder call."""
        target = args[0] if args else kwargs.get("target")
        if isinstance(target, (list, tuple)) and len(target) > 1:
            return _Rotation()
        return None

    # Event mode ---------------------------------------------------------------

    def on_start(self) -> None:
        """A fixed target is dialed at once (a server that speaks first is heard);
        a function or a balancer waits for the first event, which may set what
        it reads in the context."""
        if self._targets and self._ready is None:
            self._start()

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is Data:
            sock = self.sock
            if sock is None:
                sock = await self._connected()
                if sock is None:
                    return  # no server: StreamEnd(error) is already on its way
            if self._shut or self._error is not None:
                return
            await self._send(sock, event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            sock = self.sock or await self._connected()
            if sock is not None and not self._shut:
                self._shut = True
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass  # already reset: the reader reports it
        elif self._ready is None:
            self._start()  # a message event starts the connection too; it carries nothing

    def _start(self) -> None:
        self._ready = trio.Event()
        self.pipeline.start_task(self._run, name=f"connect {self._describe()}")

    async def _connected(self) -> trio.socket.SocketType | None:
        if self._ready is None:
            self._start()
        assert self._ready is not None
        await self._ready.wait()
        return self.sock

    async def _send(self, sock: trio.socket.SocketType, data: bytes) -> None:
        try:
            await send_all(sock, data)
        except (OSError, trio.ClosedResourceError) as exc:
            self._fail(error_reason(exc))
            return
        self._moved += len(data)

    def _fail(self, error: BaseException) -> None:
        """End the stream with ``error``: the reader stops and outputs it."""
        if self._error is None:
            self._error = error
        if self._read_scope is not None:
            self._read_scope.cancel()

    async def _run(self) -> None:
        assert self._ready is not None
        try:
            sock = await self._open()
        finally:
            self._ready.set()
        if sock is None:
            await self._end(self._error)
            return
        error: BaseException | None = None
        with trio.CancelScope() as scope:
            self._read_scope = scope
            if self._error is not None:  # a send failed before the reader started
                scope.cancel()
            async with trio.open_nursery() as nursery:
                if self.idle_timeout is not None:
                    nursery.start_soon(self._watch_idle, self.idle_timeout)
                try:
                    await self._read(sock)
                except OSError as exc:
                    error = error_reason(exc)
                except trio.ClosedResourceError:
                    return  # closed under us: the pipeline is closing, nobody listens
                finally:
                    nursery.cancel_scope.cancel()  # stops the watchdog
        self._report(self._error or error)
        await self._end(self._error or error)

    async def _read(self, sock: trio.socket.SocketType) -> None:
        # Tried before waiting, with a yield budget: see pipeline.sockio. The
        # descriptor is fetched again after every await, as the pipeline may
        # close the socket while this task waits on its output.
        read = os.read
        size = self.read_buffer
        short = min(size, SHORT_READ)
        output = self.output
        budget = YIELD_EVERY
        drained = False
        while True:
            if drained:
                fd = await wait_readable(sock)
                budget = YIELD_EVERY
            else:
                fd = sock.fileno()
                if fd < 0:
                    raise trio.ClosedResourceError
            try:
                chunk = read(fd, size)
            except BlockingIOError:
                drained = True
                continue
            if not chunk:
                return
            n = len(chunk)
            self._moved += n
            drained = n < short
            await output(Data(chunk))
            budget -= 1
            if not budget:
                budget = YIELD_EVERY
                if not drained:  # (a drained socket yields in its next wait)
                    await trio.lowlevel.checkpoint()

    async def _watch_idle(self, timeout: float) -> None:
        await watch_idle(lambda: self._moved, timeout)
        self._fail(IdleTimeout(f"nothing moved for {timeout:g}s", self.upstream))

    async def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            await self.output(StreamEnd(error))

    # Zero-copy mode -------------------------------------------------------------

    async def relay(
        self, client: trio.socket.SocketType, idle_timeout: float | None = None
    ) -> None:
        """Serve a whole connection without events: connect (with the same
        failover, retries and logging as the event path), then relay the bytes
        both ways in the kernel until both sides are done. The caller owns and
        closes ``client``; when no server answers it is closed at once, so the
        client sees the end promptly. ``idle_timeout`` is the listener's: the
        shorter of it and this filter's own applies."""
        sock = await self._open()
        if sock is None:
            client.close()
            return
        self.sock = sock
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a socketpair in a test): nothing to tune
        try:
            limits = [t for t in (idle_timeout, self.idle_timeout) if t is not None]
            self.stats = await relay_sockets(
                client, sock, idle_timeout=min(limits, default=None), buffer_size=self.read_buffer
            )
        finally:
            self.sock = None
            sock.close()
            self._release()
        # (A reset here is not reported to the balancer: the relay does not say
        # which side reset, and a client's must not count against the server.)
        if self.stats.error is not None:
            log.debug("relay to %s ended: %s", self.upstream, self.stats.error)

    # Connecting -----------------------------------------------------------------

    async def _candidates(self) -> list[Target] | None:
        """The targets to try for this stream, in order (``None``: the callback
        failed, ``self._error`` says why)."""
        balancer = self._balancer
        if balancer is not None:
            try:
                # A target picked for this message by balance(balancer) comes first.
                ctx = self.pipeline.context
                picked = ctx.get(PICKED)
                if picked is not None and picked[0] is balancer and balancer.available(picked[1]):
                    first = picked[1]
                else:
                    first = balancer.select(ctx)
                return [self._balanced.get(first) or _target(first)]
            except Exception as exc:
                self._script_failed(f"{balancer!r}.select()", exc)
                return None
        if self._fn is not None:
            try:
                return [_target(await self._fn(self.pipeline.context))]
            except Exception as exc:
                self._script_failed("the target function", exc)
                return None
        targets = self._targets
        rotation = getattr(getattr(self, "spec", None), "state", None)
        if isinstance(rotation, _Rotation):
            i = rotation.next
            rotation.next = i + 1 if i + 1 < len(targets) else 0
            return list(targets[i:] + targets[:i])
        return list(targets)

    def _attempts(self, candidates: list[Target]) -> Iterator[Target]:
        """The targets of one round of attempts: the list, or with a balancer its
        first pick and then, while connects fail, its picks among the targets not
        yet tried."""
        balancer = self._balancer
        if balancer is None:
            yield from candidates
            return
        ctx = self.pipeline.context
        tried: list[str] = []
        target = candidates[0]
        while True:
            yield target
            tried.append(target[2])
            try:
                other = balancer.select_other(ctx, tried)
            except Exception as exc:  # a hash key function raising: no failover
                log.warning("connect: %r.select_other() failed: %r", balancer, exc)
                return
            if other is None:
                return
            target = self._balanced.get(other) or _target(other)

    def _script_failed(self, what: str, exc: Exception) -> None:
        self._error = PipelineError(f"connect: {what} failed: {type(exc).__name__}: {exc}")
        log.warning("%s", self._error)

    async def _open(self) -> trio.socket.SocketType | None:
        """Connect to the first target that answers, or set ``self._error``, log
        one line and return ``None``."""
        candidates = await self._candidates()
        if candidates is None:
            self._notify(None)
            return None
        failures: dict[str, list[str]] = {}
        timeouts_only = True
        for attempt in range(self.retries + 1):
            if attempt:
                await trio.sleep(self.retry_delay)
            for host, port, text in self._attempts(candidates):
                balancer = self._balancer
                if balancer is not None:
                    balancer.acquire(text)  # counted while connecting too (p2c, least-conn)
                try:
                    sock = await self._dial(host, port)
                except _DialError as exc:
                    if balancer is not None:
                        balancer.release(text)
                        balancer.failed(text, exc.reason)
                    failures.setdefault(text, []).append(exc.reason)
                    timeouts_only &= exc.timeout
                    continue
                except BaseException:  # cancelled while connecting
                    if balancer is not None:
                        balancer.release(text)
                    raise
                if balancer is not None:
                    self._acquired = text
                    balancer.succeeded(text)
                self.upstream = text
                self.sock = sock
                if hasattr(self, "pipeline"):
                    self.pipeline.context.set(upstream=text)
                self._notify(sock)
                return sock
        parts = []
        for text, reasons in failures.items():
            distinct = list(dict.fromkeys(reasons))
            times = f" ({len(reasons)} attempts)" if len(reasons) > 1 else ""
            parts.append(f"{text}: {', '.join(distinct)}{times}")
        message = "no upstream answered: " + "; ".join(parts)
        targets = ", ".join(failures)
        error_type = ConnectTimeout if timeouts_only else ConnectRefused
        error: UpstreamError = error_type(message, targets)
        self._error = error
        log.warning("connect failed, %s", message)
        self._notify(None)
        return None

    def _notify(self, sock: trio.socket.SocketType | None) -> None:
        """Tell the context's :data:`CONNECT_WATCH` function, if any, how the
        attempt ended."""
        watch = self.pipeline.context.get(CONNECT_WATCH) if hasattr(self, "pipeline") else None
        if watch is None:
            return
        if sock is None:
            watch(self._error, None)
            return
        try:
            bound = sock.getsockname()
        except OSError:
            bound = ("0.0.0.0", 0)
        watch(None, (str(bound[0]), int(bound[1])))

    async def _dial(self, host: str, port: int) -> trio.socket.SocketType:
        """A connected socket to ``host:port`` (each of its addresses in turn), or
        :class:`_DialError` with a short reason."""
        family = socket.AF_UNSPEC
        if self.bind is not None:
            version = ipaddress.ip_address(self.bind[0]).version
            family = socket.AF_INET6 if version == 6 else socket.AF_INET
        last: OSError | None = None
        try:
            with trio.fail_after(self.connect_timeout):
                try:
                    infos = await trio.socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
                except socket.gaierror as exc:
                    raise _DialError(f"cannot resolve {host!r} ({exc.strerror})") from None
                for fam, kind, proto, _, addr in infos:
                    sock = trio.socket.socket(fam, kind, proto)
                    try:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        if self.bind is not None:
                            if self.bind[1]:
                                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                            await sock.bind(self.bind)
                        await sock.connect(addr)
                    except OSError as exc:
                        sock.close()
                        last = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return sock
        except trio.TooSlowError:
            raise _DialError(f"timed out after {self.connect_timeout:g}s", timeout=True) from None
        if last is None:
            raise _DialError(f"no address for {host!r}")
        # trio's message repeats the address; the errno's text is what a reader needs.
        raise _DialError(os.strerror(last.errno).lower() if last.errno else str(last))

    def _describe(self) -> str:
        if self._balancer is not None:
            return repr(self._balancer)
        if self._fn is not None:
            return "<function>"
        return ", ".join(t[2] for t in self._targets)

    def _report(self, error: BaseException | None) -> None:
        """A stream reset by its server counts against it with the balancer."""
        if isinstance(error, ConnectionReset) and self._balancer is not None and self.upstream:
            self._balancer.failed(self.upstream, str(error))

    def _release(self) -> None:
        target, self._acquired = self._acquired, None
        if target is not None:
            assert self._balancer is not None
            self._balancer.release(target)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        self._release()


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Connect]
