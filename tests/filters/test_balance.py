"""The balancing algorithms, passive health, sticky sessions and the registry."""

from __future__ import annotations

import collections
import importlib
import logging
import re
import textwrap
from typing import Any

import pytest

from filters.balance import (
    Backend,
    Balancer,
    ConsistentHash,
    LeastConnections,
    PowerOfTwoChoices,
    RoundRobin,
    Sticky,
    WeightedRoundRobin,
    make_balancer,
)
from filters.health import HealthCheck
from pipeline import ConfigError, Context, Data, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.plugins import balancer_registry, filter_registry
from pipeline.testing import run_layout
from protocols.http import Headers, RequestHead, ResponseHead

A, B, C, D = (f"127.0.0.1:{port}" for port in (8081, 8082, 8083, 8084))


class Clock:
    """A clock the test moves by hand (passive health reads it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trioxy.health"]


# Algorithms --------------------------------------------------------------------------


def test_smooth_weighted_round_robin_is_nginx_sequence() -> None:
    wrr = WeightedRoundRobin([f"{A}=5", B, C])
    picks = [wrr.select() for _ in range(14)]
    a, b, c = A, B, C
    assert picks == [a, a, b, a, c, a, a] * 2


def test_weighted_round_robin_shares_follow_the_weights() -> None:
    wrr = WeightedRoundRobin({A: 3, B: 2, C: 1})
    counts = collections.Counter(wrr.select() for _ in range(600))
    assert counts == {A: 300, B: 200, C: 100}


def test_round_robin_skips_a_target_that_is_out() -> None:
    rr = RoundRobin([A, B, C], max_fails=1, clock=Clock())
    rr.failed(B, "refused")
    assert [rr.select() for _ in range(4)] == [A, C, A, C]


def test_least_connections_prefers_the_idle_and_respects_weights() -> None:
    lc = LeastConnections([A, B, C])
    for target in (A, A, B):
        lc.acquire(target)
    assert lc.select() == C
    lc.acquire(C)
    assert lc.select() in (B, C)  # both at 1
    lc.release(A)
    lc.release(A)
    assert lc.select() == A
    weighted = LeastConnections({A: 3, B: 1})
    for _ in range(2):
        weighted.acquire(A)
    weighted.acquire(B)
    assert weighted.select() == A  # 2/3 < 1/1


def test_least_connections_ties_go_round_robin() -> None:
    lc = LeastConnections([A, B, C])
    assert sorted(lc.select() for _ in range(3)) == [A, B, C]


def test_power_of_two_choices_never_picks_the_most_loaded() -> None:
    p2c = PowerOfTwoChoices([A, B, C, D], seed=7)
    for _ in range(5):
        p2c.acquire(A)
    p2c.acquire(B)
    counts = collections.Counter(p2c.select() for _ in range(3000))
    assert A not in counts
    assert counts[C] > counts[B] and counts[D] > counts[B]


def test_power_of_two_choices_spreads_equal_load() -> None:
    p2c = PowerOfTwoChoices([A, B, C], seed=1)
    counts = collections.Counter(p2c.select() for _ in range(3000))
    assert set(counts) == {A, B, C}
    assert min(counts.values()) > 800


def test_power_of_two_choices_follows_live_counts() -> None:
    """Streams that stay open: p2c keeps the in-flight counts level."""
    p2c = PowerOfTwoChoices([A, B, C, D], seed=3)
    for _ in range(400):
        p2c.acquire(p2c.select())
    loads = [b.active for b in p2c.backends]
    assert max(loads) - min(loads) <= 2


def keys(n: int) -> list[str]:
    return [f"client-{i}" for i in range(n)]


def test_hash_is_stable_per_key_and_spreads_keys() -> None:
    targets = [f"10.0.0.{i}:80" for i in range(1, 6)]
    ring = ConsistentHash(targets, key=lambda ctx: ctx)
    first = {k: ring.select(k) for k in keys(10_000)}  # type: ignore[arg-type]
    assert first == {k: ring.select(k) for k in keys(10_000)}  # type: ignore[arg-type]
    shares = collections.Counter(first.values())
    assert set(shares) == set(targets)
    assert all(1400 < n < 2600 for n in shares.values())  # 2000 each, +-30%


@pytest.mark.parametrize("n", [2, 3, 5, 8, 10])
def test_hash_adding_a_target_moves_about_one_in_n_plus_one_keys(n: int) -> None:
    """The minimal-disruption property: adding one target to N moves about
    1/(N+1) of 10,000 keys, every one of them to the new target."""
    targets = [f"10.0.0.{i}:80" for i in range(1, n + 1)]
    added = f"10.0.1.{n + 1}:80"
    before = ConsistentHash(targets, key=lambda ctx: ctx)
    after = ConsistentHash([*targets, added], key=lambda ctx: ctx)
    moved = [k for k in keys(10_000) if before.select(k) != after.select(k)]  # type: ignore[arg-type]
    assert all(after.select(k) == added for k in moved)  # type: ignore[arg-type]
    expected = 10_000 / (n + 1)
    assert abs(len(moved) - expected) < 0.25 * expected, (len(moved), expected)


def test_hash_removing_a_target_moves_only_its_keys() -> None:
    targets = [f"10.0.0.{i}:80" for i in range(1, 6)]
    full = ConsistentHash(targets, key=lambda ctx: ctx)
    fewer = ConsistentHash(targets[:-1], key=lambda ctx: ctx)
    for k in keys(5000):
        if full.select(k) != targets[-1]:  # type: ignore[arg-type]
            assert fewer.select(k) == full.select(k)  # type: ignore[arg-type]


def test_hash_skips_a_down_target_and_keys_come_back() -> None:
    clock = Clock()
    ring = ConsistentHash([A, B, C], key=lambda ctx: ctx, max_fails=1, clock=clock)
    first = {k: ring.select(k) for k in keys(3000)}  # type: ignore[arg-type]
    ring.failed(B, "refused")
    during = {k: ring.select(k) for k in keys(3000)}  # type: ignore[arg-type]
    assert B not in during.values()
    assert all(during[k] == first[k] for k in first if first[k] != B)
    ring.succeeded(B)
    assert {k: ring.select(k) for k in keys(3000)} == first  # type: ignore[arg-type]


def test_hash_default_key_is_the_client_ip_and_none_spreads() -> None:
    ring = ConsistentHash([A, B, C])
    picks = {ring.select(Context(remote=("192.0.2.9", port))) for port in range(1000, 1100)}
    assert len(picks) == 1
    spread = ConsistentHash([A, B, C], key=lambda ctx: None)
    assert {spread.select() for _ in range(3)} == {A, B, C}


def test_hash_weights_give_more_of_the_ring() -> None:
    ring = ConsistentHash({A: 3, B: 1}, key=lambda ctx: ctx)
    counts = collections.Counter(ring.select(k) for k in keys(10_000))  # type: ignore[arg-type]
    assert 6500 < counts[A] < 8500


# Passive health ---------------------------------------------------------------------


def test_passive_health_out_after_max_fails_then_one_trial(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.health")
    clock = Clock()
    rr = RoundRobin([A, B], max_fails=3, fail_timeout=10, clock=clock)
    for _ in range(2):
        rr.failed(A, "connection refused")
    assert rr.available(A)  # 2 < 3
    rr.failed(A, "connection refused")
    assert not rr.available(A)
    assert [rr.select() for _ in range(4)] == [B] * 4
    clock.now += 10
    picks = [rr.select() for _ in range(4)]
    assert picks.count(A) == 1  # one trial, then wait for its outcome
    rr.failed(A, "connection refused")  # the trial failed: out again
    assert [rr.select() for _ in range(4)] == [B] * 4
    clock.now += 10
    assert A in [rr.select() for _ in range(2)]
    rr.succeeded(A)
    assert [rr.select() for _ in range(4)].count(A) == 2
    assert health_lines(caplog) == [
        f"backend {A} DOWN (3 failures in a row: connection refused); trying again in 10s",
        f"backend {A} UP (a connection succeeded)",
    ]


def test_a_success_resets_the_failure_count() -> None:
    rr = RoundRobin([A, B], max_fails=2, clock=Clock())
    rr.failed(A)
    rr.succeeded(A)
    rr.failed(A)
    assert rr.available(A)


def test_max_fails_zero_never_takes_a_target_out() -> None:
    rr = RoundRobin([A], max_fails=0)
    for _ in range(10):
        rr.failed(A)
    assert rr.available(A)


def test_all_out_picks_the_least_recently_failed() -> None:
    clock = Clock()
    lc = LeastConnections([A, B, C], max_fails=1, clock=clock)
    for target in (B, A, C):
        clock.now += 1
        lc.failed(target)
    assert lc.select() == B
    assert lc.select_other(None, [B]) == A


def test_select_other_excludes_what_was_tried() -> None:
    lc = LeastConnections([A, B, C])
    assert lc.select_other(None, [A, B]) == C
    assert lc.select_other(None, [A, B, C]) is None
    rr = RoundRobin([A, B, C])
    assert rr.select() == A
    assert rr.select_other(None, [A]) == B
    assert rr.select() == B  # a failover does not take a turn


def test_active_check_results_apply_rise_and_fall(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.health")
    rr = RoundRobin([A, B], health=HealthCheck(rise=2, fall=2))
    rr.check_result(A, "connection refused")
    assert rr.available(A)
    rr.check_result(A, "connection refused")
    rr.check_result(A, "connection refused")
    assert not rr.available(A)
    assert [rr.select() for _ in range(3)] == [B] * 3
    rr.check_result(A, None)
    assert not rr.available(A)
    rr.check_result(A, None)
    rr.check_result(A, None)
    assert rr.available(A)
    assert health_lines(caplog) == [
        f"backend {A} DOWN (2 failed checks: connection refused)",
        f"backend {A} UP (2 good checks)",
    ]


# Registry and make_balancer ------------------------------------------------------------


def test_algorithms_register_by_name() -> None:
    registry = balancer_registry()
    assert registry["round-robin"] is RoundRobin
    assert registry["weighted-round-robin"] is WeightedRoundRobin
    assert registry["least-conn"] is LeastConnections
    assert registry["p2c"] is PowerOfTwoChoices
    assert registry["hash"] is ConsistentHash


def test_make_balancer_builds_by_name_with_options() -> None:
    lc = make_balancer("least-conn", [A, B], max_fails=5)
    assert isinstance(lc, LeastConnections) and lc.max_fails == 5
    ring = make_balancer("hash", [A, B], key=lambda ctx: "x")
    assert ring.select() == ring.select()
    with pytest.raises(ValueError, match=r"unknown balancer 'fastest'; known: .*least-conn"):
        make_balancer("fastest", [A])


def test_the_plugin_example_balancer_is_found_by_name_and_gets_health() -> None:
    first = make_balancer("first-only", [A, B], max_fails=1, clock=Clock())
    assert isinstance(first, Balancer)
    assert [first.select() for _ in range(3)] == [A] * 3
    first.failed(A)
    assert first.select() == B  # its pick is out: the next one up
    assert repr(first) == f"FirstOnly({[A, B]!r})"


class Slowest(Balancer):
    """An algorithm written as the docs say: choose() over the candidates."""

    def choose(self, ctx: Any, candidates: Any, retry: bool) -> Backend:
        return max(candidates, key=lambda b: b.index)


def test_a_subclass_only_writes_choose() -> None:
    s = Slowest([A, B, C], max_fails=1, clock=Clock())
    assert s.select() == C
    s.failed(C)
    assert s.select() == B


@pytest.mark.parametrize(
    ("targets", "options", "message"),
    [
        ([f"{A}=0"], {}, "bad weight"),
        ([f"{A}=x"], {}, "bad weight"),
        ({A: 1.5}, {}, "bad weight"),
        ([A], {"max_fails": -1}, "max_fails"),
        ([A], {"fail_timeout": 0}, "fail_timeout"),
        ([A], {"health": "/health"}, "HealthCheck"),
        ([], {}, "at least one target"),
    ],
)
def test_bad_options(targets: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoundRobin(targets, **options)


def test_bad_hash_and_sticky_options() -> None:
    with pytest.raises(ValueError, match="key"):
        ConsistentHash([A], key="client")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="replicas"):
        ConsistentHash([A], replicas=0)
    with pytest.raises(ValueError, match="not both"):
        Sticky(RoundRobin([A]), cookie="a", header="b")
    with pytest.raises(ValueError, match="cookie name"):
        Sticky(RoundRobin([A]), cookie="a=b")
    with pytest.raises(ValueError, match="wraps a balancer"):
        Sticky([A])  # type: ignore[arg-type]


# Sticky sessions ----------------------------------------------------------------------


def request(cookie: str | None = None, **headers: str) -> RequestHead:
    fields = [("Host", "example"), *headers.items()]
    if cookie is not None:
        fields.append(("Cookie", cookie))
    return RequestHead(headers=Headers(fields))


def test_sticky_cookie_names_a_live_target() -> None:
    sticky = Sticky(RoundRobin([A, B, C]))
    ctx = Context()
    assert sticky.select_for(ctx, request(f"x=1; trioxy_backend={sticky.token(C)}")) == C
    assert ctx.get("sticky_set") is None  # the client already has it
    ctx = Context()
    target = sticky.select_for(ctx, request())
    name, value = ctx.sticky_set
    assert name == "Set-Cookie"
    assert value == f"trioxy_backend={sticky.token(target)}; Path=/; HttpOnly"
    assert A not in value and "8081" not in value  # opaque, not the address


def test_sticky_cookie_of_a_down_target_is_rebalanced() -> None:
    inner = RoundRobin([A, B], max_fails=1, clock=Clock())
    sticky = Sticky(inner)
    inner.failed(A)
    ctx = Context()
    assert sticky.select_for(ctx, request(f"trioxy_backend={sticky.token(A)}")) == B
    assert ctx.sticky_set[1].startswith(f"trioxy_backend={sticky.token(B)};")
    ctx = Context()
    assert sticky.select_for(ctx, request("trioxy_backend=bogus")) in (A, B)


def test_sticky_by_header() -> None:
    sticky = Sticky(LeastConnections([A, B]), header="X-Backend")
    ctx = Context()
    assert sticky.select_for(ctx, request(**{"X-Backend": sticky.token(B)})) == B
    ctx = Context()
    target = sticky.select_for(ctx, request())
    assert ctx.sticky_set == ("X-Backend", sticky.token(target))


def test_sticky_shares_the_inner_state() -> None:
    inner = LeastConnections([A, B])
    sticky = Sticky(inner)
    sticky.acquire(A)
    assert inner.backends[0].active == 1
    sticky.failed(B)
    assert inner.backends[1].fails == 1
    assert sticky.select() == B


async def test_balance_and_set_sticky_filters_in_memory() -> None:
    """balance() picks per request and sets ctx.target; set_sticky() puts the
    cookie on the response. The answer stands in for mux_http + connect."""
    sticky = Sticky(RoundRobin([A, B]))
    seen: list[str] = []

    def answer(ctx: Context, head: Any) -> None:
        seen.append(ctx.target)

    proxy = Proxy()
    (
        proxy.pipeline("t")
        .balance(sticky)
        .handle_message_start(answer)
        .replace_message_start(lambda ctx, head: ResponseHead(200, "OK", Headers()))
        .set_sticky()
    )
    layout = proxy.layout("t")
    out = await run_layout(layout, [MessageStart(request()), MessageEnd(), StreamEnd()])
    response = out[0]
    assert isinstance(response, MessageStart)
    cookie = response.head.headers.get("set-cookie")
    assert cookie == f"trioxy_backend={sticky.token(seen[0])}; Path=/; HttpOnly"
    again = await run_layout(
        layout, [MessageStart(request(cookie.split(";")[0])), MessageEnd(), StreamEnd()]
    )
    assert seen[1] == seen[0]
    assert again[0].head.headers.get("set-cookie") is None  # type: ignore[union-attr]
    assert again[1:] == [MessageEnd(), StreamEnd()]


async def test_balance_filter_with_a_plain_balancer_passes_events() -> None:
    rr = RoundRobin([A, B])
    proxy = Proxy()
    targets: list[str] = []
    proxy.pipeline("t").balance(rr, var="upstream_pick").handle_message_start(
        lambda ctx, head: targets.append(ctx.upstream_pick)
    )
    events = [MessageStart("m"), Data(b"x"), MessageEnd(), MessageStart("n"), MessageEnd()]
    out = await run_layout(proxy.layout("t"), events)
    assert out == events
    assert targets == [A, B]


def test_balance_filter_arguments_are_checked_at_load() -> None:
    assert filter_registry()["balance"].__module__ == "filters.balance"
    proxy = Proxy()
    with pytest.raises(ConfigError, match="needs a balancer"):
        proxy.pipeline("a").balance([A])
    with pytest.raises(ConfigError, match="var"):
        proxy.pipeline("b").balance(RoundRobin([A]), var="not a name")


def example_blocks() -> list[str]:
    doc = importlib.import_module("filters.balance").__doc__ or ""
    return [textwrap.dedent(b) for b in re.findall(r"::\n\n((?:    .*\n|\n)+)", doc)]


def test_module_example_runs() -> None:
    exec(compile(example_blocks()[0], "filters/balance.py example", "exec"), {})


def test_module_proxy_example_builds() -> None:
    if "mux_http" not in filter_registry() or "demux_http" not in filter_registry():
        pytest.skip("demux_http/mux_http are not registered yet")
    scope: dict[str, Any] = {}
    exec(compile(example_blocks()[1], "filters/balance.py example", "exec"), scope)
    config = scope["proxy"].build()
    assert [spec.port for spec in config.listeners] == [8000, 8080]


def test_passive_and_active_together_log_each_change_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioxy.health")
    rr = RoundRobin([A, B], max_fails=1, health=HealthCheck(rise=2, fall=1), clock=Clock())
    rr.failed(A, "connection refused")  # passive: DOWN
    rr.check_result(A, "connection refused")  # active agrees: nothing new to say
    rr.check_result(A, None)
    rr.check_result(A, None)  # rise: UP, both verdicts cleared
    assert rr.available(A)
    rr.check_result(A, "HTTP 503")  # active: DOWN
    rr.failed(A, "connection refused")  # passive agrees: nothing new
    rr.succeeded(A)  # a fallback connection worked, but the checks still say DOWN
    assert not rr.available(A)
    rr.check_result(A, None)
    rr.check_result(A, None)
    assert rr.available(A)
    assert health_lines(caplog) == [
        f"backend {A} DOWN (1 failure in a row: connection refused); trying again in 10s",
        f"backend {A} UP (2 good checks)",
        f"backend {A} DOWN (1 failed check: HTTP 503)",
        f"backend {A} UP (2 good checks)",
    ]


async def test_hash_by_header_through_the_balance_filter() -> None:
    ring = ConsistentHash([A, B, C], header="X-User")
    picks: list[str] = []
    proxy = Proxy()
    proxy.pipeline("t").balance(ring).handle_message_start(
        lambda ctx, head: picks.append(ctx.target)
    )
    for user in ("ann", "bob", "ann", "cy", "bob", "ann"):
        await run_layout(proxy.layout("t"), [MessageStart(request(**{"X-User": user}))])
    expected = ConsistentHash([A, B, C], key=lambda ctx: ctx)
    assert picks == [expected.select(u) for u in ("ann", "bob", "ann", "cy", "bob", "ann")]  # type: ignore[arg-type]
    ctx = Context()
    ctx.set(hash_key="ann")  # what connect's failover pick hashes
    assert ring.select_other(ctx, [picks[0]]) != picks[0]
    with pytest.raises(ValueError, match="not both"):
        ConsistentHash([A], key=lambda ctx: "k", header="X-User")


def test_sticky_over_a_header_hash_uses_the_header_for_new_sessions() -> None:
    sticky = Sticky(ConsistentHash([A, B, C], header="X-User"))
    expected = ConsistentHash([A, B, C], key=lambda ctx: ctx)
    for user in ("ann", "bob", "cy"):
        ctx = Context()
        assert sticky.select_for(ctx, request(**{"X-User": user})) == expected.select(user)  # type: ignore[arg-type]
