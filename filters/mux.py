"""``mux``: the messages of many streams merged into one shared session.

``mux(key=None, max_idle=10.0, max_queue=0, max_messages=0).to(layout)`` sends each
input message into a **session**, a long-lived sub-pipeline of ``layout`` shared by
every stream that uses the same ``mux`` (the same builder call) and the same key,
and outputs, on each stream, the answer to that stream's message. It is the client
side of connection reuse: many client connections (or many messages under a
``demux``) share a few upstream connections.

* ``key``: a function ``key(ctx)`` (plain or ``async def``) returning a hashable
  value, evaluated once per stream, on its first message, with the stream's
  context; streams with equal keys share sessions. ``None``: one key for all.
* ``max_queue``: at most that many messages waiting for their answer in one session
  (0: unlimited); when every session of the key is full, another one is opened.
* ``max_messages``: a session that has carried that many messages takes no more and
  is closed after its last answer (0: unlimited).
* ``max_idle``: a session with no message in flight for that many seconds is closed
  (``None``: never).

Sessions. A session runs its sub-pipeline with a context of its own, a child of the
context of the stream that opened it (so ``connect(lambda ctx: ctx.target)`` sees
the variables from which the key was computed; later streams' variables are not
seen). Its tasks must outlive the stream that opened it, so they run in the nursery
found in the context variable :data:`session_nursery`, which the runtime (and test
harnesses) set to a long-lived service nursery. **If it is unset, the session runs
in the nursery of the stream that opened it**, which then stays open until the
session closes (at most ``max_idle`` after its last message): fine for a script run
in memory, wrong for a server, so the runtime always sets it. A session whose
nursery has been cancelled is dropped the next time the pool is searched.
:meth:`MuxPool.close` closes every session of a pool (on shutdown or reload).

Messages and answers. A stream's message is buffered whole (``MessageStart`` to
``MessageEnd``; the bound is the upstream protocol's business, e.g. a decoder's
body limit) and then written into the session in one go under a per-session lock,
so messages of different streams never interleave. Answers are matched to messages
first-in first-out, as in HTTP/1.1: the session's *n*-th output message is the
answer to the *n*-th message written. Input outside messages is ignored. The
answers are output from the session's task, straight into the stream's output,
so a slow stream slows its session down (the same head-of-line blocking that
HTTP/1.1 has); an exception raised by a stream's output chain ends that stream (it
is raised again in the stream's own nursery, as any filter's exception would be)
and never breaks the session.

A stream whose messages are still waiting for answers keeps using the same session,
so its answers come back in order; when that session is full or retiring, the
stream waits for its answers before it moves to another session.

Ends and failures:

* the stream's ``StreamEnd`` does not close the session; it is passed on (with its
  error) after the stream's last answer;
* a session whose output ends (``StreamEnd``, e.g. the server closed) is removed
  from the pool and fails every stream waiting on it with ``StreamEnd(error)`` (its
  error, or an :class:`~pipeline.errors.UpstreamError` if it ended cleanly); new
  messages open a new session;
* a message interrupted while being written (the stream was cancelled) leaves the
  session broken: it is closed and its waiters fail the same way;
* closing a stream's pipeline while it waits takes it out of the line without
  disturbing the others: its answer, when it comes, is discarded.

Example (runnable): two streams share one session whose sub-pipeline answers each
message with itself; the session counts what it carried::

    import trio
    from pipeline import Data, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import run_layout
    from filters.mux import session_nursery

    proxy = Proxy()
    carried = []
    (proxy.pipeline("client")
        .mux(key=lambda ctx: "backend-1", max_idle=5)
        .to(lambda p: p.handle_message_start(lambda ctx, head: carried.append(head))))

    async def main():
        async with trio.open_nursery() as services:
            session_nursery.set(services)
            layout = proxy.layout("client")
            for name in ("a", "b"):
                msg = [MessageStart(name), Data(b"hi"), MessageEnd(), StreamEnd()]
                assert await run_layout(layout, msg) == msg
            layout.specs[0].state.close()   # the pool: close its sessions
        assert carried == ["a", "b"]

    trio.run(main)

In a proxy: ``demux_http().to(lambda p: p.mux_http(key=lambda ctx: ctx.target)
.connect(lambda ctx: ctx.target))``.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import trio

from pipeline.errors import PipelineError, UpstreamError
from pipeline.events import Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.layout import Layout
from pipeline.live import Pipeline, service_nursery

from ._callback import as_async

__all__ = ["Mux", "MuxPool", "MuxSession", "session_nursery"]

log = logging.getLogger("trioxy.mux")

#: The nursery shared sessions run their tasks in: the engine's
#: :data:`pipeline.live.service_nursery` (the same context variable, under the name
#: this module documents). The runtime sets it to a long-lived service nursery
#: before it serves connections, and :mod:`pipeline.testing` sets it to the
#: harness's nursery when the test has not set one; when unset, a session runs in
#: the nursery of the stream that opened it.
session_nursery: contextvars.ContextVar[trio.Nursery | None] = service_nursery

_UNSET: Any = object()


class _Waiter:
    """A message written into a session, waiting for its answer."""

    __slots__ = ("stream",)

    def __init__(self, stream: Mux) -> None:
        self.stream: Mux | None = stream  # None: detached, the answer is discarded


_DISCARD = _Waiter.__new__(_Waiter)  # routes an unsolicited answer to nowhere
_DISCARD.stream = None


class MuxSession:
    """One shared sub-pipeline and the line of messages waiting for its answers."""

    def __init__(self, pool: MuxPool, key: Hashable, layout: Layout, opener: Mux) -> None:
        self.pool = pool
        self.key = key
        self.lock = trio.Lock()
        self.queue: deque[_Waiter] = deque()  # written, answer not started
        self.current: _Waiter | None = None  # the waiter whose answer is flowing
        self.load = 0  # messages assigned and not yet answered (incl. not written)
        self.count = 0  # messages assigned so far
        self.retiring = False
        self.closed = False
        self.idle_since = trio.current_time()
        self._became_idle: trio.Event | None = None
        nursery = session_nursery.get() or opener.pipeline.nursery
        self.pipeline = Pipeline(layout, opener.pipeline.context.child(), nursery, self.on_output)
        if pool.max_idle is not None:
            self.pipeline.start_task(self._watch_idle, name=f"mux session {key!r} idle")

    def usable(self) -> bool:
        """Whether a new message may be assigned to this session."""
        max_queue = self.pool.max_queue
        return not self.closed and not self.retiring and (max_queue == 0 or self.load < max_queue)

    def reserve(self) -> None:
        self.load += 1
        self.count += 1
        if self.pool.max_messages and self.count >= self.pool.max_messages:
            self.retiring = True

    def release(self) -> None:
        """One message assigned to the session no longer waits for it."""
        if self.closed:
            return
        self.load -= 1
        if self.load == 0:
            self.idle_since = trio.current_time()
            became_idle = self._became_idle
            if became_idle is not None:
                self._became_idle = None
                became_idle.set()
            if self.retiring:
                self.close()

    async def write(self, stream: Mux, events: list[Event]) -> bool:
        """Write one whole message for ``stream`` (already reserved). False if the
        session closed before it could be written (the caller picks another)."""
        try:
            await self.lock.acquire()
        except BaseException:
            if not self.closed:
                self.release()
            raise
        try:
            if self.closed:
                return False  # its load went with it
            if stream.closed:
                self.release()
                return True
            waiter = _Waiter(stream)
            self.queue.append(waiter)
            stream._waiters.append(waiter)
            stream._outstanding += 1
            try:
                for event in events:
                    if self.closed:
                        break
                    await self.pipeline.input(event)
            except Exception as exc:
                if not self.closed:  # our write broke the session, not the stream
                    log.warning("mux session %r failed while writing: %r", self.key, exc)
                    self.fail(exc)
            except BaseException:
                self.fail(PipelineError("mux: a message was interrupted while being written"))
                raise
            return True
        finally:
            self.lock.release()

    async def on_output(self, event: Event) -> None:
        """Output of the session's sub-pipeline: route answers to their streams."""
        kind = type(event)
        if kind is StreamEnd:
            error = event.error  # type: ignore[union-attr]
            self.fail(error or UpstreamError("the mux session ended before answering"))
            return
        waiter = self.current
        if waiter is None:
            if kind is not MessageStart:
                return  # outside an answer: ignored
            if self.queue:
                waiter = self.current = self.queue.popleft()
            else:
                log.debug("mux session %r: unsolicited message discarded", self.key)
                waiter = self.current = _DISCARD
        if kind is MessageEnd:
            self.current = None
            if waiter is not _DISCARD:
                self.release()
            stream = waiter.stream
            if stream is not None:
                await stream._deliver(waiter, event)
                stream._answered(waiter)
            return
        stream = waiter.stream
        if stream is not None:
            await stream._deliver(waiter, event)

    def fail(self, error: BaseException) -> None:
        """Close the session; every stream waiting on it gets ``StreamEnd(error)``."""
        if self.closed:
            return
        self.closed = True
        self.pool._remove(self)
        waiters = list(self.queue)
        if self.current is not None and self.current is not _DISCARD:
            waiters.insert(0, self.current)
        self.queue.clear()
        self.current = None
        self.load = 0
        for w in waiters:
            stream = w.stream
            if stream is not None:
                stream._failed(w, error)
        became_idle = self._became_idle
        if became_idle is not None:
            became_idle.set()
        self.pipeline.close()

    def close(self) -> None:
        """Close the session (waiters, if any, fail)."""
        self.fail(PipelineError("the mux session was closed"))

    async def _watch_idle(self) -> None:
        max_idle = self.pool.max_idle
        assert max_idle is not None
        while not self.closed:
            if self.load:
                became_idle = self._became_idle = trio.Event()
                await became_idle.wait()
                continue
            deadline = self.idle_since + max_idle
            if trio.current_time() >= deadline:
                log.debug("mux session %r idle for %ss: closed", self.key, max_idle)
                self.close()
                return
            await trio.sleep_until(deadline)

    def __repr__(self) -> str:
        return f"<MuxSession {self.key!r} load={self.load} count={self.count}>"


