"""accept_tls / connect_tls / handle_tls_client_hello: in memory (the two ends
talking to each other) and with real peers we did not write (curl, openssl)."""

from __future__ import annotations

import linecache
import logging
import re
import shutil
import socket
import ssl
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import filters.tls
import filters.tls_client_hello
from filters.tls import TlsError, TlsHandshakeError, TlsHandshakeTimeout, TlsInfo
from pipeline import ConfigError, Context, Data, Event, Filter, Proxy, StreamEnd
from pipeline.testing import join_data, open_pipeline, run_layout
from tests.helpers import serving
from tests.tls_helpers import OPENSSL, Certs, certs, s_server

__all__ = ["certs"]  # the fixture, imported for pytest

CURL = shutil.which("curl") or "/usr/bin/curl"

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command makes the test certificates"
)


def tls_logs(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trioxy.tls" and r.levelno >= level]


def run_example(module: Any) -> None:
    doc = module.__doc__ or ""
    found = re.search(r"Example \(runnable\).*?::\n\n(.*?)(?:\n\S|\Z)", doc, re.S)
    assert found, f"{module.__name__} has no runnable example"
    exec(textwrap.dedent(found.group(1)), {})


def test_docstring_examples_run() -> None:
    run_example(filters.tls)
    run_example(filters.tls_client_hello)


# Configuration ---------------------------------------------------------------------


def test_bad_configuration_is_a_load_error_at_the_script_line(certs: Certs) -> None:
    cert, key = certs.server("a.test")
    cases: list[tuple[Callable[[Proxy], Any], str]] = [
        (lambda p: p.pipeline("x").accept_tls("/nonexistent.pem"), "no such certificate"),
        (lambda p: p.pipeline("x").accept_tls(), "needs a certificate"),
        (lambda p: p.pipeline("x").accept_tls(cert, key, verify_client="required"), "ca_file"),
        (lambda p: p.pipeline("x").accept_tls(cert, key, verify_client="maybe"), "verify_client"),
        (lambda p: p.pipeline("x").accept_tls(cert, key, ciphers="NOPE-NOPE"), "cipher"),
        (lambda p: p.pipeline("x").accept_tls(key, cert), "cannot load certificate"),
        (lambda p: p.pipeline("x").connect_tls(min_version="TLSv9"), "min_version"),
        (lambda p: p.pipeline("x").connect_tls(ca_file="/nonexistent.pem"), "no such CA file"),
        (lambda p: p.pipeline("x").connect_tls(verify=False, ca_file=cert), "verify=True"),
        (lambda p: p.pipeline("x").connect_tls(alpn="h2"), "alpn"),
    ]
    for build, message in cases:
        proxy = Proxy()
        build(proxy).to(lambda p: p.dump())
        with pytest.raises(ConfigError, match=message) as info:
            proxy.build()
        # Located at the script's line that called the builder method.
        assert info.value.filename == __file__, message
        source = linecache.getline(__file__, info.value.lineno or 0)
        assert message in source or "_tls(" in source, (message, source)

    async def async_sni(ctx: Context, name: str | None) -> None:
        return None

    proxy = Proxy()
    proxy.pipeline("x").accept_tls(sni=async_sni).to(lambda p: p.dump())
    with pytest.raises(ConfigError, match="plain function"):
        proxy.build()


async def test_ssl_contexts_are_built_once_per_builder_call(certs: Certs) -> None:
    cert, key = certs.server("a.test")
    proxy = Proxy()
    proxy.pipeline("x").accept_tls(cert, key).to(lambda p: p.dump())
    layout = proxy.build().layouts["x"]
    config = layout.specs[0].state
    assert isinstance(config.default, ssl.SSLContext)  # built at load time
    seen = []
    for _ in range(2):
        async with open_pipeline(layout) as harness:
            await harness.send(Data(PythonClient(certs.ca, "a.test").hello()))
            tls = harness.pipeline.filters[0]
            assert isinstance(tls, filters.tls.AcceptTls) and tls._ssl is not None
            seen.append(tls._ssl)
    # Each stream has its own SSLObject, on the one shared context.
    assert seen[0] is not seen[1]
    assert seen[0].context is seen[1].context is config.default


# In memory: connect_tls talking to accept_tls ----------------------------------------


class Collect(Filter):
    """Answers only once its input ended: the collected bytes, upper-cased, then
    its own end (so the answer travels after the client's close_notify)."""

    name = "collect"

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def on_event(self, event: Event) -> None:
        if isinstance(event, Data):
            self.parts.append(event.data)
        elif isinstance(event, StreamEnd):
            await self.output(Data(b"".join(self.parts).upper()))
            await self.output(StreamEnd())


def pair(
    certs: Certs,
    server: dict[str, Any],
    client: dict[str, Any],
    answer: Callable[[Any], Any] | None = None,
) -> Proxy:
    proxy = Proxy()
    cert, key = certs.server("a.test", "b.test")
    server = {"cert": cert, "key": key, **server}
    (proxy.pipeline("server").accept_tls(**server).to(answer or (lambda p: p.add_filter(Collect))))
    client = {"server_hostname": "a.test", "ca_file": certs.ca, **client}
    proxy.pipeline("client").connect_tls(**client).to("server")
    proxy.build()
    return proxy


async def test_round_trip_with_alpn_and_a_half_close(certs: Certs) -> None:
    seen: list[Context] = []

    def answer(p: Any) -> None:
        p.handle_stream_start(lambda ctx: seen.append(ctx)).add_filter(Collect)

    proxy = pair(certs, {"alpn": ["h2", "http/1.1"]}, {"alpn": ["http/1.1", "h2"]}, answer)
    ctx = Context()
    payload = b"x" * 200_000  # many records, both ways
    out = await run_layout(proxy.layout("client"), [Data(payload), StreamEnd()], context=ctx)
    assert join_data(out) == payload.upper() and out[-1] == StreamEnd()
    server_ctx = seen[0]
    assert server_ctx.tls_alpn == "h2"  # the server's preference wins
    assert server_ctx.tls_sni == "a.test"
    assert server_ctx.tls_version == "TLSv1.3" and server_ctx.tls_cipher
    assert server_ctx.tls_peer_subject is None and server_ctx.tls_peer_cert is None
    assert isinstance(server_ctx.tls, TlsInfo) and server_ctx.tls.alpn == "h2"
    info = ctx.upstream_tls
    assert info.alpn == "h2" and info.peer_subject == "CN=a.test,O=trioxy tests"


async def test_the_next_connection_resumes_the_session(certs: Certs) -> None:
    resumed: list[bool] = []
    proxy = pair(
        certs,
        {},
        {},
        lambda p: p.handle_stream_start(lambda ctx: resumed.append(ctx.tls.resumed)).add_filter(
            Collect
        ),
    )
    contexts = [Context(), Context(), Context()]
    for ctx in contexts:
        out = await run_layout(proxy.layout("client"), [Data(b"again"), StreamEnd()], context=ctx)
        assert join_data(out) == b"AGAIN"
    # The server's tickets (one SSL context per builder call) and the client's
    # session cache (per builder call and server name) make it an abbreviated
    # handshake from the second connection on, on both ends.
    assert resumed == [False, True, True]
    assert [ctx.upstream_tls.resumed for ctx in contexts] == [False, True, True]
    # The server's certificate is not sent again; the session remembers it.
    assert contexts[2].upstream_tls.peer_subject == "CN=a.test,O=trioxy tests"


async def test_tls12_and_version_bounds(certs: Certs) -> None:
    seen: list[str] = []
    proxy = pair(
        certs,
        {"max_version": "TLSv1.2", "ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"},
        {},
        lambda p: p.handle_stream_start(lambda ctx: seen.append(ctx.tls_cipher)).add_filter(
            Collect
        ),
    )
    ctx = Context()
    out = await run_layout(proxy.layout("client"), [Data(b"old"), StreamEnd()], context=ctx)
    assert join_data(out) == b"OLD" and out[-1] == StreamEnd()
    assert ctx.upstream_tls.version == "TLSv1.2"
    assert seen == ["ECDHE-ECDSA-AES128-GCM-SHA256"]

    too_new = pair(certs, {"max_version": "TLSv1.2"}, {"min_version": "TLSv1.3"})
    out = await run_layout(too_new.layout("client"), [Data(b"x"), StreamEnd()])
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, TlsHandshakeError)


