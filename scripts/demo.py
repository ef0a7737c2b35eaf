"""The default demo (`make run`): an echo service and a TCP proxy in front of it.

Two listeners in one script, no outside service needed:

* an echo service on ``ECHO_LISTEN``: a listener with an empty pipeline outputs
  its input, so every byte a client sends comes straight back;
* an L4 TCP proxy on ``LISTEN`` forwarding to the echo service with ``connect``
  (alone in its pipeline, so it relays with the kernel's zero-copy splice).

Run it::

    make run                          # or: trioxy run scripts/demo.py

then, in another terminal::

    printf 'hello, trioxy\\n' | nc -q1 127.0.0.1 8000     # or: telnet 127.0.0.1 8000
    curl --max-time 2 telnet://127.0.0.1:8000 <<< 'hello'

Environment variables:

``LISTEN``       where the proxy listens, default ``127.0.0.1:8000``
``ECHO_LISTEN``  where the echo service listens, default ``127.0.0.1:7000``
"""

import sys

from pipeline import Proxy
from pipeline.settings import address, setting

LISTEN = setting("LISTEN", "127.0.0.1:8000", address)
ECHO_LISTEN = setting("ECHO_LISTEN", "127.0.0.1:7000", address)

proxy = Proxy()

# The echo service: no filter, so what comes in goes out.
proxy.listen(ECHO_LISTEN)

# The proxy: forward every connection to the echo service.
proxy.listen(LISTEN).connect(ECHO_LISTEN)

HOST, _, PORT = LISTEN.rpartition(":")
print(
    f"trioxy demo: TCP proxy on {LISTEN} -> echo service on {ECHO_LISTEN}\n"
    f"  try:  printf 'hello\\n' | nc -q1 {HOST} {PORT}\n"
    f"        python3 -c \"import socket; s = socket.create_connection(('{HOST}', {PORT}));"
    f" s.sendall(b'hello'); print(s.recv(99))\"\n"
    "  stop: Ctrl-C",
    file=sys.stderr,
)
