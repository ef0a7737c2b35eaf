"""The client end of the TLS tunnel between two networks (its server end is
``scripts/tunnel_server.py``).

In network A it accepts plain TCP connections for fixed targets (``FORWARD``),
SOCKS5 clients (``SOCKS_LISTEN``) and HTTP ``CONNECT`` clients (``HTTP_LISTEN``)
for any target, and carries each of them as one stream, multiplexed (smux, see
``filters/smux.py``) over at most ``LINKS`` long-lived TLS connections to the
server end at ``SERVER``, in network B. The TLS is mutual: the client end
presents ``CERT`` and checks that the server's certificate, issued by a CA of
``CA``, is valid for ``SERVER_NAME``. The server end connects to the targets in
its network (if its ``ALLOW`` list lets it) and relays the bytes.

Each stream starts with a SOCKS5 request to the server end, whose reply is the
outcome of its connection to the target. A SOCKS client gets that very reply
(``0x02`` when the server's ``ALLOW`` refuses the target, ``0x05`` when the
target refuses, ``0x04`` when it is unreachable; ``0x01`` when the tunnel is
down); an HTTP ``CONNECT`` client gets ``200`` or ``502`` with the reason
(``504`` when opening the stream timed out); a ``FORWARD`` client is
disconnected when it failed. Flow control is per stream: one slow reader does
not hold up the other streams on its link. When a link breaks, the streams on it
are closed at once (their clients see their connection closed) and new streams
open new links, with backoff while the server end does not answer. See
``docs/tunnel.md``.

Run it::

    SERVER=gw.example:9443 SERVER_NAME=gw.example CERT=alice.pem KEY=alice.key \\
    CA=ca.pem FORWARD=127.0.0.1:2222=10.0.0.5:22 SOCKS_LISTEN=127.0.0.1:1080 \\
    trioxy run scripts/tunnel_client.py
    ssh -p 2222 127.0.0.1
    curl --socks5-hostname 127.0.0.1:1080 http://wiki.internal/

Environment variables (a bad value stops the script at load with one line
``tunnel_client.py:LINE: NAME=value: reason``, exit status 2):

``SERVER``           the server end, ``host:port``; default ``127.0.0.1:9443``
``SERVER_NAME``      the name (or IP address) the server's certificate must be
                     valid for, also sent as SNI; default: the host of ``SERVER``
``CERT``, ``KEY``    this end's client certificate and its private key (PEM
                     files); required, no default
``CA``               the CAs (PEM file) that issued the server's certificate;
                     required, no default
``FORWARD``          fixed forwards, a comma-separated list of
                     ``LISTEN=TARGET`` (``127.0.0.1:2222=10.0.0.5:22``): a
                     connection to ``LISTEN`` goes to ``TARGET``, a ``host:port``
                     as seen from the server end (a name is resolved there);
                     ``LISTEN`` is ``host:port`` or a bare port (every IPv4
                     address); default: none
``SOCKS_LISTEN``     where SOCKS5 clients connect (no authentication: bind it to
                     an address only trusted clients reach), ``host:port``, or
                     ``none``; default ``none``
``HTTP_LISTEN``      where HTTP proxy clients connect with ``CONNECT host:port``
                     (``curl -p -x``, ``https_proxy=``; no authentication, other
                     methods are answered ``405``), ``host:port``, or ``none``;
                     default ``none``. At least one of ``FORWARD``,
                     ``SOCKS_LISTEN`` and ``HTTP_LISTEN`` must be given
``LINKS``            TLS connections to the server end at most; default ``2``
``CONNECT_TIMEOUT``  seconds to open the TCP connection of a link; default ``5``
``OPEN_TIMEOUT``     seconds for a stream to be open at the far end: a link made
                     (and its TLS handshake) if needed, and the server end's
                     answer, its connection to the target included; default ``20``
``IDLE_TIMEOUT``     seconds a client connection may move no byte either way
                     before it is closed, or ``none``; default ``none`` (a tunnel
                     carries long quiet sessions: SSH, databases)
``PING_INTERVAL``    seconds between pings on an idle link: a link that stays
                     silent for three intervals is dropped and replaced. Use the
                     same value as the server end; default ``15``

A ``FORWARD`` stream opens when its client connects, so a protocol whose server
speaks first (SMTP, MySQL) works through it.
"""

from __future__ import annotations

import os

from pipeline import Proxy
from pipeline.address import parse_address
from pipeline.settings import address, count, optional, seconds, setting

