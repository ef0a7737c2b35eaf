"""decode_dns / encode_dns / resolve_dns: in memory for the codec filters, against
dnsmasq (a real DNS server) for resolving, with real UDP sockets for dead and silent
upstreams."""

from __future__ import annotations

import importlib
import re
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from filters.dns import DnsView, HostsTable, read_views
from pipeline import ConfigError, Data, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.context import Context
from pipeline.testing import open_pipeline, run_layout
from protocols.dns import ProtocolError, frame
from protocols.dns.wire import question_key
from tests.udp_helpers import dnsmasq, free_udp_port, needs_dns_tools

AUTH = [
    "--auth-server=ns.test,127.0.0.1",
    "--auth-zone=test",
    "--auth-soa=1,hostmaster.test,1200,120,604800,30",
    "--auth-ttl=300",
]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[int]:
    hosts = tmp_path / "upstream.hosts"
    lines = [f"10.1.0.{i} many.test" for i in range(1, 101)]
    lines += ["10.0.0.1 a.test", "10.0.0.2 b.test"]
    hosts.write_text("\n".join(lines) + "\n")
    with dnsmasq(hosts, AUTH) as port:
        yield port


def udp_layout(*args: Any, **kwargs: Any) -> Any:
    proxy = Proxy()
    proxy.pipeline("p").decode_dns("udp").resolve_dns(*args, **kwargs).encode_dns("udp")
    return proxy.layout("p")


async def ask(layout: Any, query: DNSRecord, remote: str = "127.0.0.1", **values: Any) -> DNSRecord:
    """Send one query as a UDP client from ``remote`` would (with ``values`` in
    its context); the answer."""
    context = Context(remote=(remote, 40000))
    context.set(transport="udp", **values)
    async with open_pipeline(layout, context=context) as h:
        await h.send(bytes(query.pack()))
        with trio.fail_after(15):
            while not any(isinstance(e, Data) for e in h.output):
                await trio.sleep(0.01)
    (data,) = [e.data for e in h.output if isinstance(e, Data)]
    return DNSRecord.parse(data)


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.dns").__doc__ or ""
    example = doc.split("pipeline in memory::", 1)[1]
    exec(compile(textwrap.dedent(example), "filters.dns docstring", "exec"), {})


async def test_decode_encode_udp_one_datagram_one_message() -> None:
    proxy = Proxy()
    proxy.pipeline("p").decode_dns("udp").encode_dns("udp")
    queries = [DNSRecord.question(f"q{i}.test") for i in range(3)]
    out = await run_layout(proxy.layout("p"), [bytes(q.pack()) for q in queries] + [StreamEnd()])
    assert out == [Data(bytes(q.pack())) for q in queries] + [StreamEnd()]


async def test_decode_tcp_cuts_at_the_length_prefixes() -> None:
    proxy = Proxy()
    proxy.pipeline("p").decode_dns("tcp")
    queries = [DNSRecord.question(f"q{i}.test") for i in range(3)]
    stream = b"".join(frame(bytes(q.pack())) for q in queries)
    chunks = [stream[:3], stream[3:40], stream[40:]]  # split inside and across messages
    out = await run_layout(proxy.layout("p"), [*chunks, StreamEnd()])
    heads = [e.head for e in out if isinstance(e, MessageStart)]
    assert [h.q.qname for h in heads] == [q.q.qname for q in queries]
    assert sum(isinstance(e, MessageEnd) for e in out) == 3


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_garbage_gets_formerr_then_the_stream_ends(transport: str) -> None:
    proxy = Proxy()
    proxy.pipeline("p").decode_dns(transport).encode_dns(transport)
    garbage = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc"
    out = await run_layout(proxy.layout("p"), [frame(garbage) if transport == "tcp" else garbage])
    data, end = out
    assert isinstance(end, StreamEnd) and isinstance(end.error, ProtocolError)
    wire = data.data if transport == "udp" else data.data[2:]  # type: ignore[union-attr]
    answer = DNSRecord.parse(wire)
    assert answer.header.id == 0x1234 and answer.header.rcode == RCODE.FORMERR