async def test_mutual_tls_puts_the_client_subject_in_the_context(certs: Certs) -> None:
    subjects: list[str] = []

    def answer(p: Any) -> None:
        p.handle_stream_start(lambda ctx: subjects.append(ctx.tls_peer_subject)).add_filter(Collect)

    cert, key = certs.client("alice")
    proxy = pair(certs, {"ca_file": certs.ca}, {"cert": cert, "key": key}, answer)
    out = await run_layout(proxy.layout("client"), [Data(b"hi"), StreamEnd()])
    assert join_data(out) == b"HI"
    assert subjects == ["CN=alice,O=trioxy tests"]

    anonymous = pair(certs, {"ca_file": certs.ca}, {}, answer)
    out = await run_layout(anonymous.layout("client"), [Data(b"hi"), StreamEnd()])
    assert join_data(out) == b""
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, TlsError)

    optional = pair(certs, {"ca_file": certs.ca, "verify_client": "optional"}, {}, answer)
    out = await run_layout(optional.layout("client"), [Data(b"hi"), StreamEnd()])
    assert join_data(out) == b"HI" and subjects[-1] is None


async def test_sni_callback_chooses_the_certificate_and_contexts_are_cached(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    chosen = {"one.test": certs.server("one.test"), "two.test": certs.server("two.test")}
    asked: list[str | None] = []

    def pick(ctx: Context, name: str | None) -> Any:
        asked.append(name)
        if name == "boom.test":
            raise RuntimeError("no store")
        return chosen.get(name or "")

    proxy = Proxy()
    proxy.pipeline("server").accept_tls(sni=pick).to(lambda p: p.add_filter(Collect))
    for name in ("one.test", "two.test", "none.test", "boom.test"):
        proxy.pipeline(name).connect_tls(name, ca_file=certs.ca).to("server")
    config = proxy.build()
    for name in ("one.test", "two.test", "one.test"):
        out = await run_layout(config.layouts[name], [Data(b"ok"), StreamEnd()])
        assert join_data(out) == b"OK", name
    state = config.layouts["server"].specs[0].state
    assert len(state._by_pair) == 2  # one context per certificate, reused
    caplog.set_level(logging.WARNING, "trioxy.tls")
    for name, reason in (("none.test", "no certificate for"), ("boom.test", "RuntimeError")):
        out = await run_layout(config.layouts[name], [Data(b"ok"), StreamEnd()])
        assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, TlsHandshakeError)
        assert any(reason in m and "accept_tls" in m for m in tls_logs(caplog)), tls_logs(caplog)
    assert asked == ["one.test", "two.test", "one.test", "none.test", "boom.test"]


