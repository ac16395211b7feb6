"""Balancing policies: which endpoint takes the next connection or request.

Every policy is a :class:`~expressgateway.upstream.balancer.Balancer` and
picks among the same candidates: the healthy endpoints, or all of them when
fewer than ``panic_threshold`` percent are healthy, minus ``pick.exclude``
(unless that would leave none). The candidate list is cached and rebuilt only
when a ``healthy`` flag flips (:attr:`Endpoint.health_epoch`) or the
endpoint list changes, so a pick costs one integer comparison before the
policy's own work.

Weights (below 1 count as 1) are honoured by every policy except
``round_robin`` and ``random``; ``least_connections`` uses them only to
break ties.

Everything a hash depends on is deterministic (blake2b of endpoint names and
request keys, never Python's per-process salted ``hash()``), so every worker
process, and every gateway instance with the same backends, maps a client to
the same endpoint.

Cost of a pick, n candidates: round_robin, random, O(1); weighted_random,
p2c, ewma, ring_hash, O(log n); weighted_round_robin O(1) from a precomputed
schedule (O(n) for very large weight sums); least_connections and
least_request with unequal weights, O(n); maglev O(1). A ``maglev`` table is
built when the endpoint list changes (10-60 ms for 65537 slots); health
flips do not rebuild ring or table (see :class:`RingHash`).
"""

from __future__ import annotations

import math
import random as _random
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from hashlib import blake2b
from heapq import heapify, heapreplace
from itertools import accumulate
from typing import ClassVar

from expressgateway.upstream.balancer import Balancer, PickContext
from expressgateway.upstream.endpoint import Endpoint

POLICIES = (
    "round_robin",
    "weighted_round_robin",
    "random",
    "weighted_random",
    "least_connections",
    "least_request",
    "p2c",
    "ewma",
    "ring_hash",
    "maglev",
)
#: what ``hash_key`` may be (NAME: a header or cookie name)
HASH_KEY_FORMS = ("source_ip", "header:NAME", "cookie:NAME", "path")
AFFINITY_MODES = ("cookie", "header", "source_ip")
DEFAULT_AFFINITY_COOKIE = "eg_affinity"

#: reads a hash key (or None: missing) from a pick
KeyFn = Callable[[PickContext | None], bytes | None]


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (the same in every process, unlike ``hash()``)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def affinity_id(ep: Endpoint) -> bytes:
    """The opaque affinity cookie value naming ``ep``: 16 hex digits of
    blake2b of its name, so every worker and restart agrees on it."""
    return blake2b(ep.name.encode(), digest_size=8).hexdigest().encode()


def parse_hash_key(spec: str) -> KeyFn:
    """A reader for one of :data:`HASH_KEY_FORMS`; ValueError otherwise.
    An empty value counts as missing."""
    if spec == "source_ip":

        def source_ip(pick: PickContext | None) -> bytes | None:
            return pick.source_ip.encode() if pick is not None and pick.source_ip else None

        return source_ip
    if spec == "path":

        def path(pick: PickContext | None) -> bytes | None:
            return pick.path if pick is not None and pick.path else None

        return path
    kind, _, name = spec.partition(":")
    if kind == "header" and name:
        hname = name.lower().encode()

        def header(pick: PickContext | None) -> bytes | None:
            if pick is None or pick.header is None:
                return None
            return pick.header(hname) or None

        return header
    if kind == "cookie" and name:
        cname = name.encode()

        def cookie(pick: PickContext | None) -> bytes | None:
            if pick is None or pick.cookie is None:
                return None
            return pick.cookie(cname) or None

        return cookie
    raise ValueError(f"hash key {spec!r}: write one of {', '.join(HASH_KEY_FORMS)}")


def _weight(ep: Endpoint) -> int:
    w = ep.weight
    return w if w > 0 else 1


