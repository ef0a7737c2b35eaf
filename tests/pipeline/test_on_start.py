"""The ``on_start`` hook of the filter contract, and what uses it: a ``connect``
(or a tunnel client) to a fixed target dials when its pipeline starts, so a
server that speaks first (SMTP, MySQL) is heard before the client sends anything.

What is checked:

* the ``starts`` class flag says which filter classes have a hook;
* the hook runs once per pipeline, before any event, and not again on a second
  :meth:`Pipeline.start`; a closed pipeline starts nothing;
* a sub-pipeline opened by a joint filter is started when it is opened (and
  ``accept_tls`` offloading a server that speaks first works);
* the runtime starts an event pipeline at accept, and does not start the one a
  lone filter relays (``relay``);
* ``connect`` to a fixed target (a string, a list) dials before any event; to a
  function or a balancer only on the first event, which may set what it reads;
* ``connect_socks`` / ``connect_http_tunnel`` to a fixed target open their
  tunnel at once (the client hears the banner without sending), and fail as
  before when the tunnel server refuses.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, ClassVar

import pytest
import trio

from filters.balance import RoundRobin
from filters.connect import Connect
from filters.http_tunnel import ConnectHttpTunnel
from filters.socks import ConnectSocks
from pipeline import Data, Event, Filter, Proxy, StreamEnd
from pipeline.context import Context
from pipeline.errors import ConnectRefused
from pipeline.live import Pipeline
from pipeline.testing import open_pipeline
from tests.tls_helpers import Certs, certs
from tests.tunnel_helpers import backend, read_all, serving, to_target

__all__ = ["certs"]  # the module-scoped fixture, used by name

BANNER = b"220 ready\r\n"


# Filters made for the tests ---------------------------------------------------------


class Greeter(Filter):
    """Says ``hello`` from a task its ``on_start`` starts, then passes events on;
    counts the calls of its hook (on the class: instances are made per pipeline)."""

    name = "greeter_test"
    calls: ClassVar[list[Greeter]] = []

    def on_start(self) -> None:
        Greeter.calls.append(self)
        self.pipeline.start_task(self.output, Data(b"hello"))


class Plain(Filter):
    """No hook."""

    name = "plain_test"


class Joint(Filter):
    """Opens its sub-pipeline on the first event, as joint filters do."""

    name = "joint_test"
    joint = True

    def __init__(self) -> None:
        self.sub: Any = None

    async def on_event(self, event: Event) -> None:
        if self.sub is None:
            self.sub = self.pipeline.sub(self.sub_layout, self.output)
        await self.sub.input(event)


class Relayer(Filter):
    """A lone filter with ``relay``: the runtime hands it the client socket."""

    name = "relayer_test"
    started: ClassVar[int] = 0
    relayed: ClassVar[int] = 0

    def on_start(self) -> None:
        Relayer.started += 1

    async def relay(self, client: trio.socket.SocketType, idle_timeout: float | None) -> None:
        Relayer.relayed += 1
        await client.send(b"relayed")


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    Greeter.calls.clear()
    Relayer.started = Relayer.relayed = 0


# Banner servers -------------------------------------------------------------------


class Banner:
    """A TCP server that sends :data:`BANNER` at accept, then echoes; it counts
    the connections it accepted."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            try:
                await stream.send_all(BANNER)
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@asynccontextmanager
async def banner_server() -> AsyncIterator[Banner]:
    server = Banner()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """``size`` bytes from ``stream`` (fewer only if it ends first)."""
    out = b""
    with trio.fail_after(10):
        while len(out) < size:
            chunk = await stream.receive_some(size - len(out))
            if not chunk:
                break
            out += chunk
    return out


async def wait_for(condition: Callable[[], object]) -> None:
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.01)


# The hook ---------------------------------------------------------------------------


def test_the_starts_flag_marks_the_classes_with_a_hook() -> None:
    class Inherits(Greeter):
        pass

    assert Greeter.starts and Inherits.starts and Relayer.starts
    assert not Filter.starts and not Plain.starts and not Joint.starts
    assert Connect.starts and ConnectSocks.starts and ConnectHttpTunnel.starts


async def test_the_hook_runs_once_before_any_event() -> None:
    proxy = Proxy()
    layout = proxy.pipeline("p").add_filter(Plain).add_filter(Greeter)
    async with open_pipeline(layout) as harness:
        assert await harness.settle() == [Data(b"hello")]  # nothing was sent
        harness.pipeline.start()  # again: nothing more
        await harness.send(b"abc", StreamEnd())
        assert await harness.settle() == [Data(b"hello"), Data(b"abc"), StreamEnd()]
    assert len(Greeter.calls) == 1


