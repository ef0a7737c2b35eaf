"""pipeline.docgen: the generated filter reference, and that docs/filters.md is current."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline import Filter, docgen
from pipeline.plugins import BUILTIN_PLUGINS, filter_registry


class Sample(Filter):
    """``sample(fn)``: see :class:`~pipeline.events.Data` and
    :func:`pipeline.testing.run_layout`."""

    name = "sample"
    joint = True

    def __init__(
        self,
        fn: Callable[..., Any],
        size: int = 3,
        *,
        key: Callable[..., Any] = lambda ctx: None,
        tags: tuple[str, ...] = (),
    ) -> None:
        pass


class Bare(Filter):
    name = "bare"


def test_committed_reference_is_up_to_date() -> None:
    """Fails when a filter's docstring or signature changed without regenerating:
    run ``python -m pipeline.docgen > docs/filters.md``."""
    committed = docgen.DEFAULT_PATH.read_text(encoding="utf-8")
    assert committed == docgen.generate(), (
        "docs/filters.md is stale: run python -m pipeline.docgen > docs/filters.md"
    )
    assert docgen.check()


def test_every_builtin_filter_is_documented() -> None:
    text = docgen.generate()
    builtin = [c for c in filter_registry().values() if c.__module__ in BUILTIN_PLUGINS]
    assert builtin
    for cls in builtin:
        assert f"### `{cls.name}`" in text
        assert f"  - [`{cls.name}`](#{cls.name})" in text
        assert docgen.signature_of(cls) in text


def test_signature_of() -> None:
    assert docgen.signature_of(Sample) == (
        "sample(fn: Callable[..., Any], size: int = 3, *, "
        "key: Callable[..., Any] = <lambda>, tags: tuple[str, ...] = ())"
    )
    assert docgen.signature_of(Bare) == "bare()"


def test_generate_from_a_registry() -> None:
    registry: dict[str, type[Filter]] = {"bare": Bare, "sample": Sample}
    assert "sample" not in docgen.generate(registry)  # not a built-in module
    text = docgen.generate(registry, modules=None)
    assert f"- [`{__name__}`](#" in text
    # Definition order in the module, whatever the registry's order.
    assert text.index("### `sample` *(joint)*") < text.index("### `bare`")
    assert "`sample(fn)`: see `Data` and\n`pipeline.testing.run_layout`." in text
    assert "tests/pipeline/test_docgen" not in text
    # The generator's own module docstring for this module is included.
    assert "the generated filter reference" in text


def test_rst_to_markdown() -> None:
    doc = """Intro with ``code`` and :class:`~a.b.C`::

    x = 1

    y = 2

After.

=====  ==========
a      b
=====  ==========
``x``  one
       two | three
y      four
=====  ==========

Arguments:

``size=3``
    how many, split ``across
    lines``.
* a bullet
  continued

Done."""
    assert docgen.rst_to_markdown(doc).splitlines() == [
        "Intro with `code` and `C`:",
        "",
        "```python",
        "x = 1",
        "",
        "y = 2",
        "```",
        "",
        "After.",
        "",
        "| a | b |",
        "|---|---|",
        "| `x` | one two \\| three |",
        "| y | four |",
        "",
        "Arguments:",
        "",
        "- `size=3`: how many, split `across",
        "  lines`.",
        "* a bullet",
        "  continued",
        "",
        "Done.",
    ]


def test_check_and_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "filters.md"
    assert docgen.main(["-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == docgen.generate()
    assert docgen.main(["--check", str(out)]) == 0
    assert docgen.check(out)

    out.write_text(out.read_text(encoding="utf-8") + "edited\n", encoding="utf-8")
    assert docgen.main(["--check", str(out)]) == 1
    assert "is out of date" in capsys.readouterr().err
    assert not docgen.check(out)
    assert docgen.main(["--check", str(tmp_path / "missing.md")]) == 1

    assert docgen.main([]) == 0
    assert capsys.readouterr().out == docgen.generate()
