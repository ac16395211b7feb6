"""Load-aware policies prefer the less loaded endpoint (``active``), and
ewma the one answering faster."""

from __future__ import annotations

from collections import Counter

import pytest

from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.policies import (
    LeastConnections,
    LeastRequest,
    PeakEwma,
    PowerOfTwoChoices,
)
from tests.unit.upstream.helpers import count, endpoints, rng, shares


def loaded(*actives: int, weights: tuple[int, ...] | None = None) -> list[Endpoint]:
    eps = endpoints(*(weights or (1,) * len(actives)))
    for ep, a in zip(eps, actives, strict=True):
        ep.active = a
    return eps


def test_least_connections_picks_the_fewest_active() -> None:
    eps = loaded(5, 0, 5)
    assert set(count(LeastConnections(eps, rng=rng()), 100)) == {eps[1].name}


def test_least_connections_spreads_ties_in_turn() -> None:
    eps = loaded(3, 1, 1, 7)
    c = count(LeastConnections(eps, rng=rng()), 100)
    assert c == {eps[1].name: 50, eps[2].name: 50}


def test_least_connections_balances_concurrent_load() -> None:
    """Requests that start and stay open spread evenly."""
    eps = endpoints(1, 1, 1)
    b = LeastConnections(eps, rng=rng())
    for _ in range(30):
        ep = b.select()
        assert ep is not None
        b.on_start(ep)
    assert [ep.active for ep in eps] == [10, 10, 10]


def test_least_request_picks_the_idle_of_two() -> None:
    eps = loaded(10, 0)
    assert set(count(LeastRequest(eps, rng=rng()), 200)) == {eps[1].name}


def test_least_request_prefers_the_idle_of_three() -> None:
    """Two of three distinct draws include the idle endpoint."""
    eps = loaded(10, 10, 0)
    s = shares(count(LeastRequest(eps, rng=rng()), 6000), eps)
    assert s[2] == pytest.approx(2 / 3, abs=0.03)


def test_least_request_weighs_weight_against_load() -> None:
    """Unequal weights: shares follow weight / (active + 1): 1/1 vs 2/4."""
    eps = loaded(0, 3, weights=(1, 2))
    s = shares(count(LeastRequest(eps, rng=rng()), 20_000), eps)
    assert s[0] == pytest.approx(2 / 3, abs=0.03)


def test_p2c_picks_the_less_loaded() -> None:
    eps = loaded(8, 0)
    assert set(count(PowerOfTwoChoices(eps, rng=rng()), 200)) == {eps[1].name}


def test_p2c_compares_load_per_weight() -> None:
    """Two active on weight 4 is lighter than one on weight 1."""
    eps = loaded(1, 2, weights=(1, 4))
    assert set(count(PowerOfTwoChoices(eps, rng=rng()), 200)) == {eps[1].name}


def test_p2c_prefers_the_idle_of_three() -> None:
    eps = loaded(4, 0, 4)
    s = shares(count(PowerOfTwoChoices(eps, rng=rng()), 6000), eps)
    assert s[1] == pytest.approx(2 / 3, abs=0.03)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serve(b: PeakEwma, clock: Clock, latency: dict[str, float], n: int) -> Counter[str]:
    """``n`` requests one after another, each taking its endpoint's latency."""
    c: Counter[str] = Counter()
    for _ in range(n):
        ep = b.select()
        assert ep is not None
        b.on_start(ep)
        clock.now += latency[ep.name]
        b.on_finish(ep, latency[ep.name], True)
        c[ep.name] += 1
    return c


def test_ewma_shifts_traffic_from_a_ten_times_slower_endpoint() -> None:
    eps = endpoints(1, 1)
    clock = Clock()
    b = PeakEwma(eps, rng=rng(), clock=clock)
    latency = {eps[0].name: 0.010, eps[1].name: 0.100}
    c = serve(b, clock, latency, 2000)
    assert c[eps[1].name] / 2000 < 0.05
    assert eps[1].ewma == pytest.approx(0.1)


def test_ewma_probes_a_slow_endpoint_again_after_a_quiet_spell() -> None:
    """The slow endpoint's cost decays while it is idle (10 s decay)."""
    eps = endpoints(1, 1)
    clock = Clock()
    b = PeakEwma(eps, rng=rng(), clock=clock)
    latency = {eps[0].name: 0.010, eps[1].name: 0.100}
    serve(b, clock, latency, 200)
    assert serve(b, clock, latency, 200)[eps[1].name] == 0
    clock.now += 60
    assert serve(b, clock, latency, 200)[eps[1].name] > 0


def test_ewma_counts_concurrent_load() -> None:
    """Equal latency: requests kept open spread over both endpoints."""
    eps = endpoints(1, 1)
    clock = Clock()
    b = PeakEwma(eps, rng=rng(), clock=clock)
    for ep in eps:
        b.on_start(ep)
        b.on_finish(ep, 0.05, True)
    for _ in range(20):
        picked = b.select()
        assert picked is not None
        b.on_start(picked)
    assert [ep.active for ep in eps] == [10, 10]


def test_ewma_penalizes_failures() -> None:
    eps = endpoints(1, 1)
    clock = Clock()
    b = PeakEwma(eps, rng=rng(), clock=clock)
    for ep in eps:
        b.on_start(ep)
        b.on_finish(ep, 0.02, True)
    b.on_start(eps[0])
    b.on_finish(eps[0], 0.001, False)  # a fast failure is not a fast answer
    assert eps[0].ewma > eps[1].ewma
    assert set(count(b, 100)) == {eps[1].name}


def test_ewma_probes_a_new_endpoint_one_request_at_a_time() -> None:
    eps = endpoints(1, 1)
    clock = Clock()
    b = PeakEwma(eps, rng=rng(), clock=clock)
    latency = {ep.name: 0.02 for ep in eps}
    serve(b, clock, latency, 100)
    new = Endpoint("10.0.0.9", 80)
    b.set_endpoints([*eps, new])
    picked = []
    for _ in range(50):
        ep = b.select()
        assert ep is not None
        b.on_start(ep)  # nothing finishes
        picked.append(ep)
    assert picked.count(new) == 1


def test_ewma_decays_towards_lower_samples() -> None:
    eps = endpoints(1)
    clock = Clock()
    b = PeakEwma(eps, rng=rng(), clock=clock)
    ep = eps[0]
    b.on_start(ep)
    b.on_finish(ep, 1.0, True)
    clock.now += 10.0  # one decay period: weight 1/e on the old value
    b.on_start(ep)
    b.on_finish(ep, 0.0, True)
    assert ep.ewma == pytest.approx(1 / 2.718281828, rel=1e-6)
    b.on_start(ep)
    b.on_finish(ep, 5.0, True)
    assert ep.ewma == 5.0  # a peak is taken at once
