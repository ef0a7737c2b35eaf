"""SOCKS version 5 (RFC 1928) with username/password authentication (RFC 1929), sans-IO.

The exchange, client (C) and server (S)::

    C: Greeting(methods)                 05 n m1..mn
    S: MethodChoice(method)              05 m            (FF: none acceptable)
    C: UserPass(username, password)      01 ulen u plen p   (method 02 only)
    S: AuthReply(status)                 01 s            (0: success)
    C: Request(command, host, port)      05 cmd 00 atyp addr port
    S: Reply(reply, host, port)          05 rep 00 atyp addr port
    ... then the connection carries the relayed bytes.

Each message is a frozen dataclass with a ``decode_*`` function (``(message,
size)``, or ``None`` while the bytes are an incomplete message; a
:class:`ProtocolError` when they cannot be one) and :func:`encode`. Addresses
are ``host`` strings: an IPv4 or IPv6 literal, or a domain name (sent as such,
resolved by the server); ``address_type`` says which on the wire and is
inferred when left 0.

:class:`ServerHandshake` and :class:`ClientHandshake` are the two ends' state
machines, bytes in and bytes out, for the filters ``accept_socks`` and
``connect_socks``::

    from protocols.socks5 import ClientHandshake, Reply, ServerHandshake, USERNAME_PASSWORD

    client = ClientHandshake("example.com", 443, username="ann", password="pw")
    server = ServerHandshake(methods=(USERNAME_PASSWORD,))
    server.receive(client.start())
    (credentials,) = server.receive(client.receive(server.data_to_send()))
    server.accept_credentials(credentials.password == "pw")
    (request,) = server.receive(client.receive(server.data_to_send()))
    assert (request.host, request.port) == ("example.com", 443)
    server.reply(0, "192.0.2.1", 50000)
    assert client.receive(server.data_to_send()) == b"" and client.done

Only the protocol lives here; which methods to offer, who may connect where and
what reply a failed connection gets are the filters' choices. Decoding is
strict where the RFCs are (versions, lengths, a domain name of 1-255 bytes) and
lenient where nothing depends on it (the reserved byte is not checked).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "ADDRESS_TYPE_NOT_SUPPORTED",
    "COMMAND_NOT_SUPPORTED",
    "CONNECTION_NOT_ALLOWED",
    "CONNECTION_REFUSED",
    "GENERAL_FAILURE",
    "HOST_UNREACHABLE",
    "NETWORK_UNREACHABLE",
    "NO_ACCEPTABLE_METHOD",
    "NO_AUTH",
    "REPLY_MESSAGES",
    "SUCCEEDED",
    "TTL_EXPIRED",
    "USERNAME_PASSWORD",
    "AddressType",
    "AuthReply",
    "ClientHandshake",
    "Command",
    "Greeting",
    "MethodChoice",
    "NoAcceptableMethod",
    "ProtocolError",
    "Refused",
    "Reply",
    "Request",
    "ServerHandshake",
    "UserPass",
    "decode_auth_reply",
    "decode_greeting",
    "decode_method_choice",
    "decode_reply",
    "decode_request",
    "decode_userpass",
    "encode",
    "format_target",
]

VERSION = 5
AUTH_VERSION = 1  # of the RFC 1929 sub-negotiation

# Authentication methods.
NO_AUTH = 0x00
USERNAME_PASSWORD = 0x02
NO_ACCEPTABLE_METHOD = 0xFF

# Reply codes.
SUCCEEDED = 0x00
GENERAL_FAILURE = 0x01
CONNECTION_NOT_ALLOWED = 0x02
NETWORK_UNREACHABLE = 0x03
HOST_UNREACHABLE = 0x04
CONNECTION_REFUSED = 0x05
TTL_EXPIRED = 0x06
COMMAND_NOT_SUPPORTED = 0x07
ADDRESS_TYPE_NOT_SUPPORTED = 0x08

#: RFC 1928's wording of each reply code, for logs and errors.
REPLY_MESSAGES = {
    SUCCEEDED: "succeeded",
    GENERAL_FAILURE: "general SOCKS server failure",
    CONNECTION_NOT_ALLOWED: "connection not allowed by ruleset",
    NETWORK_UNREACHABLE: "network unreachable",
    HOST_UNREACHABLE: "host unreachable",
    CONNECTION_REFUSED: "connection refused",
    TTL_EXPIRED: "TTL expired",
    COMMAND_NOT_SUPPORTED: "command not supported",
    ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}


class Command(enum.IntEnum):
    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class AddressType(enum.IntEnum):
    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


class ProtocolError(Exception):
    """Bytes that are not a valid SOCKS5 message. ``reply`` is the reply code a
    server answers a bad request with (``ADDRESS_TYPE_NOT_SUPPORTED`` for an
    unknown address type, else ``GENERAL_FAILURE``). The handshake cannot go on."""

    def __init__(self, message: str, reply: int = GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


class NoAcceptableMethod(ProtocolError):
    """The client offers none of the server's authentication methods (server
    side; the answer ``NO_ACCEPTABLE_METHOD`` is queued)."""


class Refused(Exception):
    """The server said no (client side): no acceptable method, bad credentials,
    or a request answered with a non-zero ``reply`` code (``None`` for the first
    two)."""

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        self.reply = reply


# Messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Greeting:
    """The client's first message: the authentication methods it supports."""

    methods: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MethodChoice:
    """The server's choice among them (``NO_ACCEPTABLE_METHOD``: none)."""

    method: int


