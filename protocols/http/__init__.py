"""A sans-IO HTTP/1.1 codec (RFC 9110, RFC 9112).

Heads are typed objects (:mod:`protocols.http.head`); bodies are ``bytes`` chunks;
the end of a message carries its trailers. See the codec modules for the parsers
and serializers.
"""

from .errors import ProtocolError
from .head import Headers, RequestHead, ResponseHead
from .parser import (
    EndOfMessage,
    RequestParser,
    ResponseParser,
    expects_100_continue,
    persistent,
    request_flags,
)
from .writer import (
    REASONS,
    InvalidHeadError,
    body_framing,
    chunk,
    last_chunk,
    request_head_bytes,
    response_head_bytes,
)

__all__ = [
    "REASONS",
    "EndOfMessage",
    "Headers",
    "InvalidHeadError",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "ResponseParser",
    "body_framing",
    "chunk",
    "expects_100_continue",
    "last_chunk",
    "persistent",
    "request_flags",
    "request_head_bytes",
    "response_head_bytes",
]
