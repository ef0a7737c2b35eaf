"""``track_mqtt_session``: end a device's broker session the right way.

``track_mqtt_session()`` sits in front of ``connect(BROKER)`` in a gateway that
gives every device its own broker connection (the cloud half of the IoT gateway,
``scripts/mqtt_cloud.py``). It passes the device's MQTT bytes on **whole packets
at a time** (a packet split across reads is held until it is complete), so it
always knows where the next packet starts, and it decides how the broker session
ends:

* the device sent ``DISCONNECT``: passed on as any packet; the broker discards
  the will;
* the device dropped (its stream ended without ``DISCONNECT``, cleanly or with a
  reset): the end is passed on without a ``DISCONNECT``, so the broker sees a
  network failure and publishes the device's last will, as it would for a
  device connected directly;
* the gateway lost the device's stream through no fault of the device (the
  ``StreamEnd`` error is a :class:`~filters.smux.LinkLost`: the link between the
  gateways broke): a ``DISCONNECT`` (reason 0, normal; the same two bytes in MQTT
  3.1.1 and 5.0) is sent first, then the end, so **no will is published** for a
  device that is fine; the device is disconnected by the edge and reconnects.

A partial packet held when the stream ends is dropped, never sent: the broker
never sees half a packet. The first packet must be a ``CONNECT`` and a packet may
not exceed ``max_packet_size`` (default 1 MiB): otherwise the stream ends with
``StreamEnd(ProtocolError)`` (logged once) and the broker connection is closed
without a ``DISCONNECT``.

Example (runnable)::

    import trio
    from filters.smux import LinkLost
    from pipeline import Data, Proxy, StreamEnd
    from pipeline.testing import run_layout

    proxy = Proxy()
    proxy.pipeline("device").track_mqtt_session()
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0])
    publish = bytes([0x30, 5, 0, 1]) + b"t" + b"hi"

    async def main():
        # The link broke after a packet and a half: the half is dropped and the
        # broker session ends with DISCONNECT.
        events = [Data(connect + publish[:3]), Data(publish[3:] + publish[:2]),
                  StreamEnd(LinkLost("link down"))]
        out = await run_layout(proxy.layout("device"), events)
        assert out == [Data(connect), Data(publish), Data(b"\\xe0\\x00"), StreamEnd()]

    trio.run(main)
"""

from __future__ import annotations

import logging

from pipeline.events import Data, Event, StreamEnd
from pipeline.filter import Filter
from pipeline.hookspecs import hookimpl
from protocols.mqtt.codec import packet_end
from protocols.mqtt.errors import ProtocolError

from .smux import LinkLost

__all__ = ["TrackMqttSession", "packet_end"]

log = logging.getLogger("trioxy.mqtt")

DISCONNECT = b"\xe0\x00"
_CONNECT = 1


class TrackMqttSession(Filter):
    """``track_mqtt_session(max_packet_size=1048576)``: whole packets; the right end."""

    name = "track_mqtt_session"

    def __init__(self, max_packet_size: int = 1024 * 1024) -> None:
        if (
            isinstance(max_packet_size, bool)
            or not isinstance(max_packet_size, int)
            or max_packet_size < 2
        ):
            raise ValueError(f"max_packet_size must be an int >= 2, got {max_packet_size!r}")
        self.max_packet_size = max_packet_size
        self._held = b""
        self._connected = False
        self._ended = False

    async def on_event(self, event: Event) -> None:
        if self._ended:
            return
        kind = type(event)
        if kind is Data:
            buffer = self._held + event.data if self._held else event.data  # type: ignore[union-attr]
            try:
                complete = self._complete(buffer)
            except ProtocolError as exc:
                self._ended = True
                log.warning("device %s: %s", self.pipeline.context.get("device", "?"), exc)
                await self.output(StreamEnd(exc))
                return
            self._held = buffer[complete:]
            if complete:
                await self.output(Data(buffer[:complete]) if self._held else Data(buffer))
        elif kind is StreamEnd:
            self._ended = True
            self._held = b""
            error = event.error  # type: ignore[union-attr]
            if isinstance(error, LinkLost) and self._connected:
                await self.output(Data(DISCONNECT))
                await self.output(StreamEnd())
            else:
                await self.output(event)
        # MessageStart/MessageEnd: the stream holds bytes; nothing else is expected.

    def _complete(self, buffer: bytes) -> int:
        """The length of the run of whole packets at the start of ``buffer``."""
        pos = 0
        size = len(buffer)
        while pos < size:
            if not self._connected:
                if buffer[pos] >> 4 != _CONNECT:
                    raise ProtocolError("the first packet is not CONNECT", reason_code=0x82)
                self._connected = True
            end = packet_end(buffer, pos)
            if end is None:
                if size - pos > self.max_packet_size:
                    raise ProtocolError("packet too large", reason_code=0x95)
                return pos
            if end - pos > self.max_packet_size:
                raise ProtocolError("packet too large", reason_code=0x95)
            pos = end
        return pos


@hookimpl
def trioxy_filters() -> list[type[Filter]]:
    return [TrackMqttSession]