async def test_a_closed_pipeline_starts_nothing() -> None:
    proxy = Proxy()
    layout = proxy.pipeline("p").add_filter(Greeter).build({})
    async with trio.open_nursery() as nursery:

        async def discard(event: Event) -> None:
            pass

        pipeline = Pipeline(layout, Context(), nursery, discard)
        pipeline.close()
        pipeline.start()
    assert Greeter.calls == []


async def test_a_sub_pipeline_starts_when_a_joint_filter_opens_it() -> None:
    proxy = Proxy()
    layout = proxy.pipeline("p").add_filter(Joint).to(lambda p: p.add_filter(Greeter))
    async with open_pipeline(layout) as harness:
        assert await harness.settle() == []  # the sub-pipeline does not exist yet
        assert Greeter.calls == []
        await harness.send(b"abc")
        assert harness.data == b"abc"  # the event first (it opened the sub-pipeline)...
        assert await harness.settle() == [Data(b"abc"), Data(b"hello")]  # ...then the task
        await harness.send(b"def")
    assert len(Greeter.calls) == 1
    assert Greeter.calls[0].pipeline.parent is harness.pipeline


# The runtime ------------------------------------------------------------------------


async def test_the_runtime_starts_an_event_pipeline_at_accept_not_a_relay() -> None:
    proxy = Proxy()
    proxy.listen("127.0.0.1:0").add_filter(Greeter)
    proxy.listen("127.0.0.1:0").add_filter(Relayer)
    async with serving(proxy) as server:
        events, relay = server.ports
        for _ in range(2):
            async with await trio.open_tcp_stream("127.0.0.1", events) as stream:
                assert await receive_exactly(stream, 5) == b"hello"  # before sending anything
                await stream.send_all(b"!")
                assert await receive_exactly(stream, 1) == b"!"
            async with await trio.open_tcp_stream("127.0.0.1", relay) as stream:
                assert await read_all(stream) == b"relayed"
    assert len(Greeter.calls) == 2
    assert (Relayer.relayed, Relayer.started) == (2, 0)


# connect ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_list", [False, True])
async def test_connect_to_a_fixed_target_dials_before_any_event(as_list: bool) -> None:
    async with banner_server() as upstream:
        target: Any = [upstream.address] if as_list else upstream.address
        proxy = Proxy()
        layout = proxy.pipeline("p").dump().connect(target)
        async with open_pipeline(layout) as harness:
            await wait_for(lambda: harness.data == BANNER)  # nothing was sent
            await harness.send(b"EHLO x\r\n", StreamEnd())
            await wait_for(lambda: harness.ended.is_set())
            assert harness.data == BANNER + b"EHLO x\r\n"
        assert upstream.accepted == 1


async def test_a_fixed_target_that_refuses_ends_the_stream_without_any_event() -> None:
    with socket.socket() as unused:  # bound, not listening: connecting is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        proxy = Proxy()
        layout = proxy.pipeline("p").connect(f"127.0.0.1:{port}")
        async with open_pipeline(layout) as harness:
            await wait_for(lambda: harness.ended.is_set())
            [end] = harness.output
            assert isinstance(end, StreamEnd) and isinstance(end.error, ConnectRefused)


@pytest.mark.parametrize("kind", ["function", "async function", "balancer"])
async def test_a_function_or_a_balancer_waits_for_the_first_event(kind: str) -> None:
    async with banner_server() as upstream:
        target: Any
        if kind == "function":
            target = lambda ctx: ctx.get("chosen")  # noqa: E731
        elif kind == "async function":

            async def target(ctx: Any) -> str:
                return str(ctx.get("chosen"))

        else:
            target = RoundRobin([upstream.address])

        def choose(ctx: Any, data: bytes) -> None:
            ctx.set(chosen=upstream.address)

        proxy = Proxy()
        layout = proxy.pipeline("p").handle_data(choose).connect(target)
        async with open_pipeline(layout) as harness:
            assert await harness.settle() == []
            assert upstream.accepted == 0  # no dial before the first event
            await harness.send(b"hi")
            await wait_for(lambda: harness.data == BANNER + b"hi")
        assert upstream.accepted == 1


