"""Backends named by host name: every address the name resolves to is an
endpoint of the cluster, re-resolved every ``dns_refresh_ms``.

The standard resolver (``getaddrinfo``) does not report record TTLs, so
the refresh interval is configured per cluster (30 s by default). A failed
lookup keeps the last good answer and is counted; an endpoint whose address
stays in the answer keeps its state (load, latency, health). Endpoints made
from one name share its ``origin`` (``name:port``), which is how active
health verdicts (named after the configured backend) reach them. TLS to
such an endpoint still sends and verifies the host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import replace

from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.cluster import Cluster, EndpointState
from expressgateway.upstream.endpoint import Endpoint

log = logging.getLogger("expressgateway.dns")

_FAILURES = REGISTRY.counter(
    "dns_resolution_failures_total",
    "Backend host name lookups that failed (the last good answer is kept).",
    ("cluster", "host"),
)
_ADDRESSES = REGISTRY.gauge(
    "dns_addresses", "Addresses a backend host name resolved to.", ("cluster", "host")
)


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (IPv4 and IPv6, once each, sorted)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # sorted: a resolver that rotates its answers must not look like a change
    return sorted(dict.fromkeys(str(info[4][0]) for info in infos))


class ClusterResolver:
    """Keeps the endpoints of one cluster's host-named backends current."""

    def __init__(self, cluster: Cluster, interval: float) -> None:
        self.cluster = cluster
        self.interval = interval
        #: the configured endpoint of each host-named backend (the template)
        self.templates = [ep for ep in cluster.endpoints if not is_ip(ep.host)]
        self.answers: dict[str, list[str]] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.templates:
            self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        changed = False
        for tpl in self.templates:
            try:
                addrs = await resolve(tpl.host, tpl.port)
            except OSError as exc:
                _FAILURES.labels(self.cluster.name, tpl.host).inc()
                log.warning(
                    "backend host name lookup failed; keeping the last answer",
                    extra={"cluster": self.cluster.name, "host": tpl.host, "error": str(exc)},
                )
                continue
            if addrs and addrs != self.answers.get(tpl.origin):
                self.answers[tpl.origin] = addrs
                _ADDRESSES.labels(self.cluster.name, tpl.host).set(len(addrs))
                changed = True
        if changed:
            self._rebuild()

    def _forget_gone(self, gone: set[str]) -> None:
        """Addresses no longer in any answer take their metric series along
        (unless another cluster of this worker still has them)."""
        from expressgateway.upstream import cluster as cluster_mod

        current = cluster_mod.CURRENT
        if current is not None:
            gone -= {ep.name for c in current.by_name.values() for ep in c.endpoints}
        if gone:
            REGISTRY.forget("backend", lambda value: value not in gone)

    def _rebuild(self) -> None:
        cluster = self.cluster
        current = {ep.name: ep for ep in cluster.endpoints}
        endpoints: list[Endpoint] = []
        for ep in cluster.endpoints:
            if is_ip(ep.host) and ep.origin == ep.name:
                endpoints.append(ep)  # configured by address
        for tpl in self.templates:
            addrs = self.answers.get(tpl.origin)
            if not addrs:
                endpoints.append(current.get(tpl.name, tpl))
                continue
            for addr in addrs:
                shown = f"[{addr}]" if ":" in addr else addr
                name = f"{tpl.host}/{shown}:{tpl.port}"
                known = current.get(name)
                if known is not None:
                    endpoints.append(known)
                else:
                    endpoints.append(
                        replace(
                            tpl,
                            host=addr,
                            name=name,
                            origin=tpl.origin,
                            tls_verify_hostname=tpl.tls_verify_hostname or tpl.host,
                            active=0,
                            connections=0,
                            key=(),  # type: ignore[arg-type]  # recomputed in __post_init__
                        )
                    )
        for ep in endpoints:
            if ep.name not in cluster.states:
                origin_state = cluster.states.get(ep.origin)
                state = EndpointState(active_up=origin_state.active_up if origin_state else True)
                cluster.states[ep.name] = state
                ep.healthy = state.active_up
                cluster.show_up(ep)
        cluster.endpoints = endpoints
        cluster.balancer.set_endpoints(endpoints)  # type: ignore[attr-defined]
        self._forget_gone(set(current) - {ep.name for ep in endpoints})
        log.info(
            "backend addresses updated",
            extra={"cluster": cluster.name, "endpoints": [ep.name for ep in endpoints]},
        )
