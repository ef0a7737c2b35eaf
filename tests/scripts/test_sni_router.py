"""scripts/sni_router.py end to end: ``trioxy run`` as a subprocess in front of
real TLS servers (``openssl s_server``, each with a certificate for its own
names only), reached with curl and ``openssl s_client``. Which upstream answered
shows in the certificate the client received: TLS passes through the router
untouched, so the client verifies the upstream's certificate itself."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from tests.helpers import ROOT, Process, free_port, run_trioxy
from tests.tls_helpers import OPENSSL, Certs, certs, s_server

__all__ = ["certs"]  # the fixture, imported for pytest

SCRIPT = ROOT / "scripts" / "sni_router.py"
NO_ROUTE = "no route for"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@contextmanager
def upstreams(certs: Certs, *names: str) -> Iterator[dict[str, str]]:
    """An ``s_server`` per name, with a certificate for that name only; yields
    ``{name: "127.0.0.1:PORT"}``."""
    with ExitStack() as stack:
        found = {}
        for name in names:
            port = stack.enter_context(s_server(*certs.server(name)))
            found[name] = f"127.0.0.1:{port}"
        yield found


@contextmanager
def router(**env: str) -> Iterator[tuple[int, Process]]:
    port = free_port()
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{port}", **env}) as proc:
        proc.wait_listening(port)
        yield port, proc


def curl(port: int, name: str, ca: str) -> subprocess.CompletedProcess[str]:
    """``GET https://NAME:PORT/`` with NAME resolved to the router, verified against ``ca``."""
    argv = ["curl", "--silent", "--show-error", "--max-time", "20", "--cacert", ca]
    argv += ["--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/"]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def peer_subject(port: int, name: str | None) -> str | None:
    """The CN of the certificate ``openssl s_client`` receives asking for
    ``name`` (``None``: no SNI at all); ``None`` if no handshake was made."""
    server_name = ["-servername", name] if name else ["-noservername"]
    done = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", *server_name],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    found = re.search(r"^subject=.*CN ?= ?([^,\n]+)", done.stdout, re.M)
    return found.group(1).strip() if found else None


def warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]


def no_route_lines(proc: Process) -> list[str]:
    return [line for line in proc.stderr.splitlines() if NO_ROUTE in line]


def test_each_name_reaches_its_own_upstream(certs: Certs) -> None:
    with upstreams(certs, "a.example", "b.example") as ups:
        routes = ",".join(f"{name}={address}" for name, address in ups.items())
        with router(ROUTES=routes) as (port, proc):
            a = curl(port, "a.example", certs.ca)
            b = curl(port, "b.example", certs.ca)
            upper = peer_subject(port, "B.EXAMPLE")
            log = proc.stderr
    # curl verified each upstream's certificate for the name it asked for.
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "s_server" in a.stdout and "s_server" in b.stdout  # s_server -www's status page
    assert upper == "b.example"
    assert "Traceback" not in log and "WARNING" not in log


def test_wildcards_and_exact_names(certs: Certs) -> None:
    with upstreams(certs, "*.w.example", "exact.w.example", "*.x.w.example") as ups:
        routes = ",".join(f"{name}={address}" for name, address in ups.items())
        with router(ROUTES=routes) as (port, proc):
            subjects = {
                name: peer_subject(port, name)
                for name in (
                    "one.w.example",
                    "deep.er.w.example",
                    "exact.w.example",
                    "y.x.w.example",
                    "w.example",
                )
            }
            lines = no_route_lines(proc)
    assert subjects == {
        "one.w.example": "*.w.example",
        "deep.er.w.example": "*.w.example",  # any depth
        "exact.w.example": "exact.w.example",  # an exact name beats a wildcard
        "y.x.w.example": "*.x.w.example",  # the longer wildcard wins
        "w.example": None,  # a wildcard does not cover its own domain
    }
    assert len(lines) == 1 and "server name 'w.example'" in lines[0]


def test_unrouted_connections_go_to_the_default(certs: Certs) -> None:
    with upstreams(certs, "a.example", "fallback.example") as ups:
        env = {"ROUTES": f"a.example={ups['a.example']}", "DEFAULT": ups["fallback.example"]}
        with router(**env) as (port, proc):
            unknown = peer_subject(port, "unknown.example")
            no_sni = peer_subject(port, None)
            routed = peer_subject(port, "a.example")
            # Not TLS at all: relayed to the default too, which answers as a TLS server would.
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                sock.recv(100)
            log = proc.stderr
    assert (unknown, no_sni, routed) == ("fallback.example", "fallback.example", "a.example")
    assert NO_ROUTE not in log


def test_no_route_and_no_default_closes_with_one_line_and_serves_on(certs: Certs) -> None:
    with (
        upstreams(certs, "a.example") as ups,
        router(ROUTES=f"a.example={ups['a.example']}") as (
            port,
            proc,
        ),
    ):
        assert peer_subject(port, "other.example") is None
        proc.wait_for(lambda: len(no_route_lines(proc)) == 1, "the failure logged")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass  # closed with our bytes unread: a reset is a close too
        proc.wait_for(lambda: len(no_route_lines(proc)) == 2, "the second failure logged")
        routed = curl(port, "a.example", certs.ca)
        lines = no_route_lines(proc)
        log = proc.stderr
    assert routed.returncode == 0, routed.stderr
    assert "server name 'other.example' and no DEFAULT" in lines[0]
    assert "without a server name and no DEFAULT (no SNI, or not TLS)" in lines[1]
    assert len(lines) == 2 and len(warnings(log)) == 2, log  # one line each


def test_an_upstream_that_does_not_answer_is_one_line(certs: Certs) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with router(ROUTES=f"a.example={dead}") as (port, proc):
        assert peer_subject(port, "a.example") is None
        proc.wait_for(lambda: "no upstream answered" in proc.stderr, "the failure logged")
        log = proc.stderr
    [line] = warnings(log)
    assert dead in line and "refused" in line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DEFAULT='none': nothing to route: set ROUTES, DEFAULT or both"),
        ({"ROUTES": "a.example"}, "ROUTES='a.example': expected NAME=host:port"),
        ({"ROUTES": "a..example=127.0.0.1:1"}, "bad server name 'a..example'"),
        ({"ROUTES": "*=127.0.0.1:1"}, "bad server name '*'"),
        ({"ROUTES": "a.example=9001"}, "an upstream needs a host"),
        ({"ROUTES": "a.example=127.0.0.1:1,A.example=127.0.0.1:2"}, "'a.example' is routed twice"),
        ({"DEFAULT": "127.0.0.1:x"}, "DEFAULT='127.0.0.1:x': "),
        ({"DEFAULT": "127.0.0.1:1", "IDLE_TIMEOUT": "-1"}, "IDLE_TIMEOUT='-1': "),
    ],
)
def test_bad_settings_stop_at_load_with_one_line(env: dict[str, str], message: str) -> None:
    with run_trioxy(SCRIPT, env={"LISTEN": f"127.0.0.1:{free_port()}", **env}) as proc:
        status = proc.wait(30)
    lines = proc.stderr.strip().splitlines()
    assert status == 2
    assert len(lines) == 1, proc.stderr
    assert re.search(r"sni_router\.py:\d+: ", lines[0]) and message in lines[0], lines[0]
