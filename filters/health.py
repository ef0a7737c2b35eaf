"""Active health checks for the balancers of :mod:`filters.balance`.

A :class:`HealthCheck` given to a balancer (``RoundRobin(targets,
health=HealthCheck(path="/health"))``) probes every target at an interval:

* HTTP (``path`` given, the default ``"/"``): a ``GET path HTTP/1.1`` with
  ``Connection: close`` over a plain TCP connection; a ``2xx`` or ``3xx`` status
  line within ``timeout`` passes (the rest of the answer is not read);
* TCP (``path=None``): the connection is accepted within ``timeout``.

``fall`` failed checks in a row (default 3) mark the target DOWN: the balancer
skips it. ``rise`` good checks in a row (default 2) mark it UP again. Each change
is logged once, on the ``trioxy.health`` logger::

    backend 127.0.0.1:8081 DOWN (3 failed checks: connection refused)
    backend 127.0.0.1:8081 UP (2 good checks)

Targets start UP (as in HAProxy and nginx): a proxy serves at once and the first
``fall`` checks correct it. The checks run as one task per target in the
server's service nursery (:data:`pipeline.live.service_nursery`), from the
server's start until it stops: a ``trioxy_startup`` hook here finds the balancers
that the configuration's filters are given (``connect(balancer)``,
``balance(balancer)``, a ``Sticky``'s inner balancer...) and starts their checks,
so a target that is down is known before the first client comes. A balancer the
configuration does not show (used only inside a callback), or one used in memory
without a server (:mod:`pipeline.testing`, which also has a service nursery),
starts its checks with the first stream that uses it. A balancer can also be
checked directly: ``await check.run(balancer)`` runs until cancelled.

Example (runnable): a TCP check against a port that refuses marks it DOWN::

    import logging, socket, trio
    from filters.balance import RoundRobin
    from filters.health import HealthCheck

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"   # closed below: refuses
    balancer = RoundRobin([dead], health=HealthCheck(path=None, interval=0.01, fall=2))

    async def main():
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(balancer.health.run, balancer)
                while balancer.backends[0].up:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert not balancer.backends[0].up

    trio.run(main)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio

from pipeline.hookspecs import hookimpl
from pipeline.layout import Layout, LayoutRef

from .balance import Balancer, parse_target

if TYPE_CHECKING:
    from pipeline.proxy import ProxyConfig

__all__ = ["HealthCheck", "balancers_in"]


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


class HealthCheck:
    """How to probe a balancer's targets; see the module docs.

    ``path`` (``None``: a TCP check), ``interval`` seconds between two checks of
    a target, ``timeout`` for one check (connect included; default the smaller
    of 1s and the interval), ``rise`` and ``fall`` thresholds, ``host`` for the
    ``Host`` header (default: the target's ``host:port``)."""

    def __init__(
        self,
        path: str | None = "/",
        *,
        interval: float = 2.0,
        timeout: float | None = None,
        rise: int = 2,
        fall: int = 3,
        host: str | None = None,
    ) -> None:
        if path is not None and (
            not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n")
        ):
            raise ValueError(f"bad health check path {path!r}: expected '/...' without spaces")
        if host is not None and (not isinstance(host, str) or any(c in host for c in " \r\n")):
            raise ValueError(f"bad health check host {host!r}")
        self.path = path
        self.interval = _positive("interval", interval)
        self.timeout = min(1.0, self.interval) if timeout is None else _positive("timeout", timeout)
        self.rise = _count("rise", rise)
        self.fall = _count("fall", fall)
        self.host = host

    async def run(self, balancer: Balancer) -> None:
        """Check every target of ``balancer`` forever (until cancelled), feeding
        the results to :meth:`Balancer.check_result`."""
        async with trio.open_nursery() as nursery:
            for target in balancer.targets:
                nursery.start_soon(self._watch, balancer, target, name=f"health check {target}")

    async def _watch(self, balancer: Balancer, target: str) -> None:
        while True:
            balancer.check_result(target, await self.probe(target))
            await trio.sleep(self.interval)

    async def probe(self, target: str) -> str | None:
        """One check of ``target``: ``None`` if it passed, else a short reason
        (``"connection refused"``, ``"timed out after 1s"``, ``"HTTP 503"``)."""
        host, port = parse_target(target)
        with trio.move_on_after(self.timeout):
            try:
                return await self._probe(host, port, target)
            except socket.gaierror as exc:
                return f"cannot resolve {host!r} ({exc.strerror})"
            except OSError as exc:
                return os.strerror(exc.errno).lower() if exc.errno else str(exc) or "error"
        return f"timed out after {self.timeout:g}s"

    async def _probe(self, host: str, port: int, target: str) -> str | None:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with trio.socket.socket(family, kind, proto) as sock:
            await sock.connect(address)
            if self.path is None:
                return None
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host or target}\r\n"
                "User-Agent: trioxy-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            )
            await sock.send(request.encode("latin-1"))
            received = b""
            while b"\n" not in received and len(received) < 4096:
                chunk = await sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        line = received.split(b"\n", 1)[0].strip()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            if not received:
                return "closed without answering"
            return f"not an HTTP answer: {line[:40]!r}"
        status = int(parts[1])
        if 200 <= status < 400:
            return None
        return f"HTTP {status}"

    def __repr__(self) -> str:
        what = "tcp" if self.path is None else f"http {self.path}"
        return (
            f"HealthCheck({what}, interval={self.interval:g}, timeout={self.timeout:g}, "
            f"rise={self.rise}, fall={self.fall})"
        )


# Starting with the server --------------------------------------------------------------


def balancers_in(config: ProxyConfig) -> Iterator[Balancer]:
    """Every :class:`~filters.balance.Balancer` the configuration's filters are
    given, once each: in the arguments of every filter of every layout reachable
    from the listeners (and the named layouts), inside lists, tuples, sets and
    dicts, and inside balancers that wrap another (``Sticky``). Balancers that only
    a callback knows are not found."""
    seen: set[int] = set()
    stack: list[object] = [spec.layout for spec in config.listeners]
    stack.extend(config.layouts.values())
    while stack:
        value = stack.pop()
        if isinstance(value, (str, bytes, int, float)) or value is None:
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, Layout):
            for spec in value.specs:
                stack.extend(spec.args)
                stack.extend(spec.kwargs.values())
                stack.extend(spec.subs)
        elif isinstance(value, LayoutRef):
            stack.append(value.layout)
        elif isinstance(value, Balancer):
            yield value
            inner = getattr(value, "inner", None)
            if inner is not None:
                stack.append(inner)
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())


@hookimpl
def trioxy_startup(config: ProxyConfig) -> None:
    """Start the active checks of the configuration's balancers with the server
    (the runtime has set up its service nursery before this hook runs)."""
    for balancer in balancers_in(config):
        if getattr(balancer, "health", None) is not None and not balancer.checks_running:
            balancer._start_checks()  # started here instead of by the first stream
