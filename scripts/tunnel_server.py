"""The server end of the TLS tunnel between two networks (its client end is
``scripts/tunnel_client.py``).

It listens on ``LISTEN`` for the client end's links: long-lived TLS connections,
mutually authenticated (the client must present a certificate issued by a CA of
``CA``), each carrying many multiplexed streams (smux, see ``filters/smux.py``).
Every stream asks, with a SOCKS5 request at its start, for one target in this
server's network; the server connects to it if ``ALLOW`` lets it, and answers
with the outcome (success, refused, unreachable, not allowed: the SOCKS5 reply
codes), which the client end passes on to its own clients. Then the stream's
bytes flow both ways, with flow control per stream (a slow stream fills its own
window and stops; the others on the link go on).

When a link breaks, the streams on it end (their target connections are closed)
and the client end opens new links. Each stream allowed is logged as one info
line on ``trioxy.tunnel`` (the client end's certificate subject and address, the
target); a refused one as one info line on ``trioxy.socks``. See
``docs/tunnel.md`` for the whole picture.

Run it (with certificates from your CA; ``examples/tunnel`` makes test ones)::

    LISTEN=0.0.0.0:9443 CERT=server.pem KEY=server.key CA=ca.pem \\
    ALLOW='10.0.0.0/8:*,*.internal:443' trioxy run scripts/tunnel_server.py

Environment variables (a bad value stops the script at load with one line
``tunnel_server.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``           where the client end's links connect, ``host:port``;
                     default ``127.0.0.1:9443``
``CERT``, ``KEY``    the server's certificate chain and its private key (PEM
                     files); required, no default
``CA``               the CAs (PEM file) that issue the client ends'
                     certificates: a client end without such a certificate is
                     refused at the TLS handshake; required, no default
``ALLOW``            the targets streams may ask for, a comma-separated list of
                     ``HOST:PORTS`` rules, or ``*:*`` for any; required, no
                     default. ``HOST`` is ``*`` (any), a name (``db.internal``),
                     ``*.`` and a domain (its subdomains: ``*.internal``), an IP
                     address or a network (``10.0.0.0/8``, ``[fd00::]/8`` or
                     ``fd00::/8``); ``PORTS`` is ``*``, a port or a range
                     (``8000-8099``). A name is matched by name rules; when none
                     matches, it is resolved here and allowed if one of its
                     addresses matches an address rule (the connection then goes
                     to that address). Others get SOCKS reply ``0x02``.
``CONNECT_TIMEOUT``  seconds to connect to a target; default ``5``
``MAX_STREAMS``      streams open at once on one link at most; default ``10000``
``PING_INTERVAL``    seconds between the client end's pings: a link that stays
                     silent for three intervals is dropped. Use the same value as
                     the client end; default ``15``
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass

import trio

from pipeline import Builder, Context, Proxy
from pipeline.address import format_address
from pipeline.settings import address, count, seconds, setting
from protocols.socks5 import Request

log = logging.getLogger("trioxy.tunnel")


def pem_file(text: str) -> str:
    """The name of a readable file (required: an empty value is refused)."""
    if not text:
        raise ValueError("required: the name of a PEM file")
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise ValueError("no such readable file")
    return text


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``HOST:PORTS`` rule of ``ALLOW``: exactly one of ``network``, ``name``
    (an exact host name) and ``suffix`` (``.domain``) is set, or none of them for
    ``*`` (any host)."""

    low: int
    high: int
    network: IpNetwork | None = None
    name: str | None = None
    suffix: str | None = None

    def port_ok(self, port: int) -> bool:
        return self.low <= port <= self.high

    @property
    def any_host(self) -> bool:
        return self.network is None and self.name is None and self.suffix is None


def _ports(text: str) -> tuple[int, int]:
    if text == "*":
        return 1, 65535
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError(f"bad ports {text!r}: expected '*', a port or a range 'LOW-HIGH'")
    first, last = int(low), int(high) if sep else int(low)
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"bad ports {text!r}: expected 1-65535, low before high")
    return first, last


