"""A reverse proxy for WebSocket applications that reads every frame.

Requests to ``LISTEN`` go to one of ``UPSTREAMS`` (round-robin, over pooled
keep-alive connections), as with ``scripts/reverse_proxy.py``. A WebSocket
upgrade goes on an upstream connection of its own; after the ``101`` the frames
are decoded both ways (``decode_websocket``/``encode_websocket`` around
``mux_http``, see "Inspecting frames" in docs/http.md) instead of being relayed
as bytes, so that:

* a frame over ``MAX_FRAME_SIZE`` or a fragmented message over
  ``MAX_MESSAGE_SIZE`` is answered with close code 1009, a text message that is
  not UTF-8 with 1007, a frame that breaks RFC 6455 with 1002. The bad side's
  frames stop there: the other side is sent the close frame, and its echo goes
  back to the bad side, who then sees the connection end;
* every frame can be logged (``LOG_FRAMES=yes``: one line per frame on the
  ``trioxy.websocket`` logger, its direction, opcode, FIN bit and size);
* when a WebSocket ends, one line says what went through it: frames and payload
  bytes each way, and the close codes, e.g.
  ``websocket /chat from 127.0.0.1:50312: client 12 frames 3410 bytes (close
  1000), server 12 frames 3410 bytes (close 1000)``.

Frames pass as they came (fragmentation, control frames between fragments and
extensions such as permessage-deflate are kept; sizes count the bytes on the
wire). Requests that are not upgrades are proxied as plain HTTP.

Run it::

    UPSTREAMS=127.0.0.1:9000 LOG_FRAMES=yes trioxy run scripts/websocket_proxy.py

then point a WebSocket client at ``ws://127.0.0.1:8080/``.

Environment variables (a bad value stops the script at load with one line
``websocket_proxy.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``            where to listen; default ``127.0.0.1:8080``
``UPSTREAMS``         comma-separated ``host:port`` of the application servers;
                      default ``127.0.0.1:8081``
``MAX_FRAME_SIZE``    bytes of payload one frame may carry; default ``1048576``
``MAX_MESSAGE_SIZE``  bytes of payload a fragmented message may carry in all,
                      or ``none``; default ``none``
``LOG_FRAMES``        ``yes`` to log every frame, ``no``; default ``no``
``CONNECT_TIMEOUT``   seconds to connect to an upstream; default ``5``
``IDLE_TIMEOUT``      seconds with nothing moving before a connection (client or
                      upstream) is closed, or ``none``; default ``300`` (a
                      WebSocket may be quiet for a while: the application's
                      pings keep it open)
"""

from __future__ import annotations

import logging

from filters.balance import RoundRobin
from pipeline import Builder, Context, Proxy
from pipeline.settings import address, count, optional, seconds, setting
from protocols.websocket import FrameHead, Opcode, parse_close

log = logging.getLogger("trioxy.websocket")


def yes_no(text: str) -> bool:
    if text.lower() in ("yes", "true", "1", "on"):
        return True
    if text.lower() in ("no", "false", "0", "off"):
        return False
    raise ValueError("expected yes or no")


def upstreams(text: str) -> RoundRobin:
    targets = [address(part.strip()) for part in text.split(",") if part.strip()]
    if not targets:
        raise ValueError("expected at least one host:port")
    return RoundRobin(targets)


LISTEN = setting("LISTEN", "127.0.0.1:8080", address)
BACKENDS = setting("UPSTREAMS", "127.0.0.1:8081", upstreams)
MAX_FRAME_SIZE = setting("MAX_FRAME_SIZE", "1048576", count)
MAX_MESSAGE_SIZE = setting("MAX_MESSAGE_SIZE", "none", optional(count))
LOG_FRAMES = setting("LOG_FRAMES", "no", yes_no)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "300", optional(seconds))


