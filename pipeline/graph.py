"""Text rendering of a script's pipelines, for ``trioxy check``.

Each listener and named layout is printed as a tree: its filters in order, and
under each joint filter the sub-pipelines it runs. A sub-pipeline given by name is
shown as ``-> pipeline 'name'`` and not expanded again, so layouts that refer to
each other (or to themselves) print finitely::

    listen 127.0.0.1:8000  (idle_timeout=300s)
    └── connect(RoundRobin(['127.0.0.1:9000']))
"""

from __future__ import annotations

from collections.abc import Iterator

from .layout import FilterSpec, Layout, LayoutRef
from .proxy import ListenerSpec

__all__ = ["render"]


def render(listeners: tuple[ListenerSpec, ...], layouts: dict[str, Layout]) -> str:
    """The whole configuration as a text tree."""
    blocks: list[str] = []
    for spec in listeners:
        opts = spec.options
        details = [
            f"{name}={_fmt(getattr(opts, name))}"
            for name in ("max_connections", "read_timeout", "write_timeout", "idle_timeout")
            if getattr(opts, name) is not None
        ]
        if spec.udp is not None:  # a UDP listener has its own limits (pipeline.udp)
            udp = spec.udp
            details = [f"max_peers={udp.max_peers}", f"queue_size={udp.queue_size}"]
            if udp.idle_timeout is not None:
                details.insert(0, f"idle_timeout={_fmt(udp.idle_timeout)}")
        kind = "listen udp" if spec.udp is not None else "listen"
        title = f"{kind} {spec.address}" + (f"  ({', '.join(details)})" if details else "")
        blocks.append("\n".join([title, *_layout_lines(spec.layout, "")]))
    for name, layout in layouts.items():
        blocks.append("\n".join([f"pipeline {name!r}", *_layout_lines(layout, "")]))
    return "\n\n".join(blocks) + "\n"


def _layout_lines(layout: Layout, prefix: str) -> Iterator[str]:
    if not layout.specs:
        yield f"{prefix}└── (no filters: output = input)"
        return
    for i, spec in enumerate(layout.specs):
        last = i == len(layout.specs) - 1
        yield f"{prefix}{'└── ' if last else '├── '}{spec.describe()}"
        yield from _sub_lines(spec, prefix + ("    " if last else "│   "))


def _sub_lines(spec: FilterSpec, prefix: str) -> Iterator[str]:
    refs = list(spec.subs) + [r for r in _refs(spec) if r not in spec.subs]
    for j, ref in enumerate(refs):
        last = j == len(refs) - 1
        branch = "└── " if last else "├── "
        inner = prefix + ("    " if last else "│   ")
        if ref.name is not None:
            yield f"{prefix}{branch}-> pipeline {ref.name!r}"
        else:
            yield f"{prefix}{branch}[sub-pipeline]"
            yield from _layout_lines(ref.layout, inner)


def _refs(spec: FilterSpec) -> list[LayoutRef]:
    found: list[LayoutRef] = []
    stack: list[object] = [*spec.args, *spec.kwargs.values()]
    while stack:
        value = stack.pop(0)
        if isinstance(value, LayoutRef):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            stack[0:0] = list(value)
        elif isinstance(value, dict):
            stack[0:0] = list(value.values())
    return found


def _fmt(value: object) -> str:
    return f"{value:g}s" if isinstance(value, float) else str(value)
