"""filters._callback: sync or async user callbacks, decided once per callback."""

from __future__ import annotations

import gc
import inspect
from collections.abc import Awaitable
from typing import Any

import pytest

from filters import _callback
from filters._callback import as_async


async def test_sync_and_async_callbacks_are_awaitable() -> None:
    async def later(x: int) -> int:
        return x + 1

    assert await as_async(lambda x: x * 2)(3) == 6
    assert await as_async(later)(3) == 4
    # A sync function returning an awaitable (a lambda calling an async one).
    assert await as_async(lambda x: later(x))(3) == 4
    assert await as_async(lambda: None)() is None


def test_the_decision_is_made_once_per_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = inspect.iscoroutinefunction

    def counting(fn: Any) -> bool:
        calls.append(fn)
        return real(fn)

    def fn(ctx: Any) -> str:
        return "x"

    async def afn(ctx: Any) -> str:
        return "x"

    monkeypatch.setattr(inspect, "iscoroutinefunction", counting)
    for _ in range(3):
        as_async(fn)
        assert as_async(afn) is afn
    assert len(calls) == 3  # fn: twice (itself, its __call__), afn: once


def test_a_dead_callback_leaves_no_entry() -> None:
    def fn() -> None:
        pass

    as_async(fn)
    key = id(fn)
    assert key in _callback._ASYNC
    del fn
    gc.collect()
    assert key not in _callback._ASYNC


class _Equal:
    """Callables that compare equal but answer differently."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def __call__(self) -> str:
        return self.answer

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Equal)

    def __hash__(self) -> int:
        return 1


@pytest.mark.parametrize("first", ["a", "b"])
async def test_equal_callables_keep_their_own_wrapper(first: str) -> None:
    other = "b" if first == "a" else "a"
    one: Awaitable[Any] = as_async(_Equal(first))()
    two: Awaitable[Any] = as_async(_Equal(other))()
    assert (await one, await two) == (first, other)
