"""The mqtt and dns suites' parsers and reports, the suites' sections of
BENCHMARKS.md, and the run's options and time estimate (no benchmark is run: tests
do not measure time). The tool outputs below were captured from real runs."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from bench import common, run, suite_dns, suite_mqtt
from tests.helpers import ROOT

# dnsperf 2.10.0 against dnsmasq 2.90 (`--address=/bench.test/10.0.0.1`), 3 s.
DNSPERF = """\
DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q.txt -l 3 -c 4 -q 200
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Started at: Sat Dec  5 16:00:57 2026
[Status] Stopping after 3.000000 seconds
[Timeout] Query timed out: msg id 655
[Timeout] Query timed out: msg id 656
[Timeout] Query timed out: msg id 657
[Timeout] Query timed out: msg id 658
[Timeout] Query timed out: msg id 659
[Timeout] Query timed out: msg id 1139
[Timeout] Query timed out: msg id 4311
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         270194
  Queries completed:    270187 (100.00%)
  Queries lost:         7 (0.00%)

  Response codes:       NOERROR 270187 (100.00%)
  Average packet size:  request 32, response 48
  Run time (s):         3.003532
  Queries per second:   89956.424636

  Average Latency (s):  0.001921 (min 0.000020, max 0.008180)
  Latency StdDev (s):   0.000911
