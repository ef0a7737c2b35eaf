"""Per-stream state: the :class:`Context` every filter of a pipeline shares.

A context holds what is known about the stream (inbound local and remote address,
the listener, TLS details added by TLS filters) and the script's own variables.
Variables are set with :meth:`Context.set` and read as attributes::

    ctx.set(target="10.0.0.1:80")
    ctx.target            # "10.0.0.1:80"

A child context (made by ``demux`` for each message, by ``fork`` for each branch)
sees its parent's variables and shadows them with its own, so per-message state
never leaks into the next message. Nothing here is global: two streams never share
a context unless a script hands one over explicitly.
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["Context"]

_ids = itertools.count(1)


class Context:
    """State of one stream (or one message, for a child context)."""

    __slots__ = ("id", "listener", "local", "parent", "remote", "tls", "vars")

    def __init__(
        self,
        *,
        local: tuple[str, int] | None = None,
        remote: tuple[str, int] | None = None,
        listener: str | None = None,
        parent: Context | None = None,
    ) -> None:
        self.id: int = next(_ids)
        self.parent = parent
        if parent is not None:
            local = local or parent.local
            remote = remote or parent.remote
            listener = listener or parent.listener
        self.local: tuple[str, int] | None = local
        self.remote: tuple[str, int] | None = remote
        self.listener: str | None = listener
        self.tls: Any = parent.tls if parent is not None else None
        self.vars: dict[str, Any] = {}

    def child(self) -> Context:
        """A context that reads through to this one and keeps its own variables."""
        # Made per message under a demux: the attributes are copied directly
        # rather than through the keyword-handling constructor.
        ctx = _new(Context)
        ctx.id = next(_ids)
        ctx.parent = self
        ctx.local = self.local
        ctx.remote = self.remote
        ctx.listener = self.listener
        ctx.tls = self.tls
        ctx.vars = {}
        return ctx

    def set(self, **values: Any) -> Context:
        """Set variables; returns the context so callbacks can chain."""
        self.vars.update(values)
        return self

    def get(self, name: str, default: Any = None) -> Any:
        """A variable's value, looked up through the parents; ``default`` if unset."""
        ctx: Context | None = self
        while ctx is not None:
            found = ctx.vars.get(name, _MISSING)
            if found is not _MISSING:
                return found
            ctx = ctx.parent
        return default

    def __getattr__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise AttributeError(f"context has no variable {name!r} (set it with ctx.set)")
        return value

    def __repr__(self) -> str:
        return f"<Context #{self.id} remote={self.remote} vars={self.vars}>"


_MISSING: Any = object()
_new = object.__new__
