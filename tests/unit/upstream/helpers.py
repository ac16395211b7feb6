"""Endpoints, pick contexts and pick counters for the policy tests."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence

from expressgateway.upstream.balancer import Balancer, PickContext
from expressgateway.upstream.endpoint import Endpoint


def endpoints(*weights: int) -> list[Endpoint]:
    """One endpoint per weight, named 10.0.0.1:80, 10.0.0.2:80, ..."""
    return [Endpoint(host=f"10.0.0.{i + 1}", port=80, weight=w) for i, w in enumerate(weights)]


def rng(seed: int = 1) -> random.Random:
    return random.Random(seed)


def pick(
    source_ip: str = "",
    path: bytes = b"",
    headers: Mapping[bytes, bytes] | None = None,
    cookies: Mapping[bytes, bytes] | None = None,
    exclude: tuple[Endpoint, ...] = (),
) -> PickContext:
    return PickContext(
        source_ip=source_ip,
        path=path,
        header=None if headers is None else headers.get,
        cookie=None if cookies is None else cookies.get,
        exclude=exclude,
    )


def count(b: Balancer, n: int, ctx: PickContext | None = None) -> Counter[str]:
    """Names of the endpoints picked in ``n`` picks (no load reported)."""
    c: Counter[str] = Counter()
    for _ in range(n):
        ep = b.select(ctx)
        assert ep is not None
        c[ep.name] += 1
    return c


def shares(c: Counter[str], eps: Sequence[Endpoint]) -> list[float]:
    total = sum(c.values())
    return [c[ep.name] / total for ep in eps]


def keys(n: int) -> list[PickContext]:
    """``n`` picks with distinct client addresses."""
    return [pick(source_ip=f"192.0.{i // 250}.{i % 250 + 1}") for i in range(n)]
