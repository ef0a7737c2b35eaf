"""The file cache behind ``serve_static``: what is known about a file, and its bytes
when it is small, bounded in total bytes, least recently used out first.

A :class:`Representation` is one form in which a file is served: the file itself,
its precompressed ``name.gz`` sidecar, or its gzip compression made in memory. It
carries the response headers that do not change from one request to the next
(type, validators) and, for files of at most ``max_entry_size`` bytes, the body.

Freshness is checked on every request, never assumed for a time: the caller
``stat``\\ s the file (a cheap system call, answered from the kernel's inode cache)
and looks the representation up with the resulting :func:`validator` (inode,
device, size, modification and change times in nanoseconds); an entry made from
another version of the file is dropped. The change time is part of it so that a
file rewritten and then given back its old modification time (``touch -d``,
``rsync -t``) is still seen as changed.

Reading files: :func:`read_whole` and :func:`open_checked` open a file and check
with ``fstat`` that it is still the version the request was answered from; if not
they raise :class:`FileChanged` and the caller starts over. They block, so callers
run them in a worker thread (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Final

__all__ = [
    "ENTRY_OVERHEAD",
    "FileCache",
    "FileChanged",
    "Representation",
    "Validator",
    "open_checked",
    "read_whole",
    "validator",
]

Validator = tuple[int, ...]

#: Bytes charged to the cache for an entry besides its body (the object, its
#: headers), so that entries without a body are bounded too.
ENTRY_OVERHEAD: Final = 512

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)


class FileChanged(Exception):
    """The file on disk is no longer the version the answer was prepared from."""


def validator(st: os.stat_result) -> Validator:
    """What identifies one version of a file: inode, device, size, mtime, ctime.
    A representation made from several files (a sidecar depends on its source
    too) has their validators one after the other, its own file's first."""
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_FIELDS: Final = 5  # the length of one file's validator


class Representation:
    """One form of a file as served (see the module docs).

    ``headers`` are the fixed response fields (``Content-Type``, ``ETag``,
    ``Last-Modified``...), without ``Content-Length``; ``body`` is ``None`` until
    the file is read, and stays ``None`` for files larger than the cache's
    ``max_entry_size`` (those are streamed from ``path``). ``gzip_useless`` is set
    on a file whose gzip form turned out no smaller than itself.
    """

    __slots__ = (
        "body",
        "compressible",
        "cost",
        "etag",
        "gzip_useless",
        "headers",
        "key",
        "mtime",
        "path",
        "size",
        "validator",
    )

    def __init__(
        self,
        key: str,
        path: str,
        validator: Validator,
        size: int,
        mtime: int,
        etag: str,
        headers: list[tuple[str, str]],
        compressible: bool,
        body: bytes | None = None,
    ) -> None:
        self.key = key
        self.path = path
        self.validator = validator
        self.size = size
        self.mtime = mtime  # seconds, as Last-Modified says it
        self.etag = etag
        self.headers = headers
        self.compressible = compressible
        self.body = body
        self.gzip_useless = False
        self.cost = ENTRY_OVERHEAD + (len(body) if body is not None else 0)


class FileCache:
    """Representations by key, at most ``capacity`` bytes in total (bodies plus
    :data:`ENTRY_OVERHEAD` each), least recently used evicted first. Bodies are
    only kept for files of at most ``max_entry_size`` bytes."""

    def __init__(self, capacity: int, max_entry_size: int) -> None:
        self.capacity = capacity
        self.max_entry_size = max_entry_size
        self.total = 0
        self._entries: OrderedDict[str, Representation] = OrderedDict()

    def get(self, key: str, version: Validator) -> Representation | None:
        """The representation stored under ``key`` if it was made from ``version``
        of its file; a stale one is dropped."""
        rep = self._entries.get(key)
        if rep is None:
            return None
        if rep.validator != version:
            del self._entries[key]
            self.total -= rep.cost
            return None
        self._entries.move_to_end(key)
        return rep

    def put(self, rep: Representation) -> Representation:
        """Store ``rep`` (replacing what ``rep.key`` held), evicting the least
        recently used entries to stay within capacity; returns ``rep``. One that
        alone exceeds the capacity is not stored."""
        old = self._entries.pop(rep.key, None)
        if old is not None:
            self.total -= old.cost
        if rep.cost <= self.capacity:
            self._entries[rep.key] = rep
            self.total += rep.cost
            self._evict()
        return rep

    def attach(self, rep: Representation, body: bytes) -> None:
        """Give ``rep`` the body just read for it (only the first reader's counts),
        charging the cache if ``rep`` is stored and the body small enough."""
        if rep.body is not None or len(body) > self.max_entry_size:
            return
        rep.body = body
        if self._entries.get(rep.key) is rep:
            rep.cost += len(body)
            self.total += len(body)
            self._evict()
        else:
            rep.cost += len(body)

    def _evict(self) -> None:
        entries = self._entries
        while self.total > self.capacity and entries:
            _, rep = entries.popitem(last=False)
            self.total -= rep.cost

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


def open_checked(path: str, version: Validator) -> int:
    """A file descriptor on ``path``, which must still be ``version`` (its first
    validator)
    (:class:`FileChanged` otherwise; ``OSError`` if it cannot be opened). Opened
    non-blocking, so a file swapped for a FIFO cannot hang the thread."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if validator(os.fstat(fd)) != version[:_FIELDS]:
            raise FileChanged(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_whole(path: str, version: Validator) -> bytes:
    """The bytes of ``path``, which must still be ``version`` and keep its size
    while it is read (:class:`FileChanged` otherwise)."""
    fd = open_checked(path, version)
    try:
        size = version[2]
        chunks: list[bytes] = []
        got = 0
        while got < size:
            chunk = os.read(fd, size - got)
            if not chunk:
                raise FileChanged(path)
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when empty
    finally:
        os.close(fd)
