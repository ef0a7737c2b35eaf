"""The benchmark harness's parsers and report writer (the runs themselves are
`make bench`, never part of the test suite: tests do not measure time)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import ROOT


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()

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
    assert bench.parse_iperf3(good) == pytest.approx(25.0)
    with pytest.raises(bench.BenchError, match="unable to connect"):
        bench.parse_iperf3(json.dumps({"error": "unable to connect to server"}))
    with pytest.raises(bench.BenchError, match="unparsable"):
        bench.parse_iperf3("iperf3: error")


def test_write_section_replaces_only_its_suite(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    bench.write_section(path, "l4", "## L4\nfirst")
    bench.write_section(path, "http", "## HTTP\nkept")
    bench.write_section(path, "l4", "## L4\nsecond")
    text = path.read_text()
    assert "second" in text and "first" not in text and "kept" in text
    assert text.index("## L4") < text.index("## HTTP")
