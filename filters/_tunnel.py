"""What the two tunnel protocols (SOCKS5 in :mod:`filters.socks`, HTTP ``CONNECT``
in :mod:`filters.http_tunnel`) share: the machinery of their joint filters.

A server end (:class:`TunnelServer`) negotiates with the client, opens the
sub-pipeline with a probe (an empty ``Data``) so that its ``connect`` connects
and reports through :data:`filters.connect.CONNECT_WATCH`, answers once from
that outcome, then relays. A client end (:class:`TunnelClient`) opens the
sub-pipeline to the tunnel server when its pipeline starts if its target is
fixed (so a server that speaks first is heard), else on the stream's first
event, sends its request, holds the stream's events until the answer (the
backpressure), then relays. The protocol parts (what is sent, parsed and logged)
stay in the subclasses; this module holds only what is the same to the letter.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import trio

from pipeline.address import format_address
from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.live import Pipeline

from ._callback import as_async
from .connect import CONNECT_WATCH

__all__ = [
    "TunnelClient",
    "TunnelServer",
    "Users",
    "check_password",
    "positive_seconds",
    "start_timer",
]


def positive_seconds(name: str, value: object) -> float:
    """``value`` as seconds; a ``ValueError`` naming ``name`` unless it is a
    positive number (``bool`` is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def start_timer(
    pipeline: Pipeline, seconds: float, expired: Callable[[], Any], name: str
) -> trio.CancelScope:
    """Call ``expired()`` (async) after ``seconds`` unless the scope returned is
    cancelled first."""
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await trio.sleep(seconds)
            await expired()

    pipeline.start_task(run, name=name)
    return scope


def check_password(users: Mapping[str, str], username: str, password: str) -> bool:
    """Whether ``users`` maps ``username`` to ``password``, compared in constant
    time (a wrong password takes as long to refuse whatever its prefix)."""
    expected = users.get(username)
    return expected is not None and hmac.compare_digest(
        expected.encode("utf-8", "surrogateescape"), password.encode("utf-8", "surrogateescape")
    )


class Users:
    """The ``users=`` argument of a server end, checked at load time: ``None``
    (no authentication), a ``dict`` of username to password, or a function
    ``fn(ctx, username, password) -> bool`` (plain or ``async def``)."""

    def __init__(self, users: Mapping[str, str] | Callable[..., Any] | None) -> None:
        self._users: Mapping[str, str] | None = None
        self._check: Callable[..., Any] | None = None
        if users is None:
            pass
        elif isinstance(users, Mapping):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
                raise ValueError("users must map usernames (str) to passwords (str)")
            self._users = users
        elif callable(users):
            self._check = as_async(users)
        else:
            raise ValueError(
                f"users must be a dict or a function (ctx, username, password), got {users!r}"
            )
        #: Whether clients must authenticate.
        self.required = users is not None

    async def check(self, ctx: Context, username: str, password: str) -> bool:
        """Whether the credentials are good (only when :attr:`required`)."""
        if self._users is not None:
            return check_password(self._users, username, password)
        assert self._check is not None
        return bool(await self._check(ctx, username, password))


class _TunnelEnd(Filter):
    """What both ends hold: the sub-pipeline, a handshake timer, and the way the
    stream ends before it relays."""

    joint = True
    #: The subclass's logger.
    log: ClassVar[logging.Logger]
    _sub: Pipeline | None
    _timer: trio.CancelScope | None

    async def _finish(self, error: BaseException | None) -> None:
        """End the stream with ``error`` and close the sub-pipeline (the caller
        has marked the filter ended)."""
        if self._timer is not None:
            self._timer.cancel()
        try:
            await self.output(StreamEnd(error))
        finally:
            if self._sub is not None:  # (may be the pipeline of the task running this)
                self._sub.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class TunnelServer(_TunnelEnd):
    """The server end of a tunnel: the subclass negotiates (``on_event``), then
    calls :meth:`_open`; this class answers once from the upstream's outcome
    (through :meth:`_answer`) and relays."""

    #: What the log lines say for a client without a known address.
    unknown_peer: ClassVar[str] = "-"

    def __init__(self, timeout: float) -> None:
        self.timeout = positive_seconds("timeout", timeout)
        self._sub: Pipeline | None = None
        self._relaying = False  # the success answer is out: events pass straight on
        self._replied: bool | None = None  # None: not yet; else whether it succeeded
        self._outcome: tuple[BaseException | None, tuple[str, int] | None] | None = None
        self._lock = trio.Lock()
        self._ended = False
        self._timer: trio.CancelScope | None = None

    @property
    def _peer(self) -> str:
        remote = self.pipeline.context.remote
        if remote is None:
            return self.unknown_peer
        return format_address(*remote)

    async def _answer(
        self, error: BaseException | None, bound: tuple[str, int] | None
    ) -> tuple[bool, bytes]:
        """Whether the answer is a success, and its bytes (``error``: the upstream
        failure, ``None`` for success; ``bound``: the upstream connection's local
        address when ``connect`` reported one)."""
        raise NotImplementedError

    def _trailing(self) -> bytes:
        """The bytes the client sent right after its request (taken once)."""
        raise NotImplementedError

    async def _open(self, **values: Any) -> None:
        """Run the sub-pipeline in a child context holding ``values``, answer the
        client once its upstream is connected (or failed), then relay."""
        child = self.pipeline.context.child()
        child.set(**values)
        child.vars[CONNECT_WATCH] = self._watch
        sub = self._sub = self.pipeline.sub(self.sub_layout, self._from_sub, context=child)
        # The probe: connect connects on it and reports through _watch before this
        # returns (unless a filter in between holds it: then the sub-pipeline's
        # first output, or its end, decides).
        await sub.input(Data(b""))
        if not await self._reply():
            await self._end()
            return
        self._relaying = True
        trailing = self._trailing()
        if trailing:
            await sub.input(Data(trailing))

    def _watch(self, error: BaseException | None, bound: tuple[str, int] | None) -> None:
        if self._outcome is None:
            self._outcome = (error, bound)

    async def _reply(self, failure: BaseException | None = None) -> bool:
        """Send the answer (once): success unless the upstream connection failed;
        whether it was a success."""
        async with self._lock:
            if self._replied is not None:
                return self._replied
            outcome = self._outcome
            error = outcome[0] if outcome is not None else failure
            bound = outcome[1] if outcome is not None else None
            # Set before the answer goes out: in memory, the client's next bytes
            # may arrive (re-entrantly) while it is being output.
            self._replied, out = await self._answer(error, bound)
            if out and not self._ended:  # (a timeout may have ended it meanwhile)
                await self.output(Data(out))
            return self._replied

    async def _from_sub(self, event: Event) -> None:
        if self._replied:
            await self.output(event)
            return
        if self._ended:
            return
        failure = event.error if type(event) is StreamEnd else None
        if not await self._reply(failure):
            await self._end()
            return
        if type(event) is Data and not event.data:
            return  # the probe, come through a sub-pipeline that does not connect
        await self.output(event)

    async def _end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        await self._finish(error)


class TunnelClient(_TunnelEnd):
    """The client end of a tunnel: when its pipeline starts (a fixed target) or
    on the stream's first event (a function, ``ctx.target``) it opens the
    sub-pipeline to the tunnel server with the subclass's request
    (:meth:`_request`), holds the stream until the subclass calls
    :meth:`_through` or :meth:`_fail`, then relays."""

    #: The name of the timer task (it says what is awaited).
    timer_name: ClassVar[str]

    def _init_target(self, target: str | Callable[..., Any] | None) -> None:
        """Check the ``target=`` argument (first, as the subclass's checks go)."""
        self._target: str | tuple[str, int] | None = None
        self._fn: Callable[..., Any] | None = None
        if isinstance(target, str):
            self._target = self._parse_target(target)
        elif callable(target):
            self._fn = as_async(target)
        elif target is not None:
            raise ValueError(f"target must be 'host:port', a function or None, got {target!r}")

    def _init_state(self, timeout: float) -> None:
        self.timeout = positive_seconds("timeout", timeout)
        #: The ``"host:port"`` asked for, once known.
        self.target: str | None = None
        self._sub: Pipeline | None = None
        self._relaying = False
        self._ended = False
        self._done: trio.Event | None = None
        self._timer: trio.CancelScope | None = None

    def _parse_target(self, value: Any) -> Any:
        """The target in the subclass's form, or an exception."""
        raise NotImplementedError

    def _request(self, target: Any) -> tuple[str, bytes]:
        """For the parsed target: the ``"host:port"`` asked for and the request's
        bytes (an exception if there is none)."""
        raise NotImplementedError

    def _closed_early(self) -> BaseException:
        """The error for a tunnel server that closed before its answer."""
        raise NotImplementedError

    async def _answered(self, data: bytes) -> None:
        """Bytes from the tunnel server before its answer is complete."""
        raise NotImplementedError

    def on_start(self) -> None:
        """A fixed target: open the tunnel now, in a task (``on_event`` then waits
        for its answer like any event before it), so that a server that speaks
        first is heard without the client sending anything."""
        if self._target is not None and self._done is None:
            self._done = trio.Event()
            self.pipeline.start_task(self._start, name=f"{self.name} open")

    async def on_event(self, event: Event) -> None:
        if self._relaying:
            assert self._sub is not None
            await self._sub.input(event)
            return
        if self._ended:
            return
        if self._done is None:
            self._done = trio.Event()
            await self._start()
        await self._done.wait()  # the server has answered (the backpressure meanwhile)
        if self._relaying:
            assert self._sub is not None
            await self._sub.input(event)

    async def _start(self) -> None:
        ctx = self.pipeline.context
        try:
            target = self._target
            if target is None:
                value = await self._fn(ctx) if self._fn is not None else ctx.get("target")
                if value is None:
                    raise ValueError(f"no target: give {self.name} one, or set ctx.target")
                target = self._parse_target(value)
            name, request = self._request(target)
        except Exception as exc:
            error = PipelineError(f"{self.name}: no usable target: {type(exc).__name__}: {exc}")
            self.log.warning("%s", error)
            await self._fail(error, logged=True)
            return
        self.target = name
        child = ctx.child()
        child.vars[CONNECT_WATCH] = None  # the link to the tunnel server is not the upstream
        self._sub = self.pipeline.sub(self.sub_layout, self._from_sub, context=child)
        self._timer = start_timer(self.pipeline, self.timeout, self._expired, self.timer_name)
        await self._sub.input(Data(request))

    async def _from_sub(self, event: Event) -> None:
        if self._relaying:
            await self.output(event)
            return
        if self._ended:
            return
        kind = type(event)
        if kind is StreamEnd:
            error = event.error  # type: ignore[union-attr]
            if error is None:
                await self._fail(self._closed_early())
            else:
                await self._fail(error, logged=True)  # connect said why, once
            return
        if kind is Data:
            await self._answered(event.data)  # type: ignore[union-attr]

    async def _through(self, bound: tuple[str, int] | None, trailing: bytes) -> None:
        """The server said yes: relay from now on (``bound``: the address it
        connected from, if it says)."""
        if self._timer is not None:
            self._timer.cancel()
        ctx = self.pipeline.context
        ctx.set(upstream=self.target)
        watch = ctx.get(CONNECT_WATCH)
        if watch is not None:
            watch(None, bound)
        self._relaying = True
        assert self._done is not None
        self._done.set()
        if trailing:
            await self.output(Data(trailing))

    async def _expired(self) -> None:
        raise NotImplementedError

    async def _fail(self, error: BaseException, logged: bool = False) -> None:
        if self._ended or self._relaying:
            return
        self._ended = True
        if not logged:
            self.log.warning("%s to %s failed: %s", self.name, self.target, error)
        watch = self.pipeline.context.get(CONNECT_WATCH)
        if watch is not None:
            watch(error, None)
        if self._done is not None:
            self._done.set()
        await self._finish(error)
