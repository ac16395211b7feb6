"""A cluster at run time, per worker: its endpoints, their balancer, and the
state that keeps traffic off bad backends.

- **Health.** An endpoint is ``healthy`` when the last active-check verdict
  (sent by the supervisor, which runs the checks once per gateway) says up
  *and* it is not ejected by outlier detection. Both feed one flag the
  policies read.
- **Outlier detection** (passive, per worker): consecutive 5xx/resets or
  connect failures eject an endpoint for ``base * n`` (n-th ejection),
  capped at ``max_ejection``, never more than ``max_ejected_percent`` of the
  cluster at once.
- **Retry budget**: retries in flight may be at most ``budget_percent`` of
  requests in flight (or ``min_retry_concurrency``).
- **Circuit breaker**: connections, pending and active requests per cluster;
  over a limit the request gets 503 with ``Retry-After``.

Inline ``[[listeners.backends]]`` become an implicit cluster named after the
listener (round robin, no checks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from expressgateway.config import Config, ListenerConfig
from expressgateway.config.model import BackendConfig, ClusterConfig
from expressgateway.config.traffic import CircuitBreakerConfig, OutlierConfig, RetryConfig
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.balancer import Balancer
from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.policies import make_balancer

log = logging.getLogger("expressgateway.cluster")

_UP = REGISTRY.gauge(
    "backend_up",
    "1 while a backend takes new traffic (active check up and not ejected), else 0.",
    ("cluster", "backend"),
)
_EJECTIONS = REGISTRY.counter(
    "outlier_ejections_total",
    "Backends ejected by outlier detection.",
    ("cluster", "backend", "reason"),
)
_OVERFLOW = REGISTRY.counter(
    "circuit_breaker_overflows_total",
    "Requests refused (503) by a cluster's circuit breaker, by limit.",
    ("cluster", "limit"),
)
_LATENCY = REGISTRY.histogram(
    "backend_request_duration_seconds",
    "Time from sending a try to a backend to its end (answer complete, or failure).",
    ("cluster", "backend"),
)
_BUDGET = REGISTRY.counter(
    "retry_budget_exhausted_total",
    "Retries not made because the retry budget was spent.",
    ("cluster",),
)


@dataclass(slots=True)
class EndpointState:
    """Health bookkeeping of one endpoint (per worker)."""

    active_up: bool = True
    ejected_until: float = 0.0
    ejections: int = 0
    failures_5xx: int = 0
    failures_connect: int = 0


def endpoint_of(b: BackendConfig) -> Endpoint:
    return Endpoint(
        host=b.host,
        port=b.port,
        protocol=b.protocol,
        weight=b.weight,
        tls=b.tls,
        tls_ca_path=b.tls_ca_path,
        tls_verify_hostname=b.tls_verify_hostname,
        tls_verify_peer=b.tls_verify_peer,
    )


def _make_balancer(cfg: ClusterConfig | None, endpoints: list[Endpoint]) -> Balancer:
    if cfg is None:
        return make_balancer("round_robin", endpoints)
    aff = cfg.affinity
    return make_balancer(
        cfg.policy,
        endpoints,
        hash_key=cfg.hash_key,
        affinity=aff.mode if aff else None,
        affinity_name=(aff.cookie_name if aff.mode == "cookie" else aff.header_name)
        if aff
        else None,
        panic_threshold=cfg.panic_threshold_percent,
    )


@dataclass
class Cluster:
    name: str
    endpoints: list[Endpoint]
    balancer: Balancer
    retry: RetryConfig
    breaker: CircuitBreakerConfig
    outlier: OutlierConfig | None = None
    affinity_cookie: bytes | None = None
    affinity_ttl: int = 0
    states: dict[str, EndpointState] = field(default_factory=dict)
    #: requests in flight, retries in flight, requests waiting for a connection
    requests: int = 0
    retries: int = 0
    pending: int = 0
    #: seconds between host-name lookups of its backends
    dns_refresh: float = 30.0
    _latency: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, name: str, cfg: ClusterConfig | None, backends: Sequence[BackendConfig]
    ) -> Cluster:
        endpoints = [endpoint_of(b) for b in backends]
        aff = cfg.affinity if cfg is not None else None
        cluster = cls(
            name=name,
            endpoints=endpoints,
            balancer=_make_balancer(cfg, endpoints),
            retry=cfg.retry if cfg is not None else RetryConfig(),
            breaker=cfg.circuit_breaker if cfg is not None else CircuitBreakerConfig(),
            outlier=cfg.outlier if cfg is not None else None,
            affinity_cookie=aff.cookie_name.encode() if aff and aff.mode == "cookie" else None,
            affinity_ttl=aff.cookie_ttl_s if aff else 0,
            dns_refresh=cfg.dns_refresh_ms / 1000 if cfg is not None else 30.0,
        )
        for ep in endpoints:
            cluster.states[ep.name] = EndpointState()
            _UP.labels(name, ep.name).set(1)
        return cluster

    # -- health ----------------------------------------------------------------------
    def show_up(self, ep: Endpoint) -> None:
        _UP.labels(self.name, ep.name).set(1 if ep.healthy else 0)

    def _refresh(self, ep: Endpoint, now: float) -> None:
        st = self.states[ep.name]
        healthy = st.active_up and st.ejected_until <= now
        if healthy != ep.healthy:
            ep.healthy = healthy
            _UP.labels(self.name, ep.name).set(1 if healthy else 0)
            log.warning(
                "backend %s",
                "up" if healthy else "down",
                extra={"cluster": self.name, "backend": ep.name},
            )
            invalidate = getattr(self.balancer, "invalidate", None)
            if invalidate is not None:
                invalidate()

    def set_active(self, backend: str, up: bool) -> None:
        """An active-check verdict from the supervisor."""
        now = time.monotonic()
        if backend in self.states:  # also for a host name's later addresses
            self.states[backend].active_up = up
        for ep in self.endpoints:
            if ep.name == backend or ep.origin == backend:
                self.states[ep.name].active_up = up
                self._refresh(ep, now)

    def tick(self, now: float) -> None:
        """Return ejected endpoints whose time is up."""
        for ep in self.endpoints:
            st = self.states[ep.name]
            if st.ejected_until and st.ejected_until <= now:
                st.ejected_until = 0.0
                self._refresh(ep, now)

    def observe(self, ep: Endpoint, seconds: float) -> None:
        """One try on ``ep`` took ``seconds``."""
        child = self._latency.get(ep.name)
        if child is None:
            child = self._latency[ep.name] = _LATENCY.labels(self.name, ep.name)
        child.observe(seconds)

    def record(self, ep: Endpoint, *, status: int = 0, connect_failed: bool = False) -> None:
        """Outcome of one try on ``ep`` (passive health)."""
        od = self.outlier
        st = self.states.get(ep.name)
        if od is None or st is None:
            return
        if connect_failed:
            st.failures_connect += 1
            if (
                od.consecutive_connect_failures
                and st.failures_connect >= od.consecutive_connect_failures
            ):
                self._eject(ep, st, od, "connect_failure")
            return
        st.failures_connect = 0
        if status >= 500 or status == 0:
            st.failures_5xx += 1
            if od.consecutive_5xx and st.failures_5xx >= od.consecutive_5xx:
                self._eject(ep, st, od, "consecutive_5xx")
        else:
            st.failures_5xx = 0

    def _eject(self, ep: Endpoint, st: EndpointState, od: OutlierConfig, reason: str) -> None:
        now = time.monotonic()
        st.failures_5xx = st.failures_connect = 0
        ejected = sum(1 for s in self.states.values() if s.ejected_until > now)
        if (ejected + 1) * 100 > len(self.endpoints) * od.max_ejected_percent:
            return
        st.ejections += 1
        ms = min(od.base_ejection_ms * st.ejections, od.max_ejection_ms)
        st.ejected_until = now + ms / 1000
        _EJECTIONS.labels(self.name, ep.name, reason).inc()
        self._refresh(ep, now)

    # -- budgets and limits ----------------------------------------------------------------
    def retry_allowed(self, retry: RetryConfig) -> bool:
        if self.retries < retry.min_retry_concurrency:
            return True
        if self.retries * 100 < max(self.requests, 1) * retry.budget_percent:
            return True
        _BUDGET.labels(self.name).inc()
        return False

    def overflow(self) -> str | None:
        """The circuit-breaker limit a new request would break, if any
        (``max_connections`` is checked when a connection is needed)."""
        b = self.breaker
        if b.max_requests and self.requests >= b.max_requests:
            return "max_requests"
        if b.max_pending_requests and self.pending >= b.max_pending_requests:
            return "max_pending_requests"
        return None

    def connections_full(self) -> bool:
        """A new upstream connection would break ``max_connections`` (checked
        only when a request cannot reuse an idle one)."""
        limit = self.breaker.max_connections
        return bool(limit) and sum(ep.connections for ep in self.endpoints) >= limit

    def count_overflow(self, limit: str) -> None:
        _OVERFLOW.labels(self.name, limit).inc()


class Clusters:
    """Every cluster of one worker, by name (named ones and each listener's
    implicit one)."""

    def __init__(self, config: Config) -> None:
        self.by_name: dict[str, Cluster] = {}
        self.resolvers: list[Any] = []
        for c in config.clusters:
            self.by_name[c.name] = Cluster.build(c.name, c, c.backends)

    def for_listener(self, lc: ListenerConfig) -> Cluster | None:
        """The listener's default pool: its named cluster, else its inline
        backends (an implicit cluster named after the listener)."""
        if lc.cluster is not None:
            return self.by_name.get(lc.cluster)
        if not lc.backends:
            return None
        key = f"listener:{lc.name}"
        got = self.by_name.get(key)
        if got is None:
            got = self.by_name[key] = Cluster.build(lc.name, None, lc.backends)
        return got

    def start_dns(self) -> None:
        """Start re-resolving host-named backends (needs the running loop)."""
        from expressgateway.upstream.dns import ClusterResolver

        for c in self.by_name.values():
            resolver = ClusterResolver(c, c.dns_refresh)
            resolver.start()
            self.resolvers.append(resolver)

    def report(self) -> list[dict[str, Any]]:
        """What ``/backends`` shows of this worker's clusters."""
        now = time.monotonic()
        out = []
        for c in self.by_name.values():
            policy = type(c.balancer).__name__
            eps = []
            for ep in c.endpoints:
                st = c.states.get(ep.name)
                eps.append(
                    {
                        "name": ep.name,
                        "origin": ep.origin,
                        "weight": ep.weight,
                        "healthy": ep.healthy,
                        "active": ep.active,
                        "connections": ep.connections,
                        "ejected_for_s": round(max(0.0, st.ejected_until - now), 3) if st else 0.0,
                        "ejections": st.ejections if st else 0,
                    }
                )
            out.append(
                {
                    "name": c.name,
                    "policy": policy,
                    "requests": c.requests,
                    "retries": c.retries,
                    "pending": c.pending,
                    "endpoints": eps,
                }
            )
        return out

    def stop_dns(self) -> None:
        for resolver in self.resolvers:
            resolver.stop()
        self.resolvers.clear()

    def set_active(self, cluster: str, backend: str, up: bool) -> None:
        c = self.by_name.get(cluster)
        if c is not None:
            c.set_active(backend, up)

    def tick(self, now: float) -> None:
        for c in self.by_name.values():
            if c.outlier is not None:
                c.tick(now)


#: this worker's clusters (set when the worker starts its listeners)
CURRENT: Clusters | None = None


def set_active_health(cluster: str, backend: str, up: bool) -> None:
    """Apply an active-check verdict (the worker's control channel calls this)."""
    if CURRENT is not None:
        CURRENT.set_active(cluster, backend, up)
