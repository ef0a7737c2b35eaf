"""``serve_static``: answer HTTP requests with the files of a directory.

``serve_static(root)`` ends a per-request pipeline: it receives one request
(``MessageStart(RequestHead), Data*, MessageEnd``) and outputs the response
(``MessageStart(ResponseHead), Data*, MessageEnd()``). Put it under ``demux_http``::

    proxy.listen(8080).demux_http().to(lambda p: p.serve_static("/var/www"))

Example (runnable), in memory::

    import pathlib, tempfile
    import trio
    from pipeline import MessageEnd, MessageStart, Proxy
    from pipeline.testing import join_data, run_layout
    from protocols.http import Headers, RequestHead

    root = pathlib.Path(tempfile.mkdtemp())
    (root / "hello.txt").write_text("hello\\n")
    proxy = Proxy()
    proxy.pipeline("site").serve_static(root, cache_control="max-age=60")

    get = RequestHead("GET", "/hello.txt", Headers([("Host", "example")]))
    out = trio.run(run_layout, proxy.layout("site"), [MessageStart(get), MessageEnd()])
    response = out[0].head
    assert response.status == 200 and join_data(out) == b"hello\\n"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"

    again = get.replace(headers=Headers([("If-None-Match", response.headers["ETag"])]))
    out = trio.run(run_layout, proxy.layout("site"), [MessageStart(again), MessageEnd()])
    assert out[0].head.status == 304 and join_data(out) == b""

Arguments:

``root``
    the directory served (checked when the script loads; symlinks in it resolved
    once, then).
``index=("index.html",)``
    names tried, in order, for a request naming a directory.
``cache_size=64 MiB``, ``max_entry_size=1 MiB``
    the in-memory cache: total bytes, and the largest file whose bytes it keeps.
``gzip=True``
    compress text-like types for clients that accept gzip.
``chunk_size=64 KiB``
    the read size when a large file is streamed from disk.
``hidden=False``
    whether names starting with ``.`` (``.git``, ``.env``) are served; by default
    they are 404 Not Found.
``cache_control=None``
    a ``Cache-Control`` value for every file response (``"max-age=3600"``).
``types=None``
    extra ``{".ext": "type/subtype"}`` content types, over the built-in table.

What it answers:

* ``GET`` and ``HEAD`` (the same headers, ``Content-Length`` included, without the
  body); any other method is 405 with ``Allow: GET, HEAD``. The request's body, if
  any, is ignored; the response goes out once the request has ended.
* ``Content-Type`` from the extension (Python's built-in table, not the host's
  ``/etc/mime.types``, so answers do not depend on the machine), with
  ``charset=utf-8`` for text types; ``application/octet-stream`` when unknown.
* validators: a strong ``ETag`` made of the size and the modification time in
  nanoseconds (no content hash: that would mean reading every large file whole;
  it is what nginx does, at a finer grain) and ``Last-Modified``.
* conditional requests in RFC 9110 13.2.2's order: ``If-Match`` (strong) or
  else ``If-Unmodified-Since`` -> 412; then ``If-None-Match`` (lists and ``*``,
  weak comparison) or else ``If-Modified-Since`` -> 304.
* ``Range`` (``GET`` only): one byte range, ``first-last``, ``first-`` or the
  suffix ``-N``, is 206 with ``Content-Range``; a range past the end is 416 with
  ``Content-Range: bytes */SIZE``; several ranges, another unit or bad syntax get
  the whole file (200), which RFC 9110 allows. ``If-Range`` (an ETag, strong
  comparison, or the ``Last-Modified`` date) turns a stale range into 200.
* a directory: its first existing ``index`` file; ``/dir`` without the slash is
  301 to ``/dir/`` (the query kept); a directory without an index file is 404
  (there is no listing). A file named with a trailing slash is 404.
* 404 for what does not exist, 403 for a file the process may not read.
* gzip, for text types, JSON, JavaScript, SVG and WebAssembly, when
  ``Accept-Encoding`` accepts it (q-values honoured, ``*`` included):
  ``name.gz`` beside the file is sent when it is a regular file no older than
  the file; otherwise a file of at most ``max_entry_size`` bytes is compressed
  once (in a worker thread) and the result cached, and used only if smaller.
  Larger files without a ``.gz`` go uncompressed. Responses for these types carry
  ``Vary: Accept-Encoding``; the gzip form has its own ETag. A ``GET`` with a
  ``Range`` header is always answered from the uncompressed file.

Paths. The request path (the query is ignored) is percent-decoded exactly once,
as UTF-8; then a NUL, a backslash or a ``..`` segment is 400 Bad Request (a
client removes dot-segments before sending, RFC 3986 5.2.4, so one that arrives
is an attack or a bug), empty and ``.`` segments are dropped, and the rest is
joined below the root. Double encoding stays encoded (``%252e`` names a file
called ``%2e``). Symlinks are followed, and served when they lead to a file
inside the root: from the first symlink on the path the rest is resolved
(``os.path.realpath``) and must still be inside the root; one leading outside is
404, as if it did not exist. An absolute-form target (``http://host/path``) is
served by its path. A ``name.gz`` sidecar is used only when it is a regular file
itself, not a symlink. Trust: the root is assumed not to be rearranged by an
adversary while a request is being resolved (the check and the ``open`` are
separate system calls).

Cache and disk. Every request looks up its file (``lstat``) and compares inode,
size and modification/change times with the cached entry, so a change on disk
is served at once, whatever the time. Entries (metadata, bodies of files of at most
``max_entry_size`` bytes, gzip forms) are evicted least recently used first to
keep the total within ``cache_size``. Files are read in a worker thread
(``trio.to_thread.run_sync``), never on the event loop: small ones whole (then
cached), larger ones ``chunk_size`` at a time with backpressure from the client.
A file that shrinks while it is being sent ends the stream with
``StreamEnd(StaticFileError)`` (the client sees the connection close before the
promised ``Content-Length``); one that changes between the ``stat`` and the
``open`` is looked up again. The ``lstat`` of each name of the path, and of the
``.gz`` sidecar, run on the event loop: they read the kernel's inode cache and
do not wait on the disk in practice.

Every answer carries ``Date``. Not done: directory listings,
``multipart/byteranges``, compression other than gzip.
"""

