"""``connect_smux`` and ``accept_smux``: many streams over a few shared links.

The two ends of :mod:`protocols.smux`, the stream-multiplexing link protocol.

``connect_smux(metadata=None, max_links=4, window=262144, ...).to(link_layout)``
carries the byte stream of the pipeline it is in as one *smux stream* over a
shared *link*: a long-lived sub-pipeline of ``link_layout`` (usually
``connect(FAR_END)``, or a TLS connection) shared by every stream that goes
through the same ``connect_smux`` builder call. At most ``max_links`` links are
open at once; a stream goes on a new link while there are fewer, then on the link
carrying the fewest streams. ``metadata(ctx)`` (plain or ``async def``) returns a
``dict`` of strings sent with the stream's ``OPEN`` frame: the far end turns
them into context variables (a target, a device's client id...).

``accept_smux(window=262144, max_streams=10000, drain_timeout=5, ...).to(stream_layout)``
is the far end, in the pipeline of a listener that the links connect to: every stream opened
by the near end gets a sub-pipeline of ``stream_layout`` whose context (a child of
the link's) has the stream's metadata as variables, and whose output goes back on
the stream.

Flow control is per stream: a sender has at most ``window`` unacknowledged bytes
of one stream on the link, and the receiver acknowledges bytes only once the
stream's pipeline has consumed them (its input returned). A slow stream therefore
fills its own window and stops, while the others go on. Both ends must be
configured with the same ``window``.

Ends and failures:

* a stream's ``StreamEnd()`` is a half-close (``FIN``); its ``StreamEnd(error)``
  or the closing of its pipeline aborts it (``RESET``, the far end sees
  ``StreamEnd(UpstreamError(reason))``);
* when a link breaks (its connection ended, a protocol error, no answer to
  ``PING`` for ``3 * ping_interval`` seconds) every stream on it ends with
  ``StreamEnd(LinkLost(...))`` on both sides, and new streams open a new link.
  ``accept_smux`` gives its streams' pipelines up to ``drain_timeout`` seconds to
  take that end in (and, say, close their upstream sessions cleanly) before the
  link's pipeline ends;
  Opening links after a failure backs off (``reconnect_delay`` doubling up to
  ``max_reconnect_delay``) while no link works, so a dead far end is not hammered;
  streams wait for the backoff, then fail if the new link fails too;
* when the server shuts down gracefully, ``accept_smux`` sends ``GOAWAY`` (the
  near end opens no more streams on that link) and ends the link once its
  streams have ended, so idle links do not hold the server for its grace period;
* message events (``MessageStart``/``MessageEnd``) are not carried: smux carries
  bytes; put an encoder before ``connect_smux`` if the stream holds messages.

Example (runnable): two streams share one link, which here is an in-memory
``accept_smux`` end whose streams upper-case what they receive::

    import trio
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout

    proxy = Proxy()
    (proxy.pipeline("far")
        .accept_smux()
        .to(lambda p: p.replace_data(lambda ctx, d: d.upper() + ctx.tag.encode())))
    (proxy.pipeline("near")
        .connect_smux(metadata=lambda ctx: {"tag": "!"}, max_links=1)
        .to("far"))

    async def main():
        for word in (b"hello", b"world"):
            out = await run_layout(proxy.layout("near"), [Data(word), StreamEnd()])
            assert join_data(out) == word.upper() + b"!" and out[-1] == StreamEnd()

    trio.run(main)

In a gateway: ``listen(LISTEN).connect_smux(max_links=4).to(lambda p:
p.connect(CLOUD))`` on one side, ``listen(CLOUD).accept_smux().to(lambda p:
p.connect(BROKER))`` on the other.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from pipeline.context import Context
from pipeline.errors import PipelineError, UpstreamError
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter, Output
from pipeline.hookspecs import hookimpl
from pipeline.layout import Layout
from pipeline.live import Pipeline, service_nursery, shutdown_notice
from protocols.smux import (
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    decode_metadata,
    encode_frame,
    encode_metadata,
)

from ._callback import as_async

__all__ = ["AcceptSmux", "ConnectSmux", "LinkLost", "LinkPool", "StreamReset"]

log = logging.getLogger("trioxy.smux")

_DATA = FrameType.DATA
_WINDOW = FrameType.WINDOW


class LinkLost(UpstreamError):
    """The smux link carrying a stream broke."""


class StreamReset(UpstreamError):
    """The far end aborted the stream (its ``RESET`` reason is the message)."""


class _Stream:
    """One smux stream as seen from one end of its link."""

    __slots__ = (
        "_credit_event",
        "_wakeup",
        "consumed",
        "deliver",
        "error",
        "fin_received",
        "fin_sent",
        "id",
        "inbound",
        "inbound_bytes",
        "link",
        "send_window",
    )

    def __init__(self, link: _Link, stream_id: int) -> None:
        self.link = link
        self.id = stream_id
        self.send_window = link.window
        self.inbound: deque[bytes] = deque()
        self.inbound_bytes = 0
        self.consumed = 0  # delivered, not yet acknowledged with WINDOW
        self.fin_received = False
        self.fin_sent = False
        self.error: BaseException | None = None  # reset or link lost
        self.deliver: Output | None = None
        self._wakeup: trio.Event | None = None
        self._credit_event: trio.Event | None = None

    # Frames from the far end (called by the link's reader, never blocking) ----

    def on_data(self, payload: bytes) -> None:
        if self.fin_received or self.error is not None:
            return  # late data after an end: dropped
        self.inbound_bytes += len(payload)
        if self.inbound_bytes > self.link.window:
            raise ProtocolError(f"stream {self.id} exceeded its flow-control window")
        self.inbound.append(payload)
        self._wake()

    def on_fin(self) -> None:
        self.fin_received = True
        self._wake()

    def on_credit(self, increment: int) -> None:
        self.send_window += increment
        event = self._credit_event
        if event is not None:
            self._credit_event = None
            event.set()

    def on_error(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        self.on_credit(0)

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    # The near side -------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send ``data`` on the stream, waiting for window credit as needed. Once the
        stream has failed, data is dropped: its delivery side reports the end."""
        link = self.link
        max_frame = link.max_frame
        while data:
            if self.error is not None or self.fin_sent:
                return
            window = self.send_window
            if window <= 0:
                event = self._credit_event = trio.Event()
                await event.wait()
                continue
            n = min(len(data), window, max_frame)
            if n == len(data):
                chunk, data = data, b""
            else:
                chunk, data = data[:n], data[n:]
            self.send_window = window - n
            link.queue(encode_frame(_DATA, self.id, chunk))

    def finish(self) -> None:
        """Half-close: no more data from this side."""
        if not self.fin_sent and self.error is None:
            self.fin_sent = True
            self.link.queue(encode_frame(FrameType.FIN, self.id))
            self._maybe_done()

    def abort(self, reason: str) -> None:
        """Abort the stream; the far end sees ``StreamEnd(StreamReset(reason))``."""
        if self.error is None:
            self.error = PipelineError(f"stream aborted: {reason}")
            if not self.link.closed:
                self.link.queue(encode_frame(FrameType.RESET, self.id, reason.encode()[:512]))
        self._wake()
        self.on_credit(0)
        self.link.forget(self)

    async def run_delivery(self) -> None:
        """Task: hand inbound bytes to ``deliver`` in order, then the end. Window
        credit goes back only for bytes ``deliver`` has consumed."""
        deliver = self.deliver
        assert deliver is not None
        link = self.link
        threshold = max(1, link.window // 2)
        inbound = self.inbound
        try:
            while True:
                if self.error is not None:
                    error = self.error
                    if isinstance(error, PipelineError):
                        return  # aborted from this side: nothing more to deliver
                    await deliver(StreamEnd(error))
                    return
                if inbound:
                    chunk = inbound.popleft()
                    self.inbound_bytes -= len(chunk)
                    await deliver(Data(chunk))
                    self.consumed += len(chunk)
                    if self.consumed >= threshold and not self.fin_received:
                        link.queue(encode_frame(_WINDOW, self.id, self.consumed.to_bytes(4, "big")))
                        self.consumed = 0
                    continue
                if self.fin_received:
                    await deliver(StreamEnd())
                    self._maybe_done(delivered=True)
                    return
                wakeup = self._wakeup = trio.Event()
                await wakeup.wait()
        except Exception as exc:  # the stream's pipeline failed: abort only it
            log.warning("smux stream %d failed: %r", self.id, exc)
            self.abort(f"receiver failed: {type(exc).__name__}")

    def _maybe_done(self, delivered: bool = False) -> None:
        if self.fin_sent and (delivered or (self.fin_received and not self.inbound)):
            self.link.forget(self)


class _Link:
    """The stream bookkeeping of one link, shared by both ends' filters."""

    def __init__(self, window: int, max_frame: int, odd: bool, ping_interval: float) -> None:
        self.window = window
        self.max_frame = max_frame
        self.ping_interval = ping_interval
        self.streams: dict[int, _Stream] = {}
        self.decoder = FrameDecoder(max(max_frame, 64 * 1024))
        self.next_id = 1 if odd else 2
        self.closed = False
        self.healthy = False  # a frame has arrived from the far end
        self.last_seen = trio.current_time()
        self.goaway = False
        self._out: list[bytes] = []
        self._out_ready: trio.Event | None = None
        self.on_open: Callable[[_Stream, dict[str, str]], None] | None = None
        self.on_close: Callable[[], None] | None = None

    # Writing: one writer task per link batches the frames of every stream. ----

    def queue(self, frame: bytes) -> None:
        if self.closed:
            return
        self._out.append(frame)
        ready = self._out_ready
        if ready is not None:
            self._out_ready = None
            ready.set()

    async def run_writer(self, write: Output) -> None:
        while not self.closed:
            if not self._out:
                ready = self._out_ready = trio.Event()
                await ready.wait()
                continue
            batch = self._out
            self._out = []
            await write(Data(batch[0] if len(batch) == 1 else b"".join(batch)))

    async def run_pinger(self, send_pings: bool = True) -> None:
        """Task: fail the link when nothing arrived for three intervals; the opening
        end also sends a ``PING`` every interval (the other end answers them, which
        keeps both ends' clocks fresh)."""
        interval = self.ping_interval
        while not self.closed:
            await trio.sleep(interval)
            if trio.current_time() - self.last_seen > 3 * interval:
                self.fail(LinkLost(f"nothing from the far end for {3 * interval:g}s"))
                return
            if send_pings:
                self.queue(encode_frame(FrameType.PING, 0, os.urandom(8)))

    # Reading ------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the far end: dispatch their frames (never blocks)."""
        try:
            frames = self.decoder.feed(data)
            for frame in frames:
                self._dispatch(frame)
        except ProtocolError as exc:
            log.warning("smux link protocol error: %s", exc)
            self.fail(LinkLost(f"protocol error: {exc}"))
            return
        if frames:
            self.healthy = True
            self.last_seen = trio.current_time()

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.type
        if kind is _DATA:
            stream = self.streams.get(frame.stream)
            if stream is not None:
                stream.on_data(frame.payload)
        elif kind is _WINDOW:
            stream = self.streams.get(frame.stream)
            if stream is not None:
                stream.on_credit(frame.increment)
        elif kind is FrameType.OPEN:
            if self.on_open is None:
                raise ProtocolError("OPEN from the accepting end")
            if frame.stream in self.streams:
                raise ProtocolError(f"OPEN of stream {frame.stream}, already open")
            stream = _Stream(self, frame.stream)
            self.streams[frame.stream] = stream
            self.on_open(stream, decode_metadata(frame.payload))
        elif kind is FrameType.FIN:
            stream = self.streams.get(frame.stream)
            if stream is not None:
                stream.on_fin()
        elif kind is FrameType.RESET:
            stream = self.streams.pop(frame.stream, None)
            if stream is not None:
                reason = frame.payload.decode("utf-8", "replace") or "reset by the far end"
                stream.on_error(StreamReset(reason))
        elif kind is FrameType.PING:
            self.queue(encode_frame(FrameType.PONG, 0, frame.payload))
        elif kind is FrameType.GOAWAY:
            self.goaway = True
        # PONG: its arrival refreshed last_seen; nothing else to do

    # Streams ------------------------------------------------------------------

    def open(self, metadata: dict[str, str]) -> _Stream:
        stream_id = self.next_id
        self.next_id += 2
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        self.queue(encode_frame(FrameType.OPEN, stream_id, encode_metadata(metadata)))
        return stream

    def forget(self, stream: _Stream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        stream._wake()

    def fail(self, error: BaseException) -> None:
        """The link is gone: every stream on it ends with ``error``."""
        if self.closed:
            return
        self.closed = True
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.on_error(error)
        ready = self._out_ready
        if ready is not None:
            ready.set()
        if self.on_close is not None:
            self.on_close()


# The near end ------------------------------------------------------------------


class _ClientLink(_Link):
    """A link opened by ``connect_smux``: a long-lived sub-pipeline of the link
    layout, whose input is our frames and whose output is the far end's."""

    def __init__(self, pool: LinkPool, layout: Layout, context: Context) -> None:
        super().__init__(pool.window, pool.max_frame, odd=True, ping_interval=pool.ping_interval)
        self.pool = pool
        nursery = service_nursery.get()
        if nursery is None:
            raise PipelineError("connect_smux needs the runtime's service nursery")
        self.pipeline = Pipeline(layout, context.child(), nursery, self._on_output)
        self.pipeline.start_task(self.run_writer, self.pipeline.input, name="smux link writer")
        self.pipeline.start_task(self.run_pinger, name="smux link pinger")
        # The first PING makes the far end answer at once: the link is known to work
        # (and the backoff reset) before any stream has data to send.
        self.queue(encode_frame(FrameType.PING, 0, os.urandom(8)))

    async def _on_output(self, event: Event) -> None:
        if type(event) is Data:
            was_healthy = self.healthy
            self.receive(event.data)
            if self.healthy and not was_healthy:
                self.pool.link_works()
        elif type(event) is StreamEnd:
            error = event.error
            self.fail(LinkLost(f"link closed: {error}" if error else "link closed by the far end"))

    def fail(self, error: BaseException) -> None:
        if self.closed:
            return
        if self.streams:
            log.warning("smux link failed with %d open streams: %s", len(self.streams), error)
        super().fail(error)
        self.pool.link_failed(self)
        self.pipeline.close()


class LinkPool:
    """The links of one ``connect_smux`` builder call (its shared state)."""

    def __init__(
        self,
        max_links: int,
        window: int,
        max_frame: int,
        ping_interval: float,
        reconnect_delay: float,
        max_reconnect_delay: float,
    ) -> None:
        self.max_links = max_links
        self.window = window
        self.max_frame = max_frame
        self.ping_interval = ping_interval
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.links: list[_ClientLink] = []
        self.opened = 0  # links opened so far (for tests and logs)
        self._delay = 0.0
        self._retry_at = 0.0

    async def link_for(self, layout: Layout, context: Context) -> _ClientLink:
        """The link a new stream goes on (opening one if there is room)."""
        for link in list(self.links):
            if link.pipeline.nursery.cancel_scope.cancel_called:
                # Its nursery is gone (the server is stopping, a test harness
                # ended): its tasks are dead, so is the link.
                link.fail(LinkLost("the link's nursery was cancelled"))
        links = [link for link in self.links if not link.closed and not link.goaway]
        if len(links) < self.max_links:
            wait = self._retry_at - trio.current_time()
            if wait > 0 and not any(link.healthy for link in links):
                await trio.sleep(wait)
                links = [link for link in self.links if not link.closed and not link.goaway]
            if len(links) < self.max_links:
                link = _ClientLink(self, layout, context)
                self.links.append(link)
                self.opened += 1
                return link
        return min(links, key=lambda link: len(link.streams))

    def link_works(self) -> None:
        self._delay = 0.0

    def link_failed(self, link: _ClientLink) -> None:
        if link in self.links:
            self.links.remove(link)
        if not link.healthy:
            self._delay = min(self.max_reconnect_delay, max(self.reconnect_delay, self._delay * 2))
            self._retry_at = trio.current_time() + self._delay

    def close(self) -> None:
        """Close every link (their streams fail)."""
        for link in list(self.links):
            link.fail(LinkLost("the link pool was closed"))


def _check_common(window: object, max_frame: object, ping_interval: object) -> None:
    for name, value in (("window", window), ("max_frame", max_frame)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1024:
            raise ValueError(f"{name} must be an int of at least 1024, got {value!r}")
        if value >= 2**31:
            raise ValueError(f"{name} must be below 2**31")
    if (
        isinstance(ping_interval, bool)
        or not isinstance(ping_interval, (int, float))
        or ping_interval <= 0
    ):
        raise ValueError(f"ping_interval must be a positive number, got {ping_interval!r}")


class ConnectSmux(Filter):
    """``connect_smux(metadata=None, max_links=4, ...)``: this stream over a shared link."""

    name = "connect_smux"
    joint = True

    def __init__(
        self,
        metadata: Callable[..., Any] | None = None,
        max_links: int = 4,
        window: int = DEFAULT_WINDOW,
        max_frame: int = DEFAULT_MAX_FRAME,
        ping_interval: float = 15.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        if metadata is not None and not callable(metadata):
            raise TypeError(f"metadata must be a function of the context, got {metadata!r}")
        if isinstance(max_links, bool) or not isinstance(max_links, int) or max_links < 1:
            raise ValueError(f"max_links must be a positive int, got {max_links!r}")
        _check_common(window, max_frame, ping_interval)
        if not 0 < reconnect_delay <= max_reconnect_delay:
            raise ValueError("need 0 < reconnect_delay <= max_reconnect_delay")
        self._metadata = as_async(metadata) if metadata is not None else None
        self._stream: _Stream | None = None
        self._ended = False

    @classmethod
    def shared(
        cls,
        metadata: Callable[..., Any] | None = None,
        max_links: int = 4,
        window: int = DEFAULT_WINDOW,
        max_frame: int = DEFAULT_MAX_FRAME,
        ping_interval: float = 15.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
    ) -> LinkPool:
        return LinkPool(
            max_links, window, max_frame, ping_interval, reconnect_delay, max_reconnect_delay
        )

    @property
    def pool(self) -> LinkPool:
        pool: LinkPool = self.spec.state
        return pool

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        stream = self._stream
        if stream is None:
            stream = await self._open()
            if stream is None:
                return
        kind = type(event)
        if kind is Data:
            await stream.send(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            error = event.error  # type: ignore[union-attr]
            if error is None:
                stream.finish()
            else:
                stream.abort(f"{type(error).__name__}: {error}")
                self._ended = True
                await self.output(StreamEnd(error))

    async def _open(self) -> _Stream | None:
        fn = self._metadata
        ctx = self.pipeline.context
        metadata: dict[str, str] = {}
        if fn is not None:
            value = await fn(ctx)
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise PipelineError(f"connect_smux metadata must be a dict of str, got {value!r}")
            metadata = value
        link = await self.pool.link_for(self.sub_layout, ctx)
        stream = self._stream = link.open(metadata)
        stream.deliver = self._deliver
        self.pipeline.start_task(stream.run_delivery, name=f"smux stream {stream.id}")
        return stream

    async def _deliver(self, event: Event) -> None:
        if type(event) is StreamEnd:
            self._ended = True
        await self.output(event)

    def close(self) -> None:
        stream = self._stream
        if stream is not None and not (stream.fin_sent and stream.fin_received):
            stream.abort("stream closed")


# The far end -------------------------------------------------------------------


class AcceptSmux(Filter):
    """``accept_smux(window=262144, max_streams=10000, ...)``: streams from a link."""

    name = "accept_smux"
    joint = True

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_streams: int = 10000,
        ping_interval: float = 15.0,
        drain_timeout: float = 5.0,
    ) -> None:
        _check_common(window, max_frame, ping_interval)
        if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)):
            raise TypeError(f"drain_timeout must be a number of seconds, got {drain_timeout!r}")
        self.drain_timeout = float(drain_timeout)
        if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 1:
            raise ValueError(f"max_streams must be a positive int, got {max_streams!r}")
        self.window = window
        self.max_frame = max_frame
        self.max_streams = max_streams
        self.ping_interval = ping_interval
        self._link: _Link | None = None
        self._ended = False
        self._serving = 0  # streams whose sub-pipeline is still running
        self._all_served: trio.Event | None = None
        self._notice = shutdown_notice.get()

    def _start(self) -> _Link:
        link = self._link = _Link(
            self.window, self.max_frame, odd=False, ping_interval=self.ping_interval
        )
        link.on_open = self._on_open
        self.pipeline.start_task(link.run_writer, self.output, name="smux link writer")
        self.pipeline.start_task(link.run_pinger, False, name="smux link watchdog")
        notice = self._notice
        if notice is not None:
            if notice.started:
                self._on_shutdown()
            else:
                notice.subscribe(self._on_shutdown)
        return link

    def _on_shutdown(self) -> None:
        """The server is stopping: ``GOAWAY`` (the near end opens no more streams
        here), and the link ends once its streams have, so an idle link does not
        hold the server for its whole grace period."""
        link = self._link
        if link is not None and not link.closed:
            link.queue(encode_frame(FrameType.GOAWAY, 0, b"the server is shutting down"))
            self.pipeline.start_task(self._close_when_served, name="smux link drain")

    async def _all_streams_served(self) -> None:
        """Return once no stream's pipeline runs (the waiters share one event)."""
        while self._serving:
            all_served = self._all_served
            if all_served is None or all_served.is_set():
                all_served = self._all_served = trio.Event()
            await all_served.wait()

    async def _close_when_served(self) -> None:
        await self._all_streams_served()
        link = self._link
        if link is not None and not link.closed and not self._ended:
            self._ended = True
            link.fail(LinkLost("the server is shutting down"))
            await self.output(StreamEnd())

    async def on_event(self, event: Event) -> None:
        link = self._link or self._start()
        kind = type(event)
        if kind is Data:
            link.receive(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd and not self._ended:
            self._ended = True
            error = event.error  # type: ignore[union-attr]
            if link.streams:
                log.warning(
                    "smux link from %s ended with %d open streams",
                    self.pipeline.context.remote,
                    len(link.streams),
                )
            link.fail(LinkLost(f"link closed: {error}" if error else "link closed by the far end"))
            await self._drain()
            await self.output(StreamEnd())
        if link.closed and not self._ended:
            self._ended = True  # a protocol error: drop the link
            await self.output(StreamEnd(LinkLost("smux protocol error")))

    def _on_open(self, stream: _Stream, metadata: dict[str, str]) -> None:
        link = self._link
        assert link is not None
        if len(link.streams) > self.max_streams:
            stream.abort("too many streams")
            return
        context = self.pipeline.context.child()
        context.set(**metadata)

        async def output(event: Event) -> None:
            kind = type(event)
            if kind is Data:
                await stream.send(event.data)  # type: ignore[union-attr]
            elif kind is StreamEnd:
                error = event.error  # type: ignore[union-attr]
                if error is None:
                    stream.finish()
                else:
                    stream.abort(f"{type(error).__name__}: {error}")

        sub = self.pipeline.sub(self.sub_layout, output, context=context)
        stream.deliver = sub.input
        self.pipeline.start_task(self._serve, stream, sub, name=f"smux stream {stream.id}")

    async def _drain(self) -> None:
        """Let every stream's pipeline take in its end (``StreamEnd(LinkLost)``) before
        the link's pipeline ends and cancels them: a gateway may have something to
        say on the way out (``track_mqtt_session`` sends DISCONNECT)."""
        with trio.move_on_after(self.drain_timeout):
            await self._all_streams_served()

    async def _serve(self, stream: _Stream, sub: Pipeline) -> None:
        self._serving += 1
        try:
            await stream.run_delivery()
            # Keep the sub-pipeline until both directions are over.
            while not sub.closed and stream.link.streams.get(stream.id) is stream:
                wakeup = stream._wakeup = trio.Event()
                await wakeup.wait()
        finally:
            sub.close()
            self._serving -= 1
            if not self._serving and self._all_served is not None:
                self._all_served.set()

    def close(self) -> None:
        if self._notice is not None:
            self._notice.unsubscribe(self._on_shutdown)
        link = self._link
        if link is not None:
            link.fail(LinkLost("the link's pipeline closed"))


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [ConnectSmux, AcceptSmux]
