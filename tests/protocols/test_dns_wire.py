"""protocols.dns.wire: the wire-form reading of plain queries checked against
dnslib's parser (on generated queries and on arbitrary bytes), the lazy
``WireMessage``, and answer templates against dnslib-built answers."""

from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, DNSError, DNSHeader, DNSQuestion, DNSRecord, EDNSOption
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dns.wire import (
    WireMessage,
    answer_template,
    question_key,
    read_query,
)

label = st.binary(min_size=1, max_size=20).filter(lambda b: b"." not in b)
letters = st.text("abcdefgXYZ-0123", min_size=1, max_size=12)


@st.composite
def queries(draw: st.DrawFn) -> DNSRecord:
    names = draw(st.lists(st.one_of(letters.map(str.encode), label), min_size=0, max_size=5))
    record = DNSRecord(DNSHeader(id=draw(st.integers(0, 0xFFFF))))
    record.header.rd = draw(st.integers(0, 1))
    record.header.cd = draw(st.integers(0, 1))
    qtype = draw(st.sampled_from([1, 2, 5, 12, 15, 16, 28, 33, 65, 255, 4321]))
    record.add_question(DNSQuestion(names or ".", qtype, draw(st.sampled_from([1, 3, 255]))))
    if draw(st.booleans()):
        options = draw(
            st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=8)), max_size=3)
        )
        record.add_ar(
            EDNS0(
                udp_len=draw(st.integers(0, 65535)),
                opts=[EDNSOption(code, data) for code, data in options],
            )
        )
    return record


@settings(max_examples=300, deadline=None)
@given(queries())
def test_a_plain_query_reads_as_dnslib_parses_it(query: DNSRecord) -> None:
    wire = bytes(query.pack())
    summary = read_query(wire)
    try:
        parsed = DNSRecord.parse(wire)
    except DNSError:  # a label that is not UTF-8: dnslib refuses it (FORMERR)
        assert summary is None
        return
    assert summary is not None
    assert summary.ident == parsed.header.id
    assert summary.rd == bool(parsed.header.rd)
    assert summary.key == question_key(parsed)
    assert summary.question == wire[12 : 12 + len(summary.question)]
    opt = [rr for rr in parsed.ar if rr.rtype == QTYPE.OPT]
    assert summary.udp_size == (max(512, int(opt[0].rclass)) if opt else 512)


@settings(max_examples=500, deadline=None)
@given(queries(), st.data())
def test_whatever_is_accepted_dnslib_parses_too(query: DNSRecord, data: st.DataObject) -> None:
    # Bytes changed, cut or added at random: read_query never raises, and what it
    # accepts is a message dnslib reads the same way.
    wire = bytearray(query.pack())
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(wire)))
        action = data.draw(st.sampled_from(["set", "cut", "add"]))
        if action == "set" and where < len(wire):
            wire[where] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del wire[where:]
        else:
            wire[where:where] = data.draw(st.binary(min_size=1, max_size=3))
    summary = read_query(bytes(wire))
    if summary is not None:
        parsed = DNSRecord.parse(bytes(wire))
        assert summary.key == question_key(parsed)
        assert summary.ident == parsed.header.id


@pytest.mark.parametrize(
    "change",
    ["answer", "opcode", "two_questions", "an_answer_record", "compressed_question"],
)
def test_what_is_not_a_plain_query_is_left_to_the_parser(change: str) -> None:
    query = DNSRecord(DNSHeader(id=1), q=DNSQuestion("example.com"))
    if change == "answer":
        query.header.qr = 1
    elif change == "opcode":
        query.header.opcode = 2
    elif change == "two_questions":
        query.add_question(DNSQuestion("example.org"))
    elif change == "an_answer_record":
        query.add_answer(*RR.fromZone("example.com. 60 IN A 192.0.2.1"))
    wire = bytes(query.pack())
    if change == "compressed_question":
        wire = wire[:12] + b"\xc0\x0c" + wire[-4:]
    assert read_query(wire) is None


def test_a_wire_message_is_its_bytes_until_read() -> None:
    query = DNSRecord.question("Example.COM", "AAAA")
    wire = bytes(query.pack())
    message = WireMessage(wire, read_query(wire))
    assert isinstance(message, DNSRecord) and not message.parsed
    assert message.pack() is wire  # not packed again
    assert str(message.q.qname) == "Example.COM." and message.parsed
    message.header.id = 7
    assert DNSRecord.parse(bytes(message.pack())).header.id == 7
    reply = message.reply()  # dnslib's methods work on it
    assert reply.header.id == 7 and reply.q.qtype == QTYPE.AAAA


def an_answer() -> DNSRecord:
    query = DNSRecord.question("www.example.com", "A")
    query.add_ar(EDNS0(udp_len=1232))
    reply = query.reply()
    reply.add_answer(*RR.fromZone("www.example.com. 300 IN CNAME web.example.com."))
    reply.add_answer(*RR.fromZone("web.example.com. 60 IN A 192.0.2.7"))
    reply.add_auth(*RR.fromZone("example.com. 3600 IN NS ns.example.com."))
    reply.add_ar(*RR.fromZone("ns.example.com. 120 IN A 192.0.2.53"))
    reply.add_ar(EDNS0(udp_len=4096, flags="do"))
    return reply


def test_an_answer_template_writes_the_answer_for_a_new_query() -> None:
    reply = an_answer()
    wire = bytes(reply.pack())  # dnslib compresses the names: pointers are walked
    template = answer_template(wire)
    assert template is not None and template.ttls == (300, 60, 3600, 120)
    asked = DNSRecord.question("WWW.Example.com", "A")
    asked.header.id, asked.header.rd = 4242, 0
    summary = read_query(bytes(asked.pack()))
    assert summary is not None
    out = DNSRecord.parse(template.answer(summary, 100))
    assert out.header.id == 4242 and out.header.rd == 0 and out.header.rcode == RCODE.NOERROR
    assert str(out.q.qname) == "WWW.Example.com."  # as the client wrote it
    assert [rr.ttl for rr in out.rr + out.auth] == [200, 0, 3500]
    additional = {rr.rtype: rr for rr in out.ar}
    assert additional[QTYPE.A].ttl == 20
    # The OPT record's "TTL" holds the DO flag: never aged.
    assert additional[QTYPE.OPT].ttl == reply.ar[1].ttl
    # (Names compressed into the question take its case, as with a resolver's.)
    assert [str(rr.rdata).lower() for rr in out.rr] == ["web.example.com.", "192.0.2.7"]
    # No time spent: the same bytes but the ID, RD and question.
    same = template.answer(summary, 0)
    assert (
        same[12:]
        == bytes(asked.pack())[12 : 12 + len(summary.question)] + wire[12 + len(summary.question) :]
    )


@pytest.mark.parametrize("cut", [1, 5, 13, 40])
def test_an_answer_that_cannot_be_walked_has_no_template(cut: int) -> None:
    wire = bytes(an_answer().pack())
    assert answer_template(wire[:-cut]) is None
    assert answer_template(wire + b"\x00" * cut) is None
