"""A sans-IO HTTP/1.1 codec (RFC 9110, RFC 9112).

Heads are typed objects (:mod:`protocols.http.head`); bodies are ``bytes`` chunks;
the end of a message carries its trailers. See the codec modules for the parsers
and serializers.
"""

from .errors import ProtocolError
from .head import Headers, RequestHead, ResponseHead

__all__ = ["Headers", "ProtocolError", "RequestHead", "ResponseHead"]
