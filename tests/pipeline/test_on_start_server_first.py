"""A protocol whose server speaks first (SMTP, MySQL, an SSH banner) through
``trioxy run``: an event pipeline ending in ``connect`` to a fixed target dials
at accept, so the client hears the server's greeting before it sends anything;
the zero-copy path (a lone ``connect``) still makes exactly one upstream
connection per client.

The upstream is a threaded TCP server that sends ``220 ready`` at accept and
then echoes; it serves one connection at a time, so a second upstream
connection made for one client would show (it would wait unserved, and be
counted in the socket table).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import (
    free_port,
    port_of,
    receive_exactly,
    run_trioxy,
    socket_table,
    threaded_server,
)

BANNER = b"220 ready\r\n"

SCRIPT = """
import os
from pipeline import Proxy

UPSTREAM = os.environ["UPSTREAM"]
proxy = Proxy()
proxy.listen(os.environ["DUMPED"]).dump().connect(UPSTREAM)
proxy.listen(os.environ["HANDLED"]).handle_data(lambda ctx, data: None).connect(UPSTREAM)
proxy.listen(os.environ["RELAYED"]).connect(UPSTREAM)
"""


class Upstream:
    """The server that speaks first; ``accepted`` counts its connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0

    def handle(self, conn: socket.socket) -> None:
        self.accepted += 1
        conn.sendall(BANNER)
        while data := conn.recv(65536):
            conn.sendall(data)


@contextmanager
def proxy_to_banner_server(tmp_path: Path) -> Iterator[tuple[Upstream, dict[str, int]]]:
    """The upstream, and ``trioxy run`` of :data:`SCRIPT` in front of it (its
    three listeners' ports by name); both stopped on the way out."""
    upstream = Upstream()
    script = tmp_path / "server_first.py"
    script.write_text(SCRIPT)
    with threaded_server(upstream.handle) as port:
        upstream.port = port
        ports = {name: free_port() for name in ("DUMPED", "HANDLED", "RELAYED")}
        env = {name: f"127.0.0.1:{p}" for name, p in ports.items()}
        env["UPSTREAM"] = f"127.0.0.1:{port}"
        with run_trioxy(script, env) as proxy:
            for p in ports.values():
                proxy.wait_listening(p)
            yield upstream, ports
        assert "Traceback" not in proxy.stderr, proxy.stderr


def connections_to(port: int) -> int:
    """Established TCP connections of this host to ``port`` (the proxy's ends)."""
    return sum(f[3] == "01" and port_of(f[2]) == port for f in socket_table("tcp"))


@pytest.mark.parametrize("listener", ["DUMPED", "HANDLED", "RELAYED"])
def test_the_client_hears_the_server_first_then_an_echo(tmp_path: Path, listener: str) -> None:
    with proxy_to_banner_server(tmp_path) as (upstream, ports):
        for n in range(1, 4):
            with socket.create_connection(("127.0.0.1", ports[listener]), timeout=10) as client:
                # Nothing sent yet: before on_start, this waited forever (here: 10 s).
                assert receive_exactly(client, len(BANNER)) == BANNER
                client.sendall(b"EHLO client\r\n")
                assert receive_exactly(client, 13) == b"EHLO client\r\n"
                # One upstream connection for this client, and only one.
                assert upstream.accepted == n
                assert connections_to(upstream.port) == 1
                client.shutdown(socket.SHUT_WR)
                assert client.recv(100) == b""  # the upstream's end comes through