def _rule(text: str) -> Rule:
    host, sep, ports = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"bad rule {text!r}: expected 'HOST:PORTS'")
    low, high = _ports(ports)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host.startswith("[") and "]/" in host:  # [fd00::]/8
        host = host[1:].replace("]/", "/", 1)
    if host == "*":
        return Rule(low, high)
    try:
        return Rule(low, high, network=ipaddress.ip_network(host, strict=False))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    wildcard = name.startswith("*.")
    labels = (name[2:] if wildcard else name).split(".")
    if not all(labels) or not all(
        label.replace("-", "").replace("_", "").isalnum() and label.isascii() for label in labels
    ):
        raise ValueError(f"bad rule {text!r}: {host!r} is not a host name, address or network")
    if wildcard:
        return Rule(low, high, suffix=name[1:])
    return Rule(low, high, name=name)


class AllowList:
    """The parsed ``ALLOW`` setting, and the check ``accept_socks`` calls."""

    def __init__(self, text: str) -> None:
        rules = [_rule(part.strip()) for part in text.split(",") if part.strip()]
        if not rules:
            raise ValueError("required: rules such as '10.0.0.0/8:*,*.internal:443', or '*:*'")
        self.rules = rules
        self.by_address = any(r.network is not None for r in rules)
        self.text = ",".join(part.strip() for part in text.split(",") if part.strip())

    def __repr__(self) -> str:  # (trioxy check prints it)
        return f"AllowList({self.text!r})"

    def name_allowed(self, name: str, port: int) -> bool:
        name = name.lower().rstrip(".")
        for rule in self.rules:
            if not rule.port_ok(port):
                continue
            if rule.any_host or rule.name == name:
                return True
            if rule.suffix is not None and name.endswith(rule.suffix):
                return True
        return False

    def address_allowed(self, ip: IpAddress, port: int) -> bool:
        for rule in self.rules:
            if not rule.port_ok(port):
                continue
            if rule.any_host:
                return True
            net = rule.network
            if net is not None and ip.version == net.version and ip in net:
                return True
        return False

    async def __call__(self, ctx: Context, request: Request) -> bool:
        """Whether the stream may connect to ``request``'s target. A name allowed
        only through its address leaves that address in ``ctx.allowed_target``,
        so the connection goes where the check looked (no second lookup)."""
        host, port = request.host, request.port
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return self.address_allowed(ip, port)
        if self.name_allowed(host, port):
            return True
        if not self.by_address:
            return False
        try:
            found = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError:
            return False  # not resolvable: nothing to allow
        for *_, sockaddr in found:
            candidate = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if self.address_allowed(candidate, port):
                ctx.set(allowed_target=format_address(str(candidate), port))
                return True
        return False


def target(ctx: Context) -> str:
    """Where the stream connects: the address ``ALLOW`` checked, else the target
    as asked (a name allowed by a name rule is resolved by ``connect``)."""
    checked: str | None = ctx.get("allowed_target")
    return checked if checked is not None else str(ctx.target)


LISTEN = setting("LISTEN", "127.0.0.1:9443", address)
CERT = setting("CERT", "", pem_file)
KEY = setting("KEY", "", pem_file)
CA = setting("CA", "", pem_file)
ALLOW = setting("ALLOW", "", AllowList)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
MAX_STREAMS = setting("MAX_STREAMS", "10000", count)
PING_INTERVAL = setting("PING_INTERVAL", "15", seconds)


def audit(ctx: Context) -> None:
    """One info line per stream allowed: which client end (its certificate's
    subject and address) asked for which target."""
    remote = ctx.remote
    peer = format_address(*remote) if remote is not None else "?"
    log.info("%s (%s): stream to %s", ctx.get("tls_peer_subject"), peer, target(ctx))


def stream(p: Builder) -> None:
    """One stream of a link: its SOCKS5 request, checked by ``ALLOW``, then the
    target. The SOCKS reply waits for ``connect``'s outcome. The stream's end is
    the client's to decide (it ends when the client's connection does, or when
    the link breaks), so the target connection has no idle timeout of its own."""
    p.accept_socks(allow=ALLOW).to(
        lambda c: c.handle_stream_start(audit).connect(
            target, connect_timeout=CONNECT_TIMEOUT, idle_timeout=None
        )
    )


proxy = Proxy()
(
    # Links are long-lived; the client end's pings keep them busy, and a dead
    # one is detected by the missing pings, not by an idle timeout.
    proxy.listen(LISTEN, idle_timeout=None)
    .accept_tls(CERT, KEY, ca_file=CA, verify_client="required")
    .to(lambda t: t.accept_smux(max_streams=MAX_STREAMS, ping_interval=PING_INTERVAL).to(stream))
)
