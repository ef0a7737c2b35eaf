"""``accept_http_tunnel`` and ``connect_http_tunnel``: the two ends of HTTP ``CONNECT``
tunnels (RFC 9110 9.3.6), as a forward proxy's clients (``curl -x``, browsers,
``https_proxy=``) use them.

``accept_http_tunnel(allow="*:443", users=None, realm="trioxy", timeout=10.0,
otherwise=None).to(layout)`` is the proxy's end. It reads the first request of
the connection; a ``CONNECT host:port`` that passes the checks gets a
sub-pipeline of ``layout`` in a child context naming the target, normally
``connect`` to it, and once that connection exists the client gets ``200
Connection Established`` and the stream becomes a plain byte relay::

    proxy.listen(3128).accept_http_tunnel().to(lambda p: p.connect(lambda ctx: ctx.target))

=========================  ======================================================
in the sub-pipeline        value
=========================  ======================================================
``ctx.target``             ``"host:port"`` asked for (``"[v6]:port"`` for IPv6;
                           a host name as sent, lower-cased: ``connect`` resolves it)
``ctx.tunnel_request``     the ``CONNECT`` request's :class:`~protocols.http.RequestHead`
``ctx.proxy_user``         the authenticated username, or ``None``
=========================  ======================================================

Arguments:

``allow="*:443"``
    which targets may be tunnelled to: patterns ``host:port`` (a list, or one
    string with commas), or a function ``fn(ctx, host, port) -> bool`` (plain or
    ``async def``), or an :class:`AllowList`. A host is ``*`` (any), ``*.example.com``
    (any name under example.com, not example.com itself), a name, an IP address
    (``[v6]`` in brackets) or a network (``10.0.0.0/8``, ``[fd00::/8]``) that an
    IP-address target must be in; a port is ``*``, a number or a range
    ``8000-8099``. The default lets tunnels reach port 443 only (as Squid's
    default ``SSL_ports`` rule does): an open ``CONNECT`` to any port is how
    proxies get abused to relay mail spam or reach internal services. Patterns
    match the target as the client wrote it; a name is not resolved first, so
    ``*:443`` also lets a name that resolves to an internal address through.
``users=None``
    ``None``: no authentication. A ``dict`` of username to password, or a function
    ``fn(ctx, username, password) -> bool`` (plain or ``async def``): the request
    must carry ``Proxy-Authorization: Basic ...`` (RFC 7617) with accepted
    credentials, else it is answered ``407`` with ``Proxy-Authenticate: Basic
    realm="<realm>"``. Credentials are checked before ``allow``, so an
    unauthenticated client learns nothing of the allow-list.
``realm="trioxy"``
    the realm named in ``Proxy-Authenticate``.
``timeout=10.0``
    seconds from the client's first byte to its complete first request (then
    ``408``).
``otherwise=None``
    a layout (name or function) for a connection whose first request is not a
    ``CONNECT`` (or not valid HTTP): it gets the connection's bytes from the
    first one on, and its output is the connection's. ``None``: such a request
    is answered ``405 Method Not Allowed`` with ``Allow: CONNECT`` (a tunnel-only
    port), or ``400``. The choice is made once, on the first request: with
    ``otherwise=lambda p: p.demux_http()...``, a ``CONNECT`` arriving later on
    the same keep-alive connection meets ``demux_http``, which answers ``501``
    (clients open a new connection for each tunnel, so this does not happen in
    practice).

Answers. The success reply is sent once the sub-pipeline's upstream connection
exists: ``accept_http_tunnel`` feeds the sub-pipeline an empty ``Data`` (on which
``connect`` connects, and waits for it), and ``connect`` reports its outcome
through the context (:data:`filters.connect.CONNECT_WATCH`), as for
``accept_socks``. A sub-pipeline without a reporting ``connect`` gets the success
reply once the empty ``Data`` has gone through it, or before its first output.
Every other answer has a short ``text/plain`` body naming the reason and
``Connection: close``, goes with one line on the ``trioxy.http_tunnel`` logger
(a warning for malformed or incomplete requests, info for the rest), and ends the connection (bytes
a client sent for the tunnel right after its ``CONNECT`` cannot be told from a
next request, so none is read):

=========  ===========================================================
answer     what happened
=========  ===========================================================
``200``    connected (``200 Connection Established``)
``502``    the upstream refused, is unreachable, its name did not
           resolve, it reset; a ``connect_http_tunnel`` upstream refused
``504``    connecting timed out
``400``    a malformed request, or a target that is not ``host:port``
           (``414``, ``431``, ``505`` when the HTTP codec says so)
``407``    no or wrong credentials (with ``Proxy-Authenticate``)
``403``    the target is not allowed
``405``    not a ``CONNECT``, and no ``otherwise`` (with ``Allow: CONNECT``)
``408``    the request is incomplete after ``timeout``
=========  ===========================================================

After ``200``, events pass both ways unchanged, half-close included; bytes the
client sent right after the ``CONNECT`` head (a TLS ClientHello, say) are kept
and relayed first.

``connect_http_tunnel(target=None, username=None, password=None, headers=None,
timeout=10.0).to(layout)`` is a client of another proxy: ``layout`` is the
connection to that proxy (normally ``connect("proxy:3128")``), over which it
sends ``CONNECT target HTTP/1.1`` with ``Host`` (and ``Proxy-Authorization:
Basic`` when ``username`` is given, and the extra ``headers``), waits for a 2xx
and then relays the stream. ``target`` is ``"host:port"``, a function
``fn(ctx) -> "host:port"`` (plain or ``async def``) or ``None`` for
``ctx.target``. Like ``connect``, it starts as soon as its pipeline starts when
``target`` is a ``"host:port"`` (so a protocol whose server speaks first works),
else with the stream's first event; it holds the stream's events until the proxy
has answered (that is the backpressure), sets ``ctx.upstream`` to the target
once through and reports to :data:`~filters.connect.CONNECT_WATCH` (so an
``accept_http_tunnel`` or ``accept_socks`` in front replies after the far end
did). A non-2xx answer ends the stream with ``StreamEnd(HttpTunnelError)``
(``.proxy_status`` holds the status, e.g. 407), an answer that is not HTTP or a
closed connection with ``StreamEnd(HttpTunnelError)`` too, no answer within
``timeout`` with ``StreamEnd(ConnectTimeout)``; each is logged once.

Example (runnable): a tunnel client end talks to a tunnel server end in memory;
the server's sub-pipeline answers in place of a real upstream::

    import trio
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout

    seen = []
    proxy = Proxy()
    (proxy.pipeline("server")
        .accept_http_tunnel(allow=["*.example.com:443"], users={"ann": "secret"})
        .to(lambda p: p
            .handle_stream_start(lambda ctx: seen.append((ctx.proxy_user, ctx.target)))
            .replace_data(lambda ctx, d: d.upper())))
    (proxy.pipeline("client")
        .connect_http_tunnel("www.example.com:443", username="ann", password="secret")
        .to("server"))

    out = trio.run(run_layout, proxy.layout("client"), [Data(b"hello"), StreamEnd()])
    assert join_data(out) == b"HELLO" and out[-1] == StreamEnd()
    assert seen == [("ann", "www.example.com:443")]
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.address import format_address
from pipeline.errors import ConnectTimeout, UpstreamError
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.layout import LayoutRef
from pipeline.live import Pipeline
from protocols.http import Headers, ProtocolError, RequestHead, ResponseHead
from protocols.http.parser import EndOfMessage, RequestParser, ResponseParser
from protocols.http.writer import REASONS, request_head_bytes, response_head_bytes

from ._callback import as_async
from ._tunnel import TunnelClient, TunnelServer, Users, check_password, start_timer
from .http_codec import error_status

__all__ = [
    "AcceptHttpTunnel",
    "AllowList",
    "ConnectHttpTunnel",
    "HttpTunnelError",
    "basic_credentials",
    "check_password",
    "parse_authority",
]

log = logging.getLogger("trioxy.http_tunnel")

_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
# Host names as DNS has them (letters, digits, '-', '.', and '_' which some
# internal names use); RFC 3986's other reg-name characters have no use in a
# name to connect to and are refused.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


class HttpTunnelError(UpstreamError):
    """The upstream proxy refused the ``CONNECT`` (``proxy_status``: its status
    code), or did not answer it in HTTP (``proxy_status`` is ``None``). Answered
    ``502`` by an ``accept_http_tunnel`` in front."""

    def __init__(self, message: str, target: str | None = None, proxy_status: int | None = None):
        super().__init__(message, target)
        self.proxy_status = proxy_status


# Pieces usable on their own ---------------------------------------------------------


def parse_authority(text: str) -> tuple[str, int]:
    """A ``CONNECT`` target in authority-form (``host:port``, ``[v6]:port``) as
    ``(host, port)``, the host lower-cased. Stricter than RFC 3986: no userinfo,
    no percent-encoding, a port from 1 to 65535. Raises ``ValueError``.

    >>> parse_authority("Example.COM:443"), parse_authority("[2001:db8::1]:8443")
    (('example.com', 443), ('2001:db8::1', 8443))
    """
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"expected '[ipv6]:port', got {text[:80]!r}")
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"{host[:60]!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"expected 'host:port', got {text[:80]!r}")
        if len(host) > 253 or not _NAME_CHARS.issuperset(host):
            raise ValueError(f"not a host name: {host[:60]!r}")
        host = host.lower()
    if not (port_text.isdigit() and port_text.isascii()) or len(port_text) > 5:
        raise ValueError(f"bad port {port_text[:20]!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")
    return host, port


def basic_credentials(value: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from an ``Authorization`` or
    ``Proxy-Authorization`` value of the Basic scheme (RFC 7617: base64 of
    ``user:password``, UTF-8, or ISO-8859-1 when it is not valid UTF-8), or
    ``None`` when there is none or it is malformed.

    >>> basic_credentials("Basic YW5uOnMzOmNyZXQ=")
    ('ann', 's3:cret')
    """
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    username, colon, password = text.partition(":")
    if not colon:
        return None
    return username, password


