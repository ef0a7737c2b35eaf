"""Every suite's ``render_section`` output, byte for byte, against the sections
rendered (and checked by eye) before the suites shared their rendering code.

The inputs are fixed: two results per suite, whose contenders and backend
configs differ between the two results, so that which config each block picks
(the first result's, the first non-empty one, the last one) shows in the text.
The machine description and the revision, which differ from one machine and
commit to the next, are pinned. To accept a deliberate change of the format,
delete ``tests/bench/sections/<suite>.md`` and run this test once: it writes
the file again and fails, so that the new text is looked at before it is kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import common, run, suite_dns, suite_http, suite_l4, suite_mqtt, suite_tls, suite_tunnel

SECTIONS = Path(__file__).parent / "sections"
SUITES = {
    "l4": suite_l4,
    "http": suite_http,
    "mqtt": suite_mqtt,
    "dns": suite_dns,
    "tls": suite_tls,
    "tunnel": suite_tunnel,
}
NAMES = ("direct", "nginx", "haproxy", "trioxy", "trioxy-events", "trioxy-nocache")


def contender(name: str, index: int, base: float) -> common.Contender:
    c = common.Contender(name, 1)
    c.samples = [
        common.Sample(
            base * k,
            cpu_pct=50.0 + k,
            p50_ms=1.0 * k,
            p99_ms=4.0 * k,
            rps=base * k,
            mib_s=base / 100 * k,
            avg_ms=0.5 * k,
            lost_pct=0.1 * k,
        )
        for k in (1.0, 1.25, 0.75)
    ]
    c.command = f"{name} --serve {index}"
    # The second result's haproxy has no config: a block that takes the first
    # non-empty config and one that takes the last differ.
    c.config_text = "" if (index, name) == (1, "haproxy") else f"{name} config {index}\n"
    c.peak_rss_kb = 10240 + index
    return c


def result(index: int) -> common.BenchResult:
    return common.BenchResult(
        key=f"bench-{index}",
        title=f"Benchmark {index}",
        unit="req/s",
        target_ratio=0.5 if index == 0 else None,
        target_text=f"RPS ≥ 0.50 {common.TIMES} haproxy" if index == 0 else "",
        load_command=f"load --run {index}",
        backend_command=f"backend --run {index}",
        contenders=[contender(n, index, 1000.0 * (i + 1)) for i, n in enumerate(NAMES)],
        # The first result has no backend config: "the first result's" and "the
        # first non-empty one" differ.
        backend_config="" if index == 0 else f"backend config {index}\n",
        latency=True,
        notes=[f"note {index}"],
    )


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_section_is_byte_identical(suite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = {
        "nproc": "2",
        "cpu": "Test CPU",
        "memory": "1.0 GiB",
        "kernel": "6.0",
        "python": "3.12.0",
    }
    monkeypatch.setattr(common, "machine_info", lambda: machine)
    monkeypatch.setattr(common, "trioxy_revision", lambda: "abc1234")
    opts = run.parse_args(["--suite", suite])
    text = SUITES[suite].render_section(opts, [result(0), result(1)], {}, "today", 12.0, 0.0)
    path = SECTIONS / f"{suite}.md"
    if not path.exists():
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"wrote {path}: look at it, then run again")
    assert text == path.read_text(encoding="utf-8")


def test_an_empty_run_renders_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """No results (every benchmark failed early): the preamble and an empty
    commands block, no config block."""
    monkeypatch.setattr(common, "trioxy_revision", lambda: "abc1234")
    for suite, module in SUITES.items():
        opts = run.parse_args(["--suite", suite])
        text = module.render_section(opts, [], {}, "today", 1.0, 0.0)
        assert text.endswith("### Commands\n\n```\n```\n"), suite
