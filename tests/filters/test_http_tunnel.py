"""accept_http_tunnel / connect_http_tunnel: in memory, with curl (plain and TLS
targets), against each other and against tinyproxy."""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import filters.http_tunnel
from filters.http_tunnel import (
    AllowList,
    HttpTunnelError,
    basic_credentials,
    check_password,
    parse_authority,
)
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
from tests.helpers import free_port
from tests.tls_helpers import Certs, certs, s_server
from tests.tunnel_helpers import backend, curl, daemon, exchange, read_all, serving, to_target, web

__all__ = ["certs"]  # the fixture, used by name

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def test_docstring_example_runs() -> None:
    doc = filters.http_tunnel.__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found is not None
    exec(compile(textwrap.dedent(found.group(1)), "filters/http_tunnel.py", "exec"), {})


def test_doctests() -> None:
    import doctest

    assert doctest.testmod(filters.http_tunnel).failed == 0


def test_bad_arguments_are_load_errors() -> None:
    proxy = Proxy()
    cases: list[tuple[str, Any]] = [
        ("give a port", lambda b: b.accept_http_tunnel(allow="example.com")),
        ("bad pattern", lambda b: b.accept_http_tunnel(allow=["*.exa mple.com:443"])),
        ("bad pattern", lambda b: b.accept_http_tunnel(allow="*:99999")),
        ("bad pattern", lambda b: b.accept_http_tunnel(allow="*:443-80")),
        ("bad pattern", lambda b: b.accept_http_tunnel(allow="10.0.0.1/8:*")),
        ("empty", lambda b: b.accept_http_tunnel(allow=[])),
        ("allow must be", lambda b: b.accept_http_tunnel(allow=443)),
        ("users", lambda b: b.accept_http_tunnel(users=["ann"])),
        ("realm", lambda b: b.accept_http_tunnel(realm='a"b')),
        ("timeout", lambda b: b.accept_http_tunnel(timeout=0)),
        ("otherwise", lambda b: b.accept_http_tunnel(otherwise=3)),
        ("expected 'host:port'", lambda b: b.connect_http_tunnel("nowhere")),
        ("out of range", lambda b: b.connect_http_tunnel("h:0")),
        ("username", lambda b: b.connect_http_tunnel("h:1", username="a:b")),
        ("password", lambda b: b.connect_http_tunnel("h:1", password="pw")),
        ("CR, LF", lambda b: b.connect_http_tunnel("h:1", headers={"X-A": "1\r\nX-B: 2"})),
    ]
    for n, (message, add) in enumerate(cases):
        with pytest.raises(ConfigError, match=message):
            add(proxy.pipeline(f"p{n}")).to(lambda p: p.dump())


def test_allow_list_patterns() -> None:
    allow = AllowList(
        "*.example.com:443, api.test:8000-8099, 10.0.0.0/8:*, [2001:db8::/32]:22, 192.0.2.1:80"
    )
    assert allow.allows("www.example.com", 443) and allow.allows("a.b.EXAMPLE.com", 443)
    assert not allow.allows("example.com", 443) and not allow.allows("www.example.com", 80)
    assert not allow.allows("evil-example.com", 443)
    assert allow.allows("api.test", 8050) and not allow.allows("api.test", 8100)
    assert allow.allows("10.20.30.40", 25) and not allow.allows("11.0.0.1", 25)
    assert allow.allows("2001:db8::5", 22) and not allow.allows("2001:db9::5", 22)
    assert allow.allows("192.0.2.1", 80) and not allow.allows("192.0.2.2", 80)
    # Networks and addresses match address targets only, never names.
    assert not allow.allows("10.example.org", 25)
    assert AllowList(["*:*"]).allows("anything.at.all", 1)
    assert AllowList("[::1]:443").allows("0:0::1", 443)


