"""The tunnel suite: its settings, commands, certificates, time estimate and
report, and its two tunnel ends started with the suite's real settings (bytes
through them, both ways). No benchmark is run: tests do not measure time. The
iperf3 JSON and the wrk output below were captured from real runs through
``tunnel_client.py`` -> ``tunnel_server.py`` on this machine."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest

from bench import common, run, suite_l4, suite_tunnel
from tests.bench.helpers import assert_replaces_only_its_section, needs_openssl, threaded_server

# iperf3 3.12, `iperf3 -c 127.0.0.1 -p PORT -t 1 -J` to tunnel_client.py's FORWARD
# listener, through tunnel_server.py to `iperf3 -s -1`.
IPERF3_THROUGH_TUNNEL = """\
{
	"start":	{
		"connected":	[{
				"socket":	5,
				"local_host":	"127.0.0.1",
				"local_port":	53178,
				"remote_host":	"127.0.0.1",
				"remote_port":	33253
			}],
		"version":	"iperf 3.12",
		"system_info":	"Linux vm 6.18.44-fc-v1272 #1 SMP PREEMPT_DYNAMIC @0 x86_64",
		"timestamp":	{
			"time":	"Sat, 05 Dec 2026 16:38:14 GMT",
			"timesecs":	1796488694
		},
		"connecting_to":	{
			"host":	"127.0.0.1",
			"port":	33253
		},
		"cookie":	"5wyz5qafbctzuui2zorlogtyqfjfkz45elje",
		"tcp_mss_default":	32768,
		"target_bitrate":	0,
		"sock_bufsize":	0,
		"sndbuf_actual":	16384,
		"rcvbuf_actual":	131072,
		"test_start":	{
			"protocol":	"TCP",
			"num_streams":	1,
			"blksize":	131072,
			"omit":	0,
			"duration":	1,
			"bytes":	0,
			"blocks":	0,
			"reverse":	0,
			"tos":	0,
			"target_bitrate":	0
		}
	},
	"intervals":	[{
			"streams":	[{
					"socket":	5,
					"start":	0,
					"end":	1.000125,
					"seconds":	1.0001250505447388,
					"bytes":	216268800,
					"bits_per_second":	1729934070.802084,
					"retransmits":	0,
					"snd_cwnd":	1047728,
					"snd_wnd":	54272,
					"rtt":	448,
					"rttvar":	502,
					"pmtu":	65535,
					"omitted":	false,
					"sender":	true
				}],
			"sum":	{
				"start":	0,
				"end":	1.000125,
				"seconds":	1.0001250505447388,
				"bytes":	216268800,
				"bits_per_second":	1729934070.802084,
				"retransmits":	0,
				"omitted":	false,
				"sender":	true
			}
		}],
	"end":	{
		"streams":	[{
				"sender":	{
					"socket":	5,
					"start":	0,
					"end":	1.000125,
					"seconds":	1.000125,
					"bytes":	216268800,
					"bits_per_second":	1729934158.2302213,
					"retransmits":	0,
					"max_snd_cwnd":	1047728,
					"max_snd_wnd":	54272,
					"max_rtt":	448,
					"min_rtt":	448,
					"mean_rtt":	448,
					"sender":	true
				},
				"receiver":	{
					"socket":	5,
					"start":	0,
					"end":	1.001467,
					"seconds":	1.000125,
					"bytes":	211449856,
					"bits_per_second":	1689120907.6285088,
					"sender":	true
				}
			}],
		"sum_sent":	{
			"start":	0,
			"end":	1.000125,
			"seconds":	1.000125,
			"bytes":	216268800,
			"bits_per_second":	1729934158.2302213,
			"retransmits":	0,
			"sender":	true
		},
		"sum_received":	{
			"start":	0,
			"end":	1.001467,
			"seconds":	1.001467,
			"bytes":	211449856,
			"bits_per_second":	1689120907.6285088,
			"sender":	true
		},
		"cpu_utilization_percent":	{
			"host_total":	5.8014320841824576,
			"host_user":	0,
			"host_system":	5.8014320841824576,
			"remote_total":	5.27192274822086,
			"remote_user":	0.80889928994177362,
			"remote_system":	4.4629236188209358
		},
		"sender_tcp_congestion":	"bbr",
		"receiver_tcp_congestion":	"bbr"
	}
}
"""

# wrk 4.1.0, `wrk -t1 -c50 -d1s --latency -H 'Connection: close'` through the tunnel
# to nginx 1.22.1 answering "ok".
WRK_THROUGH_TUNNEL = """\
Running 1s test @ http://127.0.0.1:42227/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    46.87ms   14.87ms  91.04ms   65.62%
    Req/Sec     1.05k   265.31     1.40k    60.00%
  Latency Distribution
     50%   44.76ms
     75%   55.78ms
     90%   67.28ms
     99%   85.80ms
  1047 requests in 1.01s, 147.23KB read
