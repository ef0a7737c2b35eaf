"""Placeholder while the module is written (replaced in this change)."""

from pipeline.hookspecs import hookimpl


@hookimpl
def trioxy_filters() -> list[type]:
    return []
