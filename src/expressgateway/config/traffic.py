"""Traffic management config (all new): named pools (`[[clusters]]`) with
their balancing policy, health checks, outlier detection, retries and
circuit breaker, and per-listener routes (`[[listeners.routes]]`).

A listener's inline `[[listeners.backends]]` stay its default pool (round
robin, no checks), so a config written for the original still loads.
"""

# setting() returns a dataclasses.field (ruff cannot see through the wrapper).
# ruff: noqa: RUF009

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from expressgateway.config import checks
from expressgateway.config.schema import Range, setting

Policy = Literal[
    "round_robin",
    "weighted_round_robin",
    "random",
    "weighted_random",
    "least_connections",
    "least_request",
    "p2c",
    "ewma",
    "ring_hash",
    "maglev",
]
AffinityMode = Literal["cookie", "header", "source_ip"]
HealthKind = Literal["tcp", "http", "https", "h2", "h3", "grpc"]
RetryOn = Literal["connect_failure", "refused_stream", "reset", "status"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$")


def _hash_key(value: str) -> str:
    if value in ("source_ip", "path"):
        return value
    kind, sep, name = value.partition(":")
    if sep and kind in ("header", "cookie") and _TOKEN.match(name):
        return f"{kind}:{name.lower()}" if kind == "header" else value
    raise checks.CheckFailed(
        f"'{value}' is not a hash key",
        "write source_ip, path, header:NAME or cookie:NAME",
    )


def _header_match(value: str) -> str:
    name, sep, expected = value.partition(":")
    name = name.strip()
    if not _TOKEN.match(name):
        raise checks.CheckFailed(
            f"'{name}' is not a header name", 'write "name" (present) or "name: value" (equal)'
        )
    return f"{name.lower()}: {expected.strip()}" if sep else name.lower()


def _header_line(value: str) -> str:
    name, sep, v = value.partition(":")
    name = name.strip()
    if not sep or not _TOKEN.match(name) or any(c in v for c in "\r\n\0"):
        raise checks.CheckFailed(f"'{value}' is not a header line", 'write "name: value"')
    return f"{name.lower()}: {v.strip()}"


def _header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise checks.CheckFailed(f"'{value}' is not a header name")
    return value.lower()


def _host_pattern(value: str) -> str:
    if not _HOST_PATTERN.match(value) or ".." in value:
        raise checks.CheckFailed(
            f"'{value}' is not a host name or '*.' wildcard",
            "write api.example.com or *.example.com",
        )
    return value.lower().rstrip(".")


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise checks.CheckFailed(f"not a valid regular expression: {exc}") from None
    return value


def _path(value: str) -> str:
    if not value.startswith("/") or any(c in value for c in " \r\n\0"):
        raise checks.CheckFailed(f"'{value}' is not an origin-form path", "start it with /")
    return value


def _status_range(value: str) -> str:
    lo, sep, hi = value.partition("-")
    try:
        a = int(lo)
        b = int(hi) if sep else a
    except ValueError:
        raise checks.CheckFailed(
            f"'{value}' is not a status or range", "write 200 or 200-399"
        ) from None
    if not 100 <= a <= b <= 599:
        raise checks.CheckFailed(f"'{value}' is outside 100-599 or reversed")
    return f"{a}-{b}"


def _cookie_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise checks.CheckFailed(f"'{value}' is not a cookie name")
    return value  # cookie names are case-sensitive


def _method(value: str) -> str:
    if not _TOKEN.match(value):
        raise checks.CheckFailed(f"'{value}' is not a method token")
    return value.upper()


HASH_KEY = checks.Check("source_ip | path | header:NAME | cookie:NAME", _hash_key)
HEADER_MATCH = checks.Check('"name" or "name: value"', _header_match)
HEADER_LINE = checks.Check('"name: value"', _header_line)
HEADER_NAME = checks.Check("header name", _header_name)
HOST_PATTERN = checks.Check("host name or *.domain", _host_pattern)
REGEX = checks.Check("regular expression", _regex)
PATH = checks.Check("path starting with /", _path)
STATUS_RANGE = checks.Check("status or range, e.g. 200-399", _status_range)
METHOD = checks.Check("method", _method)
COOKIE_NAME = checks.Check("cookie name", _cookie_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class AffinityConfig:
    """Session affinity (`[clusters.affinity]`): requests of one client keep
    going to one backend while it is healthy."""

    mode: AffinityMode = setting(
        "`cookie`: the gateway sets a cookie naming the backend (L7 only); `header`: "
        "hash of a request header; `source_ip`: hash of the client address (L4 and L7).",
    )
    cookie_name: str = setting(
        'Name of the affinity cookie (`mode = "cookie"`).',
        default="eg_affinity",
        check=COOKIE_NAME,
    )
    cookie_ttl_s: int = setting(
        "Max-Age of the affinity cookie; 0 makes it a session cookie.",
        default=0,
        range=Range(0, 31_536_000, or_zero=True),
    )
    header_name: str | None = setting(
        'Request header whose value is hashed (`mode = "header"`).',
        default=None,
        check=HEADER_NAME,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckConfig:
    """Active health checks (`[clusters.health_check]`), run once per gateway
    (by the supervisor, not by each worker); every worker sees the verdict."""

    kind: HealthKind = setting(
        "`tcp` (connect), `http`/`https` (GET `path`), `h2` (GET `path` over h2c, or h2 "
        "over TLS for `tls = true` backends), `h3` (GET `path` over HTTP/3, for `h3` "
        "backends), `grpc` (`grpc.health.v1.Health/Check`).",
        default="http",
    )
    path: str = setting("Request path for http/https/h2/h3.", default="/", check=PATH)
    host: str | None = setting(
        "Host header / :authority sent; unset: the backend address.",
        default=None,
        check=checks.HOSTNAME,
    )
    expected_status: str = setting(
        "Healthy status or range for http/https/h2.", default="200-399", check=STATUS_RANGE
    )
    body_contains: str | None = setting(
        "Healthy only if the response body (first 64 KiB) contains this text.",
        default=None,
        check=checks.NONEMPTY,
    )
    grpc_service: str = setting(
        "Service name asked of the gRPC health service (empty: the server as a whole).",
        default="",
    )
    interval_ms: int = setting(
        "Time between checks of one backend.", default=5000, range=Range(100, 3_600_000)
    )
    timeout_ms: int = setting(
        "A check not answered in time fails.", default=1000, range=Range(10, 60_000)
    )
    rise: int = setting(
        "Consecutive passes that make a backend healthy.", default=2, range=Range(1, 100)
    )
    fall: int = setting(
        "Consecutive failures that make a backend unhealthy.", default=3, range=Range(1, 100)
    )
    jitter_ms: int = setting(
        "Random spread added to each interval, so checks do not march in step.",
        default=500,
        range=Range(0, 3_600_000, or_zero=True),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierConfig:
    """Passive health (`[clusters.outlier]`): backends that fail live traffic
    are ejected for a while (per worker)."""

    consecutive_5xx: int = setting(
        "Consecutive 5xx answers (or resets) that eject a backend; 0 disables.",
        default=5,
        range=Range(1, 10_000, or_zero=True),
    )
    consecutive_connect_failures: int = setting(
        "Consecutive connect failures that eject a backend; 0 disables.",
        default=5,
        range=Range(1, 10_000, or_zero=True),
    )
    base_ejection_ms: int = setting(
        "First ejection time; each further ejection of the same backend adds as much.",
        default=30_000,
        range=Range(100, 3_600_000),
    )
    max_ejection_ms: int = setting(
        "Longest ejection.", default=300_000, range=Range(100, 86_400_000)
    )
    max_ejected_percent: int = setting(
        "At most this share of the cluster is ejected at once.",
        default=50,
        range=Range(0, 100, or_zero=True),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """Retries (`[clusters.retry]` or per route). A request is retried only
    before any response byte went to the client, only when it arrived whole
    and its body (if any) still fits the 64 KiB replay buffer, on another
    backend when there is one, and only while the retry budget allows.
    Connect failures and refused streams (never processed) are retried for
    any method; resets, per-try timeouts and listed statuses only for
    idempotent methods."""

    retry_on: tuple[RetryOn, ...] = setting(
        "What is retried: `connect_failure`, `refused_stream` (HTTP/2 and HTTP/3 "
        "REFUSED_STREAM / GOAWAY), `reset` (the backend reset or closed before "
        "answering), `status` (an answer in `retry_statuses`).",
        default=("connect_failure", "refused_stream"),
        unique=True,
    )
    retry_statuses: tuple[int, ...] = setting(
        "Statuses retried with `retry_on` containing `status`.",
        default=(502, 503, 504),
        range=Range(100, 599),
    )
    max_retries: int = setting(
        "Retries per request (tries = 1 + max_retries).",
        default=2,
        range=Range(0, 10, or_zero=True),
    )
    per_try_timeout_ms: int | None = setting(
        "Time to the response head per try; an expired try is retried (idempotent "
        "methods). Unset: no per-try limit (the head timeout covers all tries).",
        default=None,
        range=Range(10, 600_000),
    )
    budget_percent: int = setting(
        "Retries in flight may be at most this share of the requests in flight "
        "(so retries cannot multiply an outage).",
        default=20,
        range=Range(0, 100, or_zero=True),
    )
    min_retry_concurrency: int = setting(
        "Retries always allowed in flight, whatever the budget says.",
        default=3,
        range=Range(0, 10_000, or_zero=True),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerConfig:
    """Limits per cluster and worker (`[clusters.circuit_breaker]`); over one,
    the request gets 503 with `Retry-After` (counted)."""

    max_connections: int = setting(
        "Upstream connections open (0: unlimited).",
        default=0,
        range=Range(1, 10_000_000, or_zero=True),
    )
    max_pending_requests: int = setting(
        "Requests waiting for an upstream connection (0: unlimited).",
        default=0,
        range=Range(1, 10_000_000, or_zero=True),
    )
    max_requests: int = setting(
        "Requests in flight (0: unlimited).", default=0, range=Range(1, 10_000_000, or_zero=True)
    )
    retry_after_s: int = setting(
        "`Retry-After` sent with the 503.", default=1, range=Range(0, 3600, or_zero=True)
    )
