"""Hello, world over HTTP: trioxy as a tiny web server.

Every request on ``LISTEN``, whatever its method and path, is answered ``200 OK``
with the body ``Hello, world`` and a newline (``text/plain; charset=utf-8``,
``Content-Length: 13``). ``demux_http`` reads the requests (keep-alive and
pipelining included) and gives each its own sub-pipeline, where ``serve_http``
calls the handler below; a ``HEAD`` request gets the same head and no body.

Run it::

    trioxy run scripts/hello.py
    LISTEN=0.0.0.0:8080 trioxy run scripts/hello.py

then::

    curl -i http://127.0.0.1:8000/

Environment variables (a bad value stops the script at load with one line
``hello.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``   where to listen, ``host:port``, ``[v6]:port`` or a bare port (every
             IPv4 address); default ``127.0.0.1:8000``
"""

from __future__ import annotations

from filters.serve_http import Request
from pipeline import Context, Proxy
from pipeline.settings import address, setting

LISTEN = setting("LISTEN", "127.0.0.1:8000", address)


def hello(ctx: Context, request: Request) -> str:
    return "Hello, world\n"


proxy = Proxy()
proxy.listen(LISTEN).demux_http().to(lambda p: p.serve_http(hello))
