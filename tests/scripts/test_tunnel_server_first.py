"""A protocol whose server speaks first (SMTP, MySQL) through the TLS tunnel's
``FORWARD``: ``scripts/tunnel_client.py`` opens the stream (its SOCKS request to
``scripts/tunnel_server.py``) as soon as the client connects, so the client
reads the server's greeting without sending anything first; then bytes flow
both ways as usual. Both scripts run with ``trioxy run``, with test certificates.
"""

from __future__ import annotations

import socket

from tests.helpers import receive_exactly, threaded_server
from tests.scripts.test_tunnel import tunnel
from tests.tls_helpers import Certs, certs

__all__ = ["certs"]  # the module-scoped fixture, used by name

BANNER = b"220 far.test ESMTP ready\r\n"


def greet_then_echo(conn: socket.socket) -> None:
    """The far server: its greeting at once, then an echo until the client's end."""
    conn.sendall(BANNER)
    while data := conn.recv(65536):
        conn.sendall(data)


def test_a_forward_client_hears_a_server_that_speaks_first(certs: Certs) -> None:
    with threaded_server(greet_then_echo) as far:
        with tunnel(certs, [f"127.0.0.1:{far}"], links=1) as t:
            for _ in range(2):  # the second stream rides the link the first made
                with socket.create_connection(("127.0.0.1", t.forwards[0]), timeout=15) as client:
                    assert receive_exactly(client, len(BANNER)) == BANNER  # nothing sent
                    client.sendall(b"EHLO near.test\r\n")
                    assert receive_exactly(client, 16) == b"EHLO near.test\r\n"
                    client.shutdown(socket.SHUT_WR)
                    assert client.recv(100) == b""
