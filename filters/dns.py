"""DNS filters: ``decode_dns``, ``encode_dns`` and ``resolve_dns``.

A DNS message in a pipeline is ``MessageStart(record), MessageEnd()`` where
``record`` is a :class:`dnslib.DNSRecord` (see :mod:`protocols.dns`); it carries no
``Data``. Records are shared like every event: a filter that changes a message
makes a new one (``DNSRecord.parse(record.pack())`` copies one).

A plain query (one question, no record but an EDNS0 OPT) is decoded as a
:class:`protocols.dns.wire.WireMessage`, a ``DNSRecord`` that parses its bytes
only when a filter first reads it; ``resolve_dns`` answers such a query from its
cache without parsing it or packing the answer (a cached answer is written for
the query on the wire: its ID, RD flag, question and aged TTLs), and forwards it
the same way, passing the server's answer on as it came but for the client's ID
(parsed once, to check and cache it). A filter that reads the query costs that
parse, and gets the same answer.

``decode_dns(transport=None)``
    ``Data`` in, messages out. Over UDP each ``Data`` is one datagram, so one
    message; over TCP the bytes are cut at the 2-byte length prefixes, whatever
    the segments. ``transport`` is ``"udp"`` or ``"tcp"``; ``None`` takes the
    listener's (``ctx.transport`` is ``"udp"`` on a UDP listener, see
    :mod:`pipeline.udp`). Bytes that are not a DNS message end the stream with
    ``StreamEnd(ProtocolError)``; the error carries the FORMERR answer, which
    ``encode_dns`` sends before it ends its own output.
``encode_dns(transport=None)``
    messages in, ``Data`` out: one datagram per message over UDP, length-prefixed
    over TCP. An input ``StreamEnd`` whose error is a DNS ``ProtocolError`` with an
    answer sends that answer first.
``resolve_dns(upstreams, ...)``
    answers each query message with an answer message: from a hosts file, from
    its cache, or from upstream servers (see :class:`ResolveDns`). Queries that
    wait for an upstream are answered as they complete, so one slow query does not
    hold up the others of its client (DNS clients match answers by ID).

Example (runnable): a DNS proxy answering ``printer.lan`` from a hosts file and
asking ``127.0.0.1:53`` for the rest, on UDP and TCP; here one query is fed to its
pipeline in memory::

    import tempfile
    import trio
    from dnslib import DNSRecord
    from pipeline import Data, Proxy
    from pipeline.testing import run_layout
    from protocols.dns import frame

    hosts = tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False)
    hosts.write("192.168.1.20  printer.lan\\n")
    hosts.close()

    def dns(p):
        p.decode_dns().resolve_dns(["127.0.0.1:53"], hosts=hosts.name).encode_dns()

    proxy = Proxy()
    dns(proxy.listen_udp("127.0.0.1:5353"))
    dns(proxy.listen("127.0.0.1:5353"))
    dns(proxy.pipeline("test"))

    query = DNSRecord.question("printer.lan", "A")
    tcp_query = frame(query.pack())          # a layout outside a UDP listener is TCP
    out = trio.run(run_layout, proxy.layout("test"), [Data(tcp_query)])
    (wire,) = [e.data for e in out if isinstance(e, Data)]
    answer = DNSRecord.parse(wire[2:])       # after the length prefix
    assert answer.header.id == query.header.id
    assert str(answer.a.rdata) == "192.168.1.20"
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import random
import socket
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSRecord  # type: ignore[import-untyped]

from pipeline.address import Rotation, format_address, starting_at
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.dns import (
    MAX_MESSAGE,
    ProtocolError,
    TcpFramer,
    answer_ttl,
    client_udp_size,
    error_reply,
    frame,
    parse,
    truncate,
)
from protocols.dns.wire import (
    AnswerTemplate,
    QuerySummary,
    WireMessage,
    answer_template,
    question_key,
    read_query,
)

from .balance import Balancer, parse_target

__all__ = ["DecodeDns", "DnsView", "EncodeDns", "HostsTable", "ResolveDns", "read_views"]

log = logging.getLogger("trioxy.dns")

_END = MessageEnd()


def _transport(value: str | None) -> str | None:
    if value not in (None, "udp", "tcp"):
        raise ValueError(f"transport must be 'udp', 'tcp' or None, got {value!r}")
    return value


class DecodeDns(Filter):
    """``decode_dns(transport=None)``: bytes to DNS messages; see the module docs."""

    name = "decode_dns"

    def __init__(self, transport: str | None = None) -> None:
        self.transport = _transport(transport)
        self._framer: TcpFramer | None = None
        self._udp: bool | None = None
        self._failed = False

    async def on_event(self, event: Event) -> None:
        if self._failed:
            return
        kind = type(event)
        if kind is Data:
            udp = self._udp
            if udp is None:
                transport = self.transport or self.pipeline.context.get("transport", "tcp")
                udp = self._udp = transport == "udp"
                if not udp:
                    self._framer = TcpFramer()
            try:
                if udp:
                    await self.output(MessageStart(_message(event.data)))  # type: ignore[union-attr]
                    await self.output(_END)
                    return
                assert self._framer is not None
                for message in self._framer.feed(event.data):  # type: ignore[union-attr]
                    await self.output(MessageStart(_message(message)))
                    await self.output(_END)
            except ProtocolError as exc:
                self._failed = True
                log.info("%s: %s", _peer(self), exc)
                await self.output(StreamEnd(exc))
        elif kind is StreamEnd:
            await self.output(event)
        # Message events on a byte stream carry nothing to decode: dropped.


def _message(wire: bytes) -> DNSRecord:
    """The message ``wire`` holds: a plain query stays in its wire form until a
    filter reads it (:class:`protocols.dns.wire.WireMessage`), anything else is
    parsed now (a malformed message raises :class:`ProtocolError`)."""
    summary = read_query(wire)
    if summary is not None:
        return WireMessage(wire, summary)
    return parse(wire)


class EncodeDns(Filter):
    """``encode_dns(transport=None)``: DNS messages to bytes; see the module docs."""

    name = "encode_dns"

    def __init__(self, transport: str | None = None) -> None:
        self.transport = _transport(transport)
        self._udp: bool | None = None
        self._head: Any = None

    def _is_udp(self) -> bool:
        udp = self._udp
        if udp is None:
            transport = self.transport or self.pipeline.context.get("transport", "tcp")
            udp = self._udp = transport == "udp"
        return udp

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is MessageStart:
            self._head = event.head  # type: ignore[union-attr]
        elif kind is MessageEnd:
            head, self._head = self._head, None
            if isinstance(head, DNSRecord):
                wire = bytes(head.pack())
                await self.output(Data(wire if self._is_udp() else frame(wire)))
        elif kind is StreamEnd:
            error = event.error  # type: ignore[union-attr]
            if isinstance(error, ProtocolError) and error.answer is not None:
                answer = error.answer
                await self.output(Data(answer if self._is_udp() else frame(answer)))
            await self.output(event)
        # Data between messages is not part of a DNS message: dropped.


# Hosts files ------------------------------------------------------------------


class HostsTable:
    """Names and addresses from a hosts-style file (``/etc/hosts`` format: an
    address, then names; ``#`` starts a comment), answering A, AAAA and PTR."""

    def __init__(self, lines: Iterable[str], source: str = "<hosts>") -> None:
        self.source = source
        self.forward: dict[str, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        self.reverse: dict[str, str] = {}
        for number, line in enumerate(lines, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            try:
                ip = ipaddress.ip_address(fields[0].split("%", 1)[0])
            except ValueError:
                raise ValueError(f"{source}:{number}: {fields[0]!r} is not an IP address") from None
            if len(fields) < 2:
                raise ValueError(f"{source}:{number}: no name after {fields[0]}")
            for name in fields[1:]:
                key = name.rstrip(".").lower()
                addresses = self.forward.setdefault(key, [])
                if ip not in addresses:
                    addresses.append(ip)
            self.reverse.setdefault(ip.reverse_pointer, fields[1].rstrip("."))

    @classmethod
    def load(cls, path: str | Path) -> HostsTable:
        """Read a hosts file; ``ValueError`` naming the file and line if it is bad."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read hosts file {str(path)!r}: {exc.strerror}") from None
        return cls(text.splitlines(), str(path))

    def knows(self, key: tuple[bytes, int, int]) -> bool:
        """Whether :meth:`answer` answers the question ``key`` (a name in wire
        form, lowered; its QTYPE; its QCLASS)."""
        labels = []
        wire, i = key[0], 0
        while wire[i]:
            labels.append(wire[i + 1 : i + 1 + wire[i]])
            i += 1 + wire[i]
        name = b".".join(labels).decode("latin-1")
        return name in (self.reverse if key[1] == QTYPE.PTR else self.forward)

    def answer(self, query: DNSRecord, ttl: int) -> DNSRecord | None:
        """The answer to ``query`` if the table knows its name, else ``None``. A
        known name without an address of the asked type answers NODATA."""
        q = query.q
        name = str(q.qname).rstrip(".").lower()
        qtype = q.qtype
        if qtype == QTYPE.PTR:
            target = self.reverse.get(name)
            if target is None:
                return None
            reply = query.reply(ra=1, aa=1)
            reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(target), ttl=ttl))
            return reply
        addresses = self.forward.get(name)
        if addresses is None:
            return None
        reply = query.reply(ra=1, aa=1)
        for ip in addresses:
            if ip.version == 4 and qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(str(ip)), ttl=ttl))
            elif ip.version == 6 and qtype in (QTYPE.AAAA, QTYPE.ANY):
                reply.add_answer(RR(q.qname, QTYPE.AAAA, rdata=AAAA(str(ip)), ttl=ttl))
        return reply

    def __repr__(self) -> str:
        return f"HostsTable({self.source!r}, {len(self.forward)} names)"


# Resolving --------------------------------------------------------------------


@dataclass(frozen=True)
class DnsView:
    """What clients from ``subnet`` see: their own ``hosts`` file and/or their own
    ``upstreams`` (``None``: the resolver's). The first view whose subnet holds the
    client's address applies; clients in none see the resolver's defaults."""

    subnet: str
    hosts: str | None = None
    upstreams: Sequence[str] | None = None


def read_views(path: str | Path) -> list[DnsView]:
    """Views from a file, one a line: a subnet, then ``hosts=PATH`` and/or
    ``upstreams=HOST:PORT[,HOST:PORT...]``; ``#`` starts a comment. A relative
    hosts path is relative to the views file. Example::

        # subnet           what its clients see
        10.1.0.0/16        hosts=lab.hosts
        192.168.0.0/24     upstreams=192.168.0.1:53
        fd00::/8           hosts=lab.hosts upstreams=[fd00::53]:53

    Raises ``ValueError`` naming the file and line of a mistake."""
    base = Path(path).parent
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read views file {str(path)!r}: {exc.strerror}") from None
    views: list[DnsView] = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            ipaddress.ip_network(fields[0], strict=False)
        except ValueError:
            raise ValueError(f"{where}: {fields[0]!r} is not a subnet") from None
        hosts: str | None = None
        upstreams: list[str] | None = None
        for field in fields[1:]:
            key, sep, value = field.partition("=")
            if key == "hosts" and sep and value:
                hosts = str(base / value)
            elif key == "upstreams" and sep and value:
                upstreams = [part for part in value.split(",") if part]
                for target in upstreams:
                    try:
                        parse_target(target)
                    except ValueError as exc:
                        raise ValueError(f"{where}: {exc}") from None
            else:
                raise ValueError(
                    f"{where}: {field!r}: expected hosts=PATH or upstreams=HOST:PORT,..."
                )
        if hosts is None and upstreams is None:
            raise ValueError(f"{where}: a view needs hosts=PATH and/or upstreams=...")
        views.append(DnsView(fields[0], hosts, upstreams))
    return views


#: A question: its name in wire form (ASCII letters lowered), QTYPE, QCLASS.
_Key = tuple[bytes, int, int]


class _Cache:
    """Answers by question, honouring their TTL, least recently used out first."""

    __slots__ = ("entries", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # question -> (answer, its wire size, stored at, expires at, its wire
        # template or None). The stored answer is never output itself: get()
        # hands out copies.
        self.entries: OrderedDict[
            _Key, tuple[DNSRecord, int, float, float, AnswerTemplate | None]
        ] = OrderedDict()

    def answer_wire(self, query: QuerySummary, now: float) -> bytes | None:
        """The cached answer to a plain query, written for it from the wire
        template (see :mod:`protocols.dns.wire`), or ``None``."""
        found = self.entries.get(query.key)
        if found is None:
            return None
        template = found[4]
        if template is None or now >= found[3]:
            return None  # (an expired entry goes in get())
        self.entries.move_to_end(query.key)
        return template.answer(query, int(now - found[2]))

    def get(self, key: _Key, now: float) -> tuple[DNSRecord, int] | None:
        """A copy of the cached answer, its TTLs lowered by its age, and its size."""
        found = self.entries.get(key)
        if found is None:
            return None
        stored_reply, size, stored, expires, _ = found
        if now >= expires:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        elapsed = int(now - stored)
        # New header and records (cheaper than parsing the wire form again); the
        # record data objects are shared, as nothing changes them.
        h = stored_reply.header
        reply = DNSRecord(
            DNSHeader(id=h.id, bitmap=h.bitmap),
            questions=list(stored_reply.questions),
            rr=[_aged(rr, elapsed) for rr in stored_reply.rr],
            auth=[_aged(rr, elapsed) for rr in stored_reply.auth],
            ar=[_aged(rr, elapsed) for rr in stored_reply.ar],
        )
        return reply, size

    def put(self, key: _Key, reply: DNSRecord, wire: bytes, ttl: int, now: float) -> None:
        if self.size <= 0 or ttl <= 0:
            return
        self.entries[key] = (reply, len(wire), now, now + ttl, answer_template(wire))
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def _aged(rr: RR, elapsed: int) -> RR:
    if rr.rtype == QTYPE.OPT:  # its "TTL" holds EDNS flags, not a time
        return rr
    return RR(rr.rname, rr.rtype, rr.rclass, max(0, rr.ttl - elapsed), rr.rdata)


class _Upstreams:
    """A list of DNS servers, tried round-robin from one query to the next."""

    __slots__ = ("balancer", "rotation", "targets")

    def __init__(self, upstreams: Sequence[str] | Balancer) -> None:
        self.balancer = upstreams if isinstance(upstreams, Balancer) else None
        names = upstreams.targets if isinstance(upstreams, Balancer) else upstreams
        if isinstance(names, str):
            names = [part for part in names.split(",") if part.strip()]
        self.targets = tuple(parse_target(t.strip()) for t in names)
        self.rotation = Rotation()

    def order(self) -> list[tuple[str, int]]:
        targets = self.targets
        if self.balancer is not None:
            return starting_at(parse_target(self.balancer.select()), targets)
        return self.rotation.order(targets)


class _View:
    __slots__ = ("cache", "hosts", "network", "upstreams")

    def __init__(
        self,
        network: ipaddress.IPv4Network | ipaddress.IPv6Network | None,
        hosts: HostsTable | None,
        upstreams: _Upstreams,
        cache_size: int,
    ) -> None:
        self.network = network
        self.hosts = hosts
        self.upstreams = upstreams
        self.cache = _Cache(cache_size)


class _Resolver:
    """State shared by every stream of one ``resolve_dns`` call: views, caches."""

    def __init__(
        self,
        upstreams: Sequence[str] | Balancer,
        hosts: str | HostsTable | None,
        views: Sequence[DnsView],
        cache_size: int,
    ) -> None:
        default_hosts = _hosts(hosts)
        default_upstreams = _Upstreams(upstreams)
        self.default = _View(None, default_hosts, default_upstreams, cache_size)
        self.views: list[_View] = []
        for view in views:
            if not isinstance(view, DnsView):
                raise ValueError(f"views must be DnsView objects, got {view!r}")
            try:
                network = ipaddress.ip_network(view.subnet, strict=False)
            except ValueError:
                raise ValueError(f"view subnet {view.subnet!r} is not a network") from None
            self.views.append(
                _View(
                    network,
                    _hosts(view.hosts) if view.hosts is not None else default_hosts,
                    _Upstreams(view.upstreams) if view.upstreams is not None else default_upstreams,
                    cache_size,
                )
            )

    def view(self, client: str | None) -> _View:
        if self.views and client is not None:
            try:
                ip = ipaddress.ip_address(client.split("%", 1)[0])
            except ValueError:
                return self.default
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            for view in self.views:
                assert view.network is not None
                if ip.version == view.network.version and ip in view.network:
                    return view
        return self.default


def _hosts(value: str | HostsTable | None) -> HostsTable | None:
    if value is None or isinstance(value, HostsTable):
        return value
    return HostsTable.load(value)


class _NoAnswer(Exception):
    """One upstream gave no usable answer (``reason`` says why)."""


class ResolveDns(Filter):
    """``resolve_dns(upstreams, *, timeout=2.0, hosts=None, views=(), cache_size=10000,
    local_ttl=60, max_pending=256)``: answer each DNS query.

    For each query message (``MessageStart(DNSRecord)``, answered on its
    ``MessageEnd``) the filter outputs one answer message, in this order of
    sources:

    1. the **hosts file** of the client's view: A, AAAA and PTR for the names it
       lists (authoritative, TTL ``local_ttl``; a listed name without an address
       of the asked type gets an empty NOERROR answer);
    2. the view's **cache**: an earlier upstream answer to the same question, its
       TTLs lowered by the time spent in the cache. Positive answers live as long
       as their shortest record, negative ones (NXDOMAIN, NODATA) as the SOA
       minimum of their authority section (RFC 2308); answers without a TTL
       (SERVFAIL, REFUSED, negative without SOA) are not cached. ``cache_size``
       answers at most per view (0: no cache), least recently used out first;
    3. the view's **upstreams**, tried round-robin from one query to the next:
       the query goes to one over UDP with a fresh ID from a fresh socket (a
       random source port); a truncated answer is asked again over TCP. An
       upstream that does not answer within ``timeout`` seconds, refuses the port
       (ICMP), or answers SERVFAIL or REFUSED is replaced by the next. When none
       answers the client gets SERVFAIL: after at most ``timeout`` times the number of
       upstreams.

    Concurrency: answers from the hosts file and the cache are output at once;
    a query sent upstream is waited for in a task of its own, and its answer is
    output when it arrives, so answers may leave in another order than the queries
    came (DNS clients match them by ID, over UDP and TCP alike: RFC 7766 6.2.1.1).
    At most ``max_pending`` queries of one stream wait for upstreams; the next one
    waits for room (the backpressure reaches the client). An input ``StreamEnd``
    is passed on once every pending answer has been output.

    The answer keeps the query's ID. On a UDP stream (``ctx.transport == "udp"``)
    an answer larger than the client accepts (512 bytes, or its EDNS0 payload
    size) is cut to its header and question with TC set, and the client asks
    again over TCP, where it gets the whole answer. Queries the filter does not
    serve get their RCODE: FORMERR for a message that is an answer or asks not
    exactly one question, NOTIMP for an opcode other than QUERY.

    ``upstreams`` is a list of ``"host:port"`` (or a comma-separated string, or a
    balancer); ``hosts`` a path (read once, at load) or a :class:`HostsTable`;
    ``views`` a list of :class:`DnsView` chosen by the client's address
    (``ctx.remote``).
    """

    name = "resolve_dns"

    def __init__(
        self,
        upstreams: Sequence[str] | Balancer | str,
        *,
        timeout: float = 2.0,
        hosts: str | HostsTable | None = None,
        views: Sequence[DnsView] = (),
        cache_size: int = 10000,
        local_ttl: int = 60,
        max_pending: int = 256,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        for name, value in (("cache_size", cache_size), ("local_ttl", local_ttl)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self.max_pending = max_pending
        self.timeout = float(timeout)
        self.local_ttl = local_ttl
        self._init_args = (upstreams, hosts, tuple(views), cache_size)
        self._query: DNSRecord | None = None
        self._own: _Resolver | None = None
        self._lock: trio.Lock | None = None
        self._pending = 0
        self._room: trio.Event | None = None
        self._end: Event | None = None

    @classmethod
    def shared(cls, *args: Any, **kwargs: Any) -> Any:
        """The views, hosts tables and caches, made once per builder call (a bad
        upstream, subnet or hosts file is a load error at the script's line)."""
        upstreams = args[0] if args else kwargs.get("upstreams")
        return _Resolver(
            upstreams,  # type: ignore[arg-type]
            kwargs.get("hosts"),
            tuple(kwargs.get("views", ())),
            kwargs.get("cache_size", 10000),
        )

    @property
    def resolver(self) -> _Resolver:
        state = getattr(getattr(self, "spec", None), "state", None)
        if isinstance(state, _Resolver):
            return state
        if self._own is None:  # made without a builder (a unit test)
            upstreams, hosts, views, cache_size = self._init_args
            self._own = _Resolver(upstreams, hosts, views, cache_size)
        return self._own

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is MessageStart:
            head = event.head  # type: ignore[union-attr]
            self._query = head if isinstance(head, DNSRecord) else None
        elif kind is MessageEnd:
            query, self._query = self._query, None
            if query is None:
                return
            view = self._view()
            summary = _summary(query)
            if summary is not None:
                wire = self._cached_wire(summary, view)
                if wire is not None:  # the common cache hit, never parsed
                    await self._output(WireMessage(wire))
                    return
            local = self._local(query, view)
            if local is not None:  # answered without waiting: no task
                await self._answer(query, *local)
                return
            # Waiting for an upstream happens in a task, so that on_event returns
            # at once and the next query of the stream is not held up behind it.
            if self._lock is None:
                self._lock = trio.Lock()
            while self._pending >= self.max_pending:  # backpressure on the client
                room = self._room = trio.Event()
                await room.wait()
            self._pending += 1
            self.pipeline.start_task(self._forward_and_answer, query, view, name="resolve_dns")
        elif kind is StreamEnd:
            if self._pending:
                self._end = event  # passed on after the answers still pending
            else:
                await self.output(event)

    async def resolve(self, query: DNSRecord) -> DNSRecord:
        """The answer to ``query`` (never raises for a network failure: SERVFAIL)."""
        view = self._view()
        found = self._local(query, view) or await self._forwarded(query, view)
        return found[0]

    def _view(self) -> _View:
        remote = self.pipeline.context.remote
        return self.resolver.view(remote[0] if remote else None)

    def _cached_wire(self, query: QuerySummary, view: _View) -> bytes | None:
        """The cached answer to a plain query written on the wire, if there is one
        that fits (a UDP answer too large for the client takes the full path,
        which truncates it) and the hosts file does not know the name."""
        if view.hosts is not None and view.hosts.knows(query.key):
            return None
        wire = view.cache.answer_wire(query, trio.current_time())
        if wire is None:
            return None
        if len(wire) > query.udp_size and self.pipeline.context.get("transport") == "udp":
            return None
        return wire

    def _local(self, query: DNSRecord, view: _View) -> tuple[DNSRecord, int | None] | None:
        """The answer known without asking anyone (an error, a hosts entry, a cached
        answer) and its size if known, or ``None``. A plain query still in its
        wire form is parsed only if one of them answers it."""
        summary = _summary(query)
        if summary is None:
            header = query.header
            if header.qr or len(query.questions) != 1:
                return error_reply(query, RCODE.FORMERR), None
            if header.opcode != 0:
                return error_reply(query, RCODE.NOTIMP), None
        hosts = view.hosts
        if hosts is not None and (summary is None or hosts.knows(summary.key)):
            local = hosts.answer(query, self.local_ttl)
            if local is not None:
                return local, None
        cached = view.cache.get(_key(query), trio.current_time())
        if cached is not None:
            header = query.header
            reply = cached[0]
            reply.header.id = header.id
            reply.header.rd = header.rd
            # The question as this client wrote it: resolvers that randomise the
            # case of names (0x20) check it.
            reply.questions = list(query.questions)
        return cached

    async def _forwarded(self, query: DNSRecord, view: _View) -> tuple[DNSRecord, int | None]:
        reply, wire = await self._forward(query, view.upstreams)
        ttl = answer_ttl(reply)
        if ttl is not None and wire is not None:
            # The cache keeps this object and never changes it once output: hits
            # get copies.
            view.cache.put(_key(query), reply, wire, ttl, trio.current_time())
        summary = _summary(query)
        if summary is not None and wire is not None:
            # The server's bytes with the client's ID: nothing to pack.
            return WireMessage(summary.ident.to_bytes(2, "big") + wire[2:]), len(wire)
        reply.header.id = query.header.id
        return reply, None if wire is None else len(wire)

    async def _forward_and_answer(self, query: DNSRecord, view: _View) -> None:
        reply, size = await self._forwarded(query, view)
        await self._answer(query, reply, size)
        self._pending -= 1
        room = self._room
        if room is not None:
            self._room = None
            room.set()
        end = self._end
        if end is not None and not self._pending:
            self._end = None
            await self.output(end)

    async def _answer(self, query: DNSRecord, reply: DNSRecord, size: int | None) -> None:
        if self.pipeline.context.get("transport") == "udp":
            summary = _summary(query)
            limit = client_udp_size(query) if summary is None else summary.udp_size
            if type(reply) is not WireMessage or size is None or size > limit:
                reply = truncate(reply, limit, size)
        await self._output(reply)

    async def _output(self, reply: DNSRecord) -> None:
        lock = self._lock
        if lock is None:
            await self.output(MessageStart(reply))
            await self.output(_END)
            return
        async with lock:  # two answers being output at once must not interleave
            await self.output(MessageStart(reply))
            await self.output(_END)

    async def _forward(
        self, query: DNSRecord, upstreams: _Upstreams
    ) -> tuple[DNSRecord, bytes | None]:
        """The first usable upstream answer and its wire form, or SERVFAIL (and
        ``None``)."""
        wire = bytearray(query.pack())
        key = _key(query)
        reasons: list[str] = []
        fallback: DNSRecord | None = None
        for host, port in upstreams.order():
            ident = random.getrandbits(16)
            wire[0:2] = ident.to_bytes(2, "big")
            text = format_address(host, port)
            try:
                with trio.fail_after(self.timeout):
                    reply, data = await _exchange_udp(host, port, bytes(wire), ident, key)
                    if reply.header.tc:
                        reply, data = await _exchange_tcp(host, port, bytes(wire), ident, key)
            except trio.TooSlowError:
                reasons.append(f"{text}: no answer within {self.timeout:g}s")
                continue
            except _NoAnswer as exc:
                reasons.append(f"{text}: {exc}")
                continue
            rcode = reply.header.rcode
            if rcode in (RCODE.SERVFAIL, RCODE.REFUSED):
                reasons.append(f"{text}: {RCODE.get(rcode)}")
                fallback = fallback or reply
                continue
            if upstreams.balancer is not None:
                upstreams.balancer.succeeded(text)
            return reply, data
        log.warning("%s: no DNS upstream answered %s: %s", _peer(self), query.q, "; ".join(reasons))
        return fallback or error_reply(query, RCODE.SERVFAIL), None

    def close(self) -> None:
        self._query = None


def _summary(query: DNSRecord) -> QuerySummary | None:
    """The summary of a plain query nothing has read (and so changed) yet."""
    if type(query) is WireMessage and not query.parsed:
        return query.summary
    return None


def _key(query: DNSRecord) -> _Key:
    summary = _summary(query)
    return question_key(query) if summary is None else summary.key


def _matches(reply: DNSRecord, ident: int, key: _Key) -> bool:
    """Whether ``reply`` answers the query ``ident`` asking ``key`` (its name,
    in any case, and its type)."""
    return (
        reply.header.id == ident
        and reply.header.qr == 1
        and len(reply.questions) == 1
        and question_key(reply)[:2] == key[:2]
    )


async def _exchange_udp(
    host: str, port: int, wire: bytes, ident: int, key: _Key
) -> tuple[DNSRecord, bytes]:
    """Send one query over UDP and wait for its answer (others are ignored)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not _is_ip(host):
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, addr = infos[0]
    else:
        addr = (host, port)
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            await sock.connect(addr)
            await sock.send(wire)
            while True:
                data = await sock.recv(MAX_MESSAGE)
                try:
                    reply = parse(data)
                except ProtocolError:
                    continue  # not an answer of ours: keep waiting
                if _matches(reply, ident, key):
                    return reply, data
        except OSError as exc:
            reason = "refused" if exc.errno == errno.ECONNREFUSED else (exc.strerror or str(exc))
            raise _NoAnswer(reason) from None


async def _exchange_tcp(
    host: str, port: int, wire: bytes, ident: int, key: _Key
) -> tuple[DNSRecord, bytes]:
    """Send one query over TCP (RFC 7766) and read its answer."""
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise _NoAnswer(f"TCP: {exc.strerror or exc}") from None
    async with stream:
        try:
            await stream.send_all(frame(wire))
            framer = TcpFramer()
            while True:
                chunk = await stream.receive_some(MAX_MESSAGE)
                if not chunk:
                    raise _NoAnswer("TCP: closed before answering")
                for message in framer.feed(chunk):
                    reply = parse(message)
                    if _matches(reply, ident, key):
                        return reply, message
        except (OSError, trio.BrokenResourceError) as exc:
            raise _NoAnswer(f"TCP: {exc}") from None
        except ProtocolError as exc:
            raise _NoAnswer(f"TCP: {exc.message}") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _peer(f: Filter) -> str:
    remote = f.pipeline.context.remote if hasattr(f, "pipeline") else None
    return format_address(*remote) if remote else "dns"


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [DecodeDns, EncodeDns, ResolveDns]
