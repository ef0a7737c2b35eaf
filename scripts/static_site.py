"""A static web server: every request to ``LISTEN`` is answered with a file of
``ROOT`` by ``serve_static`` -- content types, ETag/Last-Modified and 304s, byte
ranges, HEAD, gzip, index files and ``/dir`` -> ``/dir/`` redirects, an in-memory
cache that follows changes on disk, and no byte from outside the root.

Run it::

    trioxy run scripts/static_site.py                    # serves examples/www
    ROOT=/srv/www LISTEN=0.0.0.0:80 trioxy run scripts/static_site.py

then::

    curl -i http://127.0.0.1:8080/
    curl -r 0-99 http://127.0.0.1:8080/lines.txt
    curl --compressed -I http://127.0.0.1:8080/lines.txt

Environment variables (a bad value stops the script at load with one line
``static_site.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``          where to listen, ``host:port``, ``[v6]:port`` or a bare port;
                    default ``127.0.0.1:8080``
``ROOT``            the directory served; default the repository's
                    ``examples/www`` (a relative path is relative to the current
                    directory); it must exist
``CACHE_CONTROL``   a ``Cache-Control`` value for every file, or ``none``;
                    default ``none``
``MAX_CONNECTIONS`` connections served at once (more wait in the listen backlog),
                    or ``none``; default ``none``
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import Proxy
from pipeline.settings import address, count, optional, setting

DEMO_SITE = Path(__file__).resolve().parent.parent / "examples" / "www"


def directory(text: str) -> Path:
    """An existing directory."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ValueError("no such directory" if not path.exists() else "not a directory")
    return path


def header_value(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise ValueError("a header value cannot hold line breaks")
    return text


LISTEN = setting("LISTEN", "127.0.0.1:8080", address)
ROOT = setting("ROOT", str(DEMO_SITE), directory)
CACHE_CONTROL = setting("CACHE_CONTROL", "none", optional(header_value))
MAX_CONNECTIONS = setting("MAX_CONNECTIONS", "none", optional(count))

proxy = Proxy()
proxy.listen(LISTEN, max_connections=MAX_CONNECTIONS).demux_http().to(
    lambda p: p.serve_static(ROOT, cache_control=CACHE_CONTROL)
)

print(f"trioxy static site: serving {ROOT} on http://{LISTEN}/", file=sys.stderr)
