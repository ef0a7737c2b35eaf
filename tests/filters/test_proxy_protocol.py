"""accept_proxy_protocol / connect_proxy_protocol: in memory, over loopback, and with curl."""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import filters.proxy_protocol
from pipeline import ConfigError, Context, Data, Proxy, ReadTimeout, StreamEnd
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.proxy_protocol import (
    TLV,
    Command,
    Family,
    ProtocolError,
    ProxyHeader,
    TLVType,
    encode,
    parse,
)
from tests.helpers import serving

V1 = b"PROXY TCP4 203.0.113.9 198.51.100.1 5555 443\r\n"


def test_docstring_example_runs() -> None:
    doc = filters.proxy_protocol.__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/proxy_protocol.py", "exec"), {})


def test_bad_arguments_are_load_errors() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match="timeout"):
        proxy.pipeline("a").accept_proxy_protocol(timeout=0).to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="version"):
        proxy.pipeline("b").connect_proxy_protocol(version=3)
    with pytest.raises(ConfigError, match="version=2"):
        proxy.pipeline("c").connect_proxy_protocol(tlvs=[(1, b"h2")])
    with pytest.raises(ConfigError, match="0-255"):
        proxy.pipeline("d").connect_proxy_protocol(version=2, tlvs=[(256, b"")])


# accept_proxy_protocol, in memory ------------------------------------------------


@dataclass
class Seen:
    contexts: list[Context] = field(default_factory=list)


def receiver(timeout: float = 5.0) -> tuple[Proxy, Seen]:
    """accept_proxy_protocol whose sub-pipeline records its context and echoes."""
    seen = Seen()
    proxy = Proxy()
    (
        proxy.pipeline("in")
        .accept_proxy_protocol(timeout=timeout)
        .to(lambda p: p.handle_stream_start(seen.contexts.append))
    )
    return proxy, seen


REAL = Context(local=("10.0.0.2", 8443), remote=("10.0.0.1", 40000))


async def test_v2_header_split_byte_by_byte() -> None:
    proxy, seen = receiver()
    header = ProxyHeader.from_addresses(
        ("2001:db8::9", 5555), ("2001:db8::1", 443), version=2, tlvs=(TLV(TLVType.ALPN, b"h2"),)
    )
    wire = encode(header) + b"hello"
    async with open_pipeline(
        proxy.layout("in"), Context(local=REAL.local, remote=REAL.remote)
    ) as h:
        for i in range(len(wire)):
            await h.send(Data(wire[i : i + 1]))
        await h.send(StreamEnd())
        out = await h.settle()
    assert join_data(out) == b"hello" and out[-1] == StreamEnd()
    (ctx,) = seen.contexts
    assert ctx.remote == ("2001:db8::9", 5555) and ctx.local == ("2001:db8::1", 443)
    assert ctx.client_address == ctx.remote and ctx.proxy_address == ("10.0.0.1", 40000)
    assert ctx.proxy_protocol == header and ctx.proxy_protocol.tlv(TLVType.ALPN) == b"h2"


@pytest.mark.parametrize(
    "wire",
    [
        b"PROXY UNKNOWN\r\n",
        encode(ProxyHeader(2, Command.LOCAL)),  # a health check by the balancer itself
        encode(ProxyHeader(2, Command.PROXY, Family.UNSPEC)),
    ],
    ids=["v1-unknown", "v2-local", "v2-unspec"],
)
async def test_headers_without_addresses_keep_the_real_ones(wire: bytes) -> None:
    proxy, seen = receiver()
    out = await run_layout(
        proxy.layout("in"),
        [Data(wire + b"x"), StreamEnd()],
        context=Context(local=REAL.local, remote=REAL.remote),
    )
    assert out == [Data(b"x"), StreamEnd()]
    (ctx,) = seen.contexts
    assert ctx.remote == REAL.remote and ctx.local == REAL.local
    assert ctx.client_address == REAL.remote and not ctx.proxy_protocol.proxied


