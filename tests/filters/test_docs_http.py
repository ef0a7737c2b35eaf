"""The examples of docs/http.md marked runnable run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "http.md"

#: A ```python block right after a line ``<!-- runnable -->``.
RUNNABLE = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```", re.S | re.M)


def runnable_blocks() -> list[tuple[int, str]]:
    text = DOC.read_text()
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in RUNNABLE.finditer(text)]


def test_the_guide_has_runnable_examples() -> None:
    # serve_http, compression, routing, header rewriting at least
    assert len(runnable_blocks()) >= 4


@pytest.mark.parametrize(
    ("offset", "code"), runnable_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else ""
)
def test_runnable_example(offset: int, code: str) -> None:
    # Padded with blank lines so a failure points at the line in docs/http.md.
    exec(compile("\n" * offset + code, str(DOC), "exec"), {"__name__": "docs_http_example"})
