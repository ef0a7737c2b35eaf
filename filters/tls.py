"""``accept_tls`` and ``connect_tls``: terminate and originate TLS.

Both run Python's :mod:`ssl` over memory BIOs (:class:`ssl.MemoryBIO`,
:meth:`ssl.SSLContext.wrap_bio`): the filters move bytes, OpenSSL does the
cryptography, and no thread or socket wrapper is involved.

``accept_tls(cert, key, ...).to(layout)`` is the server side. Its input is the
ciphertext of a client (the listener's bytes); once the handshake is done it
starts one sub-pipeline of ``layout``, feeds it the decrypted bytes, and encrypts
what the sub-pipeline outputs back to the client::

    proxy.listen(8443).accept_tls("site.crt", "site.key", alpn=["http/1.1"]).to(
        lambda p: p.demux_http().to(lambda r: r.serve_http(handler)))

``connect_tls(server_hostname, ...).to(layout)`` is the client side: it encrypts
the plaintext it receives and sends the ciphertext into a sub-pipeline of
``layout`` (typically ``connect(SERVER)``), and outputs the decrypted answer::

    proxy.listen(8080).connect_tls("api.example").to(lambda p: p.connect("api.example:443"))

Its handshake begins when the stream starts, before the client sends anything,
when the server name is known then (given as a string, or the ``tls_sni`` that
``accept_tls`` found), so a protocol whose server speaks first (SMTPS, IMAPS)
works; with a name function it begins on the stream's first event.

Arguments of ``accept_tls``:

``cert``, ``key``
    PEM files of the certificate chain and its private key (``key=None``: the key
    is in ``cert``); ``password`` for an encrypted key. Optional when ``sni``
    chooses every certificate.
``sni``
    ``fn(ctx, server_name)`` choosing the certificate by the name the client asked
    for (``server_name`` is ``None`` if it sent none). It returns a ``(cert, key)``
    pair of file names (a context is built for each pair once, then reused), an
    :class:`ssl.SSLContext` of your own (configure ALPN and client verification
    on it yourself), or ``None`` for the default ``cert`` (no default: the
    handshake fails with ``unrecognized_name``). It must be a plain function: it
    runs inside the handshake. An exception in it fails that handshake only.
``alpn``
    protocols the server supports, in its order of preference
    (``["h2", "http/1.1"]``); the first one the client also offers is selected.
``ca_file``, ``verify_client``
    mutual TLS: client certificates are verified against the CAs in ``ca_file``.
    ``verify_client`` is ``"required"`` (the default when ``ca_file`` is given),
    ``"optional"`` (verified if sent) or ``"none"``.
``min_version="TLSv1.2"``, ``max_version=None``, ``ciphers=None``
    version bounds (``"TLSv1.2"``, ``"TLSv1.3"``) and an OpenSSL cipher string
    for TLS 1.2 and older (OpenSSL's defaults for TLS 1.3 suites apply).
``handshake_timeout=10.0``
    seconds for the whole handshake (``None``: no limit), counted from the
    client's first byte (a client that sends nothing at all is for the
    listener's ``read_timeout``/``idle_timeout`` to close).
``session_tickets=True``
    issue session tickets, with which a returning client makes an abbreviated
    handshake. ``False``: none are issued, so every TLS 1.3 handshake is a full
    one (TLS 1.2 clients may still resume by session ID).

Arguments of ``connect_tls``:

``server_hostname``
    the name sent as SNI and checked against the server's certificate: a string,
    or ``fn(ctx)`` (plain or ``async def``). ``None`` (the default) takes the
    context variable ``tls_sni`` -- the name the client asked ``accept_tls`` for,
    or one a ``handle_tls_client_hello`` callback set -- so a re-encrypting proxy
    passes the client's name on.
``verify=True``, ``ca_file=None``
    the server's certificate is verified, against the system's CA bundle or the
    CAs of ``ca_file``, and must match ``server_hostname`` (a host name or IP
    address). ``verify=False`` turns both checks off (and needs no name).
``cert``, ``key``, ``password``
    a client certificate, for servers that require one.
``alpn``, ``min_version``, ``max_version``, ``ciphers``, ``handshake_timeout``
    as for ``accept_tls``; ``alpn`` is the list offered.

The context. After a handshake ``accept_tls`` sets, on the stream's context:

===========================  ===============================================
variable                     value
===========================  ===============================================
``ctx.tls_version``          ``"TLSv1.3"``, ``"TLSv1.2"``
``ctx.tls_cipher``           the cipher suite, ``"TLS_AES_256_GCM_SHA384"``
``ctx.tls_alpn``             the selected protocol (``None``: no ALPN)
``ctx.tls_sni``              the server name the client sent (or ``None``)
``ctx.tls_peer_subject``     the verified client certificate's subject, as
                             RFC 4514 text (``"CN=alice,O=Example"``), or ``None``
``ctx.tls_peer_cert``        that certificate as :meth:`ssl.SSLSocket.getpeercert`
                             returns it (``None`` without one)
===========================  ===============================================

and ``ctx.tls`` holds the same as a :class:`TlsInfo`. ``connect_tls`` sets
``ctx.upstream_tls``, a :class:`TlsInfo` about the server (its ``peer_subject``
is the server certificate's subject), leaving the client's ``tls_*`` alone.

Ends. A ``close_notify`` from the peer ends the decrypted stream
(``StreamEnd()``, a half-close: the other direction goes on); so does a peer's
end of transport without one (a "ragged EOF", accepted as Python's ``ssl`` does).
Data after the peer's ``close_notify`` is dropped. A ``StreamEnd()`` on the
plaintext side sends ``close_notify`` and then ends the ciphertext side (the
peer's data still arriving after that is decrypted and delivered, as TLS 1.3's
half-close allows); ``StreamEnd(error)`` ends it without ``close_notify``.
Message events are not carried: TLS carries bytes.

Failures. A failed handshake -- an unknown CA, an expired or wrong-host
certificate, a missing client certificate, plain HTTP sent to a TLS port, the
timeout -- sends the peer OpenSSL's alert, logs one line on the ``trioxy.tls``
logger (who, which server name, why), and ends the stream with
``StreamEnd(TlsHandshakeError)`` (:class:`TlsHandshakeTimeout` after the
timeout); a client that disconnects before sending a byte is logged at DEBUG
only. A record-layer error later ends the stream with :class:`TlsError`. These
are :class:`~pipeline.errors.UpstreamError` subclasses, so an HTTP layer in
front of ``connect_tls`` answers 502 (504 for the timeout). A transport error
(``connect`` refused) passes through unchanged. The process keeps serving.

Cost. SSL contexts are built once per builder call, when the script loads
(files are read then: a missing certificate is a load error with the script's
line); each stream makes one ``SSLObject``. ``accept_tls`` issues session
tickets valid across the streams of its builder call; ``connect_tls`` keeps the
last resumable session per server name and resumes it on the next connection
(``TlsInfo.resumed`` says if it did). Per chunk, all the ciphertext
available is decrypted into one ``Data`` event, and all the plaintext of an event
is encrypted into one write.

Example (runnable): ``connect_tls`` talking to ``accept_tls`` in memory, with a
self-signed certificate made by the ``openssl`` command::

    import os, subprocess, tempfile
    import trio
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import join_data, run_layout

    tmp = tempfile.mkdtemp()
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=demo",
                    "-addext", "subjectAltName=DNS:demo.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)

    proxy = Proxy()
    (proxy.pipeline("server")
        .accept_tls(cert, key, alpn=["echo"])
        .to(lambda p: p.replace_data(lambda ctx, d: d.upper() + f" {ctx.tls_sni}".encode())))
    (proxy.pipeline("client")
        .connect_tls("demo.test", ca_file=cert, alpn=["echo"])
        .to("server"))

    out = trio.run(run_layout, proxy.layout("client"), [Data(b"hello"), StreamEnd()])
    assert join_data(out) == b"HELLO demo.test" and out[-1] == StreamEnd()
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from pipeline.errors import ConfigError, UpstreamError
from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from pipeline.live import Pipeline

from ._callback import as_async, is_async

__all__ = [
    "AcceptTls",
    "ConnectTls",
    "TlsError",
    "TlsHandshakeError",
    "TlsHandshakeTimeout",
    "TlsInfo",
]

log = logging.getLogger("trioxy.tls")

#: The most plaintext read from the TLS object at once (OpenSSL hands out one
#: record, at most 16 KiB, per read; the reads of one chunk are joined).
_READ_SIZE = 65536

#: Server names whose last session ``connect_tls`` keeps for resumption.
_MAX_SESSIONS = 1024


class TlsError(UpstreamError):
    """A TLS session failed (a bad record, an alert from the peer)."""


class TlsHandshakeError(TlsError):
    """The TLS handshake failed; the message says why."""


class TlsHandshakeTimeout(TlsHandshakeError):
    """The TLS handshake did not finish within ``handshake_timeout``."""

    status = 504


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What a finished handshake established (see the module docs)."""

    version: str | None
    cipher: str | None
    alpn: str | None
    sni: str | None
    peer_subject: str | None
    peer_cert: dict[str, Any] | None
    resumed: bool