@pytest.mark.parametrize(
    ("client", "reason"),
    [
        ({"ca_file": "other"}, "unable to get local issuer certificate"),
        ({"server_hostname": "wrong.test"}, "Hostname mismatch"),
        ({"server_hostname": None}, "no server name"),
    ],
)
async def test_client_verification_failures(
    certs: Certs, caplog: pytest.LogCaptureFixture, client: dict[str, Any], reason: str
) -> None:
    caplog.set_level(logging.WARNING, "trioxy.tls")
    if client.get("ca_file") == "other":
        client["ca_file"] = certs.other_ca
    proxy = pair(certs, {}, client)
    out = await run_layout(proxy.layout("client"), [Data(b"secret"), StreamEnd()])
    assert join_data(out) == b""
    assert isinstance(out[-1], StreamEnd) and isinstance(out[-1].error, TlsHandshakeError)
    client_lines = [m for m in tls_logs(caplog) if m.startswith("connect_tls")]
    assert len(client_lines) == 1 and reason in client_lines[0], tls_logs(caplog)


async def test_verify_false_needs_no_name_and_accepts_any_certificate(certs: Certs) -> None:
    proxy = pair(certs, {}, {"server_hostname": None, "ca_file": None, "verify": False})
    out = await run_layout(proxy.layout("client"), [Data(b"trust me"), StreamEnd()])
    assert join_data(out) == b"TRUST ME"


