"""Loading scripts: every failure is one ConfigError line pointing into the script."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline import ConfigError, Data, StreamEnd
from pipeline.script import load_script
from pipeline.testing import run_listener


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_a_valid_script(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from pipeline import Proxy
        proxy = Proxy()
        proxy.listen("127.0.0.1:9999").handle_data(lambda ctx, d: None)
        proxy.pipeline("named")
        """,
    )
    script = load_script(path)
    assert [s.address for s in script.listeners] == ["127.0.0.1:9999"]
    assert list(script.layouts) == ["named"]
    assert script.listener(9999) is script.listeners[0]
    assert script.listener("127.0.0.1:9999") is script.listeners[0]


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("from pipeline import Proxy\nproxy = Proxy(\n", 2, "syntax error: '(' was never closed"),
        ("import no_such_module_here\n", 1, "ModuleNotFoundError: No module named"),
        ("from pipeline import Proxy\nx = 1\nProxy().listen(80).nope()\n", 3, "unknown filter"),
        ("x = 1\n", 1, "the script creates no Proxy"),
        (
            "import os\nfrom pipeline import Proxy\nProxy().listen(int(os.environ['NOPE_X']))\n",
            3,
            "KeyError: 'NOPE_X'",
        ),
    ],
)
def test_script_errors_are_one_located_line(
    tmp_path: Path, body: str, line: int, reason: str
) -> None:
    path = tmp_path / "bad.py"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_script(path)
    assert info.value.filename == str(path.resolve())
    assert info.value.lineno == line
    assert reason in info.value.reason
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such script file"):
        load_script(tmp_path / "absent.py")


def test_a_script_may_import_a_module_beside_it(tmp_path: Path) -> None:
    (tmp_path / "shared_settings.py").write_text("PORT = 9998\n")
    path = write(
        tmp_path,
        """
        from pipeline import Proxy
        from shared_settings import PORT
        Proxy().listen(PORT)
        """,
    )
    assert load_script(path).listeners[0].port == 9998


async def test_run_listener_runs_a_scripts_pipeline_in_memory(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from pipeline import Proxy
        seen = []
        Proxy().listen(9997).handle_data(lambda ctx, d: seen.append((ctx.listener, d)))
        """,
    )
    out = await run_listener(path, [b"ping", StreamEnd()])
    assert out == [Data(b"ping"), StreamEnd()]


def test_a_config_error_raised_by_script_code_is_located(tmp_path: Path) -> None:
    path = tmp_path / "raises.py"
    path.write_text(
        "from pipeline import ConfigError, Proxy\n"
        "Proxy()\n"
        "raise ConfigError('PORT must be a number')\n"
    )
    with pytest.raises(ConfigError) as info:
        load_script(path)
    assert str(info.value) == f"{path.resolve()}:3: PORT must be a number"
