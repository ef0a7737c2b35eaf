"""WebSocket filters: frames as messages, for proxies that look at (or rewrite)
what passes in a WebSocket.

A frame is a message: ``MessageStart(FrameHead)``, then one ``Data(payload)``
(none for an empty payload), then ``MessageEnd()``. The head is a frozen
:class:`protocols.websocket.FrameHead`: ``opcode`` (``Opcode.TEXT``,
``BINARY``, ``CONTINUATION``, ``CLOSE``, ``PING``, ``PONG``), ``fin``, ``rsv``
(the three RSV bits) and ``masked``. Frames are not messages of the WebSocket
API: a fragmented message is several frames, kept as they came (the first with
``TEXT`` or ``BINARY`` and ``fin=False``, then ``CONTINUATION`` frames, the last
with ``fin=True``), so a proxy re-emits exactly the framing it received, with
control frames where they were. Control frames pass as messages too;
:func:`protocols.websocket.parse_close` reads a close frame's code and reason.
The payload that counts is the one in the ``Data`` events: ``replace_data``
may rewrite it.

==========================================  ==========================================
builder method                              what it does
==========================================  ==========================================
``decode_websocket(role="server")``         bytes -> frame messages (``"server"``:
                                            what a client sends, masked;
                                            ``"client"``: what a server sends)
``encode_websocket(role="client")``         frame messages -> bytes (``"client"``
                                            masks each frame with a fresh key;
                                            ``"server"`` does not); answers a
                                            decoding error with a close frame
==========================================  ==========================================

The defaults make the client-to-server half of a relay:
``decode_websocket().encode_websocket().connect(SERVER)``; the server-to-client
half, after ``connect``, is ``decode_websocket(role="client")
.encode_websocket(role="server")``.

The opening handshake. ``handshake=True`` makes the decoder pass the HTTP/1.1
handshake through untouched before it decodes frames, so the filters work in a
plain L4 relay (a listener that does not speak HTTP): with ``role="server"`` it
passes the client's request head and decodes frames after it if the request
asks for ``Upgrade: websocket`` (a client sends frames only after the 101, and
a relay cannot see the 101 on this side); with ``role="client"`` it passes the
server's response heads and decodes frames after a ``101``. Anything else (not
an upgrade, a refusal, a head over 64 KiB) makes the decoder pass every byte
through as it is for the rest of the stream: it is not a WebSocket. The
encoder passes ``Data`` outside a message through as it is.

Under ``demux_http`` (around ``mux_http``, one pair per direction), the events
are HTTP messages, and they pass through both filters untouched: a request's
body or a refusal's is never read as frames. The decoder facing the client
decodes the ``Data`` after an upgrade request's ``MessageEnd``; the decoder
facing the server, after a ``101`` head, outputs that head and its
``MessageEnd`` at once, then the frames of the 101's body, and ends the stream
when the 101 ends (the server's EOF). The encoder facing the client holds a
101's ``MessageEnd`` and writes the frames as its body, which it ends before
the stream's end. See "Inspecting frames" in docs/http.md.

Errors. A frame that breaks RFC 6455 (a reserved opcode, an unmasked frame
from a client or a masked one from a server, a control frame fragmented or over
125 bytes, a continuation without a message, a close frame with a bad code),
a text message that is not UTF-8 (``validate_utf8=True``) or a frame or message
over ``max_frame_size`` / ``max_message_size`` makes the decoder output the
frames before it, log one line on the ``trioxy.websocket`` logger, and end the
stream with ``StreamEnd(error)``: a :class:`protocols.websocket.ProtocolError`
(``code`` 1002), ``InvalidPayload`` (1007) or ``MessageTooBig`` (1009). The
close frame is written by the encoder that receives that ``StreamEnd`` (as an
HTTP response encoder answers 400): it writes a close frame with the code and
a short reason, in its own role, then ends the stream cleanly (``StreamEnd()``:
a half-close, so the close frame is not lost to a reset). A filter in the middle
of a pipeline can only write in the direction of its events: in a relay the
decoder of the client's frames is followed by the encoder facing the server,
so the server is told, and a server such as the ``websockets`` library echoes
the close frame back, which the client then receives with the same code; the
decoder of the server's frames is followed by the encoder facing the client.
A close frame that interrupts a fragmented message (its first frames passed)
may be answered with the receiver's own 1002 instead (``websockets`` does: that
message can no longer end); a truncated message is never completed. Other
errors (a failed ``connect``...) pass through the encoder unanswered.

Example (runnable): the client-to-server half of a WebSocket relay that
records every frame, checked here in memory with frames made by our codec::

    import trio
    from pipeline import Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout
    from protocols.websocket import Decoder, FrameHead, Opcode, encode_frame, parse_close

    seen = []

    def record(ctx, head, payload):
        seen.append((head.opcode.name, head.fin, payload))

    proxy = Proxy()
    (proxy.pipeline("ws")
        .decode_websocket(role="server", max_frame_size=1024)
        .handle_message(record)
        .encode_websocket(role="client"))         # then .connect("SERVER:PORT")

    wire = encode_frame(FrameHead(Opcode.TEXT, fin=False), b"hel", mask=True)
    wire += encode_frame(FrameHead(Opcode.CONTINUATION), b"lo", mask=True)
    wire += encode_frame(FrameHead(Opcode.BINARY), b"x" * 2000, mask=True)
    out = trio.run(run_layout, proxy.layout("ws"), [wire, StreamEnd()])
    assert seen == [("TEXT", False, b"hel"), ("CONTINUATION", True, b"lo")]
    frames = Decoder(role="server").feed(join_data(out))  # what the server gets
    assert [(h.opcode, h.fin, p) for h, p in frames[:2]] == [
        (Opcode.TEXT, False, b"hel"), (Opcode.CONTINUATION, True, b"lo")]
    assert parse_close(frames[2][1]).code == 1009     # the 2000-byte frame: too big
"""