class Policy(Balancer):
    """Shared candidate cache. Subclasses implement :meth:`select` over
    :meth:`_live` (the cached candidate list) and may hook
    :meth:`_membership_changed` and :meth:`_candidates_changed`.

    Replace the endpoint list with :meth:`set_endpoints`, also after
    changing a weight (assigning a new list to ``endpoints`` or appending to
    it is noticed too; replacing an element in place is not)."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        super().__init__(endpoints)
        if panic_threshold is not None:
            self.panic_threshold = panic_threshold
        self._rng = rng if rng is not None else _random.Random()
        self._rand = self._rng.random
        self._epoch = -1
        self._seen: list[Endpoint] | None = None
        self._n = -1
        #: the candidates (healthy, or all in panic), in endpoint order
        self._cands: list[Endpoint] = []
        #: per candidate: weight, and the running sum of weights
        self._w: list[int] = []
        self._cum: list[int] = []
        self._total = 0
        self._uniform = True
        #: per endpoint index: is it a candidate; and the candidates as a set
        self._ok: list[bool] = []
        self._members: set[Endpoint] = set()

    # -- candidate cache ---------------------------------------------------

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = list(endpoints)
        self._live()

    def _live(self) -> list[Endpoint]:
        eps = self.endpoints
        if self._epoch != Endpoint.health_epoch or self._seen is not eps or self._n != len(eps):
            self._refresh()
        return self._cands

    def _refresh(self) -> None:
        eps = self.endpoints
        self._epoch = Endpoint.health_epoch
        changed = self._seen is not eps or self._n != len(eps)
        if changed:
            self._seen = eps
            self._n = len(eps)
            self._membership_changed()
        healthy = [ep for ep in eps if ep.healthy]
        if len(healthy) * 100 < len(eps) * self.panic_threshold:
            healthy = list(eps)
        if not changed and healthy == self._cands:
            return
        self._cands = healthy
        self._w = [_weight(ep) for ep in healthy]
        self._cum = list(accumulate(self._w))
        self._total = self._cum[-1] if healthy else 0
        self._uniform = len(set(self._w)) <= 1
        self._members = members = set(healthy)
        self._ok = [ep in members for ep in eps]
        self._candidates_changed()

    def is_candidate(self, ep: Endpoint, pick: PickContext | None = None) -> bool:
        """May ``ep`` take this pick (healthy or panic, and not excluded)?"""
        self._live()
        return ep in self._members and (pick is None or ep not in self._excluded(pick))

    def _share(self, endpoints: list[Endpoint]) -> None:
        """Use ``endpoints`` (the same endpoints as now) as the list itself,
        so that another balancer's membership changes reach this one."""
        same = endpoints == self.endpoints
        self.endpoints = endpoints
        if same and self._seen is not None:
            self._seen = endpoints

    def _membership_changed(self) -> None:
        """The endpoint list changed (rebuild rings and tables)."""

    def _candidates_changed(self) -> None:
        """The candidate list changed (reset per-candidate state)."""

    def _excluded(self, pick: PickContext | None) -> tuple[Endpoint, ...]:
        """``pick.exclude`` if it leaves a candidate, else ``()``."""
        if pick is None or not pick.exclude:
            return ()
        ex = pick.exclude
        for ep in self._cands:
            if ep not in ex:
                return ex
        return ()

    def _view(self, pick: PickContext | None) -> tuple[list[Endpoint], list[int], int]:
        """Candidates, cumulative weights and total, after exclusions (the
        cached lists unless the pick excludes some)."""
        cands = self._live()
        ex = self._excluded(pick)
        if not ex:
            return cands, self._cum, self._total
        rest = [ep for ep in cands if ep not in ex]
        cum = list(accumulate(_weight(ep) for ep in rest))
        return rest, cum, cum[-1]

    def candidates(self, pick: PickContext | None = None) -> list[Endpoint]:
        cands = self._live()
        ex = self._excluded(pick)
        return [ep for ep in cands if ep not in ex] if ex else list(cands)

    # -- shared picks ------------------------------------------------------

    def _weighted_random(self, pick: PickContext | None) -> Endpoint | None:
        cands, cum, total = self._view(pick)
        if not cands:
            return None
        return cands[bisect_right(cum, self._rand() * total)]

    def _weighted_pair(self, cands: list[Endpoint], cum: list[int], total: int) -> tuple[int, int]:
        """Two distinct candidate indexes, drawn in proportion to weight
        (the second without replacement). Needs two or more candidates."""
        rand = self._rand
        i = bisect_right(cum, rand() * total)
        lo = cum[i - 1] if i else 0
        wi = cum[i] - lo
        u = rand() * (total - wi)
        if u >= lo:
            u += wi
        n = len(cands)
        j = min(bisect_right(cum, u), n - 1)
        if j == i:  # float rounding at a boundary
            j = i + 1 if i + 1 < n else i - 1
        return i, j


