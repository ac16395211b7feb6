"""Health filtering, panic mode and exclusions are the same for every
policy: an unhealthy endpoint gets no new traffic unless fewer than
panic_threshold percent are healthy, and a retry's exclusions are honoured
while anything else is left."""

from __future__ import annotations

from collections import Counter

import pytest

from expressgateway.upstream.balancer import Balancer, PickContext
from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.policies import POLICIES, Policy, make_balancer
from tests.unit.upstream.helpers import endpoints, keys, pick

PICKS = 2000


def spread(b: Balancer, exclude: tuple[Endpoint, ...] = ()) -> Counter[str]:
    """Picks by many clients (so hash policies spread too)."""
    c: Counter[str] = Counter()
    for ctx in keys(PICKS):
        ctx.exclude = exclude
        ep = b.select(ctx)
        assert ep is not None
        c[ep.name] += 1
    return c


@pytest.mark.parametrize("policy", POLICIES)
def test_unhealthy_endpoint_gets_no_picks(policy: str) -> None:
    eps = endpoints(1, 2, 1, 1)
    b = make_balancer(policy, eps)
    spread(b)  # warm the candidate cache, then flip
    eps[1].healthy = False
    c = spread(b)
    assert c[eps[1].name] == 0
    assert all(c[ep.name] > 0 for ep in eps if ep is not eps[1])


@pytest.mark.parametrize("policy", POLICIES)
def test_recovered_endpoint_gets_picks_again(policy: str) -> None:
    eps = endpoints(1, 1, 1)
    b = make_balancer(policy, eps)
    eps[0].healthy = False
    assert spread(b)[eps[0].name] == 0
    eps[0].healthy = True
    assert spread(b)[eps[0].name] > 0


@pytest.mark.parametrize("policy", POLICIES)
def test_panic_uses_every_endpoint_when_most_are_unhealthy(policy: str) -> None:
    """Three of four down: 25 % healthy is under the 50 % threshold."""
    eps = endpoints(1, 1, 1, 1)
    b = make_balancer(policy, eps)
    for ep in eps[1:]:
        ep.healthy = False
    c = spread(b)
    assert all(c[ep.name] > 0 for ep in eps)


@pytest.mark.parametrize("policy", POLICIES)
def test_half_healthy_is_not_panic(policy: str) -> None:
    eps = endpoints(1, 1, 1, 1)
    b = make_balancer(policy, eps)
    eps[0].healthy = eps[1].healthy = False
    c = spread(b)
    assert c[eps[0].name] == c[eps[1].name] == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_threshold_zero_never_panics(policy: str) -> None:
    eps = endpoints(1, 1, 1, 1)
    b = make_balancer(policy, eps, panic_threshold=0)
    for ep in eps[1:]:
        ep.healthy = False
    assert set(spread(b)) == {eps[0].name}
    eps[0].healthy = False
    assert b.select(pick(source_ip="192.0.2.1")) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_excluded_endpoint_is_avoided(policy: str) -> None:
    eps = endpoints(1, 3, 1)
    b = make_balancer(policy, eps)
    c = spread(b, exclude=(eps[1],))
    assert c[eps[1].name] == 0
    assert c[eps[0].name] > 0 and c[eps[2].name] > 0


@pytest.mark.parametrize("policy", POLICIES)
def test_excluding_everything_still_picks(policy: str) -> None:
    """A retry that has tried every endpoint tries one again rather than
    failing outright."""
    eps = endpoints(1, 1)
    b = make_balancer(policy, eps)
    assert b.select(pick(source_ip="192.0.2.1", exclude=tuple(eps))) is not None


@pytest.mark.parametrize("policy", POLICIES)
def test_no_endpoints_picks_nothing(policy: str) -> None:
    b = make_balancer(policy, [])
    assert b.select() is None
    assert b.select(pick(source_ip="192.0.2.1")) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_added_endpoint_gets_picks(policy: str) -> None:
    eps = endpoints(1, 1)
    b = make_balancer(policy, eps)
    spread(b)
    new = Endpoint("10.0.0.9", 80)
    assert isinstance(b, Policy)
    b.set_endpoints([*eps, new])
    assert spread(b)[new.name] > 0


def test_appending_to_the_endpoint_list_is_noticed() -> None:
    eps = endpoints(1, 1)
    b = make_balancer("round_robin", eps)
    new = Endpoint("10.0.0.9", 80)
    b.endpoints.append(new)
    assert new in {b.select() for _ in range(3)}


def test_candidates_are_healthy_minus_excluded() -> None:
    eps = endpoints(1, 1, 1, 1)
    b = make_balancer("least_request", eps)
    eps[3].healthy = False
    assert b.candidates() == eps[:3]
    assert b.candidates(PickContext(exclude=(eps[0],))) == eps[1:3]
    b.candidates().clear()  # a copy: the cache is not touched
    assert b.candidates() == eps[:3]


def test_health_epoch_moves_only_when_the_flag_flips() -> None:
    ep = Endpoint("10.0.0.1", 80)
    before = Endpoint.health_epoch
    ep.healthy = True
    assert Endpoint.health_epoch == before
    ep.healthy = False
    assert Endpoint.health_epoch == before + 1
    assert ep.healthy is False
    assert Endpoint("10.0.0.2", 80, healthy=False).healthy is False
    assert Endpoint.health_epoch == before + 1
