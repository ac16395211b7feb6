"""A backend endpoint as the balancer and the pools see it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Endpoint:
    """One backend address. Mutable counters feed load-aware policies."""

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
    #: connections or requests currently using this endpoint
    active: int = 0
    healthy: bool = True
    #: identity of a pooled connection to this endpoint (see upstream/pool.py)
    key: tuple[str, int, bool, str, bool, str] = ()  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not self.name:
            host = f"[{self.host}]" if ":" in self.host else self.host
            self.name = f"{host}:{self.port}"
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
