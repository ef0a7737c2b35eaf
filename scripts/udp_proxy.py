"""An L4 UDP proxy (NAT style): datagrams to ``LISTEN`` are relayed to one of
``UPSTREAMS`` and the replies come back to the sender, datagram for datagram.

Each client address (host and port) is a stream of its own, with its own socket
towards the upstream chosen for it round-robin: the upstream sees one source port
per client, and its replies go back to that client only. An upstream that answers
with ICMP "port unreachable" before it has replied anything is replaced by the
next one (the unanswered datagrams are sent again), so a dead upstream fails over.
A client silent for ``IDLE_TIMEOUT`` seconds (nothing either way) is forgotten;
its next datagram starts a new stream. The payload is not looked at: DNS, syslog,
NTP, game traffic... anything where one datagram is one message.

Run it::

    trioxy run scripts/udp_proxy.py
    LISTEN=0.0.0.0:53 UPSTREAMS=10.0.0.5:53,10.0.0.6:53 trioxy run scripts/udp_proxy.py

then send it datagrams, e.g. ``dig @127.0.0.1 -p 5300 example.com`` with a DNS
server as the upstream.

Environment variables (a bad value stops the script at load with one line
``udp_proxy.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``        where to listen (UDP), ``host:port``, ``[v6]:port`` or a bare port
                  (every IPv4 address); default ``127.0.0.1:5300``
``UPSTREAMS``     comma-separated ``host:port`` list of servers; default
                  ``127.0.0.1:53``
``IDLE_TIMEOUT``  seconds a client may stay silent before its stream ends, or
                  ``none``; default ``60``
``MAX_PEERS``     client addresses served at once (datagrams from more are
                  dropped); default ``10000``
"""

from __future__ import annotations

from filters.balance import RoundRobin
from pipeline import Proxy
from pipeline.settings import address, addresses, count, optional, seconds, setting

LISTEN = setting("LISTEN", "127.0.0.1:5300", address)
UPSTREAMS = setting("UPSTREAMS", "127.0.0.1:53", lambda text: RoundRobin(addresses(text)))
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "60", optional(seconds))
MAX_PEERS = setting("MAX_PEERS", "10000", count)

proxy = Proxy()
proxy.listen_udp(LISTEN, idle_timeout=IDLE_TIMEOUT, max_peers=MAX_PEERS).connect_udp(
    UPSTREAMS, idle_timeout=IDLE_TIMEOUT
)
