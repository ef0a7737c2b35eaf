"""examples/tunnel runs as its README says: network namespaces, the two tunnel
ends, a web server only network B reaches, curl in network A. Needs root and
``ip netns``; skips, saying why, without them. Whatever happens, the namespaces
the run made are gone afterwards (and what still ran in them is stopped)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import ROOT

PROBE_NS = f"trioxy-probe-{os.getpid()}"


def netns_unavailable() -> str | None:
    """Why this machine cannot run the example, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    if shutil.which("curl") is None:
        return "needs curl"
    added = subprocess.run(["ip", "netns", "add", PROBE_NS], capture_output=True, text=True)
    if added.returncode:
        return f"'ip netns add' does not work here: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", PROBE_NS], capture_output=True)
    return None


def namespaces(prefix: str) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(prefix)]


def remove_namespaces(prefix: str) -> None:
    """Stop what runs in the namespaces named ``prefix...`` (all started by the
    example this test ran), then delete them."""
    for ns in namespaces(prefix):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def prefix() -> Iterator[str]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"examples/tunnel {reason}")
    name = f"tnltest{os.getpid() % 100000}"
    try:
        yield name
    finally:
        remove_namespaces(name)


def test_the_example_reaches_network_b_only_through_the_tunnel(prefix: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "examples/tunnel/run.py"],
        cwd=ROOT,
        env={**os.environ, "NS_PREFIX": prefix},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the example cleans up on SIGTERM
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"the example did not finish:\n{stdout}\n{stderr}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"{stdout}\n{stderr}"
    # The example removed its namespaces itself.
    assert namespaces(prefix) == []
    sections = stdout.split("\n\n")
    direct, forward, socks, refused, restart = (s.splitlines() for s in sections[1:6])
    page = "    hello from network B's web server"
    assert direct[1].startswith("    curl failed (7)"), direct
    assert forward[1:] == [page]
    assert socks[1:] == [page]
    assert refused[1].startswith("    curl failed (97)") and refused[1].endswith("(2)"), refused
    assert restart[1].startswith("    stopped: curl failed"), restart
    assert restart[2] == "    started: hello from network B's web server", restart
    assert "Traceback" not in stderr