@dataclass(frozen=True, slots=True)
class UserPass:
    """RFC 1929 credentials. Bytes that are not UTF-8 survive as surrogates."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class AuthReply:
    """RFC 1929 answer: ``status`` 0 is success, anything else failure."""

    status: int


def _address_type(host: str) -> AddressType:
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return AddressType.DOMAIN
    return AddressType.IPV4 if version == 4 else AddressType.IPV6


@dataclass(frozen=True, slots=True)
class Request:
    """What the client asks for: ``command`` to ``host:port``."""

    command: int
    host: str
    port: int
    address_type: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.address_type:
            object.__setattr__(self, "address_type", _address_type(self.host))

    @property
    def target(self) -> str:
        """``"host:port"`` (``"[v6]:port"`` for IPv6), as ``connect`` takes it."""
        return format_target(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Reply:
    """The server's answer; ``host:port`` is the address it bound for the relay."""

    reply: int
    host: str = "0.0.0.0"
    port: int = 0
    address_type: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not self.address_type:
            object.__setattr__(self, "address_type", _address_type(self.host))


Message = Greeting | MethodChoice | UserPass | AuthReply | Request | Reply


def format_target(host: str, port: int) -> str:
    """``"host:port"``, with IPv6 literals in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Decoding ------------------------------------------------------------------------


def _check_version(data: bytes, expected: int, what: str) -> None:
    if data and data[0] != expected:
        raise ProtocolError(f"{what}: version {data[0]}, expected {expected}")


def decode_greeting(data: bytes) -> tuple[Greeting, int] | None:
    _check_version(data, VERSION, "greeting")
    if len(data) < 2:
        return None
    count = data[1]
    if count == 0:
        raise ProtocolError("greeting offers no authentication method")
    size = 2 + count
    if len(data) < size:
        return None
    return Greeting(tuple(data[2:size])), size


def decode_method_choice(data: bytes) -> tuple[MethodChoice, int] | None:
    _check_version(data, VERSION, "method choice")
    if len(data) < 2:
        return None
    return MethodChoice(data[1]), 2


def decode_userpass(data: bytes) -> tuple[UserPass, int] | None:
    _check_version(data, AUTH_VERSION, "username/password")
    if len(data) < 2:
        return None
    ulen = data[1]
    if len(data) < 3 + ulen:
        return None
    plen = data[2 + ulen]
    size = 3 + ulen + plen
    if len(data) < size:
        return None
    username = data[2 : 2 + ulen].decode("utf-8", "surrogateescape")
    password = data[3 + ulen : size].decode("utf-8", "surrogateescape")
    return UserPass(username, password), size


def decode_auth_reply(data: bytes) -> tuple[AuthReply, int] | None:
    _check_version(data, AUTH_VERSION, "authentication reply")
    if len(data) < 2:
        return None
    return AuthReply(data[1]), 2


def _decode_address(data: bytes, what: str) -> tuple[int, str, int, int] | None:
    """``(address_type, host, port, size)`` of the message whose address starts
    at byte 3; ``None`` if incomplete."""
    if len(data) < 4:
        return None
    atyp = data[3]
    if atyp not in (AddressType.IPV4, AddressType.IPV6, AddressType.DOMAIN):
        raise ProtocolError(f"{what}: unknown address type {atyp}", ADDRESS_TYPE_NOT_SUPPORTED)
    if len(data) < 5:
        return None
    if atyp == AddressType.IPV4:
        end = 8
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv4Address(data[4:end]))
    elif atyp == AddressType.IPV6:
        end = 20
        if len(data) < end + 2:
            return None
        host = str(ipaddress.IPv6Address(data[4:end]))
    else:
        length = data[4]
        if length == 0:
            raise ProtocolError(f"{what}: empty domain name")
        end = 5 + length
        if len(data) < end + 2:
            return None
        try:
            host = data[5:end].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{what}: domain name is not UTF-8") from None
    return atyp, host, int.from_bytes(data[end : end + 2], "big"), end + 2


def decode_request(data: bytes) -> tuple[Request, int] | None:
    _check_version(data, VERSION, "request")
    decoded = _decode_address(data, "request")
    if decoded is None:
        return None
    atyp, host, port, size = decoded
    return Request(data[1], host, port, atyp), size


def decode_reply(data: bytes) -> tuple[Reply, int] | None:
    _check_version(data, VERSION, "reply")
    decoded = _decode_address(data, "reply")
    if decoded is None:
        return None
    atyp, host, port, size = decoded
    return Reply(data[1], host, port, atyp), size


# Encoding ------------------------------------------------------------------------


def _byte(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError(f"{what} must be 0-255, got {value!r}")
    return value


def _short_string(text: str, what: str, allow_empty: bool = True) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) > 255 or (not raw and not allow_empty):
        raise ValueError(f"{what} must be {'0' if allow_empty else '1'}-255 bytes, got {text!r}")
    return bytes((len(raw),)) + raw


def _encode_address(atyp: int, host: str, port: int) -> bytes:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"bad port {port!r}")
    if atyp == AddressType.IPV4:
        raw = bytes((atyp,)) + ipaddress.IPv4Address(host).packed
    elif atyp == AddressType.IPV6:
        raw = bytes((atyp,)) + ipaddress.IPv6Address(host).packed
    elif atyp == AddressType.DOMAIN:
        encoded = host.encode("utf-8")
        if not 0 < len(encoded) <= 255:
            raise ValueError(f"a domain name must be 1-255 bytes, got {host!r}")
        raw = bytes((atyp, len(encoded))) + encoded
    else:
        raise ValueError(f"unknown address type {atyp!r}")
    return raw + port.to_bytes(2, "big")


def encode(message: Message) -> bytes:
    """The bytes of one message. ``ValueError`` for values that do not fit."""
    if isinstance(message, Greeting):
        if not 0 < len(message.methods) <= 255:
            raise ValueError("a greeting offers 1-255 methods")
        methods = bytes(_byte(m, "a method") for m in message.methods)
        return bytes((VERSION, len(methods))) + methods
    if isinstance(message, MethodChoice):
        return bytes((VERSION, _byte(message.method, "the method")))
    if isinstance(message, UserPass):
        return (
            bytes((AUTH_VERSION,))
            + _short_string(message.username, "the username")
            + _short_string(message.password, "the password")
        )
    if isinstance(message, AuthReply):
        return bytes((AUTH_VERSION, _byte(message.status, "the status")))
    if isinstance(message, Request):
        head = bytes((VERSION, _byte(message.command, "the command"), 0))
        return head + _encode_address(message.address_type, message.host, message.port)
    if isinstance(message, Reply):
        head = bytes((VERSION, _byte(message.reply, "the reply"), 0))
        return head + _encode_address(message.address_type, message.host, message.port)
    raise TypeError(f"not a SOCKS5 message: {message!r}")


# The two ends --------------------------------------------------------------------


class ServerHandshake:
    """The server's side of the handshake.

    Feed the client's bytes to :meth:`receive`; it returns what needs a decision:
    a :class:`UserPass` (answer with :meth:`accept_credentials`) and then a
    :class:`Request` (answer with :meth:`reply`). The method is chosen here: the
    first of ``methods`` (in their order of preference) that the client offers.
    After every call, send :meth:`data_to_send`. When :meth:`receive` raises
    :class:`ProtocolError` (malformed bytes, no acceptable method), what
    :meth:`data_to_send` holds is the answer to send before closing. After a
    successful reply, :attr:`trailing` holds what the client sent after its
    request (the first bytes to relay); a failed one ends the handshake
    (:attr:`closed`).
    """

    def __init__(self, methods: Sequence[int] = (NO_AUTH,)) -> None:
        if not methods:
            raise ValueError("a server accepts at least one method")
        self.methods = tuple(methods)
        #: The method chosen, once the greeting arrived.
        self.method: int | None = None
        #: The request, once it arrived.
        self.request: Request | None = None
        #: Set once the handshake is over and the connection is for the relay.
        self.done = False
        #: Set when the handshake failed (the connection is to be closed).
        self.closed = False
        self._state = "greeting"
        self._buffer = b""
        self._out: list[bytes] = []

    @property
    def trailing(self) -> bytes:
        """Bytes received after the request (only once :attr:`done`)."""
        return self._buffer if self.done else b""

    def data_to_send(self) -> bytes:
        """Bytes for the client, queued by the last calls (then forgotten)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def receive(self, data: bytes) -> list[UserPass | Request]:
        """Feed bytes from the client; the messages that need an answer."""
        buffer = self._buffer + data if self._buffer else data
        self._buffer = buffer
        found: list[UserPass | Request] = []
        while True:
            state = self._state
            try:
                if state == "greeting":
                    greeting = decode_greeting(self._buffer)
                    if greeting is None:
                        break
                    self._consume(greeting[1])
                    self._choose(greeting[0])
                elif state == "auth":
                    credentials = decode_userpass(self._buffer)
                    if credentials is None:
                        break
                    self._consume(credentials[1])
                    self._state = "auth-answer"
                    found.append(credentials[0])
                    break
                elif state == "request":
                    request = decode_request(self._buffer)
                    if request is None:
                        break
                    self._consume(request[1])
                    self._state = "reply"
                    self.request = request[0]
                    found.append(request[0])
                    break
                else:
                    break  # waiting for our answer, or relaying: just keep the bytes
            except ProtocolError as exc:
                self._fail(state, exc)
                raise
        return found

    def _consume(self, size: int) -> None:
        self._buffer = self._buffer[size:]

    def _choose(self, greeting: Greeting) -> None:
        for method in self.methods:
            if method in greeting.methods:
                self.method = method
                self._out.append(encode(MethodChoice(method)))
                self._state = "auth" if method == USERNAME_PASSWORD else "request"
                return
        self._out.append(encode(MethodChoice(NO_ACCEPTABLE_METHOD)))
        self._state = "closed"
        self.closed = True
        offered = ", ".join(f"0x{m:02x}" for m in greeting.methods)
        raise NoAcceptableMethod(f"no acceptable authentication method (offered {offered})")

    def _fail(self, state: str, exc: ProtocolError) -> None:
        if state == "request":
            self._out.append(encode(Reply(exc.reply)))
        self._state = "closed"
        self.closed = True

    def accept_credentials(self, ok: bool) -> None:
        """Answer the :class:`UserPass`: on ``False`` the handshake ends."""
        if self._state != "auth-answer":
            raise RuntimeError(f"no credentials to answer (state {self._state})")
        self._out.append(encode(AuthReply(0 if ok else 1)))
        if ok:
            self._state = "request"
        else:
            self._state = "closed"
            self.closed = True

    def reply(self, code: int, host: str = "0.0.0.0", port: int = 0) -> None:
        """Answer the :class:`Request` with reply ``code`` (``SUCCEEDED``: the
        relay starts; anything else ends the handshake) and the bound address."""
        if self._state != "reply":
            raise RuntimeError(f"no request to answer (state {self._state})")
        self._out.append(encode(Reply(code, host, port)))
        if code == SUCCEEDED:
            self._state = "done"
            self.done = True
        else:
            self._state = "closed"
            self.closed = True