class MuxPool:
    """The sessions of one ``mux`` builder call, by key (its ``shared`` state)."""

    def __init__(self, max_idle: float | None, max_queue: int, max_messages: int) -> None:
        self.max_idle = max_idle
        self.max_queue = max_queue
        self.max_messages = max_messages
        self.sessions: dict[Hashable, list[MuxSession]] = {}

    def pick(self, key: Hashable, layout: Layout, stream: Mux) -> MuxSession:
        """A usable session of ``key`` (opening one if needed), with one message
        reserved on it. Synchronous, so concurrent streams see each other's load."""
        sessions = self.sessions.setdefault(key, [])
        for session in list(sessions):
            if session.pipeline.nursery.cancel_scope.cancel_called:
                # Its nursery is gone (a test harness ended, the server is
                # stopping): its tasks are dead, so is the session.
                session.close()
            elif session.usable():
                break
        else:
            session = MuxSession(self, key, layout, stream)
            sessions = self.sessions.setdefault(key, [])
            sessions.append(session)
        session.reserve()
        return session

    def _remove(self, session: MuxSession) -> None:
        sessions = self.sessions.get(session.key)
        if sessions is not None and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self.sessions[session.key]

    def close(self) -> None:
        """Close every session (their waiting streams fail)."""
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                session.close()

    def __len__(self) -> int:
        return sum(len(s) for s in self.sessions.values())


