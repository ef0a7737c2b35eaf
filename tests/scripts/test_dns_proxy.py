"""scripts/dns_proxy.py end to end: ``trioxy run`` as a subprocess, dig as the client
and dnsmasq as the upstream, over UDP and TCP on one port."""

from __future__ import annotations

import re
import socket
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from dnslib import RCODE, DNSRecord

from tests.helpers import ROOT, run_trioxy
from tests.udp_helpers import dig, dnsmasq, free_udp_port, needs_dns_tools

SCRIPT = ROOT / "scripts" / "dns_proxy.py"
AUTH = [
    "--auth-server=ns.test,127.0.0.1",
    "--auth-zone=test",
    "--auth-soa=1,hostmaster.test,1200,120,604800,30",
    "--auth-ttl=300",
]


@pytest.fixture
def upstream_hosts(tmp_path: Path) -> Path:
    hosts = tmp_path / "upstream.hosts"
    lines = [f"10.1.0.{i} many.test" for i in range(1, 101)]
    lines += ["10.0.0.1 a.test", "10.0.0.2 b.test"]
    hosts.write_text("\n".join(lines) + "\n")
    return hosts


def listen_env(**env: str) -> tuple[int, dict[str, str]]:
    port = free_udp_port(tcp_too=True)
    return port, {"LISTEN": f"127.0.0.1:{port}", **env}


def answers(output: str) -> list[list[str]]:
    """dig's answer section, each record split in ``name ttl class type data``."""
    parts = output.split(";; ANSWER SECTION:\n", 1)
    if len(parts) == 1:
        return []
    return [line.split() for line in parts[1].split("\n\n", 1)[0].splitlines() if line]


def status(output: str) -> str:
    found = re.search(r"status: (\w+)", output)
    assert found, output
    return found.group(1)


def flags(output: str) -> list[str]:
    found = re.search(r";; flags: ([a-z ]+);", output)
    assert found, output
    return found.group(1).split()


@needs_dns_tools
def test_forwarding_over_udp_and_tcp_with_a_counting_down_cache(upstream_hosts: Path) -> None:
    with dnsmasq(upstream_hosts, AUTH) as up:
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{up}")
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            first = answers(dig(port, "a.test"))
            assert [r[-1] for r in first] == ["10.0.0.1"]
            time.sleep(1.1)
            second = answers(dig(port, "a.test"))
            assert [r[-1] for r in second] == ["10.0.0.1"]
            assert int(second[0][1]) < int(first[0][1])  # served from the cache
            assert [r[-1] for r in answers(dig(port, "+tcp", "b.test"))] == ["10.0.0.2"]
        assert proxy.returncode == 0, proxy.stderr
        assert "Traceback" not in proxy.stderr


@needs_dns_tools
def test_cached_answers_outlive_the_upstream_and_the_rest_is_servfail(
    upstream_hosts: Path,
) -> None:
    with ExitStack() as upstream_alive:
        up = upstream_alive.enter_context(dnsmasq(upstream_hosts, AUTH))
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{up}", TIMEOUT="0.5")
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            positive = dig(port, "a.test")
            nxdomain = dig(port, "missing.test")
            nodata = dig(port, "a.test", "MX")
            assert status(nxdomain) == "NXDOMAIN" and "IN\tSOA" in nxdomain
            assert status(nodata) == "NOERROR" and answers(nodata) == []
            upstream_alive.close()  # dnsmasq stops: only the cache can answer now
            assert answers(dig(port, "a.test"))[0][-1] == answers(positive)[0][-1]
            assert status(dig(port, "missing.test")) == "NXDOMAIN"  # RFC 2308 caching
            cached_nodata = dig(port, "a.test", "MX")
            assert status(cached_nodata) == "NOERROR" and answers(cached_nodata) == []
            assert status(dig(port, "b.test")) == "SERVFAIL"  # never cached
    assert "no DNS upstream answered" in proxy.stderr


@needs_dns_tools
def test_large_answers_are_truncated_for_udp_and_whole_over_tcp(upstream_hosts: Path) -> None:
    with dnsmasq(upstream_hosts, AUTH) as up:
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{up}")
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            cut = dig(port, "+ignore", "+noedns", "many.test")
            assert "tc" in flags(cut) and answers(cut) == []
            whole = dig(port, "+noedns", "many.test")
            assert "Truncated, retrying in TCP mode" in whole
            assert sorted(r[-1] for r in answers(whole)) == sorted(
                f"10.1.0.{i}" for i in range(1, 101)
            )
            # With EDNS0 (dig offers 1232 bytes) the answer still does not fit.
            assert "tc" in flags(dig(port, "+ignore", "many.test"))


