"""Filters from an installed third-party package become builder methods.

``make test`` installs tests/plugin_example (entry point group ``trioxy``)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from pipeline import ConfigError, Data, Filter, Proxy, StreamEnd, hookimpl, plugins
from pipeline.testing import run_layout


def test_the_example_plugin_is_installed_through_its_entry_point() -> None:
    names = {ep.name for ep in entry_points(group="trioxy")}
    assert "example" in names, "run `make test` (it installs tests/plugin_example)"


async def test_a_plugin_filter_is_a_builder_method() -> None:
    proxy = Proxy()
    proxy.pipeline("p").rot13()
    out = await run_layout(proxy.layout("p"), [b"Hello", StreamEnd()])
    assert out == [Data(b"Uryyb"), StreamEnd()]


def test_a_plugin_balancer_is_registered() -> None:
    registry = plugins.balancer_registry()
    assert registry["first-only"](["a:1", "b:2"]).select(None) == "a:1"


def test_builtins_register_through_the_same_hook() -> None:
    pm = plugins.plugin_manager()
    for module in plugins.BUILTIN_PLUGINS:
        assert pm.get_plugin(module) is not None
    assert plugins.filter_registry()["link"].__module__ == "filters.link"


def test_a_name_registered_twice_is_a_clear_error() -> None:
    class Clash(Filter):
        name = "link"

    class ClashPlugin:
        @hookimpl
        def trioxy_filters(self) -> list[type[Filter]]:
            return [Clash]

    pm = plugins.plugin_manager()
    clash = ClashPlugin()
    pm.register(clash)
    plugins.filter_registry.cache_clear()
    try:
        with pytest.raises(ConfigError, match="'link' is registered twice"):
            plugins.filter_registry()
    finally:
        pm.unregister(clash)
        plugins.filter_registry.cache_clear()


async def test_lifecycle_hooks_run_once_around_serving() -> None:
    import trio

    from pipeline.proxy import ProxyConfig
    from pipeline.runtime import serve

    calls: list[tuple[str, int]] = []

    class Lifecycle:
        @hookimpl
        def trioxy_startup(self, config: ProxyConfig) -> None:
            calls.append(("startup", len(config.listeners)))

        @hookimpl
        def trioxy_shutdown(self, config: ProxyConfig) -> None:
            calls.append(("shutdown", len(config.listeners)))

    proxy = Proxy()
    proxy.listen("127.0.0.1:0")
    pm = plugins.plugin_manager()
    lifecycle = Lifecycle()
    pm.register(lifecycle)
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve(
                    proxy.build(), handle_signals=False, task_status=task_status
                )
            )
            assert calls == [("startup", 1)]
            server.shutdown()
        assert calls == [("startup", 1), ("shutdown", 1)]
    finally:
        pm.unregister(lifecycle)
