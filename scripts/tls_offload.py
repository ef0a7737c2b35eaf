"""TLS offload: an HTTPS server in front of plain-HTTP upstreams.

Clients connect with HTTPS to ``LISTEN``; trioxy terminates TLS (``accept_tls``,
with the certificate ``CERT`` and its key ``KEY``) and forwards each request, as
plain HTTP over pooled keep-alive connections, to one of ``UPSTREAMS`` chosen
round-robin per request (``demux_http``, ``balance``, ``mux_http``, ``connect``,
as ``reverse_proxy.py`` does). The upstreams never see TLS.

* Each request gets ``X-Forwarded-Proto: https``, ``X-Forwarded-For`` (the
  client's address appended) and ``X-Forwarded-Host`` (its ``Host``).
* ``CLIENT_CA`` turns on mutual TLS: a client must present a certificate signed
  by one of the CAs in that file, or its handshake fails. Its verified subject is
  passed upstream in ``X-Client-Subject`` (RFC 4514 text, ``CN=alice,O=Example``).
  A client's own ``X-Client-Subject`` header is always removed (with or without
  ``CLIENT_CA``), so an upstream can trust it.
* A failed handshake (an unknown or missing client certificate, no TLS version
  in common, plain HTTP sent to the HTTPS port) is one warning line on
  ``trioxy.tls``; that connection is closed and the server keeps serving.
* An upstream that refuses a connection is replaced, for that request, by the
  next one; 3 failures in a row take it out for 10 seconds. When no upstream
  answers the client gets ``502 Bad Gateway`` (``504`` on a timeout).

Run it (``CERT`` and ``KEY`` are required; ``openssl req -x509 -newkey ec -pkeyopt
ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost -addext
subjectAltName=DNS:localhost -keyout key.pem -out cert.pem`` makes a test pair)::

    CERT=cert.pem KEY=key.pem UPSTREAMS=127.0.0.1:8080 trioxy run scripts/tls_offload.py
    curl --cacert cert.pem https://localhost:8443/

Environment variables (a bad value stops the script at load with one line
``tls_offload.py:LINE: NAME='value': reason``, exit status 2):

``LISTEN``             where to listen; default ``127.0.0.1:8443``
``UPSTREAMS``          comma-separated ``host:port`` list of plain-HTTP servers;
                       default ``127.0.0.1:8080``
``CERT``               the server's certificate chain, a PEM file (the
                       certificate first, then its intermediates); required
``KEY``                the certificate's private key, a PEM file (not encrypted);
                       required
``CLIENT_CA``          a PEM file of the CAs client certificates must be signed
                       by (mutual TLS), or ``none``; default ``none``
``ALPN``               comma-separated ALPN protocols offered to clients,
                       ``http/1.1`` and ``http/1.0`` (trioxy does not speak h2), or
                       ``none``; default ``http/1.1``
``MIN_TLS``            the lowest TLS version accepted, ``1.2`` or ``1.3``;
                       default ``1.2``
``HANDSHAKE_TIMEOUT``  seconds a client has to finish its TLS handshake; default ``10``
``SESSION_TICKETS``    ``on``: issue TLS session tickets, with which a returning
                       client makes an abbreviated handshake; ``off``: every TLS 1.3
                       handshake is a full one; default ``on``
``CONNECT_TIMEOUT``    seconds to connect to one upstream; default ``5``
``IDLE_TIMEOUT``       seconds with nothing moving before a connection (client or
                       upstream) is closed, or ``none``; default ``60``
``MAX_CONNECTIONS``    client connections served at once, or ``none``; default ``none``
"""

from __future__ import annotations

from collections.abc import Callable

from filters.balance import Balancer, make_balancer
from pipeline import Builder, Proxy
from pipeline.settings import address, count, optional, seconds, setting

#: The protocols trioxy speaks behind ``accept_tls`` (ALPN must not promise h2).
HTTP1 = ("http/1.1", "http/1.0")
#: The request header carrying the verified client certificate's subject.
SUBJECT_HEADER = "X-Client-Subject"


