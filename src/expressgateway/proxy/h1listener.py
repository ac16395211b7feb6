"""Builds ``h1`` and ``h1s`` listeners in a worker."""

from __future__ import annotations

import asyncio
import socket

from expressgateway.config import ListenerConfig
from expressgateway.io.sweeper import Sweeper
from expressgateway.proxy.context import L7Context, alt_svc_value
from expressgateway.proxy.h1front import H1Front
from expressgateway.proxy.router import Router
from expressgateway.runtime import features
from expressgateway.runtime.listeners import (
    CertSlot,
    Running,
    WorkerContext,
    accepting,
    builder,
    tls_server,
)
from expressgateway.upstream.pool import Pool

_shared: dict[int, tuple[Sweeper, Pool]] = {}

features.activate("websocket", "alt_svc", "h2_security", "h2_backend", "grpc")


class _PoolReaper:
    """Reaps idle upstream connections once a second, via the sweeper."""

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.deadline = loop.time() + 1.0

    def on_deadline(self, now: float) -> None:
        self.pool.reap()
        self.deadline = now + 1.0


def worker_shared(wc: WorkerContext) -> tuple[Sweeper, Pool]:
    """One sweeper and one upstream pool per worker, shared by its listeners."""
    key = id(wc)
    got = _shared.get(key)
    if got is None:
        loop = asyncio.get_running_loop()
        timeouts = [
            t
            for lc in wc.config.listeners
            for t in (lc.http.header_timeout_ms, lc.http.body_timeout_ms)
        ]
        # a route's timeout is enforced by the same sweep: tick finely enough
        timeouts += [r.timeout_ms for lc in wc.config.listeners for r in lc.routes if r.timeout_ms]
        sweeper = Sweeper(min(timeouts or [1000]) / 1000 / 10)
        sweeper.start()
        pc = wc.config.pool
        pool = Pool(
            per_peer_max=pc.per_peer_max,
            total_max=pc.total_max,
            idle_timeout=pc.idle_timeout_ms / 1000,
            max_age=pc.max_age_ms / 1000,
            clock=loop.time,
            park_max=pc.park_max,
        )
        sweeper.add(_PoolReaper(pool, loop))
        got = _shared[key] = (sweeper, pool)
    return got


@builder("h1", "h1s")
async def build_h1(wc: WorkerContext, lc: ListenerConfig, sock: socket.socket) -> Running:
    cfg = wc.config
    sweeper, pool = worker_shared(wc)
    ssl_ctx = None
    slots: list[CertSlot] = []
    if lc.protocol == "h1s":
        assert lc.tls is not None
        # the SNI is remembered for the SNI/Host check (421)
        ssl_ctx, slots = tls_server(
            lc,
            cfg,
            lc.tls.alpn or ("h2", "http/1.1"),
            remember_sni=True,
            tickets=wc.tickets.get(lc.name),
        )
    alt_svc = alt_svc_value(lc)
    ctx = L7Context(
        name=lc.name,
        listener=lc,
        config=cfg,
        router=Router(lc, wc.clusters),
        pool=pool,
        sweeper=sweeper,
        admission=wc.admission,
        scheme=b"https" if ssl_ctx else b"http",
        tls=ssl_ctx is not None,
        ssl_context=ssl_ctx,
        alt_svc=alt_svc,
        access_log=cfg.observability.access_log,
    )
    acceptor = accepting(wc, lc, sock, ssl_ctx, lambda ip: H1Front(ctx, admitted_ip=ip))
    running = Running(lc.name, acceptor=acceptor)
    running.extra.append(ctx)
    running.extra.extend(slots)
    return running
