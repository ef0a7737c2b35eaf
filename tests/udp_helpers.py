"""Helpers for UDP and DNS end-to-end tests: free UDP ports, waiting for a UDP
socket to be bound, a UDP echo server, dnsmasq as a real DNS upstream, and dig
as a real DNS client. Every process and thread they start is stopped when its
block ends, even when the test fails."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import ROOT, Process, _env, port_of, socket_table

__all__ = [
    "dig",
    "dnsmasq",
    "free_udp_port",
    "is_udp_bound",
    "needs_dns_tools",
    "udp_echo_server",
    "wait_udp_bound",
]

DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)

needs_dns_tools = pytest.mark.skipif(
    shutil.which("dig") is None or DNSMASQ is None,
    reason="dig (bind9-dnsutils) and dnsmasq (dnsmasq-base) are needed",
)


def free_udp_port(host: str = "127.0.0.1", tcp_too: bool = False) -> int:
    """A port free for UDP on ``host`` right now (and for TCP too if asked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
            if not tcp_too:
                return port
            try:
                with socket.socket(family, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def is_udp_bound(port: int) -> bool:
    """Whether a UDP socket of this host is bound to ``port`` (from /proc/net/udp*)."""
    return any(port_of(f[1]) == port for f in socket_table("udp"))


def wait_udp_bound(proc: Process, port: int, timeout: float = 15.0) -> None:
    """Wait until ``proc`` has bound UDP ``port``; fail early if it exits."""
    proc.wait_for(lambda: is_udp_bound(port), f"bound to UDP port {port}", timeout)


@contextmanager
def udp_echo_server(
    host: str = "127.0.0.1", prefix: bytes = b""
) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A UDP server (a thread) answering each datagram with ``prefix + datagram``.
    Yields ``(port, peers)``: ``peers`` lists the source address of each datagram."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.1)
    peers: list[tuple[str, int]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            peers.append(peer[:2])
            sock.sendto(prefix + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], peers
    finally:
        stop.set()
        thread.join()
        sock.close()


@contextmanager
def dnsmasq(hosts: Path, extra: Sequence[str] = ()) -> Iterator[int]:
    """dnsmasq answering from the hosts-style file ``hosts`` only (no recursion),
    on a free loopback port (UDP and TCP); yields the port."""
    assert DNSMASQ is not None
    port = free_udp_port(tcp_too=True)
    argv = [
        DNSMASQ,
        "--no-daemon",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        f"--addn-hosts={hosts}",
        "--log-queries",
        "--pid-file=",
        "--user=root",
        "--local-ttl=300",
        *extra,
    ]
    proc = Process(argv, _env(None), ROOT)
    try:
        wait_udp_bound(proc, port)
        yield port
    finally:
        proc.close()


def dig(port: int, *args: str, server: str = "127.0.0.1") -> str:
    """Run ``dig @server -p port ARGS`` (3 s timeout, 1 try) and return its output."""
    result = subprocess.run(
        ["dig", f"@{server}", "-p", str(port), "+time=3", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout + result.stderr
