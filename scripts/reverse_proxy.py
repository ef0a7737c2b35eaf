"""An HTTP reverse proxy with load balancing and health checks.

Every request to ``LISTEN`` is forwarded to one of ``UPSTREAMS``, chosen per
request by the ``BALANCE`` algorithm, over pooled keep-alive connections
(``demux_http``, ``mux_http`` keyed by the chosen upstream, ``connect``).

* An upstream that refuses a connection is replaced, for that request, by another
  one the balancer picks; 3 such failures in a row (``MAX_FAILS``) take it out for
  ``FAIL_TIMEOUT`` seconds (passive health), after which one request tries it.
* Active checks probe every upstream (``GET HEALTH_PATH``, a 2xx or 3xx passes)
  every ``HEALTH_INTERVAL`` seconds: ``HEALTH_FALL`` failures mark it DOWN,
  ``HEALTH_RISE`` successes UP again. Each change is logged once (logger
  ``trioxy.health``), e.g. ``backend 127.0.0.1:8081 DOWN (3 failed checks: HTTP 503)``.
  The checks start with the server and stop with it.
* When every upstream is down, the one that failed least recently is still tried;
  when nothing answers the client gets ``502 Bad Gateway`` (``504`` on a timeout).
* WebSocket upgrades pass through as a raw relay, each on an upstream
  connection of its own (see "WebSocket through the reverse proxy" in docs/http.md).
* ``STICKY_COOKIE`` enables sticky sessions: a response to a client without the
  cookie sets it (``Set-Cookie: NAME=token; Path=/; HttpOnly``, the token naming
  the upstream opaquely); requests carrying it go to that upstream while it is up.

Run it::

    trioxy run scripts/reverse_proxy.py
    UPSTREAMS=10.0.0.5:80=3,10.0.0.6:80 BALANCE=weighted-round-robin \\
        trioxy run scripts/reverse_proxy.py

then ``curl http://127.0.0.1:8080/``.

Environment variables (a bad value stops the script at load with one line
``reverse_proxy.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``            where to listen; default ``127.0.0.1:8080``
``UPSTREAMS``         comma-separated ``host:port``, each optionally with a weight
                      ``host:port=3``; default ``127.0.0.1:8081``
``BALANCE``           ``round-robin``, ``weighted-round-robin``, ``least-conn``,
                      ``p2c`` or ``hash`` (consistent hashing of the client's IP
                      address), or a plugin's algorithm; default ``round-robin``
``STICKY_COOKIE``     a cookie name for sticky sessions, or ``none``; default ``none``
``HEALTH_PATH``       the path the checks ``GET``, or ``none`` for TCP connect
                      checks; default ``/``
``HEALTH_INTERVAL``   seconds between two checks of an upstream; default ``2``
``HEALTH_TIMEOUT``    seconds for one check; default ``1``
``HEALTH_RISE``       good checks in a row that bring an upstream back; default ``2``
``HEALTH_FALL``       failed checks in a row that mark it down; default ``3``
``MAX_FAILS``         failed connections in a row that take an upstream out, or
                      ``none`` to never; default ``3``
``FAIL_TIMEOUT``      seconds an upstream stays out after ``MAX_FAILS``; default ``10``
``CONNECT_TIMEOUT``   seconds to connect to one upstream; default ``5``
``IDLE_TIMEOUT``      seconds with nothing moving before a connection (client or
                      upstream) is closed, or ``none``; default ``60``
``MAX_CONNECTIONS``   client connections served at once, or ``none``; default ``none``
"""

from __future__ import annotations

from filters.balance import Balancer, Sticky, make_balancer
from filters.health import HealthCheck
from pipeline import Builder, Proxy
from pipeline.plugins import balancer_registry
from pipeline.settings import address, count, optional, seconds, setting


def algorithm(text: str) -> str:
    if text not in balancer_registry():
        raise ValueError(f"expected one of {', '.join(sorted(balancer_registry()))}")
    return text


def path(text: str) -> str | None:
    if text.lower() == "none":
        return None
    if not text.startswith("/") or " " in text:
        raise ValueError("expected a path starting with '/', or none")
    return text


def cookie_name(text: str) -> str | None:
    if text.lower() == "none":
        return None
    if not text.isascii() or any(c in text for c in '=;, \t"()<>@:/[]?{}\\'):
        raise ValueError("expected a cookie name (letters, digits, '-', '_'), or none")
    return text


LISTEN = setting("LISTEN", "127.0.0.1:8080", address)
BALANCE = setting("BALANCE", "round-robin", algorithm)
STICKY_COOKIE = setting("STICKY_COOKIE", "none", cookie_name)
HEALTH = HealthCheck(
    setting("HEALTH_PATH", "/", path),
    interval=setting("HEALTH_INTERVAL", "2", seconds),
    timeout=setting("HEALTH_TIMEOUT", "1", seconds),
    rise=setting("HEALTH_RISE", "2", count),
    fall=setting("HEALTH_FALL", "3", count),
)
MAX_FAILS = setting("MAX_FAILS", "3", optional(count)) or 0
FAIL_TIMEOUT = setting("FAIL_TIMEOUT", "10", seconds)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "60", optional(seconds))
MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))


def upstreams(text: str) -> Balancer:
    targets = [part.strip() for part in text.split(",") if part.strip()]
    balancer = make_balancer(
        BALANCE, targets, max_fails=MAX_FAILS, fail_timeout=FAIL_TIMEOUT, health=HEALTH
    )
    return balancer if STICKY_COOKIE is None else Sticky(balancer, cookie=STICKY_COOKIE)


BACKENDS = setting("UPSTREAMS", "127.0.0.1:8081", upstreams)


def upstream(s: Builder) -> None:
    """The bytes of one pooled connection: to the upstream picked for the request
    that opened it (failing over through the balancer if it refuses)."""
    s.connect(BACKENDS, connect_timeout=CONNECT_TIMEOUT, idle_timeout=IDLE_TIMEOUT)


def forward(p: Builder) -> None:
    """One request: pick an upstream (``ctx.target``, which ``mux_http`` uses as
    its pool key), send the request there, mark a new sticky session."""
    p.balance(BACKENDS).mux_http(max_idle=IDLE_TIMEOUT).to(upstream)
    if STICKY_COOKIE is not None:
        p.set_sticky()


proxy = Proxy()
proxy.listen(LISTEN, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT).demux_http().to(
    forward
)
