"""Calling user callbacks that may be plain functions or coroutine functions."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["as_async", "is_async"]


def is_async(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions (and callables whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - we want the method, not callability
    )


#: Whether a callback is ``async``, by ``id`` of the callback, with a weak
#: reference that drops the entry when the callback dies (so the cache holds no
#: script object alive, and an id reused later cannot match). A filter made per
#: stream or per message (``serve_http``, ``mux_http`` under ``demux_http``)
#: wraps the same callback every time: the ``inspect`` calls then run once per
#: callback, not per request. Callables that cannot be weakly referenced are
#: inspected every time.
_ASYNC: dict[int, tuple[weakref.ref[Any], bool]] = {}


def _forget(key: int, ref: weakref.ref[Any]) -> None:
    entry = _ASYNC.get(key)
    if entry is not None and entry[0] is ref:
        del _ASYNC[key]


def _is_async_cached(fn: Callable[..., Any]) -> bool:
    key = id(fn)
    entry = _ASYNC.get(key)
    if entry is not None and entry[0]() is fn:
        return entry[1]
    result = is_async(fn)
    try:
        ref = weakref.ref(fn, lambda r: _forget(key, r))
    except TypeError:  # not weakly referenceable: not cached
        return result
    _ASYNC[key] = (ref, result)
    return result


def as_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function, decided once at load time so the hot path
    never inspects what a callback returned. A sync function that returns an
    awaitable anyway (a lambda calling an async function) is awaited too."""
    if _is_async_cached(fn):
        return fn

    async def call(*args: Any) -> Any:
        result = fn(*args)
        if type(result) in _PLAIN:  # the usual results: no isawaitable() call
            return result
        if inspect.isawaitable(result):
            return await result
        return result

    call.__name__ = getattr(fn, "__name__", "callback")
    return call


#: Result types that are never awaitable (checked by exact type).
_PLAIN = frozenset((type(None), str, bytes, bool, int, float, dict, list, tuple))
