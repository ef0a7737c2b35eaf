"""Load balancers: choose the upstream a ``connect`` filter dials.

A balancer is built once, in the script, from a list of ``"host:port"`` targets
(validated there, so a bad address is a load error with the script's line), and
handed to ``connect`` in place of an address. For each new stream ``connect``
asks :meth:`Balancer.select` for a target. When that target does not answer
(the request was not sent yet), ``connect`` asks :meth:`Balancer.select_other`
for another one, excluding the targets already tried for this stream, until one
answers or none is left. It reports what happened: :meth:`~Balancer.acquire` /
:meth:`~Balancer.release` around each connection (the in-flight counts that
least-connections and power-of-two-choices read), :meth:`~Balancer.succeeded` /
:meth:`~Balancer.failed` for each connect, and ``failed`` again when an
established stream ends with an upstream error (a reset).

Algorithms (registered by name through the ``trioxy_balancers`` hook, exactly as
a plugin's would; :func:`make_balancer` builds one by name):

==========================  ==================================================
name                        algorithm
==========================  ==================================================
``round-robin``             :class:`RoundRobin`: each stream the next target
``weighted-round-robin``    :class:`WeightedRoundRobin`: nginx's smooth
                            weighted round-robin
``least-conn``              :class:`LeastConnections`: the fewest connections
                            in flight (relative to the weight)
``p2c``                     :class:`PowerOfTwoChoices`: two targets at random,
                            the less loaded of the two
``hash``                    :class:`ConsistentHash`: a hash ring keyed by a
                            function of the context (default: the client's IP
                            address) or by a request header
==========================  ==================================================

Weights: a target may be written ``"host:port=3"`` (or a ``{"host:port": 3}``
mapping be given); the default weight is 1. Every algorithm reads them
(round-robin ignores them: use ``weighted-round-robin``).

Passive health (every algorithm). ``max_fails`` consecutive failures of a target
(connects refused or timed out, streams reset; default 3) take it out for
``fail_timeout`` seconds (default 10): it is skipped while out. After that one
stream is let through as a trial; its success brings the target back, its
failure takes it out again for ``fail_timeout``. ``max_fails=0`` disables this.
When every target is out (passively or by active checks), the balancer does not
fail the stream: it picks the target that failed least recently, the one most
likely to have recovered. Each change of state is logged once on the
``trioxy.health`` logger.

Active health (``health=HealthCheck(path="/", interval=2.0, timeout=1.0,
rise=2, fall=3, host=None)``, see :mod:`filters.health`; ``path=None`` checks
with a TCP connect): every target is probed at an interval (an HTTP ``GET`` whose
status must be 2xx or 3xx, or a TCP connect); ``fall``
failed checks in a row mark it DOWN (skipped), ``rise`` good ones UP again (a
target taken out by passive health comes back then too). The checks run in the
server's service nursery, started when the server starts (for a balancer found
in the script's layouts; otherwise by the first stream that uses it), and stop
with the server. A target is DOWN for either reason; each change
between UP and DOWN is logged once, whichever mechanism saw it.

Sticky sessions (HTTP). :class:`Sticky` wraps a balancer: a request whose cookie
(or header) names a live target goes there; otherwise the inner balancer picks
and the response tells the client which target it got. Two filters carry it:
``balance(balancer)`` on the request side picks the target for each request and
sets ``ctx.target`` (the key for ``mux_http`` and what ``connect(balancer)``
dials first), and ``set_sticky()`` after ``mux_http`` adds the ``Set-Cookie``
(or header) that the ``Sticky`` balancer left in ``ctx.sticky_set`` for a new
session.

Example (runnable): weights, and a consistent hash that sends a client to the
same server every time::

    from filters.balance import ConsistentHash, WeightedRoundRobin, make_balancer
    from pipeline import Context

    wrr = WeightedRoundRobin(["10.0.0.1:80=5", "10.0.0.2:80", "10.0.0.3:80"])
    picks = [wrr.select() for _ in range(7)]
    assert picks == ["10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80",
                     "10.0.0.3:80", "10.0.0.1:80", "10.0.0.1:80"]

    ring = make_balancer("hash", ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])
    client = Context(remote=("192.0.2.7", 40000))
    assert len({ring.select(client) for _ in range(10)}) == 1

In a proxy, an L4 balancer is handed to ``connect``; an HTTP reverse proxy picks
per request, keys ``mux_http`` sessions by the pick, and marks sticky sessions::

    from pipeline import Proxy
    from filters.balance import LeastConnections, Sticky

    backends = Sticky(LeastConnections(["127.0.0.1:8081", "127.0.0.1:8082"]))
    proxy = Proxy()
    proxy.listen(8000).connect(LeastConnections(["127.0.0.1:9001", "127.0.0.1:9002"]))
    (proxy.listen(8080)
        .demux_http()
        .to(lambda p: p.balance(backends)
                       .mux_http(key=lambda ctx: ctx.target)
                       .to(lambda s: s.connect(backends))
                       .set_sticky()))

Writing an algorithm: subclass :class:`Balancer` and implement
:meth:`~Balancer.choose`, which gets the targets that are up (as
:class:`Backend` records with their weight and in-flight count) and returns one;
it runs in the event loop's thread for every new stream, so it must not block.
A class that is not a ``Balancer`` (any class with ``select(ctx)``) is wrapped by
:func:`make_balancer` so that it gets health tracking too.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.address import format_address, parse_address
from pipeline.events import Event, MessageStart
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.live import service_nursery

if TYPE_CHECKING:
    from pipeline.context import Context

    from .health import HealthCheck

__all__ = [
    "Backend",
    "Balance",
    "Balancer",
    "ConsistentHash",
    "LeastConnections",
    "PowerOfTwoChoices",
    "RoundRobin",
    "SetSticky",
    "Sticky",
    "WeightedRoundRobin",
    "make_balancer",
    "parse_target",
]

log = logging.getLogger("trioxy.health")

#: The context variable where :class:`Balance` leaves ``(balancer, target)``, so
#: that ``connect(balancer)`` in a mux session dials the target picked per request.
PICKED = "balanced"
#: The context variable where ``ConsistentHash(header=...)`` keeps a request's key.
HASH_KEY = "hash_key"


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


def _weighted(value: object, weight: object = None) -> tuple[str, int]:
    """A target and its weight from ``"host:port"``, ``"host:port=W"`` or a
    mapping's item; the target normalized."""
    if weight is None and isinstance(value, str) and "=" in value:
        value, _, text = value.rpartition("=")
        if not text.strip().isdigit():
            raise ValueError(f"bad weight in {value}={text!r}: expected a whole number")
        weight = int(text)
    if weight is None:
        weight = 1
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ValueError(f"bad weight {weight!r} for {value!r}: expected a whole number >= 1")
    return format_address(*parse_target(value)), weight


