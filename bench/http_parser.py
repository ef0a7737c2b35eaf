"""Micro benchmark: requests/s parsed by protocols.http's RequestParser and by h11, one core.

Run: ``.venv/bin/python bench/http_parser.py [seconds]`` (default 2 s per contender).

The request is what curl sends for a small POST (six header fields and a 13-byte
body), fed whole, once per iteration: the hot path of a keep-alive proxy. h11 runs as
a server connection, answering each request with an empty response so it can read
the next; that answer costs h11 a little serialization, so its number is taken both
with and without the cycle (a fresh connection per request).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h11

from protocols.http.parser import RequestParser

REQUEST = (
    b"POST /api/items?page=2 HTTP/1.1\r\n"
    b"Host: example.com:8080\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"Content-Type: application/json\r\n"
    b"X-Request-Id: 5f1c2a9e-0b7d-4f3e-9a61-2d8c7e4b1a03\r\n"
    b"Content-Length: 13\r\n"
    b"\r\n"
    b'{"id": 12345}'
)


def ours() -> Callable[[], None]:
    parser = RequestParser()
    feed = parser.feed

    def one() -> None:
        feed(REQUEST)

    return one


def h11_keep_alive() -> Callable[[], None]:
    conn = h11.Connection(h11.SERVER)
    response = h11.Response(status_code=200, headers=[("Content-Length", "0")])
    end = h11.EndOfMessage()

    def one() -> None:
        conn.receive_data(REQUEST)
        while True:
            event = conn.next_event()
            if type(event) is h11.EndOfMessage:
                break
        conn.send(response)
        conn.send(end)
        conn.start_next_cycle()

    return one


def h11_parse_only() -> Callable[[], None]:
    def one() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        while type(conn.next_event()) is not h11.EndOfMessage:
            pass

    return one


def rate(make: Callable[[], Callable[[], None]], seconds: float) -> float:
    one = make()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            one()
        count += 1000
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    results = {
        "protocols.http RequestParser": rate(ours, seconds),
        "h11 (keep-alive cycle)": rate(h11_keep_alive, seconds),
        "h11 (parse only, new connection)": rate(h11_parse_only, seconds),
    }
    base = results["protocols.http RequestParser"]
    for name, value in results.items():
        print(f"{name:36} {value:>10,.0f} req/s  ({base / value:.1f}x)")


if __name__ == "__main__":
    main()