def test_hosts_table(tmp_path: Path) -> None:
    table = HostsTable(
        ["# comment", "10.0.0.5 printer.lan printer  # trailing", "fd00::5 printer.lan"]
    )
    a = table.answer(DNSRecord.question("Printer.LAN."), 60)
    assert a is not None and [str(rr.rdata) for rr in a.rr] == ["10.0.0.5"]
    aaaa = table.answer(DNSRecord.question("printer.lan", "AAAA"), 60)
    assert aaaa is not None and [str(rr.rdata) for rr in aaaa.rr] == ["fd00::5"]
    mx = table.answer(DNSRecord.question("printer", "MX"), 60)
    assert mx is not None and mx.rr == [] and mx.header.rcode == RCODE.NOERROR  # NODATA
    ptr = table.answer(DNSRecord.question("5.0.0.10.in-addr.arpa", "PTR"), 60)
    assert ptr is not None and str(ptr.rr[0].rdata) == "printer.lan."
    assert table.answer(DNSRecord.question("other.lan"), 60) is None
    # knows() says the same from a question's wire-form key.
    for name, qtype, known in [
        ("Printer.LAN.", "A", True),
        ("printer", "MX", True),
        ("5.0.0.10.in-addr.arpa", "PTR", True),
        ("printer.lan", "PTR", False),
        ("other.lan", "A", False),
    ]:
        assert table.knows(question_key(DNSRecord.question(name, qtype))) is known, name
    with pytest.raises(ValueError, match=r"x\.hosts:2: 'nonsense' is not an IP"):
        HostsTable(["", "nonsense name"], "x.hosts")
    with pytest.raises(ValueError, match="cannot read hosts file"):
        HostsTable.load(tmp_path / "missing")


def test_read_views(tmp_path: Path) -> None:
    views = tmp_path / "views"
    views.write_text(
        "# subnet  what\n10.0.0.0/8 hosts=lab.hosts\n192.168.1.0/24 upstreams=1.1.1.1:53,[::1]:53\n"
    )
    assert read_views(views) == [
        DnsView("10.0.0.0/8", str(tmp_path / "lab.hosts"), None),
        DnsView("192.168.1.0/24", None, ["1.1.1.1:53", "[::1]:53"]),
    ]
    for bad, message in [
        ("nonsense hosts=x", "not a subnet"),
        ("10.0.0.0/8", "needs hosts"),
        ("10.0.0.0/8 color=blue", "expected hosts"),
        ("10.0.0.0/8 upstreams=nowhere", "bad"),
    ]:
        views.write_text(bad + "\n")
        with pytest.raises(ValueError, match=message):
            read_views(views)


def test_bad_resolve_arguments_are_load_errors(tmp_path: Path) -> None:
    for kwargs, message in [
        ({"timeout": 0}, "timeout"),
        ({"hosts": str(tmp_path / "missing")}, "cannot read hosts"),
        ({"views": [DnsView("nonsense", hosts=None, upstreams=["1.1.1.1:53"])]}, "subnet"),
        ({"cache_size": -1}, "cache_size"),
    ]:
        with pytest.raises(ConfigError, match=message):
            udp_layout(["127.0.0.1:53"], **kwargs)
    with pytest.raises(ConfigError, match="bad"):
        udp_layout(["nowhere"])


@needs_dns_tools
async def test_forwarding_and_cache(upstream: int) -> None:
    layout = udp_layout([f"127.0.0.1:{upstream}"])
    query = DNSRecord.question("a.test")
    first = await ask(layout, query)
    assert first.header.id == query.header.id
    assert [str(rr.rdata) for rr in first.rr] == ["10.0.0.1"]
    await trio.sleep(1.1)
    again = await ask(layout, DNSRecord.question("a.test"))
    assert [str(rr.rdata) for rr in again.rr] == ["10.0.0.1"]
    assert again.rr[0].ttl < first.rr[0].ttl  # from the cache, counting down