class RoundRobin(Policy):
    """Candidates in turn, ignoring weights; each process starts at a random
    place so the workers do not all begin with the first endpoint."""

    name = "round_robin"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        super().__init__(endpoints, panic_threshold=panic_threshold, rng=rng)
        self._next = self._rng.randrange(1 << 16)

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands = self._live()
        if pick is not None and pick.exclude:
            cands = self._view(pick)[0]
        if not cands:
            return None
        i = self._next
        self._next = i + 1
        return cands[i % len(cands)]


class WeightedRoundRobin(Policy):
    """Smooth weighted round robin as nginx does it: every candidate's
    current weight grows by its weight, the largest is picked and loses the
    total. Weights 5:1:1 give a, a, b, a, c, a, a rather than five a's in a
    row. The sequence repeats every sum(weights)/gcd picks; it is computed
    once per candidate set when that period is small enough
    (``max_schedule_work``), and stepped live (O(n)) otherwise."""

    name = "weighted_round_robin"
    #: period * candidates above which the schedule is not precomputed
    #: (building it costs about 0.15 µs per unit, 10 ms at the limit)
    max_schedule_work = 65_536

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        self._schedule: list[Endpoint] = []
        self._pos = 0
        self._current: list[int] = []
        super().__init__(endpoints, panic_threshold=panic_threshold, rng=rng)

    def _candidates_changed(self) -> None:
        w = self._w
        self._current = [0] * len(w)
        self._schedule = []
        self._pos = 0
        if not w:
            return
        g = math.gcd(*w)
        period = self._total // g
        if period * len(w) <= self.max_schedule_work:
            reduced = [x // g for x in w]
            current = [0] * len(w)
            cands = self._cands
            self._schedule = [cands[_smooth_step(current, reduced, ())] for _ in range(period)]
            # each worker process starts at its own place in the cycle
            self._pos = self._rng.randrange(period)

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands = self._live()
        if not cands:
            return None
        ex = self._excluded(pick)
        schedule = self._schedule
        if schedule:
            n = len(schedule)
            for _ in range(n):
                ep = schedule[self._pos]
                self._pos = (self._pos + 1) % n
                if not ex or ep not in ex:
                    return ep
            return None  # unreachable: some candidate is not excluded
        skip = tuple(i for i, ep in enumerate(cands) if ep in ex) if ex else ()
        return cands[_smooth_step(self._current, self._w, skip)]


def _smooth_step(current: list[int], weights: list[int], skip: tuple[int, ...]) -> int:
    """One step of nginx's smooth weighted round robin; returns the index."""
    best = -1
    top = 0
    total = 0
    for i, w in enumerate(weights):
        if skip and i in skip:
            continue
        c = current[i] + w
        current[i] = c
        total += w
        if best < 0 or c > top:
            best = i
            top = c
    current[best] -= total
    return best


class Random(Policy):
    """A uniformly random candidate, ignoring weights."""

    name = "random"

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands = self._live()
        if pick is not None and pick.exclude:
            cands = self._view(pick)[0]
        if not cands:
            return None
        return cands[int(self._rand() * len(cands))]


class WeightedRandom(Policy):
    """A random candidate drawn in proportion to its weight (binary search
    over the cumulative weights)."""

    name = "weighted_random"

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        return self._weighted_random(pick)


class LeastConnections(Policy):
    """The candidate with the fewest ``active`` connections or requests.
    Several tied for fewest (always, before any load is reported) share by
    smooth weighted round robin among themselves, as nginx's least_conn
    does, so equal load spreads in proportion to weight."""

    name = "least_connections"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        self._current: list[int] = []
        super().__init__(endpoints, panic_threshold=panic_threshold, rng=rng)

    def _candidates_changed(self) -> None:
        self._current = [0] * len(self._cands)

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands = self._live()
        if not cands:
            return None
        ex = self._excluded(pick)
        best = -1
        least = 0
        many = False
        for i, ep in enumerate(cands):
            if ex and ep in ex:
                continue
            a = ep.active
            if best < 0 or a < least:
                best = i
                least = a
                many = False
            elif a == least:
                many = True
        if not many:
            return cands[best]
        current = self._current
        weights = self._w
        top = best
        top_c = 0
        total = 0
        for i in range(best, len(cands)):
            ep = cands[i]
            if ep.active != least or (ex and ep in ex):
                continue
            w = weights[i]
            c = current[i] + w
            current[i] = c
            total += w
            if i == best or c > top_c:
                top = i
                top_c = c
        current[top] -= total
        return cands[top]


class LeastRequest(Policy):
    """Envoy's least request. Equal weights: the less loaded (fewer
    ``active``) of two distinct random candidates. Unequal weights: a random
    candidate drawn in proportion to ``weight / (active + 1)`` (Envoy's
    active_request_bias 1.0), which is O(n)."""

    name = "least_request"

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands = self._view(pick)[0]
        n = len(cands)
        if n <= 1:
            return cands[0] if cands else None
        rand = self._rand
        if cands is self._cands:
            uniform = self._uniform
        else:
            w0 = _weight(cands[0])
            uniform = all(_weight(ep) == w0 for ep in cands)
        if uniform:
            i = int(rand() * n)
            j = int(rand() * (n - 1))
            if j >= i:
                j += 1
            a, b = cands[i], cands[j]
            return b if b.active < a.active else a
        eff = 0.0
        for ep in cands:
            eff += _weight(ep) / (ep.active + 1)
        r = rand() * eff
        for ep in cands:
            r -= _weight(ep) / (ep.active + 1)
            if r < 0:
                return ep
        return cands[-1]


class PowerOfTwoChoices(Policy):
    """Two distinct candidates drawn in proportion to weight; the one with
    less ``active / weight`` wins, the first drawn on a tie (so before any
    load is reported the split follows the weights)."""

    name = "p2c"

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands, cum, total = self._view(pick)
        if len(cands) <= 1:
            return cands[0] if cands else None
        i, j = self._weighted_pair(cands, cum, total)
        a, b = cands[i], cands[j]
        return b if b.active * _weight(a) < a.active * _weight(b) else a


class PeakEwma(Policy):
    """Linkerd's / Finagle's peak-EWMA with power of two choices: two
    candidates drawn by weight, the lower ``cost = ewma * (active + 1) /
    weight`` wins.

    ``ewma`` is each endpoint's response time, fed by :meth:`on_finish`: a
    sample above it replaces it at once (peak), a lower one pulls it down
    with weight ``1 - exp(-elapsed / decay)``. A failure counts as
    ``failure_penalty`` times the larger of its duration, the current ewma
    and ``failure_floor`` seconds. Read for a pick, ewma decays towards 0
    with the time since the endpoint last answered, so an idle slow endpoint
    is probed again after a while. An endpoint never measured costs 0 while
    idle and is shunned while its first request is outstanding: a new one is
    probed at once, one request at a time."""

    name = "ewma"
    #: cost of an unmeasured endpoint with requests in flight
    unmeasured_busy = 1e9

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
        decay: float = 10.0,
        failure_penalty: float = 4.0,
        failure_floor: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(endpoints, panic_threshold=panic_threshold, rng=rng)
        self.decay = decay
        self.failure_penalty = failure_penalty
        self.failure_floor = failure_floor
        self.clock = clock

    def cost(self, ep: Endpoint, now: float) -> float:
        e = ep.ewma
        if e < 0:
            return 0.0 if ep.active <= 0 else self.unmeasured_busy + ep.active
        age = now - ep.ewma_stamp
        if age > 0:
            e *= math.exp(-age / self.decay)
        return e * (ep.active + 1) / _weight(ep)

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        cands, cum, total = self._view(pick)
        if len(cands) <= 1:
            return cands[0] if cands else None
        i, j = self._weighted_pair(cands, cum, total)
        a, b = cands[i], cands[j]
        now = self.clock()
        return b if self.cost(b, now) < self.cost(a, now) else a

    def on_finish(self, ep: Endpoint, seconds: float, ok: bool) -> None:
        ep.active -= 1
        now = self.clock()
        old = ep.ewma
        if not ok:
            seconds = max(seconds, old, self.failure_floor) * self.failure_penalty
        if old < 0 or seconds >= old:
            ep.ewma = seconds
        else:
            w = math.exp(-max(now - ep.ewma_stamp, 0.0) / self.decay)
            ep.ewma = old * w + seconds * (1.0 - w)
        ep.ewma_stamp = now


class _Hashing(Policy):
    """A consistent hash of ``hash_key`` (default: the client address);
    a pick without the key is a weighted random one."""

    needs_context = True

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        hash_key: str | None = None,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        self.key_of = parse_hash_key(hash_key or "source_ip")
        super().__init__(endpoints, panic_threshold=panic_threshold, rng=rng)

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        key = self.key_of(pick)
        if key is None:
            return self._weighted_random(pick)
        return self.lookup(hash64(key), pick)

    def lookup(self, h: int, pick: PickContext | None = None) -> Endpoint | None:
        raise NotImplementedError


class RingHash(_Hashing):
    """Ketama-style consistent hash ring. Each endpoint gets
    ``vnodes_per_weight`` points per unit of weight at blake2b hashes of its
    name (points ``#0, #1, ...``, so an endpoint's points depend on nothing
    else); a key goes to the first point at or after its hash (binary
    search). A ring of more than ``max_ring`` points is scaled down (every
    endpoint keeps at least one point); only then does adding or removing an
    endpoint also move a few keys between the others.

    The ring holds every endpoint, healthy or not, and is rebuilt only when
    the endpoint list changes (a few ms per thousand points). A key whose point belongs to an endpoint that
    is not a candidate (unhealthy, excluded) walks on to the next point that
    is: only that endpoint's keys move, spread in proportion to weight, and
    they come back when it recovers."""

    name = "ring_hash"
    vnodes_per_weight = 100
    max_ring = 65536

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        hash_key: str | None = None,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
    ) -> None:
        self._points: list[int] = []
        self._owners: list[int] = []
        super().__init__(endpoints, hash_key=hash_key, panic_threshold=panic_threshold, rng=rng)
        self._live()

    def _membership_changed(self) -> None:
        eps = self.endpoints
        weights = [_weight(ep) for ep in eps]
        total = sum(weights)
        per_weight = min(float(self.vnodes_per_weight), self.max_ring / max(total, 1))
        ring: list[tuple[int, int]] = []
        for idx, (ep, w) in enumerate(zip(eps, weights, strict=True)):
            count = max(1, round(w * per_weight))
            name = ep.name.encode()
            for block in range((count + 3) // 4):
                d = blake2b(b"%s#%d" % (name, block), digest_size=32).digest()
                for k in range(min(4, count - 4 * block)):
                    ring.append((int.from_bytes(d[8 * k : 8 * k + 8], "little"), idx))
        ring.sort()
        self._points = [p for p, _ in ring]
        self._owners = [i for _, i in ring]

    def lookup(self, h: int, pick: PickContext | None = None) -> Endpoint | None:
        self._live()
        points = self._points
        if not points:
            return None
        owners = self._owners
        ok = self._ok
        eps = self.endpoints
        ex = self._excluded(pick)
        n = len(points)
        i = bisect_left(points, h)
        for _ in range(n):
            if i >= n:
                i = 0
            o = owners[i]
            if ok[o] and not (ex and eps[o] in ex):
                return eps[o]
            i += 1
        return None


class Maglev(_Hashing):
    """Google's Maglev hashing: a lookup table of ``table_size`` (prime)
    slots filled from each endpoint's own permutation of them (offset and
    skip from blake2b of its name); a key's hash modulo the size is its
    slot, an O(1) pick. Weighted: endpoints take turns filling in
    proportion to weight (stride scheduling), so an endpoint's share of
    slots is its share of the weight.

    The table holds every endpoint and is rebuilt only when the endpoint
    list changes; a build is about table_size * ln(table_size) probes of a
    Python loop, 10-60 ms for 65537 slots (2 to 1000 endpoints). A key
    whose slot belongs to an endpoint that is not a candidate (unhealthy,
    excluded) moves to the next slot that is; other endpoints keep all their
    keys."""

    name = "maglev"

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        hash_key: str | None = None,
        panic_threshold: int | None = None,
        rng: _random.Random | None = None,
        table_size: int = 65537,
    ) -> None:
        if table_size < 2 or any(table_size % p == 0 for p in range(2, math.isqrt(table_size) + 1)):
            raise ValueError(f"maglev table_size {table_size} is not a prime")
        self.table_size = table_size
        self._table: list[int] = []
        super().__init__(endpoints, hash_key=hash_key, panic_threshold=panic_threshold, rng=rng)
        self._live()

    def _membership_changed(self) -> None:
        self._table = maglev_table(
            [(ep.name, _weight(ep)) for ep in self.endpoints], self.table_size
        )

    def lookup(self, h: int, pick: PickContext | None = None) -> Endpoint | None:
        self._live()
        table = self._table
        if not table:
            return None
        ok = self._ok
        eps = self.endpoints
        i = h % self.table_size
        o = table[i]
        ex = self._excluded(pick)
        if ok[o] and not (ex and eps[o] in ex):
            return eps[o]
        m = len(table)
        for _ in range(m):
            i += 1
            if i >= m:
                i = 0
            o = table[i]
            if ok[o] and not (ex and eps[o] in ex):
                return eps[o]
        return None


