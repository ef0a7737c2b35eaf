"""``mux_http`` pools a connection under the target the balancer picked
(``ctx.target``): one that ``connect`` failed over to another server is not
pooled under that key, so later requests for the first server reach it once it
is back. In process, over loopback, with two small keep-alive backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio

from filters.balance import RoundRobin
from pipeline import Proxy
from tests.filters.test_http_shutdown import GUARD, Backend, Client, started
from tests.helpers import free_port, serving


@asynccontextmanager
async def listening(
    handler: Callable[[trio.SocketStream], Awaitable[None]], port: int
) -> AsyncIterator[None]:
    """Serve ``handler`` on ``127.0.0.1:port`` for the block."""
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_tcp, handler, port, host="127.0.0.1"))
        yield
        nursery.cancel_scope.cancel()


async def test_a_failed_over_connection_is_not_pooled_under_the_first_key() -> None:
    first = Backend(port=free_port())  # down at first: nothing listens there yet
    second = Backend()
    async with started(second.handle) as second.port:
        # Round-robin, never taking a server out: the picks go first, second, first...
        backends = RoundRobin([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"], max_fails=0)
        proxy = Proxy()
        (
            proxy.listen("127.0.0.1:0")
            .demux_http()
            .to(lambda p: p.balance(backends).mux_http().to(lambda s: s.connect(backends)))
        )
        async with serving(proxy) as server:
            client = await Client.open(server.ports[0])

            async def get(path: str) -> None:
                await client.send(path)
                with trio.fail_after(GUARD):
                    _, body = await client.response()
                assert body == path.encode()

            await get("/one")  # picked the first, failed over to the second
            await get("/two")  # picked the second
            assert second.requests == ["/one", "/two"]
            async with listening(first.handle, first.port):
                await get("/three")  # picked the first, which is back
            # The first server answered, not the connection that failed over
            # (which was not pooled under the first server's key).
            assert first.requests == ["/three"] and second.requests == ["/one", "/two"]
            await client.aclose()


async def test_a_connection_that_reached_its_key_is_reused() -> None:
    backend = Backend()
    async with started(backend.handle) as backend.port:
        proxy = Proxy()
        target = f"127.0.0.1:{backend.port}"
        (
            proxy.listen("127.0.0.1:0")
            .demux_http()
            .to(
                lambda p: (
                    p.handle_message_start(lambda ctx, head: ctx.set(target=target))
                    .mux_http()
                    .to(lambda s: s.connect(target))
                )
            )
        )
        async with serving(proxy) as server:
            port = server.ports[0]
            client = await Client.open(port)
            for path in ("/a", "/b", "/c"):
                await client.send(path)
                with trio.fail_after(GUARD):
                    _, body = await client.response()
                assert body == path.encode()
            await client.aclose()
    assert backend.connections == 1  # one pooled connection carried all three