async def test_handshake_timeout(
    certs: Certs, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    caplog.set_level(logging.WARNING, "trioxy.tls")
    cert, key = certs.server("a.test")
    proxy = Proxy()
    proxy.pipeline("server").accept_tls(cert, key, handshake_timeout=3).to(lambda p: p.dump())
    proxy.build()
    async with open_pipeline(proxy.layout("server")) as harness:
        await harness.send(Data(b"\x16\x03\x01\x00\x50"))  # a record header, then silence
        with trio.fail_after(60):
            await harness.ended.wait()
    end = harness.output[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, TlsHandshakeTimeout)
    assert end.error.status == 504
    assert len(tls_logs(caplog)) == 1 and "timed out after 3s" in tls_logs(caplog)[0]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a truncated ClientHello
        b"\x16\x03\x01\x00\x08\x02\x00\x00\x04\x03\x03\x00\x00",  # a ServerHello
        b"\x80\x2e\x01\x03\x01" + bytes(45),  # SSLv2-style
        b"SSH-2.0-OpenSSH_9.2\r\n",
        bytes(range(256)) * 4,
    ],
)
async def test_garbage_fails_the_handshake_with_one_line(
    certs: Certs, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    caplog.set_level(logging.DEBUG, "trioxy.tls")
    cert, key = certs.server("a.test")
    proxy = Proxy()
    proxy.pipeline("server").accept_tls(cert, key).to(lambda p: p.dump())
    proxy.build()
    out = await run_layout(proxy.layout("server"), [Data(garbage), StreamEnd()])
    end = out[-1]
    assert isinstance(end, StreamEnd) and isinstance(end.error, TlsHandshakeError)
    assert [e for e in out if isinstance(e, StreamEnd)] == [end]
    assert len(tls_logs(caplog, logging.DEBUG)) == 1, tls_logs(caplog, logging.DEBUG)


async def test_connect_refused_passes_through_unchanged(certs: Certs) -> None:
    proxy = Proxy()
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    proxy.pipeline("c").connect_tls("a.test", ca_file=certs.ca).to(lambda p: p.connect(address))
    proxy.build()
    out = await run_layout(proxy.layout("c"), [Data(b"x"), StreamEnd()])
    end = out[-1]
    assert isinstance(end, StreamEnd) and type(end.error).__name__ == "ConnectRefused"


class Record(Filter):
    """Records its input; answers ``bye`` and ends its output on the first Data."""

    name = "record"
    inputs: list[Event] = []

    async def on_event(self, event: Event) -> None:
        Record.inputs.append(event)
        if isinstance(event, Data) and len(Record.inputs) == 1:
            await self.output(Data(b"bye"))
            await self.output(StreamEnd())


class PythonClient:
    """Python's ssl client over memory BIOs, driving accept_tls byte by byte."""

    def __init__(self, ca: str, name: str) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        context = ssl.create_default_context(cafile=ca)
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=name)

    def hello(self) -> bytes:
        """The ClientHello flight."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def take(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Data):
                self.incoming.write(event.data)
        events.clear()

    def read(self) -> bytes | None:
        """Plaintext available, or None once the server's close_notify is in."""
        data = b""
        try:
            while chunk := self.tls.read(65536):
                data += chunk
            return data or None
        except ssl.SSLWantReadError:
            return data
        except ssl.SSLZeroReturnError:
            return None


