"""scripts/udp_proxy.py end to end: ``trioxy run`` as a subprocess, a real UDP echo
server, dig through the proxy to dnsmasq, failover and bad settings."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, TRIOXY, run_trioxy
from tests.udp_helpers import (
    dig,
    dnsmasq,
    free_udp_port,
    needs_dns_tools,
    udp_echo_server,
    wait_udp_bound,
)

SCRIPT = ROOT / "scripts" / "udp_proxy.py"


def exchange(port: int, payloads: list[bytes], host: str = "127.0.0.1") -> list[bytes]:
    """Send each payload from one client socket and read as many replies."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        for payload in payloads:
            sock.send(payload)
        return [sock.recv(65535) for _ in payloads]


def test_datagrams_go_through_whole_and_each_client_gets_its_own_replies() -> None:
    with udp_echo_server(prefix=b"echo:") as (up, peers):
        port = free_udp_port()
        env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{up}"}
        with run_trioxy(SCRIPT, env=env) as proxy:
            wait_udp_bound(proxy, port)
            big = bytes(range(256)) * 200  # 51200 bytes: one datagram, not a stream
            assert exchange(port, [b"one", big, b"three"]) == [
                b"echo:one",
                b"echo:" + big,
                b"echo:three",
            ]
            assert exchange(port, [b"another client"]) == [b"echo:another client"]
        assert proxy.returncode == 0, proxy.stderr
        assert "Traceback" not in proxy.stderr
    # One upstream socket per client stream: two source ports at the server.
    assert len(set(peers)) == 2


def test_a_dead_first_upstream_fails_over() -> None:
    dead = free_udp_port()
    with udp_echo_server(prefix=b"live:") as (up, _):
        port = free_udp_port()
        env = {
            "LISTEN": f"127.0.0.1:{port}",
            "UPSTREAMS": f"127.0.0.1:{dead},127.0.0.1:{up}",
        }
        with run_trioxy(SCRIPT, env=env) as proxy:
            wait_udp_bound(proxy, port)
            # Two clients: round-robin starts one of them at the dead upstream.
            assert exchange(port, [b"a"]) == [b"live:a"]
            assert exchange(port, [b"b"]) == [b"live:b"]


def test_a_silent_client_is_forgotten_after_the_idle_timeout() -> None:
    with udp_echo_server() as (up, peers):
        port = free_udp_port()
        env = {
            "LISTEN": f"127.0.0.1:{port}",
            "UPSTREAMS": f"127.0.0.1:{up}",
            "IDLE_TIMEOUT": "0.2",
        }
        with run_trioxy(SCRIPT, env=env) as proxy:
            wait_udp_bound(proxy, port)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.connect(("127.0.0.1", port))
                sock.send(b"before")
                assert sock.recv(100) == b"before"
                time.sleep(1.0)  # well past two idle periods: the stream is over
                sock.send(b"after")
                assert sock.recv(100) == b"after"
    # The same client, two streams: two upstream sockets, two source ports.
    assert len(peers) == 2 and peers[0] != peers[1]


def test_check_shows_the_udp_listener() -> None:
    result = subprocess.run(
        [TRIOXY, "check", str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        "listen udp 127.0.0.1:5300  (idle_timeout=60s, max_peers=10000, queue_size=128)",
        "└── connect_udp(RoundRobin(['127.0.0.1:53']), idle_timeout=60.0)",
    ]


@needs_dns_tools
def test_dig_through_the_proxy_to_dnsmasq(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("10.9.8.7 www.example.test\nfd00::7 www.example.test\n")
    with dnsmasq(hosts) as upstream:
        port = free_udp_port()
        env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{upstream}"}
        with run_trioxy(SCRIPT, env=env) as proxy:
            wait_udp_bound(proxy, port)
            assert dig(port, "+short", "www.example.test", "A").split() == ["10.9.8.7"]
            assert dig(port, "+short", "www.example.test", "AAAA").split() == ["fd00::7"]


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_listener_and_upstream() -> None:
    try:
        port = free_udp_port("::1")
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    with udp_echo_server("::1", prefix=b"v6:") as (up, _):
        env = {"LISTEN": f"[::1]:{port}", "UPSTREAMS": f"[::1]:{up}"}
        with run_trioxy(SCRIPT, env=env) as proxy:
            wait_udp_bound(proxy, port)
            assert exchange(port, [b"x"], host="::1") == [b"v6:x"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPSTREAMS", "127.0.0.1:53,nowhere"),
        ("LISTEN", "nowhere"),
        ("IDLE_TIMEOUT", "-1"),
        ("MAX_PEERS", "0"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(name: str, value: str) -> None:
    with run_trioxy(SCRIPT, env={"LISTEN": "127.0.0.1:0", name: value}) as proxy:
        status = proxy.wait()
    assert status == 2
    lines = proxy.stderr.strip().splitlines()
    assert len(lines) == 1, proxy.stderr
    assert re.search(rf"udp_proxy\.py:\d+: {name}='{re.escape(value)}': ", lines[0]), lines[0]
