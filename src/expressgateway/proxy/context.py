"""What every stream of one L7 listener shares, built once per worker."""

from __future__ import annotations

import asyncio
import random
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from expressgateway.config import Config, ListenerConfig
from expressgateway.io.admission import Admission
from expressgateway.io.sweeper import Sweeper
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.pool import Pool

if TYPE_CHECKING:
    from expressgateway.proxy.router import Router

REQUESTS = REGISTRY.counter(
    "http_requests_total",
    "HTTP requests answered, by listener, route, front protocol version and status class.",
    ("listener", "route", "version", "status_class"),
)
BACKEND_REQUESTS = REGISTRY.counter(
    "backend_requests_total",
    "Requests sent to each backend, by status class of its answer (error = no answer).",
    ("listener", "backend", "status_class"),
)
DURATION = REGISTRY.histogram(
    "http_request_duration_seconds",
    "Time from request head to the end of the response.",
    ("listener", "route", "version"),
)
INFLIGHT = REGISTRY.gauge("http_requests_inflight", "Requests in progress.", ("listener",))
REJECTED = REGISTRY.counter(
    "http_request_errors_total",
    "Requests answered by the gateway itself because of bad input, a limit, a defense or an "
    "upstream failure, by reason.",
    ("listener", "reason"),
)
UPSTREAM_ERRORS = REGISTRY.counter(
    "upstream_errors_total",
    "Upstream failures (connect refused or timed out, reset, truncated, bad response), by reason.",
    ("listener", "backend", "reason"),
)
RETRIES = REGISTRY.counter(
    "upstream_retries_total",
    "Requests tried again (another backend or a new connection), by reason.",
    ("listener", "reason"),
)


def alt_svc_value(listener: ListenerConfig) -> bytes | None:
    """The ``Alt-Svc`` value an ``h1``/``h1s`` listener advertises, if any."""
    a = listener.alt_svc
    return None if a is None else b'h3=":%d"; ma=%d' % (a.h3_port, a.max_age)


def status_class(status: int) -> str:
    """``2xx``..``5xx``, or ``error`` when no HTTP status was given (e.g. reset)."""
    return f"{status // 100}xx" if 100 <= status < 600 else "error"


@dataclass
class L7Context:
    name: str
    listener: ListenerConfig
    config: Config
    router: Router
    pool: Pool
    sweeper: Sweeper
    admission: Admission
    scheme: bytes
    tls: bool
    ssl_context: ssl.SSLContext | None = None
    alt_svc: bytes | None = None
    access_log: bool = False
    route: str = ""
    draining: bool = False
    _status_children: dict[tuple[str, int], Any] = field(default_factory=dict)
    _records: dict[tuple[str, str, int, str], tuple[Any, Any, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._derive()

    def reconfigure(self, config: Config, listener: ListenerConfig, router: Router) -> None:
        """A reload: new streams use the new settings and routes; streams in
        flight keep the route (and cluster) they started with."""
        self.config = config
        self.listener = listener
        self.router = router
        self.alt_svc = alt_svc_value(listener) if listener.protocol != "quic" else None
        pc = config.pool
        self.pool.configure(  # shared by the worker's listeners: the same values
            per_peer_max=pc.per_peer_max,
            total_max=pc.total_max,
            idle_timeout=pc.idle_timeout_ms / 1000,
            max_age=pc.max_age_ms / 1000,
            park_max=pc.park_max,
        )
        self._status_children.clear()
        self._records.clear()
        self._derive()

    def reconfigure_from(self, config: Config, listener: ListenerConfig, clusters: Any) -> None:
        from expressgateway.proxy.router import Router

        self.reconfigure(config, listener, Router(listener, clusters))

    def _derive(self) -> None:
        http = self.listener.http
        self.header_timeout = http.header_timeout_ms / 1000
        self.body_timeout = http.body_timeout_ms / 1000
        self.head_timeout = http.head_timeout_ms / 1000
        self.total_timeout = http.total_timeout_ms / 1000
        self.connect_timeout = self.config.runtime.connect_timeout_ms / 1000
        self.max_keepalive = self.config.runtime.max_keepalive_requests
        self.via = http.via
        self.inflight = INFLIGHT.labels(self.name)

    def count(
        self, version: str, backend: str, status: int, elapsed: float, route: str = ""
    ) -> None:
        """Count one finished request: requests, backend requests, duration.
        ``route`` is the matched route's name (labels come from the config)."""
        key = (version, backend, status // 100, route)
        rec = self._records.get(key)
        if rec is None:
            cls = status_class(status)
            rec = self._records[key] = (
                REQUESTS.labels(self.name, route, version, cls),
                BACKEND_REQUESTS.labels(self.name, backend, cls) if backend else None,
                DURATION.labels(self.name, route, version),
            )
        rec[0].value += 1
        if rec[1] is not None:
            rec[1].value += 1
        rec[2].observe(elapsed)

    def count_request(self, version: str, status: int) -> None:
        """Count a request the gateway answered before any stream began."""
        key = (version, status // 100)
        child = self._status_children.get(key)
        if child is None:
            cls = status_class(status)
            child = self._status_children[key] = REQUESTS.labels(
                self.name, self.route, version, cls
            )
        child.value += 1

    def drain(self) -> None:
        """Tell every connection of this listener to finish. Each is told
        after a random delay up to the drain jitter, so clients do not all
        reconnect in the same instant."""
        self.draining = True
        _, jitter_ms = self.config.effective_drain(self.listener)
        loop = asyncio.get_running_loop()
        for member in list(self.sweeper.members):
            drain = getattr(member, "drain", None)
            if drain is not None and getattr(member, "ctx", None) is self:
                if jitter_ms:
                    loop.call_later(random.uniform(0, jitter_ms / 1000), drain)
                else:
                    drain()

    def reject(self, reason: str) -> None:
        REJECTED.labels(self.name, reason).inc()