async def test_half_close_both_ways_and_bytes_after_the_peers_close_notify(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "trioxy.tls")
    Record.inputs = []
    cert, key = certs.server("a.test")
    proxy = Proxy()
    proxy.pipeline("server").accept_tls(cert, key).to(lambda p: p.add_filter(Record))
    proxy.build()
    client = PythonClient(certs.ca, "a.test")
    async with open_pipeline(proxy.layout("server")) as harness:
        while True:  # the handshake, one flight at a time
            try:
                client.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await harness.send(Data(client.outgoing.read()))
                client.take(harness.output)
        client.tls.write(b"first")
        await harness.send(Data(client.outgoing.read()))
        # The sub-pipeline answered and ended: close_notify, then the TCP half-close.
        assert isinstance(harness.output[-1], StreamEnd) and harness.output[-1].error is None
        client.take(harness.output)
        assert client.read() == b"bye"
        assert client.read() is None  # then the server's close_notify
        # The server's half-close does not stop the client: its data still arrives.
        client.tls.write(b"second")
        await harness.send(Data(client.outgoing.read()))
        try:
            client.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        await harness.send(Data(client.outgoing.read()))
        await harness.send(Data(b"bytes after close_notify"), StreamEnd())
        await harness.settle()
    assert Record.inputs == [Data(b"first"), Data(b"second"), StreamEnd()]
    assert tls_logs(caplog, logging.DEBUG) == []


# Real peers -------------------------------------------------------------------------


async def run(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            list(argv), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )


