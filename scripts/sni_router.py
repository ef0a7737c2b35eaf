"""An SNI router: TLS passthrough, each connection relayed to the upstream of the
server name its client asked for.

trioxy reads the server name (SNI) from the client's ``ClientHello``
(``handle_tls_client_hello``) and relays the connection, bytes unchanged, to the
upstream ``ROUTES`` gives for that name (``connect``). TLS runs end to end
between the client and the upstream: the router holds no certificate and never
sees plaintext, so each upstream terminates TLS with its own certificate.

* Names are matched without regard to case. ``*.example`` matches every name
  ending in ``.example`` (``a.example``, ``x.y.example``, not ``example``); an
  exact name wins over a wildcard, a longer wildcard over a shorter one.
* A connection whose name has no route -- or that sends no name, or does not
  start with a TLS ClientHello at all -- goes to ``DEFAULT``; without a
  ``DEFAULT`` it is closed, with one warning line (logger ``trioxy.connect``)
  naming the client and the server name. The server keeps serving.
* An upstream that does not answer closes the client's connection, with one
  warning line naming it.

Run it::

    ROUTES=a.example=10.0.0.1:443,b.example=10.0.0.2:443 trioxy run scripts/sni_router.py
    curl --resolve a.example:9443:127.0.0.1 https://a.example:9443/

Environment variables (a bad value stops the script at load with one line
``sni_router.py:LINE: NAME='value': reason``, exit status 2):

``LISTEN``            where to listen; default ``127.0.0.1:9443``
``ROUTES``            comma-separated ``NAME=host:port`` routes, ``NAME`` a server
                      name or ``*.DOMAIN``, or ``none``; default ``none`` (then
                      ``DEFAULT`` is required)
``DEFAULT``           the upstream ``host:port`` of connections no route matches,
                      or ``none`` to close them; default ``none``
``CONNECT_TIMEOUT``   seconds to connect to the upstream; default ``5``
``IDLE_TIMEOUT``      seconds with no byte moving either way before the
                      connection is closed, or ``none``; default ``300``
``MAX_CONNECTIONS``   connections relayed at once (more wait in the listen
                      backlog), or ``none``; default ``none``
"""

from __future__ import annotations

import re
from typing import Any

from pipeline import Context, Proxy
from pipeline.address import format_address, parse_address
from pipeline.settings import address, count, optional, seconds, setting

#: A DNS name as SNI carries it: dot-separated labels of letters, digits, hyphens.
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


class NoRoute(LookupError):
    """No route for a connection's server name and no ``DEFAULT``."""


def upstream(text: str) -> str:
    """An upstream ``host:port`` (a host is required: there is no listen default)."""
    host, port = parse_address(text)
    if not host or host in ("0.0.0.0", "::"):
        raise ValueError(f"an upstream needs a host: {text!r}")
    return format_address(host, port)


def routes(text: str) -> dict[str, str]:
    """``NAME=host:port,...`` as a dict of lower-cased names (``*.domain`` kept as
    is) to upstreams."""
    if text.lower() == "none":
        return {}
    table: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, target = item.partition("=")
        name = name.strip().lower().rstrip(".")
        if not sep or not target.strip():
            raise ValueError(f"expected NAME=host:port, got {item!r}")
        bare = name.removeprefix("*.")
        if not _NAME.fullmatch(bare) or "*" in bare:
            raise ValueError(f"bad server name {name!r} (a DNS name, or *.domain)")
        if name in table:
            raise ValueError(f"{name!r} is routed twice")
        try:
            table[name] = upstream(target.strip())
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return table


ROUTES = setting("ROUTES", "none", routes)


def default_upstream(text: str) -> str | None:
    if text.lower() == "none":
        if not ROUTES:
            raise ValueError("nothing to route: set ROUTES, DEFAULT or both")
        return None
    return upstream(text)


LISTEN = setting("LISTEN", "127.0.0.1:9443", address)
DEFAULT = setting("DEFAULT", "none", default_upstream)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "300", optional(seconds))
MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))

#: Wildcard routes by the domain they cover (``"*.example"`` -> ``"example"``).
WILDCARDS = {name[2:]: target for name, target in ROUTES.items() if name.startswith("*.")}


def route(name: str | None) -> str | None:
    """The upstream for server ``name``: its exact route, else the longest
    wildcard covering it, else ``DEFAULT`` (``None``: no route at all)."""
    if name is not None:
        exact = ROUTES.get(name)
        if exact is not None:
            return exact
        dot = name.find(".")
        while dot != -1:
            found = WILDCARDS.get(name[dot + 1 :])
            if found is not None:
                return found
            dot = name.find(".", dot + 1)
    return DEFAULT


def remember_name(ctx: Context, hello: Any) -> None:
    """The ClientHello callback: keep the name the client asked for."""
    ctx.set(tls_sni=hello.server_name)


def target(ctx: Context) -> str:
    """``connect``'s target: the route of the connection's server name."""
    name = ctx.get("tls_sni")
    found = route(name)
    if found is None:
        asked = f"server name {name!r}" if name else "a connection without a server name"
        why = "" if name else " (no SNI, or not TLS)"
        raise NoRoute(f"no route for {asked} and no DEFAULT{why}; closing the connection")
    return found


proxy = Proxy()
(
    proxy.listen(LISTEN, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT)
    .handle_tls_client_hello(remember_name)
    .connect(target, connect_timeout=CONNECT_TIMEOUT, idle_timeout=IDLE_TIMEOUT)
)