from __future__ import annotations

import functools
import gzip as gziplib
import inspect
import logging
import mimetypes
import os
import stat
import time
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote, unquote

import trio

from pipeline.errors import ConfigError, PipelineError, TrioxyError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.http import Headers, RequestHead, ResponseHead

from ._static_cache import (
    FileCache,
    FileChanged,
    Representation,
    Validator,
    open_checked,
    read_whole,
    validator,
)
from ._static_http import UNSATISFIABLE, accepts_gzip, etag_matches, http_date, parse_range
from .headers import remember_request

__all__ = ["ServeStatic", "StaticFileError"]

log = logging.getLogger("trioxy.static")

MiB: Final = 1 << 20
KiB: Final = 1 << 10

#: Types that are compressed, besides ``text/*``.
COMPRESSIBLE_TYPES: Final = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/manifest+json",
        "application/wasm",
        "application/xhtml+xml",
        "application/xml",
        "image/svg+xml",
    }
)
#: Types that get ``; charset=utf-8``, besides ``text/*``.
CHARSET_TYPES: Final = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/manifest+json",
        "application/xhtml+xml",
        "application/xml",
        "image/svg+xml",
    }
)
#: Extensions missing from (or wrong in) Python's built-in table.
EXTRA_TYPES: Final[Mapping[str, str]] = {
    ".avif": "image/avif",
    ".md": "text/markdown",
    ".mjs": "application/javascript",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
#: A file such as ``x.tar.gz`` is served as what it is, a compressed file.
_ENCODED_TYPES: Final[Mapping[str, str]] = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
}
#: RFC 9110's reason phrases where Python's differ.
_REASONS: Final[Mapping[int, str]] = {416: "Range Not Satisfiable"}
_GZIP_LEVEL: Final = 6
_RETRIES: Final = 3
_ALLOW: Final = [("Allow", "GET, HEAD")]
_REQUEST_FIELDS: Final = frozenset(
    {
        "accept-encoding",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "range",
    }
)


