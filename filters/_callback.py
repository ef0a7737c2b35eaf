"""Calling user callbacks that may be plain functions or coroutine functions."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["as_async", "is_async"]


def is_async(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions (and callables whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - we want the method, not callability
    )


def as_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function, decided once at load time so the hot path
    never inspects what a callback returned. A sync function that returns an
    awaitable anyway (a lambda calling an async function) is awaited too."""
    if is_async(fn):
        return fn

    async def call(*args: Any) -> Any:
        result = fn(*args)
        if result is not None and inspect.isawaitable(result):
            return await result
        return result

    call.__name__ = getattr(fn, "__name__", "callback")
    return call
