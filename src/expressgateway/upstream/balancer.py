"""Backend selection. The same selection code serves L4 and L7 listeners.

:class:`Balancer` is the interface every policy implements (the policies are
in :mod:`expressgateway.upstream.policies`). A caller asks
``select(pick)`` for a new connection (L4) or request (L7), brackets the use
with ``on_start(ep)`` / ``on_finish(ep, seconds, ok)`` so load-aware
policies (least request, P2C, EWMA) see real load and latency, and keeps
the endpoint's ``healthy`` flag current (active checks, outlier ejection).

Health filtering is shared: a policy picks among healthy endpoints, unless
fewer than ``panic_threshold`` percent are healthy, in which case it picks
among all of them (failing open beats refusing every request on a stale or
mass verdict, as Envoy's panic threshold does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from expressgateway.upstream.endpoint import Endpoint

#: a header or cookie lookup by lower-case name
Lookup = Callable[[bytes], bytes | None]


@dataclass(slots=True)
class PickContext:
    """What a policy may key on. Unused fields stay empty (L4 has only the
    source address)."""

    source_ip: str = ""
    path: bytes = b""
    header: Lookup | None = None
    cookie: Lookup | None = None
    #: endpoints not to pick (a retry avoids the one that just failed)
    exclude: tuple[Endpoint, ...] = ()
    #: out: the affinity cookie value the response must set (cookie affinity)
    set_cookie: bytes | None = None


class Balancer:
    """Picks an endpoint for a new connection or request."""

    #: percent of healthy endpoints under which all endpoints are used
    panic_threshold = 50
    #: whether ``select`` reads the request (hash keys, affinity): when not,
    #: a caller with nothing to exclude may pass ``None`` and skip building one
    needs_context = False

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints: list[Endpoint] = list(endpoints)

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        raise NotImplementedError

    def candidates(self, pick: PickContext | None = None) -> list[Endpoint]:
        """Healthy endpoints (minus ``pick.exclude``), or all of them in panic."""
        eps = self.endpoints
        healthy = [ep for ep in eps if ep.healthy]
        if len(healthy) * 100 < len(eps) * self.panic_threshold:
            healthy = list(eps)
        if pick is not None and pick.exclude:
            rest = [ep for ep in healthy if ep not in pick.exclude]
            if rest:
                return rest
        return healthy

    def on_start(self, ep: Endpoint) -> None:
        ep.active += 1

    def on_finish(self, ep: Endpoint, seconds: float, ok: bool) -> None:
        ep.active -= 1
