"""Session affinity: cookie round trips, header and source-address
stickiness, and ids and hashes that every worker process agrees on."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from hashlib import blake2b

import pytest

from expressgateway.upstream.balancer import PickContext
from expressgateway.upstream.policies import (
    Affinity,
    PeakEwma,
    RoundRobin,
    affinity_id,
    hash64,
    make_balancer,
)
from tests.unit.upstream.helpers import endpoints, pick, rng

COOKIE = b"eg_affinity"


def cookie_pick(value: bytes | None) -> PickContext:
    return pick(cookies={} if value is None else {COOKIE: value})


def test_affinity_id_is_16_hex_of_blake2b_of_the_name() -> None:
    ep = endpoints(1)[0]
    assert affinity_id(ep) == blake2b(b"10.0.0.1:80", digest_size=8).hexdigest().encode()
    assert len(affinity_id(ep)) == 16


def test_cookie_round_trip_sticks_to_one_endpoint() -> None:
    eps = endpoints(1, 1, 1)
    b = make_balancer("round_robin", eps, affinity="cookie")
    first = cookie_pick(None)
    ep = b.select(first)
    assert ep is not None
    assert first.set_cookie == affinity_id(ep)
    for _ in range(10):
        again = cookie_pick(first.set_cookie)
        assert b.select(again) is ep
        assert again.set_cookie is None  # the client already has it


def test_cookie_name_is_configurable() -> None:
    eps = endpoints(1, 1, 1)
    b = make_balancer("round_robin", eps, affinity="cookie", affinity_name="srv")
    first = pick(cookies={})
    ep = b.select(first)
    assert first.set_cookie is not None
    assert all(b.select(pick(cookies={b"srv": first.set_cookie})) is ep for _ in range(5))
    other_name = pick(cookies={COOKIE: first.set_cookie})
    b.select(other_name)
    assert other_name.set_cookie is not None  # eg_affinity is not consulted


def test_unhealthy_sticky_endpoint_is_replaced_with_a_new_cookie() -> None:
    eps = endpoints(1, 1, 1)
    b = make_balancer("round_robin", eps, affinity="cookie")
    first = cookie_pick(None)
    ep = b.select(first)
    assert ep is not None and first.set_cookie is not None
    ep.healthy = False
    moved = cookie_pick(first.set_cookie)
    other = b.select(moved)
    assert other is not None and other is not ep
    assert moved.set_cookie == affinity_id(other)
    # and the new cookie sticks
    assert all(b.select(cookie_pick(moved.set_cookie)) is other for _ in range(5))


def test_unknown_cookie_value_gets_a_fresh_pick() -> None:
    eps = endpoints(1, 1)
    b = make_balancer("round_robin", eps, affinity="cookie")
    ctx = cookie_pick(b"not-an-endpoint")
    ep = b.select(ctx)
    assert ep is not None and ctx.set_cookie == affinity_id(ep)


def test_retry_leaves_the_sticky_endpoint() -> None:
    eps = endpoints(1, 1)
    b = make_balancer("round_robin", eps, affinity="cookie")
    ctx = pick(cookies={COOKIE: affinity_id(eps[0])}, exclude=(eps[0],))
    assert b.select(ctx) is eps[1]
    assert ctx.set_cookie == affinity_id(eps[1])


def test_cookie_affinity_without_context_uses_the_policy() -> None:
    eps = endpoints(1, 1)
    b = make_balancer("round_robin", eps, affinity="cookie")
    assert {b.select() for _ in range(4)} == set(eps)


def test_header_affinity_sticks_per_value_and_falls_back_without_it() -> None:
    eps = endpoints(1, 1, 1, 1)
    b = make_balancer("round_robin", eps, affinity="header", affinity_name="X-Session")
    for user in (b"alice", b"bob", b"carol"):
        first = b.select(pick(headers={b"x-session": user}))
        assert all(b.select(pick(headers={b"x-session": user})) is first for _ in range(20))
    users = {b.select(pick(headers={b"x-session": b"u%d" % i})) for i in range(200)}
    assert users == set(eps)
    # no header: the inner round robin, in turn
    turn = [b.select(pick(headers={})) for _ in range(4)]
    assert set(turn) == set(eps)


def test_source_ip_affinity_sticks_and_moves_off_an_unhealthy_endpoint() -> None:
    eps = endpoints(1, 1, 1, 1)
    b = make_balancer("least_request", eps, affinity="source_ip")
    ctx = pick(source_ip="198.51.100.20")
    ep = b.select(ctx)
    assert ep is not None
    assert all(b.select(pick(source_ip="198.51.100.20")) is ep for _ in range(20))
    ep.healthy = False
    other = b.select(ctx)
    assert other is not None and other is not ep
    assert all(b.select(pick(source_ip="198.51.100.20")) is other for _ in range(5))
    ep.healthy = True
    assert b.select(ctx) is ep


def test_affinity_passes_load_feedback_to_the_policy() -> None:
    eps = endpoints(1, 1)
    inner = PeakEwma(eps, rng=rng())
    b = Affinity(inner, "cookie")
    b.on_start(eps[0])
    assert eps[0].active == 1
    b.on_finish(eps[0], 0.25, True)
    assert eps[0].active == 0 and eps[0].ewma == 0.25


def test_affinity_follows_endpoint_changes() -> None:
    eps = endpoints(1, 1)
    b = Affinity(RoundRobin(eps, rng=rng()), "source_ip")
    new = endpoints(1, 1, 1)[2]
    b.set_endpoints([new])
    assert b.endpoints == [new] == b.inner.endpoints
    assert b.select(pick(source_ip="192.0.2.1")) is new
    assert b.select(pick(cookies={})) is new


def test_header_affinity_needs_a_name() -> None:
    with pytest.raises(ValueError, match="header name"):
        make_balancer("round_robin", endpoints(1), affinity="header")


PROBE = """
import json, sys
from expressgateway.upstream.balancer import PickContext
from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.policies import affinity_id, hash64, make_balancer

eps = [Endpoint(host=f"10.0.0.{i + 1}", port=80, weight=1 + i % 3) for i in range(6)]
out = {"ids": [affinity_id(ep).decode() for ep in eps]}
for name in ("ring_hash", "maglev"):
    b = make_balancer(name, eps)
    out[name] = [eps.index(b.select(PickContext(source_ip=f"192.0.2.{i}"))) for i in range(200)]
h = make_balancer("random", eps, affinity="header", affinity_name="x-user")
out["header"] = [
    eps.index(h.select(PickContext(header={b"x-user": b"u%d" % i}.get))) for i in range(200)
]
out["hash"] = hash64(b"abc")
json.dump(out, sys.stdout)
"""


def probe(seed: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def probe_here() -> dict[str, object]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(PROBE, "<probe>", "exec"), {})
    result: dict[str, object] = json.loads(buf.getvalue())
    return result


def test_ids_and_hashes_agree_across_processes() -> None:
    """Workers are separate processes with differently salted str hashes;
    stickiness must not depend on them."""
    here = probe_here()
    assert here["hash"] == hash64(b"abc")
    assert probe("1") == here
    assert probe("2") == here
