"""Parsing the request headers that ``serve_static`` obeys: entity-tag lists,
HTTP dates, ``Range`` and ``Accept-Encoding`` (RFC 9110 sections 8.8, 12.5.3, 13, 14).

Pure functions over ``str``, no I/O: a malformed value is never an exception, it is
what RFC 9110 says a server does with it (an invalid date or range is ignored, a
malformed entity-tag list matches nothing).
"""

from __future__ import annotations

import datetime
import email.utils
from typing import Final

__all__ = [
    "UNSATISFIABLE",
    "accepts_gzip",
    "etag_matches",
    "http_date",
    "parse_etags",
    "parse_range",
]

#: :func:`parse_range`'s answer for a range that selects no byte of the file (416).
UNSATISFIABLE: Final = (-1, -1)


def parse_etags(value: str) -> list[tuple[bool, str]]:
    """The entity-tags of an ``If-Match``/``If-None-Match`` list, as ``(weak, tag)``
    with the quotes kept in ``tag``. Parsing stops at the first malformed element
    (what came before it is kept): commas may appear inside the quotes, so the value
    is scanned, not split."""
    tags: list[tuple[bool, str]] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t,":
            i += 1
            continue
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i >= n or value[i] != '"':
            break
        close = value.find('"', i + 1)
        if close < 0:
            break
        tags.append((weak, value[i : close + 1]))
        i = close + 1
    return tags


def etag_matches(value: str, etag: str, *, weak: bool) -> bool:
    """Whether the list ``value`` (or ``*``) matches ``etag``: weak comparison
    (``W/`` ignored) for ``If-None-Match``, strong (weak tags never match) for
    ``If-Match`` and ``If-Range`` (RFC 9110 8.8.3.2)."""
    if value == etag:  # the usual case: the client echoes the tag it was given
        return True
    if value.strip() == "*":
        return True
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in parse_etags(value))


def http_date(value: str) -> int | None:
    """An HTTP date (IMF-fixdate, and the obsolete RFC 850 and asctime forms) as a
    POSIX timestamp; ``None`` when it is not a date. A date without a zone (asctime)
    is GMT, as HTTP says, not local time."""
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    try:  # datetime, not calendar.timegm: "31 Feb" is no date, not 3 March
        when = datetime.datetime(*parsed[:6], tzinfo=datetime.UTC)
    except (OverflowError, ValueError):
        return None
    return int(when.timestamp()) - (parsed[9] or 0)


def _digits(text: str) -> bool:
    # str.isdigit() alone accepts non-ASCII digits such as "²".
    return text.isascii() and text.isdigit()


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The byte range a ``Range`` header asks of a file of ``size`` bytes, as
    ``(start, end)`` with ``end`` exclusive; :data:`UNSATISFIABLE` when it selects
    no byte; ``None`` when the header is to be ignored and the whole file sent: not
    ``bytes``, not valid syntax, or several ranges (which this server answers
    with the whole file rather than ``multipart/byteranges``, as RFC 9110 14.2
    allows). A suffix range of an empty file is ignored too: there is no byte to
    name in a ``Content-Range``, and the whole (empty) file is the answer."""
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    parts = [p for p in (part.strip() for part in spec.split(",")) if p]
    if len(parts) != 1:
        return None
    first, dash, last = parts[0].partition("-")
    first, last = first.strip(), last.strip()
    if not dash:
        return None
    if not first:  # suffix range: the last N bytes
        if not _digits(last):
            return None
        length = int(last)
        if length == 0:
            return UNSATISFIABLE
        if size == 0:
            return None
        return max(0, size - length), size
    if not _digits(first):
        return None
    start = int(first)
    if last:
        if not _digits(last) or int(last) < start:
            return None
        end = min(int(last) + 1, size)
    else:
        end = size
    if start >= size:
        return UNSATISFIABLE
    return start, end


def accepts_gzip(value: str) -> bool:
    """Whether an ``Accept-Encoding`` value accepts gzip: ``gzip`` (or ``x-gzip``)
    with a q-value above 0, or, when neither is named, ``*`` with a q-value above 0
    (RFC 9110 12.5.3). A malformed q-value counts as 0."""
    lowered = value.lower()
    if "gzip" not in lowered and "*" not in lowered:
        return False
    named: float | None = None
    star: float | None = None
    for element in lowered.split(","):
        coding, _, params = element.partition(";")
        coding = coding.strip()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, number = param.partition("=")
            if key.strip() == "q":
                q = _qvalue(number.strip())
        if coding == "*":
            star = q
        else:
            named = q if named is None else max(named, q)
    if named is not None:
        return named > 0
    return star is not None and star > 0


def _qvalue(text: str) -> float:
    """A q-value (``0``..``1``, up to three decimals); 0 when malformed."""
    if not text or len(text) > 5 or text[0] not in "01":
        return 0.0
    if len(text) > 1 and (text[1] != "." or not _digits(text[2:] or "0")):
        return 0.0
    q = float(text)
    return q if q <= 1.0 else 0.0