@needs_dns_tools
def test_many_outstanding_queries_from_one_socket_all_get_their_answer(
    upstream_hosts: Path,
) -> None:
    names = ["a.test", "b.test", "missing.test", "many.test"]
    with dnsmasq(upstream_hosts, AUTH) as up:
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{up}", CACHE_SIZE="0")
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            queries = {}
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                sock.connect(("127.0.0.1", port))
                for i in range(100):  # all sent before any answer is read
                    query = DNSRecord.question(names[i % len(names)])
                    query.header.id = i
                    queries[i] = query
                    sock.send(bytes(query.pack()))
                replies = [DNSRecord.parse(sock.recv(65535)) for _ in range(100)]
    assert sorted(r.header.id for r in replies) == list(range(100))
    for reply in replies:
        assert reply.q == queries[reply.header.id].q
        expected = {"missing.test.": RCODE.NXDOMAIN}.get(str(reply.q.qname), RCODE.NOERROR)
        assert reply.header.rcode == expected


@needs_dns_tools
def test_hosts_file_overrides_with_ptr(upstream_hosts: Path, tmp_path: Path) -> None:
    local = tmp_path / "local.hosts"
    local.write_text("192.0.2.1 a.test router.lan\nfd00::1 router.lan\n")
    with dnsmasq(upstream_hosts, AUTH) as up:
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{up}", HOSTS=str(local))
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            assert [r[-1] for r in answers(dig(port, "a.test"))] == ["192.0.2.1"]
            assert [r[-1] for r in answers(dig(port, "router.lan", "AAAA"))] == ["fd00::1"]
            assert [r[-1] for r in answers(dig(port, "-x", "192.0.2.1"))] == ["a.test."]
            assert [r[-1] for r in answers(dig(port, "b.test"))] == ["10.0.0.2"]


@needs_dns_tools
def test_views_by_client_subnet(upstream_hosts: Path, tmp_path: Path) -> None:
    (tmp_path / "lab.hosts").write_text("198.51.100.7 a.test\n")
    views = tmp_path / "views"
    views.write_text("# the lab machine sees its own a.test\n127.0.0.2/32 hosts=lab.hosts\n")
    with dnsmasq(upstream_hosts, AUTH) as up:
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{up}", VIEWS=str(views))
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            lab = answers(dig(port, "-b", "127.0.0.2", "a.test"))
            other = answers(dig(port, "-b", "127.0.0.1", "a.test"))
    assert [r[-1] for r in lab] == ["198.51.100.7"]
    assert [r[-1] for r in other] == ["10.0.0.1"]


@needs_dns_tools
def test_a_dead_upstream_fails_over(upstream_hosts: Path) -> None:
    with dnsmasq(upstream_hosts, AUTH) as up:
        dead = free_udp_port()
        port, env = listen_env(UPSTREAMS=f"127.0.0.1:{dead},127.0.0.1:{up}", CACHE_SIZE="0")
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            for _ in range(2):  # round-robin: one of them starts at the dead one
                assert [r[-1] for r in answers(dig(port, "a.test"))] == ["10.0.0.1"]


@needs_dns_tools
def test_all_upstreams_down_is_servfail_within_the_timeout() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        dead = free_udp_port()
        upstreams = f"127.0.0.1:{dead},127.0.0.1:{silent.getsockname()[1]}"
        port, env = listen_env(UPSTREAMS=upstreams, TIMEOUT="0.5")
        with run_trioxy(SCRIPT, env=env) as proxy:
            proxy.wait_listening(port)
            # dig waits 3 s (+time=3, one try): the SERVFAIL must come before that.
            assert status(dig(port, "a.test")) == "SERVFAIL"
            assert status(dig(port, "+tcp", "a.test")) == "SERVFAIL"
    finally:
        silent.close()
    lines = [line for line in proxy.stderr.splitlines() if "no DNS upstream answered" in line]
    assert len(lines) == 2, proxy.stderr
    assert "refused" in lines[0] and "no answer within 0.5s" in lines[0]


def test_malformed_queries_get_formerr() -> None:
    port, env = listen_env(UPSTREAMS="127.0.0.1:9")
    garbage = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc"
    with run_trioxy(SCRIPT, env=env) as proxy:
        proxy.wait_listening(port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(garbage, ("127.0.0.1", port))
            udp_answer = DNSRecord.parse(sock.recv(65535))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
            tcp.sendall(len(garbage).to_bytes(2, "big") + garbage)
            data = b""
            while chunk := tcp.recv(65535):  # the answer, then the server closes
                data += chunk
        tcp_answer = DNSRecord.parse(data[2:])
    for answer in (udp_answer, tcp_answer):
        assert answer.header.id == 0xBEEF and answer.header.rcode == RCODE.FORMERR
    assert "Traceback" not in proxy.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPSTREAMS", "127.0.0.1:53,nowhere"),
        ("LISTEN", "nowhere"),
        ("HOSTS", "/nonexistent/hosts"),
        ("VIEWS", "/nonexistent/views"),
        ("CACHE_SIZE", "-1"),
        ("TIMEOUT", "0"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(name: str, value: str) -> None:
    with run_trioxy(SCRIPT, env={"LISTEN": "127.0.0.1:0", name: value}) as proxy:
        status_code = proxy.wait()
    assert status_code == 2
    lines = proxy.stderr.strip().splitlines()
    assert len(lines) == 1, proxy.stderr
    assert re.search(rf"dns_proxy\.py:\d+: {name}='{re.escape(value)}': ", lines[0]), lines[0]
