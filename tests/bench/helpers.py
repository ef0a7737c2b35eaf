"""What the bench suites' tests share: a threaded loopback TCP server for the
suites' checks (``tests.helpers.threaded_server``, re-exported), and the check
that a rendered section replaces only its own part of BENCHMARKS.md."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench import common
from tests.helpers import ROOT, threaded_server

__all__ = ["assert_replaces_only_its_section", "needs_openssl", "threaded_server"]

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")


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
