"""``split(separator, keep=False, max_size=64 KiB)``: cut a byte stream into messages.

Every chunk of the stream that ends with ``separator`` becomes one message,
``MessageStart(), Data(chunk), MessageEnd()`` (an empty chunk, as between two
separators in a row, becomes ``MessageStart(), MessageEnd()`` with no ``Data``).
With ``keep=False`` (the default, like ``bytes.split``) the separator is dropped;
with ``keep=True`` it stays at the end of its chunk.

* Separators split across ``Data`` events are found: any chunking of the same bytes
  gives the same messages.
* The bytes after the last separator are buffered; at ``StreamEnd`` (or at a
  ``MessageEnd`` of the input, see below) a non-empty remainder is output as a
  last message, without a separator.
* ``max_size`` bounds the buffer: a chunk longer than ``max_size`` bytes (not
  counting the separator) ends the stream with ``StreamEnd(PipelineError)``, and
  the rest of the input is discarded. The messages before it are output as usual.
* The input is read as bytes: ``MessageStart`` and ``MessageEnd`` of the input are
  not passed on, but an input ``MessageEnd`` ends the current chunk, so splitting
  a stream of messages splits each body on its own.

Example: one message per line of a line protocol, each handled on its own::

    from pipeline import Proxy

    proxy = Proxy()
    (proxy.pipeline("lines")
        .split(b"\\r\\n", max_size=8192)
        .handle_message(lambda ctx, head, line: print(line.decode())))
"""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.events import Data, Event, MessageEnd, MessageStart, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl

__all__ = ["Split"]

# Events are frozen: one instance of each serves every message.
_START = MessageStart()
_END = MessageEnd()


class Split(Filter):
    """``split(separator, keep=False, max_size=65536)``: one message per chunk of the
    byte stream ending with ``separator``."""

    name = "split"

    def __init__(self, separator: bytes, *, keep: bool = False, max_size: int = 1 << 16) -> None:
        if not isinstance(separator, (bytes, bytearray)):
            raise TypeError(f"separator must be bytes, got {separator!r}")
        if not separator:
            raise ValueError("separator must not be empty")
        if type(max_size) is not int or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1, got {max_size!r}")
        self.separator = bytes(separator)
        self.keep = bool(keep)
        self.max_size = max_size
        self.buf = bytearray()  # the bytes after the last separator seen
        self.failed = False

    async def on_event(self, event: Event) -> None:
        kind = type(event)
        if self.failed:
            return
        if kind is Data:
            await self._feed(event.data)  # type: ignore[union-attr]
        elif kind is StreamEnd:
            await self._flush()
            if not self.failed:
                await self.output(event)
        elif kind is MessageEnd:
            await self._flush()

    async def _feed(self, data: bytes) -> None:
        sep = self.separator
        seplen = len(sep)
        buf = self.buf
        src: bytes | bytearray
        if buf:
            # The buffer holds no whole separator: search only where a new one can be.
            start = max(0, len(buf) - seplen + 1)
            buf += data
            src = buf
        else:
            start = 0
            src = data  # no copy while no chunk is left over
        max_size = self.max_size
        extra = seplen if self.keep else 0
        output = self.output
        pos = 0
        found = src.find(sep, start)
        while found >= 0:
            if found - pos > max_size:
                await self._fail()
                return
            await output(_START)
            if found + extra > pos:
                await output(Data(bytes(src[pos : found + extra])))
            await output(_END)
            pos = found + seplen
            found = src.find(sep, pos)
        if src is buf:
            del buf[:pos]
        elif pos < len(data):
            buf += data[pos:] if pos else data
        # The last seplen-1 bytes may begin a separator; the rest is surely chunk.
        if len(buf) - seplen + 1 > max_size:
            await self._fail()

    async def _flush(self) -> None:
        buf = self.buf
        if not buf:
            return
        if len(buf) > self.max_size:
            await self._fail()
            return
        data = bytes(buf)
        buf.clear()
        await self.output(_START)
        await self.output(Data(data))
        await self.output(_END)

    async def _fail(self) -> None:
        self.failed = True
        self.buf = bytearray()
        spec = getattr(self, "spec", None)
        where = f"{spec.describe()}: " if spec is not None else "split: "
        await self.output(
            StreamEnd(PipelineError(f"{where}a chunk is longer than {self.max_size} bytes"))
        )


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [Split]
