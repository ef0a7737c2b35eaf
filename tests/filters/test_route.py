"""Router (precedence, parameters, wildcards, scale) and the route filter."""

from __future__ import annotations

import importlib
import re
import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import filters.route
from filters.headers import request_of
from filters.route import Match, Router
from pipeline import ConfigError, Context, Data, MessageEnd, MessageStart, Proxy, StreamEnd
from pipeline.testing import run_layout
from protocols.http import Headers, RequestHead


def req(
    target: str,
    host: str | None = "example.com",
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
) -> RequestHead:
    fields = [("Host", host)] if host is not None else []
    return RequestHead(method, target, Headers(fields + (headers or [])))


def value(router: Router, *args: Any, **kwargs: Any) -> Any:
    found = router.find(req(*args, **kwargs))
    return None if found is None else found.value


# Paths ---------------------------------------------------------------------------


def test_literal_beats_param_beats_prefix() -> None:
    router = Router()
    router.add("/a/*", "prefix")
    router.add("/a/{x}", "param")
    router.add("/a/b", "literal")
    assert router.find(req("/a/b")) == Match("literal", {})
    assert router.find(req("/a/c")) == Match("param", {"x": "c"})
    assert router.find(req("/a/b/c")) == Match("prefix", {"*": "b/c"})


def test_precedence_is_left_to_right_with_backtracking() -> None:
    router = Router()
    router.add("/a/{x}/c", "param-then-literal")
    router.add("/a/b/{y}", "literal-then-param")
    router.add("/a/*", "prefix")
    # The literal "b" is tried first and its subtree matches.
    assert router.find(req("/a/b/c")) == Match("literal-then-param", {"y": "c"})
    # Under "b" nothing matches "/a/b/c/d": back to {x}, then to the prefix.
    assert router.find(req("/a/b/c/d")) == Match("prefix", {"*": "b/c/d"})
    # Not "b": the parameter {x} takes "q", then the literal "c".
    assert router.find(req("/a/q/c")) == Match("param-then-literal", {"x": "q"})


def test_deeper_literal_route_failing_falls_back_to_a_param_sibling() -> None:
    router = Router()
    router.add("/users/me/settings", "settings")
    router.add("/users/{id}/posts", "posts")
    assert router.find(req("/users/me/posts")) == Match("posts", {"id": "me"})


def test_prefix_matches_its_own_path_and_everything_below() -> None:
    router = Router()
    router.add("/static/*", "files")
    assert router.find(req("/static")) == Match("files", {"*": ""})
    assert router.find(req("/static/")) == Match("files", {"*": ""})
    assert router.find(req("/static/css/a.css?v=2")) == Match("files", {"*": "css/a.css"})
    assert router.find(req("/staticx")) is None
    assert router.find(req("/")) is None


def test_root_catch_all_and_root_exact() -> None:
    router = Router()
    router.add("/*", "all")
    router.add("/", "root")
    assert value(router, "/") == "root"
    assert router.find(req("/anything/at/all")) == Match("all", {"*": "anything/at/all"})


def test_params_capture_decoded_segments_and_need_a_non_empty_one() -> None:
    router = Router()
    router.add("/files/{name}/raw", "raw")
    assert router.find(req("/files/a%20b%2Fc/raw")) == Match("raw", {"name": "a b/c"})
    assert router.find(req("/files//raw")) is None


def test_trailing_slash_is_its_own_segment() -> None:
    router = Router()
    router.add("/docs", "no-slash")
    router.add("/docs/", "slash")
    assert value(router, "/docs") == "no-slash"
    assert value(router, "/docs/") == "slash"


def test_query_is_ignored_and_absolute_form_targets_work() -> None:
    router = Router()
    router.add("/p", "p", host="api.example.com")
    assert value(router, "/p?x=1", host="api.example.com") == "p"
    assert value(router, "http://api.example.com:8080/p?q", host=None) == "p"
    assert value(router, "http://api.example.com", host=None) is None


# Hosts -----------------------------------------------------------------------------