Requests/sec:   1041.61
Transfer/sec:    146.48KB
"""


def test_parse_iperf3_through_the_tunnel() -> None:
    assert suite_l4.parse_iperf3(IPERF3_THROUGH_TUNNEL) == pytest.approx(1.6891209)


def test_parse_wrk_through_the_tunnel() -> None:
    r = common.parse_wrk(WRK_THROUGH_TUNNEL)
    assert (r.rps, r.requests, r.errors) == (1041.61, 1047, "")
    assert (r.p50_ms, r.p99_ms) == pytest.approx((44.76, 85.80))


def test_the_suite_is_registered() -> None:
    assert run.SUITE_MODULES["tunnel"] is suite_tunnel
    assert common.SUITE_CONTENDERS["tunnel"] == ("direct", "trioxy")
    assert common.SUITE_BENCHES["tunnel"] == suite_tunnel.BENCHES == ("bulk1", "bulk4", "conns")
    assert set(common.SUITE_TOOLS["tunnel"]) == {"iperf3", "wrk", "nginx", "openssl"}
    assert "tunnel" in run.parse_args([]).suites
    assert "tunnel" in run.parse_args(["--suite", "all"]).suites
    opts = run.parse_args(
        [
            "--suite", "tunnel", "--tunnel-client-cmd", "trioxy run c.py",
            "--tunnel-server-cmd", "trioxy run s.py", "--tunnel-links", "4",
        ]
    )  # fmt: skip
    assert opts.suites == ["tunnel"]
    assert (opts.tunnel_client_cmd, opts.tunnel_server_cmd) == (
        "trioxy run c.py",
        "trioxy run s.py",
    )
    assert opts.tunnel_links == 4
    default = run.parse_args([])
    assert default.tunnel_client_cmd == ".venv/bin/trioxy run scripts/tunnel_client.py"
    assert default.tunnel_server_cmd == ".venv/bin/trioxy run scripts/tunnel_server.py"
    assert default.tunnel_links is None
    only = run.parse_args(["--only", "conns"])
    assert only.only == ["conns"] and only.output is None
    with pytest.raises(SystemExit):
        run.parse_args(["--tunnel-links", "0"])


def test_durations() -> None:
    """bulk1 follows --bulk-duration; bulk4 and conns have their own 5 s default,
    which --duration, --quick and --tunnel-duration change."""
    default = run.parse_args([])
    assert (default.bulk_duration, default.tunnel_duration) == (10.0, 5.0)
    assert run.parse_args(["--quick"]).tunnel_duration == 3.0
    assert run.parse_args(["--duration", "7"]).tunnel_duration == 7.0
    assert run.parse_args(["--duration", "7", "--tunnel-duration", "2"]).tunnel_duration == 2.0
    with pytest.raises(SystemExit):
        run.parse_args(["--tunnel-duration", "0.5"])


def test_default_duration_stays_near_three_minutes() -> None:
    full = run.suite_estimate(run.parse_args(["--suite", "tunnel"]), "tunnel")
    assert 2 * 60 < full <= 3 * 60
    bulk1 = run.suite_estimate(run.parse_args(["--suite", "tunnel", "--only", "bulk1"]), "tunnel")
    assert 60 < bulk1 < full - 60
    assert run.suite_estimate(run.parse_args(["--suite", "tunnel", "--only", "qps"]), "tunnel") == 0
    none = run.parse_args(["--suite", "tunnel", "--contenders", "haproxy"])
    assert run.suite_estimate(none, "tunnel") == 0
    assert run.estimate_seconds(run.parse_args([])) < 25 * 60


def test_load_commands() -> None:
    opts = run.parse_args(["--suite", "tunnel"])
    one = suite_tunnel.iperf3_argv(opts, "/usr/bin/iperf3", 1234, 1)
    assert one == ["/usr/bin/iperf3", "-c", "127.0.0.1", "-p", "1234", "-t", "10", "-J"]
    four = suite_tunnel.iperf3_argv(opts, "iperf3", "PORT", 4)
    assert four == ["iperf3", "-c", "127.0.0.1", "-p", "PORT", "-t", "5", "-P", "4", "-J"]
    wrk = suite_tunnel.wrk_close_argv(opts, "wrk", "http://127.0.0.1:1/")
    assert wrk == [
        "wrk", "-t1", "-c50", "-d5s", "--latency", "-H", "Connection: close", "http://127.0.0.1:1/",
    ]  # fmt: skip
    assert suite_tunnel.shown(opts, wrk) == (
        "taskset -c 1 wrk -t1 -c50 -d5s --latency -H 'Connection: close' http://127.0.0.1:1/"
    )
    unpinned = run.parse_args(["--suite", "tunnel", "--no-pin", "--quick"])
    assert suite_tunnel.shown(unpinned, suite_tunnel.iperf3_argv(unpinned, "iperf3", 1, 4)) == (
        "iperf3 -c 127.0.0.1 -p 1 -t 3 -P 4 -J"
    )


def fake_certificates() -> suite_tunnel.TunnelCertificates:
    d = Path("/d")
    return suite_tunnel.TunnelCertificates(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


def test_tunnel_settings() -> None:
    """The server end lets streams reach the backend only; the client end
    forwards one port to it through the server end, checking its certificate
    for 127.0.0.1, with its own certificate."""
    certs = fake_certificates()
    server = suite_tunnel.server_env("127.0.0.1:9", "127.0.0.1:7", certs)
    assert server == {
        "LISTEN": "127.0.0.1:9",
        "CERT": "/d/server.pem",
        "KEY": "/d/server.key",
        "CA": "/d/ca.pem",
        "ALLOW": "127.0.0.1:7",
    }
    client = suite_tunnel.client_env("127.0.0.1:8", "127.0.0.1:9", "127.0.0.1:7", certs, None)
    assert client == {
        "SERVER": "127.0.0.1:9",
        "SERVER_NAME": "127.0.0.1",
        "CERT": "/d/client.pem",
        "KEY": "/d/client.key",
        "CA": "/d/ca.pem",
        "FORWARD": "127.0.0.1:8=127.0.0.1:7",
    }
    links = suite_tunnel.client_env("127.0.0.1:8", "127.0.0.1:9", "127.0.0.1:7", certs, 3)
    assert links["LINKS"] == "3"


def test_cpu_of_each_end() -> None:
    before = {"tunnel_client": 100, "tunnel_server": 50}
    after = {"tunnel_client": 100 + common.CLK_TCK, "tunnel_server": 50 + common.CLK_TCK // 2}
    cpu = suite_tunnel.part_cpu(before, after, 2.0)
    assert cpu == pytest.approx({"tunnel_client": 50.0, "tunnel_server": 25.0})
    assert suite_tunnel.part_cpu(before, after, 0.0) == {}
    assert suite_tunnel.part_ticks(common.Contender("direct", 1)) == {}


@needs_openssl
def test_certificates_make_a_mutual_tls_handshake(tmp_path: Path) -> None:
    """The server certificate is valid for 127.0.0.1 and the client's is
    accepted by a server requiring one, both issued by the suite's CA."""
    certs = suite_tunnel.make_certificates(str(shutil.which("openssl")), tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(certs.server_cert), str(certs.server_key))
    server_ctx.load_verify_locations(str(certs.ca))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(certs.ca))
    client_ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    seen: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            raw, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(raw, server_side=True) as tls:
                    seen.append(tls.getpeercert())
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError) as exc:
                seen.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            port = listener.getsockname()[1]
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    assert tls.recv(2) == b"ok"
        finally:
            thread.join(timeout=10)
    [peer] = seen
    assert isinstance(peer, dict)
    assert (("commonName", "tunnel client"),) in peer["subject"]