class _Pattern:
    """One ``host:port`` pattern of an :class:`AllowList`."""

    __slots__ = ("high", "host", "kind", "low", "text")

    def __init__(self, text: str) -> None:
        self.text = text = text.strip()
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"bad pattern {text!r}: expected '[ipv6]:port'")
            port = rest[1:]
        else:
            host, colon, port = text.rpartition(":")
            if not colon:
                raise ValueError(
                    f"bad pattern {text!r}: give a port, e.g. '{text}:443' or '{text}:*'"
                )
        self.kind, self.host = self._host(host, text)
        self.low, self.high = self._ports(port, text)

    @staticmethod
    def _host(host: str, text: str) -> tuple[str, Any]:
        if host == "*":
            return "any", None
        if "/" in host:
            try:
                return "net", ipaddress.ip_network(host)
            except ValueError as exc:
                raise ValueError(f"bad pattern {text!r}: {exc}") from None
        try:
            return "ip", ipaddress.ip_address(host)
        except ValueError:
            pass
        name = host[2:] if host.startswith("*.") else host
        if not name or not _NAME_CHARS.issuperset(name) or ".." in name or name[0] == ".":
            raise ValueError(
                f"bad pattern {text!r}: the host is '*', '*.domain', a name, an IP "
                "address or a network"
            )
        if host.startswith("*."):
            return "suffix", "." + name.lower()
        return "name", name.lower()

    @staticmethod
    def _ports(port: str, text: str) -> tuple[int, int]:
        if port == "*":
            return 1, 65535
        low, dash, high = port.partition("-")
        if not dash:
            high = low
        if not (low.isdigit() and high.isdigit() and low.isascii() and high.isascii()):
            raise ValueError(f"bad pattern {text!r}: the port is '*', a number or 'low-high'")
        a, b = int(low), int(high)
        if not 1 <= a <= b <= 65535:
            raise ValueError(f"bad pattern {text!r}: ports are 1-65535, low before high")
        return a, b

    def matches(self, host: str, ip: Any, port: int) -> bool:
        if not self.low <= port <= self.high:
            return False
        kind = self.kind
        if kind == "any":
            return True
        if kind == "name":
            return ip is None and host == self.host
        if kind == "suffix":
            return ip is None and host.endswith(self.host)
        if kind == "ip":
            return ip is not None and ip == self.host
        return ip is not None and ip.version == self.host.version and ip in self.host


