"""L4 TCP (and TLS-terminated) byte relay.

One :class:`TcpRelay` per client connection, one :class:`_BackendSide` for
its backend connection. Bytes are written straight through; backpressure is
"stop reading": when one side's write buffer passes its high-water mark the
other side's transport is paused until it drains. A FIN from either side is
passed on as a FIN (half-close), and the pair closes once both directions
are done.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

from expressgateway.io.admission import Admission
from expressgateway.io.sockets import configure_upstream
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.balancer import Balancer, PickContext
from expressgateway.upstream.cluster import Cluster
from expressgateway.upstream.endpoint import Endpoint

log = logging.getLogger("expressgateway.l4.tcp")

_BYTES_UP = REGISTRY.counter(
    "bytes_client_to_backend", "Bytes relayed from clients to backends (L4).", ("listener",)
)
_BYTES_DOWN = REGISTRY.counter(
    "bytes_backend_to_client", "Bytes relayed from backends to clients (L4).", ("listener",)
)
_CONNECT_ERRORS = REGISTRY.counter(
    "backend_connect_errors_total",
    "Backend connection attempts that failed, by reason.",
    ("listener", "reason"),
)

#: per-direction in-flight cap: pause the reader past this much unsent data
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


@dataclass(slots=True)
class L4Context:
    """What every connection of one L4 listener shares."""

    name: str
    balancer: Balancer
    admission: Admission
    connect_timeout: float
    #: the pool behind the listener: passive health and connect retries
    cluster: Cluster | None = None

    def reconfigure_from(self, config: Any, lc: Any, clusters: Any) -> None:
        """A reload: new connections use the listener's new pool."""
        cluster = clusters.for_listener(lc)
        if cluster is None:
            cluster = Cluster.build(lc.name, None, ())
        self.cluster = cluster
        self.balancer = cluster.balancer
        self.connect_timeout = config.runtime.connect_timeout_ms / 1000


class _BackendSide(asyncio.Protocol):
    __slots__ = ("relay", "transport")

    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio's: cast, not assert
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        client = relay.client
        if client is not None:
            client.write(data)
            relay.down_bytes.value += len(data)

    def eof_received(self) -> bool:
        return self.relay.backend_eof()

    def pause_writing(self) -> None:
        if self.relay.client is not None:
            self.relay.client.pause_reading()

    def resume_writing(self) -> None:
        if self.relay.client is not None:
            self.relay.client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.backend_lost(exc)


