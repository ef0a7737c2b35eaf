"""``demux``: one sub-pipeline per message, the answers returned in message order.

``demux(max_pending=64).to(layout)`` starts a sub-pipeline of ``layout`` for every
input message (``MessageStart .. MessageEnd``), each with a child context
(:meth:`~pipeline.context.Context.child`), so per-message variables never leak into
the next message. It is what a protocol server needs between its decoder and its
encoder: every request gets its own pipeline, and the responses go back in the
order of the requests (HTTP/1.1 pipelining), whatever the order they are ready in.

How one message is handled:

* its events are fed to its sub-pipeline as they arrive; after its ``MessageEnd``
  the sub-pipeline is fed ``StreamEnd()`` too, so filters such as ``connect``
  half-close their upstream connection;
* the sub-pipeline's output is this message's answer: everything it outputs up to
  its first complete message (``MessageEnd``) or its ``StreamEnd``, whichever comes
  first. Once the answer is complete the sub-pipeline is closed (input of the
  message still arriving after an early answer is dropped);
* a sub-pipeline that ends with ``StreamEnd()`` (no error) without outputting
  anything answers nothing (a one-way message); one that ends with
  ``StreamEnd(error)`` -- or ends in the middle of its answer -- makes demux output
  that ``StreamEnd(error)`` in the answer's place, so a protocol encoder can answer
  502. That ``StreamEnd`` ends demux's output: the answers of later messages are
  dropped and their sub-pipelines closed, the rest of the input is ignored.

Ordering and memory: the answer of message *k* goes out only after the answer of
message *k-1* is complete; until then its events are held in a list, one per
pending message. The bound is on **messages, not bytes**: at most ``max_pending``
messages may be in flight (started and not yet fully answered); when that many
are, demux stops reading its input (the ``MessageStart`` of the next message
waits) -- that is the backpressure towards the client. A held answer is buffered
whole, so a sub-pipeline whose output is held never blocks and can always finish:
pipelined messages cannot deadlock, at the price of buffering up to
``max_pending - 1`` answers. The answer at the head of the line is not buffered:
its events go straight to the output, and awaiting the output slows its
sub-pipeline down as usual.

Input outside messages (``Data`` between ``MessageEnd`` and the next
``MessageStart``, a stray ``MessageEnd``) is ignored. A ``MessageStart`` inside an
open message ends that message's input with ``StreamEnd(PipelineError)``. The
input's ``StreamEnd`` is passed on (with its error, if any) once every pending
answer has been output.

Example (runnable): each message is answered by its own sub-pipeline; here the
sub-pipeline passes the message through, tagging its context::

    import trio
    from pipeline import Data, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import run_layout

    proxy = Proxy()
    seen = []
    (proxy.pipeline("echo")
        .demux(max_pending=16)
        .to(lambda p: p.handle_message_start(lambda ctx, head: seen.append(head))))

    events = [MessageStart("a"), Data(b"1"), MessageEnd(),
              MessageStart("b"), Data(b"2"), MessageEnd(), StreamEnd()]
    out = trio.run(run_layout, proxy.layout("echo"), events)
    assert out == events and seen == ["a", "b"]

In a proxy the sub-pipeline talks to a server: ``demux_http().to(lambda p:
p.connect(UPSTREAM))`` answers each request with the server's response.
"""

from __future__ import annotations

from collections import deque
from functools import partial

import trio

from pipeline.context import Context
from pipeline.errors import PipelineError
from pipeline.events import Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.live import Pipeline

__all__ = ["Demux"]


class _Slot:
    """One message in flight: its sub-pipeline and its held answer."""

    __slots__ = ("demux", "events", "finished", "started", "sub")

    def __init__(self, demux: Demux) -> None:
        self.demux = demux
        self.events: list[Event] = []
        self.finished = False  # the answer is complete (later output is dropped)
        self.started = False  # the answer's MessageStart has been output
        self.sub: Pipeline | None = None