# Configuration ------------------------------------------------------------------

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_VERIFY_CLIENT = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def _version(name: str, value: object) -> ssl.TLSVersion | None:
    if value is None or isinstance(value, ssl.TLSVersion):
        return value
    if isinstance(value, str) and value in _VERSIONS:
        return _VERSIONS[value]
    raise ValueError(f"{name} must be one of {', '.join(_VERSIONS)} (or None), got {value!r}")


def _alpn(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"alpn must be a list of protocol names, got {value!r}")
    if not value or not all(isinstance(p, str) and 0 < len(p) < 256 for p in value):
        raise ValueError(f"alpn must be a non-empty list of protocol names, got {value!r}")
    return list(value)


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"handshake_timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _optional_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a file name, got {value!r}")


def _configure(
    context: ssl.SSLContext,
    alpn: list[str] | None,
    min_version: ssl.TLSVersion | None,
    max_version: ssl.TLSVersion | None,
    ciphers: str | None,
) -> None:
    """Settings both sides share; raises ConfigError with OpenSSL's reason."""
    try:
        if min_version is not None:
            context.minimum_version = min_version
        if max_version is not None:
            context.maximum_version = max_version
        if ciphers is not None:
            context.set_ciphers(ciphers)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"bad TLS settings: {_reason(exc)}") from None
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None, password: str | None) -> None:
    try:
        context.load_cert_chain(cert, key, password)
    except FileNotFoundError as exc:
        raise ConfigError(f"no such certificate or key file: {exc.filename or cert}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load certificate {cert!r} / key {key!r}: {_reason(exc)}"
        ) from None


