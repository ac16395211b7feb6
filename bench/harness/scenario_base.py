"""What a scenario is: its environment, its figures, its front end and probe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import probes
from .certs import CertPair
from .loadgen import LoadResult
from .proxies.base import H1, Front
from .settings import ORIGIN_H1_PORT, Mode

MIB = 1024 * 1024


@dataclass
class Env:
    """Everything a scenario run needs besides the proxy's front end."""

    duration: float
    warmup: float
    mode: Mode
    work_dir: Path
    docroot: Path
    certs: CertPair
    smoke: bool = False
    probe_deadline: float = 20.0


@dataclass
class Measurement:
    """Figures of one (scenario, proxy, round)."""

    rate: float | None = None  # units per second
    mib_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_per_unit: float | None = None
    peak_rss_mib: float | None = None
    errors: int = 0
    units: float = 0.0
    error_detail: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


LoadFn = Callable[[Front, Env, float], LoadResult]


class Scenario:
    name = ""
    title = ""
    kind = H1
    backend_port = ORIGIN_H1_PORT
    unit = "req"
    reference = "haproxy"
    big_idle = False
    websocket = False
    headline = "rate"  # which figure the chart shows

    def front(self) -> Front:
        return Front(
            kind=self.kind,
            backend_port=self.backend_port,
            big_idle=self.big_idle,
            websocket=self.websocket,
        )

    def probe(self, front: Front, env: Env) -> None:
        probes.until_ok(probes.h1_get, front, env.probe_deadline)

    def run(self, front: Front, pid: int, env: Env) -> Measurement:
        raise NotImplementedError
