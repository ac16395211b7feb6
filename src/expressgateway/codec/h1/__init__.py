"""HTTP/1.1 codecs on httptools (llhttp): :class:`H1ServerCodec` (client ->
gateway) and :class:`H1ClientCodec` (gateway -> backend)."""

from .client import H1ClientCodec
from .server import H1ServerCodec

__all__ = ["H1ClientCodec", "H1ServerCodec"]
