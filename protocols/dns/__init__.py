"""DNS, sans-IO, over `dnslib <https://github.com/paulc/dnslib>`_.

A DNS message is dnslib's :class:`~dnslib.DNSRecord`, used as is (its header,
questions and the three record sections, each record with a mutable ``ttl``):
this package adds what a proxy needs around it, and no I/O.

* :func:`parse` turns one message's bytes into a ``DNSRecord``; anything else
  raises :class:`ProtocolError` carrying the FORMERR answer to send.
* :class:`TcpFramer` cuts a TCP byte stream into messages (RFC 1035 4.2.2: a
  2-byte length before each); :func:`frame` adds the prefix.
* :func:`error_reply`, :func:`truncate` and :func:`answer_ttl` build the answers a
  server makes itself: an error with a given RCODE, an answer cut to fit a UDP
  client (TC set), and the time an answer may be cached (RFC 2308 for negative
  answers).

Example (runnable)::

    from dnslib import DNSRecord
    from protocols.dns import TcpFramer, frame, parse

    query = DNSRecord.question("example.com", "AAAA")
    wire = query.pack()
    assert parse(wire).q.qname == "example.com"

    framer = TcpFramer()
    stream = frame(wire) + frame(wire)
    assert framer.feed(stream[:5]) == []            # a message split across segments
    assert framer.feed(stream[5:]) == [wire, wire]  # and two in one segment
"""

from __future__ import annotations

from .codec import (
    DEFAULT_UDP_SIZE,
    MAX_MESSAGE,
    TcpFramer,
    answer_ttl,
    client_udp_size,
    error_reply,
    frame,
    parse,
    truncate,
)
from .errors import FORMERR, ProtocolError

__all__ = [
    "DEFAULT_UDP_SIZE",
    "FORMERR",
    "MAX_MESSAGE",
    "ProtocolError",
    "TcpFramer",
    "answer_ttl",
    "client_udp_size",
    "error_reply",
    "frame",
    "parse",
    "truncate",
]
