"""Load balancers: choose the upstream a ``connect`` filter dials.

A balancer is built once, in the script, from a list of ``"host:port"`` targets
(validated there, so a bad address is a load error with the script's line), and
handed to ``connect`` in place of an address. For each new stream ``connect``
asks :meth:`Balancer.select` for a target; when that target does not answer it
fails over to the balancer's other ``targets``, in order after the one selected,
and reports each attempt with :meth:`Balancer.failed` or
:meth:`Balancer.succeeded`, so that an algorithm that tracks health or load can
learn from it.

Example: an L4 proxy spreading connections over two servers::

    from pipeline import Proxy
    from filters.balance import RoundRobin

    proxy = Proxy()
    proxy.listen(8000).connect(RoundRobin(["127.0.0.1:8081", "127.0.0.1:8082"]))

Algorithms register by name through the ``trioxy_balancers`` hook, exactly as a
plugin's would (``"round-robin"`` is :class:`RoundRobin`). Writing one: subclass
:class:`Balancer` and implement :meth:`~Balancer.select`; it runs in the event
loop's thread for every new stream, so it must not block, and should be O(1)
or close to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.address import format_address, parse_address
from pipeline.hookspecs import hookimpl

__all__ = ["Balancer", "RoundRobin", "parse_target"]


def parse_target(value: object) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) as ``(host, port)``, for a target to
    connect to: unlike a listen address, it needs a host and a non-zero port.
    Raises ``ValueError`` with a message fit for a script's author."""
    if not isinstance(value, str):
        raise ValueError(f"bad target {value!r}: expected a 'host:port' string")
    host, port = parse_address(value, default_host="")
    if not host:
        raise ValueError(
            f"bad target {value!r}: a connect target needs a host (write '127.0.0.1:{port}')"
        )
    if port == 0:
        raise ValueError(f"bad target {value!r}: port 0 cannot be connected to")
    return host, port


class Balancer:
    """Base of load-balancing algorithms over a fixed list of targets.

    ``targets`` holds the targets normalized to ``"host:port"`` form (IPv6 as
    ``"[addr]:port"``), in the order given, without duplicates.
    """

    targets: tuple[str, ...]

    def __init__(self, targets: Iterable[str]) -> None:
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
            raise ValueError(
                f"{type(self).__name__}() expects a list of 'host:port' targets, got {targets!r}"
            )
        seen: dict[str, None] = {}
        for target in targets:
            seen.setdefault(format_address(*parse_target(target)), None)
        if not seen:
            raise ValueError(f"{type(self).__name__}() needs at least one target")
        self.targets = tuple(seen)

    def select(self, ctx: Any = None) -> str:
        """The target for a new stream (``ctx`` is its context, which an algorithm
        such as hashing may read). Must not block."""
        raise NotImplementedError(f"{type(self).__name__} does not implement select()")

    def failed(self, target: str) -> None:
        """``target`` did not answer (refused, timed out). Default: ignored."""

    def succeeded(self, target: str) -> None:
        """A connection to ``target`` was established. Default: ignored."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.targets)!r})"


class RoundRobin(Balancer):
    """Each new stream gets the next target, in order, wrapping around."""

    def __init__(self, targets: Iterable[str]) -> None:
        super().__init__(targets)
        self._next = 0

    def select(self, ctx: Any = None) -> str:
        i = self._next
        self._next = i + 1 if i + 1 < len(self.targets) else 0
        return self.targets[i]


@hookimpl
def trioxy_balancers() -> dict[str, Any]:
    return {"round-robin": RoundRobin}