@pytest.mark.parametrize(
    ("inputs", "reason"),
    [
        ([Data(b"GET / HTTP/1.1\r\n\r\n")], "not a PROXY protocol header"),
        ([Data(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\nhello")], "out of range"),
        ([Data(b"PROXY TCP4 1.2"), StreamEnd()], "ended inside the header"),
    ],
)
async def test_malformed_header_closes_with_one_log_line(
    inputs: list[Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, seen = receiver()
    with caplog.at_level(logging.INFO, logger="trioxy"):
        out = await run_layout(proxy.layout("in"), [*inputs, Data(b"more"), StreamEnd()])
    assert len(out) == 1 and isinstance(out[0], StreamEnd)
    assert isinstance(out[0].error, ProtocolError) and reason in str(out[0].error)
    assert seen.contexts == []  # the sub-pipeline never opened
    lines = [r for r in caplog.records if r.name.startswith("trioxy")]
    assert len(lines) == 1 and reason in lines[0].getMessage()
    assert lines[0].levelno == logging.WARNING


async def test_an_empty_stream_ends_quietly(caplog: pytest.LogCaptureFixture) -> None:
    proxy, seen = receiver()
    with caplog.at_level(logging.INFO, logger="trioxy"):
        assert await run_layout(proxy.layout("in"), [StreamEnd()]) == [StreamEnd()]
    assert seen.contexts == [] and not caplog.records


async def test_incomplete_header_times_out(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, seen = receiver(timeout=3)
    async with open_pipeline(proxy.layout("in")) as h:
        await h.send(Data(b"PROXY TCP4 1.2.3.4 "))
        start = trio.current_time()
        await h.ended.wait()
        assert trio.current_time() - start == pytest.approx(3)
    (end,) = h.output
    assert isinstance(end, StreamEnd) and isinstance(end.error, ReadTimeout)
    assert seen.contexts == []
    assert [r.getMessage() for r in caplog.records if r.name == "trioxy.proxy_protocol"] == [
        "127.0.0.1:0: bad PROXY protocol header: no complete PROXY protocol header after 3s"
    ]


async def test_a_complete_header_stops_the_timer(autojump_clock: trio.testing.MockClock) -> None:
    proxy, _ = receiver(timeout=1)
    async with open_pipeline(proxy.layout("in")) as h:
        await h.send(Data(V1))
        await trio.sleep(5)
        await h.send(Data(b"late"), StreamEnd())
        await h.ended.wait()
    assert h.output == [Data(b"late"), StreamEnd()]


# connect_proxy_protocol, in memory -------------------------------------------------


async def test_connect_v2_with_tlvs_from_the_context() -> None:
    proxy = Proxy()
    (
        proxy.pipeline("out").connect_proxy_protocol(
            version=2, tlvs=lambda ctx: [(TLVType.AUTHORITY, ctx.sni.encode())]
        )
    )
    ctx = Context(local=("::ffff:192.0.2.1", 443), remote=("198.51.100.7", 61000))
    ctx.set(sni="example.com")
    out = await run_layout(proxy.layout("out"), [Data(b"a"), Data(b"b"), StreamEnd()], context=ctx)
    wire = join_data(out)
    header, size = parse(wire) or (None, 0)
    assert header is not None and wire[size:] == b"ab" and out[-1] == StreamEnd()
    assert header.family is Family.INET
    assert header.source == ("198.51.100.7", 61000) and header.destination == ("192.0.2.1", 443)
    assert header.authority == "example.com"


async def test_connect_sends_the_header_even_for_an_empty_stream() -> None:
    proxy = Proxy()
    proxy.pipeline("out").connect_proxy_protocol()
    ctx = Context(local=("192.0.2.1", 443), remote=("198.51.100.7", 61000))
    out = await run_layout(proxy.layout("out"), [StreamEnd()], context=ctx)
    assert out == [Data(b"PROXY TCP4 198.51.100.7 192.0.2.1 61000 443\r\n"), StreamEnd()]


# Over loopback ---------------------------------------------------------------------


@dataclass
class Backend:
    """A TCP server that records what each connection sent, and answers
    ``b"got " + everything`` only after the client's half-close (so a lost
    half-close shows as a hang, a lost byte as a wrong answer)."""

    port: int = 0
    received: list[bytes] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
            self.received.append(b"".join(chunks))
            await stream.send_all(b"got " + b"".join(chunks))


@asynccontextmanager
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, b.handle, 0, host="127.0.0.1"))
        b.port = listeners[0].socket.getsockname()[1]
        yield b
        nursery.cancel_scope.cancel()


async def exchange(port: int, payload: bytes) -> tuple[bytes, tuple[str, int]]:
    """Send ``payload``, half-close, read to the end; the answer and our address."""
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            address = stream.socket.getsockname()
            await stream.send_all(payload)
            await stream.send_eof()
            chunks = []
            while data := await stream.receive_some(65536):
                chunks.append(data)
            return b"".join(chunks), (address[0], address[1])


async def test_connect_v1_header_byte_exact_and_half_close() -> None:
    async with backend() as b:
        proxy = Proxy()
        proxy.listen("127.0.0.1:0").connect_proxy_protocol().connect(f"127.0.0.1:{b.port}")
        async with serving(proxy) as server:
            listen_port = server.ports[0]
            answer, (host, port) = await exchange(listen_port, b"payload")
    expected = f"PROXY TCP4 {host} 127.0.0.1 {port} {listen_port}\r\n".encode() + b"payload"
    assert b.received == [expected]
    assert answer == b"got " + expected


async def test_accept_then_connect_chains_the_client_end_to_end() -> None:
    """client --v1--> A (accept, then connect v2) --> B (accept) --> backend"""
    async with backend() as b:
        seen: list[Context] = []
        back = Proxy()
        (
            back.listen("127.0.0.1:0")
            .accept_proxy_protocol()
            .to(lambda p: p.handle_stream_start(seen.append).connect(f"127.0.0.1:{b.port}"))
        )
        async with serving(back) as b_server:
            front = Proxy()
            (
                front.listen("127.0.0.1:0")
                .accept_proxy_protocol()
                .to(
                    lambda p: p.connect_proxy_protocol(version=2).connect(
                        f"127.0.0.1:{b_server.ports[0]}"
                    )
                )
            )
            async with serving(front) as a_server:
                answer, _ = await exchange(a_server.ports[0], V1 + b"body")
    assert answer == b"got body" and b.received == [b"body"]
    (ctx,) = seen
    assert ctx.remote == ("203.0.113.9", 5555) and ctx.local == ("198.51.100.1", 443)
    assert ctx.proxy_protocol.version == 2 and ctx.proxy_address[0] == "127.0.0.1"


async def test_curl_haproxy_protocol() -> None:
    """A real sender: curl's ``--haproxy-protocol`` (v1) to a listener that answers
    with what it learned."""

    def whoami(ctx: Context, request: Any) -> dict[str, Any]:
        header = ctx.proxy_protocol
        return {"version": header.version, "client": list(ctx.remote), "local": list(ctx.local)}

    proxy = Proxy()
    (
        proxy.listen("127.0.0.1:0")
        .accept_proxy_protocol()
        .to(lambda p: p.demux_http().to(lambda q: q.serve_http(whoami)))
    )
    async with serving(proxy) as server:
        port = server.ports[0]
        url = f"http://127.0.0.1:{port}/"
        argv = ["curl", "-sS", "--max-time", "10", "--haproxy-protocol", url]
        with_header = await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
        without = await trio.run_process(
            ["curl", "-sS", "--max-time", "10", url],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    answer = json.loads(with_header.stdout)
    assert answer["version"] == 1 and answer["local"] == ["127.0.0.1", port]
    assert answer["client"][0] == "127.0.0.1" and answer["client"][1] != port
    # Without the header the stream is closed unanswered: curl's "empty reply".
    assert without.returncode == 52, without.stderr


async def test_the_header_goes_out_at_once_for_a_server_that_speaks_first() -> None:
    """Like Postfix behind HAProxy: the server reads the header, then greets; the
    client sends nothing before the greeting."""
    headers: list[bytes] = []

    async def greet_after_the_header(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n" not in data:
                chunk = await stream.receive_some(256)
                if not chunk:
                    return
                data += chunk
            headers.append(data)
            await stream.send_all(b"220 ready\r\n")
            while chunk := await stream.receive_some(256):
                await stream.send_all(chunk)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, greet_after_the_header, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        proxy = Proxy()
        proxy.listen("127.0.0.1:0").connect_proxy_protocol().connect(f"127.0.0.1:{port}")
        async with serving(proxy) as server:
            with trio.fail_after(10):
                async with await trio.open_tcp_stream("127.0.0.1", server.ports[0]) as client:
                    assert await client.receive_some(256) == b"220 ready\r\n"
                    await client.send_all(b"QUIT\r\n")
                    assert await client.receive_some(256) == b"QUIT\r\n"
        nursery.cancel_scope.cancel()
    assert len(headers) == 1 and headers[0].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