@needs_dns_tools
async def test_negative_answers_carry_the_soa(upstream: int) -> None:
    layout = udp_layout([f"127.0.0.1:{upstream}"])
    answer = await ask(layout, DNSRecord.question("missing.test"))
    assert answer.header.rcode == RCODE.NXDOMAIN
    assert [rr.rtype for rr in answer.auth] == [QTYPE.SOA]


@needs_dns_tools
async def test_a_large_answer_is_truncated_for_udp_and_fetched_whole(upstream: int) -> None:
    layout = udp_layout([f"127.0.0.1:{upstream}"])
    plain = await ask(layout, DNSRecord.question("many.test"))
    assert plain.header.tc == 1 and plain.rr == []
    query = DNSRecord.question("many.test")
    query.add_ar(EDNS0(udp_len=4096))
    big = await ask(layout, query)
    assert big.header.tc == 0 and len(big.rr) == 100  # dnsmasq truncated, we used TCP


@needs_dns_tools
async def test_views_by_client_subnet(upstream: int, tmp_path: Path) -> None:
    lab = tmp_path / "lab.hosts"
    lab.write_text("192.0.2.9 a.test\n")
    layout = udp_layout([f"127.0.0.1:{upstream}"], views=[DnsView("127.0.0.2/32", str(lab))])
    inside = await ask(layout, DNSRecord.question("a.test"), remote="127.0.0.2")
    outside = await ask(layout, DNSRecord.question("a.test"), remote="127.0.0.1")
    assert [str(rr.rdata) for rr in inside.rr] == ["192.0.2.9"]
    assert [str(rr.rdata) for rr in outside.rr] == ["10.0.0.1"]


@needs_dns_tools
async def test_failover_past_dead_and_silent_upstreams(upstream: int) -> None:
    silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    dead = free_udp_port()
    targets = [f"127.0.0.1:{dead}", f"127.0.0.1:{silent.getsockname()[1]}"]
    layout = udp_layout([*targets, f"127.0.0.1:{upstream}"], timeout=0.3)
    answer = await ask(layout, DNSRecord.question("b.test"))
    assert [str(rr.rdata) for rr in answer.rr] == ["10.0.0.2"]
    silent.close()


async def test_all_upstreams_down_is_servfail(caplog: pytest.LogCaptureFixture) -> None:
    silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    targets = [f"127.0.0.1:{free_udp_port()}", f"127.0.0.1:{silent.getsockname()[1]}"]
    layout = udp_layout(targets, timeout=0.3)
    answer = await ask(layout, DNSRecord.question("x.test"))
    assert answer.header.rcode == RCODE.SERVFAIL
    assert "no DNS upstream answered" in caplog.text
    assert "refused" in caplog.text and "no answer within 0.3s" in caplog.text
    silent.close()


@pytest.mark.parametrize(
    ("mangle", "rcode"),
    [("answer", RCODE.FORMERR), ("two_questions", RCODE.FORMERR), ("opcode", RCODE.NOTIMP)],
)
async def test_queries_it_does_not_serve_get_their_rcode(mangle: str, rcode: int) -> None:
    query = DNSRecord.question("x.test")
    if mangle == "answer":
        query.header.qr = 1
    elif mangle == "two_questions":
        query.add_question(DNSRecord.question("y.test").q)
    else:
        query.header.opcode = 2
    answer = await ask(udp_layout(["127.0.0.1:9"]), query)
    assert answer.header.rcode == rcode and answer.header.id == query.header.id


def test_the_guide_examples_run() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "dns.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})


def test_the_guide_views_example_is_a_valid_views_file(tmp_path: Path) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "dns.md"
    example = doc.read_text().split("### Views", 1)[1].split("```\n", 2)[1]
    views = tmp_path / "views"
    views.write_text(example)
    assert [v.subnet for v in read_views(views)] == ["10.1.0.0/16", "192.168.0.0/24", "fd00::/8"]