def test_authority_and_credentials_parsing() -> None:
    assert parse_authority("WWW.Example.com:443") == ("www.example.com", 443)
    assert parse_authority("[::1]:8443") == ("::1", 8443)
    for bad in ("example.com", ":443", "a@b:443", "a/b:443", "[::1]", "[zz]:1", "a:65536", "a:x"):
        with pytest.raises(ValueError):
            parse_authority(bad)
    token = base64.b64encode("zoë:pa:ss".encode()).decode()
    assert basic_credentials(f"basic  {token}") == ("zoë", "pa:ss")
    assert basic_credentials(f"Bearer {token}") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert check_password({"ann": "pw"}, "ann", "pw")
    assert not check_password({"ann": "pw"}, "ann", "pw2")
    assert not check_password({"ann": "pw"}, "bob", "pw")


# In memory ---------------------------------------------------------------------------


def upper(p: Any) -> None:
    """A stand-in for the upstream: answers every chunk in upper case."""
    p.replace_data(lambda ctx, d: d.upper())


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("wire", "status", "reason"),
    [
        (b"CONNECT a:443 HTTP/1.1\r\nHost a:443\r\n\r\n", 400, "invalid character in field"),
        (b"CONNECT a:443 HTTP/1.1\r\n\r\n", 400, "without Host"),
        (b"CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad CONNECT target"),
        (b"CONNECT u@a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad CONNECT target"),
        (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", 400, "body"),
        (b"CONNECT a:443 HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version"),
    ],
)
async def test_malformed_requests_are_answered_with_one_warning(
    wire: bytes, status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy()
    seen: list[Context] = []
    proxy.pipeline("t").accept_http_tunnel().to(lambda p: p.handle_stream_start(seen.append))
    with caplog.at_level(logging.INFO, logger="trioxy"):
        out = await run_layout(proxy.layout("t"), [Data(wire), Data(b"more"), StreamEnd()])
    answer = join_data(out)
    assert status_of(answer) == status and b"Connection: close\r\n" in answer
    assert out[-1] == StreamEnd() and not seen
    lines = [r for r in caplog.records if r.name.startswith("trioxy")]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert reason in lines[0].getMessage()


async def test_other_methods_get_405_with_allow(caplog: pytest.LogCaptureFixture) -> None:
    proxy = Proxy()
    proxy.pipeline("t").accept_http_tunnel().to(upper)
    caplog.set_level(logging.INFO, logger="trioxy")
    out = await run_layout(
        proxy.layout("t"), [Data(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), StreamEnd()]
    )
    head = join_data(out).split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: CONNECT" in head and out[-1] == StreamEnd()
    assert "GET on a tunnel-only port" in caplog.text


async def test_otherwise_gets_the_connection_from_its_first_byte() -> None:
    proxy = Proxy()
    (
        proxy.pipeline("t")
        .accept_http_tunnel(otherwise=lambda p: p.replace_data(lambda ctx, d: b"<" + d + b">"))
        .to(upper)
    )
    out = await run_layout(
        proxy.layout("t"),
        [Data(b"GET / HT"), Data(b"TP/1.1\r\nHost: a\r\n\r\nGET /2"), Data(b" rest"), StreamEnd()],
    )
    assert join_data(out) == b"<GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2>< rest>"
    assert out[-1] == StreamEnd()
    # Not HTTP at all (a parse error, here in the same chunk as a valid request):
    # ``otherwise`` gets it too, and answers it as it sees fit.
    wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nno colon\r\n\r\n"
    out = await run_layout(proxy.layout("t"), [Data(wire), StreamEnd()])
    assert join_data(out) == b"<" + wire + b">" and out[-1] == StreamEnd()


async def test_credentials_then_allow(caplog: pytest.LogCaptureFixture) -> None:
    """407 (with the challenge) before 403; ``users`` and ``allow`` may be
    ``async def``; the context of the tunnel names the user and the request."""
    checked: list[str] = []

    async def users(ctx: Context, username: str, password: str) -> bool:
        checked.append(username)
        return password == "pw"

    async def allow(ctx: Context, host: str, port: int) -> bool:
        return host == "ok.test"

    seen: list[Context] = []
    proxy = Proxy()
    (
        proxy.pipeline("t")
        .accept_http_tunnel(allow=allow, users=users, realm="corp")
        .to(lambda p: p.handle_stream_start(seen.append).to(upper))
    )

    def connect(target: str, credentials: str | None) -> bytes:
        auth = b""
        if credentials is not None:
            token = base64.b64encode(credentials.encode())
            auth = b"Proxy-Authorization: Basic " + token + b"\r\n"
        return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n".encode() + auth + b"\r\n"

    answers = []
    caplog.set_level(logging.INFO, logger="trioxy")
    for target, credentials in [
        ("no.test:443", None),
        ("no.test:443", "bob:wrong"),
        ("no.test:443", "bob:pw"),
        ("ok.test:443", "bob:pw"),
    ]:
        out = await run_layout(
            proxy.layout("t"), [Data(connect(target, credentials) + b"early"), StreamEnd()]
        )
        answers.append(join_data(out))
    assert [status_of(a) for a in answers] == [407, 407, 403, 200]
    assert b'\r\nProxy-Authenticate: Basic realm="corp"\r\n' in answers[0]
    assert answers[3] == b"HTTP/1.1 200 Connection Established\r\n\r\nEARLY"
    assert checked == ["bob", "bob", "bob"]
    (ctx,) = seen
    assert (ctx.target, ctx.proxy_user, ctx.tunnel_request.method) == (
        "ok.test:443",
        "bob",
        "CONNECT",
    )
    assert "no proxy credentials" in caplog.text and "credentials of 'bob' refused" in caplog.text
    assert "tunnels to no.test:443 are not allowed" in caplog.text


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConnectRefused("no upstream answered: a:1: connection refused"), 502),
        (ConnectTimeout("no upstream answered: a:1: timed out after 5s"), 504),
        (HttpTunnelError("the proxy answered 403 Forbidden", "a:1", 403), 502),
        (PipelineError("connect: the target function failed"), 500),
    ],
)
async def test_upstream_failures_are_answered(error: Exception, status: int) -> None:
    proxy = Proxy()
    proxy.pipeline("t").accept_http_tunnel(allow="*:*").to(
        lambda p: p.replace_data(lambda ctx, d: StreamEnd(error))
    )
    out = await run_layout(
        proxy.layout("t"), [Data(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n"), StreamEnd()]
    )
    answer = join_data(out)
    assert status_of(answer) == status and answer.endswith(str(error).encode() + b"\n")
    assert out[-1] == StreamEnd()


async def test_request_timeout(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy()
    proxy.pipeline("t").accept_http_tunnel(timeout=4).to(upper)
    async with open_pipeline(proxy.layout("t")) as h:
        await h.send(Data(b"CONNECT a:443 HTTP/1.1\r\nHost"))
        await h.ended.wait()
    assert status_of(h.data) == 408 and h.output[-1] == StreamEnd()
    assert "no complete request after 4s" in caplog.text


async def test_connect_http_tunnel_answers(caplog: pytest.LogCaptureFixture) -> None:
    """Interim answers are skipped; bytes after the 2xx head are the tunnel's; a
    refusal or a non-HTTP answer ends the stream with HttpTunnelError, logged once."""
    caplog.set_level(logging.INFO, logger="trioxy")
    requests: list[bytes] = []

    def proxy_answers(answer: bytes) -> Any:
        def stand_in(p: Any) -> None:
            p.replace_data(lambda ctx, d: (requests.append(d), answer)[1] if d else d)

        return stand_in

    proxy = Proxy()
    ok = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nbanner\r\n"
    proxy.pipeline("ok").connect_http_tunnel("a.test:443", headers={"User-Agent": "t"}).to(
        proxy_answers(ok)
    )
    proxy.pipeline("no").connect_http_tunnel("a.test:443").to(
        proxy_answers(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    )
    proxy.pipeline("junk").connect_http_tunnel("a.test:443").to(proxy_answers(b"SSH-2.0-x\r\n\r\n"))
    out = await run_layout(proxy.layout("ok"), [Data(b"x"), StreamEnd()])
    assert out[0] == Data(b"banner\r\n") and out[-1] == StreamEnd()
    assert requests[0] == (
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\nUser-Agent: t\r\n\r\n"
    )
    for layout, message, status in [
        ("no", "the proxy answered 403 Forbidden", 403),
        ("junk", "not an HTTP answer to CONNECT", None),
    ]:
        out = await run_layout(proxy.layout(layout), [Data(b"x"), StreamEnd()])
        assert len(out) == 1 and isinstance(out[0], StreamEnd)
        error = out[0].error
        assert isinstance(error, HttpTunnelError) and error.proxy_status == status
        assert message in str(error) and error.target == "a.test:443"
    assert caplog.text.count("connect_http_tunnel to a.test:443 failed") == 2


async def test_connect_http_tunnel_target_and_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    proxy = Proxy()
    seen: list[Context] = []
    proxy.pipeline("server").accept_http_tunnel(allow="*:*").to(
        lambda p: p.handle_stream_start(seen.append)
    )
    proxy.pipeline("client").connect_http_tunnel().to("server")
    proxy.pipeline("silent").connect_http_tunnel(timeout=3).to(
        lambda p: p.replace_data(lambda ctx, d: None)
    )
    ctx = Context()
    ctx.set(target="[2001:db8::1]:8443")
    out = await run_layout(proxy.layout("client"), [Data(b"hi"), StreamEnd()], context=ctx)
    assert out == [Data(b"hi"), StreamEnd()]
    assert seen[0].target == "[2001:db8::1]:8443" and ctx.upstream == "[2001:db8::1]:8443"
    out = await run_layout(proxy.layout("client"), [Data(b"hi"), StreamEnd()])
    assert isinstance(out[0], StreamEnd) and isinstance(out[0].error, PipelineError)
    assert "ctx.target" in str(out[0].error)
    async with open_pipeline(proxy.layout("silent"), ctx) as h:
        await h.send(Data(b"hi"))
        await h.ended.wait()
    error = h.output[-1].error  # type: ignore[union-attr]
    assert isinstance(error, ConnectTimeout) and "after 3s" in str(error)


# Over loopback -------------------------------------------------------------------------


async def test_reply_after_connect_early_data_and_half_close_both_ways() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").accept_http_tunnel(allow="127.0.0.1:*").to(to_target)
    async with backend(banner=b"220 hello\r\n") as b, backend(b"bye", eof_first=True) as early:
        async with serving(proxy) as server:
            with trio.fail_after(10):
                # The client half-closes; the backend's answer still comes back.
                async with await trio.open_tcp_stream("127.0.0.1", server.ports[0]) as s:
                    request = f"CONNECT 127.0.0.1:{b.port} HTTP/1.1\r\nHost: x\r\n\r\n"
                    await s.send_all(request.encode() + b"early data")
                    await s.send_eof()
                    first = await read_all(s)
                # The backend half-closes first; the client's bytes still go through.
                async with await trio.open_tcp_stream("127.0.0.1", server.ports[0]) as s:
                    request = f"CONNECT 127.0.0.1:{early.port} HTTP/1.1\r\nHost: x\r\n\r\n"
                    await s.send_all(request.encode())
                    second = await read_all(s)  # ends at the backend's EOF
                    await s.send_all(b"after your EOF")
                    await s.send_eof()
                    while not early.received:
                        await trio.sleep(0.01)
    # The banner came after the 200: it was sent once the upstream existed.
    assert first == b"HTTP/1.1 200 Connection Established\r\n\r\n220 hello\r\ngot early data"
    assert b.received == [b"early data"]
    assert second == b"HTTP/1.1 200 Connection Established\r\n\r\nbye"
    assert early.received == [b"after your EOF"]


@needs_curl
async def test_curl_through_accept_http_tunnel(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Context] = []
    proxy = Proxy()
    (
        proxy.listen("127.0.0.1:0")
        .accept_http_tunnel(allow=["127.0.0.1:*", "localhost:*", "*.invalid:*", "[::1]:*"])
        .to(lambda p: p.handle_stream_start(seen.append).to(to_target))
    )
    (
        proxy.listen("127.0.0.1:0")
        .accept_http_tunnel(allow="127.0.0.1:1-1000", users={"ann": "secret"})
        .to(to_target)
    )
    web(proxy, "127.0.0.1:0")
    web(proxy, "[::1]:0")
    caplog.set_level(logging.INFO, logger="trioxy")
    async with serving(proxy) as server:
        free, auth, web4, web6 = server.ports
        tunnel, tunnel_auth = f"http://127.0.0.1:{free}", f"http://127.0.0.1:{auth}"
        hostname = await curl("-p", "-x", tunnel, f"http://localhost:{web4}/")
        ipv6 = await curl("-p", "-x", tunnel, f"http://[::1]:{web6}/")
        refused = await curl("-p", "-x", tunnel, f"http://127.0.0.1:{free_port()}/")
        unresolved = await curl("-p", "-x", tunnel, "http://no-such-host.invalid/")
        forbidden = await curl("-p", "-x", tunnel, f"http://example.com:{web4}/")
        anonymous = await curl("-p", "-x", tunnel_auth, f"http://127.0.0.1:{web4}/")
        wrong = await curl("-p", "-x", tunnel_auth, "-U", "ann:nope", "http://127.0.0.1:80/")
        user = await curl("-p", "-x", tunnel_auth, "-U", "ann:secret", f"http://127.0.0.1:{web4}/")
    assert hostname.stdout == b"hello from 127.0.0.1\n"
    assert ipv6.stdout == b"hello from ::1\n"
    assert seen[0].target == f"localhost:{web4}" and seen[1].target == f"[::1]:{web6}"
    # curl's error (exit 56) quotes the status it got
    for result, status in [
        (refused, 502),
        (unresolved, 502),
        (forbidden, 403),
        (anonymous, 407),
        (wrong, 407),
        (user, 403),  # authenticated, but port web4 is not in 1-1000
    ]:
        assert result.returncode == 56, result.stderr
        assert f"CONNECT tunnel failed, response {status}".encode() in result.stderr
    assert "connection refused" in caplog.text and "cannot resolve 'no-such-host.invalid'" in (
        caplog.text
    )


@needs_curl
async def test_curl_https_through_the_tunnel(certs: Certs) -> None:
    """TLS end to end through the tunnel: curl verifies openssl's certificate."""
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").accept_http_tunnel(allow="localhost:*").to(to_target)
    cert, key = certs.server("localhost")
    with s_server(cert, key) as tls_port:
        async with serving(proxy) as server:
            result = await curl(
                "--cacert",
                certs.ca,
                "-x",
                f"http://127.0.0.1:{server.ports[0]}",
                f"https://localhost:{tls_port}/",
            )
    assert result.returncode == 0, result.stderr
    assert b"s_server" in result.stdout  # openssl's -www status page


async def test_connect_http_tunnel_to_accept_http_tunnel(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trioxy")
    async with backend() as b:
        far = Proxy()
        seen: list[Context] = []
        (
            far.listen("127.0.0.1:0")
            .accept_http_tunnel(allow=f"localhost:{b.port}", users={"ann": "secret"})
            .to(lambda p: p.handle_stream_start(seen.append).to(to_target))
        )
        async with serving(far) as far_server:
            link = f"127.0.0.1:{far_server.ports[0]}"
            near = Proxy()
            for target, password in [
                (f"localhost:{b.port}", "secret"),
                (f"localhost:{b.port}", "nope"),
                (f"127.0.0.1:{b.port}", "secret"),
            ]:
                (
                    near.listen("127.0.0.1:0")
                    .connect_http_tunnel(target, username="ann", password=password)
                    .to(lambda p: p.connect(link))
                )
            async with serving(near) as near_server:
                answers = [
                    await exchange(port, b"through two proxies") for port in near_server.ports
                ]
    # Refusals end the stream with an error: the connection closes, no bytes.
    assert answers[0] == b"got through two proxies"
    assert answers[1] in (b"", b"<reset>") and answers[2] in (b"", b"<reset>")
    (ctx,) = seen
    assert ctx.proxy_user == "ann" and ctx.target == f"localhost:{b.port}"
    assert "the proxy answered 407 Proxy Authentication Required" in caplog.text
    assert "the proxy answered 403 Forbidden" in caplog.text


@needs_curl
async def test_a_chain_passes_the_far_end_answer_back_to_curl() -> None:
    """curl -> accept_http_tunnel -> connect_http_tunnel -> accept_http_tunnel ->
    (refused): curl gets 502 once the far end gave its answer."""
    far = Proxy()
    far.listen("127.0.0.1:0").accept_http_tunnel(allow="*:*").to(to_target)
    web(far, "127.0.0.1:0")
    async with serving(far) as far_server:
        far_port, web_port = far_server.ports
        near = Proxy()
        (
            near.listen("127.0.0.1:0")
            .accept_http_tunnel(allow="*:*")
            .to(lambda p: p.connect_http_tunnel().to(lambda q: q.connect(f"127.0.0.1:{far_port}")))
        )
        async with serving(near) as near_server:
            tunnel = f"http://127.0.0.1:{near_server.ports[0]}"
            ok = await curl("-p", "-x", tunnel, f"http://localhost:{web_port}/")
            refused = await curl("-p", "-x", tunnel, f"http://127.0.0.1:{free_port()}/")
    assert ok.stdout == b"hello from 127.0.0.1\n"
    assert refused.returncode == 56 and b"response 502" in refused.stderr


# Against tinyproxy, a real HTTP proxy --------------------------------------------------

TINYPROXY = "/usr/bin/tinyproxy"


@asynccontextmanager
async def tinyproxy(tmp_path: Path) -> AsyncIterator[int]:
    """tinyproxy on a free loopback port, in the foreground (``-d``), tunnels to
    any port, one user (``ann``/``secret``)."""
    port = free_port()
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(  # (no User: it runs as the current user, with a warning)
        f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\n"
        "MaxClients 10\nTimeout 30\nLogLevel Info\nBasicAuth ann secret\n"
    )
    async with daemon([TINYPROXY, "-d", "-c", str(conf)], port, tmp_path / "tinyproxy.log"):
        yield port


async def echo(stream: trio.SocketStream) -> None:
    """Answer every chunk at once with ``b"echo " + chunk`` (tinyproxy does not
    pass a half-close on: it closes both ways on the client's EOF, so a server
    that answers only at the end would never be heard)."""
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(b"echo " + data)


@pytest.mark.skipif(not os.path.exists(TINYPROXY), reason="tinyproxy is not installed")
async def test_connect_http_tunnel_through_tinyproxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioxy")
    async with tinyproxy(tmp_path) as proxy_port, trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        echo_port = listeners[0].socket.getsockname()[1]
        proxy = Proxy()
        link = f"127.0.0.1:{proxy_port}"
        for target, password in [
            (f"127.0.0.1:{echo_port}", "secret"),
            (f"localhost:{echo_port}", "secret"),
            (f"127.0.0.1:{echo_port}", "wrong"),
        ]:
            (
                proxy.listen("127.0.0.1:0")
                .connect_http_tunnel(target, username="ann", password=password)
                .to(lambda p: p.connect(link))
            )
        async with serving(proxy) as server:
            answers = []
            for port in server.ports:
                with trio.fail_after(10):
                    async with await trio.open_tcp_stream("127.0.0.1", port) as s:
                        await s.send_all(b"via tinyproxy")
                        answer = b""
                        try:
                            while len(answer) < len(b"echo via tinyproxy"):
                                data = await s.receive_some(65536)
                                if not data:
                                    break
                                answer += data
                        except trio.BrokenResourceError:
                            answer = b"<reset>"
                        answers.append(answer)
        nursery.cancel_scope.cancel()
    # A name tinyproxy resolves too; a refusal (tinyproxy says 401 where RFC 9110
    # says 407) closes the stream with one log line.
    assert answers[:2] == [b"echo via tinyproxy"] * 2
    assert answers[2] in (b"", b"<reset>")
    assert caplog.text.count("the proxy answered 401 Unauthorized") == 1