def maglev_table(members: Sequence[tuple[str, int]], size: int = 65537) -> list[int]:
    """The Maglev lookup table for (name, weight) members: ``size`` slots,
    each the index of a member. Deterministic in the names and weights (and
    their order only where stride turns tie)."""
    n = len(members)
    if n == 0:
        return []
    pos: list[int] = []
    skip: list[int] = []
    for name, _ in members:
        d = blake2b(name.encode(), digest_size=16).digest()
        pos.append(int.from_bytes(d[:8], "little") % size)
        skip.append(int.from_bytes(d[8:], "little") % (size - 1) + 1)
    table = [-1] * size
    weights = [max(1, w) for _, w in members]
    # stride scheduling: the member whose next turn (k / weight) is earliest
    # fills its next preferred free slot; equal weights take plain turns
    turns = [(1 / w, i, 1) for i, w in enumerate(weights)]
    heapify(turns)
    for _ in range(size):
        _, i, k = turns[0]
        c = pos[i]
        s = skip[i]
        while table[c] >= 0:
            c += s
            if c >= size:
                c -= size
        table[c] = i
        c += s
        pos[i] = c - size if c >= size else c
        heapreplace(turns, ((k + 1) / weights[i], i, k + 1))
    return table


class Affinity(Balancer):
    """Session affinity around any policy (``inner``).

    ``cookie``: a request whose cookie ``name`` holds the :func:`affinity_id`
    of a candidate endpoint goes there; otherwise ``inner`` picks and
    ``pick.set_cookie`` carries the id for the response to set.
    ``header`` / ``source_ip``: the value of header ``name`` / the client
    address is hashed onto a ring (:class:`RingHash`) over the same
    endpoints; without one, ``inner`` picks. An unhealthy sticky endpoint is
    replaced (and, for cookies, a new cookie set). Load feedback goes to
    ``inner``."""

    needs_context = True

    def __init__(self, inner: Policy, mode: str, name: str | None = None) -> None:
        if mode not in AFFINITY_MODES:
            raise ValueError(f"affinity {mode!r}: write one of {', '.join(AFFINITY_MODES)}")
        self.inner = inner
        self.mode = mode
        self.panic_threshold = inner.panic_threshold
        self._ring: RingHash | None = None
        self._cookie = b""
        self._ids: dict[Endpoint, bytes] = {}
        self._by_id: dict[bytes, Endpoint] = {}
        self._seen: list[Endpoint] | None = None
        self._n = -1
        if mode == "cookie":
            self._cookie = (name or DEFAULT_AFFINITY_COOKIE).encode()
        else:
            if mode == "header" and not name:
                raise ValueError("header affinity needs a header name")
            spec = "source_ip" if mode == "source_ip" else f"header:{name}"
            self._ring = RingHash(
                inner.endpoints, hash_key=spec, panic_threshold=inner.panic_threshold
            )
            self._ring._share(inner.endpoints)

    @property  # type: ignore[override]
    def endpoints(self) -> list[Endpoint]:
        return self.inner.endpoints

    @endpoints.setter
    def endpoints(self, endpoints: list[Endpoint]) -> None:
        self.inner.endpoints = endpoints
        if self._ring is not None:
            self._ring.endpoints = endpoints

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = list(endpoints)

    def candidates(self, pick: PickContext | None = None) -> list[Endpoint]:
        return self.inner.candidates(pick)

    def on_start(self, ep: Endpoint) -> None:
        self.inner.on_start(ep)

    def on_finish(self, ep: Endpoint, seconds: float, ok: bool) -> None:
        self.inner.on_finish(ep, seconds, ok)

    def id_of(self, ep: Endpoint) -> bytes:
        self._index()
        return self._ids.get(ep) or affinity_id(ep)

    def _index(self) -> None:
        eps = self.inner.endpoints
        if self._seen is not eps or self._n != len(eps):
            self._seen = eps
            self._n = len(eps)
            self._ids = {ep: affinity_id(ep) for ep in eps}
            self._by_id = {v: ep for ep, v in self._ids.items()}

    def select(self, pick: PickContext | None = None) -> Endpoint | None:
        ring = self._ring
        if ring is not None:
            key = ring.key_of(pick)
            return self.inner.select(pick) if key is None else ring.lookup(hash64(key), pick)
        if pick is None:
            return self.inner.select(pick)
        inner = self.inner
        if pick.cookie is not None:
            value = pick.cookie(self._cookie)
            if value:
                self._index()
                ep = self._by_id.get(value)
                if ep is not None and inner.is_candidate(ep, pick):
                    return ep
        ep = inner.select(pick)
        if ep is not None:
            pick.set_cookie = self.id_of(ep)
        return ep


