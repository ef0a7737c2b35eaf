"""The MQTT data representations (MQTT 5.0 section 1.5): integers, variable byte
integers, UTF-8 strings, binary data, string pairs; reading and writing.

Readers take the packet's bytes, a position and the end of the packet, and return
the value and the next position. Running past the end of the packet, or any
invalid encoding, raises :class:`ProtocolError` 0x81 (Malformed Packet).
"""

from __future__ import annotations

from .errors import ProtocolError

__all__ = [
    "MAX_VARINT",
    "check_topic_filter",
    "check_topic_name",
    "encode_binary",
    "encode_string",
    "encode_varint",
    "read_binary",
    "read_string",
    "read_u16",
    "read_varint",
]

MAX_VARINT = 268_435_455  # four bytes of seven bits

# One-byte encodings are by far the most common: built once.
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(128))


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A Variable Byte Integer at ``pos``: at most four bytes, minimally encoded."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= end:
            raise ProtocolError("truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i:
                raise ProtocolError("variable byte integer not minimally encoded")
            return value, pos
        shift += 7
    raise ProtocolError("variable byte integer longer than four bytes")


def read_u16(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A Two Byte Integer at ``pos``."""
    stop = pos + 2
    if stop > end:
        raise ProtocolError("truncated two-byte integer")
    return (data[pos] << 8) | data[pos + 1], stop


def read_string(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """A UTF-8 Encoded String at ``pos``: well-formed UTF-8 (so no surrogates) and
    no U+0000."""
    if pos + 2 > end:
        raise ProtocolError("truncated string length")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise ProtocolError("string runs past the end of the packet")
    raw = data[pos + 2 : stop]
    try:
        text = raw.decode()  # strict UTF-8 rejects encoded surrogates and overlongs
    except UnicodeDecodeError:
        raise ProtocolError("string is not valid UTF-8") from None
    if b"\x00" in raw:
        raise ProtocolError("string contains U+0000")
    return text, stop


def read_binary(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """Binary Data at ``pos``: a two-byte length and that many bytes."""
    if pos + 2 > end:
        raise ProtocolError("truncated binary data length")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise ProtocolError("binary data runs past the end of the packet")
    return data[pos + 2 : stop], stop


def encode_varint(value: int) -> bytes:
    """``value`` as a Variable Byte Integer."""
    if value < 128:
        if value < 0:
            raise ValueError(f"variable byte integer must be >= 0, got {value}")
        return _SMALL_VARINTS[value]
    if value > MAX_VARINT:
        raise ValueError(f"variable byte integer must be <= {MAX_VARINT}, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_string(text: str) -> bytes:
    """``text`` as a UTF-8 Encoded String (ValueError if MQTT forbids it)."""
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"string {text!r} contains a surrogate") from None
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    if b"\x00" in raw:
        raise ValueError(f"string {text!r} contains U+0000")
    return len(raw).to_bytes(2, "big") + raw


def encode_binary(data: bytes) -> bytes:
    """``data`` as Binary Data."""
    if len(data) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def check_topic_name(topic: str) -> str | None:
    """Why ``topic`` is not a valid topic name (for PUBLISH), or ``None``."""
    if not topic:
        return "empty topic name"
    if "+" in topic or "#" in topic:
        return f"wildcard in topic name {topic!r}"
    return None


def check_topic_filter(topic_filter: str) -> str | None:
    """Why ``topic_filter`` is not a valid topic filter (for SUBSCRIBE), or ``None``."""
    if not topic_filter:
        return "empty topic filter"
    if "+" not in topic_filter and "#" not in topic_filter:
        return None
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return f"'#' must be a whole last level in {topic_filter!r}"
        if "+" in level and level != "+":
            return f"'+' must be a whole level in {topic_filter!r}"
    return None