"""

# bench/mqtt_load.py --duration 3, to mosquitto 2.0.11 through mqtt_edge + mqtt_cloud.
MQTT_LOAD = (
    '{"published": 89111, "rate": 29630.9, "received": 89125, "p50_ms": 7.356, "p99_ms": 14.766}\n'
)


def test_parse_dnsperf() -> None:
    r = suite_dns.parse_dnsperf(DNSPERF)
    assert r.qps == pytest.approx(89956.424636)
    assert (r.sent, r.completed, r.lost) == (270194, 270187, 7)
    assert r.lost_pct == pytest.approx(100 * 7 / 270194)
    assert r.avg_ms == pytest.approx(1.921)
    assert [r.min_ms, r.max_ms] == pytest.approx([0.020, 8.180])
    assert r.rcodes == "NOERROR 270187 (100.00%)"


def test_parse_dnsperf_refuses_no_answers_and_garbage() -> None:
    nothing = DNSPERF.replace("Queries completed:    270187", "Queries completed:    0")
    with pytest.raises(common.BenchError, match="0 of 270194 queries answered"):
        suite_dns.parse_dnsperf(nothing)
    with pytest.raises(common.BenchError, match=r"unparsable output: \[Status\] Testing complete"):
        suite_dns.parse_dnsperf(DNSPERF.split("Statistics:")[0])


def test_parse_mqtt_load() -> None:
    r = suite_mqtt.parse_mqtt_load("some warning on stdout\n" + MQTT_LOAD)
    assert (r.published, r.received) == (89111, 89125)
    assert r.rate == pytest.approx(29630.9)
    assert [r.p50_ms, r.p99_ms] == pytest.approx([7.356, 14.766])


def test_parse_mqtt_load_refuses_nothing_acked_and_garbage() -> None:
    with pytest.raises(common.BenchError, match="0 messages acknowledged"):
        suite_mqtt.parse_mqtt_load(MQTT_LOAD.replace('"published": 89111', '"published": 0'))
    with pytest.raises(common.BenchError, match="subscriber received no message"):
        suite_mqtt.parse_mqtt_load(MQTT_LOAD.replace('"received": 89125', '"received": 0'))
    with pytest.raises(common.BenchError, match="unparsable"):
        suite_mqtt.parse_mqtt_load(MQTT_LOAD.replace('"rate": 29630.9, ', ""))
    with pytest.raises(common.BenchError, match=r"unparsable output: \(no output\)"):
        suite_mqtt.parse_mqtt_load("")


def test_each_suite_replaces_only_its_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "BENCHMARKS.md", path)
    original = path.read_text()
    l4_begin, l4_end = (
        original.index("<!-- BEGIN SUITE l4 -->"),
        original.index("<!-- END SUITE l4 -->"),
    )
    l4 = original[l4_begin:l4_end]
    common.write_section(path, "dns", "## DNS\nfirst dns")
    common.write_section(path, "mqtt", "## MQTT\nmqtt kept")
    common.write_section(path, "dns", "## DNS\nsecond dns")
    text = path.read_text()
    assert l4 in text  # byte for byte
    assert "second dns" in text and "first dns" not in text and "mqtt kept" in text
    assert text.count("<!-- BEGIN SUITE dns -->") == 1 == text.count("<!-- END SUITE dns -->")

    # Replaced in place: the sections keep the order they had (sections new to
    # the file are added at its end, in the order written: dns, then mqtt).
    def place(suite: str) -> tuple[bool, int]:
        marker = f"<!-- BEGIN SUITE {suite} -->"
        return marker not in original, original.find(marker)

    dns_first = place("dns") <= place("mqtt")
    assert (text.index("## DNS") < text.index("## MQTT")) == dns_first
    assert text.startswith(original[:l4_begin])


def result(name: str, qps: list[float], avg: float, lost: float) -> common.Contender:
    c = common.Contender(name, 1)
    c.samples = [common.Sample(q, avg_ms=avg, lost_pct=lost) for q in qps]
    return c


def test_dns_table_has_average_latency_and_losses_and_no_target() -> None:
    res = common.BenchResult(
        key="dns-qps",
        title="DNS",
        unit="queries/s",
        target_ratio=None,
        target_text="",
        load_command="dnsperf",
        backend_command="dnsmasq",
        contenders=[
            result("direct", [68812, 69882], 2.4, 0.0),
            result("trioxy", [6122, 4527], 32.0, 0.02),
            result("trioxy-nocache", [2026], 98.2, 0.0),
        ],
        reference="direct",
        ratio_pairs=suite_dns.DNS_RATIO_PAIRS,
        avg_latency=True,
    )
    table = common.result_table(res)
    assert table[0].startswith("| contender | queries/s (median) | runs | avg latency ms | lost |")
    [row] = [line for line in table if line.startswith("| trioxy, no cache")]
    assert "| 2,026 | 2,026 | 98.200 | 0.00 % |" in row
    lines, ratios = common.result_ratios(res)
    assert ratios["trioxy/direct"] == pytest.approx(5324.5 / 69347)
    assert "| trioxy / trioxy, no cache | 2.63 |" in lines
    assert "| avg latency trioxy / direct | 13.33 |" in lines
    assert "trioxy-udp/direct" not in ratios  # not run, not reported
    assert common.target_line(res, ratios) == ""
    assert not any(line.startswith("Target:") for line in common.results_lines([res]))


def test_options_of_the_new_suites() -> None:
    opts = run.parse_args(["--suite", "dns", "--suite", "mqtt"])
    assert opts.suites == ["dns", "mqtt"]
    assert (opts.dns_duration, opts.mqtt_duration, opts.reps) == (20.0, 10.0, 3)
    quick = run.parse_args(["--quick"])
    assert (quick.dns_duration, quick.mqtt_duration, quick.reps) == (3.0, 3.0, 1)
    assert run.parse_args(["--duration", "5"]).dns_duration == 5.0
    assert run.parse_args(["--dns-duration", "7", "--quick"]).dns_duration == 7.0
    only = run.parse_args(["--only", "qps", "--contenders", "trioxy,trioxy-udp"])
    assert only.output is None and only.only == ["qps"]
    assert common.suite_contenders(only, "dns") == ["trioxy", "trioxy-udp"]
    assert common.suite_contenders(only, "mqtt") == ["trioxy"]
    with pytest.raises(SystemExit):
        run.parse_args(["--suite", "smtp"])


def test_a_default_run_fits_in_25_minutes() -> None:
    full = run.estimate_seconds(run.parse_args([]))
    assert 10 * 60 < full < 25 * 60
    one = run.estimate_seconds(run.parse_args(["--suite", "dns"]))
    assert 0 < one < full
    assert run.estimate_seconds(run.parse_args(["--only", "qps", "--suite", "l4"])) == 0


def test_udp_ports_are_seen_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert port in common.listening_ports(udp=True)
        assert port not in common.listening_ports()
    assert port not in common.listening_ports(udp=True)


@pytest.mark.skipif(
    shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists(),
    reason="dnsmasq not installed",
)
def test_dnsmasq_backend_answers_the_zone_locally(tmp_path: Path) -> None:
    """The backend as the suite starts it: answers bench.test itself, with a TTL
    (or the proxy would cache nothing), and refuses anything else (no upstream)."""
    opts = run.parse_args(["--no-pin"])
    reg = common.ProcessRegistry(tmp_path, pin=False)
    tools = {"dnsmasq": str(common.find_tool("dnsmasq"))}
    try:
        proc, port = suite_dns.start_dnsmasq(reg, opts, tools, set())
        suite_dns.check_answer(port, "h999.bench.test")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(suite_dns.query("h1.bench.test"), ("127.0.0.1", port))
            reply = s.recv(512)
        ttl = int.from_bytes(reply[-10:-6], "big")  # the A record's TTL, before RDLENGTH
        assert ttl == suite_dns.TTL
        with pytest.raises(common.BenchError, match="rcode=5"):  # REFUSED
            suite_dns.check_answer(port, "example.com")
        assert proc.alive()
    finally:
        reg.stop_all()
