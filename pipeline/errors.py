"""The exceptions of the engine, one root per concern.

* :class:`ConfigError`: a script is wrong. Raised while the script loads, carrying
  the script's file and line, never on the first request.
* :class:`UpstreamError` and its subclasses: talking to a server failed. They are
  carried by ``StreamEnd(error=...)`` and name the HTTP status a protocol layer
  should answer with (``status``: 502 or 504).
* :class:`PipelineError`: a filter was misused at run time (an event after the
  stream ended, a sub-pipeline missing), a bug in a script or plugin.

Codecs in :mod:`protocols` define their own ``ProtocolError`` roots; they do not
import this module, to stay free of the engine.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectRefused",
    "ConnectTimeout",
    "ConnectionReset",
    "IdleTimeout",
    "PipelineError",
    "ReadTimeout",
    "TrioxyError",
    "UpstreamError",
    "WriteTimeout",
]


class TrioxyError(Exception):
    """Root of every exception the engine raises on purpose."""


class ConfigError(TrioxyError):
    """A script is wrong: unknown filter, bad argument, unresolved layout name...

    ``filename`` and ``lineno`` point at the line of the script that caused it.
    ``str()`` gives the one-line form ``file:line: reason`` the CLI prints.
    """

    def __init__(self, reason: str, filename: str | None = None, lineno: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.filename = filename
        self.lineno = lineno

    def __str__(self) -> str:
        if self.filename is None:
            return self.reason
        return f"{self.filename}:{self.lineno}: {self.reason}"


class PipelineError(TrioxyError):
    """A filter or script misused the engine while running."""


class UpstreamError(TrioxyError):
    """Talking to an upstream server failed. ``status`` is the HTTP status a
    protocol layer should answer with."""

    status = 502

    def __init__(self, message: str, target: str | None = None):
        super().__init__(message)
        self.target = target


class ConnectRefused(UpstreamError):
    """The server refused the connection, or no address answered."""


class ConnectTimeout(UpstreamError):
    """Connecting took longer than the connect timeout."""

    status = 504


class ConnectionReset(UpstreamError):
    """The peer reset the connection."""


class ReadTimeout(UpstreamError):
    """No data arrived within the read timeout."""

    status = 504


class WriteTimeout(UpstreamError):
    """The peer did not accept data within the write timeout."""

    status = 504


class IdleTimeout(UpstreamError):
    """Nothing moved in either direction within the idle timeout."""

    status = 504
