"""Parsing of listen and connect addresses: ``port``, ``"host:port"``, ``"[v6]:port"``;
and the order in which a list of targets is tried (:class:`Rotation`,
:func:`starting_at`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Rotation", "format_address", "host_port", "parse_address", "starting_at"]

T = TypeVar("T")


def parse_address(value: int | str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``8080`` → ``("0.0.0.0", 8080)``; ``"[::1]:80"`` → ``("::1", 80)``.

    Raises ``ValueError`` with a message fit for a user on anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"bad address {value!r}: expected a port or 'host:port'")
    if isinstance(value, int):
        return default_host, _port(value, value)
    if not isinstance(value, str):
        raise ValueError(f"bad address {value!r}: expected a port or 'host:port'")
    text = value.strip()
    if text.isdigit():
        return default_host, _port(int(text), value)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad address {value!r}: expected '[ipv6]:port'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad address {value!r}: {host!r} is not an IPv6 address") from None
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad address {value!r}: expected 'host:port'")
        if ":" in host:
            raise ValueError(f"bad address {value!r}: write IPv6 addresses as '[addr]:port'")
    if not port_text.isdigit():
        raise ValueError(f"bad address {value!r}: port {port_text!r} is not a number")
    return host, _port(int(port_text), value)


def _port(port: int, original: object) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address {original!r}: port {port} is out of range 0-65535")
    return port


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_port(sockaddr: object) -> tuple[str, int]:
    """``(host, port)`` of a socket address as the socket module gives it (an IPv6
    one has two more fields); anything else as ``(str(sockaddr), 0)``."""
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return (str(sockaddr), 0)


class Rotation:
    """Round-robin over a list of targets: each :meth:`order` starts one target
    further along, and the rest of the list follows (the failover order). One is
    shared by the streams that use the same list."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next = 0

    def order(self, targets: Sequence[T]) -> list[T]:
        """``targets`` from the next starting point on, wrapping around."""
        i = self.next if self.next < len(targets) else 0
        self.next = i + 1 if i + 1 < len(targets) else 0
        return [*targets[i:], *targets[:i]]


def starting_at(first: T, targets: Sequence[T]) -> list[T]:
    """``targets`` from ``first`` on, wrapping around (a balancer's pick, then the
    others to fail over to); ``first`` and then all of ``targets`` when it is not
    one of them."""
    if first in targets:
        i = targets.index(first)
        return [*targets[i:], *targets[:i]]
    return [first, *targets]
