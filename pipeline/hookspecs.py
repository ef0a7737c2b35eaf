"""The pluggy hooks of trioxy.

Built-in filters register through exactly these hooks, like any third-party plugin.
A plugin is a module (or object) with functions marked ``@hookimpl``; a package
exposes it through the ``trioxy`` entry-point group::

    # pyproject.toml of the plugin package
    [project.entry-points.trioxy]
    myplugin = "myplugin"

    # myplugin.py
    from pipeline import Filter, hookimpl

    class Upper(Filter):
        name = "upper"
        ...

    @hookimpl
    def trioxy_filters():
        return [Upper]

after which every script has ``builder.upper()``.

No hook is called per event or per stream: the registries are collected once, when
the first :class:`~pipeline.proxy.Proxy` is made, and lifecycle hooks run once per
process start and stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .filter import Filter
    from .proxy import ProxyConfig

__all__ = ["hookimpl", "hookspec"]

PROJECT = "trioxy"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def trioxy_filters() -> list[type[Filter]]:  # type: ignore[empty-body]
    """Filter classes to register; each becomes a builder method named after its
    ``name`` attribute. A name registered twice is a load error."""


@hookspec
def trioxy_codecs() -> dict[str, Any]:  # type: ignore[empty-body]
    """Protocol codecs by name (``"http"``, ``"mqtt"``...): sans-IO classes from
    :mod:`protocols` or a plugin."""


@hookspec
def trioxy_balancers() -> dict[str, Any]:  # type: ignore[empty-body]
    """Load-balancing algorithms by name (``"round-robin"``...): classes taking the
    list of targets."""


@hookspec
def trioxy_startup(config: ProxyConfig) -> None:
    """The runtime is about to serve ``config``: its listeners are bound, nothing
    is accepted yet. An exception here stops the server before it serves."""


@hookspec
def trioxy_shutdown(config: ProxyConfig) -> None:
    """The runtime has stopped serving ``config`` (listeners closed, streams over),
    however it stopped."""