class ClientHandshake:
    """The client's side: asks the server to ``CONNECT`` to ``host:port``.

    Send :meth:`start`'s bytes, then feed what the server sends to
    :meth:`receive`, sending what it returns, until :attr:`done`. It offers
    ``USERNAME_PASSWORD`` only when given credentials (and ``NO_AUTH`` always).
    A server that says no raises :class:`Refused`; malformed answers raise
    :class:`ProtocolError`. Once done, :attr:`reply` is the server's answer and
    :attr:`trailing` what it sent after it (the first relayed bytes).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str | None = None,
        password: str | None = None,
        command: int = Command.CONNECT,
    ) -> None:
        self.request = Request(command, host, port)
        encode(self.request)  # a bad host or port is the caller's error, said now
        self.credentials = UserPass(username, password or "") if username is not None else None
        if self.credentials is not None:
            encode(self.credentials)
        self.done = False
        self.reply: Reply | None = None
        self.trailing = b""
        self._state = "start"
        self._buffer = b""

    def start(self) -> bytes:
        """The greeting."""
        if self._state != "start":
            raise RuntimeError("the handshake has already started")
        self._state = "method"
        methods = (NO_AUTH, USERNAME_PASSWORD) if self.credentials else (NO_AUTH,)
        return encode(Greeting(methods))

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the server; the bytes to send next (maybe none)."""
        if self.done:
            self.trailing += data
            return b""
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        while True:
            state = self._state
            if state == "method":
                choice = decode_method_choice(buffer)
                if choice is None:
                    break
                buffer = buffer[choice[1] :]
                method = choice[0].method
                if method == USERNAME_PASSWORD and self.credentials is not None:
                    out.append(encode(self.credentials))
                    self._state = "auth"
                elif method == NO_AUTH:
                    out.append(encode(self.request))
                    self._state = "reply"
                elif method == NO_ACCEPTABLE_METHOD:
                    raise Refused("the SOCKS server accepts none of our authentication methods")
                else:
                    raise ProtocolError(f"the server chose method 0x{method:02x}, not offered")
            elif state == "auth":
                answer = decode_auth_reply(buffer)
                if answer is None:
                    break
                buffer = buffer[answer[1] :]
                if answer[0].status != 0:
                    raise Refused("the SOCKS server rejected the username/password")
                out.append(encode(self.request))
                self._state = "reply"
            elif state == "reply":
                reply = decode_reply(buffer)
                if reply is None:
                    break
                buffer = buffer[reply[1] :]
                self.reply = reply[0]
                code = reply[0].reply
                if code != SUCCEEDED:
                    message = REPLY_MESSAGES.get(code, f"reply 0x{code:02x}")
                    raise Refused(f"the SOCKS server answered: {message}", code)
                self.done = True
                self.trailing = buffer
                buffer = b""
                break
            else:
                raise RuntimeError("call start() first")
        self._buffer = buffer
        return b"".join(out)
