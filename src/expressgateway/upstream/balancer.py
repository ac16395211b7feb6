"""Backend selection. The same selection code serves L4 and L7 listeners.

:class:`Balancer` is the interface every policy implements; the traffic
management work adds the other policies behind it.
"""

from __future__ import annotations

from collections.abc import Sequence

from expressgateway.upstream.endpoint import Endpoint


class Balancer:
    """Picks an endpoint for a new connection or request."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints: list[Endpoint] = list(endpoints)

    def select(self, key: bytes | None = None) -> Endpoint | None:
        raise NotImplementedError


class RoundRobin(Balancer):
    """Healthy endpoints in turn; when none is healthy, all of them in turn
    (failing open is better than refusing every request on a stale verdict)."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        super().__init__(endpoints)
        self._next = 0

    def select(self, key: bytes | None = None) -> Endpoint | None:
        eps = self.endpoints
        n = len(eps)
        if n == 0:
            return None
        for _ in range(n):
            ep = eps[self._next % n]
            self._next += 1
            if ep.healthy:
                return ep
        ep = eps[self._next % n]
        self._next += 1
        return ep
