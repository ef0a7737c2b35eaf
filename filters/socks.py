"""``accept_socks`` and ``connect_socks``: the two ends of SOCKS5 (RFC 1928, RFC 1929).

``accept_socks(users=None, allow=None, timeout=10.0).to(layout)`` is a SOCKS5
server. It negotiates with the client (no authentication, or username/password
when ``users`` is given), reads its ``CONNECT`` request and runs ``layout`` for
the stream in a child context holding the request; ``layout`` is where the bytes
go, normally ``connect`` to the requested target::

    proxy.listen(1080).accept_socks().to(lambda p: p.connect(lambda ctx: ctx.target))

=========================  ======================================================
in the sub-pipeline        value
=========================  ======================================================
``ctx.target``             ``"host:port"`` the client asked for (``"[v6]:port"``
                           for IPv6; a domain name is resolved by ``connect``)
``ctx.socks_request``      the :class:`~protocols.socks5.Request` (``.host``,
                           ``.port``, ``.address_type``)
``ctx.socks_user``         the authenticated username, or ``None``
=========================  ======================================================

Arguments:

``users=None``
    ``None``: no authentication. A ``dict`` of username to password, or a
    function ``fn(ctx, username, password) -> bool`` (plain or ``async def``):
    username/password authentication is required (a client that does not offer
    it is answered "no acceptable method").
``allow=None``
    a function ``fn(ctx, request) -> bool`` (plain or ``async def``); a request
    it refuses is answered ``0x02`` (connection not allowed by ruleset).
``timeout=10.0``
    seconds from the client's first byte to its complete request.

The reply. Only ``CONNECT`` is served (``BIND`` and ``UDP ASSOCIATE`` are
answered ``0x07``, command not supported). The reply is sent once the
sub-pipeline's upstream connection exists: ``accept_socks`` feeds the
sub-pipeline an empty ``Data`` (which makes ``connect`` connect, and waits for
it), and ``connect`` reports its outcome through the context
(:data:`filters.connect.CONNECT_WATCH`). (Filters before ``connect`` see that
empty ``Data`` too: one that adds bytes to every chunk should leave empty ones
alone.) Success is answered ``0x00`` with the
upstream connection's local address; a failure with the code of its reason:

=====================================================  =========================
upstream failure                                       reply
=====================================================  =========================
connection refused                                     ``0x05`` refused
no route to host, name not resolved, connect timeout   ``0x04`` host unreachable
network unreachable                                    ``0x03`` network unreachable
a ``connect_socks`` upstream's own refusal             its reply code
anything else                                          ``0x01`` general failure
=====================================================  =========================

A sub-pipeline without a ``connect`` that reports (one that answers by itself,
or a ``connect`` inside a shared ``mux`` session) gets the success reply as soon
as the empty ``Data`` has gone through it, or before its first output. After a
failed reply the stream ends (``StreamEnd()``: the client sees the reply, then
the end). Malformed handshakes and timeouts get one warning line on the
``trioxy.socks`` logger and close the stream; refused credentials, requests and
commands get one info line. After the reply, events pass both ways unchanged,
half-close included; bytes the client sent right after its request are kept
and relayed first.

``connect_socks(target=None, username=None, password=None, timeout=10.0).to(layout)``
is a SOCKS5 client: ``layout`` is the connection to the SOCKS server (normally
``connect("socks-host:1080")``), over which it asks for a ``CONNECT`` to
``target`` and then relays the stream. ``target`` is ``"host:port"``, a function
``fn(ctx) -> "host:port"`` (plain or ``async def``) or ``None`` for
``ctx.target``; a host name is sent as such (the SOCKS server resolves it).
``username``/``password`` enable RFC 1929 authentication. Like ``connect``, it
starts as soon as its pipeline starts when ``target`` is a ``"host:port"`` (so a
protocol whose server speaks first works), else with the stream's first event;
it holds the stream's events until the server has answered (that is the
backpressure), sets ``ctx.upstream`` to the target once connected and reports to
:data:`~filters.connect.CONNECT_WATCH` (so ``accept_socks`` in front of it
replies after the far end did). A refusal ends the stream with
``StreamEnd(SocksError)`` (``.reply`` holds the server's code, ``None`` for
authentication failures), a handshake longer than ``timeout`` with
``StreamEnd(ConnectTimeout)``; both are logged once.

Example (runnable): a SOCKS client end talks to a SOCKS server end in memory;
the server's sub-pipeline answers in place of a real upstream::

    import trio
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout

    seen = []
    proxy = Proxy()
    (proxy.pipeline("server")
        .accept_socks(users={"ann": "secret"})
        .to(lambda p: p
            .handle_stream_start(lambda ctx: seen.append((ctx.socks_user, ctx.target)))
            .replace_data(lambda ctx, d: d.upper())))
    (proxy.pipeline("client")
        .connect_socks("example.com:80", username="ann", password="secret")
        .to("server"))

    out = trio.run(run_layout, proxy.layout("client"), [Data(b"hello"), StreamEnd()])
    assert join_data(out) == b"HELLO" and out[-1] == StreamEnd()
    assert seen == [("ann", "example.com:80")]
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import ConnectRefused, ConnectTimeout, UpstreamError
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.socks5 import (
    COMMAND_NOT_SUPPORTED,
    CONNECTION_NOT_ALLOWED,
    CONNECTION_REFUSED,
    GENERAL_FAILURE,
    HOST_UNREACHABLE,
    NETWORK_UNREACHABLE,
    NO_AUTH,
    SUCCEEDED,
    USERNAME_PASSWORD,
    ClientHandshake,
    Command,
    NoAcceptableMethod,
    ProtocolError,
    Refused,
    Request,
    ServerHandshake,
    UserPass,
)

from ._callback import as_async
from ._tunnel import TunnelClient, TunnelServer, Users, start_timer
from .balance import parse_target

__all__ = ["AcceptSocks", "ConnectSocks", "SocksError", "reply_for"]

log = logging.getLogger("trioxy.socks")


class SocksError(UpstreamError):
    """The SOCKS server refused (``reply``: its reply code, ``None`` when it
    refused our authentication) or spoke something else than SOCKS5."""

    def __init__(self, message: str, target: str | None = None, reply: int | None = None):
        super().__init__(message, target)
        self.reply = reply


_REFUSED = os.strerror(errno.ECONNREFUSED).lower()
_HOST_UNREACHABLE = (
    os.strerror(errno.EHOSTUNREACH).lower(),
    os.strerror(errno.EHOSTDOWN).lower(),
    "cannot resolve",
    "no address for",
)
_NETWORK_UNREACHABLE = os.strerror(errno.ENETUNREACH).lower()


def reply_for(error: BaseException | None) -> int:
    """The SOCKS5 reply code for an upstream failure (see the module docs). The
    reasons ``connect`` puts in its messages are those of the system's errors."""
    if error is None:
        return SUCCEEDED
    if isinstance(error, SocksError) and error.reply is not None:
        return error.reply
    if isinstance(error, ConnectTimeout):
        return HOST_UNREACHABLE
    if isinstance(error, ConnectRefused):
        text = str(error)
        if _REFUSED in text:
            return CONNECTION_REFUSED
        if _NETWORK_UNREACHABLE in text:
            return NETWORK_UNREACHABLE
        if any(reason in text for reason in _HOST_UNREACHABLE):
            return HOST_UNREACHABLE
    return GENERAL_FAILURE


