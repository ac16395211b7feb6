"""Keep-alive pool of upstream connections (HTTP/1.1 now; the shape fits the
multiplexed pools that HTTP/2 and HTTP/3 add).

Idle connections are kept per peer, last-in first-out (the warmest socket is
reused first), at most ``per_peer_max`` per peer and ``total_max`` in all;
they are dropped after ``idle_timeout`` idle or ``max_age`` total. A pooled
connection is reused only for an identical peer: same address, TLS on/off,
SNI, verification and CA (Pingora's rule). An idle connection keeps reading,
so a peer's close is seen at once and the socket leaves the pool before it
can be handed out stale.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from expressgateway.io.tls import client_context
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.endpoint import Endpoint

_IDLE = REGISTRY.gauge("pool_idle_connections", "Idle upstream connections kept for reuse.")
_REUSED = REGISTRY.counter("pool_reused_total", "Requests sent on a reused upstream connection.")
_NEW = REGISTRY.counter("pool_connections_total", "Upstream connections opened.")
_EVICTED = REGISTRY.counter(
    "pool_evictions_total", "Idle upstream connections closed by the pool, by reason.", ("reason",)
)
_PARKED = REGISTRY.gauge(
    "pool_parked_connections",
    "Client connections holding a parking slot: each may keep one upstream HTTP/1.1 "
    "connection between its requests (HTTP/2 and HTTP/3 clients: one slot per parked "
    "connection); capped by pool.park_max.",
)

PeerKey = tuple[str, int, bool, str, bool, str]


class Pooled(Protocol):
    """What the pool needs of a connection."""

    created: float
    idle_since: float
    key: PeerKey

    def alive(self) -> bool: ...

    def close(self) -> None: ...


def peer_key(ep: Endpoint) -> PeerKey:
    return ep.key


class Pool:
    def __init__(
        self,
        *,
        per_peer_max: int,
        total_max: int,
        idle_timeout: float,
        max_age: float,
        clock: Callable[[], float],
        park_max: int = 1024,
    ) -> None:
        self.per_peer_max = per_peer_max
        self.total_max = total_max
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        #: parking slots (see :meth:`take_park_slot`) in use, and their cap
        self.park_max = park_max
        self.parked = 0
        self.clock = clock
        self.idle: dict[PeerKey, list[Pooled]] = {}
        #: shared HTTP/2 connections per peer (multiplexed: never "idle" in a list)
        self.h2: dict[PeerKey, list[Any]] = {}
        #: shared HTTP/3 connections per peer (see proxy/h3back.py)
        self.h3: dict[Any, list[Any]] = {}
        self.total_idle = 0
        self._ssl: dict[tuple[str, bool, tuple[str, ...]], ssl.SSLContext] = {}

    def ssl_context(self, ep: Endpoint, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        key = (ep.tls_ca_path or "", ep.tls_verify_peer, alpn)
        ctx = self._ssl.get(key)
        if ctx is None:
            ctx = self._ssl[key] = client_context(
                ca_path=ep.tls_ca_path, verify=ep.tls_verify_peer, alpn=alpn
            )
        return ctx

    def take(self, key: PeerKey) -> Pooled | None:
        """An idle, live, young-enough connection to this peer, or None."""
        conns = self.idle.get(key)
        if not conns:
            return None
        now = self.clock()
        while conns:
            conn = conns.pop()
            self.total_idle -= 1
            _IDLE.dec()
            if not conn.alive():
                _EVICTED.labels("closed_by_peer").inc()
                conn.close()
                continue
            if now - conn.created > self.max_age:
                _EVICTED.labels("max_age").inc()
                conn.close()
                continue
            _REUSED.inc()
            return conn
        return None

    def put(self, conn: Pooled) -> None:
        """Keep a connection whose exchange ended cleanly, if there is room."""
        now = self.clock()
        if not conn.alive() or now - conn.created > self.max_age:
            conn.close()
            return
        conns = self.idle.setdefault(conn.key, [])
        if len(conns) >= self.per_peer_max or self.total_idle >= self.total_max:
            _EVICTED.labels("pool_full").inc()
            conn.close()
            return
        conn.idle_since = now
        conns.append(conn)
        self.total_idle += 1
        _IDLE.inc()

    def discard(self, conn: Pooled) -> None:
        """An idle connection died: forget it."""
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
            self.total_idle -= 1
            _IDLE.dec()

    def reap(self) -> None:
        """Close idle connections past their idle timeout or age."""
        now = self.clock()
        for conns in self.idle.values():
            keep = []
            for conn in conns:
                if now - conn.idle_since > self.idle_timeout:
                    _EVICTED.labels("idle_timeout").inc()
                elif now - conn.created > self.max_age:
                    _EVICTED.labels("max_age").inc()
                else:
                    keep.append(conn)
                    continue
                self.total_idle -= 1
                _IDLE.dec()
                conn.close()
            conns[:] = keep

    def configure(
        self,
        *,
        per_peer_max: int,
        total_max: int,
        idle_timeout: float,
        max_age: float,
        park_max: int,
    ) -> None:
        """A reload: new limits for what is kept from now on (connections
        kept now stay until reaped or reused)."""
        self.per_peer_max = per_peer_max
        self.total_max = total_max
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.park_max = park_max

    def take_park_slot(self) -> bool:
        """May one more client connection keep an upstream connection parked
        with it between its requests? A client connection takes a slot once
        and gives it back (:meth:`give_park_slot`) when it closes, so the
        request path pays nothing."""
        if self.parked >= self.park_max:
            return False
        self.parked += 1
        _PARKED.inc()
        return True

    def give_park_slot(self) -> None:
        self.parked -= 1
        _PARKED.dec()

    @staticmethod
    def count_new() -> None:
        _NEW.inc()

    @staticmethod
    def count_reuse() -> None:
        """A connection kept outside the idle lists (parked) was reused."""
        _REUSED.inc()


async def open_connection(
    factory: Callable[[], asyncio.Protocol],
    ep: Endpoint,
    ssl_ctx: ssl.SSLContext | None,
    timeout: float,
) -> asyncio.Protocol:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(
            factory,
            ep.host,
            ep.port,
            ssl=ssl_ctx,
            server_hostname=ep.sni if ssl_ctx is not None else None,
            ssl_handshake_timeout=timeout if ssl_ctx is not None else None,
        ),
        timeout,
    )
    return proto
