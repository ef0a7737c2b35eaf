"""accept_socks / connect_socks: in memory, with curl, against each other and against Dante."""

from __future__ import annotations

import logging
import os
import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import filters.socks
from filters.socks import SocksError, reply_for
from pipeline import (
    ConfigError,
    ConnectRefused,
    ConnectTimeout,
    Context,
    Data,
    PipelineError,
    Proxy,
    StreamEnd,
)
from pipeline.testing import join_data, open_pipeline, run_layout
from protocols.socks5 import (
    COMMAND_NOT_SUPPORTED,
    CONNECTION_REFUSED,
    GENERAL_FAILURE,
    HOST_UNREACHABLE,
    NETWORK_UNREACHABLE,
    USERNAME_PASSWORD,
    AddressType,
    ClientHandshake,
    Command,
    Greeting,
    Refused,
    Reply,
    Request,
    UserPass,
    encode,
)
from tests.helpers import free_port
from tests.tunnel_helpers import backend, curl, daemon, exchange, serving, to_target, web

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tunnels.md"


def test_docstring_example_runs() -> None:
    doc = filters.socks.__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/socks.py", "exec"), {})


#: A ```python block right after a line ``<!-- runnable -->``.
RUNNABLE = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```", re.S | re.M)


def runnable_blocks() -> list[tuple[int, str]]:
    text = DOCS.read_text()
    return [(text.count("\n", 0, m.start(1)), m.group(1)) for m in RUNNABLE.finditer(text)]


def test_the_guide_has_runnable_examples() -> None:
    assert len(runnable_blocks()) >= 3


@pytest.mark.parametrize(
    ("offset", "code"), runnable_blocks(), ids=lambda v: f"line{v}" if isinstance(v, int) else ""
)
def test_guide_example(offset: int, code: str) -> None:
    # Padded so that a failure points at the line in docs/tunnels.md.
    exec(compile("\n" * offset + code, str(DOCS), "exec"), {"__name__": "docs_tunnels_example"})


def test_bad_arguments_are_load_errors() -> None:
    proxy = Proxy()
    with pytest.raises(ConfigError, match="users"):
        proxy.pipeline("a").accept_socks(users=["ann"]).to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="allow"):
        proxy.pipeline("b").accept_socks(allow="everyone").to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="timeout"):
        proxy.pipeline("c").accept_socks(timeout=-1).to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="expected 'host:port'"):
        proxy.pipeline("d").connect_socks("nowhere").to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="password"):
        proxy.pipeline("e").connect_socks("h:1", password="pw").to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="username"):
        proxy.pipeline("f").connect_socks("h:1", username="u" * 300).to(lambda p: p.dump())


def test_reply_codes_for_connect_failures() -> None:
    assert reply_for(None) == 0
    assert reply_for(ConnectRefused("no upstream answered: a:1: connection refused")) == 5
    assert reply_for(ConnectRefused("no upstream answered: a:1: no route to host")) == 4
    assert reply_for(ConnectRefused("a:1: cannot resolve 'a' (Name or service not known)")) == 4
    assert reply_for(ConnectRefused("a:1: network is unreachable")) == NETWORK_UNREACHABLE
    assert reply_for(ConnectTimeout("timed out after 5s")) == HOST_UNREACHABLE
    assert reply_for(SocksError("far end said no", reply=CONNECTION_REFUSED)) == 5
    assert reply_for(PipelineError("the target function failed")) == GENERAL_FAILURE


# In memory ---------------------------------------------------------------------------


async def test_other_commands_are_not_supported(caplog: pytest.LogCaptureFixture) -> None:
    proxy = Proxy()
    proxy.pipeline("s").accept_socks().to(lambda p: p.dump())
    client = ClientHandshake("example.com", 80, command=Command.BIND)
    caplog.set_level(logging.INFO, logger="trioxy")
    async with open_pipeline(proxy.layout("s")) as h:
        await h.send(Data(client.start()))
        await h.settle()
        await h.send(Data(client.receive(join_data(h.output))))
        out = await h.settle()
    with pytest.raises(Refused, match="command not supported") as info:
        client.receive(join_data(out)[2:])
    assert info.value.reply == COMMAND_NOT_SUPPORTED and out[-1] == StreamEnd()
    assert "SOCKS command 2 to example.com:80 not supported" in caplog.text


@pytest.mark.parametrize(
    ("wire", "answer", "reason"),
    [
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"", "version 4"),  # a SOCKS4 client
        (b"\x05\x01\x00\x05\x01\x00\x09", b"\x05\x00\x05\x08\x00\x01" + bytes(6), "address type"),
    ],
)
async def test_malformed_handshake_one_warning(
    wire: bytes, answer: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy()
    seen: list[Context] = []
    proxy.pipeline("s").accept_socks().to(lambda p: p.handle_stream_start(seen.append))
    with caplog.at_level(logging.INFO, logger="trioxy"):
        out = await run_layout(proxy.layout("s"), [Data(wire), Data(b"more"), StreamEnd()])
    assert join_data(out) == answer and out[-1] == StreamEnd() and not seen
    lines = [r for r in caplog.records if r.name.startswith("trioxy")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert reason in lines[0].getMessage()


async def test_handshake_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy()
    proxy.pipeline("s").accept_socks(timeout=4).to(lambda p: p.dump())
    async with open_pipeline(proxy.layout("s")) as h:
        await h.send(Data(b"\x05\x01\x00\x05\x01"))  # greeting, half a request
        await h.ended.wait()
    assert h.output[0] == Data(b"\x05\x00")
    end = h.output[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, ConnectTimeout)
    assert "no complete SOCKS request after 4s" in caplog.text


async def test_an_optimistic_client_sends_everything_at_once() -> None:
    """Greeting, credentials, request and data in one chunk: each is answered in
    turn and the data is relayed after the reply. ``users`` and ``allow`` may be
    ``async def``."""
    checked: list[str] = []

    async def users(ctx: Context, username: str, password: str) -> bool:
        checked.append(username)
        return password == "pw"

    async def allow(ctx: Context, request: Request) -> bool:
        return request.host == "example.com"

    proxy = Proxy()
    proxy.pipeline("s").accept_socks(users=users, allow=allow).to(
        lambda p: p.replace_data(lambda ctx, d: d.upper())
    )
    wire = (
        encode(Greeting((USERNAME_PASSWORD,)))
        + encode(UserPass("bob", "pw"))
        + encode(Request(Command.CONNECT, "example.com", 80))
        + b"data"
    )
    out = await run_layout(proxy.layout("s"), [Data(wire), StreamEnd()])
    assert join_data(out) == b"\x05\x02" + b"\x01\x00" + encode(Reply(0)) + b"DATA"
    assert out[-1] == StreamEnd() and checked == ["bob"]


async def test_connect_socks_needs_a_target(caplog: pytest.LogCaptureFixture) -> None:
    proxy = Proxy()
    proxy.pipeline("c").connect_socks().to(lambda p: p.dump())
    out = await run_layout(proxy.layout("c"), [Data(b"x"), StreamEnd()])
    assert len(out) == 1 and isinstance(out[0], StreamEnd)
    assert isinstance(out[0].error, PipelineError) and "ctx.target" in str(out[0].error)


async def test_connect_socks_takes_the_target_from_the_context() -> None:
    proxy = Proxy()
    seen: list[Context] = []
    proxy.pipeline("server").accept_socks().to(lambda p: p.handle_stream_start(seen.append))
    proxy.pipeline("client").connect_socks().to("server")
    ctx = Context()
    ctx.set(target="[2001:db8::1]:8443")
    out = await run_layout(proxy.layout("client"), [Data(b"hi"), StreamEnd()], context=ctx)
    assert out == [Data(b"hi"), StreamEnd()]
    assert seen[0].socks_request == Request(Command.CONNECT, "2001:db8::1", 8443)
    assert ctx.upstream == "[2001:db8::1]:8443"


# Over loopback -------------------------------------------------------------------------


async def socks_exchange(
    port: int, target: tuple[str, int], payload: bytes, **credentials: str
) -> tuple[Any, bytes]:
    """Our own client: handshake through ``port`` to ``target``, send ``payload``
    with the request (before the reply), half-close, read to the end."""
    client = ClientHandshake(*target, **credentials)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(client.start())
            while not client.done:
                data = await stream.receive_some(65536)
                assert data, "the server closed during the handshake"
                answer = client.receive(data)
                if answer:
                    await stream.send_all(answer + (payload if answer[0] == 5 else b""))
            await stream.send_eof()
            chunks = [client.trailing]
            while data := await stream.receive_some(65536):
                chunks.append(data)
    return client.reply, b"".join(chunks)


async def test_reply_after_connect_with_bound_address_early_data_and_half_close() -> None:
    async with backend(banner=b"220 hello\r\n") as b:
        proxy = Proxy()
        proxy.listen("127.0.0.1:0").accept_socks().to(to_target)
        async with serving(proxy) as server:
            reply, answer = await socks_exchange(
                server.ports[0], ("127.0.0.1", b.port), b"early data"
            )
    # The banner came after the reply; the reply names the proxy's end of the
    # upstream connection, which existed when the reply was sent.
    assert reply is not None and reply.reply == 0
    assert [(reply.host, reply.port)] == b.peers
    assert answer == b"220 hello\r\ngot early data" and b.received == [b"early data"]


async def test_connect_socks_to_accept_socks_with_authentication() -> None:
    async with backend() as b:
        far = Proxy()
        seen: list[Context] = []
        (
            far.listen("127.0.0.1:0")
            .accept_socks(users={"ann": "secret"})
            .to(lambda p: p.handle_stream_start(seen.append).to(to_target))
        )
        async with serving(far) as far_server:
            near = Proxy()
            (
                near.listen("127.0.0.1:0")
                .connect_socks(f"localhost:{b.port}", username="ann", password="secret")
                .to(lambda p: p.connect(f"127.0.0.1:{far_server.ports[0]}"))
            )
            async with serving(near) as near_server:
                async with await trio.open_tcp_stream("127.0.0.1", near_server.ports[0]) as s:
                    with trio.fail_after(10):
                        await s.send_all(b"through two proxies")
                        await s.send_eof()
                        chunks = []
                        while data := await s.receive_some(65536):
                            chunks.append(data)
    assert b"".join(chunks) == b"got through two proxies"
    (ctx,) = seen
    assert ctx.socks_user == "ann" and ctx.target == f"localhost:{b.port}"
    assert ctx.socks_request.address_type == AddressType.DOMAIN


async def test_connect_socks_refusals_end_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    far = Proxy()
    far.listen("127.0.0.1:0").accept_socks(users={"ann": "secret"}).to(to_target)
    async with serving(far) as far_server:
        link = f"127.0.0.1:{far_server.ports[0]}"
        proxy = Proxy()
        refused = f"127.0.0.1:{free_port()}"
        (
            proxy.pipeline("refused")
            .connect_socks(refused, username="ann", password="secret")
            .to(lambda p: p.connect(link))
        )
        (
            proxy.pipeline("bad-auth")
            .connect_socks(refused, username="ann", password="nope")
            .to(lambda p: p.connect(link))
        )
        out = await run_layout(proxy.layout("refused"), [Data(b"x"), StreamEnd()])
        assert len(out) == 1 and isinstance(out[0], StreamEnd)
        error = out[0].error
        assert isinstance(error, SocksError) and error.reply == CONNECTION_REFUSED
        out = await run_layout(proxy.layout("bad-auth"), [Data(b"x"), StreamEnd()])
        assert len(out) == 1 and isinstance(out[0], StreamEnd)
        error = out[0].error
        assert isinstance(error, SocksError) and error.reply is None
        assert "rejected the username/password" in str(error)
    assert caplog.text.count("connect_socks to") == 2


# With curl -----------------------------------------------------------------------------


async def test_curl_through_accept_socks() -> None:
    seen: list[Context] = []
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").accept_socks().to(
        lambda p: p.handle_stream_start(seen.append).to(to_target)
    )
    (
        proxy.listen("127.0.0.1:0")
        .accept_socks(users={"ann": "secret"}, allow=lambda ctx, req: req.port != 9)
        .to(to_target)
    )
    web(proxy, "127.0.0.1:0")
    web(proxy, "[::1]:0")
    async with serving(proxy) as server:
        free, auth, web4, web6 = server.ports
        socks, socks_auth = f"127.0.0.1:{free}", f"127.0.0.1:{auth}"
        hostname = await curl("--socks5-hostname", socks, f"http://localhost:{web4}/")
        ipv4 = await curl("--socks5", socks, f"http://127.0.0.1:{web4}/")
        ipv6 = await curl("--socks5", socks, f"http://[::1]:{web6}/")
        user = await curl(
            "--socks5", socks_auth, "--proxy-user", "ann:secret", f"http://127.0.0.1:{web4}/"
        )
        wrong = await curl(
            "--socks5", socks_auth, "--proxy-user", "ann:nope", f"http://127.0.0.1:{web4}/"
        )
        anonymous = await curl("--socks5", socks_auth, f"http://127.0.0.1:{web4}/")
        refused = await curl("--socks5", socks, f"http://127.0.0.1:{free_port()}/")
        unresolved = await curl("--socks5-hostname", socks, "http://no-such-host.invalid/")
        forbidden = await curl(
            "--socks5", socks_auth, "--proxy-user", "ann:secret", "http://127.0.0.1:9/"
        )
    assert hostname.stdout == ipv4.stdout == user.stdout == b"hello from 127.0.0.1\n"
    assert ipv6.stdout == b"hello from ::1\n"
    assert [c.socks_request.address_type for c in seen[:3]] == [
        AddressType.DOMAIN,
        AddressType.IPV4,
        AddressType.IPV6,
    ]
    assert seen[0].target == f"localhost:{web4}" and seen[2].target == f"[::1]:{web6}"
    # curl's errors (exit 97, CURLE_PROXY) quote the reply code it got
    assert wrong.returncode == 97 and b"User was rejected by the SOCKS5 server" in wrong.stderr
    assert (
        anonymous.returncode == 97
        and b"No authentication method was acceptable" in anonymous.stderr
    )
    assert refused.returncode == 97 and refused.stderr.rstrip().endswith(b"(5)"), refused.stderr
    assert unresolved.returncode == 97 and unresolved.stderr.rstrip().endswith(b"(4)")
    assert forbidden.returncode == 97 and forbidden.stderr.rstrip().endswith(b"(2)")


async def test_a_chain_passes_the_far_end_reply_back_to_curl() -> None:
    """curl -> accept_socks -> connect_socks -> accept_socks -> (refused): curl
    gets the far end's reply 5, after the far end gave it."""
    far = Proxy()
    far.listen("127.0.0.1:0").accept_socks().to(to_target)
    web(far, "127.0.0.1:0")
    async with serving(far) as far_server:
        far_port, web_port = far_server.ports
        near = Proxy()
        (
            near.listen("127.0.0.1:0")
            .accept_socks()
            .to(
                lambda p: p.connect_socks(lambda ctx: ctx.target).to(
                    lambda q: q.connect(f"127.0.0.1:{far_port}")
                )
            )
        )
        async with serving(near) as near_server:
            socks = f"127.0.0.1:{near_server.ports[0]}"
            ok = await curl("--socks5-hostname", socks, f"http://localhost:{web_port}/")
            refused = await curl("--socks5", socks, f"http://127.0.0.1:{free_port()}/")
    assert ok.stdout == b"hello from 127.0.0.1\n"
    assert refused.returncode == 97 and refused.stderr.rstrip().endswith(b"(5)")


# Against Dante, a real SOCKS server ----------------------------------------------------

DANTED = "/usr/sbin/danted"


@asynccontextmanager
async def dante(tmp_path: Path) -> AsyncIterator[int]:
    """Dante's SOCKS server on a free loopback port, no authentication, as a plain
    process in its own session (it forks workers: the whole group is stopped)."""
    port = free_port()
    conf = tmp_path / "danted.conf"
    conf.write_text(
        "logoutput: stderr\n"
        f"internal: 127.0.0.1 port = {port}\n"
        "external: 127.0.0.1\n"
        "clientmethod: none\n"
        "socksmethod: none\n"
        "client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }\n"
        "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect }\n"
    )
    argv = [DANTED, "-f", str(conf), "-p", str(tmp_path / "danted.pid"), "-N", "1"]
    async with daemon(argv, port, tmp_path / "danted.log", group=True):
        yield port


@pytest.mark.skipif(not os.path.exists(DANTED), reason="Dante (dante-server) is not installed")
async def test_connect_socks_through_dante(tmp_path: Path) -> None:
    async with dante(tmp_path) as socks_port, backend() as b:
        proxy = Proxy()
        for target in (f"127.0.0.1:{b.port}", f"localhost:{b.port}", f"127.0.0.1:{free_port()}"):
            (
                proxy.listen("127.0.0.1:0")
                .connect_socks(target)
                .to(lambda p: p.connect(f"127.0.0.1:{socks_port}"))
            )
        async with serving(proxy) as server:
            answers = [await exchange(port, b"via dante") for port in server.ports]
    # IPv4 and a domain name Dante resolves; half-close passes both ways. A
    # refused target closes the stream (StreamEnd(error): no bytes).
    assert answers[:2] == [b"got via dante"] * 2 and b.received == [b"via dante"] * 2
    assert answers[2] in (b"", b"<reset>")