# The server end ------------------------------------------------------------------


class AcceptSocks(TunnelServer):
    """A SOCKS5 server in front of the sub-pipeline; see the module docs."""

    name = "accept_socks"
    log = log
    unknown_peer = "?"

    def __init__(
        self,
        users: Mapping[str, str] | Callable[..., Any] | None = None,
        allow: Callable[..., Any] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._users = Users(users)
        if allow is not None and not callable(allow):
            raise ValueError(f"allow must be a function (ctx, request), got {allow!r}")
        self._allow = as_async(allow) if allow is not None else None
        super().__init__(timeout)
        self._hs: ServerHandshake | None = None
        self._user: str | None = None

    # From the client -----------------------------------------------------------

    async def on_event(self, event: Event) -> None:
        if self._relaying:
            assert self._sub is not None
            await self._sub.input(event)
            return
        if self._ended or self._sub is not None:
            return
        kind = type(event)
        if kind is StreamEnd:
            if self._hs is not None and not self._hs.closed:
                log.info("%s: SOCKS client left during the handshake", self._peer)
            await self._end(event.error)  # type: ignore[union-attr]
            return
        if kind is not Data:
            return
        hs = self._hs
        if hs is None:
            methods = (USERNAME_PASSWORD,) if self._users.required else (NO_AUTH,)
            hs = self._hs = ServerHandshake(methods)
            self._timer = start_timer(self.pipeline, self.timeout, self._expired, "SOCKS handshake")
        try:
            found = hs.receive(event.data)  # type: ignore[union-attr]
        except NoAcceptableMethod as exc:
            await self._refuse(f"SOCKS client refused: {exc}")
            return
        except ProtocolError as exc:
            await self._refuse(f"bad SOCKS handshake: {exc}", warn=True)
            return
        await self._flush()
        while found:
            message = found[0]
            if isinstance(message, UserPass):
                ok = await self._users.check(
                    self.pipeline.context, message.username, message.password
                )
                if self._ended:
                    return
                hs.accept_credentials(ok)
                if ok:  # set before the answer goes out: in memory, the request
                    # may arrive (re-entrantly) while the answer is being output
                    self._user = message.username
                await self._flush()
                if not ok:
                    await self._refuse(f"SOCKS authentication failed for {message.username!r}")
                    return
                try:
                    found = hs.receive(b"")  # the request may have come with the credentials
                except ProtocolError as exc:
                    await self._refuse(f"bad SOCKS request: {exc}", warn=True)
                    return
            else:
                assert isinstance(message, Request)
                await self._request(message)
                return

    async def _request(self, request: Request) -> None:
        hs = self._hs
        assert hs is not None
        if self._timer is not None:
            self._timer.cancel()
        ctx = self.pipeline.context
        if request.command != Command.CONNECT:
            hs.reply(COMMAND_NOT_SUPPORTED)
            await self._flush()
            await self._refuse(f"SOCKS command {request.command} to {request.target} not supported")
            return
        if self._allow is not None and not await self._allow(ctx, request):
            hs.reply(CONNECTION_NOT_ALLOWED)
            await self._flush()
            await self._refuse(f"SOCKS CONNECT to {request.target} not allowed")
            return
        if self._ended:
            return
        await self._open(target=request.target, socks_request=request, socks_user=self._user)

    def _trailing(self) -> bytes:
        assert self._hs is not None
        return self._hs.trailing

    async def _answer(
        self, error: BaseException | None, bound: tuple[str, int] | None
    ) -> tuple[bool, bytes]:
        hs = self._hs
        assert hs is not None
        if error is not None:
            code = reply_for(error)
            log.debug("%s: SOCKS reply 0x%02x: %s", self._peer, code, error)
            hs.reply(code)
            return False, hs.data_to_send()
        host, port = bound if bound is not None else ("0.0.0.0", 0)
        hs.reply(SUCCEEDED, host, port)
        return True, hs.data_to_send()

    async def _flush(self) -> None:
        assert self._hs is not None
        out = self._hs.data_to_send()
        if out and not self._ended:  # (a timeout may have ended it during a callback)
            await self.output(Data(out))

    # Ends ----------------------------------------------------------------------

    async def _expired(self) -> None:
        await self._refuse(
            f"no complete SOCKS request after {self.timeout:g}s",
            warn=True,
            error=ConnectTimeout(f"SOCKS handshake not complete after {self.timeout:g}s"),
        )

    async def _refuse(
        self, reason: str, warn: bool = False, error: BaseException | None = None
    ) -> None:
        """End the stream after a refusal (the answer, if any, is already out)."""
        if self._ended:
            return
        (log.warning if warn else log.info)("%s: %s", self._peer, reason)
        if self._hs is not None:
            await self._flush()  # (a ProtocolError's answer)
        await self._end(error)


# The client end ------------------------------------------------------------------


class ConnectSocks(TunnelClient):
    """The stream through a SOCKS5 server; see the module docs."""

    name = "connect_socks"
    log = log
    timer_name = "SOCKS client handshake"

    def __init__(
        self,
        target: str | Callable[..., Any] | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._init_target(target)
        if username is not None and not isinstance(username, str):
            raise ValueError(f"username must be a str, got {username!r}")
        if password is not None and (not isinstance(password, str) or username is None):
            raise ValueError("password must be a str, given with a username")
        if username is not None:
            ClientHandshake("localhost", 1, username, password)  # too long: said at load time
        self.username = username
        self.password = password
        self._init_state(timeout)
        self._hs: ClientHandshake | None = None

    def _parse_target(self, value: Any) -> tuple[str, int]:
        return parse_target(value)

    def _request(self, target: tuple[str, int]) -> tuple[str, bytes]:
        host, port = target
        hs = self._hs = ClientHandshake(host, port, self.username, self.password)
        return hs.request.target, hs.start()

    def _closed_early(self) -> BaseException:
        return SocksError("the SOCKS server closed during the handshake", self.target)

    async def _answered(self, data: bytes) -> None:
        hs = self._hs
        assert hs is not None and self._sub is not None
        try:
            answer = hs.receive(data)
        except Refused as exc:
            await self._fail(SocksError(str(exc), self.target, exc.reply))
            return
        except ProtocolError as exc:
            await self._fail(SocksError(f"not a SOCKS5 answer: {exc}", self.target))
            return
        if answer:
            await self._sub.input(Data(answer))
        if hs.done:
            reply = hs.reply
            await self._through(
                (reply.host, reply.port) if reply is not None else None, hs.trailing
            )

    async def _expired(self) -> None:
        await self._fail(
            ConnectTimeout(
                f"SOCKS handshake for {self.target} not done after {self.timeout:g}s", self.target
            )
        )


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [AcceptSocks, ConnectSocks]
