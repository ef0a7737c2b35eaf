"""The default demo (``make run``): a web gateway with a static site and a
load-balanced API, all in one script, no outside service needed.

On ``LISTEN`` every request is routed by its path (a :class:`~filters.route.Router`
and ``branch``, in the per-request sub-pipeline of ``demux_http``):

* ``/api`` and everything below it is reverse-proxied to the demo backends,
  round-robin, one pick per request (``balance``), over pooled keep-alive
  connections (``mux_http`` keyed by the pick, ``connect``), with active health
  checks (``GET HEALTH_PATH`` on each backend every ``HEALTH_INTERVAL`` seconds);
* everything else is a file of ``ROOT`` (``serve_static``: content types, ETags
  and 304s, byte ranges, gzip, index files; 404 for what is not there).

The backends are served by this same script, one listener per address of
``BACKENDS``, named ``api-1``, ``api-2``... in that order. Each is a ``serve_http``
handler answering JSON that says which backend answered::

    {"backend": "api-1", "method": "GET", "path": "/api/hello", "time": "2026-..."}

``/health`` answers ``{"backend": "api-1", "healthy": true}``, and any other path
outside ``/api`` is 404 (JSON too).

Run it::

    make run                          # or: trioxy run scripts/gateway.py

When it serves, it logs the URLs to try (logger ``trioxy.gateway``, INFO), e.g.::

    curl -i http://127.0.0.1:8080/                # examples/www/index.html
    curl http://127.0.0.1:8080/api/hello          # api-1, then api-2, then api-1...
    curl -i http://127.0.0.1:8080/missing.html    # 404

To watch the health checks at work, make them ask for a path the backends do not
have: both are logged DOWN after three checks (``trioxy.health``), and requests
are still answered (when every backend is down, the balancer still picks one)::

    HEALTH_PATH=/nowhere HEALTH_INTERVAL=0.5 trioxy run scripts/gateway.py

The URLs are logged from a ``trioxy_startup`` hook that the script registers with
trioxy's plugin manager: the hook runs only when the listeners are bound by
``trioxy run`` (once per worker with ``--workers``), never for ``trioxy check``
or an in-memory test (``pipeline.testing.run_listener``), and it goes through the
same logger (and ``--log-level``) as everything else the server says.

Environment variables (a bad value stops the script at load with one line
``gateway.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``           where the gateway listens, ``host:port``, ``[v6]:port`` or a bare
                     port; default ``127.0.0.1:8080``
``ROOT``             the directory served at ``/``; default the repository's
                     ``examples/www`` (a relative path is relative to the current
                     directory); it must exist
``BACKENDS``         comma-separated addresses where this script serves its demo API
                     backends (as many as given), and that ``/api`` is balanced over;
                     default ``127.0.0.1:8081,127.0.0.1:8082``
``HEALTH_PATH``      the path the health checks ``GET`` on each backend (the demo
                     backends answer ``/health``); default ``/health``
``HEALTH_INTERVAL``  seconds between two checks of a backend; default ``2``
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filters.balance import RoundRobin
from filters.health import HealthCheck
from filters.route import Router
from filters.serve_http import Request
from pipeline import Builder, Context, Proxy, hookimpl
from pipeline.address import format_address, parse_address
from pipeline.plugins import plugin_manager
from pipeline.proxy import ProxyConfig
from pipeline.settings import address, addresses, seconds, setting

log = logging.getLogger("trioxy.gateway")

DEMO_SITE = Path(__file__).resolve().parent.parent / "examples" / "www"


def directory(text: str) -> Path:
    """An existing directory."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError("no such directory" if not path.exists() else "not a directory")
    return path


def url_path(text: str) -> str:
    if not text.startswith("/") or any(c in text for c in " \t\r\n"):
        raise ValueError("expected a path starting with '/'")
    return text


LISTEN = setting("LISTEN", "127.0.0.1:8080", address)
ROOT = setting("ROOT", str(DEMO_SITE), directory)
BACKENDS = setting("BACKENDS", "127.0.0.1:8081,127.0.0.1:8082", addresses)
HEALTH_PATH = setting("HEALTH_PATH", "/health", url_path)
HEALTH_INTERVAL = setting("HEALTH_INTERVAL", "2", seconds)

#: The demo backends by name, in the order of ``BACKENDS``.
NAMES = {target: f"api-{number}" for number, target in enumerate(BACKENDS, 1)}

API = RoundRobin(BACKENDS, health=HealthCheck(HEALTH_PATH, interval=HEALTH_INTERVAL))

ROUTES = Router()
ROUTES.add("/api/*", "api")  # "/api" itself included


def demo_backend(name: str) -> Callable[[Builder], None]:
    """The per-request layout of the demo backend called ``name``."""

    def answer(ctx: Context, request: Request) -> Any:
        if request.path == "/health":
            return {"backend": name, "healthy": True}
        if request.path != "/api" and not request.path.startswith("/api/"):
            return 404, {"backend": name, "error": f"no such path: {request.path}"}
        return {
            "backend": name,
            "method": request.method,
            "path": request.path,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }

    def layout(p: Builder) -> None:
        p.serve_http(answer)

    return layout


def to_api(p: Builder) -> None:
    """One ``/api`` request: pick a backend (``ctx.target``, which ``mux_http``
    keys its pool by), send the request there over a pooled connection."""
    p.balance(API).mux_http().to(lambda s: s.connect(API))


def to_site(p: Builder) -> None:
    p.serve_static(ROOT)


def is_api(ctx: Context) -> bool:
    return bool(ctx.route == "api")


def gateway(p: Builder) -> None:
    """One request of a client connection: ``/api...`` to the API, the rest to
    the static site."""
    p.route(ROUTES, default="site").branch({is_api: to_api}, to_site)


proxy = Proxy()
proxy.listen(LISTEN).demux_http().to(gateway)
for target, name in NAMES.items():
    proxy.listen(target).demux_http().to(demo_backend(name))


def browsable(listen: str) -> str:
    """``host:port`` a browser on this machine can open for a listen address
    (a wildcard host becomes the loopback address)."""
    host, port = parse_address(listen)
    return format_address({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port)


class StartupBanner:
    """Logs the URLs to try once ``trioxy run`` has bound this script's
    listeners (see the module docs for why a hook)."""

    @hookimpl
    def trioxy_startup(self, config: ProxyConfig) -> None:
        gateway_listener = proxy.build().listeners[0]
        if not any(spec is gateway_listener for spec in config.listeners):
            return  # another script, served by the same process
        base = f"http://{browsable(LISTEN)}"
        backends = ", ".join(f"{name} on {target}" for target, name in NAMES.items())
        log.info("try %s/ (static files from %s)", base, ROOT)
        log.info("try %s/api/hello (round-robin over %s)", base, backends)
        log.info("try %s/missing.html (404)", base)


# Registered under a fixed name, replacing the banner of an earlier load of this
# script in the same process (tests load scripts many times).
_plugins = plugin_manager()
if _plugins.has_plugin("scripts.gateway"):
    _plugins.unregister(name="scripts.gateway")
_plugins.register(StartupBanner(), name="scripts.gateway")