class TcpRelay(asyncio.Protocol):
    """The client side of one relayed connection."""

    def __init__(self, ctx: L4Context, admitted_ip: str | None = None) -> None:
        """``admitted_ip``: the acceptor already admitted this connection
        (TLS listeners admit before the handshake)."""
        self.ctx = ctx
        self.pre_admitted = admitted_ip is not None
        self.client: asyncio.Transport | None = None
        self.backend: _BackendSide | None = None
        self.endpoint: Endpoint | None = None
        self.peer_ip = ""
        self.admitted = False
        self.client_eof = False
        self.backend_eof_seen = False
        self.closed = False
        self.up_bytes = _BYTES_UP.labels(ctx.name)
        self.down_bytes = _BYTES_DOWN.labels(ctx.name)
        self._task: asyncio.Task[None] | None = None
        #: how long the backend took to accept: the latency L4 feeds to the balancer
        self.connect_seconds = 0.0
        #: the cluster whose in-flight requests count this connection (the
        #: breaker's max_requests); a reload may give the listener another
        self.in_cluster: Cluster | None = None
        #: the endpoint whose open-connection count includes our backend socket
        self.connected_ep: Endpoint | None = None
        # bytes that arrive before the backend is connected (pause_reading in
        # connection_made is not honoured by uvloop nor by asyncio before 3.12)
        self._early = bytearray()

    # -- client side -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio's: cast, not assert
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        if not self.pre_admitted and not self.ctx.admission.admit(self.ctx.name, self.peer_ip):
            transport.abort()
            return
        self.admitted = True
        self.client = transport
        transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._start(transport))

    async def _start(self, client: asyncio.Transport) -> None:
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        cluster = ctx.cluster
        if cluster is not None:
            # circuit breaker: a relayed connection is one request in flight
            limit = cluster.overflow()
            if limit is None and cluster.connections_full():
                limit = "max_connections"
            if limit is not None:
                cluster.count_overflow(limit)
                _CONNECT_ERRORS.labels(ctx.name, "circuit_open").inc()
                self._abort_all()
                return
            cluster.requests += 1
            self.in_cluster = cluster
        # a failed connect moves on to another backend, up to the cluster's retries
        tries = 1 + (cluster.retry.max_retries if cluster is not None else 0)
        pick = PickContext(source_ip=self.peer_ip)
        failed: list[Endpoint] = []
        proto: _BackendSide | None = None
        for attempt in range(tries):
            pick.exclude = tuple(failed)
            ep = ctx.balancer.select(pick)
            if ep is None or (attempt and ep in failed):
                if ep is None:
                    _CONNECT_ERRORS.labels(ctx.name, "no_backend").inc()
                break
            self.endpoint = ep
            ctx.balancer.on_start(ep)
            started = loop.time()
            reason = ""
            if cluster is not None:
                cluster.pending += 1
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _BackendSide(self), ep.host, ep.port),
                    ctx.connect_timeout,
                )
            except TimeoutError:
                reason = "timeout"
            except OSError as exc:
                reason = "refused" if isinstance(exc, ConnectionRefusedError) else "error"
            finally:
                if cluster is not None:
                    cluster.pending -= 1
            if proto is not None:
                self.connect_seconds = loop.time() - started
                ep.connections += 1
                self.connected_ep = ep
                break
            _CONNECT_ERRORS.labels(ctx.name, reason).inc()
            log.warning(
                "backend connect failed",
                extra={"listener": ctx.name, "backend": ep.name, "reason": reason},
            )
            ctx.balancer.on_finish(ep, loop.time() - started, False)
            self.endpoint = None
            if cluster is not None:
                cluster.record(ep, connect_failed=True)
            failed.append(ep)
            if self.closed:
                return
        if proto is None:
            self._abort_all()
            return
        if cluster is not None and self.endpoint is not None:
            cluster.record(self.endpoint, status=200)
        if self.closed:
            if proto.transport is not None:
                proto.transport.close()
            return
        self.backend = proto
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            configure_upstream(sock)
        assert proto.transport is not None
        if self._early:
            proto.transport.write(bytes(self._early))
            self.up_bytes.value += len(self._early)
            self._early.clear()
        if self.client_eof and proto.transport.can_write_eof():
            proto.transport.write_eof()
        if self.client is not None:
            self.client.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
            self.client.resume_reading()

    def data_received(self, data: bytes) -> None:
        backend = self.backend
        if backend is not None and backend.transport is not None:
            backend.transport.write(data)
            self.up_bytes.value += len(data)
        elif self.client is not None:
            self._early += data
            self.client.pause_reading()

    def eof_received(self) -> bool:
        self.client_eof = True
        backend = self.backend
        if (
            backend is not None
            and backend.transport is not None
            and backend.transport.can_write_eof()
        ):
            backend.transport.write_eof()
        if self.backend_eof_seen:
            self._close_all()
            return False
        # Keep our write side open so the backend's answer still arrives
        # (plain TCP only: TLS transports close on EOF whatever we return).
        return True

    def pause_writing(self) -> None:
        backend = self.backend
        if backend is not None and backend.transport is not None:
            backend.transport.pause_reading()

    def resume_writing(self) -> None:
        backend = self.backend
        if backend is not None and backend.transport is not None:
            backend.transport.resume_reading()

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            self.ctx.admission.release(self.ctx.name, self.peer_ip)
        if self.endpoint is not None:
            # a relayed connection has no response time: its connect time
            # is what latency-aware policies (ewma) compare
            self.ctx.balancer.on_finish(self.endpoint, self.connect_seconds, True)
            self.endpoint = None
        if self.connected_ep is not None:
            self.connected_ep.connections -= 1
            self.connected_ep = None
        if self.in_cluster is not None:
            self.in_cluster.requests -= 1
            self.in_cluster = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed and not self.admitted:
            return
        self._release()
        self.client = None
        backend = self.backend
        if backend is not None and backend.transport is not None:
            if exc is None:
                backend.transport.close()
            else:
                backend.transport.abort()
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # -- called by the backend side ---------------------------------------
    def backend_eof(self) -> bool:
        self.backend_eof_seen = True
        client = self.client
        if client is not None and client.can_write_eof():
            client.write_eof()
        elif client is not None:
            client.close()
        if self.client_eof:
            self._close_all()
            return False
        return True

    def backend_lost(self, exc: Exception | None) -> None:
        self.backend = None
        client = self.client
        if client is not None:
            if exc is None:
                client.close()
            else:
                client.abort()

    def _close_all(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.close()

    def _abort_all(self) -> None:
        self.closed = True
        if self.client is not None:
            self.client.abort()
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.abort()
        self._release()