def _plural(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


class Backend:
    """What a balancer knows of one target: ``target`` (``"host:port"``),
    ``weight``, ``active`` (connections in flight), ``index`` (its position in
    :attr:`Balancer.targets`) and its health. Algorithms read it; only the
    balancer writes it."""

    __slots__ = (
        "active",
        "check_fails",
        "check_oks",
        "current",
        "fails",
        "index",
        "last_failure",
        "out",
        "retry_at",
        "target",
        "up",
        "weight",
    )

    def __init__(self, target: str, weight: int, index: int) -> None:
        self.target = target
        self.weight = weight
        self.index = index
        self.active = 0
        self.current = 0  # smooth weighted round-robin's running weight
        self.fails = 0  # consecutive failures (passive)
        self.out = False  # taken out by passive health
        self.retry_at = 0.0  # when out: the time a trial may be let through
        self.last_failure = float("-inf")
        self.up = True  # active checks' verdict
        self.check_fails = 0
        self.check_oks = 0

    def __repr__(self) -> str:
        state = "up" if self.up and not self.out else "down"
        return f"<Backend {self.target} w={self.weight} active={self.active} {state}>"


class Balancer:
    """Base of load-balancing algorithms over a fixed list of targets.

    ``targets`` holds the targets normalized to ``"host:port"`` form (IPv6 as
    ``"[addr]:port"``), in the order given, without duplicates; ``backends`` the
    matching :class:`Backend` records. Options (every algorithm): ``max_fails``
    and ``fail_timeout`` (passive health), ``health`` (a
    :class:`~filters.health.HealthCheck` for active checks), ``clock`` (a
    function giving seconds, for tests; default ``time.monotonic``).
    """

    targets: tuple[str, ...]
    backends: tuple[Backend, ...]

    def __init__(
        self,
        targets: Iterable[str] | Mapping[str, int],
        *,
        max_fails: int = 3,
        fail_timeout: float = 10.0,
        health: HealthCheck | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        name = type(self).__name__
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Iterable):
            raise ValueError(f"{name}() expects a list of 'host:port' targets, got {targets!r}")
        pairs = (
            [_weighted(t, w) for t, w in targets.items()]
            if isinstance(targets, Mapping)
            else [_weighted(t) for t in targets]
        )
        weights: dict[str, int] = {}
        for target, weight in pairs:
            weights.setdefault(target, weight)
        if not weights:
            raise ValueError(f"{name}() needs at least one target")
        if isinstance(max_fails, bool) or not isinstance(max_fails, int) or max_fails < 0:
            raise ValueError(f"max_fails must be a whole number >= 0, got {max_fails!r}")
        if (
            isinstance(fail_timeout, bool)
            or not isinstance(fail_timeout, (int, float))
            or fail_timeout <= 0
        ):
            raise ValueError(
                f"fail_timeout must be a positive number of seconds, got {fail_timeout!r}"
            )
        if health is not None:
            from .health import HealthCheck

            if not isinstance(health, HealthCheck):
                raise ValueError(f"health must be a HealthCheck, got {health!r}")
        self.targets = tuple(weights)
        self.backends = tuple(Backend(t, w, i) for i, (t, w) in enumerate(weights.items()))
        self._by_target = {b.target: b for b in self.backends}
        self.max_fails = max_fails
        self.fail_timeout = float(fail_timeout)
        self.health = health
        self.clock = clock or time.monotonic
        self._unavailable = 0  # backends out or down: 0 lets select skip the health scan
        self._checking = False

    # Selection -------------------------------------------------------------------

    def select(self, ctx: Context | None = None) -> str:
        """The target for a new stream (``ctx`` is its context, which an algorithm
        such as hashing may read). Never fails while there are targets: when every
        one is down, the one that failed least recently."""
        return self._pick(ctx, (), False).target

    def select_other(self, ctx: Context | None, tried: Iterable[str]) -> str | None:
        """Another target for a stream whose connects to ``tried`` failed, or
        ``None`` when every target has been tried."""
        exclude = set(tried)
        if len(exclude) >= len(self.backends) and all(t in exclude for t in self.targets):
            return None
        return self._pick(ctx, exclude, True).target

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        """The algorithm: one of ``candidates`` (never empty; the full
        :attr:`backends` tuple when every target is up and none is excluded).
        ``retry`` is true when the stream already failed on another target."""
        raise NotImplementedError(f"{type(self).__name__} does not implement choose()")

    def _pick(self, ctx: Context | None, exclude: set[str] | tuple[()], retry: bool) -> Backend:
        if self.health is not None and not self._checking:
            self._start_checks()
        if not self._unavailable and not exclude:
            return self.choose(ctx, self.backends, retry)
        now = self.clock()
        candidates = [
            b
            for b in self.backends
            if b.target not in exclude and b.up and (not b.out or now >= b.retry_at)
        ]
        if not candidates:  # every one is down: the least recently failed
            left = [b for b in self.backends if b.target not in exclude]
            chosen = min(left, key=lambda b: b.last_failure)
        else:
            chosen = self.choose(ctx, candidates, retry)
        if chosen.out and now >= chosen.retry_at:
            chosen.retry_at = now + self.fail_timeout  # one trial per fail_timeout
        return chosen

    def available(self, target: str) -> bool:
        """Whether ``target`` is one of ours and not taken out."""
        b = self._by_target.get(target)
        return b is not None and b.up and (not b.out or self.clock() >= b.retry_at)

    # Feedback from connect ------------------------------------------------------------

    def acquire(self, target: str) -> None:
        """A connection to ``target`` is being made (counted until released)."""
        b = self._by_target.get(target)
        if b is not None:
            b.active += 1

    def release(self, target: str) -> None:
        """A connection counted by :meth:`acquire` is over."""
        b = self._by_target.get(target)
        if b is not None and b.active > 0:
            b.active -= 1

    def failed(self, target: str, reason: str = "") -> None:
        """``target`` did not answer (refused, timed out) or reset a stream."""
        b = self._by_target.get(target)
        if b is None:
            return
        now = self.clock()
        b.last_failure = now
        b.fails += 1
        if not self.max_fails:
            return
        if b.out:
            b.retry_at = now + self.fail_timeout  # the trial failed: out again
        elif b.fails >= self.max_fails:
            b.out = True
            b.retry_at = now + self.fail_timeout
            self._recount()
            if not b.up:
                return  # already DOWN by the active checks: said then
            why = f": {reason}" if reason else ""
            log.warning(
                "backend %s DOWN (%s in a row%s); trying again in %gs",
                target,
                _plural(b.fails, "failure"),
                why,
                self.fail_timeout,
            )

    def succeeded(self, target: str) -> None:
        """A connection to ``target`` was established."""
        b = self._by_target.get(target)
        if b is None:
            return
        b.fails = 0
        if b.out:
            b.out = False
            self._recount()
            if b.up:
                log.info("backend %s UP (a connection succeeded)", target)

    # Active health -------------------------------------------------------------------

    def check_result(self, target: str, error: str | None) -> None:
        """Record one active check of ``target`` (``error`` is ``None`` when it
        passed) and apply the health check's ``rise``/``fall`` thresholds."""
        b = self._by_target.get(target)
        health = self.health
        if b is None or health is None:
            return
        if error is None:
            b.check_fails = 0
            b.check_oks += 1
            if (b.out or not b.up) and b.check_oks >= health.rise:
                b.up = True
                b.out = False  # the checks vouch for it: passive state starts afresh
                b.fails = 0
                self._recount()
                log.info("backend %s UP (%s)", target, _plural(b.check_oks, "good check"))
        else:
            b.check_oks = 0
            b.check_fails += 1
            b.last_failure = self.clock()
            if b.up and b.check_fails >= health.fall:
                b.up = False
                self._recount()
                if b.out:
                    return  # already DOWN by passive health: said then
                checks = _plural(b.check_fails, "failed check")
                log.warning("backend %s DOWN (%s: %s)", target, checks, error)

    @property
    def checks_running(self) -> bool:
        """Whether this balancer's active health checks are running."""
        return self._checking

    def _start_checks(self) -> None:
        nursery = service_nursery.get()
        if nursery is None:
            return  # no server around (a script loading, a plain function call)
        try:
            nursery.start_soon(self._run_checks, name=f"health checks {self!r}")
        except RuntimeError:  # the nursery is closing (the server stops): no checks
            return
        self._checking = True

    async def _run_checks(self) -> None:
        assert self.health is not None
        try:
            await self.health.run(self)
        finally:
            self._checking = False

    def _recount(self) -> None:
        self._unavailable = sum(1 for b in self.backends if b.out or not b.up)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.targets)!r})"