def _check_limits(max_idle: float | None, max_queue: int, max_messages: int) -> None:
    if max_idle is not None:
        if isinstance(max_idle, bool) or not isinstance(max_idle, (int, float)):
            raise TypeError(f"max_idle must be a number of seconds or None, got {max_idle!r}")
        if not max_idle > 0 or math.isnan(max_idle):
            raise ValueError("max_idle must be positive (or None: never)")
    for name, value in (("max_queue", max_queue), ("max_messages", max_messages)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (0: unlimited)")


async def _reraise(exc: BaseException) -> None:
    raise exc


class Mux(Filter):
    """``mux(key=None, max_idle=10.0, max_queue=0, max_messages=0)``."""

    name = "mux"
    joint = True

    def __init__(
        self,
        key: Callable[..., Any] | None = None,
        max_idle: float | None = 10.0,
        max_queue: int = 0,
        max_messages: int = 0,
    ) -> None:
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the context or None, got {key!r}")
        _check_limits(max_idle, max_queue, max_messages)
        self._keyfn = as_async(key) if key is not None else None
        self._key: Hashable = _UNSET
        self._message: list[Event] | None = None
        self._session: MuxSession | None = None
        self._waiters: list[_Waiter] = []
        self._outstanding = 0  # messages written and not answered
        self._drained: trio.Event | None = None
        self._input_end: StreamEnd | None = None
        self._ended = False  # our output StreamEnd is sent (or scheduled)
        self._busy = False  # an answer event is being delivered
        self._not_busy: trio.Event | None = None
        self.closed = False

    @classmethod
    def shared(
        cls,
        key: Callable[..., Any] | None = None,
        max_idle: float | None = 10.0,
        max_queue: int = 0,
        max_messages: int = 0,
    ) -> MuxPool:
        return MuxPool(max_idle, max_queue, max_messages)

    @property
    def pool(self) -> MuxPool:
        pool: MuxPool = self.spec.state
        return pool

    # Input -------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is MessageStart:
            self._message = [event]
        elif kind is MessageEnd:
            message = self._message
            if message is not None:
                self._message = None
                message.append(event)
                await self._send(message)
        elif kind is StreamEnd:
            self._message = None
            if self._input_end is None:
                end: StreamEnd = event  # type: ignore[assignment]
                self._input_end = end
                if not self._outstanding and not self._ended:
                    await self._end(end)
        else:
            message = self._message
            if message is not None:
                message.append(event)

    async def _send(self, message: list[Event]) -> None:
        if self._ended or self.closed:
            return
        if self._key is _UNSET:
            fn = self._keyfn
            self._key = await fn(self.pipeline.context) if fn is not None else None
        while True:
            session = self._session
            if session is not None and self._outstanding and session.usable():
                session.reserve()
            else:
                while self._outstanding:  # keep our answers in order
                    drained = self._drained = trio.Event()
                    await drained.wait()
                if self._ended or self.closed:
                    return
                session = self._session = self.pool.pick(self._key, self.sub_layout, self)
            if await session.write(self, message):
                return

    # Answers (called by the session) -----------------------------------------

    async def _deliver(self, waiter: _Waiter, event: Event) -> None:
        if self._ended:
            return
        self._busy = True
        try:
            await self.output(event)
        except Exception as exc:
            # The stream's own chain failed: that ends the stream (the exception is
            # raised again in the stream's nursery), not the session.
            self._ended = True
            waiter.stream = None
            self._answered(waiter)
            self.pipeline.start_task(_reraise, exc)
        finally:
            self._busy = False
            not_busy = self._not_busy
            if not_busy is not None:
                self._not_busy = None
                not_busy.set()

    def _answered(self, waiter: _Waiter) -> None:
        """``waiter``'s answer is complete (or will never come)."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self._outstanding -= 1
        if not self._outstanding:
            drained = self._drained
            if drained is not None:
                self._drained = None
                drained.set()
            if self._input_end is not None and not self._ended and not self.closed:
                self._ended = True
                self.pipeline.start_task(self._output_end, self._input_end)

    def _failed(self, waiter: _Waiter, error: BaseException) -> None:
        """The session carrying ``waiter`` failed: end this stream with ``error``."""
        if not self._ended and not self.closed:
            self._ended = True
            self.pipeline.start_task(self._output_end, StreamEnd(error))
        self._answered(waiter)

    async def _end(self, end: StreamEnd) -> None:
        self._ended = True
        await self._output_end(end)

    async def _output_end(self, end: StreamEnd) -> None:
        while self._busy:  # let a delivery in progress finish first
            not_busy = self._not_busy = trio.Event()
            await not_busy.wait()
        await self.output(end)

    def close(self) -> None:
        self.closed = True
        for waiter in self._waiters:
            waiter.stream = None  # stays in its session's line; answer discarded
        self._waiters.clear()
        self._outstanding = 0
        drained = self._drained
        if drained is not None:
            drained.set()


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Mux]