_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        RoundRobin,
        WeightedRoundRobin,
        Random,
        WeightedRandom,
        LeastConnections,
        LeastRequest,
        PowerOfTwoChoices,
        PeakEwma,
        RingHash,
        Maglev,
    )
}


def make_balancer(
    policy: str,
    endpoints: Sequence[Endpoint],
    *,
    hash_key: str | None = None,
    affinity: str | None = None,
    affinity_name: str | None = None,
    panic_threshold: int = 50,
) -> Balancer:
    """The balancer for a cluster. ``hash_key`` (one of
    :data:`HASH_KEY_FORMS`, default ``source_ip``) only with ``ring_hash`` and
    ``maglev``; ``affinity`` (``cookie``, ``header``, ``source_ip``) wraps
    the policy, ``affinity_name`` being the cookie name (default
    ``eg_affinity``) or the header name (required). ValueError on unknown
    names or a bad combination."""
    cls = _CLASSES.get(policy)
    if cls is None:
        raise ValueError(f"unknown balancing policy {policy!r}: write one of {', '.join(POLICIES)}")
    if not 0 <= panic_threshold <= 100:
        raise ValueError(f"panic_threshold {panic_threshold} is outside 0-100")
    inner: Policy
    if issubclass(cls, _Hashing):
        inner = cls(endpoints, hash_key=hash_key, panic_threshold=panic_threshold)
    elif hash_key is not None:
        raise ValueError(f"hash_key is only used by ring_hash and maglev, not {policy}")
    else:
        inner = cls(endpoints, panic_threshold=panic_threshold)
    if affinity is None:
        return inner
    return Affinity(inner, affinity, affinity_name)