def _load_cas(context: ssl.SSLContext, ca_file: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except FileNotFoundError:
        raise ConfigError(f"no such CA file: {ca_file}") from None
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load CA file {ca_file!r}: {_reason(exc)}") from None


class _ServerConfig:
    """The SSL contexts of one ``accept_tls`` builder call: built once at load,
    shared by all its streams (a context per SNI certificate pair, built on first
    use)."""

    def __init__(
        self,
        cert: str | None,
        key: str | None,
        password: str | None,
        sni: Callable[..., Any] | None,
        alpn: list[str] | None,
        ca_file: str | None,
        verify_client: ssl.VerifyMode,
        min_version: ssl.TLSVersion | None,
        max_version: ssl.TLSVersion | None,
        ciphers: str | None,
        session_tickets: bool = True,
    ) -> None:
        self.password = password
        self.session_tickets = session_tickets
        self.sni = sni
        self.alpn = alpn
        self.ca_file = ca_file
        self.verify_client = verify_client
        self.versions = (min_version, max_version)
        self.ciphers = ciphers
        self.has_default = cert is not None
        self.default = self._make(cert, key)
        # Always installed: it records the name the client asked for.
        self.default.sni_callback = self._on_sni
        self._by_pair: dict[tuple[str, str | None], ssl.SSLContext] = {}

    def _make(self, cert: str | None, key: str | None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _configure(context, self.alpn, *self.versions, self.ciphers)
        if not self.session_tickets:
            context.num_tickets = 0  # TLS 1.3
            context.options |= ssl.OP_NO_TICKET  # TLS 1.2
        if cert is not None:
            _load_chain(context, cert, key, self.password)
        if self.ca_file is not None:
            _load_cas(context, self.ca_file)
        context.verify_mode = self.verify_client
        return context

    def context_for(self, chosen: object) -> ssl.SSLContext:
        """The context for what an ``sni`` callback returned."""
        if isinstance(chosen, ssl.SSLContext):
            return chosen
        if isinstance(chosen, str):
            pair: tuple[str, str | None] = (chosen, None)
        elif (
            isinstance(chosen, (tuple, list))
            and len(chosen) == 2
            and isinstance(chosen[0], str)
            and (chosen[1] is None or isinstance(chosen[1], str))
        ):
            pair = (chosen[0], chosen[1])
        else:
            raise TypeError(
                f"expected a (cert, key) pair of file names or an SSLContext, got {chosen!r}"
            )
        context = self._by_pair.get(pair)
        if context is None:
            context = self._by_pair[pair] = self._make(*pair)
        return context

    def _on_sni(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        """OpenSSL's servername callback, inside the handshake (synchronous)."""
        owner: AcceptTls | None = getattr(sslobj, "trioxy_tls", None)
        if owner is None:
            return None
        owner.server_name = server_name
        fn = self.sni
        if fn is None:
            return None
        try:
            chosen = fn(owner.pipeline.context, server_name)
            if chosen is None:
                if self.has_default:
                    return None
                owner.sni_failure = f"no certificate for server name {server_name!r}"
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            sslobj.context = self.context_for(chosen)
        except Exception as exc:  # a script bug: fail this handshake, keep serving
            owner.sni_failure = f"the sni callback failed: {type(exc).__name__}: {exc}"
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None


# Helpers ------------------------------------------------------------------------


#: What some of OpenSSL's terse reasons mean for whoever reads the log.
_HINTS = {
    "HTTP_REQUEST": "plain HTTP sent to a TLS port",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "a client certificate is required",
    "WRONG_VERSION_NUMBER": "not TLS, or a TLS version this end does not speak",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common",
    "NO_SHARED_CIPHER": "no cipher in common",
}


def _reason(exc: BaseException) -> str:
    """OpenSSL's reason in words, without the ``[SSL: X] ... (_ssl.c:123)`` noise."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = exc.strerror or str(exc)
        if "] " in text:
            text = text.split("] ", 1)[1]
        text = text.split(" (_ssl.c:")[0]
        hint = _HINTS.get(getattr(exc, "reason", None) or "")
        return f"{text} ({hint})" if hint else text
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def subject_text(cert: dict[str, Any] | None) -> str | None:
    """A certificate's subject as RFC 4514 text (``"CN=alice,O=Example"``: most
    specific first, as nginx's ``$ssl_client_s_dn``), from the dictionary
    :meth:`ssl.SSLObject.getpeercert` returns; ``None`` without a subject."""
    if not cert or not cert.get("subject"):
        return None
    rdns = []
    for rdn in reversed(cert["subject"]):
        rdns.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(str(v))}" for k, v in rdn))
    return ",".join(rdns)


def _info(sslobj: ssl.SSLObject, sni: str | None) -> TlsInfo:
    cert = sslobj.getpeercert()
    cipher = sslobj.cipher()
    return TlsInfo(
        version=sslobj.version(),
        cipher=cipher[0] if cipher else None,
        alpn=sslobj.selected_alpn_protocol(),
        sni=sni,
        peer_subject=subject_text(cert),
        peer_cert=cert or None,
        resumed=sslobj.session_reused,
    )


def _address(value: object) -> str:
    if isinstance(value, tuple) and len(value) >= 2:
        host, port = value[0], value[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(value) if value is not None else "?"


# The engine both filters share ----------------------------------------------------


class _TlsEnd(Filter):
    """One end of a TLS session over memory BIOs. Subclasses say where ciphertext
    and plaintext go (:meth:`_send_cipher`, :meth:`_send_plain`) and feed the
    engine with :meth:`_cipher_in`, :meth:`_cipher_end`, :meth:`_plain_in` and
    :meth:`_plain_end`.

    Ciphertext leaves through the outgoing BIO, which is also the queue: one task
    at a time (the "writer") sends what it holds, so records go out in the order
    OpenSSL made them even when two tasks produce them (the reader of the peer,
    answering a key update, and the writer of plaintext). Another task that
    produced ciphertext waits until the writer has sent it (backpressure); the
    writer's own task re-entering (an in-memory peer answering within the
    writer's send) leaves it to the writer's loop."""

    joint = True
    side = ""  # "accept_tls" / "connect_tls", for log lines

    def __init__(self, handshake_timeout: float | None) -> None:
        self.handshake_timeout = handshake_timeout
        self._ssl: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._sub: Pipeline | None = None
        self._done: trio.Event | None = None  # set when the handshake ended, either way
        self._established = False
        self._ended = False  # failed or closed: input is dropped
        self._peer_closed = False  # the plaintext side got its StreamEnd
        self._closing = False  # our close_notify (or end) is queued or sent
        self._end: StreamEnd | None = None  # the ciphertext side's end, after the BIO
        self._writer: trio.lowlevel.Task | None = None
        self._flushed: trio.Event | None = None
        self._received = 0  # ciphertext bytes from the peer (before the handshake)
        #: What the handshake established (``None`` before).
        self.info: TlsInfo | None = None

    # Directions (subclasses) -----------------------------------------------------

    async def _send_cipher(self, event: Event) -> None:
        raise NotImplementedError

    async def _send_plain(self, event: Event) -> None:
        raise NotImplementedError

    def _established_hook(self) -> None:
        """Called once the handshake is done, before buffered data is read."""

    def _describe_peer(self) -> str:
        raise NotImplementedError

    # Ciphertext from the peer ----------------------------------------------------------

    async def _cipher_in(self, data: bytes) -> None:
        if self._ended:
            return
        self._in.write(data)
        if not self._established:
            self._received += len(data)
            if not await self._handshake():
                return
        await self._read_plain()

    async def _handshake(self) -> bool:
        """One step of the handshake; True once it is complete."""
        sslobj = self._ssl
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            if self._out.pending:
                await self._flush()
            return False
        except ssl.SSLError as exc:
            await self._handshake_failed(exc)
            return False
        self._established = True
        self._established_hook()
        if self._done is not None:
            self._done.set()
        if self._out.pending:
            await self._flush()
        return True

    async def _read_plain(self) -> None:
        sslobj = self._ssl
        assert sslobj is not None
        read = sslobj.read
        incoming = self._in
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                chunk = read(_READ_SIZE)
                if not chunk:  # close_notify (b"" or SSLZeroReturnError, by state)
                    closed = True
                    break
                chunks.append(chunk)
                if not incoming.pending:
                    # OpenSSL takes one record at a time from the BIO (no read-ahead):
                    # an empty BIO means nothing is left, and stopping here spares
                    # the SSLWantReadError the next read would raise (a few us).
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            closed = True
        except ssl.SSLError as exc:
            log.warning("%s: TLS error with %s: %s", self.side, self._describe_peer(), _reason(exc))
            await self._fail(TlsError(f"TLS error: {_reason(exc)}"))
            return
        if self._out.pending:  # (a key update's answer, session tickets)
            await self._flush()
        if chunks:
            await self._send_plain(Data(chunks[0] if len(chunks) == 1 else b"".join(chunks)))
        if closed and not self._peer_closed:
            self._peer_closed = True
            await self._send_plain(StreamEnd())

    async def _cipher_end(self, error: BaseException | None) -> None:
        """The peer's transport ended."""
        if self._ended:
            return
        if not self._established:
            if error is not None:
                # The transport's own failure (connect refused, a reset): whoever
                # saw it has logged it; pass it on as is.
                await self._fail(error)
            elif not self._received:
                log.debug("%s: %s closed before any TLS byte", self.side, self._describe_peer())
                await self._fail(TlsHandshakeError("closed before the handshake"))
            else:
                await self._handshake_failed("the peer closed the connection during the handshake")
            return
        if not self._peer_closed:
            # No close_notify: a truncated session ("ragged EOF"), taken as an end
            # as Python's ssl does by default; the protocol above decides.
            self._peer_closed = True
            await self._send_plain(StreamEnd(error))

    # Plaintext to the peer -------------------------------------------------------------

    async def _plain_in(self, data: bytes) -> None:
        if self._closing or self._ended or not data:
            return
        sslobj = self._ssl
        assert sslobj is not None
        try:
            sslobj.write(data)
        except ssl.SSLError as exc:
            await self._fail(TlsError(f"TLS error: {_reason(exc)}"))
            return
        await self._flush()

    async def _plain_end(self, error: BaseException | None) -> None:
        if self._closing or self._ended:
            return
        self._closing = True
        if error is None:
            sslobj = self._ssl
            assert sslobj is not None
            try:
                sslobj.unwrap()  # queues close_notify
            except ssl.SSLError:
                pass  # SSLWantReadError: the peer's close_notify is still to come
        self._end = StreamEnd(error)
        await self._flush()

    # Sending ciphertext -----------------------------------------------------------------

    async def _flush(self) -> None:
        """Send what the outgoing BIO holds (then the pending end), in order."""
        writer = self._writer
        if writer is not None:
            if writer is trio.lowlevel.current_task():
                return  # re-entered from the writer's own send: its loop sends it
            while self._writer is not None:
                flushed = self._flushed
                if flushed is None:
                    flushed = self._flushed = trio.Event()
                await flushed.wait()
        out = self._out
        if not out.pending and self._end is None:
            return
        self._writer = trio.lowlevel.current_task()
        try:
            while True:
                if out.pending:
                    await self._send_cipher(Data(out.read()))
                elif self._end is not None:
                    end, self._end = self._end, None
                    await self._send_cipher(end)
                else:
                    break
        finally:
            self._writer = None
            flushed = self._flushed
            if flushed is not None:
                self._flushed = None
                flushed.set()

    # Failures ------------------------------------------------------------------------

    async def _handshake_failed(self, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else _reason(exc)
        reason = getattr(self, "sni_failure", None) or reason
        log.warning(
            "%s: TLS handshake with %s failed: %s", self.side, self._describe_peer(), reason
        )
        await self._fail(TlsHandshakeError(f"TLS handshake failed: {reason}"))

    async def _watch_handshake(self, timeout: float) -> None:
        done = self._done
        assert done is not None
        with trio.move_on_after(timeout):
            await done.wait()
            return
        if not self._established and not self._ended:
            log.warning(
                "%s: TLS handshake with %s timed out after %gs",
                self.side,
                self._describe_peer(),
                timeout,
            )
            await self._fail(
                TlsHandshakeTimeout(f"TLS handshake timed out after {timeout:g}s"), now=True
            )

    async def _fail(self, error: BaseException, now: bool = False) -> None:
        """End both sides with ``error``: the alert OpenSSL queued goes to the peer
        first (unless ``now``: a stuck writer must not delay a timeout)."""
        if self._ended:
            return
        self._ended = True
        if self._done is not None:
            self._done.set()
        if not self._closing:
            self._closing = True
            if now and self._writer is not None:
                await self._send_cipher(StreamEnd(error))
            else:
                self._end = StreamEnd(error)
                await self._flush()
        if not self._peer_closed:
            self._peer_closed = True
            await self._send_plain(StreamEnd(error))
        self._release()

    def _release(self) -> None:
        """Drop what ties the session to OpenSSL's callbacks."""
        sslobj = self._ssl
        if sslobj is not None and getattr(sslobj, "trioxy_tls", None) is not None:
            sslobj.trioxy_tls = None  # type: ignore[attr-defined]

    def close(self) -> None:
        self._ended = True
        if self._done is not None:
            self._done.set()
        self._release()


def _common_checks(
    cert: object,
    key: object,
    password: object,
    ca_file: object,
    alpn: object,
    min_version: object,
    max_version: object,
    ciphers: object,
    handshake_timeout: object,
) -> None:
    for name, value in (("cert", cert), ("key", key), ("ca_file", ca_file)):
        _optional_str(name, value)
    if key is not None and cert is None:
        raise ValueError("key= needs cert=")
    if password is not None and not isinstance(password, (str, bytes)):
        raise TypeError("password must be a str")
    if ciphers is not None and not isinstance(ciphers, str):
        raise TypeError(f"ciphers must be an OpenSSL cipher string, got {ciphers!r}")
    _alpn(alpn)
    low, high = _version("min_version", min_version), _version("max_version", max_version)
    if low is not None and high is not None and low > high:
        raise ValueError("min_version is above max_version")
    _timeout(handshake_timeout)


# accept_tls -------------------------------------------------------------------------


class AcceptTls(_TlsEnd):
    """``accept_tls(cert=None, key=None, *, sni=None, alpn=None, ca_file=None,
    verify_client=None, ...)``: terminate TLS; the sub-pipeline gets plaintext."""

    name = "accept_tls"
    side = "accept_tls"

    def __init__(
        self,
        cert: str | None = None,
        key: str | None = None,
        *,
        password: str | None = None,
        sni: Callable[..., Any] | None = None,
        alpn: Sequence[str] | None = None,
        ca_file: str | None = None,
        verify_client: str | None = None,
        min_version: str | None = "TLSv1.2",
        max_version: str | None = None,
        ciphers: str | None = None,
        handshake_timeout: float | None = 10.0,
        session_tickets: bool = True,
    ) -> None:
        super().__init__(handshake_timeout)
        #: The server name the client sent (SNI), once the handshake has read it.
        self.server_name: str | None = None
        self.sni_failure: str | None = None

    @classmethod
    def shared(
        cls,
        cert: str | None = None,
        key: str | None = None,
        *,
        password: str | None = None,
        sni: Callable[..., Any] | None = None,
        alpn: Sequence[str] | None = None,
        ca_file: str | None = None,
        verify_client: str | None = None,
        min_version: str | None = "TLSv1.2",
        max_version: str | None = None,
        ciphers: str | None = None,
        handshake_timeout: float | None = 10.0,
        session_tickets: bool = True,
    ) -> _ServerConfig:
        """Validate the arguments and build the SSL context, once per builder call."""
        _common_checks(
            cert, key, password, ca_file, alpn, min_version, max_version, ciphers, handshake_timeout
        )
        if sni is not None:
            if not callable(sni):
                raise TypeError(f"sni must be a function fn(ctx, server_name), got {sni!r}")
            if is_async(sni):
                raise TypeError("sni must be a plain function (it runs inside the handshake)")
        if cert is None and sni is None:
            raise ValueError("accept_tls needs a certificate: cert= (and key=), or sni=")
        if verify_client is None:
            verify_client = "required" if ca_file is not None else "none"
        if verify_client not in _VERIFY_CLIENT:
            raise ValueError(
                f"verify_client must be 'none', 'optional' or 'required', got {verify_client!r}"
            )
        if verify_client != "none" and ca_file is None:
            raise ValueError(f"verify_client={verify_client!r} needs ca_file=")
        if not isinstance(session_tickets, bool):
            raise TypeError(f"session_tickets must be True or False, got {session_tickets!r}")
        return _ServerConfig(
            cert,
            key,
            password,
            sni,
            _alpn(alpn),
            ca_file,
            _VERIFY_CLIENT[verify_client],
            _version("min_version", min_version),
            _version("max_version", max_version),
            ciphers,
            session_tickets,
        )

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is Data:
            if self._ssl is None:
                self._start()
            await self._cipher_in(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            if self._ssl is None:
                self._start()
            await self._cipher_end(event.error)  # type: ignore[union-attr]

    def _start(self) -> None:
        config: _ServerConfig = self.spec.state
        sslobj = self._ssl = config.default.wrap_bio(self._in, self._out, server_side=True)
        sslobj.trioxy_tls = self  # type: ignore[attr-defined]  # for the SNI callback
        self._done = trio.Event()
        if self.handshake_timeout is not None:
            self.pipeline.start_task(
                self._watch_handshake, self.handshake_timeout, name="accept_tls handshake timer"
            )

    def _established_hook(self) -> None:
        sslobj = self._ssl
        assert sslobj is not None
        self._release()
        info = self.info = _info(sslobj, self.server_name)
        ctx = self.pipeline.context
        ctx.tls = info
        ctx.set(
            tls_version=info.version,
            tls_cipher=info.cipher,
            tls_alpn=info.alpn,
            tls_sni=info.sni,
            tls_peer_subject=info.peer_subject,
            tls_peer_cert=info.peer_cert,
        )
        self._sub = self.pipeline.sub(self.sub_layout, self._from_sub)

    async def _from_sub(self, event: Event) -> None:
        kind = type(event)
        if kind is Data:
            await self._plain_in(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            await self._plain_end(event.error)  # type: ignore[union-attr]

    async def _send_cipher(self, event: Event) -> None:
        await self.output(event)

    async def _send_plain(self, event: Event) -> None:
        sub = self._sub
        if sub is not None and not sub.closed:
            await sub.input(event)

    def _describe_peer(self) -> str:
        text = f"client {_address(self.pipeline.context.remote)}"
        if self.server_name:
            text += f" (server name {self.server_name!r})"
        return text


# connect_tls ------------------------------------------------------------------------


class _ClientConfig:
    """The SSL context of one ``connect_tls`` builder call."""

    def __init__(
        self,
        verify: bool,
        ca_file: str | None,
        cert: str | None,
        key: str | None,
        password: str | None,
        alpn: list[str] | None,
        min_version: ssl.TLSVersion | None,
        max_version: ssl.TLSVersion | None,
        ciphers: str | None,
    ) -> None:
        self.verify = verify
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if verify:
            if ca_file is not None:
                _load_cas(context, ca_file)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        _configure(context, alpn, min_version, max_version, ciphers)
        if cert is not None:
            _load_chain(context, cert, key, password)
        self.context = context
        #: A resumable session per server name, from the last stream that got one:
        #: the next connection to that name resumes it (an abbreviated handshake);
        #: a server that does not recognise it just makes a full one.
        self.sessions: dict[str | None, ssl.SSLSession] = {}

    def remember(self, name: str | None, session: ssl.SSLSession | None) -> None:
        if session is None or not session.has_ticket:
            return
        sessions = self.sessions
        if name not in sessions and len(sessions) >= _MAX_SESSIONS:
            del sessions[next(iter(sessions))]  # the oldest name
        sessions[name] = session


class ConnectTls(_TlsEnd):
    """``connect_tls(server_hostname=None, *, verify=True, ca_file=None, ...)``:
    originate TLS; the sub-pipeline carries the ciphertext."""

    name = "connect_tls"
    side = "connect_tls"

    def __init__(
        self,
        server_hostname: str | Callable[..., Any] | None = None,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        password: str | None = None,
        alpn: Sequence[str] | None = None,
        min_version: str | None = "TLSv1.2",
        max_version: str | None = None,
        ciphers: str | None = None,
        handshake_timeout: float | None = 10.0,
    ) -> None:
        super().__init__(handshake_timeout)
        if server_hostname is not None and not isinstance(server_hostname, str):
            if not callable(server_hostname):
                raise TypeError(
                    f"server_hostname must be a name or a function of the context, "
                    f"got {server_hostname!r}"
                )
            self._hostname_fn: Callable[..., Awaitable[Any]] | None = as_async(server_hostname)
            self._hostname: str | None = None
        else:
            self._hostname_fn = None
            self._hostname = server_hostname
        self.verify = verify
        self.server_hostname: str | None = None
        self._opening: trio.Event | None = None  # set once a handshake begun at start is out

    @classmethod
    def shared(
        cls,
        server_hostname: str | Callable[..., Any] | None = None,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        password: str | None = None,
        alpn: Sequence[str] | None = None,
        min_version: str | None = "TLSv1.2",
        max_version: str | None = None,
        ciphers: str | None = None,
        handshake_timeout: float | None = 10.0,
    ) -> _ClientConfig:
        """Validate the arguments and build the SSL context, once per builder call."""
        _common_checks(
            cert, key, password, ca_file, alpn, min_version, max_version, ciphers, handshake_timeout
        )
        if not isinstance(verify, bool):
            raise TypeError(f"verify must be True or False, got {verify!r}")
        if ca_file is not None and not verify:
            raise ValueError("ca_file= is for verifying the server: it needs verify=True")
        return _ClientConfig(
            verify,
            ca_file,
            cert,
            key,
            password,
            _alpn(alpn),
            _version("min_version", min_version),
            _version("max_version", max_version),
            ciphers,
        )

    def on_start(self) -> None:
        """A server name known now (given, or the client's SNI that ``accept_tls``
        put in the context): the handshake begins at once, before any event, so
        that a server that speaks first (SMTPS, IMAPS) is heard without the client
        sending anything. A name function waits for the first event."""
        if self._hostname_fn is None and (
            self._hostname is not None or self.pipeline.context.get("tls_sni") is not None
        ):
            self._opening = trio.Event()
            self.pipeline.start_task(self._open_now, name="connect_tls handshake")

    async def _open_now(self) -> None:
        assert self._opening is not None
        try:
            if self._ssl is None and not self._ended:
                await self._start()
        finally:
            self._opening.set()

    async def on_event(self, event: Event) -> None:
        if not self._established:
            if self._opening is not None:
                await self._opening.wait()  # the handshake begun at start
            if self._ssl is None and not self._ended:
                await self._start()
            if self._done is not None and not self._ended:
                await self._done.wait()
            if not self._established:
                return  # the handshake failed: StreamEnd(error) went out already
        kind = type(event)
        if kind is Data:
            await self._plain_in(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            await self._plain_end(event.error)  # type: ignore[union-attr]

    async def _start(self) -> None:
        config: _ClientConfig = self.spec.state
        ctx = self.pipeline.context
        name = self._hostname
        try:
            if self._hostname_fn is not None:
                name = await self._hostname_fn(ctx)
            elif name is None:
                name = ctx.get("tls_sni")
            if name is not None and not isinstance(name, str):
                raise TypeError(f"the server name must be a str, got {name!r}")
        except Exception as exc:
            log.warning("connect_tls: the server_hostname function failed: %r", exc)
            await self._fail(TlsHandshakeError(f"no server name: {type(exc).__name__}: {exc}"))
            return
        if name is None and config.verify:
            log.warning(
                "connect_tls: no server name to verify the certificate against "
                "(give server_hostname=, or verify=False)"
            )
            await self._fail(TlsHandshakeError("connect_tls has no server name to verify"))
            return
        self.server_hostname = name
        try:
            self._ssl = config.context.wrap_bio(
                self._in,
                self._out,
                server_side=False,
                server_hostname=name,
                session=config.sessions.get(name),
            )
        except (ValueError, ssl.SSLError) as exc:  # a name OpenSSL refuses
            log.warning("connect_tls: bad server name %r: %s", name, exc)
            await self._fail(TlsHandshakeError(f"bad server name {name!r}"))
            return
        self._done = trio.Event()
        self._sub = self.pipeline.sub(self.sub_layout, self._from_sub)
        if self.handshake_timeout is not None:
            self.pipeline.start_task(
                self._watch_handshake, self.handshake_timeout, name="connect_tls handshake timer"
            )
        await self._handshake()  # the ClientHello goes out (and connect dials)

    def _established_hook(self) -> None:
        sslobj = self._ssl
        assert sslobj is not None
        self.info = _info(sslobj, self.server_hostname)
        self.pipeline.context.set(upstream_tls=self.info)

    async def _from_sub(self, event: Event) -> None:
        kind = type(event)
        if kind is Data:
            await self._cipher_in(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            await self._cipher_end(event.error)  # type: ignore[union-attr]

    async def _send_cipher(self, event: Event) -> None:
        sub = self._sub
        if sub is not None and not sub.closed:
            await sub.input(event)

    async def _send_plain(self, event: Event) -> None:
        await self.output(event)

    async def _fail(self, error: BaseException, now: bool = False) -> None:
        await super()._fail(error, now)
        sub = self._sub
        if sub is not None:
            sub.close()  # its connection goes now, whatever it was doing

    def close(self) -> None:
        sslobj = self._ssl
        if sslobj is not None and self._established and not self._ended:
            # (TLS 1.3 tickets arrive after the handshake: the session is taken last.)
            config: _ClientConfig = self.spec.state
            config.remember(self.server_hostname, sslobj.session)
        super().close()

    def _describe_peer(self) -> str:
        upstream = self.pipeline.context.get("upstream")
        text = f"server {upstream}" if upstream else "the server"
        if self.server_hostname:
            text += f" (server name {self.server_hostname!r})"
        return text


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [AcceptTls, ConnectTls]
