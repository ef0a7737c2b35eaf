"""An HTTP forward proxy, for ``curl -x``, browsers and ``http_proxy``/``https_proxy``.

A client names the proxy (``curl -x http://127.0.0.1:3128 URL``) and sends it
either of two kinds of requests; the first request of a connection decides which
path the connection takes (``accept_http_tunnel(otherwise=...)``):

* ``CONNECT host:port`` (``https://`` URLs, ``curl -p``/``--proxytunnel``): a tunnel.
  The target must match ``ALLOW``; the client gets ``200 Connection Established``
  once the proxy has connected to it, and the bytes are then relayed both ways
  (TLS stays end to end: the proxy sees none of it). A refused or unresolvable
  target is answered ``502``, a connect timeout ``504``, a target not allowed
  ``403``.
* a plain request in absolute-form (``GET http://host:port/path``): forwarded
  (``demux_http``, then ``mux_http`` pooling keep-alive connections per target
  ``host:port``, then ``connect``). The request line is rewritten to origin-form
  (``GET /path``), ``Host`` is set from the URL, hop-by-hop headers and every
  ``Proxy-*`` header are removed, and ``Via`` is added (on the response too).
  Any host and port may be reached this way (``ALLOW`` is for tunnels). A
  request that is not in absolute-form is answered ``400``, an ``https://`` one
  ``501`` (use ``CONNECT``), one that already came through this proxy (its
  ``Via`` names this process) ``508 Loop Detected``.

The choice is made once per connection: a ``CONNECT`` that follows plain
requests on the same keep-alive connection reaches ``demux_http``, which answers
``501`` (it does not do tunnels). Clients open a new connection for every tunnel,
so this does not happen in practice.

With ``USERS``, every request must carry ``Proxy-Authorization: Basic``
credentials (``curl -U user:password``); without them a tunnel is answered
``407`` and the connection closes, a plain request is answered ``407`` on a
connection that stays open, both with ``Proxy-Authenticate: Basic realm="trioxy"``.

Run it::

    trioxy run scripts/forward_proxy.py
    curl -x http://127.0.0.1:3128 http://example.com/
    curl -x http://127.0.0.1:3128 https://example.com/
    ALLOW='*:443,*.internal.example:*' USERS=ann:s3cret trioxy run scripts/forward_proxy.py

Environment variables (a bad value stops the script at load with one line
``forward_proxy.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``            where to listen; default ``127.0.0.1:3128``
``ALLOW``             the targets ``CONNECT`` may reach: comma-separated
                      ``host:port`` patterns, the host ``*``, ``*.domain``, a
                      name, an IP address (``[v6]``) or a network
                      (``10.0.0.0/8``), the port ``*``, a number or a range
                      ``8000-8099``; ``*:*`` allows everything. Default ``*:443``
                      (HTTPS only, as Squid's default rules)
``USERS``             ``user:password,user2:password2`` for Basic proxy
                      authentication (a password may contain ``:``, not ``,``),
                      or ``none``; default ``none``
``CONNECT_TIMEOUT``   seconds to connect to a target; default ``5``
``IDLE_TIMEOUT``      seconds with nothing moving before a connection (client,
                      tunnel or pooled upstream) is closed, or ``none``; default ``60``
``MAX_CONNECTIONS``   client connections served at once, or ``none``; default ``none``
"""

from __future__ import annotations

import secrets

from filters.headers import request_of
from filters.http_tunnel import AllowList, basic_credentials, check_password, parse_authority
from filters.serve_http import Request, Response
from pipeline import Builder, Context, Proxy, StreamEnd
from pipeline.address import format_address
from pipeline.settings import address, count, optional, seconds, setting
from protocols.http import ProtocolError, RequestHead


def users(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in text.split(","):
        name, colon, password = entry.strip().partition(":")
        if not colon or not name:
            raise ValueError("expected user:password pairs separated by commas")
        found[name] = password
    return found


LISTEN = setting("LISTEN", "127.0.0.1:3128", address)
ALLOW = setting("ALLOW", "*:443", AllowList)
USERS = setting("USERS", "none", optional(users))
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "60", optional(seconds))
MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))

