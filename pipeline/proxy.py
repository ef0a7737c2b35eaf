"""The script's root object: :class:`Proxy` holds listeners and named layouts.

A script creates a ``Proxy``, adds listeners with :meth:`Proxy.listen` and named
layouts with :meth:`Proxy.pipeline`, and describes each with the fluent builder.
When the script has run, the loader calls :meth:`Proxy.build`, which validates
everything and returns the immutable :class:`ProxyConfig` the runtime serves.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from .address import format_address, parse_address
from .errors import ConfigError
from .layout import Builder, Layout, Location, caller_location
from .plugins import filter_registry
from .udp import UdpOptions

__all__ = ["ListenerOptions", "ListenerSpec", "Proxy", "ProxyConfig"]

#: Proxies created while a script loads (set by :mod:`pipeline.script`).
collecting: contextvars.ContextVar[list[Proxy] | None] = contextvars.ContextVar(
    "trioxy_collecting", default=None
)


@dataclass(frozen=True, slots=True)
class ListenerOptions:
    """Per-listener limits and timeouts, in seconds (``None``: no limit).

    * ``max_connections``: streams served at once; further connections wait in the
      kernel's backlog (they are accepted when a slot frees), they are not refused.
    * ``read_timeout``: the client sent nothing for this long while the proxy
      waited for it.
    * ``write_timeout``: the client did not accept data for this long.
    * ``idle_timeout``: nothing moved in either direction for this long. (A listener
      whose layout is ``connect`` alone relays in the kernel: the shorter of this
      and connect's own ``idle_timeout`` applies.)
    * ``backlog``: the listen queue length.
    """

    max_connections: int | None = None
    read_timeout: float | None = None
    write_timeout: float | None = None
    idle_timeout: float | None = 300.0
    backlog: int = 1024

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("read_timeout", "write_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None for no limit)")
        if self.backlog < 1:
            raise ValueError("backlog must be at least 1")


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """A validated listener: where to listen, what to run, with which limits."""

    host: str
    port: int
    layout: Layout
    options: ListenerOptions
    location: Location
    #: Set for a UDP listener (:meth:`Proxy.listen_udp`); ``None`` for TCP.
    udp: UdpOptions | None = None

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    @property
    def protocol(self) -> str:
        """``"tcp"`` or ``"udp"``."""
        return "tcp" if self.udp is None else "udp"


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Everything a script describes, validated and frozen."""

    listeners: tuple[ListenerSpec, ...]
    layouts: dict[str, Layout]


class Proxy:
    """Listeners and named pipeline layouts of a script."""

    def __init__(self) -> None:
        self._listeners: list[tuple[str, int, ListenerOptions, Builder]] = []
        self._udp: dict[int, UdpOptions] = {}  # index in _listeners -> UDP options
        self._named: dict[str, Builder] = {}
        self._registry = filter_registry()
        self._config: ProxyConfig | None = None
        self.location = caller_location()
        found = collecting.get()
        if found is not None:
            found.append(self)

    def listen(
        self,
        address: int | str,
        *,
        max_connections: int | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        idle_timeout: float | None = 300.0,
        backlog: int = 1024,
    ) -> Builder:
        """Listen for TCP on ``address`` (a port, ``"host:port"`` or
        ``"[ipv6]:port"``; a bare port listens on every IPv4 address) and return the
        builder of the layout each connection runs."""
        location = caller_location()
        try:
            host, port = parse_address(address)
            options = ListenerOptions(
                max_connections, read_timeout, write_timeout, idle_timeout, backlog
            )
        except ValueError as exc:
            raise ConfigError(f"listen(): {exc}", *location) from None
        for i, (other_host, other_port, _, other) in enumerate(self._listeners):
            if i in self._udp:
                continue  # a TCP and a UDP listener may share a port
            if (other_host, other_port) == (host, port) and port != 0:
                raise ConfigError(
                    f"listen(): {format_address(host, port)} is already a listener "
                    f"(line {other.location[1]})",
                    *location,
                )
        builder = Builder(self, f"listen {format_address(host, port)}", location, self._registry)
        self._listeners.append((host, port, options, builder))
        return builder

    def listen_udp(
        self,
        address: int | str,
        *,
        idle_timeout: float | None = 60.0,
        max_peers: int = 10000,
        queue_size: int = 128,
    ) -> Builder:
        """Listen for UDP on ``address`` (same forms as :meth:`listen`) and return the
        builder of the layout each peer's stream runs: one stream per peer address,
        one ``Data`` event per datagram. See :mod:`pipeline.udp` for the limits."""
        location = caller_location()
        try:
            host, port = parse_address(address)
            idle = idle_timeout if idle_timeout is None else float(idle_timeout)
            udp = UdpOptions(idle, max_peers, queue_size)
        except ValueError as exc:
            raise ConfigError(f"listen_udp(): {exc}", *location) from None
        for i, (other_host, other_port, _, other) in enumerate(self._listeners):
            if i in self._udp and (other_host, other_port) == (host, port) and port != 0:
                raise ConfigError(
                    f"listen_udp(): {format_address(host, port)} is already a UDP listener "
                    f"(line {other.location[1]})",
                    *location,
                )
        name = f"listen udp {format_address(host, port)}"
        builder = Builder(self, name, location, self._registry)
        self._udp[len(self._listeners)] = udp
        self._listeners.append((host, port, ListenerOptions(idle_timeout=idle), builder))
        return builder

    def pipeline(self, name: str) -> Builder:
        """Define the named layout ``name`` and return its builder; other layouts
        reach it with ``.to(name)`` or ``link(name)``."""
        location = caller_location()
        if not isinstance(name, str) or not name:
            raise ConfigError("pipeline(): the name must be a non-empty string", *location)
        if name in self._named:
            first = self._named[name].location
            raise ConfigError(
                f"pipeline(): {name!r} is already defined (line {first[1]})", *location
            )
        builder = Builder(self, name, location, self._registry)
        self._named[name] = builder
        return builder

    def build(self) -> ProxyConfig:
        """Validate every layout and freeze the configuration (idempotent)."""
        if self._config is None:
            listeners = tuple(
                ListenerSpec(
                    host, port, b.build(self._named), options, b.location, self._udp.get(i)
                )
                for i, (host, port, options, b) in enumerate(self._listeners)
            )
            layouts = {name: b.build(self._named) for name, b in self._named.items()}
            self._config = ProxyConfig(listeners, layouts)
        return self._config

    def layout(self, name: str) -> Layout:
        """The built layout ``name`` (builds the proxy first)."""
        layouts = self.build().layouts
        if name not in layouts:
            raise KeyError(name)
        return layouts[name]

    def __repr__(self) -> str:
        return f"<Proxy listeners={len(self._listeners)} layouts={list(self._named)}>"

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"Proxy has no attribute {name!r}: start a layout with "
            "proxy.listen(address) or proxy.pipeline(name)"
        )
