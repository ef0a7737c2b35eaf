"""The ``trioxy`` command: run and check pipeline scripts.

Exit status: 0 on a clean stop, 2 when the script or its configuration is wrong
(one line ``file:line: reason`` on stderr, no traceback), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import trio

from .errors import ConfigError
from .graph import render
from .runtime import bind_listeners, serve
from .script import Script, load_script

__all__ = ["main"]

log = logging.getLogger("trioxy")

EPILOG = """\
examples:
  trioxy run scripts/tcp_proxy.py                 run a script until SIGINT/SIGTERM
  LISTEN=0.0.0.0:9000 trioxy run scripts/tcp_proxy.py
  trioxy run --workers 2 scripts/tcp_proxy.py     two processes sharing the ports
  trioxy check scripts/tcp_proxy.py               validate, print the pipeline graph

Scripts read their settings from environment variables: see each script's
docstring (trioxy check prints nothing of it; read the file's first lines).
exit status: 0 clean stop, 2 script/configuration error, 1 other failure.
"""


def _version() -> str:
    try:
        return version("trioxy")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioxy",
        description="A programmable network proxy: run Python pipeline scripts on Trio.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trioxy {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="run a pipeline script",
        description="Load SCRIPT, bind its listeners and serve until SIGINT or SIGTERM. "
        "The first signal stops accepting and lets open streams finish within the grace "
        "period; a second one stops at once.",
    )
    run.add_argument("script", metavar="SCRIPT", help="path of the pipeline script (.py)")
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="serve with N processes sharing the listening ports (SO_REUSEPORT); default 1",
    )
    run.add_argument(
        "--grace-period",
        type=_non_negative_float,
        default=30.0,
        metavar="SECONDS",
        help="how long open streams may finish after a shutdown signal; default 30",
    )
    _log_options(run)

    check = commands.add_parser(
        "check",
        help="validate a script and print its pipeline graph",
        description="Load SCRIPT, validate every layout and print listeners, named "
        "pipelines, filters and sub-pipelines, without opening a socket. Exit 2 with "
        "file:line: reason when the script is wrong.",
    )
    check.add_argument("script", metavar="SCRIPT", help="path of the pipeline script (.py)")
    _log_options(check)
    return parser


def _log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("TRIOXY_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="least severe log level printed to stderr; default info "
        "(environment: TRIOXY_LOG_LEVEL)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioxy`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        script = load_script(args.script)
        if args.command == "check":
            sys.stdout.write(render(script.listeners, script.layouts))
            return 0
        raise_open_file_limit()
        tune_gc()
        if args.workers > 1:
            return _run_workers(script, args.workers, args.grace_period)
        trio.run(_serve, script, args.grace_period, False)
        return 0
    except ConfigError as exc:
        print(f"trioxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard limit: a proxy holds two sockets
    per stream, and the zero-copy relay two pipes more, so the usual soft limit of
    1024 would cap it near 170 streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)


def tune_gc() -> None:
    """Set the cyclic garbage collector up for serving, once the script is loaded.

    What exists by then (modules, the script's layouts, pools, compiled regexes)
    lives as long as the process: ``gc.freeze()`` moves it out of the collector's
    reach, so that a full collection no longer walks it (a pause that showed in
    the p99 of the http bench). Freezing before ``--workers`` fork also keeps the
    frozen pages shared between the workers. The thresholds stay CPython's: a
    closed pipeline breaks its own reference cycles (see
    :meth:`pipeline.live.Pipeline.close`), so little is left for the collector,
    and higher thresholds measured no faster while holding more garbage (the
    TLS objects of closed connections) between passes."""
    gc.freeze()


async def _serve(script: Script, grace_period: float, reuse_port: bool) -> None:
    await serve(script.listeners, grace_period=grace_period, reuse_port=reuse_port)


def _run_workers(script: Script, workers: int, grace_period: float) -> int:
    # Bind (and release) every listener once here, so a port in use is reported
    # once by the parent instead of once per worker.
    async def probe() -> None:
        for listener in await bind_listeners(script.listeners, reuse_port=True):
            listener.sock.close()

    trio.run(probe)
    children: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:  # the worker: serve, then leave without running the parent's code
            code = 0
            try:
                trio.run(_serve, script, grace_period, True)
            except ConfigError as exc:
                print(f"trioxy: worker {index}: {exc}", file=sys.stderr)
                code = 2
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    log.info("started %d workers: %s", workers, ", ".join(map(str, children)))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    for child in children:
        _, raw = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(raw)
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            status = status or (code if code > 0 else 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
