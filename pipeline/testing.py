"""Run pipelines in memory, without sockets: for trioxy's tests and for yours.

:func:`run_layout` feeds a list of events (or ``bytes``, taken as ``Data``) into a
fresh live pipeline and returns everything that came out::

    from pipeline import Proxy, Data, StreamEnd
    from pipeline.testing import run_layout

    proxy = Proxy()
    upper = proxy.pipeline("upper").replace_data(lambda ctx, d: d.upper())

    async def test_upper():
        out = await run_layout(proxy.layout("upper"), [b"abc", StreamEnd()])
        assert out == [Data(b"ABC"), StreamEnd()]

:func:`open_pipeline` gives finer control (send, then look, then send more), and
:func:`run_listener` runs the pipeline of a script's listener, as a connection to
it would. Outputs are collected until the pipeline has emitted ``StreamEnd`` or
nothing is left to do (every task blocked), then the pipeline is closed; the
helpers check that it left no task running.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio.testing

from .context import Context
from .events import Data, Event, StreamEnd
from .layout import Builder, Layout
from .live import Pipeline, service_nursery
from .script import load_script

__all__ = ["Harness", "join_data", "open_pipeline", "run_layout", "run_listener"]

Input = Event | bytes


@dataclass
class Harness:
    """A live pipeline under test and what it has output so far."""

    pipeline: Pipeline
    output: list[Event] = field(default_factory=list)
    ended: trio.Event = field(default_factory=trio.Event)

    async def send(self, *items: Input) -> None:
        """Feed events (``bytes`` become ``Data``) into the pipeline's head."""
        for item in items:
            await self.pipeline.input(Data(item) if isinstance(item, bytes) else item)

    async def collect(self, event: Event) -> None:
        self.output.append(event)
        if isinstance(event, StreamEnd):
            self.ended.set()

    async def settle(self, timeout: float = 5.0) -> list[Event]:
        """Wait until the pipeline output ``StreamEnd`` or went quiet; the output.

        "Quiet" is Trio's :func:`~trio.testing.wait_all_tasks_blocked`: a task
        sleeping in ``trio.sleep`` counts as blocked, so for filters that answer
        after a delay wait on :attr:`ended` instead (or use an autojump clock)."""
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:

                async def ended() -> None:
                    await self.ended.wait()
                    nursery.cancel_scope.cancel()

                async def quiet() -> None:
                    await trio.testing.wait_all_tasks_blocked(cushion=0.01)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(ended)
                nursery.start_soon(quiet)
        return self.output

    @property
    def data(self) -> bytes:
        """The bytes of every ``Data`` event output so far."""
        return join_data(self.output)


def join_data(events: Iterable[Event]) -> bytes:
    """The concatenated bytes of the ``Data`` events among ``events``."""
    return b"".join(e.data for e in events if isinstance(e, Data))


@asynccontextmanager
async def open_pipeline(
    layout: Layout | Builder, context: Context | None = None
) -> AsyncIterator[Harness]:
    """A live pipeline of ``layout`` in a nursery, started as the runtime starts a
    connection's (a ``connect`` to a fixed target dials before the first input);
    closed (and checked for leftover tasks) when the block ends."""
    if isinstance(layout, Builder):
        layout = layout.build({})
    async with trio.open_nursery() as nursery:
        token = service_nursery.set(nursery) if service_nursery.get() is None else None
        harness: Harness
        pipeline = Pipeline(
            layout,
            context or Context(local=("127.0.0.1", 0), remote=("127.0.0.1", 0)),
            nursery,
            lambda e: harness.collect(e),
        )
        harness = Harness(pipeline)
        try:
            pipeline.start()  # as the runtime does, before the first event
            yield harness
        finally:
            pipeline.close()
            nursery.cancel_scope.cancel()  # shared sessions the pipeline opened end too
            if token is not None:
                service_nursery.reset(token)
    if pipeline.task_count:
        raise AssertionError(f"{pipeline} left {pipeline.task_count} task(s) running")


async def run_layout(
    layout: Layout | Builder,
    inputs: Iterable[Input],
    *,
    context: Context | None = None,
    timeout: float = 5.0,
) -> list[Event]:
    """Feed ``inputs`` into a fresh pipeline of ``layout``; return its output."""
    async with open_pipeline(layout, context) as harness:
        await harness.send(*inputs)
        return list(await harness.settle(timeout))


async def run_listener(
    script: str | os.PathLike[str],
    inputs: Iterable[Input],
    *,
    listener: int | str = 0,
    timeout: float = 5.0,
) -> list[Event]:
    """Run the pipeline of one of ``script``'s listeners on ``inputs``, as if a
    client had connected and sent them; no socket is opened by the harness (filters
    such as ``connect`` still open theirs)."""
    loaded = load_script(script)
    spec = loaded.listener(listener)
    context = Context(local=(spec.host, spec.port), remote=("127.0.0.1", 0), listener=spec.address)
    return await run_layout(spec.layout, inputs, context=context, timeout=timeout)
