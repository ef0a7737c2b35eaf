"""Helpers for end-to-end tests: free ports, waiting for listeners, and running
``trioxy run`` or ``python -m http.server`` as subprocesses that are always
stopped, even when the test fails.

Import them from any test module::

    from tests.helpers import free_port, http_server, run_trioxy

    def test_through_proxy(tmp_path):
        (tmp_path / "hi.txt").write_text("hi")
        with http_server(tmp_path) as up:
            port = free_port()
            env = {"LISTEN": f"127.0.0.1:{port}", "UPSTREAMS": f"127.0.0.1:{up}"}
            with run_trioxy("scripts/tcp_proxy.py", env=env) as proxy:
                proxy.wait_listening(port)
                ...
            print(proxy.stderr)          # everything it logged, once stopped
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

import trio

from pipeline import Proxy
from pipeline.runtime import Server, serve

__all__ = [
    "ROOT",
    "TRIOXY",
    "Process",
    "free_port",
    "http_server",
    "is_listening",
    "port_of",
    "run_trioxy",
    "socket_table",
    "threaded_server",
    "wait_for_port",
    "wait_until",
]

#: The repository root.
ROOT = Path(__file__).resolve().parent.parent
#: The ``trioxy`` console script of the environment running the tests.
TRIOXY = str(Path(sys.executable).parent / "trioxy")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until a TCP connection to ``host:port`` succeeds (the connection is
    closed at once). Raises ``TimeoutError``. Use :func:`is_listening` instead when
    a probe connection would disturb the server (a proxy would dial upstream)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from exc
            time.sleep(0.05)


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll ``condition`` until it is true; ``AssertionError`` naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def socket_table(protocol: str) -> Iterator[list[str]]:
    """The rows of this host's socket table for ``protocol`` (``"tcp"`` or
    ``"udp"``, IPv4 and IPv6: ``/proc/net/tcp``, ``/proc/net/tcp6``...), each split
    into its fields (``[1]`` the local address, ``[2]`` the remote one, ``[3]`` the
    state, ports in hex)."""
    for name in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            yield line.split()


def port_of(address: str) -> int:
    """The port of a ``/proc/net`` address field (``0100007F:1F90`` -> 8080)."""
    return int(address.rsplit(":", 1)[1], 16)


def is_listening(port: int) -> bool:
    """Whether a TCP socket of this host listens on ``port`` (read from
    ``/proc/net/tcp*``: no connection is made)."""
    return any(f[3] == "0A" and port_of(f[1]) == port for f in socket_table("tcp"))


class Process:
    """A running subprocess whose stderr goes to a file (so it never blocks on a
    full pipe) and can be read at any time."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        self.argv = list(argv)
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    @property
    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def wait_listening(self, port: int, timeout: float = 15.0) -> None:
        """Wait until the process listens on TCP ``port``; fail early, with its
        stderr, if it exits first."""
        self.wait_for(lambda: is_listening(port), f"listening on {port}", timeout)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        """Wait until ``condition()`` (``what`` names it in errors); fail early,
        with the process's stderr, if it exits first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(self.argv)} exited with {self.proc.returncode} before "
                    f"{what}; stderr:\n{self.stderr}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(f"not {what} after {timeout}s:\n{self.stderr}")
            time.sleep(0.05)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit on its own; its exit status."""
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Send ``sig`` (a clean stop), then SIGKILL if it has not exited within
        ``timeout``; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._stderr.close()


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextmanager
def run_trioxy(
    script: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[Process]:
    """Run ``trioxy run [args] SCRIPT`` (from the repository root, with ``env``
    added to this process's environment) for the duration of the block; it is
    stopped with SIGINT (SIGKILL if it hangs) when the block ends, however."""
    proc = Process([TRIOXY, "run", *args, str(script)], _env(env), ROOT)
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def http_server(directory: str | os.PathLike[str]) -> Iterator[int]:
    """Serve ``directory`` with ``python -m http.server`` on a free loopback port
    for the duration of the block; yields the port."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(directory),
    ]
    proc = Process(argv, _env(None), ROOT)
    try:
        proc.wait_listening(port)
        yield port
    finally:
        proc.close()


def here() -> int:
    """The line number of the caller (to check that errors point at it)."""
    return sys._getframe(1).f_lineno


MOSQUITTO = "/usr/sbin/mosquitto"


@contextmanager
def mosquitto(tmp_dir: str | os.PathLike[str] | None = None) -> Iterator[int]:
    """Run a real mosquitto broker on a free loopback port (anonymous access, no
    persistence) for the duration of the block; yields the port. Its configuration
    file goes to ``tmp_dir`` (a temporary directory, removed after, by default)."""
    if tmp_dir is None:
        with tempfile.TemporaryDirectory() as tmp, mosquitto(tmp) as port:
            yield port
        return
    port = free_port()
    conf = Path(tmp_dir) / f"mosquitto-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_keepalive 65535\nlog_dest stderr\nlog_type error\nlog_type warning\n"
    )
    proc = Process([MOSQUITTO, "-c", str(conf)], _env(None), ROOT)
    try:
        proc.wait_listening(port)
        yield port
    finally:
        proc.close()


@contextmanager
def threaded_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on a loopback port (yielded) running ``handle(conn)`` for each
    connection in turn, in a thread, with a 10 s timeout on the connection; a
    connection that fails (``OSError``, ``ssl.SSLError``) is closed and the next
    one served. Stopped on the way out."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                try:
                    handle(conn)
                except OSError:  # (ssl.SSLError is one)
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from a blocking socket (fewer if it reaches EOF first)."""
    out = b""
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            break
        out += chunk
    return out


@asynccontextmanager
async def serving(proxy: Proxy, grace_period: float = 1.0) -> AsyncIterator[Server]:
    """``proxy`` served in process (``pipeline.runtime.serve``, no signal handling)
    for the block; shut down at once on the way out, however the block ends."""
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            partial(serve, proxy.build(), grace_period=grace_period, handle_signals=False)
        )
        try:
            yield server
        finally:
            server.shutdown(immediate=True)
