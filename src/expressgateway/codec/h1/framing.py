"""Outgoing HTTP/1.1 message framing shared by both codecs: status lines,
body framing (content-length, chunked, close-delimited, none), trailer
sections and the proxy's local-reply body."""

from __future__ import annotations

import json
from http import HTTPStatus

from expressgateway.core.errors import ProxyError
from expressgateway.core.events import Headers

from .fields import encode_trailer_fields

#: Body framing modes of an outgoing message.
NONE = 0  #: no body may follow (HEAD, 204, 304, 1xx, 101, a tunnel request)
LENGTH = 1  #: ``content-length`` declared
CHUNKED = 2  #: ``transfer-encoding: chunked``
CLOSE = 3  #: delimited by closing the connection (HTTP/1.0 client, unknown length)

LAST_CHUNK = b"0\r\n\r\n"

_STATUS_LINES: dict[int, bytes] = {
    int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode("ascii")) for s in HTTPStatus
}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``, cached for every known status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        if not 100 <= status <= 999:
            raise ProxyError("bad_status", detail=str(status))
        line = b"HTTP/1.1 %d \r\n" % status
    return line


def local_reply_body(status: int, reason: str = "") -> bytes:
    """The body of every reply the proxy makes itself: one line of JSON,
    ``{"status":431,"reason":"header_too_large"}\\n`` (``reason`` defaults to
    the status phrase in snake case). Served as ``application/json``."""
    if not reason:
        try:
            reason = HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            reason = "error"
    return json.dumps({"status": status, "reason": reason}, separators=(",", ":")).encode() + b"\n"


class BodyFramer:
    """Frames the body of the message this side is sending.

    The codec sets ``_out_mode``/``_out_remaining``/``_out_trailers`` when it
    encodes a head; ``encode_body`` and ``encode_trailers`` then frame.
    ``out_complete`` is true once the message has been fully encoded."""

    # Slotted, like the codecs built on it: an idle keep-alive connection
    # holds one codec, and a __dict__ per codec costs about 1 KiB each.
    __slots__ = (
        "_out_mode",
        "_out_remaining",
        "_out_trailers",
        "invalid_headers_dropped",
        "out_complete",
    )

    def __init__(self) -> None:
        self._out_mode = NONE
        self._out_remaining = 0
        #: send trailers in a chunked message (else they are dropped)
        self._out_trailers = False
        self.out_complete = True
        #: fields dropped as invalid while encoding (CR/LF/NUL, bad names)
        self.invalid_headers_dropped = 0

    def encode_body(self, data: bytes, end_stream: bool = False) -> bytes:
        """Frame a piece of body. Content-length: the bytes as they are (the
        declared length is enforced: more, or a short end, raises
        ``ProxyError("body_length_mismatch")``; the shell must then abort the
        connection). Chunked: one chunk, plus the last chunk on
        ``end_stream``. Close-delimited: as they are (the shell closes after
        the end). No-body messages: always ``b""``."""
        mode = self._out_mode
        if mode == CHUNKED:
            if end_stream:
                self.out_complete = True
                if data:
                    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data)
                return LAST_CHUNK
            if not data:
                return b""
            return b"%x\r\n%b\r\n" % (len(data), data)
        if mode == LENGTH:
            remaining = self._out_remaining - len(data)
            if remaining < 0 or (end_stream and remaining):
                raise ProxyError(
                    "body_length_mismatch",
                    status=502,
                    detail=f"declared length off by {-remaining}",
                )
            self._out_remaining = remaining
            if end_stream:
                self.out_complete = True
            return data
        if end_stream:
            self.out_complete = True
        if mode == CLOSE:
            return data
        return b""

    def encode_trailers(self, headers: Headers) -> bytes:
        """End the message with trailer fields. Chunked: a trailer section
        (forbidden names such as ``content-length`` or ``host`` removed) when
        the peer may receive trailers, else the plain last chunk (trailers
        dropped). Other framings cannot carry trailers: they are dropped (a
        content-length body must be complete)."""
        mode = self._out_mode
        self.out_complete = True
        if mode == CHUNKED:
            if not self._out_trailers or not headers:
                return LAST_CHUNK
            block, dropped = encode_trailer_fields(headers)
            self.invalid_headers_dropped += dropped
            return b"0\r\n" + block + b"\r\n"
        if mode == LENGTH and self._out_remaining:
            raise ProxyError(
                "body_length_mismatch", status=502, detail="trailers before the declared length"
            )
        return b""
