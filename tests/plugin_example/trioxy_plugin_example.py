"""An example third-party trioxy plugin: the ``rot13`` filter and a balancer.

Installed by ``make test`` (``pip install -e tests/plugin_example``); its entry
point in the ``trioxy`` group makes ``builder.rot13()`` available to every script.
"""

from __future__ import annotations

import codecs
from typing import Any

from pipeline import Data, Event, Filter, hookimpl


class Rot13(Filter):
    """``rot13()``: ROT13 the letters of every ``Data`` event."""

    name = "rot13"

    async def on_event(self, event: Event) -> None:
        if type(event) is Data:
            text = codecs.encode(event.data.decode("latin-1"), "rot13")
            event = Data(text.encode("latin-1"))
        await self.output(event)


class FirstOnly:
    """A trivial balancer: always the first target."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = list(targets)

    def select(self, ctx: Any) -> str:
        return self.targets[0]


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Rot13]


@hookimpl
def trioxy_balancers() -> dict[str, Any]:
    return {"first-only": FirstOnly}
