"""protocols/ stays sans-IO: no module there may import trio, socket or the engine."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"trio", "socket", "asyncio", "pipeline", "filters", "selectors"}
ROOT = Path(__file__).resolve().parents[2] / "protocols"


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_protocols_import_no_io() -> None:
    files = sorted(ROOT.rglob("*.py"))
    assert files, "protocols/ has no modules?"
    offenders = {
        str(p.relative_to(ROOT.parent)): sorted(imported_roots(p) & FORBIDDEN) for p in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_catches_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio.lowlevel\nfrom socket import socket\n")
    assert imported_roots(bad) & FORBIDDEN == {"trio", "socket"}
