"""Fuzzing the parsers: arbitrary bytes and mutated valid messages, fed at random split
points. The only outcomes allowed are events or a ``ProtocolError`` (never another
exception), and the outcome must not depend on where the input was split: the same
messages when it is accepted, the same status when it is refused."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.http import (
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
)

from .http_corpus.reference import split_feed
from .http_corpus.strategies import edits, mutate, pipelined_requests, response_exchanges

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Small limits so that fuzzed input reaches them too.
LIMITS = {"max_line": 40, "max_header_bytes": 120, "max_headers": 6, "max_body": 60}


def outcome(parser: Any, data: bytes, cuts: list[int]) -> tuple[list[Any], int | None, bytes]:
    """``(merged events, error status or None, held bytes)``; body chunks merged so that
    split points do not show, and the events of an erroring run dropped (a feed that
    raises returns none of its own)."""
    try:
        items = split_feed(parser, data, sorted(set(cuts)))
        if not parser.upgraded:
            items += parser.feed(b"")
    except ProtocolError as exc:
        assert isinstance(exc.status, int)
        return [], exc.status, b""
    merged: list[Any] = []
    for item in items:
        assert type(item) in (RequestHead, ResponseHead, EndOfMessage, bytes), item
        if type(item) is bytes:
            assert item, "empty body chunk"
            if merged and type(merged[-1]) is bytes:
                merged[-1] += item
                continue
        merged.append(item)
    return merged, None, parser.take_trailing() if parser.upgraded else b""


def check_requests(data: bytes, cuts: list[int], **limits: int) -> None:
    whole = outcome(RequestParser(**limits), data, [])
    assert outcome(RequestParser(**limits), data, cuts) == whole
    assert outcome(RequestParser(**limits), data, list(range(1, len(data)))) == whole


def check_responses(methods: list[str], data: bytes, cuts: list[int], **limits: int) -> None:
    def parser() -> ResponseParser:
        p = ResponseParser(**limits)
        for method in methods:
            p.expect(method)
        return p

    whole = outcome(parser(), data, [])
    if whole[1] is not None:
        assert whole[1] == 502
    assert outcome(parser(), data, cuts) == whole
    assert outcome(parser(), data, list(range(1, len(data)))) == whole


cut_points = st.lists(st.integers(0, 400), max_size=8)


@FUZZ
@given(st.binary(max_size=300), cut_points)
def test_arbitrary_bytes_as_requests(data: bytes, cuts: list[int]) -> None:
    check_requests(data, cuts)
    check_requests(data, cuts, **LIMITS)


@FUZZ
@given(pipelined_requests(), edits, cut_points)
def test_mutated_requests(data: bytes, changes: list, cuts: list[int]) -> None:
    data = mutate(data, changes)
    check_requests(data, cuts)
    check_requests(data, cuts, **LIMITS)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.sampled_from(["GET", "HEAD", "CONNECT"])), cut_points)
def test_arbitrary_bytes_as_responses(data: bytes, methods: list[str], cuts: list[int]) -> None:
    check_responses(methods, data, cuts)


@FUZZ
@given(response_exchanges(), edits, cut_points)
def test_mutated_responses(
    exchange: tuple[list[str], bytes], changes: list, cuts: list[int]
) -> None:
    methods, data = exchange
    data = mutate(data, changes)
    check_responses(methods, data, cuts)
    check_responses(methods, data, cuts, **LIMITS)


@FUZZ
@given(pipelined_requests(), cut_points)
def test_valid_requests_survive_any_split(data: bytes, cuts: list[int]) -> None:
    events, error, _ = outcome(RequestParser(), data, cuts)
    assert error is None
    assert sum(type(e) is EndOfMessage for e in events) == sum(
        type(e) is RequestHead for e in events
    )
