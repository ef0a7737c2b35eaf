"""``decode_websocket`` / ``encode_websocket``: in memory with frames of our codec,
then end to end over loopback sockets in an L4 relay between a ``websockets``
client and a ``websockets`` server (the library's sync API, in threads beside
trio); a raw socket speaks where a broken peer is needed, with the handshake
done by the library's sans-IO protocol."""

from __future__ import annotations

import importlib
import logging
import queue
import re
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.datastructures import Headers as WsHeaders
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve
from websockets.uri import parse_uri

from pipeline import ConfigError, Data, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.errors import ConnectRefused, PipelineError
from pipeline.events import Event
from pipeline.runtime import Server, serve
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.http import Headers, RequestHead, ResponseHead
from protocols.websocket import (
    Close,
    Decoder,
    FrameHead,
    HandshakeError,
    InvalidPayload,
    MessageTooBig,
    Opcode,
    ProtocolError,
    close_payload,
    encode_frame,
    parse_close,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "websocket.md"
TIMEOUT = 10.0

Frames = list[tuple[FrameHead, bytes]]
TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
PING, PONG, CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE


def masked(*frames: tuple[FrameHead, bytes]) -> bytes:
    return b"".join(encode_frame(h, p, mask=True) for h, p in frames)


def plain(*frames: tuple[FrameHead, bytes]) -> bytes:
    return b"".join(encode_frame(h, p) for h, p in frames)


def messages(out: list[Event]) -> Frames:
    """The frame messages among ``out`` as ``(head, payload)``, checking their shape:
    one Data at most, none for an empty payload."""
    frames: Frames = []
    head: FrameHead | None = None
    body: list[bytes] = []
    for event in out:
        if isinstance(event, MessageStart):
            head, body = event.head, []
        elif isinstance(event, Data) and head is not None:
            body.append(event.data)
        elif isinstance(event, MessageEnd):
            assert head is not None and len(body) <= 1 and all(body)
            frames.append((head, b"".join(body)))
            head = None
    return frames


def layout(**decode: Any) -> Any:
    return Proxy().pipeline("ws").decode_websocket(**decode).encode_websocket()


# Docstrings and the guide ------------------------------------------------------------


def test_module_example_runs() -> None:
    doc = importlib.import_module("filters.websocket").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/websocket.py example", "exec"), {})


#: A ```python block right after a line ``<!-- runnable -->``.
RUNNABLE = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```", re.S | re.M)


def test_the_guide_examples_run() -> None:
    text = DOC.read_text()
    blocks = [(text.count("\n", 0, m.start(1)), m.group(1)) for m in RUNNABLE.finditer(text)]
    assert blocks
    for offset, code in blocks:
        # Padded with blank lines so a failure points at the line in docs/websocket.md.
        exec(compile("\n" * offset + code, str(DOC), "exec"), {"__name__": "docs_ws_example"})


# In memory: decoding and encoding ---------------------------------------------------------


async def test_frames_become_messages_and_go_back_as_they_came() -> None:
    frames: Frames = [
        (FrameHead(TEXT, False), b"hel"),
        (FrameHead(PING), b""),
        (FrameHead(CONT, False), b"l"),
        (FrameHead(CONT), b"o"),
        (FrameHead(BINARY, rsv=4), b"\x00deflated?"),
        (FrameHead(PONG), b"p"),
        (FrameHead(CLOSE), close_payload(1000, "done")),
    ]
    out = await run_layout(
        Proxy().pipeline("s2c").decode_websocket("client").encode_websocket("server"),
        [plain(*frames[:3]), plain(*frames[3:]), StreamEnd()],
    )
    # The server's frames, decoded and encoded again (unmasked): the same bytes.
    assert join_data(out) == plain(*frames)
    assert out[-1] == StreamEnd()
    seen = await run_layout(Proxy().pipeline("d").decode_websocket("client"), [plain(*frames)])
    assert messages(seen) == frames
    assert [e for e in seen if isinstance(e, MessageStart)][1].head == FrameHead(PING)
    assert len([e for e in seen if isinstance(e, Data)]) == 6  # none for the empty ping


async def test_client_frames_are_masked_again_with_fresh_keys() -> None:
    frames: Frames = [(FrameHead(TEXT), b"same"), (FrameHead(TEXT), b"same")]
    out = await run_layout(layout(), [masked(*frames)])
    wire = join_data(out)
    assert Decoder("server").feed(wire) == [(FrameHead(TEXT, masked=True), b"same")] * 2
    assert wire[2:6] != wire[12:16]  # two keys (equal with odds of 2**-32)


async def test_a_payload_rewritten_by_replace_data_is_encoded() -> None:
    proxy = Proxy()
    (
        proxy.pipeline("up")
        .decode_websocket()
        .replace_data(lambda ctx, data: data.upper() * 100)
        .encode_websocket("server")
    )
    out = await run_layout(proxy.layout("up"), [masked((FrameHead(TEXT), b"abc"))])
    assert Decoder("client").feed(join_data(out)) == [(FrameHead(TEXT), b"ABC" * 100)]


# In memory: the handshake ------------------------------------------------------------------

REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def test_the_request_head_passes_untouched_then_frames() -> None:
    frame = masked((FrameHead(TEXT), b"hi"))
    wire = REQUEST + frame
    # Cut inside the head, and with the first frame in the head's last chunk.
    pieces = [wire[:10], wire[10:-3], wire[-3:]]
    decode = Proxy().pipeline("d").decode_websocket(handshake=True)
    out = await run_layout(decode, pieces)
    assert out[0] == Data(REQUEST)
    assert messages(out) == [(FrameHead(TEXT, masked=True), b"hi")]
    out = await run_layout(layout(handshake=True), pieces)
    assert out[0] == Data(REQUEST)
    assert Decoder("server").feed(join_data(out)[len(REQUEST) :]) == [
        (FrameHead(TEXT, masked=True), b"hi")
    ]


async def test_the_response_heads_pass_untouched_then_frames() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    frame = plain((FrameHead(BINARY), b"\x01"))
    proxy = Proxy()
    proxy.pipeline("s2c").decode_websocket("client", handshake=True).encode_websocket("server")
    proxy.pipeline("d").decode_websocket("client", handshake=True)
    pieces = [interim + RESPONSE[:5], RESPONSE[5:] + frame]
    out = await run_layout(proxy.layout("d"), pieces)
    assert out[:2] == [Data(interim), Data(RESPONSE)]
    assert messages(out) == [(FrameHead(BINARY), b"\x01")]
    out = await run_layout(proxy.layout("s2c"), pieces)
    assert join_data(out) == interim + RESPONSE + frame


@pytest.mark.parametrize(
    ("role", "wire"),
    [
        ("server", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("server", b"POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81"),
        ("client", b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"),
        ("client", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00"),
        ("server", b"x" * 70000),
    ],
)
async def test_what_is_not_a_websocket_passes_as_it_is(role: str, wire: bytes) -> None:
    proxy = Proxy()
    proxy.pipeline("p").decode_websocket(role, handshake=True)
    out = await run_layout(proxy.layout("p"), [wire[:20], wire[20:], StreamEnd()])
    assert join_data(out) == wire and out[-1] == StreamEnd()
    assert not any(isinstance(e, MessageStart) for e in out)


async def test_an_unfinished_head_is_passed_on_at_the_end() -> None:
    out = await run_layout(layout(handshake=True), [b"GET / HTTP/1.1\r\nHo", StreamEnd()])
    assert out == [Data(b"GET / HTTP/1.1\r\nHo"), StreamEnd()]


# In memory: errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "error", "code", "decode"),
    [
        (plain((FrameHead(TEXT), b"hi")), ProtocolError, 1002, {}),
        (masked((FrameHead(BINARY), b"x" * 2000)), MessageTooBig, 1009, {"max_frame_size": 1000}),
        (
            masked((FrameHead(BINARY, False), b"x" * 600), (FrameHead(CONT), b"y" * 600)),
            MessageTooBig,
            1009,
            {"max_message_size": 1000},
        ),
        (masked((FrameHead(TEXT), b"\xff")), InvalidPayload, 1007, {}),
        (masked((FrameHead(CLOSE), b"\x03\xed")), ProtocolError, 1002, {}),  # 1005
    ],
)
async def test_a_bad_frame_ends_the_stream_and_the_encoder_answers(
    wire: bytes,
    error: type[ProtocolError],
    code: int,
    decode: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: list[BaseException | None] = []
    proxy = Proxy()
    (
        proxy.pipeline("ws")
        .decode_websocket(**decode)
        .handle_stream_end(lambda ctx, e: ended.append(e))
        .encode_websocket("client")
    )
    good = masked((FrameHead(PING), b"before"))
    with caplog.at_level(logging.INFO, logger="trioxy.websocket"):
        async with open_pipeline(proxy.layout("ws")) as h:
            await h.send(good + wire, masked((FrameHead(TEXT), b"after")), StreamEnd())
            out = await h.settle()
    # The frame before passed; the stream ended once, with the typed error.
    assert len(ended) == 1 and type(ended[0]) is error
    frames = Decoder("server").feed(join_data(out))
    assert [(h.opcode, p) for h, p in frames[:1]] == [(PING, b"before")]
    # The encoder (here a client's: masked) wrote a close frame with the code.
    assert frames[-1][0] == FrameHead(CLOSE, masked=True)
    assert parse_close(frames[-1][1]).code == code
    assert b"after" not in [p for _, p in frames]  # nothing passes after the error
    assert out[-1] == StreamEnd()  # a clean end: a half-close keeps the close frame
    assert len([r for r in caplog.records if r.name == "trioxy.websocket"]) == 1


async def test_no_second_close_frame_and_other_errors_pass() -> None:
    enc = Proxy().pipeline("e").encode_websocket("server")
    closing = [MessageStart(FrameHead(CLOSE)), Data(close_payload(1001)), MessageEnd()]
    out = await run_layout(enc, [*closing, StreamEnd(ProtocolError("late"))])
    assert len(Decoder("client").feed(join_data(out))) == 1
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, ProtocolError)
    for error in (ConnectRefused("no server"), HandshakeError("no")):
        out = await run_layout(enc, [StreamEnd(error)])
        assert out == [StreamEnd(error)]


async def test_misused_encoder_is_a_pipeline_error() -> None:
    enc = Proxy().pipeline("e").encode_websocket()
    with pytest.raises(BaseExceptionGroup) as info:
        await run_layout(enc, [MessageStart("not a frame")])
    assert info.group_contains(PipelineError, match="FrameHead")
    with pytest.raises(BaseExceptionGroup) as info:
        await run_layout(enc, [MessageStart(FrameHead(TEXT)), MessageStart(RequestHead())])
    assert info.group_contains(PipelineError, match="inside a frame")
    with pytest.raises(BaseExceptionGroup) as info:
        await run_layout(enc, [MessageStart(FrameHead(PING)), Data(b"x" * 126), MessageEnd()])
    assert info.group_contains(PipelineError, match="125")


# In memory: HTTP messages (under demux_http / mux_http) ------------------------------

UPGRADE_HEADERS = Headers([("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])


async def test_an_upgrade_request_passes_then_the_bytes_after_it_are_frames() -> None:
    request = MessageStart(RequestHead("GET", "/chat", UPGRADE_HEADERS))
    wire = masked((FrameHead(TEXT, fin=False), b"he"), (FrameHead(CONT), b"y"))
    out = await run_layout(layout(), [request, MessageEnd(), wire, StreamEnd()])
    assert out[:2] == [request, MessageEnd()]  # the request, as it was
    # The frames, masked again by the encoder facing the server, then the end.
    assert [(h.opcode, p) for h, p in Decoder("server").feed(join_data(out[2:]))] == [
        (TEXT, b"he"),
        (CONT, b"y"),
    ]
    assert out[-1] == StreamEnd()


async def test_a_request_that_is_not_an_upgrade_passes_with_its_body() -> None:
    request = MessageStart(RequestHead("POST", "/", Headers([("Host", "x")])))
    body = [Data(b"\x81\x05hello"), Data(b"more")]  # bytes that would parse as a frame
    out = await run_layout(layout(), [request, *body, MessageEnd(), StreamEnd()])
    assert out == [request, *body, MessageEnd(), StreamEnd()]


async def test_a_101_is_a_message_of_its_own_then_frames_then_the_end() -> None:
    ok = MessageStart(ResponseHead(101, "Switching Protocols", UPGRADE_HEADERS))
    wire = plain((FrameHead(TEXT), b"one"), (FrameHead(PING), b""))
    dec = Proxy().pipeline("s2c").decode_websocket("client")
    # As mux_http delivers it: the server's bytes are the 101's body, its EOF the end.
    out = await run_layout(dec, [ok, Data(wire[:3]), Data(wire[3:]), MessageEnd(), StreamEnd()])
    assert out[:2] == [ok, MessageEnd()]
    assert [(h.opcode, p) for h, p in messages(out[2:])] == [(TEXT, b"one"), (PING, b"")]
    assert out[-1] == StreamEnd() and out.count(StreamEnd()) == 1


async def test_the_server_side_encoder_writes_the_frames_as_the_101s_body() -> None:
    ok = MessageStart(ResponseHead(101, "Switching Protocols", UPGRADE_HEADERS))
    s2c = Proxy().pipeline("s2c").decode_websocket("client").encode_websocket("server")
    wire = plain((FrameHead(BINARY), b"\x00\x01"))
    out = await run_layout(s2c, [ok, Data(wire), MessageEnd(), StreamEnd()])
    assert out == [ok, Data(wire), MessageEnd(), StreamEnd()]


async def test_a_bad_server_frame_after_a_101_is_closed_then_the_101_ends() -> None:
    ok = MessageStart(ResponseHead(101, "Switching Protocols", UPGRADE_HEADERS))
    s2c = Proxy().pipeline("s2c").decode_websocket("client").encode_websocket("server")
    out = await run_layout(s2c, [ok, Data(masked((FrameHead(TEXT), b"x")))])
    assert out[0] == ok
    close = Decoder("client").feed(out[1].data)  # type: ignore[union-attr]
    assert parse_close(close[0][1]).code == 1002
    assert out[2:] == [MessageEnd(), StreamEnd()]  # the 101's body ends cleanly


async def test_a_refusal_passes_as_it_was() -> None:
    no = MessageStart(ResponseHead(403, "Forbidden", Headers([("Content-Length", "3")])))
    s2c = Proxy().pipeline("s2c").decode_websocket("client").encode_websocket("server")
    events = [no, Data(b"\x81\x01x"), MessageEnd(), StreamEnd()]
    assert await run_layout(s2c, events) == events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), role=st.sampled_from(["server", "client"]))
def test_any_bytes_after_the_handshake_end_the_stream_cleanly(data: bytes, role: str) -> None:
    proxy = Proxy()
    proxy.pipeline("p").decode_websocket(
        role, handshake=True, max_frame_size=100
    ).encode_websocket()
    head = REQUEST if role == "server" else RESPONSE
    out = trio.run(run_layout, proxy.layout("p"), [head + data, StreamEnd()])
    ends = [e for e in out if isinstance(e, StreamEnd)]
    assert len(ends) == 1 and out[-1] is ends[0] and ends[0].error is None
    assert join_data(out).startswith(head)


def test_bad_arguments_are_load_errors() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match="role"):
        proxy.pipeline("a").decode_websocket("middle")
    with pytest.raises(ConfigError, match="max_frame_size"):
        proxy.pipeline("b").decode_websocket(max_frame_size=0)
    with pytest.raises(ConfigError, match="max_message_size"):
        proxy.pipeline("c").decode_websocket(max_message_size=True)
    with pytest.raises(ConfigError, match="role"):
        proxy.pipeline("d").encode_websocket("proxy")


# End to end: a websockets client and server, trioxy relaying ----------------------------------


class EchoServer:
    """A ``websockets`` handler that echoes each message frame by frame and
    records what it received: each message's fragments (one per frame), and the
    close code and reason it got."""

    def __init__(self) -> None:
        self.messages: list[list[str | bytes]] = []
        self.closed: queue.Queue[tuple[int | None, str | None]] = queue.Queue()

    def __call__(self, ws: ServerConnection) -> None:
        try:
            while True:
                fragments = list(ws.recv_streaming())
                self.messages.append(fragments)
                ws.send(fragments[0] if len(fragments) == 1 else iter(fragments))
        except ConnectionClosed:
            self.closed.put((ws.close_code, ws.close_reason))

    def close_seen(self) -> tuple[int | None, str | None]:
        return self.closed.get(timeout=TIMEOUT)


@contextmanager
def ws_server(handler: Callable[[ServerConnection], None], **options: Any) -> Iterator[str]:
    """A ``websockets`` server on a loopback port, in a thread; its address."""
    options.setdefault("ping_interval", None)
    with ws_serve(handler, "127.0.0.1", 0, **options) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.socket.getsockname()[1]}"
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


@asynccontextmanager
async def trioxy(proxy: Proxy) -> AsyncIterator[int]:
    """``proxy`` served on loopback; its port. Stopped at the end, even on failure."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, proxy.build(), handle_signals=False, grace_period=TIMEOUT)
        )
        try:
            yield server.ports[0]
        finally:
            server.shutdown(immediate=True)


def client(port: int, **options: Any) -> ClientConnection:
    options.setdefault("compression", None)
    return ws_connect(
        f"ws://127.0.0.1:{port}/chat",
        proxy=None,  # never a proxy from the environment
        ping_interval=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        **options,
    )


class Recorder:
    """Callbacks for ``handle_message``/``handle_stream_end``: the frames that
    passed one direction, and how the stream ended there."""

    def __init__(self) -> None:
        self.frames: Frames = []
        self.ends: list[BaseException | None] = []
        self.ended = trio.Event()

    def frame(self, ctx: Any, head: FrameHead, body: bytes) -> None:
        self.frames.append((head, body))

    def end(self, ctx: Any, error: BaseException | None) -> None:
        self.ends.append(error)
        self.ended.set()

    async def wait_end(self) -> BaseException | None:
        with trio.fail_after(TIMEOUT):
            await self.ended.wait()
        assert len(self.ends) == 1
        return self.ends[0]


def relay(upstream: str, c2s: Recorder, s2c: Recorder | None = None, **decode: Any) -> Proxy:
    """The L4 relay under test: the client's frames decoded, recorded and encoded
    again towards the server; with ``s2c`` the server's frames too."""
    proxy = Proxy()
    after_connect = (
        proxy.listen("127.0.0.1:0")
        .decode_websocket("server", handshake=True, **decode)
        .handle_message(c2s.frame)
        .handle_stream_end(c2s.end)
        .encode_websocket("client")
        .connect(upstream)
    )
    if s2c is not None:
        (
            after_connect.decode_websocket("client", handshake=True)
            .handle_message(s2c.frame)
            .handle_stream_end(s2c.end)
            .encode_websocket("server")
        )
    return proxy


async def test_relay_text_binary_fragments_ping_and_close() -> None:
    echo, c2s = EchoServer(), Recorder()
    with ws_server(echo, compression=None) as upstream:
        async with trioxy(relay(upstream, c2s)) as port:

            def talk() -> list[Any]:
                got: list[Any] = []
                with client(port) as ws:
                    ws.send("hello")
                    got.append(ws.recv(TIMEOUT))
                    ws.send(b"\x00\x01\x02")
                    got.append(ws.recv(TIMEOUT))
                    ws.send(["ab", "cd", "ef"])  # three frames and an empty last one
                    got.append(list(ws.recv_streaming()))
                    got.append(ws.ping(b"are you there").wait(TIMEOUT))
                    ws.close(4001, "bye")
                return got

            got = await trio.to_thread.run_sync(talk)
            assert await c2s.wait_end() is None
    assert got == ["hello", b"\x00\x01\x02", ["ab", "cd", "ef", "", ""], True]
    # The server got every frame as the client sent it (no coalescing)...
    assert echo.messages == [["hello"], [b"\x00\x01\x02"], ["ab", "cd", "ef", ""]]
    assert echo.close_seen() == (4001, "bye")
    # ...and the relay saw them as frames, masked as a client's are.
    ops = [(h.opcode, h.fin, p) for h, p in c2s.frames]
    assert ops == [
        (TEXT, True, b"hello"),
        (BINARY, True, b"\x00\x01\x02"),
        (TEXT, False, b"ab"),
        (CONT, False, b"cd"),
        (CONT, False, b"ef"),
        (CONT, True, b""),
        (PING, True, b"are you there"),
        (CLOSE, True, close_payload(4001, "bye")),
    ]
    assert all(h.masked and h.rsv == 0 for h, _ in c2s.frames)
    assert parse_close(c2s.frames[-1][1]) == Close(4001, "bye")


async def test_relay_with_permessage_deflate_passes_rsv1() -> None:
    """Compression negotiated end to end (websockets' default): the relay passes
    the compressed frames, RSV1 set, without inflating them."""
    echo, c2s = EchoServer(), Recorder()
    text = "compress me " * 50
    with ws_server(echo) as upstream:
        async with trioxy(relay(upstream, c2s)) as port:

            def talk() -> list[Any]:
                with client(port, compression="deflate") as ws:
                    ws.send(text)
                    first = ws.recv(TIMEOUT)
                    ws.send([text, text])
                    return [first, list(ws.recv_streaming())]

            got = await trio.to_thread.run_sync(talk)
            await c2s.wait_end()
    assert got == [text, [text, text, "", ""]]
    assert echo.messages == [[text], [text, text, ""]]
    assert [(h.opcode, h.rsv) for h, _ in c2s.frames[:2]] == [(TEXT, 4), (TEXT, 4)]
    assert len(c2s.frames[0][1]) < len(text)  # compressed on the wire
    assert [h.rsv for h, _ in c2s.frames[2:4]] == [0, 0]  # continuations carry no RSV1


async def test_full_duplex_relay() -> None:
    """Both directions decoded: the server's frames are unmasked, re-encoded for the
    client as a server's; pings from either side are answered through the relay."""
    c2s, s2c = Recorder(), Recorder()
    pinged = queue.Queue[bool]()

    def handler(ws: ServerConnection) -> None:
        pinged.put(ws.ping(b"server ping").wait(TIMEOUT))
        EchoServer()(ws)

    with ws_server(handler, compression=None) as upstream:
        async with trioxy(relay(upstream, c2s, s2c)) as port:

            def talk() -> list[Any]:
                with client(port) as ws:
                    ws.send(["fr", "ag"])
                    echoed = list(ws.recv_streaming())
                    ws.send(b"bin")
                    return [echoed, ws.recv(TIMEOUT), pinged.get(timeout=TIMEOUT)]

            got = await trio.to_thread.run_sync(talk)
            await c2s.wait_end()
            await s2c.wait_end()
    assert got == [["fr", "ag", "", ""], b"bin", True]
    server_ops = [(h.opcode, h.fin, p) for h, p in s2c.frames]
    assert server_ops[0] == (PING, True, b"server ping")
    assert server_ops[1:6] == [
        (TEXT, False, b"fr"),
        (CONT, False, b"ag"),
        (CONT, False, b""),
        (CONT, True, b""),
        (BINARY, True, b"bin"),
    ]
    assert not any(h.masked for h, _ in s2c.frames)
    assert (PONG, True, b"server ping") in [(h.opcode, h.fin, p) for h, p in c2s.frames]
    assert server_ops[-1][0] == CLOSE and parse_close(server_ops[-1][2]).code == 1000


@pytest.mark.parametrize(
    ("decode", "message", "client_gets"),
    [
        # The server echoes the relay's close frame: the client sees 1009 too.
        ({"max_frame_size": 1000}, b"x" * 5000, 1009),
        # The close frame interrupts a fragmented message (its first frame passed):
        # websockets takes that as a broken message and answers with its own 1002.
        ({"max_message_size": 1000}, [b"x" * 600, b"y" * 600], 1002),
    ],
)
async def test_too_big_is_closed_with_1009(
    decode: dict[str, Any], message: Any, client_gets: int
) -> None:
    echo, c2s = EchoServer(), Recorder()
    with ws_server(echo, compression=None) as upstream:
        async with trioxy(relay(upstream, c2s, **decode)) as port:

            def talk() -> tuple[str, int | None]:
                with client(port) as ws:
                    ws.send("small")
                    first = ws.recv(TIMEOUT)
                    ws.send(message)
                    with pytest.raises(ConnectionClosedError) as closed:
                        ws.recv(TIMEOUT)
                    assert closed.value.rcvd is not None
                    return str(first), closed.value.rcvd.code

            got = await trio.to_thread.run_sync(talk)
            error = await c2s.wait_end()
    assert got == ("small", client_gets)
    assert isinstance(error, MessageTooBig)
    assert echo.close_seen()[0] == 1009
    assert echo.messages[0] == ["small"]


@asynccontextmanager
async def raw_server(handler: Callable[[trio.SocketStream], Any]) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        try:
            yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        finally:
            nursery.cancel_scope.cancel()


async def read_until_eof(stream: trio.SocketStream, feed: Callable[[bytes], Any]) -> None:
    with trio.fail_after(TIMEOUT):
        while data := await stream.receive_some():
            feed(data)


async def test_an_unmasked_client_frame_is_closed_with_1002() -> None:
    echo, c2s = EchoServer(), Recorder()
    with ws_server(echo, compression=None) as upstream:
        async with trioxy(relay(upstream, c2s)) as port:
            protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"))
            protocol.send_request(protocol.connect())
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"".join(protocol.data_to_send()))
                with trio.fail_after(TIMEOUT):
                    while protocol.state is not State.OPEN:
                        protocol.receive_data(await stream.receive_some())
                assert isinstance(protocol.events_received()[0], Response)
                await stream.send_all(masked((FrameHead(TEXT), b"fine")))
                await stream.send_all(plain((FrameHead(TEXT), b"unmasked")))  # not allowed
                await read_until_eof(stream, protocol.receive_data)
            error = await c2s.wait_end()
    assert isinstance(error, ProtocolError) and error.code == 1002
    assert protocol.close_rcvd is not None and protocol.close_rcvd.code == 1002
    assert "unmasked" in protocol.close_rcvd.reason
    assert echo.messages == [["fine"]]
    assert echo.close_seen()[0] == 1002


async def test_a_masked_server_frame_is_closed_towards_the_client_with_1002() -> None:
    """Full duplex: the decoder of the server's frames fails, and the encoder that
    faces the client writes it the close frame itself."""
    answered = trio.Event()

    async def bad_server(stream: trio.SocketStream) -> None:
        protocol = ServerProtocol()
        with trio.fail_after(TIMEOUT):
            while not (events := protocol.events_received()):
                protocol.receive_data(await stream.receive_some())
        request = events[0]
        assert isinstance(request, Request)
        protocol.send_response(protocol.accept(request))
        await stream.send_all(b"".join(protocol.data_to_send()))
        await stream.send_all(masked((FrameHead(TEXT), b"a server must not mask")))
        answered.set()
        await read_until_eof(stream, lambda data: None)

    c2s, s2c = Recorder(), Recorder()
    async with raw_server(bad_server) as upstream, trioxy(relay(upstream, c2s, s2c)) as port:

        def talk() -> int | None:
            with client(port) as ws:
                with pytest.raises(ConnectionClosedError) as closed:
                    ws.recv(TIMEOUT)
                return closed.value.rcvd.code if closed.value.rcvd else None

        assert await trio.to_thread.run_sync(talk) == 1002
        error = await s2c.wait_end()
        assert answered.is_set()
    assert isinstance(error, ProtocolError) and "masked" in error.message


async def test_a_refused_upgrade_reaches_the_client_as_it_was() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "go away\n")

    c2s, s2c = Recorder(), Recorder()
    with ws_server(EchoServer(), process_request=refuse) as upstream:
        async with trioxy(relay(upstream, c2s, s2c)) as port:

            def talk() -> tuple[int, bytes]:
                with pytest.raises(InvalidStatus) as refused:
                    client(port).close()
                response = refused.value.response
                assert isinstance(response.headers, WsHeaders)
                return response.status_code, response.body

            assert await trio.to_thread.run_sync(talk) == (403, b"go away\n")
    assert s2c.frames == [] and c2s.frames == []
