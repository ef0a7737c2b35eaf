"""The example in docs/testing.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import trio

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def test_the_documented_example_passes() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    tests = [v for k, v in namespace.items() if k.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        trio.run(test)  # type: ignore[arg-type]