class Demux(Filter):
    """``demux(max_pending=64)``: a sub-pipeline per message, answers in order."""

    name = "demux"
    joint = True
    #: Subclasses for request/response protocols (``demux_http``) set this: a
    #: sub-pipeline that ends cleanly without answering is then a failure
    #: (``StreamEnd(PipelineError)``), since every message needs its answer.
    answer_required = False

    def __init__(self, max_pending: int = 64) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int):
            raise TypeError(f"max_pending must be an int, got {max_pending!r}")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._slots: deque[_Slot] = deque()  # messages in flight, oldest first
        self._current: _Slot | None = None  # the slot whose input message is open
        self._writing = False  # a task is writing to the output (the "writer")
        self._ended = False  # our output StreamEnd has been sent
        self._input_end: StreamEnd | None = None
        self._room: trio.Event | None = None
        self._to_close: list[Pipeline] = []
        # The next MessageEnd leaves its message's input open (see demux_http).
        self._hold = False

    # Input -------------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        kind = type(event)
        if kind is MessageStart:
            if self._current is not None:
                err = PipelineError("demux: a MessageStart arrived inside an open message")
                await self._end_input(self._current, StreamEnd(err))
            while len(self._slots) >= self.max_pending:
                room = self._room = trio.Event()
                await room.wait()
                if self._ended:
                    return
            slot = _Slot(self)
            self._slots.append(slot)
            self._current = slot
            sub = slot.sub = self.pipeline.sub(
                self.sub_layout,
                partial(self._emit, slot),  # the answer of this slot
                context=self._message_context(event),  # type: ignore[arg-type]
            )
            await sub.input(event)
        elif kind is StreamEnd:
            if self._current is not None:
                await self._end_input(self._current, event)  # type: ignore[arg-type]
            self._input_end = event  # type: ignore[assignment]
            if not self._slots and not self._writing and not self._ended:
                await self._finish()
        else:  # Data or MessageEnd
            open_slot = self._current
            if open_slot is None:
                return  # outside a message: ignored
            target = open_slot.sub
            if target is not None and not target.closed:
                await target.input(event)
            if kind is MessageEnd:
                if self._hold:
                    # (demux_http, a protocol upgrade: the input that follows
                    # may be this message's sub-pipeline's too.)
                    self._hold = False
                    return
                await self._end_input(open_slot, StreamEnd())

    def _message_context(self, start: MessageStart) -> Context:
        """The context of the sub-pipeline of the message ``start`` begins: a child
        of the stream's. Protocol demuxers add what the message's filters need."""
        return self.pipeline.context.child()

    async def _end_input(self, slot: _Slot, end: StreamEnd) -> None:
        self._current = None
        sub = slot.sub
        if sub is not None and not sub.closed:
            await sub.input(end)

    # Output ------------------------------------------------------------------

    async def _emit(self, slot: _Slot, event: Event) -> None:
        """Output callback of ``slot``'s sub-pipeline."""
        if slot.finished or self._ended:
            return
        kind = type(event)
        if kind is MessageStart:
            slot.started = True
        elif kind is MessageEnd:
            slot.finished = True
        elif kind is StreamEnd:
            slot.finished = True
            if event.error is None:  # type: ignore[union-attr]
                if not slot.started:
                    if self.answer_required:
                        event = StreamEnd(
                            PipelineError("demux: a sub-pipeline ended without answering")
                        )
                    else:
                        event = None  # type: ignore[assignment]  # answered nothing
                else:
                    event = StreamEnd(
                        PipelineError("demux: a sub-pipeline ended inside its answer")
                    )
        if slot.finished and slot.sub is not None:
            self._to_close.append(slot.sub)
        if (
            kind is not StreamEnd
            and not self._writing
            and not slot.events
            and slot is self._slots[0]
        ):
            # Fast path: the head of the line with nothing held outputs at once
            # (the usual case, one message at a time: two calls fewer per event).
            self._writing = True
            try:
                await self.output(event)
                if slot.finished or slot.events:
                    await self._drain()
            finally:
                self._writing = False
                if self._to_close:  # (most events finish no answer: no call)
                    self._close_finished()
            return
        if event is not None:
            slot.events.append(event)
        if self._writing:
            return  # the writer will output it (and close the sub-pipeline)
        if slot is not self._slots[0]:
            self._close_finished()  # held; safe to close now, no writer runs
            return
        # Become the writer: output what the head of the line has, then the
        # answers after it that are complete or ready.
        self._writing = True
        try:
            await self._drain()
        finally:
            self._writing = False
            # Closed only now: the writer may be a task of one of these pipelines.
            self._close_finished()

    async def _drain(self) -> None:
        slots = self._slots
        while slots:
            head = slots[0]
            if head.events:
                batch, head.events = head.events, []
                done = 0
                try:
                    for ev in batch:
                        done += 1
                        await self._put(ev)
                except BaseException:
                    head.events[:0] = batch[done:]
                    raise
                continue  # more may have arrived meanwhile
            if not head.finished:
                return
            slots.popleft()
            self._wake()
            self._answered()
        if self._input_end is not None and not self._ended:
            await self._finish()

    async def _put(self, event: Event) -> None:
        if type(event) is StreamEnd:
            # A failed answer ends our output: drop what comes after it.
            self._ended = True
            for s in self._slots:
                s.finished = True
                if s.sub is not None:
                    self._to_close.append(s.sub)
            self._slots.clear()
            self._wake()
        await self.output(event)

    async def _finish(self) -> None:
        end = self._input_end
        assert end is not None
        self._ended = True
        await self.output(end)

    def _answered(self) -> None:
        """A message's answer has been output entirely and its slot freed. A hook
        for subclasses (``demux_http`` closes a connection that the server's
        shutdown left idle); the default does nothing."""

    def _wake(self) -> None:
        room = self._room
        if room is not None:
            self._room = None
            room.set()

    def _close_finished(self) -> None:
        to_close, self._to_close = self._to_close, []
        for p in to_close:
            p.close()

    def close(self) -> None:
        self._ended = True
        self._slots.clear()
        self._current = None
        self._wake()
        self._close_finished()


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Demux]
