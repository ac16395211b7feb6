"""L4 UDP proxy: one flow per client address, each with its own connected
socket to a backend chosen when the flow starts.

The flow table is bounded (``max_flows``: new flows past it are dropped and
counted) and an idle reaper closes flows silent for ``idle_timeout_ms``.
Datagrams that arrive while a flow's backend socket is being opened wait in
a small bounded queue (drop-newest past it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.balancer import Balancer, PickContext
from expressgateway.upstream.endpoint import Endpoint

log = logging.getLogger("expressgateway.l4.udp")

_FLOWS = REGISTRY.gauge("udp_flows", "UDP flows currently open.", ("listener",))
_FLOWS_TOTAL = REGISTRY.counter("udp_flows_total", "UDP flows opened.", ("listener",))
_DATAGRAMS = REGISTRY.counter(
    "udp_datagrams_total", "UDP datagrams relayed.", ("listener", "direction")
)
_BYTES = REGISTRY.counter(
    "udp_bytes_total", "UDP payload bytes relayed.", ("listener", "direction")
)
_DROPS = REGISTRY.counter(
    "udp_drops_total", "UDP datagrams dropped, by reason.", ("listener", "reason")
)

#: datagrams held per flow while its backend socket opens
PENDING_CAP = 64


@dataclass(slots=True)
class UdpContext:
    name: str
    balancer: Balancer
    idle_timeout: float
    max_flows: int
    max_datagram: int

    def reconfigure_from(self, config: Any, lc: Any, clusters: Any) -> None:
        """A reload: new flows use the listener's new pool and limits."""
        cluster = clusters.for_listener(lc)
        if cluster is not None:
            self.balancer = cluster.balancer
        self.idle_timeout = lc.udp.idle_timeout_ms / 1000
        self.max_flows = lc.udp.max_flows
        self.max_datagram = lc.udp.max_datagram_size


class _Flow(asyncio.DatagramProtocol):
    __slots__ = ("client", "endpoint", "last_seen", "listener", "pending", "transport")

    def __init__(self, listener: UdpListener, client: tuple[str, int], endpoint: Endpoint) -> None:
        self.listener = listener
        self.client = client
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: deque[bytes] | None = deque()
        self.last_seen = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio's: cast, not assert
        transport = cast(asyncio.DatagramTransport, transport)
        self.transport = transport
        pending, self.pending = self.pending, None
        for data in pending or ():
            transport.sendto(data)

    def send(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        if self.transport is not None:
            self.transport.sendto(data)
        elif self.pending is not None:
            if len(self.pending) >= PENDING_CAP:
                self.listener.drop("pending_full")
                return
            self.pending.append(data)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self.last_seen = time.monotonic()
        self.listener.reply(self.client, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the backend is gone; drop the flow
        # so the next datagram picks a backend again.
        self.listener.drop("backend_error")
        self.listener.close_flow(self.client)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.pending = None


class UdpListener(asyncio.DatagramProtocol):
    """The listening socket's protocol; owns the flow table."""

    def __init__(self, ctx: UdpContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.TimerHandle | None = None
        self._flows_gauge = _FLOWS.labels(ctx.name)
        self._in = _DATAGRAMS.labels(ctx.name, "client_to_backend")
        self._out = _DATAGRAMS.labels(ctx.name, "backend_to_client")
        self._in_bytes = _BYTES.labels(ctx.name, "client_to_backend")
        self._out_bytes = _BYTES.labels(ctx.name, "backend_to_client")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio's: cast, not assert
        transport = cast(asyncio.DatagramTransport, transport)
        self.transport = transport
        self._schedule_reap()

    def _schedule_reap(self) -> None:
        interval = min(1.0, self.ctx.idle_timeout / 4)
        self._reaper = asyncio.get_running_loop().call_later(interval, self._reap)

    def _reap(self) -> None:
        deadline = time.monotonic() - self.ctx.idle_timeout
        for addr in [a for a, f in self.flows.items() if f.last_seen < deadline]:
            self.close_flow(addr)
        self._schedule_reap()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if len(data) > self.ctx.max_datagram:
            self.drop("datagram_too_large")
            return
        client = (str(addr[0]), int(addr[1]))
        flow = self.flows.get(client)
        if flow is None:
            flow = self._open_flow(client)
            if flow is None:
                return
        self._in.value += 1
        self._in_bytes.value += len(data)
        flow.send(data)

    def _open_flow(self, client: tuple[str, int]) -> _Flow | None:
        if len(self.flows) >= self.ctx.max_flows:
            self.drop("flow_table_full")
            return None
        ep = self.ctx.balancer.select(PickContext(source_ip=client[0]))
        if ep is None:
            self.drop("no_backend")
            return None
        flow = _Flow(self, client, ep)
        self.flows[client] = flow
        self.ctx.balancer.on_start(ep)
        self._flows_gauge.value += 1
        _FLOWS_TOTAL.labels(self.ctx.name).inc()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._connect(flow, loop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return flow

    async def _connect(self, flow: _Flow, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.create_datagram_endpoint(
                lambda: flow, remote_addr=(flow.endpoint.host, flow.endpoint.port)
            )
        except OSError as exc:
            log.warning(
                "udp backend socket failed",
                extra={"listener": self.ctx.name, "backend": flow.endpoint.name, "error": str(exc)},
            )
            self.drop("backend_error")
            self.close_flow(flow.client)
            return
        if self.flows.get(flow.client) is not flow:
            flow.close()

    def reply(self, client: tuple[str, int], data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)
            self._out.value += 1
            self._out_bytes.value += len(data)

    def drop(self, reason: str) -> None:
        _DROPS.labels(self.ctx.name, reason).inc()

    def close_flow(self, client: tuple[str, int]) -> None:
        flow = self.flows.pop(client, None)
        if flow is None:
            return
        self.ctx.balancer.on_finish(flow.endpoint, 0.0, True)
        self._flows_gauge.value -= 1
        flow.close()

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for client in list(self.flows):
            self.close_flow(client)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
