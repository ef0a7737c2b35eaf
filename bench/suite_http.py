"""The ``http`` suite: an HTTP reverse proxy, trioxy's ``scripts/reverse_proxy.py``
against nginx ``proxy_pass`` (keep-alive upstream), HAProxy ``mode http`` and a
direct connection, to an nginx backend, with wrk: a 2-byte body (req/s, p50/p99)
and a 1 MiB static file (MiB/s). Ratios and targets are against nginx.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import (
    HTTP_RATIO_PAIRS,
    NGINX_BACKEND_COMMAND,
    TIMES,
    BenchError,
    BenchResult,
    Contender,
    Options,
    ProcessRegistry,
    Sample,
    check_and_warm_up,
    interleave,
    log,
    parse_wrk,
    proxy_configs,
    run_tool,
    section_renderer,
    start_backend_nginx,
    start_contenders,
    stop_contenders,
    suite_contenders,
    wrk_argv,
    wrk_command,
    wrk_flags,
)

#: The benchmarks, in order (``--only small`` / ``--only large``).
BENCHES = ("small", "large")
#: The large response's size.
LARGE_SIZE = 1 << 20
#: Per-run overhead on top of wrk's duration (warm-up aside): starting wrk, reading /proc.
RUN_OVERHEAD_S = 1.0
#: Per-benchmark overhead: starting and checking the contenders.
SETUP_S = 5.0


def estimate_seconds(opts: Options, contenders: int) -> float:
    """How long the suite takes with ``contenders`` contenders, without retries."""
    runs = len([b for b in BENCHES if b in opts.only]) * contenders
    per_run = opts.rps_duration + RUN_OVERHEAD_S
    setup = SETUP_S + contenders * (opts.warmup + 1.0)
    return runs * opts.reps * per_run + len(BENCHES) * setup


def run_suite(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """Run the suite's benchmarks chosen with ``--only``."""
    log(
        f"suite http: contenders {','.join(suite_contenders(opts, 'http'))}, {opts.reps} reps, "
        f"{', '.join(b for b in BENCHES if b in opts.only)}, {opts.rps_duration:g}s each"
    )
    return bench_http(reg, opts, tools, tmp, taken)


def large_payload() -> bytes:
    """The http suite's 1 MiB file: varied bytes, so a proxy that corrupts or
    truncates the body fails the check."""
    return bytes(range(256)) * (LARGE_SIZE // 256)


def bench_http(
    reg: ProcessRegistry, opts: Options, tools: dict[str, str], tmp: Path, taken: set[int]
) -> list[BenchResult]:
    """The http suite: wrk through each contender to an nginx backend, for a tiny
    response (``/``) and a 1 MiB file (``/1m.bin``). One backend serves both
    benchmarks; the contenders are started afresh for each (peak RSS per benchmark)."""
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    payload = large_payload()
    (www / "1m.bin").write_bytes(payload)
    nginx, backend_port, backend_config = start_backend_nginx(
        reg, opts, tools, tmp, taken, "nginx-http-backend.conf", "nginx-backend", www=str(www)
    )
    backend_config = backend_config.replace(str(www), "DIR/www")
    results: list[BenchResult] = []
    try:
        for which in (b for b in BENCHES if b in opts.only):
            large = which == "large"
            path, expected = ("/1m.bin", payload) if large else ("/", b"ok")
            label = f"http-{which}"
            contenders = start_contenders(
                reg, opts, tools, backend_port, taken, tmp, label, suite="http"
            )
            try:
                check_and_warm_up(contenders, path, expected, opts, tools, label)

                def run(c: Contender, path: str = path, large: bool = large) -> Sample:
                    text = run_tool(
                        wrk_argv(opts, tools, f"http://127.0.0.1:{c.port}{path}"),
                        timeout=opts.rps_duration + 30,
                        pin_cpu=opts.load_cpu,
                        pin=opts.pin,
                    )
                    r = parse_wrk(text)
                    if r.mib_s is None:
                        raise BenchError("wrk: no Transfer/sec in its output")
                    return Sample(
                        r.mib_s if large else r.rps,
                        p50_ms=r.p50_ms,
                        p99_ms=r.p99_ms,
                        note=r.errors,
                        rps=r.rps,
                        mib_s=r.mib_s,
                    )

                interleave(contenders, run, label, opts, reg)
            finally:
                stop_contenders(reg, contenders)
            url = f"http://127.0.0.1:PORT{path}"
            # The 1 MiB file is measured in MiB/s, the small responses in req/s
            # (with a p99 target); each shows the other rate as its second column.
            if large:
                title = f"HTTP 1 MiB responses ({wrk_flags(opts)}, nginx static file)"
                unit, secondary, ratio, p99_target_ms = "MiB/s", "rps", 0.5, None
                target = f"1 MiB throughput (MiB/s) ≥ 0.5 {TIMES} nginx"
            else:
                title = f'HTTP small responses ({wrk_flags(opts)}, nginx `return 200 "ok"`)'
                unit, secondary, ratio, p99_target_ms = "req/s", "mib_s", 0.30, 5.0
                target = f"small-response RPS ≥ 0.30 {TIMES} nginx"
            results.append(
                BenchResult(
                    key=label,
                    title=title,
                    unit=unit,
                    target_ratio=ratio,
                    target_text=target,
                    load_command=wrk_command(opts, url),
                    backend_command=NGINX_BACKEND_COMMAND.format(cpu=opts.load_cpu),
                    contenders=contenders,
                    backend_config=backend_config,
                    latency=True,
                    reference="nginx",
                    ratio_pairs=HTTP_RATIO_PAIRS,
                    secondary=secondary,
                    p99_target_ms=p99_target_ms,
                )
            )
    finally:
        reg.stop(nginx)
    return results


render_section = section_renderer(
    "http",
    "HTTP (reverse proxy)",
    "Every contender keeps its upstream connections alive (nginx: `keepalive 32`, "
    "HAProxy: `http-reuse always`); *direct* is wrk against the backend itself. "
    "*trioxy* is `scripts/reverse_proxy.py`. Ratios and targets are against nginx; "
    "MiB/s is wrk's Transfer/sec (its MB are MiB).",
    proxy_configs(
        "nginx proxy config (`proxy_pass` to a keep-alive `upstream`, one worker):",
        "HAProxy config (`mode http`, `http-reuse always`, `nbthread 1`):",
        "nginx backend config (`/` for the small responses, `/1m.bin` for the 1 MiB file):",
    ),
)
