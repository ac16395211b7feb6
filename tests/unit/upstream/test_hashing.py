"""Consistent hashing (ring_hash, maglev): a key keeps its endpoint, and a
backend leaving or failing moves about 1/N of the keys, only its own."""

from __future__ import annotations

import pytest

from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.policies import (
    Maglev,
    RingHash,
    _Hashing,
    hash64,
    maglev_table,
    parse_hash_key,
)
from tests.unit.upstream.helpers import endpoints, pick, rng

N_KEYS = 10_000
HASHES = [hash64(b"key-%d" % i) for i in range(N_KEYS)]
CLASSES = [RingHash, Maglev]


def mapping(b: _Hashing) -> list[Endpoint]:
    out = []
    for h in HASHES:
        ep = b.lookup(h)
        assert ep is not None
        out.append(ep)
    return out


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("n", [5, 10])
def test_removing_a_backend_moves_about_one_nth(cls: type[_Hashing], n: int) -> None:
    eps = endpoints(*[1] * n)
    b = cls(eps)
    before = mapping(b)
    gone = eps[n // 2]
    b.set_endpoints([ep for ep in eps if ep is not gone])
    after = mapping(b)
    moved = sum(x is not y for x, y in zip(before, after, strict=True))
    assert moved / N_KEYS < 1.5 / n
    others_moved = sum(x is not y and x is not gone for x, y in zip(before, after, strict=True))
    if cls is RingHash:
        assert others_moved == 0
    else:  # maglev refills a few slots of the others too
        assert others_moved / N_KEYS < 0.01


@pytest.mark.parametrize("cls", CLASSES)
def test_adding_a_backend_takes_about_one_nth(cls: type[_Hashing]) -> None:
    eps = endpoints(*[1] * 9)
    b = cls(eps)
    before = mapping(b)
    new = Endpoint("10.0.0.99", 80)
    b.set_endpoints([*eps, new])
    after = mapping(b)
    moved = [y for x, y in zip(before, after, strict=True) if x is not y]
    assert len(moved) / N_KEYS < 1.5 / 10
    assert sum(y is new for y in moved) / len(moved) > 0.95


@pytest.mark.parametrize("cls", CLASSES)
def test_unhealthy_backend_moves_only_its_keys_and_they_come_back(cls: type[_Hashing]) -> None:
    eps = endpoints(*[1] * 8)
    b = cls(eps)
    before = mapping(b)
    down = eps[3]
    down.healthy = False
    during = mapping(b)
    for x, y in zip(before, during, strict=True):
        assert y is not down
        assert x is down or x is y
    # the orphaned keys spread over the others rather than piling on one
    orphans = [y for x, y in zip(before, during, strict=True) if x is down]
    assert len(orphans) / N_KEYS < 1.5 / 8
    assert max(orphans.count(ep) for ep in eps) < len(orphans) * 0.4
    down.healthy = True
    assert mapping(b) == before


@pytest.mark.parametrize("cls", CLASSES)
def test_a_client_keeps_its_endpoint(cls: type[_Hashing]) -> None:
    b = cls(endpoints(1, 1, 1, 1), rng=rng())
    for ip in ("192.0.2.1", "192.0.2.2", "2001:db8::1"):
        first = b.select(pick(source_ip=ip))
        assert all(b.select(pick(source_ip=ip)) is first for _ in range(20))


@pytest.mark.parametrize("cls", CLASSES)
def test_header_key_ignores_the_client_address(cls: type[_Hashing]) -> None:
    b = cls(endpoints(1, 1, 1, 1), hash_key="header:X-User")
    eps = {
        b.select(pick(source_ip=f"192.0.2.{i}", headers={b"x-user": b"alice"})) for i in range(50)
    }
    assert len(eps) == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_cookie_and_path_keys(cls: type[_Hashing]) -> None:
    by_cookie = cls(endpoints(1, 1, 1, 1), hash_key="cookie:sid")
    by_path = cls(endpoints(1, 1, 1, 1), hash_key="path")
    for i in range(50):
        ip = f"192.0.2.{i}"
        assert by_cookie.select(pick(source_ip=ip, cookies={b"sid": b"s1"})) is by_cookie.select(
            pick(cookies={b"sid": b"s1"})
        )
        assert by_path.select(pick(source_ip=ip, path=b"/a/b")) is by_path.select(
            pick(path=b"/a/b")
        )
    spread = {by_path.select(pick(path=b"/p/%d" % i)) for i in range(200)}
    assert len(spread) == 4


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_key_falls_back_to_a_spread_pick(cls: type[_Hashing]) -> None:
    eps = endpoints(1, 1, 1)
    b = cls(eps, hash_key="header:x-user", rng=rng())
    assert {b.select(pick(headers={})) for _ in range(200)} == set(eps)
    assert {b.select() for _ in range(200)} == set(eps)  # L4: no pick context


def test_hash_key_forms() -> None:
    ctx = pick(
        source_ip="192.0.2.7",
        path=b"/x",
        headers={b"x-user": b"u"},
        cookies={b"Sid": b"c"},
    )
    assert parse_hash_key("source_ip")(ctx) == b"192.0.2.7"
    assert parse_hash_key("path")(ctx) == b"/x"
    assert parse_hash_key("header:X-User")(ctx) == b"u"
    assert parse_hash_key("cookie:Sid")(ctx) == b"c"
    assert parse_hash_key("cookie:sid")(ctx) is None  # cookie names keep their case
    assert parse_hash_key("header:x-other")(ctx) is None
    assert parse_hash_key("source_ip")(None) is None
    assert parse_hash_key("header:x-user")(pick(headers={b"x-user": b""})) is None


@pytest.mark.parametrize("spec", ["", "ip", "header:", "cookie", "query:x"])
def test_bad_hash_key_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="hash key"):
        parse_hash_key(spec)


def test_maglev_table_shares_follow_weights() -> None:
    table = maglev_table([("a", 1), ("b", 3), ("c", 4)], 65537)
    counts = [table.count(i) for i in range(3)]
    assert sum(counts) == 65537
    for c, w in zip(counts, (1, 3, 4), strict=True):
        assert abs(c - 65537 * w / 8) <= 2


def test_maglev_table_size_must_be_prime() -> None:
    with pytest.raises(ValueError, match="prime"):
        Maglev(endpoints(1), table_size=65536)
    assert len(maglev_table([("a", 1), ("b", 1)], 251)) == 251


def test_ring_points_follow_weights_and_the_cap() -> None:
    b = RingHash(endpoints(1, 3))
    assert len(b._points) == 400
    big = RingHash(endpoints(10_000, 1))
    assert len(big._points) <= RingHash.max_ring + 1
    assert big._owners.count(1) >= 1
