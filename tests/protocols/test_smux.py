"""The smux frame codec: round trips, validation, and fuzzing at every split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.smux import (
    HEADER,
    Frame,
    FrameDecoder,
    FrameType,
    ProtocolError,
    decode_metadata,
    encode_frame,
    encode_metadata,
)

STREAM_TYPES = [FrameType.OPEN, FrameType.DATA, FrameType.RESET]


def frames_strategy() -> st.SearchStrategy[Frame]:
    stream_frame = st.builds(
        Frame,
        st.sampled_from(STREAM_TYPES),
        st.integers(1, 2**32 - 1),
        st.binary(max_size=300),
    )
    window = st.builds(
        Frame,
        st.just(FrameType.WINDOW),
        st.integers(1, 2**32 - 1),
        st.integers(1, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")),
    )
    fin = st.builds(Frame, st.just(FrameType.FIN), st.integers(1, 2**32 - 1))
    ping = st.builds(
        Frame,
        st.sampled_from([FrameType.PING, FrameType.PONG]),
        st.just(0),
        st.binary(min_size=8, max_size=8),
    )
    goaway = st.builds(Frame, st.just(FrameType.GOAWAY), st.just(0), st.binary(max_size=40))
    return st.one_of(stream_frame, window, fin, ping, goaway)


@given(st.lists(frames_strategy(), max_size=8), st.lists(st.integers(0, 4000), max_size=6))
def test_round_trip_whatever_the_split_points(frames: list[Frame], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f.type, f.stream, f.payload) for f in frames)
    decoder = FrameDecoder(max_frame=1024)
    out: list[Frame] = []
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(wire)), len(wire)]:
        out += decoder.feed(wire[start:cut])
        start = cut
    assert out == frames
    assert decoder.pending == 0


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_any_bytes_give_frames_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame=64)
    start = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
            for frame in decoder.feed(data[start:cut]):
                assert isinstance(frame, Frame)
            start = cut
    except ProtocolError:
        with pytest.raises(ProtocolError):  # a failed decoder stays failed
            decoder.feed(b"")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (HEADER.pack(99, 1, 0), "unknown frame type"),
        (HEADER.pack(FrameType.DATA, 0, 0), "on stream 0"),
        (HEADER.pack(FrameType.PING, 3, 8) + bytes(8), "must be 0"),
        (HEADER.pack(FrameType.PING, 0, 2) + b"ab", "8 bytes"),
        (HEADER.pack(FrameType.WINDOW, 1, 2) + b"ab", "non-zero u32"),
        (HEADER.pack(FrameType.WINDOW, 1, 4) + bytes(4), "non-zero u32"),
        (HEADER.pack(FrameType.FIN, 1, 1) + b"x", "no payload"),
        (HEADER.pack(FrameType.DATA, 1, 10**6), "exceeds"),
    ],
)
def test_invalid_frames_are_refused(wire: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        FrameDecoder(max_frame=1024).feed(wire)


def test_metadata_round_trip_and_validation() -> None:
    meta = {"target": "10.0.0.1:1883", "client": "dévice-7"}
    assert decode_metadata(encode_metadata(meta)) == meta
    assert decode_metadata(b"") == {}
    for bad in (b"[1]", b'{"a": 1}', b"\xff", b"{"):
        with pytest.raises(ProtocolError):
            decode_metadata(bad)
