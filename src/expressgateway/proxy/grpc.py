"""gRPC over the HTTP/2 front (and, later, HTTP/3): the parts a proxy owns.

The gateway stays an opaque proxy for gRPC messages (no protobuf parsing of
user messages); with ``[listeners.grpc]`` it adds:

- ``grpc-timeout`` (gRPC over HTTP/2 spec): parsed, clamped to
  ``max_deadline_seconds`` and rewritten; a malformed one is answered
  ``grpc-status: 3`` (INVALID_ARGUMENT) without dialing; when it passes at
  the gateway the call ends with ``grpc-status: 4`` (DEADLINE_EXCEEDED);
- a non-200 answer from the backend, or a failure of the gateway itself
  (502/503/504), becomes a *trailers-only* gRPC response with the status
  from the HTTP -> gRPC map of the original (SEED-INVENTORY 3.1), so gRPC
  clients see a gRPC status instead of a transport error;
- ``/grpc.health.v1.Health/Check`` answered locally (``SERVING`` for the
  empty service name, ``NOT_FOUND`` (5) for a named one).
"""

from __future__ import annotations

import math
import re

from expressgateway.core.events import Headers, ResponseHead

HEALTH_CHECK_PATH = b"/grpc.health.v1.Health/Check"
_TIMEOUT = re.compile(rb"^([0-9]{1,8})([HMSmun])$")
_UNIT_SECONDS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
INTERNAL, UNIMPLEMENTED, UNAVAILABLE, UNAUTHENTICATED = 13, 12, 14, 16

#: HTTP status -> gRPC status (the original's map; anything else is UNKNOWN)
HTTP_TO_GRPC = {
    200: OK,
    400: INTERNAL,
    500: INTERNAL,
    401: UNAUTHENTICATED,
    403: 7,
    404: UNIMPLEMENTED,
    501: UNIMPLEMENTED,
    409: 10,
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
    499: CANCELLED,
}


def parse_timeout(value: bytes) -> float:
    """Seconds in a ``grpc-timeout`` value (``100m``, ``5S``...); ValueError
    when malformed. Sub-millisecond units round up to a whole millisecond."""
    m = _TIMEOUT.match(value.strip())
    if m is None:
        raise ValueError(f"malformed grpc-timeout {value!r}")
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if m.group(2) in (b"u", b"n"):
        seconds = math.ceil(seconds * 1000) / 1000
    return seconds


def format_timeout(seconds: float) -> bytes:
    """A ``grpc-timeout`` value for ``seconds`` (milliseconds, at most 8 digits)."""
    ms = max(1, math.ceil(seconds * 1000))
    if ms < 100_000_000:
        return b"%dm" % ms
    return b"%dS" % min(99_999_999, math.ceil(seconds))


def trailers_only(status: int, message: str = "") -> ResponseHead:
    """A gRPC response that is only trailers (HTTP 200, END_STREAM on HEADERS)."""
    headers: Headers = [(b"content-type", b"application/grpc"), (b"grpc-status", b"%d" % status)]
    if message:
        headers.append((b"grpc-message", _percent_encode(message)))
    return ResponseHead(200, headers, True)


def _percent_encode(text: str) -> bytes:
    out = bytearray()
    for byte in text.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def health_response(request_body: bytes) -> tuple[bytes, int]:
    """(response message bytes, grpc-status) for a Health/Check request."""
    service = _health_service(request_body)
    if service:
        return b"", NOT_FOUND
    # HealthCheckResponse{status: SERVING (1)}: field 1, varint 1.
    message = b"\x08\x01"
    return b"\x00" + len(message).to_bytes(4, "big") + message, OK


def _health_service(body: bytes) -> bytes:
    """The ``service`` field of a length-prefixed HealthCheckRequest."""
    if len(body) < 5:
        return b""
    payload = body[5 : 5 + int.from_bytes(body[1:5], "big")]
    i = 0
    while i < len(payload):
        tag = payload[i]
        i += 1
        if tag == 0x0A:  # field 1, length-delimited
            n, i = _varint(payload, i)
            return payload[i : i + n]
        if tag & 7 == 0:
            _, i = _varint(payload, i)
        elif tag & 7 == 2:
            n, i = _varint(payload, i)
            i += n
        else:
            break
    return b""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(data):
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return value, i
