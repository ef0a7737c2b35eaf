"""HTTP routing: a :class:`Router` table and the ``route`` filter that consults it.

A :class:`Router` maps requests to values (a layout name, an upstream, a handler:
anything) by host, path, method and headers::

    router = Router()
    router.add("/api/users/{id}", "users", methods=["GET", "PUT"])
    router.add("/static/*", "files", host="*.example.com")
    router.add("/", "home", host="www.example.com")
    match = router.find(head)        # Match(value, params) or None

Patterns. A path pattern is split on ``/`` into segments, each of them

* a literal (``users``), compared with the request's segment after percent-decoding;
* a parameter ``{name}``: any one non-empty segment, captured (decoded) as
  ``params[name]``;
* ``*``, last only: a prefix route. It matches the segments before it followed by
  anything, nothing included (``/static/*`` matches ``/static``, ``/static/`` and
  ``/static/css/a.css``); the rest of the path is captured as ``params["*"]``
  (``"css/a.css"``).

A trailing slash is a segment of its own: ``/docs`` and ``/docs/`` are different
routes. A host is exact (``api.example.com``, compared without port and case), a
wildcard ``*.example.com`` (any host ending in ``.example.com``, at any depth; the
longest wildcard suffix is the more specific), or ``None``: any host. ``methods``
limits a route to some methods (``GET`` also admits ``HEAD``); ``headers`` maps
header names to the value they must have.

Which route wins, when several match: the most specific, in this order --

1. the host: an exact host, then the longest matching wildcard, then any host;
2. the path, compared segment by segment from the left: a literal segment beats a
   parameter, which beats a prefix ``*`` (so ``/a/b`` beats ``/a/{x}`` beats
   ``/a/*``, and ``/a/{x}/c`` beats ``/a/*`` for ``/a/1/c``);
3. on the same pattern, a route with more conditions (methods and headers, one
   each per header) beats one with fewer; among equals the first added wins.

Lookup cost does not grow with the number of routes: hosts are dictionary keys
and paths a trie over segments, walked literal child first, then the parameter
child, then the prefix routes of the node, backtracking when a branch ends with
no route whose conditions hold. A lookup touches at most two children per segment
of the request's path, whatever the table holds.

``route(router, var="route")`` is the filter: on each request head it sets the
context variables ``<var>`` (the match's value, or ``default`` when nothing
matches) and ``<var>_params`` (a dict, empty without a match), so that the rest of
the per-request pipeline -- ``branch``, ``connect(lambda ctx: ...)``, a
``serve_http`` handler -- can use them; it also records the request head as
``ctx.http_request`` (see :mod:`filters.headers`). Put it in the per-request sub-pipeline of
``demux_http``, where each request has a context of its own.

Example (runnable)::

    import trio
    from filters.route import Router
    from pipeline import Data, MessageEnd, MessageStart, Proxy, StreamEnd
    from pipeline.testing import run_layout
    from protocols.http import Headers, RequestHead

from .headers import REQUEST_VAR

    router = Router()
    router.add("/api/users/{id}", "user", methods=["GET"])
    router.add("/api/*", "api")
    router.add("/", "home", host="www.example.com")

    seen = []
    proxy = Proxy()
    (proxy.pipeline("per-request")
        .route(router)
        .handle_message_start(lambda ctx, head: seen.append((ctx.route, ctx.route_params))))

    def request(target, host="www.example.com"):
        head = RequestHead("GET", target, Headers([("Host", host)]))
        return [MessageStart(head), MessageEnd(), StreamEnd()]

    for target in ("/api/users/42", "/api/v2/items", "/", "/missing"):
        trio.run(run_layout, proxy.layout("per-request"), request(target))
    assert seen == [
        ("user", {"id": "42"}),
        ("api", {"*": "v2/items"}),
        ("home", {}),
        (None, {}),
    ]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from pipeline.events import Event, MessageStart
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import Headers, RequestHead

from .headers import REQUEST_VAR

__all__ = ["Match", "Route", "RouteFilter", "Router"]


@dataclass(frozen=True, slots=True)
class Match:
    """A successful lookup: the route's ``value`` and the captured ``params``."""

    value: Any
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of a :class:`Router` (as added, with its pattern parsed)."""

    pattern: str
    value: Any
    host: str | None
    methods: frozenset[str] | None
    headers: tuple[tuple[str, str], ...]
    param_names: tuple[tuple[int, str], ...]  # (segment index, name)
    prefix_at: int | None  # index of the "*" segment, for prefix routes
    order: int

    @property
    def weight(self) -> int:
        """How many conditions beyond host and path: breaks ties on one pattern."""
        return (self.methods is not None) + len(self.headers)

    def accepts(self, method: str, headers: Headers) -> bool:
        methods = self.methods
        if methods is not None and method not in methods:
            return False
        for name, value in self.headers:
            found = headers.get(name)
            if found is None or found.strip() != value:
                return False
        return True


class _Node:
    """A trie node: one path segment position."""

    __slots__ = ("children", "param", "prefix", "routes")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: list[Route] = []  # routes ending exactly here, best first
        self.prefix: list[Route] = []  # "*" routes whose "*" sits here, best first

    def walk(
        self, segments: list[str], i: int, method: str, headers: Headers
    ) -> tuple[Route, int] | None:
        """The best route under this node for ``segments[i:]``; with the index at
        which its prefix ``*`` matched (or -1)."""
        if i == len(segments):
            for route in self.routes:
                if route.accepts(method, headers):
                    return route, -1
        else:
            segment = segments[i]
            child = self.children.get(segment)
            if child is not None:
                found = child.walk(segments, i + 1, method, headers)
                if found is not None:
                    return found
            param = self.param
            if param is not None and segment:
                found = param.walk(segments, i + 1, method, headers)
                if found is not None:
                    return found
        for route in self.prefix:
            if route.accepts(method, headers):
                return route, i
        return None


def _insert_sorted(routes: list[Route], route: Route) -> None:
    # More conditions first; among equals, the order of addition.
    key = (-route.weight, route.order)
    i = 0
    while i < len(routes) and (-routes[i].weight, routes[i].order) <= key:
        i += 1
    routes.insert(i, route)


def _normalize_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    colon = host.rfind(":")
    if colon >= 0 and host[colon + 1 :].isdigit():
        host = host[:colon]
    return host.rstrip(".")


def _split_path(path: str) -> list[str]:
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    if "%" in path:
        segments = [unquote(s) if "%" in s else s for s in segments]
    return segments


class Router:
    """A routing table; see the module docs for patterns and precedence."""

    def __init__(self) -> None:
        self._exact: dict[str, _Node] = {}
        self._wildcard: dict[str, _Node] = {}  # "example.com" for "*.example.com"
        self._any = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(
        self,
        pattern: str,
        value: Any,
        *,
        host: str | None = None,
        methods: Iterable[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Route:
        """Add a route; returns it. Raises ``ValueError`` for a malformed pattern."""
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ValueError(f"a path pattern starts with '/', got {pattern!r}")
        segments = pattern.split("/")[1:]
        params: list[tuple[int, str]] = []
        prefix_at: int | None = None
        for i, segment in enumerate(segments):
            if segment == "*":
                if i != len(segments) - 1:
                    raise ValueError(f"'*' must be the last segment of {pattern!r}")
                prefix_at = i
            elif segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if not name.isidentifier():
                    raise ValueError(f"bad parameter name {segment!r} in {pattern!r}")
                if any(name == n for _, n in params):
                    raise ValueError(f"parameter {name!r} appears twice in {pattern!r}")
                params.append((i, name))
            elif "{" in segment or "}" in segment or "*" in segment:
                raise ValueError(
                    f"segment {segment!r} of {pattern!r}: a parameter is a whole "
                    "segment {name}, a prefix is a whole last segment *"
                )
        method_set: frozenset[str] | None = None
        if methods is not None:
            if isinstance(methods, str):
                raise TypeError("methods is a list of method names, e.g. ['GET']")
            upper = {m.upper() for m in methods}
            if not upper:
                raise ValueError("methods is empty: no request could match")
            if "GET" in upper:
                upper.add("HEAD")
            method_set = frozenset(upper)
        conditions = tuple((str(k), str(v).strip()) for k, v in (headers or {}).items())
        route = Route(
            pattern, value, host, method_set, conditions, tuple(params), prefix_at, self._count
        )
        node = self._tree(host)
        for segment in segments[:prefix_at]:
            if segment.startswith("{") and segment.endswith("}"):
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.children.setdefault(segment, _Node())
        _insert_sorted(node.prefix if prefix_at is not None else node.routes, route)
        self._count += 1
        return route

    def _tree(self, host: str | None) -> _Node:
        if host is None:
            return self._any
        if not isinstance(host, str) or not host.strip():
            raise ValueError(f"host must be a name or '*.domain', got {host!r}")
        if host.startswith("*."):
            suffix = _normalize_host(host[2:])
            if not suffix or "*" in suffix:
                raise ValueError(f"bad wildcard host {host!r}")
            return self._wildcard.setdefault(suffix, _Node())
        name = _normalize_host(host)
        if "*" in name:
            raise ValueError(f"a wildcard host has the form '*.domain', got {host!r}")
        return self._exact.setdefault(name, _Node())

    def find(self, head: RequestHead) -> Match | None:
        """The best route for a request head, or ``None``."""
        target = head.target
        host = head.headers.get("host")
        if not target.startswith("/") and "://" in target:
            # absolute-form (a forward proxy's request): host and path from the URI
            rest = target.split("://", 1)[1]
            slash = rest.find("/")
            host = rest if slash < 0 else rest[:slash]
            target = "/" if slash < 0 else rest[slash:]
        q = target.find("?")
        path = target if q < 0 else target[:q]
        return self.lookup(path, host=host, method=head.method, headers=head.headers)

    def lookup(
        self,
        path: str,
        *,
        host: str | None = None,
        method: str = "GET",
        headers: Headers | None = None,
    ) -> Match | None:
        """The best route for the parts of a request (``path`` without query)."""
        segments = _split_path(path)
        headers = headers if headers is not None else Headers()
        for tree in self._trees(host):
            found = tree.walk(segments, 0, method, headers)
            if found is not None:
                route, at = found
                params = {name: segments[i] for i, name in route.param_names}
                if at >= 0:
                    params["*"] = "/".join(segments[at:])
                return Match(route.value, params)
        return None

    def _trees(self, host: str | None) -> list[_Node]:
        trees: list[_Node] = []
        if host:
            name = _normalize_host(host)
            exact = self._exact.get(name)
            if exact is not None:
                trees.append(exact)
            if self._wildcard:
                dot = name.find(".")
                while dot >= 0:  # longest suffix first
                    tree = self._wildcard.get(name[dot + 1 :])
                    if tree is not None:
                        trees.append(tree)
                    dot = name.find(".", dot + 1)
        trees.append(self._any)
        return trees


class RouteFilter(Filter):
    """``route(router, var="route", default=None)``: on each request head, set
    ``ctx.<var>`` to the matching route's value (``default`` when none matches) and
    ``ctx.<var>_params`` to its parameters. Events pass on unchanged."""

    name = "route"

    def __init__(self, router: Router, var: str = "route", default: Any = None) -> None:
        if not isinstance(router, Router):
            raise TypeError(f"route() takes a Router, got {router!r}")
        if not isinstance(var, str) or not var.isidentifier():
            raise ValueError(f"var must be an identifier, got {var!r}")
        self.router = router
        self.var = var
        self.params_var = var + "_params"
        self.default = default

    async def on_event(self, event: Event) -> None:
        if type(event) is MessageStart and isinstance(event.head, RequestHead):
            head = event.head
            match = self.router.find(head)
            variables = self.pipeline.context.vars
            if match is None:
                variables[self.var] = self.default
                variables[self.params_var] = {}
            else:
                variables[self.var] = match.value
                variables[self.params_var] = match.params
            variables[REQUEST_VAR] = head
        await self.output(event)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [RouteFilter]
