"""An L4 TCP proxy (NAT style): every connection to ``LISTEN`` is relayed to one of
``UPSTREAMS``, chosen round-robin, with failover to the others when one does not
answer. The bytes are not looked at: the listener's pipeline is ``connect`` alone,
so trioxy relays the two sockets in the kernel (``splice``, zero copy) and the
proxy adds almost nothing to the path. Half-closes pass through (a client that
shuts its write side still gets the whole reply); when no upstream answers the
client is closed at once and one warning line says which upstreams failed and why.

Run it::

    trioxy run scripts/tcp_proxy.py
    LISTEN=0.0.0.0:9000 UPSTREAMS=10.0.0.5:80,10.0.0.6:80 trioxy run scripts/tcp_proxy.py

then point any TCP client at it, e.g. ``curl http://127.0.0.1:8000/``.

Environment variables (a bad value stops the script at load with one line
``tcp_proxy.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``            where to listen, ``host:port``, ``[v6]:port`` or a bare
                      port (every IPv4 address); default ``127.0.0.1:8000``
``UPSTREAMS``         comma-separated ``host:port`` list of servers;
                      default ``127.0.0.1:8080``
``CONNECT_TIMEOUT``   seconds to connect to one upstream; default ``5``
``IDLE_TIMEOUT``      seconds with no byte moving either way before the
                      connection is closed, or ``none``; default ``60``
``MAX_CONNECTIONS``   connections relayed at once (more wait in the listen
                      backlog), or ``none``; default ``none``
"""

from __future__ import annotations

from filters.balance import RoundRobin
from pipeline import Proxy
from pipeline.settings import address, count, optional, seconds, setting


def upstreams(text: str) -> RoundRobin:
    return RoundRobin([t for t in (part.strip() for part in text.split(",")) if t])


LISTEN = setting("LISTEN", "127.0.0.1:8000", address)
UPSTREAMS = setting("UPSTREAMS", "127.0.0.1:8080", upstreams)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "60", optional(seconds))
MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))

proxy = Proxy()
# connect alone in the pipeline: the runtime takes the zero-copy relay path.
proxy.listen(LISTEN, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT).connect(
    UPSTREAMS, connect_timeout=CONNECT_TIMEOUT, idle_timeout=IDLE_TIMEOUT
)