class Tally:
    """What one side of a WebSocket sent (frames, payload bytes, its close code),
    counted as the frames pass: an HTTP body between the same filters is never
    held whole."""

    __slots__ = ("bytes", "close", "close_payload", "frame", "frames", "side")

    def __init__(self, side: str) -> None:
        self.side = side
        self.frames = 0
        self.bytes = 0
        self.close: int | None = None
        self.frame: FrameHead | None = None  # the frame passing now
        self.close_payload = b""

    def __str__(self) -> str:
        close = "no close" if self.close is None else f"close {self.close}"
        return f"{self.frames} frames {self.bytes} bytes ({close})"

    @staticmethod
    def of(ctx: Context, side: str) -> Tally:
        tally: Tally | None = ctx.get(side)
        if tally is None:
            tally = Tally(side)
            ctx.set(**{side: tally})
        return tally

    def start(self, head: object) -> None:
        self.frame = head if type(head) is FrameHead else None
        if self.frame is not None:
            self.frames += 1
            self.close_payload = b""

    def data(self, data: bytes) -> None:
        frame = self.frame
        if frame is not None:
            self.bytes += len(data)
            if frame.opcode is Opcode.CLOSE:
                self.close_payload += data  # (125 bytes at most: a control frame)

    def end(self, ctx: Context) -> None:
        frame, self.frame = self.frame, None
        if frame is None:
            return
        if frame.opcode is Opcode.CLOSE:
            try:
                self.close = parse_close(self.close_payload).code
            except ValueError:
                pass  # the decoder answers a bad close frame itself
        if LOG_FRAMES:
            log.info(
                "websocket %s: %s %s%s",
                ctx.get("path", "?"),
                self.side,
                frame.opcode.name,
                "" if frame.fin else " (more to come)",
            )


def counted(p: Builder, side: str) -> Builder:
    """Count (and log) ``side``'s frames as they pass."""

    def frame_start(ctx: Context, head: object) -> None:
        Tally.of(ctx, side).start(head)

    def frame_data(ctx: Context, data: bytes) -> None:
        Tally.of(ctx, side).data(data)

    def frame_end(ctx: Context, tail: object) -> None:
        Tally.of(ctx, side).end(ctx)

    return p.handle_message_start(frame_start).handle_data(frame_data).handle_message_end(frame_end)


def remember_path(ctx: Context, head: object) -> None:
    ctx.set(path=getattr(head, "target", "?"))


def summary(ctx: Context, error: BaseException | None) -> None:
    client, server = ctx.get("client"), ctx.get("server")
    if not (client and client.frames) and not (server and server.frames):
        return  # not a WebSocket (or one that never carried a frame)
    host, port = ctx.remote or ("?", 0)
    log.info(
        "websocket %s from %s:%s: client %s, server %s%s",
        ctx.get("path", "?"),
        host,
        port,
        client or Tally("client"),
        server or Tally("server"),
        "" if error is None else f", ended by {type(error).__name__}: {error}",
    )


def upstream(s: Builder) -> None:
    s.connect(BACKENDS, connect_timeout=CONNECT_TIMEOUT, idle_timeout=IDLE_TIMEOUT)


def forward(p: Builder) -> None:
    """One request; after a 101, its frames both ways."""
    limits = {"max_frame_size": MAX_FRAME_SIZE, "max_message_size": MAX_MESSAGE_SIZE}
    (
        counted(
            p.handle_message_start(remember_path).decode_websocket("server", **limits),
            "client",  # the client's frames, after the upgrade
        )
        .encode_websocket("client")
        .balance(BACKENDS)
        .mux_http(max_idle=IDLE_TIMEOUT)
        .to(upstream)
    )
    (
        counted(p.decode_websocket("client", **limits), "server")  # after the 101
        .encode_websocket("server")
        .handle_stream_end(summary)
    )


proxy = Proxy()
proxy.listen(LISTEN, idle_timeout=IDLE_TIMEOUT).demux_http().to(forward)
