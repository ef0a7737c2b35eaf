"""The plugin manager and the registries collected from it.

Built-in modules (:data:`BUILTIN_PLUGINS`) are registered first, then every module
of the ``trioxy`` entry-point group. The registries are built once per process and
cached; :func:`reset` drops them (tests that install a plugin call it).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import ConfigError

if TYPE_CHECKING:
    from .filter import Filter

__all__ = [
    "BUILTIN_PLUGINS",
    "balancer_registry",
    "codec_registry",
    "filter_registry",
    "plugin_manager",
    "reset",
]

#: Modules whose ``@hookimpl`` functions register the built-in filters.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "filters.balance",
    "filters.health",  # no filter: its trioxy_startup hook starts the health checks
    "filters.connect",
    "filters.connect_udp",
    "filters.dns",
    "filters.demux",
    "filters.mux",
    "filters.http_codec",
    "filters.http_demux",
    "filters.http_mux",
    "filters.fork",
    "filters.branch",
    "filters.link",
    "filters.handle",
    "filters.replace",
    "filters.insert",
    "filters.split",
    "filters.dump",
    "filters.smux",
    "filters.mqtt",
    "filters.serve_http",
    "filters.compress",
    "filters.route",
    "filters.headers",
    "filters.static",
    "filters.mqtt_session",
    "filters.proxy_protocol",
    "filters.socks",
    "filters.http_tunnel",
    "filters.websocket",
    "filters.tls",
    "filters.tls_client_hello",
)


@cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with built-ins and installed plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    try:
        pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    except Exception as exc:  # a broken plugin is a configuration problem, said once
        raise ConfigError(f"cannot load a trioxy plugin: {type(exc).__name__}: {exc}") from exc
    return pm


@cache
def filter_registry() -> dict[str, type[Filter]]:
    """Filter classes by builder-method name."""
    registry: dict[str, type[Filter]] = {}
    for classes in plugin_manager().hook.trioxy_filters():
        for cls in classes:
            if not cls.name:
                raise ConfigError(f"filter class {cls.__qualname__} has no name")
            if cls.name in registry and registry[cls.name] is not cls:
                raise ConfigError(
                    f"filter name {cls.name!r} is registered twice "
                    f"({registry[cls.name].__module__} and {cls.__module__})"
                )
            registry[cls.name] = cls
    return registry


@cache
def codec_registry() -> dict[str, Any]:
    """Codecs by name."""
    merged: dict[str, Any] = {}
    for found in plugin_manager().hook.trioxy_codecs():
        merged.update(found)
    return merged


@cache
def balancer_registry() -> dict[str, Any]:
    """Load-balancing algorithms by name."""
    merged: dict[str, Any] = {}
    for found in plugin_manager().hook.trioxy_balancers():
        merged.update(found)
    return merged


def reset() -> None:
    """Forget the plugin manager and registries (they are rebuilt on next use)."""
    for fn in (plugin_manager, filter_registry, codec_registry, balancer_registry):
        fn.cache_clear()
