"""The request as the backend sees it: forwarding headers and trace context.

- ``X-Forwarded-For``: the client's IP appended to any values already there;
- ``X-Forwarded-Proto``: ``http`` or ``https`` as the client spoke to us;
- ``X-Forwarded-Host``: the authority the client asked for;
- ``Via``: ``1.1 expressgateway`` appended;
- ``traceparent`` (W3C Trace Context): kept trace id, new parent span id (the
  gateway's own span); a trace is started when the client sent none or an
  invalid one. ``tracestate`` passes through untouched.
Shared by every front protocol.
"""

from __future__ import annotations

import re
from random import getrandbits

from expressgateway.core.events import Headers, RequestHead

_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16
VIA = b"1.1 expressgateway"


def child_traceparent(value: bytes | None) -> bytes:
    """A traceparent for our hop: same trace, our span id as the parent."""
    # Span ids need to be unique, not secret (W3C Trace Context §3.2.2.3).
    span = b"%016x" % (getrandbits(64) or 1)
    if value is not None:
        m = _TRACEPARENT.match(value.strip())
        if m is not None and m.group(1) != b"ff":
            trace = m.group(2)
            if trace != _ZERO_TRACE and m.group(3) != _ZERO_SPAN:
                return b"00-" + trace + b"-" + span + b"-" + m.group(4)
    return b"00-%032x-%s-01" % (getrandbits(128) or 1, span)


def upstream_head(
    head: RequestHead,
    peer_ip: str,
    proto: bytes,
    *,
    x_forwarded: bool = True,
    via: bool = True,
) -> RequestHead:
    """The request head to send upstream (one pass over the headers)."""
    xff: bytes | None = None
    via_value: bytes | None = None
    trace: bytes | None = None
    out: Headers = []
    append = out.append
    for name, value in head.headers:
        if name == b"x-forwarded-for":
            xff = value if xff is None else xff + b", " + value
        elif name == b"traceparent":
            trace = value
        elif name == b"via":
            via_value = value if via_value is None else via_value + b", " + value
        elif x_forwarded and (name == b"x-forwarded-proto" or name == b"x-forwarded-host"):
            continue  # ours replace any the client made up
        else:
            append((name, value))
    if x_forwarded:
        ip = peer_ip.encode()
        append((b"x-forwarded-for", ip if xff is None else xff + b", " + ip))
        append((b"x-forwarded-proto", proto))
        if head.authority:
            append((b"x-forwarded-host", head.authority))
    elif xff is not None:
        append((b"x-forwarded-for", xff))
    if via:
        append((b"via", VIA if via_value is None else via_value + b", " + VIA))
    elif via_value is not None:
        append((b"via", via_value))
    append((b"traceparent", child_traceparent(trace)))
    return RequestHead(
        head.method,
        head.scheme,
        head.authority,
        head.path,
        out,
        head.end_stream,
        head.protocol,
        head.content_length,
    )
