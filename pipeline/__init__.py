"""trioxy's engine: events, the filter contract, layouts, live pipelines, context,
script loading, runtime and CLI. Scripts start with ``from pipeline import Proxy``.
"""

from .context import Context
from .errors import (
    ConfigError,
    ConnectionReset,
    ConnectRefused,
    ConnectTimeout,
    IdleTimeout,
    PipelineError,
    ReadTimeout,
    TrioxyError,
    UpstreamError,
    WriteTimeout,
)
from .events import Data, Event, MessageEnd, MessageStart, StreamEnd
from .filter import Filter, Output
from .hookspecs import hookimpl
from .layout import Builder, FilterSpec, Layout
from .live import Pipeline
from .proxy import Proxy

__all__ = [
    "Builder",
    "ConfigError",
    "ConnectRefused",
    "ConnectTimeout",
    "ConnectionReset",
    "Context",
    "Data",
    "Event",
    "Filter",
    "FilterSpec",
    "IdleTimeout",
    "Layout",
    "MessageEnd",
    "MessageStart",
    "Output",
    "Pipeline",
    "PipelineError",
    "Proxy",
    "ReadTimeout",
    "StreamEnd",
    "TrioxyError",
    "UpstreamError",
    "WriteTimeout",
    "hookimpl",
]
