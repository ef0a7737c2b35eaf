"""A caching DNS proxy: queries to ``LISTEN`` (UDP and TCP, on the same port) are
answered from a hosts file, from the cache, or by one of ``UPSTREAMS``.

* **Forwarding with failover**: each query goes to the upstreams round-robin; one
  that does not answer within ``TIMEOUT`` seconds, refuses, or answers SERVFAIL
  or REFUSED is replaced by the next. When none answers the client gets SERVFAIL
  (after at most ``TIMEOUT`` times the number of upstreams). A truncated upstream
  answer is asked again over TCP.
* **Cache**: answers are kept for their TTL (the TTLs a client sees count down),
  negative answers (NXDOMAIN, NODATA) for their SOA minimum (RFC 2308).
* **Local names**: ``HOSTS``, a hosts-style file (``address name...``), answers A,
  AAAA and PTR for the names it lists.
* **Views**: ``VIEWS``, a file of ``SUBNET hosts=PATH upstreams=HOST:PORT,...``
  lines, gives clients of a subnet their own hosts file and/or upstreams (first
  match wins; see ``filters.dns.read_views``).
* **Truncation**: an answer too large for a UDP client (512 bytes, or its EDNS0
  size) is cut with TC set; the client asks again over TCP and gets all of it.
* Malformed queries get FORMERR.

Run it::

    trioxy run scripts/dns_proxy.py
    UPSTREAMS=1.1.1.1:53,9.9.9.9:53 HOSTS=/etc/hosts trioxy run scripts/dns_proxy.py
    dig @127.0.0.1 -p 5353 example.com

Environment variables (a bad value stops the script at load with one line
``dns_proxy.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``       where to listen, UDP and TCP: ``host:port``, ``[v6]:port`` or a
                 bare port (every IPv4 address); default ``127.0.0.1:5353``
``UPSTREAMS``    comma-separated ``host:port`` list of DNS servers; default
                 ``127.0.0.1:53``
``HOSTS``        a hosts-style file of local names, or ``none``; default ``none``
``VIEWS``        a file of per-subnet views, or ``none``; default ``none``
``CACHE_SIZE``   answers cached (per view), ``0`` for no cache; default ``10000``
``TIMEOUT``      seconds to wait for one upstream's answer; default ``2``
``IDLE_TIMEOUT`` seconds a UDP client or TCP connection may stay silent before
                 its stream is closed; default ``30``
"""

from __future__ import annotations

from filters.dns import HostsTable, read_views
from pipeline import Proxy
from pipeline.layout import Builder
from pipeline.settings import address, addresses, optional, seconds, setting


def whole_number(text: str) -> int:
    if not text.isdigit():
        raise ValueError("expected a whole number >= 0")
    return int(text)


LISTEN = setting("LISTEN", "127.0.0.1:5353", address)
UPSTREAMS = setting("UPSTREAMS", "127.0.0.1:53", addresses)
HOSTS = setting("HOSTS", "none", optional(HostsTable.load))
VIEWS = setting("VIEWS", "none", optional(read_views))
CACHE_SIZE = setting("CACHE_SIZE", "10000", whole_number)
TIMEOUT = setting("TIMEOUT", "2", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "30", seconds)


def dns(p: Builder) -> None:
    # decode_dns/encode_dns read the transport (UDP or TCP) from ctx.transport.
    p.decode_dns().resolve_dns(
        UPSTREAMS, timeout=TIMEOUT, hosts=HOSTS, views=VIEWS or (), cache_size=CACHE_SIZE
    ).encode_dns()


proxy = Proxy()
dns(proxy.listen_udp(LISTEN, idle_timeout=IDLE_TIMEOUT))
dns(proxy.listen(LISTEN, idle_timeout=IDLE_TIMEOUT))