class RoundRobin(Balancer):
    """Each new stream gets the next target, in order, wrapping around (weights
    are ignored). A failover pick does not take a turn: it is the next target up
    after the one that failed."""

    def __init__(self, targets: Iterable[str] | Mapping[str, int], **options: Any) -> None:
        super().__init__(targets, **options)
        self._next = 0

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        n = len(self.backends)
        start = self._next
        if len(candidates) == n:  # all of them: O(1)
            chosen = candidates[start]
        else:  # the first candidate at or after the current turn
            chosen = min(candidates, key=lambda b: (b.index - start) % n)
        if not retry:
            self._next = chosen.index + 1 if chosen.index + 1 < n else 0
        return chosen


class WeightedRoundRobin(Balancer):
    """Smooth weighted round-robin, as nginx does it: on each pick every
    candidate's running weight grows by its weight, the largest is chosen and
    loses the total. Weights 5, 1, 1 give ``a a b a c a a``: each target's share
    is its weight's, and the picks of a heavy target are spread out."""

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        total = 0
        best = candidates[0]
        best_current = None
        for b in candidates:
            b.current += b.weight
            total += b.weight
            if best_current is None or b.current > best_current:
                best, best_current = b, b.current
        best.current -= total
        return best


class LeastConnections(Balancer):
    """The target with the fewest connections in flight relative to its weight
    (``active / weight``); ties go round-robin, so idle targets share the load."""

    def __init__(self, targets: Iterable[str] | Mapping[str, int], **options: Any) -> None:
        super().__init__(targets, **options)
        self._turn = 0

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        n = len(candidates)
        start = self._turn % n
        self._turn = start + 1
        best = candidates[start]
        for i in range(1, n):
            b = candidates[(start + i) % n]
            if b.active * best.weight < best.active * b.weight:
                best = b
        return best