class _Clock:
    """``Date`` values, formatted once a second (RFC 9110 6.6.1: an origin server
    with a clock sends ``Date``)."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second = second
            self.text = formatdate(second, usegmt=True)
        return self.text


_clock = _Clock()


class StaticFileError(TrioxyError):
    """A file could not be sent whole: it shrank, or reading it failed, after the
    response head had gone out. Carried by ``StreamEnd(error)``."""

    status = 500


class _Refused(Exception):
    """The request gets an error status instead of a file."""

    def __init__(self, status: int, extra: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.extra = extra or []


def _compress(data: bytes) -> bytes:
    # mtime=0: the same file always compresses to the same bytes.
    return gziplib.compress(data, _GZIP_LEVEL, mtime=0)


def _positive_int(name: str, value: object, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {'at least 0' if zero else 'positive'}, got {value}")
    return value


class _Site:
    """What every request of one ``serve_static(...)`` call shares: the checked
    configuration, the content-type table and the cache."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        index: Sequence[str],
        cache_size: int,
        max_entry_size: int,
        gzip: bool,
        chunk_size: int,
        hidden: bool,
        cache_control: str | None,
        types: Mapping[str, str] | None,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path, got {root!r}")
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise ConfigError(f"root {os.fspath(root)!r} is not a directory")
        self.root = real
        self.root_prefix = real if real.endswith(os.sep) else real + os.sep
        if isinstance(index, str) or not all(isinstance(n, str) for n in index):
            raise TypeError(f"index must be a sequence of file names, got {index!r}")
        for name in index:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"bad index file name {name!r}")
        self.index = tuple(index)
        self.cache = FileCache(
            _positive_int("cache_size", cache_size, zero=True),
            _positive_int("max_entry_size", max_entry_size, zero=True),
        )
        self.gzip = bool(gzip)
        self.chunk_size = _positive_int("chunk_size", chunk_size)
        self.hidden = bool(hidden)
        if cache_control is not None and (
            not isinstance(cache_control, str) or "\r" in cache_control or "\n" in cache_control
        ):
            raise ValueError(f"bad cache_control {cache_control!r}")
        self.cache_control = cache_control
        self.mimetypes = mimetypes.MimeTypes()  # the built-in table only
        for ext, ctype in {**EXTRA_TYPES, **(types or {})}.items():
            if not ext.startswith(".") or "/" not in ctype:
                raise ValueError(f"bad content type {ext!r}: {ctype!r}")
            self.mimetypes.add_type(ctype, ext)

    def content_type(self, path: str) -> tuple[str, bool]:
        """The ``Content-Type`` of ``path`` and whether it is worth compressing."""
        ctype, encoding = self.mimetypes.guess_type(path, strict=False)
        if encoding is not None:
            return _ENCODED_TYPES.get(encoding, "application/octet-stream"), False
        if ctype is None:
            return "application/octet-stream", False
        text = ctype.startswith("text/")
        compressible = text or ctype in COMPRESSIBLE_TYPES
        if text or ctype in CHARSET_TYPES:
            ctype += "; charset=utf-8"
        return ctype, compressible

    def _headers(
        self, ctype: str, mtime: int, etag: str, vary: bool, encoding: str | None = None
    ) -> list[tuple[str, str]]:
        headers = [
            ("Content-Type", ctype),
            ("Last-Modified", formatdate(mtime, usegmt=True)),
            ("ETag", etag),
            ("Accept-Ranges", "bytes"),
        ]
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        if vary:
            headers.append(("Vary", "Accept-Encoding"))
        if self.cache_control is not None:
            headers.append(("Cache-Control", self.cache_control))
        return headers

    def identity(self, path: str, st: os.stat_result, version: Validator) -> Representation:
        """The file itself."""
        ctype, compressible = self.content_type(path)
        compressible = compressible and self.gzip
        mtime = st.st_mtime_ns // 1_000_000_000
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        headers = self._headers(ctype, mtime, etag, compressible)
        return Representation(path, path, version, st.st_size, mtime, etag, headers, compressible)

    def sidecar(
        self, rep: Representation, path: str, st: os.stat_result, version: Validator
    ) -> Representation:
        """``rep``'s precompressed ``.gz`` file at ``path``."""
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}-gz"'
        ctype = rep.headers[0][1]
        headers = self._headers(ctype, rep.mtime, etag, True, "gzip")
        return Representation(
            "gz-file\0" + rep.path, path, version, st.st_size, rep.mtime, etag, headers, False
        )

    def compressed(self, rep: Representation, packed: bytes) -> Representation:
        """``rep`` compressed in memory."""
        etag = rep.etag[:-1] + '-gz"'
        headers = self._headers(rep.headers[0][1], rep.mtime, etag, True, "gzip")
        return Representation(
            "gzip\0" + rep.path,
            rep.path,
            rep.validator,
            len(packed),
            rep.mtime,
            etag,
            headers,
            False,
            packed,
        )


