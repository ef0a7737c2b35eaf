"""The MQTT codec's exception."""

from __future__ import annotations

from typing import Any

__all__ = ["ProtocolError"]


class ProtocolError(Exception):
    """Bytes that are not a valid MQTT 3.1.1 or 5.0 packet (or exceed a limit).

    ``reason_code`` is the MQTT 5.0 reason code naming the fault: 0x81 Malformed
    Packet, 0x82 Protocol Error, 0x84 Unsupported Protocol Version, 0x95 Packet
    too large. ``in_connect`` is true when the fault is in the CONNECT packet (the
    answer is then a CONNACK, not a DISCONNECT). ``version`` is the protocol
    version the connection uses (4 for 3.1.1, 5), or ``None`` when the CONNECT did
    not get far enough to tell.

    :func:`protocols.mqtt.error_answer` turns the error into the packet a server
    sends before it closes the connection (if any). The decoder cannot be used
    after a ``ProtocolError``.
    """

    def __init__(
        self,
        message: str,
        reason_code: int = 0x81,
        *,
        in_connect: bool = False,
        version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason_code = reason_code
        self.in_connect = in_connect
        self.version = version
        #: Set by the decoder: the packets complete before the fault in the same
        #: ``feed`` call (they are valid and should be handled before the error).
        self.packets: list[Any] = []

    def __repr__(self) -> str:
        return f"ProtocolError({self.message!r}, reason_code=0x{self.reason_code:02X})"