def echo(conn: socket.socket) -> None:
    """Echo the connection's bytes until its end."""
    while data := conn.recv(65536):
        conn.sendall(data)


@needs_openssl
def test_the_tunnel_ends_start_and_carry_bytes(tmp_path: Path) -> None:
    """The suite's real settings: both scripts start, a connection to the client
    end's FORWARD port reaches the backend through the mutual-TLS link, and the
    report shows placeholders, not temporary paths or ports."""
    opts = run.parse_args(["--suite", "tunnel", "--no-pin", "--tunnel-links", "1"])
    reg = common.ProcessRegistry(tmp_path, pin=False)
    taken: set[int] = set()
    certs = suite_tunnel.make_certificates(str(shutil.which("openssl")), tmp_path)
    try:
        with threaded_server(echo) as backend:
            direct, tunnel = suite_tunnel.start_contenders(reg, opts, backend, taken, certs, "test")
            assert (direct.name, direct.port, direct.procs) == ("direct", backend, [])
            assert (tunnel.name, tunnel.error, tunnel.skipped) == ("trioxy", None, None)
            assert len(tunnel.procs) == 2 and all(p.alive() for p in tunnel.procs)
            payload = bytes(range(256)) * 4096  # 1 MiB
            with socket.create_connection(("127.0.0.1", tunnel.port), timeout=20) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while chunk := s.recv(65536):
                    got += chunk
            assert got == payload
            assert set(suite_tunnel.part_ticks(tunnel)) == {"tunnel_client", "tunnel_server"}
            assert "ALLOW=127.0.0.1:BACKEND_PORT" in tunnel.command
            assert "FORWARD=127.0.0.1:PORT=127.0.0.1:BACKEND_PORT" in tunnel.command
            assert "LINKS=1" in tunnel.command and "CERT=DIR/client.pem" in tunnel.command
            assert str(tmp_path) not in tunnel.command and str(backend) not in tunnel.command
    finally:
        reg.stop_all()