def test_exact_host_beats_wildcard_beats_any() -> None:
    router = Router()
    router.add("/", "any")
    router.add("/", "wild", host="*.example.com")
    router.add("/", "deeper-wild", host="*.eu.example.com")
    router.add("/", "exact", host="www.example.com")
    assert value(router, "/", host="www.example.com") == "exact"
    assert value(router, "/", host="WWW.Example.COM:8443") == "exact"
    assert value(router, "/", host="shop.example.com") == "wild"
    assert value(router, "/", host="a.b.example.com") == "wild"
    assert value(router, "/", host="shop.eu.example.com") == "deeper-wild"
    assert value(router, "/", host="example.com") == "any"  # *.x does not match x
    assert value(router, "/", host=None) == "any"


def test_host_is_tried_before_path_and_falls_back_when_its_tree_has_no_match() -> None:
    router = Router()
    router.add("/api/{v}", "exact-host-param", host="api.example.com")
    router.add("/api/v1", "any-host-literal")
    router.add("/other", "wild-other", host="*.example.com")
    # The exact host's tree matches (with a param) and wins over a literal elsewhere.
    assert value(router, "/api/v1", host="api.example.com") == "exact-host-param"
    # No route for /other in the exact host's tree: the wildcard's has one.
    assert value(router, "/other", host="api.example.com") == "wild-other"
    assert value(router, "/api/v1", host="elsewhere.org") == "any-host-literal"


def test_ipv6_host_with_port() -> None:
    router = Router()
    router.add("/", "v6", host="[::1]")
    assert value(router, "/", host="[::1]:8080") == "v6"


# Methods and headers -------------------------------------------------------------


def test_methods_and_headers_break_ties_on_one_pattern() -> None:
    router = Router()
    router.add("/items", "plain")
    router.add("/items", "write", methods=["post", "PUT"])
    router.add("/items", "canary-write", methods=["POST"], headers={"X-Canary": "1"})
    assert value(router, "/items") == "plain"
    assert value(router, "/items", method="POST") == "write"
    assert value(router, "/items", method="POST", headers=[("x-canary", " 1 ")]) == "canary-write"
    assert value(router, "/items", method="PUT", headers=[("X-Canary", "1")]) == "write"
    assert value(router, "/items", headers=[("X-Canary", "0")]) == "plain"


def test_get_admits_head_and_failing_conditions_fall_back_to_less_specific_paths() -> None:
    router = Router()
    router.add("/a/b", "get-only", methods=["GET"])
    router.add("/a/{x}", "param")
    assert value(router, "/a/b", method="HEAD") == "get-only"
    assert router.find(req("/a/b", method="DELETE")) == Match("param", {"x": "b"})


def test_first_added_wins_among_equals() -> None:
    router = Router()
    router.add("/x", "first")
    router.add("/x", "second")
    assert value(router, "/x") == "first"
    assert len(router) == 2