async def curl(port: int, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await run(
        CURL, "-s", "-S", "--max-time", "20", "--resolve", f"{name}:{port}:127.0.0.1",
        "-w", "\n%{http_code} %{http_version}", *args, f"https://{name}:{port}/",
    )  # fmt: skip


def tls_server(certs: Certs, **tls: Any) -> Proxy:
    """A TLS HTTP server that answers with what the context says about TLS."""

    def about(ctx: Context, request: Any) -> str:
        return f"{ctx.tls_version} {ctx.tls_alpn} {ctx.tls_sni} {ctx.tls_peer_subject}"

    if "cert" not in tls and "sni" not in tls:
        tls["cert"], tls["key"] = certs.server("a.test", "b.test")
    proxy = Proxy()
    (
        proxy.listen("127.0.0.1:0")
        .accept_tls(**tls)
        .to(lambda p: p.demux_http().to(lambda r: r.serve_http(about)))
    )
    return proxy


@pytest.mark.parametrize("version", ["1.3", "1.2"])
async def test_curl_gets_200_over_http11_alpn(certs: Certs, version: str) -> None:
    async with serving(tls_server(certs, alpn=["http/1.1"])) as server:
        port = server.ports[0]
        done = await curl(port, "a.test", "--cacert", certs.ca, "--tls-max", version)
        assert done.returncode == 0, done.stderr
        body, status = done.stdout.decode().rsplit("\n", 1)
        assert status == "200 1.1"
        assert body == f"TLSv{version} http/1.1 a.test None"
        # Keep-alive through TLS: the second request reuses the connection.
        done = await curl(
            port, "a.test", "--cacert", certs.ca, "--tls-max", version,
            "-w", " connects=%{num_connects}", f"https://a.test:{port}/",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(f"TLSv{version}".encode()) == 2
        assert done.stdout.endswith(b" connects=0"), done.stdout


async def test_openssl_s_client_sees_the_sni_certificate_and_alpn(certs: Certs) -> None:
    pairs = {"a.test": certs.server("a.test"), "b.test": certs.server("b.test")}
    proxy = tls_server(certs, sni=lambda ctx, name: pairs.get(name), alpn=["h2", "http/1.1"])
    async with serving(proxy) as server:
        port = server.ports[0]
        for name, offered, selected in (("b.test", "h2,http/1.1", "h2"), ("a.test", "foo", None)):
            done = await run(
                OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name,
                "-alpn", offered, "-CAfile", certs.ca, "-verify_return_error",
            )  # fmt: skip
            text = done.stdout.decode()
            assert f"subject=O = trioxy tests, CN = {name}" in text, text
            assert "Verify return code: 0 (ok)" in text
            if selected:
                assert f"ALPN protocol: {selected}" in text
            else:
                assert "No ALPN negotiated" in text


async def test_client_certificate_required(certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "trioxy.tls")
    alice, alice_key = certs.client("alice")
    mallory, mallory_key = certs.client("mallory", other_ca=True)
    async with serving(tls_server(certs, ca_file=certs.ca)) as server:
        port = server.ports[0]
        done = await curl(port, "a.test", "--cacert", certs.ca)
        assert done.returncode != 0
        lines = tls_logs(caplog)
        assert len(lines) == 1 and "certificate" in lines[0], lines
        assert lines[0].startswith("accept_tls: TLS handshake with client 127.0.0.1:")

        done = await curl(
            port, "a.test", "--cacert", certs.ca, "--cert", mallory, "--key", mallory_key
        )
        assert done.returncode != 0
        lines = tls_logs(caplog)
        assert len(lines) == 2 and "certificate verify failed" in lines[1], lines

        done = await curl(port, "a.test", "--cacert", certs.ca, "--cert", alice, "--key", alice_key)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode() == "TLSv1.3 None a.test CN=alice,O=trioxy tests\n200 1.1"


async def test_plain_http_on_the_tls_port_is_closed_with_one_line(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "trioxy.tls")
    async with serving(tls_server(certs)) as server:
        port = server.ports[0]
        done = await run(CURL, "-s", "--max-time", "20", f"http://127.0.0.1:{port}/")
        assert done.returncode in (52, 56), done  # empty reply / connection reset
        lines = tls_logs(caplog)
        assert len(lines) == 1 and "plain HTTP sent to a TLS port" in lines[0], lines
        # A client that connects and goes away says nothing above DEBUG.
        with socket.create_connection(("127.0.0.1", port)):
            pass
        done = await curl(port, "a.test", "--cacert", certs.ca)
        assert done.returncode == 0, done.stderr
        assert len(tls_logs(caplog)) == 1


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("good", None),
        ("other-ca", "unable to get local issuer certificate"),
        ("wrong-host", "Hostname mismatch"),
        ("expired", "certificate has expired"),
    ],
)
async def test_connect_tls_to_openssl_s_server(
    certs: Certs, caplog: pytest.LogCaptureFixture, case: str, reason: str | None
) -> None:
    caplog.set_level(logging.WARNING, "trioxy.tls")
    cert, key = certs.server("backend.test", expired=case == "expired")
    ca = certs.other_ca if case == "other-ca" else certs.ca
    name = "wrong.test" if case == "wrong-host" else "backend.test"
    with s_server(cert, key) as backend:
        proxy = Proxy()
        (
            proxy.listen("127.0.0.1:0")
            .connect_tls(name, ca_file=ca)
            .to(lambda p: p.connect(f"127.0.0.1:{backend}"))
        )
        async with serving(proxy) as server:
            port = server.ports[0]
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
                received = b""
                with trio.fail_after(20):
                    try:
                        while chunk := await stream.receive_some(65536):
                            received += chunk
                    except trio.BrokenResourceError:
                        pass  # a reset: the proxy closed on an error
    lines = tls_logs(caplog)
    if reason is None:
        assert received.startswith(b"HTTP/1.0 200 ok"), received[:200]
        assert b"Ciphers supported in s_server binary" in received
        assert lines == []
    else:
        assert received == b""
        assert len(lines) == 1 and reason in lines[0], lines
        assert "server 127.0.0.1:" in lines[0] and f"server name '{name}'" in lines[0]


