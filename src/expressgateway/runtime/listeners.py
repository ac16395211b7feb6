"""Start the servers of one worker: one per configured listener.

Each protocol has a builder that turns a listener config and its inherited
socket into a running server. L7 protocols register theirs here too, so the
worker knows nothing about any protocol.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from expressgateway.config import Config, ListenerConfig
from expressgateway.io.acceptor import Acceptor
from expressgateway.io.admission import Admission
from expressgateway.io.tickets import TicketKeys, set_session_tickets
from expressgateway.io.tls import SniSelector, TlsConfigError, server_context
from expressgateway.l4.tcp import L4Context, TcpRelay
from expressgateway.l4.udp import UdpContext, UdpListener
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.cluster import Cluster, Clusters

log = logging.getLogger("expressgateway.listeners")


@dataclass
class Running:
    """A started listener: something to stop accepting on, and to close."""

    name: str
    server: asyncio.AbstractServer | None = None
    acceptor: Acceptor | None = None
    udp: UdpListener | None = None
    #: a QUIC listener's endpoint (connections live in it, not in a server)
    quic: Any = None
    extra: list[Any] = field(default_factory=list)

    def drain(self) -> None:
        """Tell open connections to finish: idle ones close now, busy ones
        close after their current exchange (``Connection: close``)."""
        if self.quic is not None:
            self.quic.drain()
        for item in self.extra:
            drain = getattr(item, "drain", None)
            if drain is not None:
                drain()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.acceptor is not None:
            self.acceptor.close()
        if self.udp is not None:
            self.udp.close()
        if self.quic is not None:
            self.quic.stop_accepting()

    def update(self, config: Config, lc: ListenerConfig, clusters: Clusters) -> None:
        """A reload: new connections and requests use ``lc``."""
        for item in self.extra:
            reconfigure = getattr(item, "reconfigure_from", None)
            if reconfigure is not None:
                reconfigure(config, lc, clusters)

    def reload_certificates(self, lc: ListenerConfig) -> None:
        for item in self.extra:
            if isinstance(item, CertSlot):
                item.reload(lc)

    def open_connections(self) -> int:
        """Connections that drain() asked to finish and are still open (QUIC;
        TCP connections are counted by the worker's admission)."""
        return len(self.quic.connections) if self.quic is not None else 0

    def close(self) -> None:
        """Last step of shutdown: abort what is left."""
        if self.quic is not None:
            self.quic.close()


_CERT_RELOADS = REGISTRY.counter(
    "tls_certificate_reloads_total",
    "Certificate reloads of TLS and QUIC listeners (SIGUSR1, reload), by result; a "
    "failed one keeps the old pair.",
    ("listener", "result"),
)


class CertSlot:
    """A listener's live TLS material: an ``ssl.SSLContext`` (TCP) or an
    aioquic configuration (QUIC). A reload validates the new pair on a fresh
    object first, then swaps it in: handshakes in progress keep the old
    one, new ones get the new one; a bad pair keeps the old one."""

    def __init__(self, name: str, target: Any, quic: bool = False, index: int = -1) -> None:
        self.name = name
        self.target = target
        self.quic = quic
        #: which of ``[[listeners.tls.certificates]]`` (-1: the listener's own pair)
        self.index = index

    def reconfigure_from(self, _config: Config, lc: ListenerConfig, _clusters: Clusters) -> None:
        """A reload: ``session_tickets`` may have changed (TCP contexts only)."""
        if not self.quic and lc.tls is not None:
            set_session_tickets(self.target, lc.tls.session_tickets)

    def _paths(self, lc: ListenerConfig) -> tuple[str, str] | None:
        if self.quic:
            return (lc.quic.cert_path, lc.quic.key_path) if lc.quic is not None else None
        tls = lc.tls
        if tls is None:
            return None
        if self.index < 0:
            return tls.cert_path, tls.key_path
        if self.index >= len(tls.certificates):
            return None  # removed by a reload: the name falls back to the default pair
        extra = tls.certificates[self.index]
        return extra.cert_path, extra.key_path

    def reload(self, lc: ListenerConfig) -> bool:
        paths = self._paths(lc)
        if paths is None:
            return False
        cert, key = paths
        try:
            if self.quic:
                from aioquic.quic.configuration import QuicConfiguration

                QuicConfiguration(is_client=False).load_cert_chain(cert, key)
                self.target.load_cert_chain(cert, key)
            else:
                server_context(cert, key, where=f"listener {lc.name!r}")
                self.target.load_cert_chain(cert, key)
        except (OSError, ValueError, TlsConfigError, ssl.SSLError) as exc:
            _CERT_RELOADS.labels(lc.name, "failed").inc()
            log.error(
                "certificate reload failed; the old certificate stays",
                extra={"listener": lc.name, "error": str(exc)},
            )
            return False
        _CERT_RELOADS.labels(lc.name, "ok").inc()
        log.info("certificate reloaded", extra={"listener": lc.name, "cert": cert})
        return True


def tls_server(
    lc: ListenerConfig,
    cfg: Config,
    alpn: Sequence[str],
    *,
    remember_sni: bool = False,
    tickets: TicketKeys | None = None,
) -> tuple[ssl.SSLContext, list[CertSlot]]:
    """The listener's TLS context, plus one per extra certificate chosen by
    SNI, and the slots that reload them. ``tickets``: the listener's
    session-ticket keys (None: OpenSSL's own per-context key)."""
    tls = lc.tls
    assert tls is not None
    tls13 = cfg.runtime.tls.tls13_only
    where = f"listener {lc.name!r}"
    ctx = server_context(tls.cert_path, tls.key_path, alpn=alpn, tls13_only=tls13, where=where)
    slots = [CertSlot(lc.name, ctx)]
    selector = SniSelector(remember=remember_sni)
    for i, extra in enumerate(tls.certificates):
        other = server_context(
            extra.cert_path, extra.key_path, alpn=alpn, tls13_only=tls13, where=where
        )
        selector.add(extra.server_names, other)
        slots.append(CertSlot(lc.name, other, index=i))
    if remember_sni or tls.certificates:
        ctx.sni_callback = selector
    for slot in slots:
        # OpenSSL seals and opens tickets with the context the handshake began
        # on (the listener's own), but an SNI-chosen one gets the keys too
        set_session_tickets(slot.target, tls.session_tickets)
        if tickets is not None:
            tickets.install(slot.target)
    return ctx, slots


@dataclass
class WorkerContext:
    """What all listeners of a worker share."""

    config: Config
    admission: Admission
    index: int
    #: this worker's clusters (named pools and each listener's implicit one)
    clusters: Clusters = field(default_factory=lambda: Clusters(Config()))
    #: session-ticket keys per TLS listener name (from the supervisor)
    tickets: dict[str, TicketKeys] = field(default_factory=dict)


Builder = Callable[[WorkerContext, ListenerConfig, socket.socket], Awaitable[Running]]
BUILDERS: dict[str, Builder] = {}


def builder(*protocols: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        for p in protocols:
            BUILDERS[p] = fn
        return fn

    return register


def cluster_for(wc: WorkerContext, lc: ListenerConfig) -> Cluster:
    """The listener's default pool (an empty one when it has none)."""
    cluster = wc.clusters.for_listener(lc)
    if cluster is None:
        cluster = Cluster.build(lc.name, None, ())
    return cluster


def accepting(
    wc: WorkerContext,
    lc: ListenerConfig,
    sock: socket.socket,
    ssl_ctx: ssl.SSLContext | None,
    factory: Callable[[str], asyncio.Protocol],
) -> Acceptor:
    """Start the accept loop of a TCP listener (plain when ``ssl_ctx`` is
    None); ``factory`` gets the admitted client IP."""
    rt = wc.config.runtime
    acceptor = Acceptor(
        lc.name,
        sock,
        ssl_ctx,
        factory,
        wc.admission,
        rt.handshake_timeout_ms / 1000,
        rt.accept_backoff_max_ms / 1000,
    )
    acceptor.start()
    return acceptor


@builder("tcp", "tls")
async def _build_l4_tcp(wc: WorkerContext, lc: ListenerConfig, sock: socket.socket) -> Running:
    rt = wc.config.runtime
    cluster = cluster_for(wc, lc)
    ctx = L4Context(
        name=lc.name,
        balancer=cluster.balancer,
        admission=wc.admission,
        connect_timeout=rt.connect_timeout_ms / 1000,
        cluster=cluster,
    )
    ssl_ctx: ssl.SSLContext | None = None
    slots: list[CertSlot] = []
    if lc.protocol == "tls" and lc.tls is not None:
        ssl_ctx, slots = tls_server(
            lc, wc.config, lc.tls.alpn or (), tickets=wc.tickets.get(lc.name)
        )
    acceptor = accepting(wc, lc, sock, ssl_ctx, lambda ip: TcpRelay(ctx, admitted_ip=ip))
    return Running(lc.name, acceptor=acceptor, extra=[ctx, *slots])


@builder("udp")
async def _build_udp(wc: WorkerContext, lc: ListenerConfig, sock: socket.socket) -> Running:
    ctx = UdpContext(
        name=lc.name,
        balancer=cluster_for(wc, lc).balancer,
        idle_timeout=lc.udp.idle_timeout_ms / 1000,
        max_flows=lc.udp.max_flows,
        max_datagram=lc.udp.max_datagram_size,
    )
    proto = UdpListener(ctx)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: proto, sock=sock)
    return Running(lc.name, udp=proto, extra=[ctx])


def is_served(lc: ListenerConfig) -> bool:
    """This version can run ``lc`` (QUIC Mode B, ``raw_proxy``, is not built yet)."""
    if lc.protocol == "quic" and lc.quic is not None and lc.quic.raw_proxy is not None:
        return False
    return lc.protocol in BUILDERS


def is_udp(lc: ListenerConfig) -> bool:
    return lc.protocol in ("udp", "quic")


def active_protocols() -> set[str]:
    return set(BUILDERS)
