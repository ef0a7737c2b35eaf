"""Typed HTTP/1.1 message heads: :class:`Headers`, :class:`RequestHead`,
:class:`ResponseHead`.

A head is what ``MessageStart(head)`` carries through a pipeline. Heads are frozen
(events are shared between filters, see :mod:`pipeline.events`); a filter that
changes one makes a new one with :meth:`RequestHead.replace`, giving it a copy of the
headers (``head.headers.copy()``) when it changes them.

Header names and values are ``str``: the codec decodes the header block from
ISO-8859-1 once (RFC 9110 5.5: field values are octets; latin-1 maps every octet to
one character, so the round trip is exact). :class:`Headers` keeps the original case
and order of the fields, duplicates included, and looks names up without regard to
case.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Headers", "RequestHead", "ResponseHead"]


class Headers:
    """An ordered, case-preserving list of header fields with case-insensitive lookup.

    >>> h = Headers([("Content-Type", "text/plain"), ("Set-Cookie", "a=1")])
    >>> h.add("set-cookie", "b=2")
    >>> h["content-type"], h.get_all("SET-COOKIE")
    ('text/plain', ['a=1', 'b=2'])
    """

    __slots__ = ("_items",)

    def __init__(self, fields: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        if fields is None:
            self._items: list[tuple[str, str]] = []
        elif isinstance(fields, Mapping):
            self._items = [(str(k), str(v)) for k, v in fields.items()]
        else:
            self._items = [(k, v) for k, v in fields]

    @classmethod
    def from_list(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap ``items`` without copying it (the codec's fast path)."""
        h = cls.__new__(cls)
        h._items = items
        return h

    # Lookup ------------------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        lname = name.lower()
        for k, v in self._items:
            if k.lower() == lname:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self._items)

    def has_token(self, name: str, token: str) -> bool:
        """Whether the comma-separated list header ``name`` contains ``token``
        (case-insensitive), e.g. ``has_token("Connection", "close")``."""
        token = token.lower()
        for value in self.get_all(name):
            for part in value.split(","):
                if part.strip().lower() == token:
                    return True
        return False

    # Changes -----------------------------------------------------------------

    def add(self, name: str, value: str) -> None:
        """Append a field (duplicates allowed)."""
        self._items.append((name, value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field by one, at the place of the first (or last)."""
        lname = name.lower()
        items = self._items
        for i, (k, _) in enumerate(items):
            if k.lower() == lname:
                items[i] = (k, value)
                self._items = items[: i + 1] + [
                    kv for kv in items[i + 1 :] if kv[0].lower() != lname
                ]
                return
        items.append((name, value))

    def setdefault(self, name: str, value: str) -> str:
        """The first value of ``name``; set it to ``value`` first if absent."""
        current = self.get(name)
        if current is None:
            self._items.append((name, value))
            return value
        return current

    def remove(self, name: str) -> int:
        """Delete every ``name`` field; returns how many there were."""
        lname = name.lower()
        before = len(self._items)
        self._items = [kv for kv in self._items if kv[0].lower() != lname]
        return before - len(self._items)

    def __delitem__(self, name: str) -> None:
        if not self.remove(name):
            raise KeyError(name)

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    # Views -------------------------------------------------------------------

    def items(self) -> list[tuple[str, str]]:
        """The fields as ``(name, value)`` pairs, original case and order. The list
        is the object's own: do not change it, use the methods."""
        return self._items

    def keys(self) -> list[str]:
        return [k for k, _ in self._items]

    def copy(self) -> Headers:
        return Headers.from_list(list(self._items))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """An HTTP request head: ``method`` (as sent, e.g. ``"GET"``), ``target`` (the
    request-target as sent: ``/path?query``, an absolute URI for a forward proxy,
    ``host:port`` for CONNECT, ``*`` for ``OPTIONS *``), ``version`` (``"1.1"`` or
    ``"1.0"``) and ``headers``."""

    method: str = "GET"
    target: str = "/"
    headers: Headers = field(default_factory=Headers)
    version: str = "1.1"

    @property
    def path(self) -> str:
        """The target without its query (``/a/b`` for ``/a/b?x=1``)."""
        target = self.target
        i = target.find("?")
        return target if i < 0 else target[:i]

    @property
    def query(self) -> str:
        """The query string, without ``?`` (``""`` when there is none)."""
        target = self.target
        i = target.find("?")
        return "" if i < 0 else target[i + 1 :]

    @property
    def host(self) -> str | None:
        """The ``Host`` header, or ``None``."""
        return self.headers.get("host")

    def replace(self, **changes: Any) -> RequestHead:
        """A copy with ``changes`` applied (``head.replace(target="/v2" + head.path)``)."""
        if type(self) is RequestHead and changes.keys() <= _REQUEST_FIELDS:
            # The proxy's hot path (new headers, version 1.1): one constructor
            # call instead of dataclasses.replace's generic field walk.
            get = changes.get
            return RequestHead(
                get("method", self.method),
                get("target", self.target),
                get("headers", self.headers),
                get("version", self.version),
            )
        return replace(self, **changes)  # subclasses; unknown fields raise TypeError


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """An HTTP response head: ``status`` (an int), ``reason`` (the phrase as sent,
    or the standard one), ``version`` and ``headers``."""

    status: int = 200
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    version: str = "1.1"

    def replace(self, **changes: Any) -> ResponseHead:
        """A copy with ``changes`` applied."""
        if type(self) is ResponseHead and changes.keys() <= _RESPONSE_FIELDS:
            get = changes.get
            return ResponseHead(
                get("status", self.status),
                get("reason", self.reason),
                get("headers", self.headers),
                get("version", self.version),
            )
        return replace(self, **changes)  # subclasses; unknown fields raise TypeError


_REQUEST_FIELDS = frozenset(("method", "target", "headers", "version"))
_RESPONSE_FIELDS = frozenset(("status", "reason", "headers", "version"))
