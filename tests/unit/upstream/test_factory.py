"""make_balancer: names, combinations and what it refuses."""

from __future__ import annotations

from typing import get_args

import pytest

from expressgateway.config.traffic import AffinityMode, Policy
from expressgateway.upstream.balancer import Balancer
from expressgateway.upstream.policies import (
    AFFINITY_MODES,
    HASH_KEY_FORMS,
    POLICIES,
    Affinity,
    Maglev,
    RingHash,
    make_balancer,
)
from expressgateway.upstream.policies import Policy as PolicyClass
from tests.unit.upstream.helpers import endpoints, pick


def test_names_match_the_config_schema() -> None:
    assert set(POLICIES) == set(get_args(Policy))
    assert set(AFFINITY_MODES) == set(get_args(AffinityMode))
    assert HASH_KEY_FORMS == ("source_ip", "header:NAME", "cookie:NAME", "path")


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_is_built_and_picks(policy: str) -> None:
    eps = endpoints(1, 2)
    b = make_balancer(policy, eps, panic_threshold=30)
    assert isinstance(b, PolicyClass) and isinstance(b, Balancer)
    assert type(b).name == policy
    assert b.panic_threshold == 30
    assert b.select() in eps
    assert b.select(pick(source_ip="192.0.2.1")) in eps


@pytest.mark.parametrize("affinity", AFFINITY_MODES)
def test_affinity_wraps_the_policy(affinity: str) -> None:
    b = make_balancer("p2c", endpoints(1, 1), affinity=affinity, affinity_name="x-a")
    assert isinstance(b, Affinity)
    assert b.inner.name == "p2c" and b.mode == affinity


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_key_reaches_hash_policies(policy: str) -> None:
    b = make_balancer(policy, endpoints(1, 1), hash_key="header:x-user")
    assert isinstance(b, RingHash | Maglev)
    assert b.key_of(pick(headers={b"x-user": b"u"})) == b"u"
    default = make_balancer(policy, endpoints(1, 1))
    assert isinstance(default, RingHash | Maglev)
    assert default.key_of(pick(source_ip="192.0.2.9")) == b"192.0.2.9"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "fastest"}, "unknown balancing policy"),
        ({"policy": "round_robin", "hash_key": "path"}, "only used by ring_hash and maglev"),
        ({"policy": "maglev", "hash_key": "query:x"}, "hash key"),
        ({"policy": "random", "affinity": "ip"}, "affinity"),
        ({"policy": "random", "panic_threshold": 101}, "0-100"),
        ({"policy": "random", "affinity": "header"}, "header name"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    policy = str(kwargs.pop("policy"))
    with pytest.raises(ValueError, match=message):
        make_balancer(policy, endpoints(1), **kwargs)  # type: ignore[arg-type]
