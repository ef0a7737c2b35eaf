"""What the bench suites' tests share: a threaded loopback TCP server for the
suites' checks, and the check that a rendered section replaces only its own
part of BENCHMARKS.md."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import common
from tests.helpers import ROOT

__all__ = ["assert_replaces_only_its_section", "needs_openssl", "threaded_server"]

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


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


def _outside(text: str, suite: str) -> tuple[str, str]:
    """What comes before and after ``suite``'s section (all of it before, when
    the text has no such section)."""
    found = re.search(
        f"<!-- BEGIN SUITE {re.escape(suite)} -->.*?<!-- END SUITE {re.escape(suite)} -->",
        text,
        re.S,
    )
    if found is None:
        return text.rstrip(), ""
    return text[: found.start()], text[found.end() :]


def assert_replaces_only_its_section(tmp_path: Path, suite: str, text: str) -> None:
    """Writing ``text`` as ``suite``'s section into a copy of the repository's
    BENCHMARKS.md keeps every other section byte for byte and puts ``text``
    between the suite's markers (where the section was, or at the end)."""
    path = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "BENCHMARKS.md", path)
    before, after = _outside(path.read_text(), suite)
    common.write_section(path, suite, text)
    written = path.read_text()
    assert written.startswith(before)
    assert written.endswith(after if after else "\n")
    block = f"<!-- BEGIN SUITE {suite} -->\n{text.rstrip()}\n<!-- END SUITE {suite} -->"
    assert block in written and written.count(f"<!-- BEGIN SUITE {suite} -->") == 1