def _request_fields(headers: Headers) -> dict[str, str]:
    """The request fields serve_static reads, found in one pass; repeated list
    fields joined with commas (RFC 9110 5.3)."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname in _REQUEST_FIELDS:
            previous = found.get(lname)
            found[lname] = value if previous is None else f"{previous}, {value}"
    return found


def _url_path(target: str) -> str:
    """The path of a request-target, without its query; an absolute-form target
    (``http://host/p``) gives its path. 400 for any other form."""
    end = target.find("?")
    path = target if end < 0 else target[:end]
    if path.startswith("/"):
        return path
    scheme = path.find("://")
    if scheme > 0:
        start = path.find("/", scheme + 3)
        return "/" if start < 0 else path[start:]
    raise _Refused(400)


def _segments(path: str, hidden: bool) -> list[str]:
    """The names a URL path leads through, below the root (see the module docs)."""
    if "%" in path:
        try:
            path = unquote(path, errors="strict")
        except UnicodeDecodeError:
            raise _Refused(400) from None
    if "\0" in path or "\\" in path:
        raise _Refused(400)
    names: list[str] = []
    for name in path.split("/"):
        if not name or name == ".":
            continue
        if name == "..":
            raise _Refused(400)
        if name[0] == "." and not hidden:
            raise _Refused(404)
        names.append(name)
    return names


def _precondition(fields: dict[str, str], rep: Representation) -> int:
    """RFC 9110 13.2.2, steps 1 to 4: 412, 304, or 0 to go on."""
    if_match = fields.get("if-match")
    if if_match is not None:
        if not etag_matches(if_match, rep.etag, weak=False):
            return 412
    else:
        since = fields.get("if-unmodified-since")
        if since is not None:
            when = http_date(since)
            if when is not None and rep.mtime > when:
                return 412
    if_none_match = fields.get("if-none-match")
    if if_none_match is not None:
        if etag_matches(if_none_match, rep.etag, weak=True):
            return 304
    else:
        since = fields.get("if-modified-since")
        if since is not None:
            when = http_date(since)
            if when is not None and rep.mtime <= when:
                return 304
    return 0


def _if_range_holds(value: str, rep: Representation) -> bool:
    """Whether ``If-Range`` still names the current file (RFC 9110 13.1.5): an
    entity-tag compared strongly, or exactly the ``Last-Modified`` date."""
    value = value.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == rep.etag
    return http_date(value) == rep.mtime


class ServeStatic(Filter):
    """``serve_static(root, index=("index.html",), cache_size=64 MiB,
    max_entry_size=1 MiB, gzip=True, chunk_size=64 KiB, hidden=False,
    cache_control=None, types=None)``: answer each request with a file of
    ``root`` (see the module docs)."""

    name = "serve_static"

    def __init__(
        self,
        root: str | os.PathLike[str],
        index: Sequence[str] = ("index.html",),
        cache_size: int = 64 * MiB,
        max_entry_size: int = 1 * MiB,
        gzip: bool = True,
        chunk_size: int = 64 * KiB,
        hidden: bool = False,
        cache_control: str | None = None,
        types: Mapping[str, str] | None = None,
    ) -> None:
        # One instance per request: the configuration is checked once, by shared().
        self._request: RequestHead | None = None
        self._ended = False

    @classmethod
    def shared(cls, *args: Any, **kwargs: Any) -> _Site:
        # The builder passes the arguments as the script gave them: add the defaults.
        bound = inspect.signature(cls).bind(*args, **kwargs)
        bound.apply_defaults()
        return _Site(**bound.arguments)

    @property
    def site(self) -> _Site:
        site: _Site = self.spec.state
        return site

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        kind = type(event)
        if kind is MessageStart:
            self._request = event.head  # type: ignore[union-attr]
        elif kind is MessageEnd:
            request, self._request = self._request, None
            if request is None:
                return  # not inside a request: nothing to answer
            if not isinstance(request, RequestHead):
                self._ended = True
                error = PipelineError(
                    f"serve_static: expected an HTTP request head, got {type(request).__name__}"
                )
                await self.output(StreamEnd(error))
                return
            await self._answer(request)
        elif kind is StreamEnd:
            self._request = None
            self._ended = True
            await self.output(event)

    # Answering -----------------------------------------------------------------

    async def _answer(self, request: RequestHead) -> None:
        remember_request(self.context, request)  # for response-side filters after this one
        head_only = request.method == "HEAD"
        if not head_only and request.method != "GET":
            await self._refuse(405, head_only, _ALLOW)
            return
        for _ in range(_RETRIES):
            try:
                await self._serve(request, head_only)
                return
            except _Refused as refused:
                await self._refuse(refused.status, head_only, refused.extra)
                return
            except FileChanged:
                continue  # changed between stat and open: look again
        await self._refuse(503, head_only, [("Retry-After", "1")])

    async def _serve(self, request: RequestHead, head_only: bool) -> None:
        site = self.site
        path = _url_path(request.target)
        names = _segments(path, site.hidden)
        real, st = self._locate(site, names, path.endswith("/"), request.query)
        version = validator(st)
        cache = site.cache
        rep = cache.get(real, version) or cache.put(site.identity(real, st, version))

        fields = _request_fields(request.headers) if len(request.headers) else {}
        range_value = None if head_only else fields.get("range")
        chosen = rep
        if rep.compressible and range_value is None:
            accept = fields.get("accept-encoding")
            if accept is not None and accepts_gzip(accept):
                chosen = await self._gzipped(site, rep, st) or rep

        status = _precondition(fields, chosen) if fields else 0
        if status == 304:
            headers = [("Date", _clock.now()), *chosen.headers]
            head = ResponseHead(304, "Not Modified", Headers.from_list(headers))
            await self.output(MessageStart(head))
            await self.output(MessageEnd())
            return
        if status:
            raise _Refused(status)

        start, end, status = 0, chosen.size, 200
        headers = [("Date", _clock.now()), *chosen.headers]
        if range_value is not None:
            if_range = fields.get("if-range")
            if if_range is None or _if_range_holds(if_range, chosen):
                found = parse_range(range_value, chosen.size)
                if found == UNSATISFIABLE:
                    raise _Refused(416, [("Content-Range", f"bytes */{chosen.size}")])
                if found is not None:
                    start, end = found
                    status = 206
                    headers.append(("Content-Range", f"bytes {start}-{end - 1}/{chosen.size}"))
        headers.append(("Content-Length", str(end - start)))
        reason = "OK" if status == 200 else "Partial Content"
        head = ResponseHead(status, reason, Headers.from_list(headers))

        if head_only:
            if chosen.body is None and not _readable(chosen.path):
                raise _Refused(403)
            await self.output(MessageStart(head))
            await self.output(MessageEnd())
            return
        body = chosen.body
        if body is None and chosen.size <= cache.max_entry_size:
            body = await self._read(chosen)
        if body is not None:
            await self.output(MessageStart(head))
            if end > start:
                await self.output(Data(body if end - start == len(body) else body[start:end]))
            await self.output(MessageEnd())
            return
        await self._stream(chosen, head, start, end)

    def _locate(
        self, site: _Site, names: list[str], trailing_slash: bool, query: str
    ) -> tuple[str, os.stat_result]:
        """The real path and ``stat`` of the file a request names (an index file
        for a directory), or :class:`_Refused`."""
        real, st = _resolve(site, site.root, names)
        if stat.S_ISDIR(st.st_mode):
            if not trailing_slash:
                location = "/" + "/".join(quote(n, safe="") for n in names) + "/"
                if query:
                    location += "?" + query
                raise _Refused(301, [("Location", location)])
            for name in site.index:
                try:
                    candidate, found = _resolve(site, real, [name])
                except _Refused:
                    continue
                if stat.S_ISREG(found.st_mode):
                    return candidate, found
            raise _Refused(404)
        if not stat.S_ISREG(st.st_mode) or trailing_slash:
            raise _Refused(404)
        return real, st

    async def _gzipped(
        self, site: _Site, rep: Representation, st: os.stat_result
    ) -> Representation | None:
        """The gzip form of ``rep``: its ``.gz`` sidecar, or compressed in memory
        (small files only, and only if it comes out smaller)."""
        cache = site.cache
        side = rep.path + ".gz"
        try:
            side_st: os.stat_result | None = os.lstat(side)
        except OSError:
            side_st = None
        if (
            side_st is not None
            and stat.S_ISREG(side_st.st_mode)
            and side_st.st_mtime_ns >= st.st_mtime_ns
        ):
            version = validator(side_st) + rep.validator
            found = cache.get("gz-file\0" + rep.path, version)
            return found or cache.put(site.sidecar(rep, side, side_st, version))
        if rep.gzip_useless or rep.size > cache.max_entry_size:
            return None
        found = cache.get("gzip\0" + rep.path, rep.validator)
        if found is not None:
            return found
        body = rep.body if rep.body is not None else await self._read(rep)
        packed = await trio.to_thread.run_sync(_compress, body)
        if len(packed) >= len(body):
            rep.gzip_useless = True
            return None
        return cache.put(site.compressed(rep, packed))

    async def _read(self, rep: Representation) -> bytes:
        """The whole file of ``rep`` (small files), read in a worker thread and
        given to the cache."""
        try:
            body = await trio.to_thread.run_sync(read_whole, rep.path, rep.validator)
        except PermissionError:
            raise _Refused(403) from None
        except FileNotFoundError:
            raise FileChanged(rep.path) from None
        except OSError as exc:
            log.warning("serve_static: cannot read %s: %s", rep.path, exc)
            raise _Refused(500) from None
        self.site.cache.attach(rep, body)
        return body

    async def _stream(self, rep: Representation, head: ResponseHead, start: int, end: int) -> None:
        """Send bytes ``start:end`` of a large file, ``chunk_size`` at a time."""
        try:
            fd = await trio.to_thread.run_sync(open_checked, rep.path, rep.validator)
        except PermissionError:
            raise _Refused(403) from None
        except FileNotFoundError:
            raise FileChanged(rep.path) from None
        except OSError as exc:
            log.warning("serve_static: cannot open %s: %s", rep.path, exc)
            raise _Refused(500) from None
        try:
            await self.output(MessageStart(head))
            chunk_size = self.site.chunk_size
            offset = start
            pread = functools.partial(os.pread, fd)
            while offset < end:
                try:
                    data = await trio.to_thread.run_sync(
                        pread, min(chunk_size, end - offset), offset
                    )
                except OSError as exc:
                    data, failure = b"", f"reading failed: {exc}"
                else:
                    failure = "the file shrank while being sent"
                if not data:
                    log.warning("serve_static: %s: %s", rep.path, failure)
                    self._ended = True
                    await self.output(StreamEnd(StaticFileError(f"{rep.path}: {failure}")))
                    return
                offset += len(data)
                await self.output(Data(data))
            await self.output(MessageEnd())
        finally:
            os.close(fd)

    async def _refuse(
        self, status: int, head_only: bool, extra: list[tuple[str, str]] | None = None
    ) -> None:
        """A short plain-text answer for an error, a redirect, or 416."""
        reason = _REASONS.get(status) or HTTPStatus(status).phrase
        body = f"{status} {reason}\n".encode()
        headers = [
            ("Date", _clock.now()),
            ("Content-Type", "text/plain; charset=utf-8"),
            *(extra or ()),
        ]
        headers.append(("Content-Length", str(len(body))))
        await self.output(MessageStart(ResponseHead(status, reason, Headers.from_list(headers))))
        if not head_only:
            await self.output(Data(body))
        await self.output(MessageEnd())


def _resolve(site: _Site, base: str, names: list[str]) -> tuple[str, os.stat_result]:
    """The real path and ``stat`` of ``names`` below ``base`` (the root or a real
    directory inside it), or :class:`_Refused`.

    Each name is ``lstat``-ed in turn, so a path free of symlinks costs one system
    call a name and nothing for the root's own components (resolved once, at load);
    at the first symlink the rest of the path is resolved with ``realpath`` and
    must land inside the root."""
    path = base
    st: os.stat_result | None = None
    for i, name in enumerate(names):
        path = path + os.sep + name if path != os.sep else os.sep + name
        try:
            st = os.lstat(path)
        except PermissionError:
            raise _Refused(403) from None
        except (OSError, ValueError):
            raise _Refused(404) from None
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(os.path.join(path, *names[i + 1 :]))
            return real, _stat_inside(site, real)
    if st is None:
        return base, _stat_inside(site, base)
    return path, st


def _stat_inside(site: _Site, real: str) -> os.stat_result:
    """``stat`` of a resolved path, which must be the root or below it: 404
    outside (never say what is there), 403 when the process may not look."""
    if real != site.root and not real.startswith(site.root_prefix):
        raise _Refused(404)
    try:
        return os.stat(real)
    except PermissionError:
        raise _Refused(403) from None
    except (OSError, ValueError):
        raise _Refused(404) from None


def _readable(path: str) -> bool:
    """Whether this process may read ``path`` (for ``HEAD``, which does not open it)."""
    if os.access in os.supports_effective_ids:
        return os.access(path, os.R_OK, effective_ids=True)
    return os.access(path, os.R_OK)


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [ServeStatic]
