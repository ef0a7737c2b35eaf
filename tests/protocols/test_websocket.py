"""The sans-IO WebSocket codec: round trips, limits and protocol errors, fuzzing,
and cross-checks against the ``websockets`` library's own frame codec and
handshake (a peer we did not write)."""

from __future__ import annotations

import doctest
import importlib
import re
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from protocols.websocket import (
    Close,
    Decoder,
    FrameHead,
    HandshakeError,
    InvalidPayload,
    MessageTooBig,
    Opcode,
    ProtocolError,
    accept_key,
    check_request,
    check_response,
    close_payload,
    encode_frame,
    error_close_payload,
    new_key,
    parse_close,
)
from protocols.websocket.handshake import parse_head, split_head

FUZZ = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)

Frames = list[tuple[FrameHead, bytes]]


def wire_of(frames: Frames, mask: bool) -> bytes:
    return b"".join(encode_frame(h, p, mask=mask) for h, p in frames)


def decode_in_pieces(decoder: Decoder, data: bytes, cuts: list[int]) -> Frames:
    out: Frames = []
    start = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        out += decoder.feed(data[start:cut])
        start = cut
    return out


def as_sent(frames: Frames, masked: bool) -> Frames:
    """``frames`` as a decoder reports them: with the wire's mask flag."""
    return [(FrameHead(h.opcode, h.fin, h.rsv, masked), p) for h, p in frames]


# Strategies: valid frame sequences ---------------------------------------------------

payloads = st.binary(max_size=300)
rsvs = st.integers(0, 7)


@st.composite
def control_frames(draw: st.DrawFn) -> tuple[FrameHead, bytes]:
    opcode = draw(st.sampled_from([Opcode.PING, Opcode.PONG]))
    return FrameHead(opcode, True, draw(rsvs)), draw(st.binary(max_size=125))


@st.composite
def messages(draw: st.DrawFn) -> Frames:
    """One data message in one or more frames (text payloads valid UTF-8 split at
    any byte, so a character may straddle two frames), control frames between."""
    opcode = draw(st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
    body = draw(st.text(max_size=80)).encode() if opcode is Opcode.TEXT else draw(payloads)
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    frames: Frames = []
    for i, piece in enumerate(pieces):
        head = FrameHead(opcode if i == 0 else Opcode.CONTINUATION, i == len(pieces) - 1)
        frames.append((head, piece))
        if i < len(pieces) - 1 and draw(st.booleans()):
            frames.append(draw(control_frames()))
    return frames


@st.composite
def conversations(draw: st.DrawFn) -> Frames:
    frames: Frames = []
    for part in draw(st.lists(st.one_of(messages(), control_frames().map(lambda f: [f])))):
        frames += part
    if draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1011, 3000, 4999]))
        frames.append((FrameHead(Opcode.CLOSE), close_payload(code, draw(st.text(max_size=20)))))
    return frames


