"""The L4 proxy of scripts/tcp_proxy.py with one pass-through filter in front of
``connect``: every chunk now travels as a ``Data`` event through the engine (the
runtime's reader, the filter chain, connect's writer and reader) instead of being
spliced in the kernel. The bench's ``trioxy-events`` contender runs it to measure
the engine's per-event cost on the same workload.

Environment: ``LISTEN`` and ``UPSTREAMS`` (one ``host:port``), set by bench/run.py.
"""

import os

from pipeline import Proxy


def ignore(ctx: object, data: bytes) -> None:
    """Reads nothing, changes nothing: only there to keep the bytes in Python."""


proxy = Proxy()
proxy.listen(os.environ["LISTEN"]).handle_data(ignore).connect(os.environ["UPSTREAMS"])
