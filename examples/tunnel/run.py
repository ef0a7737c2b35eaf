"""A TLS tunnel between two networks that cannot route to each other, on one
machine: three Linux network namespaces, needs root and ``ip netns``.

::

    network A (ns "<prefix>-a")       network B (ns "<prefix>-b")      B's LAN (ns "<prefix>-lan")
    curl                              tunnel_server.py                 python -m http.server
    tunnel_client.py  10.200.0.1 ==== 10.200.0.2:9443                  10.201.0.10:8000
                                      10.201.0.1 ===================== 10.201.0.10

A and B share one link (a veth pair), on which only the tunnel server listens;
the web server sits on B's LAN, another veth pair, and B does not forward
packets (``net.ipv4.ip_forward=0``), so nothing in A can reach it but through
the tunnel. The script makes a test CA and the two ends' certificates
(``openssl``), starts the web server, ``scripts/tunnel_server.py`` in B and
``scripts/tunnel_client.py`` in A, and shows with curl, run in A:

1. the web server directly: fails (A has no route to B's LAN);
2. through the client end's ``FORWARD`` port: the page;
3. through its ``SOCKS_LISTEN`` port (``curl --socks5-hostname``): the page;
4. through SOCKS to a port that ``ALLOW`` does not list: refused, SOCKS reply 2;
5. the server end stopped and started again: the link is back, curl works again.

Everything it made (processes, namespaces and the veth pairs in them) is
removed at the end, also after a failure or Ctrl-C.

Run it from the repository root, as root (after ``make test`` or ``make run``
set up .venv)::

    sudo .venv/bin/python examples/tunnel/run.py

Environment: ``TRIOXY`` (the trioxy command, default ``.venv/bin/trioxy``);
``CURL`` (default ``curl``); ``NS_PREFIX`` (the namespaces' names start with it,
default ``tnl`` and this process's id).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRIOXY = os.environ.get("TRIOXY", str(ROOT / ".venv" / "bin" / "trioxy"))
CURL = os.environ.get("CURL", "curl")
PREFIX = os.environ.get("NS_PREFIX", f"tnl{os.getpid()}")
NS_A, NS_B, NS_LAN = f"{PREFIX}-a", f"{PREFIX}-b", f"{PREFIX}-lan"

A_ADDR, B_ADDR = "10.200.0.1", "10.200.0.2"  # the A-B link
B_LAN_ADDR, WEB_ADDR = "10.201.0.1", "10.201.0.10"  # B's LAN
TUNNEL_PORT, WEB_PORT, FORWARD_PORT, SOCKS_PORT = 9443, 8000, 8080, 1080


def run(*argv: str) -> None:
    """Run a setup command; its error output and status stop the script."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


# Certificates -------------------------------------------------------------------------


def make_certs(tmp: Path) -> dict[str, str]:
    """A test CA, the server end's certificate (valid for B's link address) and
    the client end's; the file names by role."""

    def openssl(*args: str) -> None:
        run("openssl", *args)

    def issue(name: str, subject: str, extensions: str) -> None:
        (tmp / f"{name}.ext").write_text(
            extensions + "\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nauthorityKeyIdentifier=keyid:always\n"
        )
        openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", subject, "-keyout", str(tmp / f"{name}.key"), "-out", str(tmp / f"{name}.csr"),
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(tmp / f"{name}.csr"), "-CA", str(tmp / "ca.pem"),
            "-CAkey", str(tmp / "ca.key"), "-set_serial", str(len(name) + 1000), "-days", "2",
            "-extfile", str(tmp / f"{name}.ext"), "-out", str(tmp / f"{name}.pem"),
        )  # fmt: skip

    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", "/CN=tunnel example CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(tmp / "ca.key"), "-out", str(tmp / "ca.pem"),
    )  # fmt: skip
    issue("server", "/CN=tunnel.b.test", f"subjectAltName=IP:{B_ADDR}\nextendedKeyUsage=serverAuth")
    issue("client", "/O=Example/CN=office-a", "extendedKeyUsage=clientAuth")
    return {
        "ca": str(tmp / "ca.pem"),
        "server_cert": str(tmp / "server.pem"),
        "server_key": str(tmp / "server.key"),
        "client_cert": str(tmp / "client.pem"),
        "client_key": str(tmp / "client.key"),
    }


# Namespaces ----------------------------------------------------------------------------