async def test_a_slow_query_does_not_hold_up_the_next(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("192.0.2.1 fast.lan\n")
    silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    layout = udp_layout([f"127.0.0.1:{silent.getsockname()[1]}"], hosts=str(hosts), timeout=0.5)
    slow, fast = DNSRecord.question("slow.test"), DNSRecord.question("fast.lan")
    context = Context(remote=("127.0.0.1", 40000))
    context.set(transport="udp")
    async with open_pipeline(layout, context=context) as h:
        await h.send(bytes(slow.pack()), bytes(fast.pack()), StreamEnd())
        with trio.fail_after(10):
            await h.ended.wait()
    silent.close()
    *data, end = h.output
    assert end == StreamEnd()  # passed on after the pending answer
    first, second = (DNSRecord.parse(e.data) for e in data)  # type: ignore[union-attr]
    assert first.header.id == fast.header.id and str(first.rr[0].rdata) == "192.0.2.1"
    assert second.header.id == slow.header.id and second.header.rcode == RCODE.SERVFAIL


async def test_max_pending_holds_the_next_query_back() -> None:
    silent = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await silent.bind(("127.0.0.1", 0))
    layout = udp_layout([f"127.0.0.1:{silent.getsockname()[1]}"], timeout=0.2, max_pending=1)
    queries = [DNSRecord.question(f"q{i}.test") for i in range(3)]
    context = Context(remote=("127.0.0.1", 40000))
    context.set(transport="udp")
    async with open_pipeline(layout, context=context) as h:
        await h.send(*(bytes(q.pack()) for q in queries), StreamEnd())
        with trio.fail_after(10):
            await h.ended.wait()
    silent.close()
    answers = [DNSRecord.parse(e.data) for e in h.output if isinstance(e, Data)]
    # One at a time: each query waited for the previous one's SERVFAIL.
    assert [a.header.id for a in answers] == [q.header.id for q in queries]
    assert {a.header.rcode for a in answers} == {RCODE.SERVFAIL}


def test_bad_transport_is_a_load_error() -> None:
    with pytest.raises(ConfigError, match="transport"):
        Proxy().pipeline("p").decode_dns("quic")
    with pytest.raises(ConfigError, match="max_pending"):
        udp_layout(["127.0.0.1:53"], max_pending=0)


@needs_dns_tools
async def test_a_cached_answer_echoes_the_question_as_asked(upstream: int) -> None:
    layout = udp_layout([f"127.0.0.1:{upstream}"])
    await ask(layout, DNSRecord.question("a.test"))
    mixed = await ask(layout, DNSRecord.question("A.TeSt"))  # from the cache
    assert str(mixed.q.qname) == "A.TeSt."
    assert [str(rr.rdata) for rr in mixed.rr] == ["10.0.0.1"]


@needs_dns_tools
async def test_read_and_unread_queries_share_the_cache(upstream: int) -> None:
    # The first query goes by in its wire form (nothing reads it); a filter reads
    # the second, which takes the parsed path: the same cache entry answers it.
    seen: list[str] = []

    def read_the_second(ctx: Context, query: DNSRecord) -> None:
        if ctx.get("second"):
            seen.append(str(query.q.qname))

    proxy = Proxy()
    (
        proxy.pipeline("p")
        .decode_dns("udp")
        .handle_message_start(read_the_second)
        .resolve_dns([f"127.0.0.1:{upstream}"])
        .encode_dns("udp")
    )
    layout = proxy.layout("p")
    first = await ask(layout, DNSRecord.question("b.test"))
    await trio.sleep(1.1)
    query = DNSRecord.question("B.test")
    again = await ask(layout, query, second=True)
    assert seen == ["B.test."]
    assert again.header.id == query.header.id and str(again.q.qname) == "B.test."
    assert [str(rr.rdata) for rr in again.rr] == ["10.0.0.2"]
    assert again.rr[0].ttl < first.rr[0].ttl  # the entry the first answer made