def pem_file(what: str, block: bytes) -> Callable[[str], str]:
    """A parser for a readable PEM file holding ``block`` (``b"CERTIFICATE"``,
    ``b"PRIVATE KEY"``); ``what`` names the file in errors. OpenSSL reports the
    same mistakes later, but without saying which setting is wrong."""

    def parse(text: str) -> str:
        if not text:
            raise ValueError(f"required: the {what}, a PEM file")
        try:
            with open(text, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ValueError(f"no such file (expected the {what})") from None
        except OSError as exc:
            raise ValueError(f"cannot read the {what}: {exc.strerror}") from None
        if b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
            raise ValueError("the key is encrypted (decrypt it: openssl pkey -in KEY -out NEW)")
        if block + b"-----" not in data:
            raise ValueError(f"not the {what}: no PEM {block.decode()} block in it")
        return text

    return parse


def alpn(text: str) -> list[str] | None:
    if text.lower() == "none":
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    bad = [n for n in names if n not in HTTP1]
    if bad or not names:
        raise ValueError(f"expected {' and/or '.join(HTTP1)} (or none); trioxy speaks HTTP/1 only")
    return names


def tls_version(text: str) -> str:
    version = text.removeprefix("TLSv")
    if version not in ("1.2", "1.3"):
        raise ValueError("expected 1.2 or 1.3")
    return f"TLSv{version}"


def on_off(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise ValueError("expected on or off")
    return text.lower() == "on"


def upstreams(text: str) -> Balancer:
    targets = [part.strip() for part in text.split(",") if part.strip()]
    if not targets:
        raise ValueError("expected at least one host:port")
    return make_balancer("round-robin", targets, max_fails=3, fail_timeout=10.0)


LISTEN = setting("LISTEN", "127.0.0.1:8443", address)
BACKENDS = setting("UPSTREAMS", "127.0.0.1:8080", upstreams)
CERT = setting("CERT", "", pem_file("server certificate chain", b"CERTIFICATE"))
KEY = setting("KEY", "", pem_file("certificate's private key", b"PRIVATE KEY"))
CLIENT_CA = setting("CLIENT_CA", "none", optional(pem_file("client CA file", b"CERTIFICATE")))
ALPN = setting("ALPN", "http/1.1", alpn)
MIN_TLS = setting("MIN_TLS", "1.2", tls_version)
HANDSHAKE_TIMEOUT = setting("HANDSHAKE_TIMEOUT", "10", seconds)
SESSION_TICKETS = setting("SESSION_TICKETS", "on", on_off)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "60", optional(seconds))
MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))


def upstream(s: Builder) -> None:
    """The bytes of one pooled upstream connection: plain TCP to the upstream
    picked for the request that opened it (failing over if it refuses)."""
    s.connect(BACKENDS, connect_timeout=CONNECT_TIMEOUT, idle_timeout=IDLE_TIMEOUT)


def forward(p: Builder) -> None:
    """One decrypted request: mark it as HTTPS, pick an upstream, send it there."""
    p.forwarded_headers(via=None)
    # Removed first (a client could send its own), then set from the handshake
    # (with mutual TLS; without, the subject is None and the header stays out).
    p.set_request_headers(
        remove=[SUBJECT_HEADER],
        set={SUBJECT_HEADER: lambda ctx, head: ctx.get("tls_peer_subject")},
    )
    p.balance(BACKENDS).mux_http(max_idle=IDLE_TIMEOUT).to(upstream)


def site(p: Builder) -> None:
    """What runs on the plaintext of one client connection."""
    p.demux_http().to(forward)


proxy = Proxy()
proxy.listen(LISTEN, max_connections=MAX_CONNECTIONS, idle_timeout=IDLE_TIMEOUT).accept_tls(
    CERT,
    KEY,
    alpn=ALPN,
    ca_file=CLIENT_CA,
    min_version=MIN_TLS,
    handshake_timeout=HANDSHAKE_TIMEOUT,
    session_tickets=SESSION_TICKETS,
).to(site)
