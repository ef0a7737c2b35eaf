"""examples/l4-failover runs as its README says, with real servers and curl."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_the_example_shows_round_robin_failover_and_total_failure() -> None:
    result = subprocess.run(
        [sys.executable, "examples/l4-failover/run.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    sections = result.stdout.split("\n\n")
    both, failover, none, warnings = sections[1], sections[2], sections[3], sections[4]
    assert both.splitlines()[1:] == [
        "    hello from backend A",
        "    hello from backend B",
        "    hello from backend A",
        "    hello from backend B",
    ]
    assert failover.splitlines()[1:] == ["    hello from backend B"] * 6
    assert "curl failed" in none
    warning_lines = warnings.strip().splitlines()[1:]
    assert len(warning_lines) == 2
    assert "trioxy.health" in warning_lines[0]
    assert "DOWN (3 failures in a row: connection refused)" in warning_lines[0]
    assert "no upstream answered" in warning_lines[1]
    assert warning_lines[1].count("connection refused") == 2
