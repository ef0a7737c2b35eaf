"""Reading a script's settings from environment variables.

Scripts take their configuration from the environment (``LISTEN``, ``UPSTREAMS``...).
:func:`setting` reads one variable, falls back to a default given as text (so the
default goes through the same parser as a user's value), and turns a bad value
into a :class:`~pipeline.errors.ConfigError` located at the script line that asked
for it, so ``trioxy run`` prints one line and exits 2::

    from pipeline.settings import address, count, optional, seconds, setting

    LISTEN = setting("LISTEN", "127.0.0.1:8000", address)
    IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "60", optional(seconds))
    MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))

A parser is any function from text to a value that raises ``ValueError`` with a
message for the user.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

from .address import format_address, parse_address
from .errors import ConfigError

__all__ = ["address", "addresses", "count", "optional", "seconds", "setting"]

T = TypeVar("T")


def setting(name: str, default: str, parse: Callable[[str], T]) -> T:
    """The environment variable ``name`` (``default`` when unset or empty), parsed
    by ``parse``; a bad value is a ConfigError at the caller's line."""
    raw = os.environ.get(name, "").strip() or default
    try:
        return parse(raw)
    except ValueError as exc:
        frame = sys._getframe(1)
        raise ConfigError(
            f"{name}={raw!r}: {exc}", frame.f_code.co_filename, frame.f_lineno
        ) from None


def address(text: str) -> str:
    """A listen or connect address, normalised (``"[::1]:80"``, ``"0.0.0.0:80"``)."""
    return format_address(*parse_address(text))


def addresses(text: str) -> list[str]:
    """A comma-separated list of addresses, at least one."""
    found = [address(part.strip()) for part in text.split(",") if part.strip()]
    if not found:
        raise ValueError("expected at least one host:port")
    return found


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


def count(text: str) -> int:
    """A whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise ValueError("expected a whole number of at least 1")
    return int(text)


def optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """``parse``, or ``None`` for the text ``none``."""

    def parse_or_none(text: str) -> T | None:
        return None if text.lower() == "none" else parse(text)

    return parse_or_none