@pytest.mark.parametrize(
    ("pattern", "kwargs"),
    [
        ("no-slash", {}),
        ("/a/*/b", {}),
        ("/a/{x", {}),
        ("/a/x{y}", {}),
        ("/a/{1x}", {}),
        ("/{x}/{x}", {}),
        ("/a", {"host": "*"}),
        ("/a", {"host": "a.*.com"}),
        ("/a", {"host": ""}),
        ("/a", {"methods": []}),
    ],
)
def test_bad_routes_are_refused(pattern: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Router().add(pattern, "v", **kwargs)


def test_methods_must_be_a_list() -> None:
    with pytest.raises(TypeError):
        Router().add("/", "v", methods="GET")


# Scale -----------------------------------------------------------------------------


def test_ten_thousand_routes_resolve_and_lookups_visit_a_bounded_number_of_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = Router()
    for i in range(10_000):
        router.add(f"/svc{i % 100}/v{i // 100}/items/{{id}}", ("items", i))
        router.add(f"/svc{i % 100}/v{i // 100}/static/*", ("static", i))
    for i in range(200):
        router.add(f"/h{i}", ("host", i), host=f"h{i}.example.com")
        router.add(f"/w{i}", ("wild", i), host=f"*.w{i}.example.com")

    visits = 0
    walk = filters.route._Node.walk

    def counting_walk(self: Any, *args: Any) -> Any:
        nonlocal visits
        visits += 1
        return walk(self, *args)

    monkeypatch.setattr(filters.route._Node, "walk", counting_walk)
    for i in range(0, 10_000, 37):
        visits = 0
        path = f"/svc{i % 100}/v{i // 100}/items/{i}"
        assert router.find(req(path)) == Match(("items", i), {"id": str(i)})
        # One node per segment plus the root: the table's size does not matter.
        assert visits == 5
        visits = 0
        found = router.find(req(f"/svc{i % 100}/v{i // 100}/static/a/b"))
        assert found == Match(("static", i), {"*": "a/b"})
        assert visits <= 7
    for i in range(0, 200, 7):
        assert value(router, f"/h{i}", host=f"h{i}.example.com") == ("host", i)
        assert value(router, f"/w{i}", host=f"x.w{i}.example.com") == ("wild", i)
        assert value(router, f"/w{i}", host=f"x.w{i + 1}.example.com") is None
    assert router.find(req("/svc1/v100/items/1")) is None  # v100 was never added


# The filter --------------------------------------------------------------------------


async def test_route_filter_sets_value_and_params_per_request() -> None:
    router = Router()
    router.add("/u/{id}", "user")
    proxy = Proxy()
    seen: list[tuple[Any, Any]] = []
    (
        proxy.pipeline("main")
        .route(router, var="where", default="fallback")
        .handle_message_start(
            lambda ctx, head: seen.append((ctx.where, ctx.where_params, request_of(ctx) is head))
        )
    )
    for target in ("/u/7", "/nope"):
        events = [MessageStart(req(target)), Data(b"x"), MessageEnd(), StreamEnd()]
        assert await run_layout(proxy.layout("main"), events) == events
    # the request head is recorded too, for response-side filters
    assert seen == [("user", {"id": "7"}, True), ("fallback", {}, True)]


async def test_route_filter_feeds_branch() -> None:
    router = Router()
    router.add("/admin/*", "admin")
    proxy = Proxy()
    hits: list[str] = []
    (
        proxy.pipeline("main")
        .route(router)
        .branch(
            {
                lambda ctx: ctx.route == "admin": lambda p: p.handle_data(
                    lambda c, d: hits.append("A")
                )
            },
            lambda p: p.handle_data(lambda c, d: hits.append("other")),
        )
    )
    for target in ("/admin/x", "/public"):
        ctx = Context()
        await run_layout(
            proxy.layout("main"),
            [MessageStart(req(target)), Data(b"."), MessageEnd(), StreamEnd()],
            context=ctx,
        )
    assert hits == ["A", "other"]


async def test_non_http_messages_pass_untouched() -> None:
    proxy = Proxy()
    proxy.pipeline("main").route(Router())
    ctx = Context()
    events = [MessageStart("not http"), MessageEnd(), StreamEnd()]
    assert await run_layout(proxy.layout("main"), events, context=ctx) == events
    assert ctx.get("route", "unset") == "unset"


def test_route_checks_its_arguments_at_load() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match="Router"):
        proxy.pipeline("a").route({"/": "x"})
    with pytest.raises(ConfigError, match="identifier"):
        proxy.pipeline("b").route(Router(), var="not ok")


def test_docstring_example_runs() -> None:
    doc = importlib.import_module("filters.route").__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/route.py example", "exec"), {})


@given(path=st.text(max_size=80), host=st.one_of(st.none(), st.text(max_size=40)))
def test_any_path_and_host_resolve_without_error(path: str, host: str | None) -> None:
    router = Router()
    router.add("/a/{x}", "param")
    router.add("/*", "all", host="*.example.com")
    router.add("/", "root")
    found = router.lookup(path, host=host)
    assert found is None or found.value in ("param", "all", "root")
