"""The protocol-neutral per-stream events.

Every front codec (HTTP/1.1, HTTP/2, HTTP/3 server side) turns its wire into
these events; every back codec (client side) turns the same events into its
wire. The bridge between them never knows which protocol is on either side.

Events are slotted dataclasses and are treated as immutable by convention:
nothing mutates an event after it is made (a changed head is a new
object). They are not ``frozen=True`` because that makes construction about
three times slower (0.8 µs against 0.28 µs for a ``RequestHead``), and a
proxied request makes several.

Conventions:
- header names are lower-case ``bytes``; values are ``bytes``;
- hop-by-hop headers are already stripped by the codec that produced the
  event (only ``te: trailers`` survives);
- HTTP/1.1 ``Host`` becomes ``authority`` and is *not* repeated in
  ``headers``; an encoder that needs a ``Host`` line writes it from
  ``authority``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

Headers = list[tuple[bytes, bytes]]


class Source(Enum):
    """Who caused an error or a reset."""

    DOWNSTREAM = "downstream"
    UPSTREAM = "upstream"
    INTERNAL = "internal"


@dataclass(slots=True)
class RequestHead:
    """A request's head. ``protocol`` is the extended-CONNECT ``:protocol``
    (RFC 8441/9220) or ``b"websocket"`` for an HTTP/1.1 Upgrade.

    ``content_length`` is the declared body length, or ``None`` when the
    length is not known up front (chunked, HTTP/2 or HTTP/3 without
    ``content-length``)."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Headers
    end_stream: bool
    protocol: bytes | None = None
    content_length: int | None = None


@dataclass(slots=True)
class ResponseHead:
    """A final (non-1xx) response head."""

    status: int
    headers: Headers
    end_stream: bool
    content_length: int | None = None


@dataclass(slots=True)
class Informational:
    """A 1xx response other than 101 (e.g. 100 Continue, 103 Early Hints)."""

    status: int
    headers: Headers


@dataclass(slots=True)
class Body:
    """A piece of a message body; ``end_stream`` marks the clean end."""

    data: bytes
    end_stream: bool = False


@dataclass(slots=True)
class Trailers:
    """Trailer fields; always end the stream."""

    headers: Headers


@dataclass(slots=True)
class Reset:
    """The stream ended abnormally. Never to be forwarded as a clean end.

    ``code`` is an HTTP/2-style error code (RFC 9113 §7); codecs map it to
    their own wire (RST_STREAM, RESET_STREAM with H3 codes, TCP close)."""

    code: int
    source: Source
    reason: str = ""


@dataclass(slots=True)
class TunnelData:
    """Opaque bytes after a tunnel (WebSocket / CONNECT) was established."""

    data: bytes


Event = RequestHead | ResponseHead | Informational | Body | Trailers | Reset | TunnelData

# HTTP/2 error codes (RFC 9113 §7) used as the neutral reset vocabulary.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
HTTP_1_1_REQUIRED = 0xD