REALM = "trioxy"
#: This process's name in ``Via``: a request that already carries it has come
#: round in a loop (the proxy asked to fetch from itself).
VIA = f"trioxy-{secrets.token_hex(4)}"


def split_url(target: str) -> tuple[str, str, int, str]:
    """``(authority, host, port, path and query)`` of an absolute ``http://`` URL
    (the path may be empty). Raises ``ProtocolError`` (400, or 501 for another
    scheme)."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isalpha():
        raise ProtocolError(f"not a proxy request: expected http://host/path, got {target[:80]!r}")
    if scheme.lower() != "http":
        raise ProtocolError(f"{scheme}:// URLs are not fetched by this proxy: use CONNECT", 501)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:].partition("#")[0]
    if "@" in authority:
        raise ProtocolError("a user name in the URL is not forwarded")
    text = authority
    if not text.rpartition("]")[2].partition(":")[1]:  # no port: HTTP's
        text += ":80"
    elif text.endswith(":"):  # an empty port is the default one (RFC 3986 3.2.3)
        text, authority = text + "80", authority[:-1]
    try:
        host, port = parse_authority(text)
    except ValueError as exc:
        raise ProtocolError(f"bad URL authority: {exc}") from None
    return authority, host, port, path


def to_origin_form(ctx: Context, head: RequestHead) -> RequestHead | StreamEnd:
    """The request as the target server gets it; sets ``ctx.target``. A request
    this proxy cannot forward ends the stream with the error ``demux_http``
    answers."""
    if any(VIA in value for value in head.headers.get_all("via")):
        return StreamEnd(ProtocolError(f"{head.target[:80]!r} came back to this proxy", 508))
    try:
        authority, host, port, path = split_url(head.target)
    except ProtocolError as exc:
        return StreamEnd(exc)
    if not path.startswith("/"):
        # RFC 9112 3.2.4: an empty path is "/", but "*" for OPTIONS (the server itself).
        path = "*" if head.method == "OPTIONS" and not path else "/" + path
    ctx.set(target=format_address(host, port))
    headers = head.headers.copy()
    for name in {n.lower() for n in headers.keys() if n.lower().startswith("proxy-")}:
        headers.remove(name)
    headers.set("Host", authority)
    headers.add("Via", f"{head.version} {VIA}")
    return head.replace(target=path, headers=headers)


def unauthorized(ctx: Context) -> bool:
    """Whether the request lacks accepted ``Proxy-Authorization`` credentials."""
    assert USERS is not None
    head = request_of(ctx)
    credentials = basic_credentials(head.headers.get("proxy-authorization") if head else None)
    return credentials is None or not check_password(USERS, *credentials)


def ask_for_credentials(ctx: Context, request: Request) -> Response:
    return Response(
        407,
        "407 Proxy Authentication Required\n",
        headers={"Proxy-Authenticate": f'Basic realm="{REALM}"'},
    )


def connect_to_target(p: Builder) -> None:
    """The bytes of a tunnel, or of one pooled upstream connection."""
    p.connect(lambda ctx: ctx.target, connect_timeout=CONNECT_TIMEOUT, idle_timeout=IDLE_TIMEOUT)


def forward(p: Builder) -> None:
    """One plain request: to origin-form, over a pooled connection to its target."""
    (
        p.replace_message_start(to_origin_form)
        .mux_http(key=lambda ctx: ctx.target, max_idle=IDLE_TIMEOUT)
        .to(connect_to_target)
        .forwarded_headers(for_=False, proto=False, host=False, via=VIA)
    )


def per_request(p: Builder) -> None:
    if USERS is None:
        forward(p)
    else:
        p.branch({unauthorized: lambda q: q.serve_http(ask_for_credentials)}, default=forward)


def plain_requests(p: Builder) -> None:
    """A connection whose first request is not a ``CONNECT``."""
    p.demux_http().to(per_request)


proxy = Proxy()
(
    proxy.listen(LISTEN, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT)
    .accept_http_tunnel(allow=ALLOW, users=USERS, realm=REALM, otherwise=plain_requests)
    .to(connect_to_target)
)
