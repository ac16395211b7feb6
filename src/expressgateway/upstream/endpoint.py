"""A backend endpoint as the balancer and the pools see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(slots=True, eq=False)
class Endpoint:
    """One backend address. Mutable counters feed load-aware policies."""

    #: bumped whenever any endpoint's ``healthy`` flag flips (see the setter
    #: installed below), so a balancer can cache its candidate list and check
    #: one integer per pick instead of rescanning every endpoint
    health_epoch: ClassVar[int] = 0

    host: str
    port: int
    protocol: str = "tcp"
    weight: int = 1
    tls: bool = False
    tls_ca_path: str | None = None
    tls_verify_hostname: str | None = None
    tls_verify_peer: bool = True
    #: "host:port", the metric label and log name
    name: str = field(default="")
    #: the configured backend ("host:port" as written) this endpoint comes
    #: from; differs from ``name`` for the addresses a host name resolved to
    origin: str = field(default="")
    #: connections or requests currently using this endpoint
    active: int = 0
    #: upstream connections open to this endpoint (the circuit breaker's
    #: max_connections), counted by the connectors
    connections: int = 0
    healthy: bool = True
    #: identity of a pooled connection to this endpoint (see upstream/pool.py)
    key: tuple[str, int, bool, str, bool, str] = ()  # type: ignore[assignment]
    #: peak-EWMA latency in seconds (the ``ewma`` policy); negative: no
    #: response measured yet
    ewma: float = field(default=-1.0, repr=False)
    #: clock reading of the last ``ewma`` update
    ewma_stamp: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.name = f"{host}:{self.port}"
        if not self.origin:
            self.origin = self.name
        self.key = (
            self.host,
            self.port,
            self.tls,
            self.sni if self.tls else "",
            self.tls_verify_peer,
            self.tls_ca_path or "",
        )

    @property
    def sni(self) -> str:
        return self.tls_verify_hostname or self.host


# ``healthy`` stays a plain dataclass field (constructor argument, repr,
# replace()), but its slot is wrapped in a property whose setter bumps
# Endpoint.health_epoch when the value changes. Reads go straight to the
# slot's C getter; ``active`` and the other hot counters are untouched.
_healthy_slot: Any = Endpoint.__dict__["healthy"]
_get_healthy = _healthy_slot.__get__
_set_healthy_slot = _healthy_slot.__set__


def _set_healthy(ep: Endpoint, value: bool) -> None:
    value = bool(value)
    try:
        old = _get_healthy(ep)
    except AttributeError:  # first assignment, in __init__
        _set_healthy_slot(ep, value)
        return
    if old != value:
        _set_healthy_slot(ep, value)
        Endpoint.health_epoch += 1


setattr(Endpoint, "healthy", property(_get_healthy, _set_healthy, doc="Takes new traffic."))  # noqa: B010
