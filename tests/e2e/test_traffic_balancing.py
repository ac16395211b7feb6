"""Balancing policies end to end, counted at real backends that say who they
are (``x-backend``; see ``NAMED_HTTP`` in test_traffic_routes):

- weights 1:3 over 400 requests: ``weighted_round_robin`` exactly (one
  worker), ``weighted_random`` within a binomial tolerance;
- ``least_request`` and ``least_connections`` send everything to the idle
  backend while the other holds a slow request;
- ``ring_hash`` and ``maglev`` on ``header:x-user`` keep each user on one
  backend over many connections and two workers, and when a backend dies
  only its users move;
- cookie affinity: the first answer sets ``eg_affinity``, requests carrying
  it stick to one backend in every worker, and when that backend dies the
  request goes elsewhere and gets a new cookie;
- ``source_ip`` affinity on an L4 ``tcp`` listener: every connection from
  127.0.0.1 reaches the same echo backend.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from collections.abc import Iterable

import httpx
import pytest

from tests.e2e.test_traffic_routes import Backend, backends
from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import ResponseReader, h1_config
from tests.support.l4 import named_echo, poll, recv_line

pytestmark = pytest.mark.timeout(120)

COOKIE = re.compile(r"^eg_affinity=([0-9a-f]{16}); Path=/; HttpOnly$")


def cluster(
    name: str,
    members: Iterable[Backend | int],
    *,
    policy: str,
    weights: Iterable[int] = (),
    extra: str = "",
) -> str:
    """A ``[[clusters]]`` block; ``members`` are backends or ports (tcp)."""
    text = f'\n[[clusters]]\nname = "{name}"\npolicy = "{policy}"\n{extra}\n'
    ws = list(weights)
    for i, m in enumerate(members):
        if isinstance(m, Backend):
            text += f'\n[[clusters.backends]]\naddress = "{m.address}"\nprotocol = "h1"\n'
        else:
            text += f'\n[[clusters.backends]]\naddress = "127.0.0.1:{m}"\n'
        if ws:
            text += f"weight = {ws[i]}\n"
    return text


def web(port: int, cluster_name: str, name: str = "web", protocol: str = "h1") -> str:
    return (
        f'\n[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n'
        f'protocol = "{protocol}"\ncluster = "{cluster_name}"\n'
    )


def one(
    port: int, path: str = "/", headers: Iterable[tuple[str, str]] = ()
) -> tuple[int, str | None, list[str]]:
    """One GET on a new connection: status, x-backend, set-cookie values."""
    lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{lines}\r\n".encode())
        r = ResponseReader().read(s)
    return r.status, r.header("x-backend"), r.all("set-cookie")


def spread(port: int, n: int) -> Counter[str]:
    """``n`` GETs over one keep-alive client: answers per backend."""
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            r = client.get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 200, r.text
            seen[r.headers["x-backend"]] += 1
    return seen


def per_backend(gw: Gateway, listener: str, bs: Iterable[Backend]) -> dict[str, float]:
    return {
        b.name: gw.metric(
            "backend_requests_total", listener=listener, backend=b.address, status_class="2xx"
        )
        for b in bs
    }


# -- weights ----------------------------------------------------------------------------------


def test_weighted_round_robin_splits_1_to_3_exactly() -> None:
    admin, port = free_port(), free_port()
    with backends("light", "heavy") as (light, heavy):
        text = h1_config(
            admin,
            web(port, "w"),
            tail=cluster("w", [light, heavy], policy="weighted_round_robin", weights=[1, 3]),
        )
        with gateway(text, admin_port=admin) as gw:
            seen = spread(port, 400)
            counted = per_backend(gw, "web", [light, heavy])
    assert seen == {"light": 100, "heavy": 300}
    assert counted == {"light": 100, "heavy": 300}


def test_weighted_random_splits_1_to_3_within_tolerance() -> None:
    admin, port = free_port(), free_port()
    with backends("light", "heavy") as (light, heavy):
        text = h1_config(
            admin,
            web(port, "w"),
            tail=cluster("w", [light, heavy], policy="weighted_random", weights=[1, 3]),
        )
        with gateway(text, admin_port=admin):
            seen = spread(port, 400)
    # binomial(400, 1/4): mean 100, sd 8.7; +-35 is four sd
    assert sum(seen.values()) == 400
    assert 65 <= seen["light"] <= 135, seen


# -- load-aware policies --------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["least_request", "least_connections"])
def test_load_aware_policy_prefers_the_idle_backend(policy: str) -> None:
    admin, port = free_port(), free_port()
    with backends("a", "b") as bs:
        text = h1_config(admin, web(port, "p"), tail=cluster("p", bs, policy=policy))
        with gateway(text, admin_port=admin):
            # idle: both take traffic
            assert set(spread(port, 20)) == {"a", "b"}
            before = {b.name: b.count() for b in bs}
            answers: list[tuple[int, str | None, list[str]]] = []
            slow = threading.Thread(target=lambda: answers.append(one(port, "/slow/3000")))
            slow.start()
            try:
                # the slow request has reached one backend
                assert poll(lambda: sum(b.count() for b in bs) > sum(before.values()), timeout=5)
                busy = next(b for b in bs if b.count() > before[b.name])
                idle = next(b for b in bs if b is not busy)
                fast = Counter(one(port)[1] for _ in range(30))
            finally:
                slow.join(10)
            after = spread(port, 20)
    assert answers and answers[0][:2] == (200, busy.name)
    # while `busy` holds a request, every new one goes to the idle backend
    assert fast == {idle.name: 30}
    # both take traffic again once it is done
    assert set(after) == {"a", "b"}


# -- consistent hashing -------------------------------------------------------------------------

USERS = [f"user-{i}" for i in range(40)]


@pytest.mark.parametrize("policy", ["ring_hash", "maglev"])
def test_hash_on_a_header_keeps_users_on_one_backend_and_moves_only_a_dead_ones(
    policy: str,
) -> None:
    admin, port = free_port(), free_port()
    with backends("a", "b", "c") as bs:
        text = h1_config(
            admin,
            web(port, "h"),
            workers=2,
            tail=cluster("h", bs, policy=policy, extra='hash_key = "header:x-user"'),
        )
        with gateway(text, admin_port=admin) as gw:
            assert len(gw.processes()) >= 3  # the supervisor and two workers

            def where(user: str) -> str | None:
                status, name, _ = one(port, "/", [("x-user", user)])
                assert status == 200
                return name

            # every request on its own connection: they land on both workers
            first = {u: where(u) for u in USERS}
            for _ in range(3):
                assert {u: where(u) for u in USERS} == first
            owners = Counter(first.values())
            assert set(owners) == {"a", "b", "c"}, owners
            # no key: still served
            assert one(port)[0] == 200

            victim = bs[2]
            victim.kill()
            moved = {u: where(u) for u in USERS}
            again = {u: where(u) for u in USERS}
    for u in USERS:
        if first[u] == victim.name:
            assert moved[u] in ("a", "b"), (u, moved[u])
        else:
            assert moved[u] == first[u], (u, first[u], moved[u])
    # and the moved users stay where they moved to
    assert again == moved


# -- session affinity ---------------------------------------------------------------------------


def test_cookie_affinity_sticks_across_workers_and_moves_when_the_backend_dies() -> None:
    admin, port = free_port(), free_port()
    with backends("a", "b", "c") as bs:
        text = h1_config(
            admin,
            web(port, "s"),
            workers=2,
            tail=cluster(
                "s", bs, policy="round_robin", extra='\n[clusters.affinity]\nmode = "cookie"\n'
            ),
        )
        by_name = {b.name: b for b in bs}
        with gateway(text, admin_port=admin):
            status, sticky, cookies = one(port)
            assert status == 200 and sticky in by_name
            assert len(cookies) == 1, cookies
            m = COOKIE.match(cookies[0])
            assert m, cookies
            value = m.group(1)
            # with the cookie, one backend, on every connection (both workers);
            # it is not set again
            for _ in range(30):
                assert one(port, headers=[("cookie", f"other=1; eg_affinity={value}")]) == (
                    200,
                    sticky,
                    [],
                )
            # without it, round robin hands out other backends and their cookies
            fresh = [one(port) for _ in range(12)]
            assert {f[1] for f in fresh} == {"a", "b", "c"}
            ids = {f[1]: COOKIE.match(f[2][0]).group(1) for f in fresh}  # type: ignore[union-attr]
            assert ids[sticky] == value and len(set(ids.values())) == 3

            # the sticky backend dies: the request is served elsewhere, with a new cookie
            by_name[sticky].kill()
            status, moved, cookies = one(port, headers=[("cookie", f"eg_affinity={value}")])
            assert status == 200 and moved != sticky and moved in by_name
            assert len(cookies) == 1 and COOKIE.match(cookies[0]), cookies
            new_value = COOKIE.match(cookies[0]).group(1)  # type: ignore[union-attr]
            assert new_value == ids[moved]
            for _ in range(20):
                assert one(port, headers=[("cookie", f"eg_affinity={new_value}")]) == (
                    200,
                    moved,
                    [],
                )


def test_source_ip_affinity_on_an_l4_tcp_listener() -> None:
    admin, sticky_port, plain_port = free_port(), free_port(), free_port()
    with named_echo("a") as a, named_echo("b") as b, named_echo("c") as c:
        tail = cluster(
            "sticky",
            [a, b, c],
            policy="round_robin",
            extra='\n[clusters.affinity]\nmode = "source_ip"\n',
        )
        tail += cluster("plain", [a, b, c], policy="round_robin")
        text = h1_config(
            admin,
            web(sticky_port, "sticky", name="sticky", protocol="tcp"),
            web(plain_port, "plain", name="plain", protocol="tcp"),
            workers=2,
            tail=tail,
        )

        def name_of(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                got = recv_line(s)
                s.sendall(b"ping\n")
                assert recv_line(s) == b"ping"
            return got

        with gateway(text, admin_port=admin):
            sticky = Counter(name_of(sticky_port) for _ in range(30))
            plain = Counter(name_of(plain_port) for _ in range(30))
    assert len(sticky) == 1, sticky
    # the same backends without affinity: connections spread
    assert set(plain) == {b"a", b"b", b"c"}, plain