#: The most a stream may wait for a link while the server end does not answer
#: (the backoff between attempts doubles from 0.1 s up to this).
MAX_RECONNECT_DELAY = 5.0


def pem_file(text: str) -> str:
    """The name of a readable file (required: an empty value is refused)."""
    if not text:
        raise ValueError("required: the name of a PEM file")
    if not os.path.isfile(text) or not os.access(text, os.R_OK):
        raise ValueError("no such readable file")
    return text


def target(text: str) -> str:
    """A ``host:port`` to connect to (a host and a non-zero port)."""
    host, port = parse_address(text, default_host="")
    if not host:
        raise ValueError(f"{text!r}: a target needs a host")
    if port == 0:
        raise ValueError(f"{text!r}: port 0 cannot be connected to")
    return address(text)


def forwards(text: str) -> list[tuple[str, str]]:
    """``LISTEN=TARGET,...`` as ``[(listen, target), ...]`` (may be empty)."""
    found: list[tuple[str, str]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part or part.lower() == "none":
            continue
        local, sep, far = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r}: expected 'LISTEN=TARGET' (127.0.0.1:2222=10.0.0.5:22)")
        found.append((address(local.strip()), target(far.strip())))
    return found


def server_name(text: str) -> str:
    """A host name or an IP address (an IPv6 one with or without brackets)."""
    name = text.strip().removeprefix("[").removesuffix("]")
    if not name or any(c.isspace() or c in "/@" for c in name):
        raise ValueError("expected a host name or an IP address")
    return name


def last_listener(text: str) -> str | None:
    """``HTTP_LISTEN``: an address, or ``none`` if another setting gives a listener."""
    if text.lower() != "none":
        return address(text)
    if not FORWARD and SOCKS_LISTEN is None:
        raise ValueError("nothing to listen on: give FORWARD, SOCKS_LISTEN or HTTP_LISTEN")
    return None


SERVER = setting("SERVER", "127.0.0.1:9443", target)
SERVER_NAME = setting("SERVER_NAME", parse_address(SERVER)[0], server_name)
CERT = setting("CERT", "", pem_file)
KEY = setting("KEY", "", pem_file)
CA = setting("CA", "", pem_file)
FORWARD = setting("FORWARD", "none", forwards)
SOCKS_LISTEN = setting("SOCKS_LISTEN", "none", optional(address))
HTTP_LISTEN = setting("HTTP_LISTEN", "none", last_listener)
LINKS = setting("LINKS", "2", count)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
OPEN_TIMEOUT = setting("OPEN_TIMEOUT", "20", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "none", optional(seconds))
PING_INTERVAL = setting("PING_INTERVAL", "15", seconds)


proxy = Proxy()

# One named layout, so that every listener's streams share the same few links
# (a connect_smux builder call owns one pool of links).
(
    proxy.pipeline("tunnel")
    .connect_smux(
        max_links=LINKS, ping_interval=PING_INTERVAL, max_reconnect_delay=MAX_RECONNECT_DELAY
    )
    .to(
        lambda link: link.connect_tls(SERVER_NAME, ca_file=CA, cert=CERT, key=KEY).to(
            # A link is long-lived: pings keep it busy, and a dead one is detected
            # by their missing answers, not by an idle timeout.
            lambda tcp: tcp.connect(SERVER, connect_timeout=CONNECT_TIMEOUT, idle_timeout=None)
        )
    )
)

for local, far in FORWARD:
    # The stream's SOCKS5 request to the server end names the fixed target.
    proxy.listen(local, idle_timeout=IDLE_TIMEOUT).connect_socks(far, timeout=OPEN_TIMEOUT).to(
        "tunnel"
    )

if SOCKS_LISTEN is not None:
    # accept_socks answers the client once connect_socks has the server end's
    # reply, and with its code.
    (
        proxy.listen(SOCKS_LISTEN, idle_timeout=IDLE_TIMEOUT)
        .accept_socks()
        .to(lambda p: p.connect_socks(timeout=OPEN_TIMEOUT).to("tunnel"))
    )

if HTTP_LISTEN is not None:
    # Any target as far as this end is concerned: the server end's ALLOW decides
    # (its refusal comes back as 502 with the reason).
    (
        proxy.listen(HTTP_LISTEN, idle_timeout=IDLE_TIMEOUT)
        .accept_http_tunnel(allow="*:*")
        .to(lambda p: p.connect_socks(timeout=OPEN_TIMEOUT).to("tunnel"))
    )
