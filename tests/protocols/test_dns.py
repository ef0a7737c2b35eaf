"""protocols.dns: parsing, TCP framing at every split point, the answers a server
builds (errors, truncation, cache TTLs), and fuzzing: any bytes give a message or
the codec's ProtocolError, nothing else."""

from __future__ import annotations

import textwrap

import pytest
from dnslib import AAAA, EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

import protocols.dns as dns
from protocols.dns import (
    ProtocolError,
    TcpFramer,
    answer_ttl,
    client_udp_size,
    error_reply,
    frame,
    parse,
    truncate,
)


def answer_with(count: int, ttl: int = 300) -> DNSRecord:
    query = DNSRecord.question("many.test", "A")
    reply = query.reply()
    for i in range(count):
        reply.add_answer(RR("many.test", QTYPE.A, rdata=A(f"10.0.{i // 256}.{i % 256}"), ttl=ttl))
    return reply


def test_package_docstring_example_runs() -> None:
    example = (dns.__doc__ or "").split("Example (runnable)::", 1)[1]
    exec(compile(textwrap.dedent(example), "protocols.dns docstring", "exec"), {})


@pytest.mark.parametrize("qtype", ["A", "AAAA", "MX", "TXT", "PTR", "SOA", "ANY"])
def test_round_trip(qtype: str) -> None:
    query = DNSRecord.question("example.test", qtype)
    query.add_ar(EDNS0(udp_len=1232))
    again = parse(bytes(query.pack()))
    assert again.pack() == query.pack()
    assert again.header.id == query.header.id
    assert again.q.qtype == getattr(QTYPE, qtype)


def test_an_answer_round_trips() -> None:
    reply = answer_with(3)
    reply.add_answer(RR("many.test", QTYPE.AAAA, rdata=AAAA("fd00::1"), ttl=5))
    assert parse(bytes(reply.pack())).rr == reply.rr


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x12\x34" + b"\x00" * 9])
def test_short_input_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse(data)
    assert info.value.rcode == RCODE.FORMERR


def test_garbage_with_a_header_gets_a_formerr_answer_with_its_id() -> None:
    # A header claiming one question, then a label running off the end.
    data = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc"
    with pytest.raises(ProtocolError) as info:
        parse(data)
    assert info.value.answer is not None
    answer = DNSRecord.parse(info.value.answer)
    assert answer.header.id == 0xABCD
    assert answer.header.qr == 1 and answer.header.rd == 1
    assert answer.header.rcode == RCODE.FORMERR


def test_a_malformed_answer_gets_no_answer() -> None:
    data = b"\xab\xcd\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc"
    with pytest.raises(ProtocolError) as info:
        parse(data)
    assert info.value.answer is None  # answering an answer invites loops


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        record = parse(data)
    except ProtocolError as exc:
        if exc.answer is not None:
            DNSRecord.parse(exc.answer)  # the answer itself is valid DNS
        return
    assert isinstance(record, DNSRecord)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=200), st.integers(0, 11), st.integers(0, 255))
def test_fuzz_mutated_queries(tail: bytes, position: int, value: int) -> None:
    wire = bytearray(DNSRecord.question("fuzz.test", "A").pack()) + tail
    wire[position] = value
    try:
        parse(bytes(wire))
    except ProtocolError:
        pass


def test_tcp_framing_at_every_split_point() -> None:
    messages = [
        bytes(DNSRecord.question("a.test", "A").pack()),
        bytes(answer_with(20).pack()),
        bytes(DNSRecord.question("b.test", "AAAA").pack()),
    ]
    stream = b"".join(frame(m) for m in messages)
    for cut in range(len(stream) + 1):
        framer = TcpFramer()
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == messages, cut
        assert framer.pending == 0
    # Byte by byte, and all at once.
    framer = TcpFramer()
    assert [m for b in stream for m in framer.feed(bytes([b]))] == messages
    assert TcpFramer().feed(stream) == messages


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_tcp_framing_any_segmentation(sizes: list[int]) -> None:
    messages = [bytes(DNSRecord.question(f"n{i}.test", "A").pack()) for i in range(4)]
    stream = b"".join(frame(m) for m in messages)
    framer = TcpFramer()
    got: list[bytes] = []
    start = 0
    for size in sizes * (len(stream) // sum(sizes) + 1):
        got += framer.feed(stream[start : start + size])
        start += size
    assert got == messages


def test_a_zero_length_frame_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        TcpFramer().feed(b"\x00\x00")


def test_frame_refuses_oversized_messages() -> None:
    with pytest.raises(ValueError):
        frame(b"x" * 65536)


def test_error_reply_keeps_id_question_and_rd() -> None:
    query = DNSRecord.question("x.test", "MX")
    reply = error_reply(query, RCODE.SERVFAIL)
    again = DNSRecord.parse(reply.pack())
    assert again.header.id == query.header.id
    assert again.header.rcode == RCODE.SERVFAIL and again.header.qr == 1
    assert again.q == query.q and again.rr == []


def test_client_udp_size() -> None:
    query = DNSRecord.question("x.test")
    assert client_udp_size(query) == 512
    query.add_ar(EDNS0(udp_len=4096))
    assert client_udp_size(query) == 4096
    small = DNSRecord.question("x.test")
    small.add_ar(EDNS0(udp_len=100))
    assert client_udp_size(small) == 512  # RFC 6891: below 512 means 512


def test_truncate_sets_tc_and_keeps_the_question() -> None:
    reply = answer_with(60)
    assert len(reply.pack()) > 512
    cut = truncate(reply, 512)
    again = DNSRecord.parse(cut.pack())
    assert again.header.tc == 1 and again.rr == [] and again.q == reply.q
    assert len(cut.pack()) <= 512
    assert truncate(reply, 65535) is reply
    # A known size near (or over) the limit is checked by packing; far under, trusted.
    assert truncate(reply, 512, size=len(reply.pack())).header.tc == 1
    assert truncate(reply, 512, size=500).header.tc == 1  # 500 is near 512: measured
    assert truncate(reply, 65535, size=100) is reply


def test_answer_ttl() -> None:
    reply = answer_with(2, ttl=300)
    reply.rr[1].ttl = 20
    assert answer_ttl(reply) == 20
    negative = DNSRecord.question("nx.test").reply()
    negative.header.rcode = RCODE.NXDOMAIN
    assert answer_ttl(negative) is None  # no SOA: not cached (RFC 2308 5)
    soa = SOA("ns.test", "hostmaster.test", (1, 1200, 120, 604800, 30))
    negative.add_auth(RR("test", QTYPE.SOA, rdata=soa, ttl=300))
    assert answer_ttl(negative) == 30
    failed = error_reply(DNSRecord.question("x.test"), RCODE.SERVFAIL)
    assert answer_ttl(failed) is None
    reply.header.tc = 1
    assert answer_ttl(reply) is None
