"""Admission caps applied at accept time, before any byte is read.

Per-source-IP concurrent connections (``per_ip_connection_cap``) and the
in-flight connection cap (``max_inflight_connections``). Over either cap the
connection is closed at once without a response (no amplification).
Counts are per worker process: the kernel spreads one client's connections
over the workers, so the effective per-IP cap is per worker.
"""

from __future__ import annotations

from expressgateway.observability.metrics import REGISTRY

_REJECTS = REGISTRY.counter(
    "accept_reject_total",
    "Connections closed at accept by an admission cap.",
    ("listener", "reason"),
)
_INFLIGHT = REGISTRY.gauge(
    "accept_inflight", "Connections currently open, per listener.", ("listener",)
)
_ACCEPTED = REGISTRY.counter(
    "connections_total", "Connections accepted, per listener.", ("listener",)
)


class Admission:
    """Shared by every TCP listener of a worker (one in-flight budget)."""

    def __init__(self, per_ip_cap: int, max_inflight: int) -> None:
        self.per_ip_cap = per_ip_cap
        self.max_inflight = max_inflight
        self.inflight = 0
        self._per_ip: dict[str, int] = {}

    def admit(self, listener: str, ip: str) -> bool:
        """Count a new connection in; False means close it now."""
        if self.inflight >= self.max_inflight:
            _REJECTS.labels(listener, "over_inflight_cap").inc()
            return False
        count = self._per_ip.get(ip, 0)
        if count >= self.per_ip_cap:
            _REJECTS.labels(listener, "over_per_ip_cap").inc()
            return False
        self._per_ip[ip] = count + 1
        self.inflight += 1
        _ACCEPTED.labels(listener).inc()
        _INFLIGHT.labels(listener).inc()
        return True

    def release(self, listener: str, ip: str) -> None:
        count = self._per_ip.get(ip, 0) - 1
        if count <= 0:
            self._per_ip.pop(ip, None)
        else:
            self._per_ip[ip] = count
        self.inflight -= 1
        _INFLIGHT.labels(listener).dec()
