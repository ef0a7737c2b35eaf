from __future__ import annotations

import sys

import pytest

from pipeline import ConfigError
from pipeline.settings import address, addresses, count, optional, seconds, setting


def test_defaults_go_through_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIOXY_TEST_X", raising=False)
    assert setting("TRIOXY_TEST_X", "8080", address) == "0.0.0.0:8080"
    monkeypatch.setenv("TRIOXY_TEST_X", "  ")
    assert setting("TRIOXY_TEST_X", "[::1]:80", address) == "[::1]:80"


def test_a_bad_value_is_located_at_the_callers_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOXY_TEST_X", "soon")
    with pytest.raises(ConfigError) as info:
        setting("TRIOXY_TEST_X", "5", seconds)
    line = sys._getframe().f_lineno - 1
    assert info.value.filename == __file__
    assert info.value.lineno == line
    assert info.value.reason == "TRIOXY_TEST_X='soon': expected a number of seconds"


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (seconds, "1.5", 1.5),
        (optional(seconds), "none", None),
        (optional(count), "NONE", None),
        (count, "12", 12),
        (addresses, "a:1, b:2,", ["a:1", "b:2"]),
    ],
)
def test_parsers(parse: object, text: str, expected: object) -> None:
    assert parse(text) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (seconds, "0"),
        (seconds, "inf"),
        (seconds, "-1"),
        (count, "0"),
        (count, "1.5"),
        (addresses, ","),
    ],
)
def test_parsers_refuse(parse: object, text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)  # type: ignore[operator]
