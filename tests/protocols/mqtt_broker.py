"""A real mosquitto broker for tests, and a raw MQTT client made of our codec.

``with mosquitto() as port:`` runs a real mosquitto on a free loopback port
(:func:`tests.helpers.mosquitto`, re-exported) and stops it when the block ends,
even on failure.
:class:`RawClient` speaks MQTT over a plain socket with
:func:`protocols.mqtt.encode` and :class:`protocols.mqtt.Decoder`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from protocols.mqtt import Decoder, Packet, encode
from tests.helpers import MOSQUITTO, mosquitto

__all__ = ["RawClient", "mosquitto", "needs_mosquitto", "raw_client"]

needs_mosquitto = pytest.mark.skipif(
    not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (apt-get install mosquitto)"
)


class RawClient:
    """An MQTT client of our own bytes: send packets, read the server's."""

    def __init__(self, port: int, version: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.version = version
        self.decoder = Decoder(version=version)
        self.pending: list[Packet] = []

    def send(self, *packets: Packet) -> None:
        self.sock.sendall(b"".join(encode(p, self.version) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Packet:
        """The next packet from the server (``EOFError`` if it closed first)."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)

    def read_to_eof(self) -> bytes:
        """Everything the server sends until it closes (packets still pending are
        re-encoded first)."""
        out = b"".join(encode(p, self.version) for p in self.pending)
        self.pending.clear()
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return out
            if not data:
                return out
            out += data

    def close(self) -> None:
        self.sock.close()


@contextmanager
def raw_client(port: int, version: int) -> Iterator[RawClient]:
    client = RawClient(port, version)
    try:
        yield client
    finally:
        client.close()