class AllowList:
    """Target patterns (see the module docs), checked once when made:
    ``AllowList("*.example.com:443, 10.0.0.0/8:*")`` or a list of strings.
    ``allows(host, port)`` says whether a target matches one of them.

    >>> allow = AllowList(["*.example.com:443", "10.0.0.0/8:8000-8099"])
    >>> allow.allows("www.example.com", 443), allow.allows("example.com", 443)
    (True, False)
    >>> allow.allows("10.1.2.3", 8080), allow.allows("10.1.2.3", 22)
    (True, False)
    """

    __slots__ = ("patterns",)

    def __init__(self, patterns: str | Iterable[str]) -> None:
        if isinstance(patterns, str):
            patterns = patterns.split(",")
        texts = [p for p in patterns if not isinstance(p, str) or p.strip()]
        if not all(isinstance(p, str) for p in texts):
            raise ValueError(f"allow patterns are 'host:port' strings, got {texts!r}")
        if not texts:
            raise ValueError("the allow-list is empty (allow nothing? use a function)")
        self.patterns = tuple(_Pattern(p) for p in texts)

    def allows(self, host: str, port: int) -> bool:
        host = host.lower()
        try:
            ip: Any = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        return any(p.matches(host, ip, port) for p in self.patterns)

    def __repr__(self) -> str:
        return f"AllowList({', '.join(p.text for p in self.patterns)!r})"