def test_a_missing_tunnel_script_is_skipped(tmp_path: Path) -> None:
    opts = run.parse_args(
        ["--suite", "tunnel", "--no-pin", "--tunnel-server-cmd", "trioxy run scripts/nope.py"]
    )
    reg = common.ProcessRegistry(tmp_path, pin=False)
    try:
        _, tunnel = suite_tunnel.start_contenders(reg, opts, 1, set(), fake_certificates(), "t")
    finally:
        reg.stop_all()
    assert tunnel.skipped == "scripts/nope.py missing" and tunnel.procs == []


def contender(name: str, *values: float, client: float = 0, server: float = 0) -> common.Contender:
    c = common.Contender(name, 1)
    parts = {"tunnel_client": client, "tunnel_server": server} if name != "direct" else {}
    c.samples = [
        common.Sample(
            v,
            cpu_pct=(client + server) if parts else None,
            p50_ms=1.0,
            p99_ms=4.0,
            part_cpu_pct=dict(parts),
        )
        for v in values
    ]
    return c


def test_end_notes() -> None:
    [saturated] = suite_tunnel.end_notes(
        [contender("direct", 18.0), contender("trioxy", 1.6, client=55, server=45)], "Gbit/s"
    )
    assert "`tunnel_client.py` 55 %, `tunnel_server.py` 45 %" in saturated
    assert "at most about 2.91 Gbit/s" in saturated  # 1.6 * 100 / 55
    [idle] = suite_tunnel.end_notes([contender("trioxy", 1.0, client=30, server=20)], "Gbit/s")
    assert "`tunnel_client.py` 30 %" in idle and "at most" not in idle  # not the limit


def test_render_tunnel_section(tmp_path: Path) -> None:
    opts = run.parse_args(["--suite", "tunnel"])
    gbit = suite_l4.parse_iperf3(IPERF3_THROUGH_TUNNEL)
    conns = common.parse_wrk(WRK_THROUGH_TUNNEL).rps
    results = [
        suite_tunnel.bulk_result(
            opts,
            1,
            [
                contender("direct", 18.76, 18.5),
                contender("trioxy", gbit, 1.66, client=55, server=45),
            ],
        ),
        suite_tunnel.bulk_result(
            opts, 4, [contender("direct", 18.35), contender("trioxy", 1.83, client=54, server=45)]
        ),
        suite_tunnel.conns_result(
            opts,
            [contender("direct", 12103.5), contender("trioxy", conns, client=45, server=55)],
            'return 200 "ok";',
        ),
    ]
    text = suite_tunnel.render_section(opts, results, {}, "today", 170.0, 0.0)
    assert text.startswith("## TLS tunnel (tunnel_client.py → tunnel_server.py)")
    assert "`bench/run.py --suite tunnel`" in text
    assert "both tunnel ends run on the proxy CPU" in text and "`LINKS` = 2" in text
    assert "### Tunnel bulk throughput (iperf3, 1 stream, 10 s)" in text
    assert "### Tunnel bulk throughput (iperf3, 4 parallel streams, `-P 4`, 5 s)" in text
    assert "| trioxy | 1.67 | 1.69, 1.66 |" in text  # median of the captured run and another
    assert "| trioxy / direct | 0.09 |" in text
    assert "-H 'Connection: close'" in text and "| trioxy | 1,042 |" in text
    assert "`tunnel_client.py` 45 %, `tunnel_server.py` 55 %" in text
    assert "taskset -c 1 iperf3 -c 127.0.0.1 -p PORT -t 10 -J" in text
    assert "taskset -c 1 iperf3 -c 127.0.0.1 -p PORT -t 5 -P 4 -J" in text
    assert 'return 200 "ok";' in text
    assert "Target:" not in text  # no target: ratios only
    assert_replaces_only_its_section(tmp_path, "tunnel", text)