async def test_connect_tls_failure_is_a_502_behind_http(certs: Certs) -> None:
    cert, key = certs.server("backend.test")
    with s_server(cert, key) as backend:
        proxy = Proxy()
        (
            proxy.listen("127.0.0.1:0")
            .demux_http()
            .to(
                lambda p: p.mux_http().to(
                    lambda q: q.connect_tls("backend.test", ca_file=certs.other_ca).to(
                        lambda r: r.connect(f"127.0.0.1:{backend}")
                    )
                )
            )
        )
        async with serving(proxy) as server:
            port = server.ports[0]
            done = await run(
                CURL, "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
                f"http://127.0.0.1:{port}/",
            )  # fmt: skip
    assert done.stdout == b"502"


async def test_handle_tls_client_hello_routes_passthrough_by_sni(certs: Certs) -> None:
    a_cert, a_key = certs.server("a.test")
    b_cert, b_key = certs.server("b.test")
    names: list[tuple[str | None, tuple[str, ...]]] = []

    def remember(ctx: Context, hello: Any) -> None:
        names.append((hello.server_name, hello.alpn_protocols))
        ctx.set(tls_sni=hello.server_name)

    with s_server(a_cert, a_key) as a_port, s_server(b_cert, b_key) as b_port:
        routes = {"a.test": f"127.0.0.1:{a_port}", "b.test": f"127.0.0.1:{b_port}"}
        proxy = Proxy()
        (
            proxy.listen("127.0.0.1:0")
            .handle_tls_client_hello(remember)
            .connect(lambda ctx: routes[ctx.tls_sni])
        )
        async with serving(proxy) as server:
            port = server.ports[0]
            for name in ("a.test", "b.test"):
                # Verification against the name proves which backend answered.
                done = await curl(port, name, "--cacert", certs.ca)
                assert done.returncode == 0, done.stderr
                assert done.stdout.endswith(b"\n200 1")  # s_server -www speaks HTTP/1.0
            done = await run(
                OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "b.test",
                "-alpn", "h2,http/1.1", "-CAfile", certs.ca, "-verify_return_error",
            )  # fmt: skip
            assert "subject=O = trioxy tests, CN = b.test" in done.stdout.decode()
    assert names[:2] == [("a.test", ("h2", "http/1.1")), ("b.test", ("h2", "http/1.1"))]
    assert names[2] == ("b.test", ("h2", "http/1.1"))


async def test_handle_tls_client_hello_passes_non_tls_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "trioxy.tls")
    called: list[object] = []
    proxy = Proxy()
    proxy.pipeline("x").handle_tls_client_hello(lambda ctx, hello: called.append(hello))
    proxy.build()
    events = [Data(b"GET / HTTP/1.1\r\n"), Data(b"Host: x\r\n\r\n"), StreamEnd()]
    out = await run_layout(proxy.layout("x"), events)
    assert out == events and called == []
    # A hello cut short by the end of the stream: the held bytes still pass on.
    out = await run_layout(proxy.layout("x"), [Data(b"\x16\x03\x01\x02\x00\x01"), StreamEnd()])
    assert out == [Data(b"\x16\x03\x01\x02\x00\x01"), StreamEnd()] and called == []
    assert len(tls_logs(caplog, logging.DEBUG)) == 2


# docs/tls.md -------------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "tls.md"
RUNNABLE = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```", re.S | re.M)


def test_the_guide_runs_in_order_in_one_namespace() -> None:
    text = GUIDE.read_text()
    blocks = [(text.count("\n", 0, m.start(1)), m.group(1)) for m in RUNNABLE.finditer(text)]
    assert len(blocks) >= 3
    namespace: dict[str, Any] = {"__name__": "docs_tls_example"}
    for offset, code in blocks:
        # Padded so that a failure points at the line in docs/tls.md.
        exec(compile("\n" * offset + code, str(GUIDE), "exec"), namespace)
