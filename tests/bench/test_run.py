"""The benchmark harness's parsers and report writer (the runs themselves are
`make bench`, never part of the test suite: tests do not measure time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import common as bench
from bench import run, suite_http, suite_l4

WRK = """\
Running 10s test @ http://127.0.0.1:41234/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   712.31us  120.55us   4.10ms   90.12%
    Req/Sec    54.47k     1.20k   56.10k    71.00%
  Latency Distribution
     50%  681.00us
     75%  740.00us
     90%  820.00us
     99%    1.11ms
  542021 requests in 10.00s, 80.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
Requests/sec:  54204.10
Transfer/sec:      8.01MB
"""


def test_parse_wrk() -> None:
    result = bench.parse_wrk(WRK)
    assert result.rps == pytest.approx(54204.10)
    assert result.p50_ms == pytest.approx(0.681)
    assert result.p99_ms == pytest.approx(1.11)
    assert result.requests == 542021
    assert "read 2" in result.errors


def test_parse_wrk_refuses_zero_requests_and_garbage() -> None:
    zero = WRK.replace("542021 requests", "0 requests")
    with pytest.raises(bench.BenchError, match="0 requests completed"):
        bench.parse_wrk(zero)
    with pytest.raises(bench.BenchError, match="unparsable"):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_parse_iperf3() -> None:
    good = json.dumps({"end": {"sum_received": {"bits_per_second": 2.5e10}}})
    assert suite_l4.parse_iperf3(good) == pytest.approx(25.0)
    with pytest.raises(bench.BenchError, match="unable to connect"):
        suite_l4.parse_iperf3(json.dumps({"error": "unable to connect to server"}))
    with pytest.raises(bench.BenchError, match="unparsable"):
        suite_l4.parse_iperf3("iperf3: error")


def test_write_section_replaces_only_its_suite(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    bench.write_section(path, "l4", "## L4\nfirst")
    bench.write_section(path, "http", "## HTTP\nkept")
    bench.write_section(path, "l4", "## L4\nsecond")
    text = path.read_text()
    assert "second" in text and "first" not in text and "kept" in text
    assert text.index("## L4") < text.index("## HTTP")


# The http suite ------------------------------------------------------------------

WRK_LARGE = WRK.replace("Transfer/sec:      8.01MB", "Transfer/sec:      1.20GB")


def test_parse_wrk_transfer_rate_in_mib() -> None:
    assert bench.parse_wrk(WRK).mib_s == pytest.approx(8.01)
    assert bench.parse_wrk(WRK_LARGE).mib_s == pytest.approx(1.20 * 1024)
    small = WRK.replace("Transfer/sec:      8.01MB", "Transfer/sec:    512.50KB")
    assert bench.parse_wrk(small).mib_s == pytest.approx(512.5 / 1024)
    assert bench.parse_wrk(WRK.replace("Transfer/sec:      8.01MB\n", "")).mib_s is None


def test_http_config_templates_have_the_settings_compared() -> None:
    values = {"listen": "127.0.0.1:8000", "upstream": "127.0.0.1:9000"}
    nginx = bench.render("nginx-proxy.conf", dir="/d", user_line="", **values)
    assert "listen 127.0.0.1:8000 " in nginx and "server 127.0.0.1:9000;" in nginx
    for directive in (
        "worker_processes 1;",
        "keepalive 32;",
        "proxy_pass http://backend;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
    ):
        assert directive in nginx
    haproxy = bench.render("haproxy-http.cfg", **values)
    for directive in ("nbthread 1", "mode http", "http-reuse always", "bind 127.0.0.1:8000"):
        assert directive in haproxy
    assert "server s1 127.0.0.1:9000" in haproxy
    backend = bench.render(
        "nginx-http-backend.conf", dir="/d", www="/d/www", user_line="", listen="127.0.0.1:1"
    )
    assert 'return 200 "ok";' in backend and "location = /1m.bin" in backend
    assert "root /d/www;" in backend
    assert "${" not in nginx + haproxy + backend  # every placeholder filled


def test_large_payload_is_one_mib_of_varied_bytes() -> None:
    payload = suite_http.large_payload()
    assert len(payload) == suite_http.LARGE_SIZE == 1 << 20
    assert len(set(payload)) == 256


def test_contenders_per_suite_and_only() -> None:
    opts = run.parse_args(["--contenders", "nginx,trioxy,trioxy-events", "--only", "small"])
    assert bench.suite_contenders(opts, "http") == ["nginx", "trioxy"]
    assert bench.suite_contenders(opts, "l4") == ["trioxy", "trioxy-events"]
    assert opts.only == ["small"] and opts.output is None  # --only: printed, not written
    assert run.parse_args([]).suites == ["l4", "http", "mqtt", "dns", "tls", "tunnel"]
    with pytest.raises(SystemExit):
        run.parse_args(["--contenders", "squid"])


def test_a_missing_reverse_proxy_script_is_skipped_not_faked(tmp_path: Path) -> None:
    opts = run.parse_args(
        [
            "--suite",
            "http",
            "--contenders",
            "trioxy",
            "--no-pin",
            "--trioxy-http-cmd",
            ".venv/bin/trioxy run scripts/no_such_proxy.py",
        ]
    )
    reg = bench.ProcessRegistry(tmp_path, pin=False)
    [c] = bench.start_contenders(reg, opts, {}, 1, set(), tmp_path, "http-small", suite="http")
    assert c.skipped == "scripts/no_such_proxy.py missing"
    assert c.proc is None and c.error is None and reg.procs == []
    assert bench.measure(c, lambda _c: bench.Sample(1.0), "x", 0, 1, reg) is None
    result = http_result([c], p99_target_ms=5.0)
    [row] = [line for line in bench.result_table(result) if line.startswith("| trioxy")]
    assert "skipped: scripts/no_such_proxy.py missing" in row
    _, ratios = bench.result_ratios(result)
    assert "not measured" in bench.target_line(result, ratios)


def contender(name: str, *runs: tuple[float, float, float]) -> Any:
    """A contender with samples of (req/s, MiB/s, p99 ms)."""
    c = bench.Contender(name, 1)
    c.samples = [
        bench.Sample(rps, p50_ms=p99 / 2, p99_ms=p99, rps=rps, mib_s=mib) for rps, mib, p99 in runs
    ]
    return c


def http_result(contenders: list[Any], p99_target_ms: float | None = None) -> Any:
    return bench.BenchResult(
        key="http-small",
        title="HTTP small",
        unit="req/s",
        target_ratio=0.30,
        target_text=f"small-response RPS ≥ 0.30 {bench.TIMES} nginx",
        load_command="wrk",
        backend_command="nginx",
        contenders=contenders,
        latency=True,
        reference="nginx",
        ratio_pairs=bench.HTTP_RATIO_PAIRS,
        secondary="mib_s",
        p99_target_ms=p99_target_ms,
    )


def test_http_ratios_and_targets_are_against_nginx() -> None:
    nginx = contender("nginx", (40000, 5.0, 2.0), (42000, 5.2, 2.2), (41000, 5.1, 2.1))
    trioxy = contender("trioxy", (16000, 2.0, 4.0), (15000, 1.9, 6.0), (17000, 2.1, 4.5))
    result = http_result([contender("direct", (60000, 7.0, 1.0)), nginx, trioxy], 5.0)
    table = bench.result_table(result)
    assert table[0].startswith("| contender | req/s (median) | runs | MiB/s (median) |")
    [row] = [line for line in table if line.startswith("| trioxy")]
    assert "| 16,000 | 16,000, 15,000, 17,000 | 2.0 |" in row
    lines, ratios = bench.result_ratios(result)
    assert ratios["trioxy/nginx"] == pytest.approx(16000 / 41000)
    assert "| trioxy / nginx | 0.39 |" in lines
    assert "| p99 latency trioxy / nginx | 2.14 |" in lines
    verdict = bench.target_line(result, ratios)
    assert f"**met** (trioxy = 0.39 {bench.TIMES} nginx)" in verdict
    assert "p99 ≤ 5 ms — **met** (trioxy p99 = 4.50 ms)" in verdict
    slow = http_result([nginx, contender("trioxy", (10000, 1.0, 9.0))], 5.0)
    verdict = bench.target_line(slow, bench.result_ratios(slow)[1])
    assert f"**not met** (trioxy = 0.24 {bench.TIMES} nginx)" in verdict
    assert "p99 ≤ 5 ms — **not met** (trioxy p99 = 9.00 ms)" in verdict


def test_render_http_section(tmp_path: Path) -> None:
    opts = run.parse_args(["--suite", "http"])
    nginx = contender("nginx", (40000, 5.0, 2.0))
    nginx.config_text = "upstream backend { keepalive 32; }"
    nginx.command = "nginx -c nginx.conf"
    result = http_result([nginx, contender("trioxy", (16000, 2.0, 4.0))], 5.0)
    result.backend_config = 'return 200 "ok";'
    text = suite_http.render_section(opts, [result], {}, "today", 12.0, 0.0)
    assert text.startswith("## HTTP (reverse proxy)")
    assert "`bench/run.py --suite http`" in text
    assert "### HTTP small" in text and "| trioxy / nginx | 0.40 |" in text
    assert "upstream backend { keepalive 32; }" in text and 'return 200 "ok";' in text
    path = tmp_path / "BENCHMARKS.md"
    bench.write_section(path, "http", text)
    assert "<!-- BEGIN SUITE http -->\n## HTTP (reverse proxy)" in path.read_text()
