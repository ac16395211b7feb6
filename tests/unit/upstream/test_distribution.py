"""How each policy spreads picks when no load is reported: round robin
exactly, the weighted policies 25 % / 75 % for weights 1:3 (within 3 points
over 20,000 picks; ring_hash within 5, its arcs vary by a couple of points)."""

from __future__ import annotations

import pytest

from expressgateway.upstream.policies import (
    LeastConnections,
    LeastRequest,
    Maglev,
    PeakEwma,
    Policy,
    PowerOfTwoChoices,
    Random,
    RingHash,
    RoundRobin,
    WeightedRandom,
    WeightedRoundRobin,
)
from tests.unit.upstream.helpers import count, endpoints, keys, rng, shares

N = 20_000


def test_round_robin_is_exact_and_ignores_weights() -> None:
    eps = endpoints(1, 3, 1)
    b = RoundRobin(eps, rng=rng())
    assert shares(count(b, 3000), eps) == [1 / 3] * 3


def test_round_robin_visits_every_endpoint_once_per_turn() -> None:
    eps = endpoints(1, 1, 1, 1)
    b = RoundRobin(eps, rng=rng())
    for _ in range(5):
        turn = [b.select() for _ in range(4)]
        assert set(map(id, turn)) == set(map(id, eps))


def test_weighted_round_robin_is_exact_over_whole_periods() -> None:
    eps = endpoints(1, 3)
    c = count(WeightedRoundRobin(eps, rng=rng()), N)
    assert [c[ep.name] for ep in eps] == [N // 4, 3 * N // 4]


def test_weighted_round_robin_is_smooth_like_nginx() -> None:
    """nginx's example: weights 5:1:1 give a a b a c a a, not a a a a a b c."""
    eps = endpoints(5, 1, 1)
    live = WeightedRoundRobin(eps, rng=rng())
    live.max_schedule_work = 0  # step the algorithm live
    names = {id(ep): "abc"[i] for i, ep in enumerate(eps)}
    seq = "".join(names[id(live.select())] for _ in range(14))
    assert seq == "aabacaa" * 2
    scheduled = WeightedRoundRobin(eps, rng=rng(7))
    cyc = "".join(names[id(scheduled.select())] for _ in range(7))
    assert cyc in "aabacaa" * 2  # the same cycle, from a per-process start


def test_random_ignores_weights() -> None:
    eps = endpoints(1, 3)
    s = shares(count(Random(eps, rng=rng()), N), eps)
    assert s[0] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    "cls",
    [
        WeightedRoundRobin,
        WeightedRandom,
        LeastConnections,
        LeastRequest,
        PowerOfTwoChoices,
        PeakEwma,
    ],
)
def test_weighted_policy_splits_one_to_three(cls: type[Policy]) -> None:
    eps = endpoints(1, 3)
    s = shares(count(cls(eps, rng=rng()), N), eps)
    assert s[0] == pytest.approx(0.25, abs=0.03)
    assert s[1] == pytest.approx(0.75, abs=0.03)


@pytest.mark.parametrize("cls", [WeightedRandom, PowerOfTwoChoices, LeastRequest, PeakEwma])
def test_weighted_policy_spreads_over_many_endpoints(cls: type[Policy]) -> None:
    eps = endpoints(1, 2, 3, 4)
    s = shares(count(cls(eps, rng=rng()), N), eps)
    assert s == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.03)


@pytest.mark.parametrize(("cls", "tol"), [(Maglev, 0.03), (RingHash, 0.05)])
def test_consistent_hash_splits_clients_by_weight(cls: type[Policy], tol: float) -> None:
    eps = endpoints(1, 3)
    b = cls(eps, rng=rng())
    c: dict[str, int] = {ep.name: 0 for ep in eps}
    for ctx in keys(N):
        ep = b.select(ctx)
        assert ep is not None
        c[ep.name] += 1
    assert c[eps[0].name] / N == pytest.approx(0.25, abs=tol)


@pytest.mark.parametrize(("cls", "tol"), [(Maglev, 0.03), (RingHash, 0.05)])
def test_consistent_hash_spreads_equal_endpoints_evenly(cls: type[Policy], tol: float) -> None:
    eps = endpoints(*[1] * 5)
    b = cls(eps, rng=rng())
    c: dict[str, int] = {ep.name: 0 for ep in eps}
    for ctx in keys(N):
        ep = b.select(ctx)
        assert ep is not None
        c[ep.name] += 1
    for ep in eps:
        assert c[ep.name] / N == pytest.approx(0.2, abs=tol)