from __future__ import annotations

import logging
from typing import Literal

from pipeline.address import format_address
from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import RequestHead, ResponseHead
from protocols.websocket import (
    DEFAULT_MAX_FRAME_SIZE,
    Decoder,
    FrameHead,
    Opcode,
    ProtocolError,
    encode_frame,
    error_close_payload,
)
from protocols.websocket.handshake import MAX_HEAD_SIZE, is_upgrade, parse_head, split_head

__all__ = ["DecodeWebSocket", "EncodeWebSocket"]

log = logging.getLogger("trioxy.websocket")

_END = MessageEnd()
_CLOSE = FrameHead(Opcode.CLOSE)

# Decoder modes.
_HANDSHAKE = 0  # reading an HTTP head, passed through once complete
_FRAMES = 1
_RAW = 2  # not a WebSocket: every byte passes as it is
_FAILED = 3  # the stream ended (a protocol error, a 101's end): nothing more passes
_MESSAGE = 4  # inside an HTTP message (under demux_http/mux_http): passed as it is


def _role(value: object) -> Literal["server", "client"]:
    if value == "server":
        return "server"
    if value == "client":
        return "client"
    raise ValueError(f"role must be 'server' or 'client', got {value!r}")


def _size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
    return value


class DecodeWebSocket(Filter):
    """``decode_websocket(role="server", handshake=False, max_frame_size=1 MiB,
    max_message_size=None, validate_utf8=True)``: bytes to frame messages.

    ``role="server"`` decodes what a client sends (frames must be masked);
    ``role="client"`` what a server sends (frames must not be). ``handshake``:
    pass the HTTP/1.1 opening handshake through first (see the module docs).
    ``max_frame_size`` bounds one data frame's payload (the decoder holds one
    frame at a time), ``max_message_size`` the payloads of a fragmented
    message's frames together (``None``: no bound); both count the bytes on the
    wire (compressed, under permessage-deflate) and answer 1009.
    ``validate_utf8``: end the stream with 1007 on a text message that is not
    UTF-8 (one whose first frame has an RSV bit set is not checked: an
    extension transformed it).
    """

    name = "decode_websocket"

    def __init__(
        self,
        role: Literal["server", "client"] = "server",
        *,
        handshake: bool = False,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_message_size: int | None = None,
        validate_utf8: bool = True,
    ) -> None:
        self.role = _role(role)
        self.handshake = bool(handshake)
        self.max_frame_size = _size("max_frame_size", max_frame_size)
        self.max_message_size = (
            None if max_message_size is None else _size("max_message_size", max_message_size)
        )
        self.validate_utf8 = bool(validate_utf8)
        self._mode = _HANDSHAKE if handshake else _FRAMES
        self._held = b""  # an incomplete handshake head
        self._decoder: Decoder | None = None
        self._http_head: RequestHead | ResponseHead | None = None

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is Data:
            mode = self._mode
            if mode == _FRAMES:
                await self._frames(event.data)  # type: ignore[union-attr]
            elif mode == _RAW or mode == _MESSAGE:
                await self.output(event)
            elif mode == _HANDSHAKE:
                await self._handshake(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            if self._mode == _FAILED:
                return  # the stream already ended, with the error
            if self._held:
                held, self._held = self._held, b""
                await self.output(Data(held))
            await self.output(event)
        elif self._mode != _FAILED:
            await self._http_message(event)

    async def _http_message(self, event: Event) -> None:
        """Message events: HTTP messages, under ``demux_http``/``mux_http``, pass
        through; frames follow an upgrade request's end, or a ``101``'s head
        (whose ``MessageEnd`` is passed at once: the frames are messages of
        their own; the 101's end, the server's EOF, ends the stream). Any other
        message event carries nothing in a byte stream: dropped."""
        if type(event) is MessageEnd:
            if self._mode == _FRAMES and self._http_head is not None:
                # The 101's end: the server's EOF, which ends the WebSocket (the
                # stream's own end, when it comes, has nothing left to say).
                self._mode = _FAILED
                await self.output(StreamEnd())
                return
            if self._mode == _MESSAGE:
                await self.output(event)
                head = self._http_head
                if type(head) is RequestHead and self.role == "server":
                    upgrade = head.method == "GET" and is_upgrade(head.headers)
                    self._mode = _FRAMES if upgrade else _RAW
                else:
                    self._mode = _RAW
            return
        head = event.head  # type: ignore[union-attr]
        if type(head) is not RequestHead and type(head) is not ResponseHead:
            return
        self._http_head = head
        await self.output(event)
        if (
            type(head) is ResponseHead
            and self.role == "client"
            and head.status == 101
            and is_upgrade(head.headers)
        ):
            await self.output(_END)
            self._mode = _FRAMES
        else:
            self._mode = _MESSAGE

    async def _frames(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = Decoder(
                self.role,
                max_frame_size=self.max_frame_size,
                max_message_size=self.max_message_size,
                validate_utf8=self.validate_utf8,
            )
        try:
            frames = decoder.feed(data)
        except ProtocolError as exc:
            self._mode = _FAILED
            await self._output_frames(exc.frames)
            log.warning(
                "%s: WebSocket %s, closing with %s: %s",
                self._peer(),
                "from the client" if self.role == "server" else "from the server",
                exc.code,
                exc.message,
            )
            await self.output(StreamEnd(exc))
            return
        await self._output_frames(frames)

    async def _output_frames(self, frames: list[tuple[FrameHead, bytes]]) -> None:
        output = self.output
        for head, payload in frames:
            await output(MessageStart(head))
            if payload:
                await output(Data(payload))
            await output(_END)

    async def _handshake(self, data: bytes) -> None:
        """Pass HTTP heads through until the one after which frames follow."""
        buf = self._held + data if self._held else data
        while self._mode == _HANDSHAKE:
            end = split_head(buf)
            if end < 0:
                if len(buf) > MAX_HEAD_SIZE:
                    self._mode = _RAW  # not an HTTP head we can read: not ours
                    break
                self._held = buf
                return
            head, buf = buf[:end], buf[end:]
            self._mode = self._after_head(head)
            await self.output(Data(head))
        self._held = b""
        if not buf:
            return
        if self._mode == _FRAMES:
            await self._frames(buf)
        else:
            await self.output(Data(buf))

    def _after_head(self, head: bytes) -> int:
        """The mode after an HTTP head: frames, another head, or raw bytes."""
        line, headers = parse_head(head)
        if self.role == "server":
            method = line.partition(" ")[0]
            return _FRAMES if method == "GET" and is_upgrade(headers) else _RAW
        parts = line.split(" ", 2)
        status = parts[1] if len(parts) > 1 else ""
        if status == "101":
            return _FRAMES if is_upgrade(headers) else _RAW
        if len(status) == 3 and status.startswith("1") and status.isdigit():
            return _HANDSHAKE  # an interim response: the answer is still to come
        return _RAW

    def _peer(self) -> str:
        ctx = self.pipeline.context
        if self.role == "client":
            return str(ctx.get("upstream") or "server")
        remote = ctx.remote
        return format_address(*remote) if remote else "client"


class EncodeWebSocket(Filter):
    """``encode_websocket(role="client")``: frame messages to bytes, each frame as
    its head says (opcode, FIN, RSV bits), with the payload of its ``Data``
    events. ``role="client"`` masks every frame with a fresh random key (RFC
    6455 5.3), ``role="server"`` masks none. ``Data`` outside a message passes
    as it is (a handshake on its way). ``StreamEnd`` with a
    :class:`protocols.websocket.ProtocolError` is answered with a close frame
    carrying its code (unless a close frame was already written), then the
    stream ends cleanly; see the module docs. A head that is not a
    ``FrameHead``, or a control frame over 125 bytes, is a
    :class:`~pipeline.errors.PipelineError`.
    """

    name = "encode_websocket"

    def __init__(self, role: Literal["server", "client"] = "client") -> None:
        self.role = _role(role)
        self._mask = self.role == "client"
        self._head: FrameHead | None = None
        self._chunks: list[bytes] = []
        self._closed = False  # a close frame was written
        self._passing = False  # inside an HTTP message: passed as it is
        self._switching = False  # that message is a 101: its end is held
        self._held_end = False  # a 101's end, written when the stream ends

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is MessageStart:
            head = event.head  # type: ignore[union-attr]
            if type(head) is not FrameHead:
                self._http_start(head)
                await self.output(event)
                return
            self._head = head
        elif kind is Data:
            if self._head is not None:
                self._chunks.append(event.data)  # type: ignore[union-attr]
            else:
                await self.output(event)
        elif kind is MessageEnd:
            if self._passing:
                self._passing = False
                if self._switching:
                    self._held_end = True  # the frames after it are the 101's body
                    return
                await self.output(event)
                return
            head, self._head = self._head, None
            if head is None:
                return
            chunks, self._chunks = self._chunks, []
            payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            try:
                wire = encode_frame(head, payload, mask=self._mask)
            except ValueError as exc:
                raise PipelineError(f"encode_websocket: {exc}") from None
            if head.opcode is Opcode.CLOSE:
                self._closed = True
            await self.output(Data(wire))
        else:
            error = event.error  # type: ignore[union-attr]
            if isinstance(error, ProtocolError) and not self._closed:
                answer = error_close_payload(error)
                if answer is not None:
                    self._closed = True
                    self._head, self._chunks = None, []  # an unfinished frame is dropped
                    await self.output(Data(encode_frame(_CLOSE, answer, mask=self._mask)))
                    await self._end_held()
                    await self.output(StreamEnd())
                    return
            if error is None:
                await self._end_held()
            await self.output(event)

    def _http_start(self, head: object) -> None:
        """An HTTP message (under ``demux_http``/``mux_http``) passes as it is; a
        ``101``'s end is held until the stream ends, so that the frames between
        are written as its body."""
        if type(head) is not RequestHead and type(head) is not ResponseHead:
            raise PipelineError(
                "encode_websocket: a message head must be a FrameHead "
                f"(or an HTTP head, passed as it is), got {head!r}"
            )
        if self._head is not None:
            raise PipelineError("encode_websocket: an HTTP message inside a frame")
        self._passing = True
        self._switching = type(head) is ResponseHead and head.status == 101

    async def _end_held(self) -> None:
        if self._held_end:
            self._held_end = False
            await self.output(_END)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [DecodeWebSocket, EncodeWebSocket]
