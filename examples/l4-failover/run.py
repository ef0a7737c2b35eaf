"""L4 load balancing with failover, on one machine.

Starts two web servers (``python -m http.server``, each serving a page naming
itself), puts ``scripts/tcp_proxy.py`` in front of them, and shows with curl:

1. requests alternating between backend A and backend B (round-robin);
2. backend A stopped: every request now lands on B (failover; the client never
   notices). After 3 failed connects in a row A is taken out for a while
   (passive health: one warning line), so connections stop trying it first;
3. both stopped: curl fails at once (the proxy closes the client), and the proxy
   logs one warning line saying which backends failed and why.

Run it from the repository root (after ``make test`` or ``make run`` set up .venv)::

    .venv/bin/python examples/l4-failover/run.py

Environment: ``TRIOXY`` (the trioxy command, default ``.venv/bin/trioxy``);
``CURL`` (default ``curl``). Every port is picked free at run time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRIOXY = os.environ.get("TRIOXY", str(ROOT / ".venv" / "bin" / "trioxy"))
CURL = os.environ.get("CURL", "curl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{proc.args} exited with status {proc.returncode}")
        # /proc/net/tcp says whether the port listens without connecting to it
        # (a probe connection to the proxy would be relayed and logged).
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as lines:
                for line in list(lines)[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return
        time.sleep(0.05)
    sys.exit(f"nothing listens on port {port} after {timeout}s")


def curl(port: int) -> str:
    result = subprocess.run(
        [CURL, "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return f"curl failed ({result.returncode}): {result.stderr.strip()}"
    return result.stdout.strip()


def main() -> None:
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "proxy.log", "w+b") as log:
        try:
            backends = {}
            for name in ("A", "B"):
                root = Path(tmp) / name
                root.mkdir()
                (root / "index.html").write_text(f"hello from backend {name}\n")
                port = free_port()
                server = subprocess.Popen(
                    [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                    cwd=root,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                processes.append(server)
                wait_for(port, server)
                backends[name] = (port, server)

            listen = free_port()
            upstreams = ",".join(f"127.0.0.1:{port}" for port, _ in backends.values())
            proxy = subprocess.Popen(
                [TRIOXY, "run", "scripts/tcp_proxy.py"],
                cwd=ROOT,
                env={**os.environ, "LISTEN": f"127.0.0.1:{listen}", "UPSTREAMS": upstreams},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            processes.append(proxy)
            wait_for(listen, proxy)
            print(f"proxy on 127.0.0.1:{listen} -> {upstreams}\n")

            print("1. both backends up (round-robin):")
            for _ in range(4):
                print("   ", curl(listen))

            _, server_a = backends["A"]
            server_a.terminate()
            server_a.wait()
            print("\n2. backend A stopped (failover to B; A taken out after 3 failures):")
            for _ in range(6):
                print("   ", curl(listen))

            _, server_b = backends["B"]
            server_b.terminate()
            server_b.wait()
            print("\n3. both stopped (the client is closed at once):")
            print("   ", curl(listen))

            proxy.send_signal(signal.SIGINT)
            proxy.wait(10)
            log.seek(0)
            warnings = [
                line.split(" ", 2)[2]
                for line in log.read().decode().splitlines()
                if "WARNING" in line
            ]
            print("\nthe proxy's warnings:")
            for line in warnings:
                print("   ", line)
        finally:
            for proc in processes:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