# Docstrings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["protocols.websocket.frames", "protocols.websocket.handshake", "protocols.websocket"],
)
def test_doctests_and_examples(name: str) -> None:
    module = importlib.import_module(name)
    assert doctest.testmod(module).failed == 0
    doc = module.__doc__ or ""
    found = re.search(r"::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    if found is not None:
        exec(compile(textwrap.dedent(found.group(1)), f"{name} example", "exec"), {})


# Round trips --------------------------------------------------------------------------


@FUZZ
@given(frames=conversations(), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_client_frames_decode_as_sent(frames: Frames, cuts: list[int]) -> None:
    """Masked as a client sends them, cut anywhere: the server-side decoder gives
    the same frames back (opcodes, FIN, RSV, payloads, fragmentation)."""
    decoder = Decoder("server", validate_utf8=True)
    assert decode_in_pieces(decoder, wire_of(frames, mask=True), cuts) == as_sent(frames, True)


@FUZZ
@given(frames=conversations(), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_server_frames_reencode_to_the_same_bytes(frames: Frames, cuts: list[int]) -> None:
    """Unmasked frames decoded and encoded again are the bytes that came in."""
    wire = wire_of(frames, mask=False)
    decoded = decode_in_pieces(Decoder("client"), wire, cuts)
    assert wire_of(decoded, mask=False) == wire


def test_byte_at_a_time_with_the_mask_key_late() -> None:
    """The frame decoder parses a header again when its mask key had not arrived:
    the fragmentation bookkeeping must not count that header twice."""
    frames: Frames = [
        (FrameHead(Opcode.TEXT, False), b"ab"),
        (FrameHead(Opcode.PING), b""),
        (FrameHead(Opcode.CONTINUATION, False), b"c" * 200),
        (FrameHead(Opcode.CONTINUATION, True), b""),
        (FrameHead(Opcode.BINARY), b"\x00" * 202),
    ]
    wire = wire_of(frames, mask=True)
    decoder = Decoder("server", max_message_size=202)
    out: Frames = []
    for i in range(len(wire)):
        out += decoder.feed(wire[i : i + 1])
    assert out == as_sent(frames, True)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_length_encodings_at_their_limits(size: int) -> None:
    head = FrameHead(Opcode.BINARY)
    wire = encode_frame(head, b"z" * size)
    assert len(wire) - size == (2 if size < 126 else 4 if size < 65536 else 10)
    assert Decoder("client").feed(wire) == [(head, b"z" * size)]


def test_masking_uses_a_fresh_key_per_frame() -> None:
    head = FrameHead(Opcode.TEXT)
    first, second = (encode_frame(head, b"same payload", mask=True) for _ in range(2))
    assert first[2:6] != second[2:6]  # a repeat has odds of 2**-32
    assert encode_frame(head, b"abcd", mask=True, mask_key=b"\x01\x02\x03\x04") == (
        b"\x81\x84\x01\x02\x03\x04" + bytes([0x61 ^ 1, 0x62 ^ 2, 0x63 ^ 3, 0x64 ^ 4])
    )


def test_decoded_heads_are_shared_and_frozen() -> None:
    wire = wire_of([(FrameHead(Opcode.BINARY), b"a"), (FrameHead(Opcode.BINARY), b"b")], True)
    (h1, _), (h2, _) = Decoder("server").feed(wire)
    assert h1 is h2 and h1.masked
    with pytest.raises(AttributeError):
        h1.fin = False  # type: ignore[misc]


# Cross-checks with the websockets library -----------------------------------------------

_WS_OPCODES = {
    Opcode.CONTINUATION: WsOpcode.CONT,
    Opcode.TEXT: WsOpcode.TEXT,
    Opcode.BINARY: WsOpcode.BINARY,
    Opcode.CLOSE: WsOpcode.CLOSE,
    Opcode.PING: WsOpcode.PING,
    Opcode.PONG: WsOpcode.PONG,
}


def no_rsv(frames: Frames) -> Frames:
    # websockets refuses RSV bits without a negotiated extension.
    return [(FrameHead(h.opcode, h.fin), p) for h, p in frames]


def websockets_parse(data: bytes, mask: bool, count: int) -> Iterator[WsFrame]:
    reader = StreamReader()
    reader.feed_data(data)
    for _ in range(count):
        parser = WsFrame.parse(reader.read_exact, mask=mask)
        with pytest.raises(StopIteration) as stop:
            next(parser)
        yield stop.value.value


@FUZZ
@given(frames=conversations())
def test_websockets_reads_what_we_encode(frames: Frames) -> None:
    frames = no_rsv(frames)
    for mask in (True, False):
        parsed = list(websockets_parse(wire_of(frames, mask), mask, len(frames)))
        assert [(f.opcode, f.fin, f.data) for f in parsed] == [
            (_WS_OPCODES[h.opcode], h.fin, p) for h, p in frames
        ]


@FUZZ
@given(frames=conversations())
def test_we_read_what_websockets_encodes(frames: Frames) -> None:
    frames = no_rsv(frames)
    for mask, role in ((True, "server"), (False, "client")):
        wire = b"".join(
            WsFrame(_WS_OPCODES[h.opcode], p, h.fin).serialize(mask=mask) for h, p in frames
        )
        assert Decoder(role).feed(wire) == as_sent(frames, mask)  # type: ignore[arg-type]


# Protocol errors ----------------------------------------------------------------------


def masked(*frames: tuple[FrameHead, bytes]) -> bytes:
    return wire_of(list(frames), mask=True)


TEXT = FrameHead(Opcode.TEXT)


@pytest.mark.parametrize(
    ("role", "wire", "error", "says"),
    [
        ("server", encode_frame(TEXT, b"hi"), ProtocolError, "unmasked"),
        ("client", masked((TEXT, b"hi")), ProtocolError, "masked"),
        ("server", b"\x83\x80abcd", ProtocolError, "opcode"),  # reserved data opcode 3
        ("server", b"\x8b\x80abcd", ProtocolError, "opcode"),  # reserved control opcode B
        ("server", b"\x09\x80abcd", ProtocolError, "fragment"),  # ping without FIN
        ("server", b"\x89\xfe\x00\x7eabcd", ProtocolError, "125"),  # 126-byte ping
        ("server", masked((FrameHead(Opcode.CONTINUATION), b"x")), ProtocolError, "continu"),
        (
            "server",
            masked((FrameHead(Opcode.TEXT, False), b"a"), (FrameHead(Opcode.BINARY), b"b")),
            ProtocolError,
            "inside a fragmented message",
        ),
        ("server", b"\x82\xfe\x00\x05abcd", ProtocolError, "1 would have sufficed"),
        ("server", masked((TEXT, b"\xc3")), InvalidPayload, "UTF-8"),
        ("server", masked((FrameHead(Opcode.CLOSE), b"\x03")), ProtocolError, "one-byte"),
        ("server", masked((FrameHead(Opcode.CLOSE), b"\x03\xed")), ProtocolError, "1005"),
        ("server", masked((FrameHead(Opcode.CLOSE), b"\x03\xe8\xff")), InvalidPayload, "UTF-8"),
        ("client", encode_frame(FrameHead(Opcode.BINARY), b"x" * 2000), MessageTooBig, "2000"),
    ],
)
def test_protocol_errors(role: str, wire: bytes, error: type[ProtocolError], says: str) -> None:
    before: Frames = [(FrameHead(Opcode.PING, masked=role == "server"), b"ok")]
    prefix = wire_of(before, mask=role == "server")
    decoder = Decoder(role, max_frame_size=1000)  # type: ignore[arg-type]
    with pytest.raises(error, match=says) as raised:
        decoder.feed(prefix + wire)
    assert type(raised.value) is error
    assert (
        raised.value.code == {ProtocolError: 1002, InvalidPayload: 1007, MessageTooBig: 1009}[error]
    )
    # The frames decoded before the fault come with it, to be handled first.
    assert raised.value.frames[:1] == before
    with pytest.raises(error):  # a dead decoder stays dead
        decoder.feed(b"")


def test_a_frame_over_the_limit_fails_on_its_header() -> None:
    """1009 comes before the payload is buffered: the header is enough."""
    header = encode_frame(FrameHead(Opcode.BINARY), b"x" * 100_000, mask=True)[:14]
    with pytest.raises(MessageTooBig, match="100000"):
        Decoder("server", max_frame_size=65536).feed(header)


def test_a_fragmented_message_over_the_limit() -> None:
    decoder = Decoder("server", max_message_size=100)
    first = masked((FrameHead(Opcode.BINARY, False), b"a" * 60))
    assert len(decoder.feed(first)) == 1
    assert len(decoder.feed(masked((FrameHead(Opcode.PING), b"p" * 100)))) == 1  # not counted
    with pytest.raises(MessageTooBig, match="120"):
        decoder.feed(masked((FrameHead(Opcode.CONTINUATION), b"b" * 60)))


def test_utf8_split_across_frames_is_valid_and_truncated_is_not() -> None:
    euro = "€".encode()
    ok = masked(
        (FrameHead(Opcode.TEXT, False), euro[:1]), (FrameHead(Opcode.CONTINUATION), euro[1:])
    )
    assert [p for _, p in Decoder("server").feed(ok)] == [euro[:1], euro[1:]]
    cut = masked((FrameHead(Opcode.TEXT, False), euro[:1]), (FrameHead(Opcode.CONTINUATION), b""))
    with pytest.raises(InvalidPayload):
        Decoder("server").feed(cut)


def test_utf8_not_checked_when_disabled_or_transformed_by_an_extension() -> None:
    bad = masked((TEXT, b"\xff"))
    assert Decoder("server", validate_utf8=False).feed(bad) == [
        (FrameHead(Opcode.TEXT, True, 0, True), b"\xff")
    ]
    deflated = masked((FrameHead(Opcode.TEXT, rsv=4), b"\xff"))
    assert Decoder("server").feed(deflated)[0][0].rsv == 4


def test_nothing_is_decoded_after_a_close_frame() -> None:
    decoder = Decoder("server")
    wire = masked((FrameHead(Opcode.CLOSE), close_payload(1000)), (TEXT, b"late"))
    assert [h.opcode for h, _ in decoder.feed(wire)] == [Opcode.CLOSE]
    assert decoder.closed and decoder.feed(masked((TEXT, b"later"))) == []


@FUZZ
@given(data=st.binary(max_size=400), role=st.sampled_from(["server", "client"]))
def test_any_bytes_give_frames_or_a_protocol_error(data: bytes, role: str) -> None:
    decoder = Decoder(role, max_frame_size=200, max_message_size=300)  # type: ignore[arg-type]
    try:
        for i in range(0, len(data), 7):
            decoder.feed(data[i : i + 7])
    except ProtocolError as exc:
        assert exc.code in (1002, 1007, 1009)


def test_bad_frames_are_refused_by_the_encoder() -> None:
    for head, payload in [
        (FrameHead(Opcode.PING), b"x" * 126),
        (FrameHead(Opcode.CLOSE, fin=False), b""),
        (FrameHead(Opcode.TEXT, rsv=8), b""),
        (FrameHead(3), b""),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ValueError):
            encode_frame(head, payload)
    with pytest.raises(ValueError, match="4 bytes"):
        encode_frame(TEXT, b"", mask=True, mask_key=b"abc")


# Close frames --------------------------------------------------------------------------


def test_close_payloads() -> None:
    assert parse_close(close_payload(4001, "bye ✓")) == Close(4001, "bye ✓")
    assert parse_close(close_payload(None)) == Close(None, "")
    for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000):
        with pytest.raises(ValueError):
            close_payload(code)
        with pytest.raises(ProtocolError):
            parse_close(code.to_bytes(2, "big"))
    with pytest.raises(ValueError):
        close_payload(1000, "x" * 124)
    with pytest.raises(ValueError):
        close_payload(None, "reason without a code")


def test_error_close_payload_fits_a_control_frame() -> None:
    long = ProtocolError("é" * 100)
    payload = error_close_payload(long)
    assert payload is not None and len(payload) <= 125
    assert parse_close(payload).code == 1002  # the cut left valid UTF-8
    assert error_close_payload(MessageTooBig("big")) == b"\x03\xf1big"
    assert error_close_payload(HandshakeError("no")) is None


# Handshake ------------------------------------------------------------------------------


def test_accept_key_of_rfc_6455() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert new_key() != new_key() and len(new_key()) == 24


def websockets_request() -> Request:
    return ClientProtocol(parse_uri("ws://example.test/chat")).connect()


def test_a_websockets_request_and_answer_pass_our_checks() -> None:
    request = websockets_request()
    key = check_request("GET", list(request.headers.raw_items()))
    assert key == request.headers["Sec-WebSocket-Key"]
    response: Response = ServerProtocol().accept(request)
    assert response.status_code == 101
    check_response(response.status_code, list(response.headers.raw_items()), key)
    assert accept_key(key) == response.headers["Sec-WebSocket-Accept"]


@pytest.mark.parametrize(
    ("method", "change", "status"),
    [
        ("POST", {}, 400),
        ("GET", {"Upgrade": "h2c"}, 400),
        ("GET", {"Connection": "keep-alive"}, 400),
        ("GET", {"Sec-WebSocket-Version": "8"}, 426),
        ("GET", {"Sec-WebSocket-Key": "not base64!"}, 400),
        ("GET", {"Sec-WebSocket-Key": "c2hvcnQ="}, 400),
    ],
)
def test_bad_requests(method: str, change: dict[str, str], status: int) -> None:
    request = websockets_request()
    headers = dict(request.headers.raw_items())
    headers.update(change)
    with pytest.raises(HandshakeError) as raised:
        check_request(method, list(headers.items()))
    assert raised.value.status == status and raised.value.code is None


def test_bad_responses() -> None:
    request = websockets_request()
    key = request.headers["Sec-WebSocket-Key"]
    good = [
        ("Upgrade", "websocket"),
        ("Connection", "upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    check_response(101, good, key)
    with pytest.raises(HandshakeError, match="403"):
        check_response(403, good, key)
    with pytest.raises(HandshakeError, match="Accept"):
        check_response(101, good, new_key())
    with pytest.raises(HandshakeError, match="upgrade"):
        check_response(101, good[2:], key)


def test_split_and_parse_head() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade:  websocket \r\nbogus line\r\n\r\nframes"
    end = split_head(raw)
    assert raw[end:] == b"frames" and split_head(raw[:20]) == -1
    line, headers = parse_head(raw[:end])
    assert line == "GET / HTTP/1.1" and headers.items() == [("Host", "a"), ("Upgrade", "websocket")]