# Shared helpers ----------------------------------------------------------------------------


def _text(error: BaseException | str) -> str:
    text = str(error) or type(error).__name__
    return text.replace("\r", " ").replace("\n", " ")[:200]


def _answer(status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A complete error response: a short text body, ``Connection: close``."""
    phrase = REASONS.get(status, "Error")
    body = f"{status} {phrase}: {reason}\n".encode("utf-8", "replace")
    fields = [
        *headers,
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    return response_head_bytes(ResponseHead(status, phrase, Headers.from_list(fields))) + body


# The proxy's end ------------------------------------------------------------------------


class AcceptHttpTunnel(TunnelServer):
    """The server end of ``CONNECT`` tunnels in front of the sub-pipeline; see the
    module docs."""

    name = "accept_http_tunnel"
    log = log
    layout_params = ("otherwise",)

    def __init__(
        self,
        allow: str | Iterable[str] | AllowList | Callable[..., Any] = "*:443",
        users: Mapping[str, str] | Callable[..., Any] | None = None,
        realm: str = "trioxy",
        timeout: float = 10.0,
        otherwise: LayoutRef | None = None,
    ) -> None:
        self._allow_list: AllowList | None = None
        self._allow_fn: Callable[..., Any] | None = None
        if isinstance(allow, AllowList):
            self._allow_list = allow
        elif isinstance(allow, (str, list, tuple)):
            self._allow_list = AllowList(allow)
        elif callable(allow):
            self._allow_fn = as_async(allow)
        else:
            raise ValueError(
                f"allow must be 'host:port' patterns or a function (ctx, host, port), got {allow!r}"
            )
        self._users = Users(users)
        if (
            not isinstance(realm, str)
            or not realm.isprintable()
            or '"' in realm
            or "\\" in realm
            or not realm.isascii()
        ):
            raise ValueError(f"realm must be printable ASCII without quotes, got {realm!r}")
        if otherwise is not None and not isinstance(otherwise, LayoutRef):
            raise TypeError(
                f"otherwise must be a layout name or a function building one, got {otherwise!r}"
            )
        self._challenge = ("Proxy-Authenticate", f'Basic realm="{realm}"')
        super().__init__(timeout)  # (its _sub is the tunnel)
        self._otherwise = otherwise
        self._parser: RequestParser | None = None
        self._received: list[bytes] | None = None  # kept for ``otherwise``
        self._head: RequestHead | None = None
        self._other: Pipeline | None = None  # ``otherwise``

    # From the client -----------------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if self._relaying:
            assert self._sub is not None
            await self._sub.input(event)
            return
        other = self._other
        if other is not None:
            await other.input(event)
            return
        if self._ended or self._sub is not None:
            return
        kind = type(event)
        if kind is StreamEnd:
            if self._parser is not None:
                log.info("%s: the client left before its request was complete", self._peer)
            await self._end(event.error)  # type: ignore[union-attr]
            return
        if kind is Data and event.data:  # type: ignore[union-attr]
            await self._receive(event.data)  # type: ignore[union-attr]

    async def _receive(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            parser = self._parser = RequestParser()
            self._timer = start_timer(self.pipeline, self.timeout, self._expired, "CONNECT request")
            if self._otherwise is not None:
                self._received = []
        if self._received is not None:
            self._received.append(data)
        try:
            items = parser.feed(data)
        except ProtocolError as exc:
            if self._otherwise is not None:  # not a CONNECT: what to answer is its business
                await self._hand_off()
            else:
                await self._refuse(exc.status, f"bad request: {exc.message}", warn=True)
            return
        head = self._head
        for item in items:
            if type(item) is RequestHead:
                head = self._head = item
                if item.method != "CONNECT":
                    await self._not_connect(item)
                    return
            elif type(item) is EndOfMessage:
                assert head is not None
                await self._request(head)
                return
            elif item:
                await self._refuse(400, "a CONNECT request with a body", warn=True)
                return

    async def _not_connect(self, head: RequestHead) -> None:
        if self._otherwise is None:
            await self._refuse(
                405, f"{head.method[:20]} on a tunnel-only port", headers=[("Allow", "CONNECT")]
            )
        else:
            await self._hand_off()

    async def _hand_off(self) -> None:
        """The connection is not a tunnel: ``otherwise`` takes it, from its first byte."""
        assert self._otherwise is not None
        if self._timer is not None:
            self._timer.cancel()
        received = b"".join(self._received or ())
        self._received = self._parser = None
        other = self._other = self.pipeline.sub(self._otherwise.layout, self.output)
        await other.input(Data(received))

    async def _request(self, head: RequestHead) -> None:
        if self._timer is not None:
            self._timer.cancel()
        try:
            host, port = parse_authority(head.target)
        except ValueError as exc:
            await self._refuse(400, f"bad CONNECT target: {exc}", warn=True)
            return
        target = format_address(host, port)
        ctx = self.pipeline.context
        user: str | None = None
        if self._users.required:
            credentials = basic_credentials(head.headers.get("proxy-authorization"))
            ok = credentials is not None and await self._users.check(ctx, *credentials)
            if self._ended:
                return
            if not ok:
                why = (
                    "no proxy credentials"
                    if credentials is None
                    else f"credentials of {credentials[0][:60]!r} refused"
                )
                await self._refuse(407, why, headers=[self._challenge])
                return
            assert credentials is not None
            user = credentials[0]
        if self._allow_list is not None:
            allowed = self._allow_list.allows(host, port)
        else:
            assert self._allow_fn is not None
            allowed = bool(await self._allow_fn(ctx, host, port))
        if self._ended:
            return
        if not allowed:
            await self._refuse(403, f"tunnels to {target} are not allowed")
            return
        await self._open(target=target, tunnel_request=head, proxy_user=user)

    def _trailing(self) -> bytes:
        assert self._parser is not None
        trailing = self._parser.take_trailing()
        self._parser = None
        return trailing

    async def _answer(
        self, error: BaseException | None, bound: tuple[str, int] | None
    ) -> tuple[bool, bytes]:
        if self._ended:
            return False, b""
        if error is None:
            return True, _ESTABLISHED
        status = error_status(error)
        log.info(
            "%s %r: %d %s: %s",
            self._peer,
            self._line,
            status,
            REASONS.get(status, "Error"),
            _text(error),
        )
        return False, _answer(status, _text(error))

    @property
    def _line(self) -> str:
        head = self._head
        if head is None:
            return "-"
        return f"{head.method} {head.target[:200]} HTTP/{head.version}"

    # Ends ------------------------------------------------------------------------------

    async def _expired(self) -> None:
        await self._refuse(408, f"no complete request after {self.timeout:g}s", warn=True)

    async def _refuse(
        self, status: int, reason: str, warn: bool = False, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """Answer ``status`` with ``reason`` (one log line) and end the stream."""
        if self._ended:
            return
        if self._timer is not None:
            self._timer.cancel()
        (log.warning if warn else log.info)(
            "%s %r: %d %s: %s", self._peer, self._line, status, REASONS.get(status), reason
        )
        self._replied = False
        await self.output(Data(_answer(status, reason, headers)))
        await self._end()


# The client end -----------------------------------------------------------------------


class ConnectHttpTunnel(TunnelClient):
    """The stream through another proxy's ``CONNECT``; see the module docs."""

    name = "connect_http_tunnel"
    log = log
    timer_name = "CONNECT answer"

    def __init__(
        self,
        target: str | Callable[..., Any] | None = None,
        username: str | None = None,
        password: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._init_target(target)
        if username is not None and (not isinstance(username, str) or ":" in username):
            raise ValueError(f"username must be a str without ':', got {username!r}")
        if password is not None and (not isinstance(password, str) or username is None):
            raise ValueError("password must be a str, given with a username")
        fields: list[tuple[str, str]] = []
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            fields.append(("Proxy-Authorization", f"Basic {token}"))
        if headers is not None:
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            fields.extend((str(k), str(v)) for k, v in pairs)
        # A header that cannot be written is said at load time.
        request_head_bytes(RequestHead("CONNECT", "h:1", Headers(fields)))
        self._fields = fields
        self._init_state(timeout)
        self._parser: ResponseParser | None = None
        self._interim = False  # inside a 1xx answer

    def _parse_target(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected 'host:port', got {value!r}")
        return format_address(*parse_authority(value))

    def _request(self, target: str) -> tuple[str, bytes]:
        request = RequestHead("CONNECT", target, Headers([("Host", target), *self._fields]))
        parser = self._parser = ResponseParser()
        parser.expect("CONNECT")
        return target, request_head_bytes(request)

    def _closed_early(self) -> BaseException:
        return HttpTunnelError("the proxy closed the connection before answering", self.target)

    async def _answered(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None
        try:
            items = parser.feed(data)
        except ProtocolError as exc:
            await self._fail(
                HttpTunnelError(f"not an HTTP answer to CONNECT: {exc.message}", self.target)
            )
            return
        for item in items:
            if type(item) is ResponseHead:
                status = item.status
                if status < 200 and status != 101:
                    self._interim = True
                elif status >= 300 or status == 101:
                    reason = item.reason or REASONS.get(status, "")
                    await self._fail(
                        HttpTunnelError(
                            f"the proxy answered {status} {reason}".rstrip(), self.target, status
                        )
                    )
                    return
            elif type(item) is EndOfMessage:
                if self._interim:
                    self._interim = False
                    continue
                trailing = parser.take_trailing()
                self._parser = None
                await self._through(None, trailing)
                return

    async def _expired(self) -> None:
        await self._fail(
            ConnectTimeout(
                f"no answer to CONNECT {self.target} after {self.timeout:g}s", self.target
            )
        )


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [AcceptHttpTunnel, ConnectHttpTunnel]