async def test_accept_tls_offloads_a_server_that_speaks_first(certs: Certs) -> None:
    cert, key = certs.server("banner.test")
    client_context = ssl.create_default_context(cafile=certs.ca)
    async with banner_server() as upstream:
        proxy = Proxy()
        proxy.listen("127.0.0.1:0").accept_tls(cert, key).to(lambda p: p.connect(upstream.address))
        async with serving(proxy) as server:
            tcp = await trio.open_tcp_stream("127.0.0.1", server.ports[0])
            async with trio.SSLStream(tcp, client_context, server_hostname="banner.test") as tls:
                await tls.do_handshake()
                assert await receive_exactly(tls, len(BANNER)) == BANNER
                await tls.send_all(b"ping\r\n")
                assert await receive_exactly(tls, 6) == b"ping\r\n"
        assert upstream.accepted == 1


# Tunnel clients ---------------------------------------------------------------------


Build = Callable[[Proxy, str, int], None]


def _socks(proxy: Proxy, target: str, tunnel_port: int) -> None:
    proxy.listen("127.0.0.1:0").connect_socks(target).to(
        lambda p: p.connect(f"127.0.0.1:{tunnel_port}")
    )


def _http(proxy: Proxy, target: str, tunnel_port: int) -> None:
    proxy.listen("127.0.0.1:0").connect_http_tunnel(target).to(
        lambda p: p.connect(f"127.0.0.1:{tunnel_port}")
    )


def _socks_server(proxy: Proxy) -> None:
    proxy.listen("127.0.0.1:0").accept_socks().to(to_target)


def _http_server(proxy: Proxy) -> None:
    proxy.listen("127.0.0.1:0").accept_http_tunnel(allow="127.0.0.1:*").to(to_target)


TUNNELS = [(_socks, _socks_server), (_http, _http_server)]


@pytest.mark.parametrize(("client", "server_end"), TUNNELS, ids=["socks", "http"])
async def test_a_tunnel_client_to_a_fixed_target_opens_at_once(
    client: Build, server_end: Callable[[Proxy], None]
) -> None:
    async with backend(banner=BANNER) as far:
        tunnel_proxy = Proxy()
        server_end(tunnel_proxy)
        async with serving(tunnel_proxy) as tunnel_server:
            proxy = Proxy()
            client(proxy, f"127.0.0.1:{far.port}", tunnel_server.ports[0])
            async with serving(proxy) as server:
                async with await trio.open_tcp_stream("127.0.0.1", server.ports[0]) as stream:
                    assert await receive_exactly(stream, len(BANNER)) == BANNER
                    await stream.send_all(b"hi")
                    await stream.send_eof()
                    assert await read_all(stream) == b"got hi"
        assert far.received == [b"hi"]


@pytest.mark.parametrize(("client", "server_end"), TUNNELS, ids=["socks", "http"])
async def test_a_tunnel_client_whose_tunnel_fails_closes_its_client(
    client: Build, server_end: Callable[[Proxy], None], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:  # the far target refuses
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        tunnel_proxy = Proxy()
        server_end(tunnel_proxy)
        async with serving(tunnel_proxy) as tunnel_server:
            proxy = Proxy()
            client(proxy, f"127.0.0.1:{port}", tunnel_server.ports[0])
            async with serving(proxy) as server:
                async with await trio.open_tcp_stream("127.0.0.1", server.ports[0]) as stream:
                    with trio.fail_after(10):
                        try:
                            assert await read_all(stream) == b""  # closed, nothing sent
                        except trio.BrokenResourceError:
                            pass  # (or reset)
    assert f"127.0.0.1:{port}" in caplog.text


async def test_connect_tls_handshakes_at_once_for_a_server_that_speaks_first(
    certs: Certs,
) -> None:
    """Plain client -> connect_tls -> a TLS server that greets after its
    handshake (SMTPS-like): the client hears the greeting without sending."""
    cert, key = certs.server("banner.test")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with banner_server() as upstream:

        async def tls_banner(stream: trio.SocketStream) -> None:
            async with trio.SSLStream(stream, server_context, server_side=True) as tls:
                await upstream.handle(tls)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, tls_banner, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            proxy = Proxy()
            (
                proxy.listen("127.0.0.1:0")
                .connect_tls("banner.test", ca_file=certs.ca)
                .to(lambda p: p.connect(f"127.0.0.1:{port}"))
            )
            async with serving(proxy) as server:
                async with await trio.open_tcp_stream("127.0.0.1", server.ports[0]) as client:
                    assert await receive_exactly(client, len(BANNER)) == BANNER
                    await client.send_all(b"ping\r\n")
                    assert await receive_exactly(client, 6) == b"ping\r\n"
            nursery.cancel_scope.cancel()
        assert upstream.accepted == 1
