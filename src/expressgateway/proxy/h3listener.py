"""Builds ``quic`` listeners (HTTP/3 terminate) in a worker."""

from __future__ import annotations

import asyncio
import socket

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from expressgateway.config import ListenerConfig
from expressgateway.io.quic import QuicEndpoint, load_retry_secret
from expressgateway.proxy.context import L7Context
from expressgateway.proxy.h1listener import worker_shared
from expressgateway.proxy.h3front import STREAM_WINDOW, front_factory
from expressgateway.proxy.router import Router
from expressgateway.runtime import features
from expressgateway.runtime.listeners import CertSlot, Running, WorkerContext, builder

features.activate("quic", "h3_backend")

#: connection-level receive window to start with (aioquic doubles it as it is used)
CONNECTION_WINDOW = 1 << 20


def server_configuration(lc: ListenerConfig) -> QuicConfiguration:
    quic = lc.quic
    assert quic is not None
    conf = QuicConfiguration(
        is_client=False,
        alpn_protocols=H3_ALPN,
        idle_timeout=quic.max_idle_timeout_ms / 1000,
        max_datagram_size=quic.max_recv_udp_payload_size,
        max_stream_data=STREAM_WINDOW,
        max_data=CONNECTION_WINDOW,
    )
    conf.load_cert_chain(quic.cert_path, quic.key_path)
    return conf


@builder("quic")
async def build_quic(wc: WorkerContext, lc: ListenerConfig, sock: socket.socket) -> Running:
    quic = lc.quic
    assert quic is not None
    cfg = wc.config
    sweeper, pool = worker_shared(wc)
    ctx = L7Context(
        name=lc.name,
        listener=lc,
        config=cfg,
        router=Router(lc, wc.clusters),
        pool=pool,
        sweeper=sweeper,
        admission=wc.admission,
        scheme=b"https",
        tls=True,
        ssl_context=None,
        alt_svc=None,
        access_log=cfg.observability.access_log,
    )
    conf = server_configuration(lc)
    endpoint = QuicEndpoint(
        lc.name,
        conf,
        front_factory(ctx),
        load_retry_secret(quic.retry_secret_path),
        max_connections=quic.max_connections,
        per_ip_cap=quic.per_ip_connection_cap,
        early_data=quic.early_data,
        sock=sock,
    )
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: endpoint, sock=sock)
    running = Running(lc.name, quic=endpoint)
    running.extra.append(ctx)
    running.extra.append(CertSlot(lc.name, conf, quic=True))
    return running