class PowerOfTwoChoices(Balancer):
    """Power of two choices: two distinct targets drawn at random, the one with
    fewer connections in flight (relative to its weight) wins. Nearly as good as
    least-connections, without its herd behaviour when many proxies share the
    same view. ``seed`` makes the draws repeatable."""

    def __init__(
        self,
        targets: Iterable[str] | Mapping[str, int],
        *,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(targets, **options)
        self._random = random.Random(seed)

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        draw = self._random.randrange
        i = draw(n)
        j = draw(n - 1)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return b if b.active * a.weight < a.active * b.weight else a


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _hash_key(ctx: Context | None) -> str | None:
    return None if ctx is None else ctx.get(HASH_KEY)


def _client_ip(ctx: Context | None) -> str | None:
    remote = getattr(ctx, "remote", None)
    return remote[0] if remote else None


class ConsistentHash(Balancer):
    """Consistent hashing on a ring: each target owns ``replicas * weight``
    points (virtual nodes) of a 64-bit ring; a stream goes to the owner of the
    first point at or after the hash of its key (binary search on the sorted
    ring). Adding a target to N moves only about 1/(N+1) of the keys, all of
    them to the new target. A target that is down (or already tried) is skipped
    along the ring, so its keys spread over the others and come back when it does.

    ``key(ctx)`` gives the key (``str`` or ``bytes``); default: the client's IP
    address. ``header="X-User"`` instead hashes a request header (with the
    ``balance`` filter, which sees the request: it leaves the header's value in
    ``ctx.hash_key``, which the default key then reads, so a failover pick by
    ``connect`` hashes the same value). A key of ``None`` (no such header...) is
    spread round-robin."""

    def __init__(
        self,
        targets: Iterable[str] | Mapping[str, int],
        *,
        key: Callable[[Any], str | bytes | None] | None = None,
        header: str | None = None,
        replicas: int = 160,
        **options: Any,
    ) -> None:
        super().__init__(targets, **options)
        if key is not None and not callable(key):
            raise ValueError(f"key must be a function of the context, got {key!r}")
        if key is not None and header is not None:
            raise ValueError("ConsistentHash() takes a key function or a header, not both")
        if header is not None and (not isinstance(header, str) or not header.strip()):
            raise ValueError(f"bad header name {header!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a whole number >= 1, got {replicas!r}")
        self.header = header
        self.key = key or (_hash_key if header is not None else _client_ip)
        self.replicas = replicas
        ring = sorted(
            (_hash(f"{b.target}#{i}".encode()), b.index)
            for b in self.backends
            for i in range(replicas * b.weight)
        )
        self._points = [point for point, _ in ring]
        self._owners = [self.backends[index] for _, index in ring]
        self._turn = 0

    def select_for(self, ctx: Context, head: Any) -> str:
        """The target for one request (the ``balance`` filter's call): with
        ``header``, its value becomes the key."""
        if self.header is not None:
            headers = getattr(head, "headers", None)
            ctx.vars[HASH_KEY] = None if headers is None else headers.get(self.header)
        return self.select(ctx)

    def key_hash(self, key: str | bytes) -> int:
        """Where ``key`` falls on the ring."""
        return _hash(key.encode() if isinstance(key, str) else key)

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        key = self.key(ctx)
        if key is None:
            self._turn = (self._turn + 1) % len(candidates)
            return candidates[self._turn]
        owners = self._owners
        i = bisect_right(self._points, self.key_hash(key))
        if candidates is self.backends:
            return owners[i % len(owners)]
        allowed = {b.index for b in candidates}
        for step in range(len(owners)):
            b = owners[(i + step) % len(owners)]
            if b.index in allowed:
                return b
        return candidates[0]  # not reached: every candidate owns points


class _Adapted(Balancer):
    """A plugin's balancer that is not a :class:`Balancer` (any object with
    ``select(ctx)``), given health tracking: its pick is used when it is up and
    not excluded, else the first candidate in order."""

    def __init__(self, inner: Any, targets: Iterable[str], **options: Any) -> None:
        super().__init__(targets, **options)
        self.inner = inner

    def choose(self, ctx: Context | None, candidates: Sequence[Backend], retry: bool) -> Backend:
        picked = self._by_target.get(format_address(*parse_target(self.inner.select(ctx))))
        if picked is not None and (candidates is self.backends or picked in candidates):
            return picked
        return candidates[0]

    def __repr__(self) -> str:
        return f"{type(self.inner).__name__}({list(self.targets)!r})"


class Sticky(Balancer):
    """Sticky sessions over another balancer (HTTP, with the ``balance`` and
    ``set_sticky`` filters). A request whose cookie ``cookie`` (default
    ``trioxy_backend``), or whose header ``header`` when given instead, names a
    target that is up goes to that target; any other request is balanced by
    ``inner``, and ``ctx.sticky_set`` is set to ``(name, value)``: the
    ``Set-Cookie`` value (with ``cookie_attributes``, default ``Path=/;
    HttpOnly``) or the header that ``set_sticky()`` adds to the response. The
    value is an opaque token per target (a hash), not the target's address.

    Selection, feedback and health are the inner balancer's (one state)."""

    def __init__(
        self,
        inner: Balancer,
        *,
        cookie: str | None = None,
        header: str | None = None,
        cookie_attributes: str = "Path=/; HttpOnly",
    ) -> None:
        if not isinstance(inner, Balancer):
            raise ValueError(f"Sticky() wraps a balancer, got {inner!r}")
        if cookie is not None and header is not None:
            raise ValueError("Sticky() takes a cookie or a header, not both")
        for what, value in (("cookie", cookie), ("header", header)):
            if value is not None and (
                not isinstance(value, str) or not value or any(c in value for c in "=;, \t")
            ):
                raise ValueError(f"bad {what} name {value!r}")
        self.inner = inner
        self.targets = inner.targets
        self.backends = inner.backends
        self.header = header
        self.cookie = None if header is not None else (cookie or "trioxy_backend")
        self.cookie_attributes = cookie_attributes
        self._token = {
            t: hashlib.blake2b(t.encode(), digest_size=6).hexdigest() for t in self.targets
        }
        self._by_token = {v: k for k, v in self._token.items()}

    def token(self, target: str) -> str:
        """The cookie (or header) value that names ``target``."""
        return self._token[target]

    def requested(self, head: Any) -> str | None:
        """The target a request head asks for, if it names one of ours."""
        headers = getattr(head, "headers", None)
        if headers is None:
            return None
        if self.header is not None:
            value = headers.get(self.header)
            return None if value is None else self._by_token.get(value.strip())
        prefix = self.cookie + "="  # type: ignore[operator]
        for line in headers.get_all("cookie"):
            for part in line.split(";"):
                part = part.strip()
                if part.startswith(prefix):
                    return self._by_token.get(part[len(prefix) :])
        return None

    def select_for(self, ctx: Context, head: Any) -> str:
        """The target for one request: the one it asks for when that is up, else
        the inner balancer's pick, remembered in ``ctx.sticky_set``."""
        wanted = self.requested(head)
        if wanted is not None and self.inner.available(wanted):
            return wanted
        inner_for = getattr(self.inner, "select_for", None)
        target = inner_for(ctx, head) if inner_for is not None else self.inner.select(ctx)
        if self.header is not None:
            ctx.set(sticky_set=(self.header, self._token[target]))
        else:
            value = f"{self.cookie}={self._token[target]}"
            if self.cookie_attributes:
                value += "; " + self.cookie_attributes
            ctx.set(sticky_set=("Set-Cookie", value))
        return target

    def select(self, ctx: Context | None = None) -> str:
        return self.inner.select(ctx)

    def select_other(self, ctx: Context | None, tried: Iterable[str]) -> str | None:
        return self.inner.select_other(ctx, tried)

    def available(self, target: str) -> bool:
        return self.inner.available(target)

    def acquire(self, target: str) -> None:
        self.inner.acquire(target)

    def release(self, target: str) -> None:
        self.inner.release(target)

    def failed(self, target: str, reason: str = "") -> None:
        self.inner.failed(target, reason)

    def succeeded(self, target: str) -> None:
        self.inner.succeeded(target)

    def __repr__(self) -> str:
        return f"Sticky({self.inner!r})"


def make_balancer(
    name: str, targets: Iterable[str] | Mapping[str, int], **options: Any
) -> Balancer:
    """The balancer registered as ``name`` (``"round-robin"``, ``"least-conn"``,
    ``"p2c"``, ``"hash"``... or a plugin's) over ``targets``. ``options`` go to
    its constructor (``max_fails``, ``health``, ``key``...); a plugin class that
    is not a :class:`Balancer` is built with the targets alone and wrapped so
    that it gets health tracking. ``ValueError`` for an unknown name."""
    from pipeline.plugins import balancer_registry

    registry = balancer_registry()
    cls = registry.get(name)
    if cls is None:
        raise ValueError(f"unknown balancer {name!r}; known: {', '.join(sorted(registry))}")
    if isinstance(cls, type) and issubclass(cls, Balancer):
        return cls(targets, **options)
    plain = [t for t, _ in (_weighted(t) for t in targets)]
    return _Adapted(cls(plain), plain, **options)


# Filters -----------------------------------------------------------------------------


class Balance(Filter):
    """``balance(balancer, var="target")``: pick a target for each message.

    On every ``MessageStart`` the balancer picks a target (a :class:`Sticky`
    balancer reads the request's cookie or header), stored as ``ctx.<var>`` for
    the script (typically ``mux_http(key=lambda ctx: ctx.target)``); a
    ``connect`` given the same balancer dials that target first, and fails over
    through the balancer if it does not answer. Events pass unchanged."""

    name = "balance"

    def __init__(self, balancer: Balancer, var: str = "target") -> None:
        if not isinstance(balancer, Balancer):
            raise ValueError(f"balance() needs a balancer from filters.balance, got {balancer!r}")
        if not isinstance(var, str) or not var.isidentifier():
            raise ValueError(f"var must be a variable name, got {var!r}")
        self.balancer = balancer
        self.var = var
        self._select_for = getattr(balancer, "select_for", None)

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart:
            ctx = self.pipeline.context
            select_for = self._select_for
            if select_for is not None:
                target = select_for(ctx, event.head)
            else:
                target = self.balancer.select(ctx)
            ctx.vars[self.var] = target
            ctx.vars[PICKED] = (self.balancer, target)
        await self.output(event)


class SetSticky(Filter):
    """``set_sticky()``: on a response (``MessageStart`` whose head has headers),
    add the header a :class:`Sticky` balancer left in ``ctx.sticky_set`` (the
    ``Set-Cookie`` of a new sticky session), once. Place it after ``mux_http``."""

    name = "set_sticky"

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart:
            ctx = self.pipeline.context
            pending = ctx.get("sticky_set")
            head = event.head
            if pending is not None and hasattr(head, "headers") and hasattr(head, "replace"):
                headers = head.headers.copy()
                headers.add(*pending)
                event = MessageStart(head.replace(headers=headers))
                ctx.set(sticky_set=None)
        await self.output(event)


@hookimpl
def trioxy_balancers() -> dict[str, Any]:
    return {
        "round-robin": RoundRobin,
        "weighted-round-robin": WeightedRoundRobin,
        "least-conn": LeastConnections,
        "p2c": PowerOfTwoChoices,
        "hash": ConsistentHash,
    }


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Balance, SetSticky]
