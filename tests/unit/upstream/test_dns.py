"""Host-named backends: every address is an endpoint; failures keep the last answer."""

from __future__ import annotations

import asyncio

import pytest

from expressgateway.config.model import BackendConfig, ClusterConfig
from expressgateway.proxy.context import BACKEND_REQUESTS
from expressgateway.upstream import dns
from expressgateway.upstream.cluster import Cluster


def cluster_of(*addresses: str) -> Cluster:
    backends = tuple(
        BackendConfig(address=a, host=a.rsplit(":", 1)[0], port=int(a.rsplit(":", 1)[1]))
        for a in addresses
    )
    cfg = ClusterConfig(name="c", backends=backends)
    return Cluster.build("c", cfg, backends)


def test_each_address_becomes_an_endpoint_keeping_the_name_for_tls_and_health(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {"api.internal": ["10.0.0.1", "10.0.0.2"]}

    async def fake(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(dns, "resolve", fake)
    cluster = cluster_of("api.internal:8080", "127.0.0.1:9000")
    resolver = dns.ClusterResolver(cluster, 30.0)
    asyncio.run(resolver.refresh())
    names = [ep.name for ep in cluster.endpoints]
    assert names == ["127.0.0.1:9000", "api.internal/10.0.0.1:8080", "api.internal/10.0.0.2:8080"]
    first = cluster.endpoints[1]
    assert (first.host, first.sni, first.origin) == (
        "10.0.0.1",
        "api.internal",
        "api.internal:8080",
    )
    assert cluster.balancer.endpoints == cluster.endpoints

    # a verdict for the configured backend reaches every address
    cluster.set_active("api.internal:8080", False)
    assert [ep.healthy for ep in cluster.endpoints] == [True, False, False]

    # one address leaves, one arrives: the survivor keeps its identity and state
    answers["api.internal"] = ["10.0.0.2", "10.0.0.3"]
    kept = cluster.endpoints[2]
    asyncio.run(resolver.refresh())
    assert [ep.name for ep in cluster.endpoints][1:] == [
        "api.internal/10.0.0.2:8080",
        "api.internal/10.0.0.3:8080",
    ]
    assert cluster.endpoints[1] is kept
    assert cluster.endpoints[2].healthy is False  # inherits the name's verdict


def test_an_address_that_leaves_takes_its_metric_series_along(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {"pay.internal": ["10.1.0.1", "10.1.0.2"]}

    async def fake(host: str, port: int) -> list[str]:
        return answers[host]

    monkeypatch.setattr(dns, "resolve", fake)
    cluster = cluster_of("pay.internal:8443")
    resolver = dns.ClusterResolver(cluster, 30.0)
    asyncio.run(resolver.refresh())
    family = BACKEND_REQUESTS
    for ep in cluster.endpoints:
        family.labels("web", ep.name, "2xx").inc()
    answers["pay.internal"] = ["10.1.0.2"]
    asyncio.run(resolver.refresh())
    shown = {key[1] for key in family.children if key[1].startswith("pay.internal/")}
    assert shown == {"pay.internal/10.1.0.2:8443"}


def test_a_failed_lookup_keeps_the_last_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    async def flaky(host: str, port: int) -> list[str]:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("temporary failure in name resolution")
        return ["10.0.0.9"]

    monkeypatch.setattr(dns, "resolve", flaky)
    cluster = cluster_of("db.internal:5432")
    resolver = dns.ClusterResolver(cluster, 30.0)
    asyncio.run(resolver.refresh())
    before = list(cluster.endpoints)
    asyncio.run(resolver.refresh())
    assert cluster.endpoints == before
    assert [ep.host for ep in before] == ["10.0.0.9"]


def test_localhost_resolves_with_the_system_resolver() -> None:
    addrs = asyncio.run(dns.resolve("localhost", 80))
    assert "127.0.0.1" in addrs or "::1" in addrs