def make_networks() -> None:
    for ns in (NS_A, NS_B, NS_LAN):
        run("ip", "netns", "add", ns)
        run(*in_ns(ns, "ip", "link", "set", "lo", "up"))
    # The A-B link, and B's LAN: two veth pairs, each end made in its namespace.
    for ns, dev, peer_ns, peer in ((NS_A, "to-b", NS_B, "to-a"), (NS_B, "to-lan", NS_LAN, "to-b")):
        run("ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", peer, "netns", peer_ns)
    for ns, dev, addr in (
        (NS_A, "to-b", f"{A_ADDR}/30"),
        (NS_B, "to-a", f"{B_ADDR}/30"),
        (NS_B, "to-lan", f"{B_LAN_ADDR}/24"),
        (NS_LAN, "to-b", f"{WEB_ADDR}/24"),
    ):
        run(*in_ns(ns, "ip", "addr", "add", addr, "dev", dev))
        run(*in_ns(ns, "ip", "link", "set", dev, "up"))
    # B is no router: even a route to the LAN via B would not reach the web server.
    run(*in_ns(NS_B, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"))


def remove_networks() -> None:
    """Stop whatever still runs in the namespaces, then delete them (their veth
    pairs go with them). Quiet about what is already gone."""
    for ns in (NS_A, NS_B, NS_LAN):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# Processes -----------------------------------------------------------------------------


def listening(pid: int, port: int) -> bool:
    """Whether the namespace of process ``pid`` has a TCP socket listening on
    ``port`` (its /proc/PID/net/tcp: no probe connection)."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for fields in map(str.split, lines):
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def start(
    ns: str, argv: Sequence[str], env: dict[str, str], log: Path, port: int
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in namespace ``ns`` (``ip netns exec`` execs it: the
    process is ours) and wait until it listens on ``port``."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            in_ns(ns, *argv),
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    deadline = time.monotonic() + 15
    while not listening(proc.pid, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{argv[-1]} did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def curl(*args: str) -> str:
    """curl run in network A: the body, or why it failed."""
    done = subprocess.run(
        in_ns(NS_A, CURL, "-sS", "--max-time", "10", *args), capture_output=True, text=True
    )
    if done.returncode:
        return f"curl failed ({done.returncode}): {done.stderr.strip()}"
    return done.stdout.strip()


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("examples/tunnel needs root (network namespaces): run it with sudo")
    if shutil.which("ip") is None:
        sys.exit("examples/tunnel needs the ip command (iproute2)")
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        try:
            certs = make_certs(tmp)
            make_networks()
            www = tmp / "www"
            www.mkdir()
            (www / "index.html").write_text("hello from network B's web server\n")
            web = [sys.executable, "-m", "http.server", str(WEB_PORT), "--bind", WEB_ADDR]
            web += ["--directory", str(www)]
            processes.append(start(NS_LAN, web, {}, tmp / "web.log", WEB_PORT))
            server_env = {
                "LISTEN": f"{B_ADDR}:{TUNNEL_PORT}",
                "CERT": certs["server_cert"],
                "KEY": certs["server_key"],
                "CA": certs["ca"],
                "ALLOW": f"10.201.0.0/24:{WEB_PORT}",
            }
            server_argv = [TRIOXY, "run", "scripts/tunnel_server.py"]
            server_log = tmp / "server.log"
            server = start(NS_B, server_argv, server_env, server_log, TUNNEL_PORT)
            processes.append(server)
            client_env = {
                "SERVER": f"{B_ADDR}:{TUNNEL_PORT}",
                "CERT": certs["client_cert"],
                "KEY": certs["client_key"],
                "CA": certs["ca"],
                "FORWARD": f"127.0.0.1:{FORWARD_PORT}={WEB_ADDR}:{WEB_PORT}",
                "SOCKS_LISTEN": f"127.0.0.1:{SOCKS_PORT}",
            }
            client_argv = [TRIOXY, "run", "scripts/tunnel_client.py"]
            client_log = tmp / "client.log"
            processes.append(start(NS_A, client_argv, client_env, client_log, SOCKS_PORT))
            web_url = f"http://{WEB_ADDR}:{WEB_PORT}/"
            print(
                f"network A: tunnel client, FORWARD 127.0.0.1:{FORWARD_PORT} -> "
                f"{WEB_ADDR}:{WEB_PORT}, SOCKS 127.0.0.1:{SOCKS_PORT}"
            )
            print(
                f"network B: tunnel server on {B_ADDR}:{TUNNEL_PORT}, "
                f"web server on {WEB_ADDR}:{WEB_PORT} (its LAN)"
            )
            routes = subprocess.run(
                in_ns(NS_A, "ip", "-4", "route"), capture_output=True, text=True
            ).stdout.strip()
            print(f"network A's routes: {routes}")

            print(f"\n1. from A, straight to the web server ({web_url}):")
            print("   ", curl(web_url))
            print(f"\n2. from A, through the tunnel's FORWARD port (127.0.0.1:{FORWARD_PORT}):")
            print("   ", curl(f"http://127.0.0.1:{FORWARD_PORT}/"))
            print(f"\n3. from A, through the tunnel's SOCKS port (127.0.0.1:{SOCKS_PORT}):")
            socks = ("--socks5-hostname", f"127.0.0.1:{SOCKS_PORT}")
            print("   ", curl(*socks, web_url))
            print(f"\n4. from A, through SOCKS to a port ALLOW does not list ({WEB_ADDR}:22):")
            print("   ", curl(*socks, f"http://{WEB_ADDR}:22/"))

            print("\n5. the tunnel server stopped, then started again:")
            stop(server)
            print("    stopped:", curl(f"http://127.0.0.1:{FORWARD_PORT}/"))
            processes.append(start(NS_B, server_argv, server_env, server_log, TUNNEL_PORT))
            # The client end reconnects, with backoff, as streams ask for a link.
            for _ in range(50):
                answer = curl(f"http://127.0.0.1:{FORWARD_PORT}/")
                if not answer.startswith("curl failed"):
                    break
                time.sleep(0.2)
            print("    started:", answer)

            print("\nthe tunnel ends' warnings:")
            for role, log in (("server", server_log), ("client", client_log)):
                for line in log.read_text().splitlines():
                    if " WARNING " in line:
                        print(f"    {role}: {line.split(' WARNING ', 1)[1].strip()}")
        finally:
            for proc in processes:
                stop(proc)
            remove_networks()


if __name__ == "__main__":
    # SIGTERM (a test's timeout, a service manager) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main()
