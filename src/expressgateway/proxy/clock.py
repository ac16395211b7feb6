"""The per-request clock every front keeps (HTTP/1.1 connection, HTTP/2 or
HTTP/3 stream): which phase the request is in, and when its next deadline
passes. The worker's sweeper calls the front once ``deadline`` is past.

- BODY: the request body is arriving; no progress for ``body_timeout`` -> 408;
- WAIT_HEAD: the request is complete; no response head for ``head_timeout`` -> 504;
- RESPONDING: only ``total_timeout`` (per request) still applies.
"""

from __future__ import annotations

from typing import Protocol

from expressgateway.core.errors import DownstreamError, ProxyError

IDLE, BODY, WAIT_HEAD, RESPONDING = range(4)


class Timed(Protocol):
    phase: int
    deadline: float
    total_deadline: float


class Timeouts(Protocol):
    body_timeout: float
    head_timeout: float
    total_timeout: float


def request_started(t: Timed, ctx: Timeouts, now: float, end_stream: bool) -> None:
    """A request head arrived (``end_stream``: it has no body)."""
    t.total_deadline = now + ctx.total_timeout
    if end_stream:
        t.phase = WAIT_HEAD
        t.deadline = min(now + ctx.head_timeout, t.total_deadline)
    else:
        t.phase = BODY
        t.deadline = min(now + ctx.body_timeout, t.total_deadline)


def request_progress(t: Timed, ctx: Timeouts, now: float, end_stream: bool) -> None:
    """Request body bytes (or its end, or trailers) arrived."""
    if t.phase != BODY:
        return
    if end_stream:
        t.phase = WAIT_HEAD
        t.deadline = min(now + ctx.head_timeout, t.total_deadline)
    else:
        t.deadline = min(now + ctx.body_timeout, t.total_deadline)


def response_started(t: Timed) -> None:
    t.phase = RESPONDING
    t.deadline = t.total_deadline


def expired(t: Timed, now: float) -> ProxyError | None:
    """The error to answer with now that ``deadline`` passed, if any."""
    if now >= t.total_deadline:
        return ProxyError("total_timeout", status=504)
    if t.phase == BODY:
        return DownstreamError("body_timeout", status=408)
    if t.phase == WAIT_HEAD:
        return ProxyError("head_timeout", status=504)
    return None
