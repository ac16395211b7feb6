"""Keeping traffic off bad backends, end to end, with real backend processes
that a test kills, restarts, slows down or makes fail its health check
(``Backend`` in test_traffic_routes):

- a backend killed during a run: with the default ``[clusters.retry]``
  connect failures are retried on another backend, so clients see no error
  the retry budget did not refuse;
- outlier detection ejects the dead backend (``outlier_ejections_total``),
  sends it nothing while ejected, and takes it back after the ejection time;
  a backend answering 5xx is ejected too;
- active HTTP health checks take a backend answering 503 out within
  ``fall`` checks and put it back after ``rise``;
- status retries: a GET answered 503 is tried again on the other backend,
  a POST is not; after ``max_retries`` the last answer goes to the client;
  a route's own retry policy replaces the cluster's;
- a POST whose connect failed is replayed, body and all, to another backend;
- ``per_try_timeout_ms`` gives up on a slow backend and tries the other;
- a zero retry budget stops retries (``retry_budget_exhausted_total``);
- the circuit breaker answers 503 with ``Retry-After`` over
  ``max_requests`` (``circuit_breaker_overflows_total``), and over
  ``max_connections`` only when a request needs a new connection;
- an L4 ``tcp`` listener keeps connecting clients while a backend is dead.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import httpx
import pytest

from tests.e2e.test_traffic_routes import Backend, backends
from tests.support.gateway import Gateway, free_port, gateway, wait_port
from tests.support.h1 import ResponseReader, h1_config
from tests.support.l4 import NAMED_ECHO, poll, recv_line

pytestmark = pytest.mark.timeout(120)


def web(port: int, cluster_name: str, name: str = "web", protocol: str = "h1") -> str:
    return (
        f'\n[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n'
        f'protocol = "{protocol}"\ncluster = "{cluster_name}"\n'
    )


def cluster(name: str, addresses: Iterable[str], *, extra: str = "", protocol: str = "h1") -> str:
    """A round-robin ``[[clusters]]`` block; ``extra`` holds its sub-tables."""
    text = f'\n[[clusters]]\nname = "{name}"\n'
    for a in addresses:
        text += f'\n[[clusters.backends]]\naddress = "{a}"\nprotocol = "{protocol}"\n'
    return text + extra


def addresses(bs: Iterable[Backend]) -> list[str]:
    return [b.address for b in bs]


def one(
    port: int, path: str = "/", method: str = "GET", timeout: float = 10
) -> tuple[int, str | None, dict[str, str]]:
    """One request on a new connection: status, x-backend, headers."""
    body = "content-length: 0\r\n" if method == "POST" else ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{body}\r\n".encode())
        r = ResponseReader(method.encode()).read(s, timeout)
    return r.status, r.header("x-backend"), dict(r.headers)


def spread(port: int, n: int) -> Counter[str]:
    """``n`` GETs over one keep-alive client, all 200: answers per backend."""
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            r = client.get(f"http://127.0.0.1:{port}/")
            assert r.status_code == 200, r.text
            seen[r.headers["x-backend"]] += 1
    return seen


def budget_refusals(gw: Gateway, cluster_name: str) -> float:
    return gw.metric("retry_budget_exhausted_total", cluster=cluster_name)


# -- a backend dies during a run ---------------------------------------------------------------


def test_a_backend_killed_mid_run_costs_clients_nothing_the_budget_allowed() -> None:
    admin, port = free_port(), free_port()
    with backends("a", "b", "c") as bs:
        text = h1_config(admin, web(port, "pool"), workers=2, tail=cluster("pool", addresses(bs)))
        with gateway(text, admin_port=admin) as gw:
            stop = threading.Event()
            results: list[tuple[int, str]] = []
            errors: list[str] = []

            def client() -> None:
                with httpx.Client(timeout=10) as c:
                    while not stop.is_set():
                        try:
                            r = c.get(f"http://127.0.0.1:{port}/")
                            results.append((r.status_code, r.headers.get("x-backend", "")))
                        except httpx.HTTPError as exc:
                            errors.append(repr(exc))

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                assert poll(lambda: len(results) >= 300, timeout=15)
                bs[2].kill()
                killed_at = len(results)
                assert poll(lambda: len(results) >= killed_at + 600, timeout=20)
            finally:
                stop.set()
                for t in threads:
                    t.join(15)
            refused = budget_refusals(gw, "pool")
            retried = gw.metric("upstream_retries_total", listener="web")
    failures = [r for r in results if r[0] != 200]
    assert not errors, errors[:5]
    assert len(failures) <= refused, (failures[:10], refused)
    # connect failures were retried, and after the kill c answered nothing
    assert retried >= 1
    assert {name for _, name in results[:killed_at]} == {"a", "b", "c"}
    assert "c" not in {name for _, name in results[killed_at + 50 :]}


def test_outlier_detection_ejects_a_dead_backend_and_takes_it_back() -> None:
    admin, port = free_port(), free_port()
    ejection_ms = 1500
    outlier = (
        "\n[clusters.outlier]\nconsecutive_connect_failures = 2\n"
        f"base_ejection_ms = {ejection_ms}\n"
    )
    with backends("a", "b", "c") as bs:
        c = bs[2]
        text = h1_config(
            admin, web(port, "pool"), tail=cluster("pool", addresses(bs), extra=outlier)
        )
        with gateway(text, admin_port=admin) as gw:
            assert set(spread(port, 30)) == {"a", "b", "c"}
            c.kill()
            # clients see no errors while the dead backend is found out and ejected
            seen: Counter[str] = Counter()
            with httpx.Client(timeout=10) as client:
                for _ in range(30):
                    r = client.get(f"http://127.0.0.1:{port}/")
                    assert r.status_code == 200, r.text
                    seen[r.headers["x-backend"]] += 1
                    if gw.metric("outlier_ejections_total", cluster="pool", backend=c.address):
                        break
            ejected_at = time.monotonic()
            assert set(seen) <= {"a", "b"}
            assert (
                gw.metric(
                    "outlier_ejections_total",
                    cluster="pool",
                    backend=c.address,
                    reason="connect_failure",
                )
                == 1
            ), gw.metrics()
            assert gw.metric("backend_up", cluster="pool", backend=c.address) == 0
            # back on its feet, but still ejected: it gets nothing
            c.start()
            while time.monotonic() < ejected_at + ejection_ms / 1000 * 0.6:
                assert set(spread(port, 10)) == {"a", "b"}
            assert c.count() == 0
            # the ejection ends (the worker checks once a second) and it takes traffic again
            assert poll(
                lambda: gw.metric("backend_up", cluster="pool", backend=c.address) == 1,
                timeout=ejection_ms / 1000 + 3,
            ), gw.metrics()
            assert time.monotonic() - ejected_at >= ejection_ms / 1000
            assert set(spread(port, 30)) == {"a", "b", "c"}
            assert c.count() > 0


def test_outlier_detection_ejects_a_backend_answering_5xx() -> None:
    admin, port = free_port(), free_port()
    outlier = "\n[clusters.outlier]\nconsecutive_5xx = 3\nbase_ejection_ms = 30000\n"
    with backends("a", "b", "c") as bs:
        text = h1_config(
            admin, web(port, "pool"), tail=cluster("pool", addresses(bs), extra=outlier)
        )
        with gateway(text, admin_port=admin) as gw:
            bs[2].set_status(500)
            first = [one(port) for _ in range(12)]
            ejections = gw.metric(
                "outlier_ejections_total",
                cluster="pool",
                backend=bs[2].address,
                reason="consecutive_5xx",
            )
            served = bs[2].count()
            later = [one(port) for _ in range(12)]
            assert bs[2].count() == served
            up = gw.metric("backend_up", cluster="pool", backend=bs[2].address)
    # no status retries configured: the client sees the first three 500s
    assert Counter(f[0] for f in first) == {200: 9, 500: 3}
    assert ejections == 1 and up == 0
    assert {(f[0], f[1]) for f in later} == {(200, "a"), (200, "b")}


# -- active health checks -------------------------------------------------------------------------


def test_active_http_health_check_takes_a_failing_backend_out_and_back() -> None:
    admin, port = free_port(), free_port()
    interval_ms = 200
    check = (
        '\n[clusters.health_check]\nkind = "http"\npath = "/health"\n'
        f"interval_ms = {interval_ms}\njitter_ms = 0\ntimeout_ms = 500\nfall = 2\nrise = 2\n"
    )
    with backends("a", "b") as (a, b):
        text = h1_config(
            admin,
            web(port, "pool"),
            workers=2,
            tail=cluster("pool", [a.address, b.address], extra=check),
        )
        with gateway(text, admin_port=admin) as gw:

            def up(backend: Backend) -> float:
                return gw.metric("backend_up", cluster="pool", backend=backend.address)

            assert poll(
                lambda: (
                    gw.metric(
                        "health_checks_total", cluster="pool", backend=b.address, result="pass"
                    )
                    >= 2
                ),
                timeout=5,
            )
            assert up(a) == up(b) == 2  # both workers
            assert set(spread(port, 20)) == {"a", "b"}

            b.set_health(503)
            failing = time.monotonic()
            assert poll(lambda: up(b) == 0, timeout=5), gw.metrics()
            # two failed checks 200 ms apart, then the verdict reaches both workers
            assert time.monotonic() - failing < 2 * interval_ms / 1000 + 1.0
            assert gw.metric("health_check_up", cluster="pool", backend=b.address) == 0
            assert (
                gw.metric("health_checks_total", cluster="pool", backend=b.address, result="fail")
                >= 2
            )
            assert up(a) == 2
            served = b.count()
            for _ in range(30):
                status, name, _ = one(port)  # new connections: both workers
                assert (status, name) == (200, "a")
            assert b.count() == served

            b.set_health(200)
            passing = time.monotonic()
            assert poll(lambda: up(b) == 2, timeout=5), gw.metrics()
            assert time.monotonic() - passing < 2 * interval_ms / 1000 + 1.0
            assert gw.metric("health_check_up", cluster="pool", backend=b.address) == 1
            assert set(spread(port, 20)) == {"a", "b"}


# -- retries --------------------------------------------------------------------------------------


def test_status_retry_retries_a_get_on_the_other_backend_but_not_a_post() -> None:
    admin, port = free_port(), free_port()
    retry = '\n[clusters.retry]\nretry_on = ["status"]\nretry_statuses = [503]\n'
    with backends("bad", "good") as (bad, good):
        bad.set_health(503)  # /health answers 503 on "bad", 200 on "good"
        text = h1_config(
            admin, web(port, "pool"), tail=cluster("pool", [bad.address, good.address], extra=retry)
        )
        with gateway(text, admin_port=admin) as gw:
            gets = [one(port, "/health") for _ in range(10)]
            get_retries = gw.metric("upstream_retries_total", listener="web", reason="status_503")
            posts = [one(port, "/health", method="POST") for _ in range(10)]
            post_retries = gw.metric("upstream_retries_total", listener="web", reason="status_503")
            # another status is not retried
            other = [one(port, "/status/502") for _ in range(2)]
    assert [g[:2] for g in gets] == [(200, "good")] * 10
    assert get_retries >= 1  # "bad" was tried first at least once, and retried
    statuses = Counter(p[:2] for p in posts)
    assert set(statuses) == {(503, "bad"), (200, "good")}, statuses
    assert post_retries == get_retries
    assert {o[0] for o in other} == {502}


def test_status_retries_stop_at_max_retries_and_pass_the_last_answer_on() -> None:
    admin, port = free_port(), free_port()
    retry = '\n[clusters.retry]\nretry_on = ["status"]\nretry_statuses = [503]\nmax_retries = 2\n'
    with backends("a", "b") as bs:
        text = h1_config(admin, web(port, "pool"), tail=cluster("pool", addresses(bs), extra=retry))
        with gateway(text, admin_port=admin) as gw:
            status, name, _ = one(port, "/status/503")
            retries = gw.metric("upstream_retries_total", listener="web", reason="status_503")
            tries = sum(b.count() for b in bs)
    # 1 + max_retries tries, then the backend's own 503 goes to the client
    assert status == 503 and name in ("a", "b")
    assert retries == 2
    assert tries == 3


@pytest.mark.parametrize("late", [False, True], ids=["body-with-head", "body-later"])
def test_a_post_with_a_body_is_retried_after_a_connect_failure(late: bool) -> None:
    """Connect failures are retried for any method, and the next backend gets
    the body (20 KB) whole: sent with the head it is replayed from the 64 KiB
    buffer; sent 0.3 s after the head it was never read while the gateway
    connected (a failed connect has sent nothing), so it simply follows."""
    admin, port = free_port(), free_port()
    body = b"p" * 20000
    with backends("live") as (live,):
        dead = f"127.0.0.1:{free_port()}"
        text = h1_config(admin, web(port, "pool"), tail=cluster("pool", [dead, live.address]))
        with gateway(text, admin_port=admin) as gw:
            answers = []
            for _ in range(6):
                head = (
                    f"POST /upload HTTP/1.1\r\nHost: localhost\r\n"
                    f"content-length: {len(body)}\r\n\r\n"
                ).encode()
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    if late:
                        s.sendall(head)
                        time.sleep(0.3)
                        s.sendall(body)
                    else:
                        s.sendall(head + body)
                    r = ResponseReader(b"POST").read(s)
                seen = json.loads(r.body)["body"] if r.status == 200 else r.body[:200]
                answers.append((r.status, r.header("x-backend"), seen))
            retried = gw.metric("upstream_retries_total", listener="web")
    for status, name, seen in answers:
        assert (status, name, seen) == (200, "live", len(body)), answers
    assert retried >= 3  # round robin: every other request met the dead backend first


def test_per_try_timeout_retries_a_slow_backend_on_the_other() -> None:
    admin, port = free_port(), free_port()
    retry = "\n[clusters.retry]\nper_try_timeout_ms = 300\n"  # retry_on left at its default
    with backends("slow", "fast") as (slow, fast):
        slow.set_delay(5000)
        text = h1_config(
            admin,
            web(port, "pool"),
            tail=cluster("pool", [slow.address, fast.address], extra=retry),
        )
        with gateway(text, admin_port=admin) as gw:
            timings = []
            for _ in range(6):
                started = time.monotonic()
                status, name, _ = one(port)
                timings.append(time.monotonic() - started)
                assert (status, name) == (200, "fast")
            retried = gw.metric("upstream_retries_total", listener="web", reason="per_try_timeout")
            tried_slow = slow.count()
            # a POST is not tried again: the slow try's 504 is the answer
            posts = []
            for _ in range(4):
                started = time.monotonic()
                posts.append((*one(port, "/", method="POST")[:2], time.monotonic() - started))
            post_retried = gw.metric(
                "upstream_retries_total", listener="web", reason="per_try_timeout"
            )
    assert tried_slow >= 1 and retried == tried_slow
    assert max(timings) < 2.0, timings
    assert {p[:2] for p in posts} == {(504, None), (200, "fast")}, posts
    assert max(p[2] for p in posts) < 2.0, posts
    assert post_retried == retried


def test_an_empty_retry_budget_stops_retries() -> None:
    admin, spent_port, normal_port = free_port(), free_port(), free_port()
    with backends("a") as (a,):
        dead = f"127.0.0.1:{free_port()}"  # nothing listens there
        budget = "\n[clusters.retry]\nbudget_percent = 0\nmin_retry_concurrency = 0\n"
        tail = cluster("spent", [a.address, dead], extra=budget) + cluster(
            "normal", [a.address, dead]
        )
        text = h1_config(
            admin,
            web(spent_port, "spent", name="spent"),
            web(normal_port, "normal", name="normal"),
            tail=tail,
        )
        with gateway(text, admin_port=admin) as gw:
            spent = Counter(one(spent_port)[0] for _ in range(10))
            normal = Counter(one(normal_port)[0] for _ in range(10))
            refused = budget_refusals(gw, "spent")
            spent_retries = gw.metric("upstream_retries_total", listener="spent")
            normal_retries = gw.metric("upstream_retries_total", listener="normal")
            assert budget_refusals(gw, "normal") == 0
    # every request that met the dead backend failed, none was retried
    assert spent[502] >= 1 and spent[502] + spent[200] == 10, spent
    assert refused == spent[502]
    assert spent_retries == 0
    # the same pool with the default budget: the dead backend costs nothing
    assert normal == {200: 10}
    assert normal_retries >= 1


def test_a_route_retry_policy_overrides_the_clusters() -> None:
    admin, port = free_port(), free_port()
    route = (
        '\n[[listeners.routes]]\ncluster = "pool"\npath_prefix = "/retried/"\nprefix_rewrite = "/"\n'
        '\n[listeners.routes.retry]\nretry_on = ["status"]\nretry_statuses = [503]\n'
    )
    with backends("bad", "good") as (bad, good):
        bad.set_health(503)
        text = h1_config(
            admin, web(port, "pool") + route, tail=cluster("pool", [bad.address, good.address])
        )
        with gateway(text, admin_port=admin):
            routed = Counter(one(port, "/retried/health")[:2] for _ in range(8))
            plain = Counter(one(port, "/health")[:2] for _ in range(8))
    assert routed == {(200, "good"): 8}
    # the cluster's own policy (the default) does not retry a 503
    assert plain == {(503, "bad"): 4, (200, "good"): 4}


# -- circuit breaker ------------------------------------------------------------------------------


def test_circuit_breaker_refuses_the_request_over_max_requests() -> None:
    admin, port = free_port(), free_port()
    breaker = "\n[clusters.circuit_breaker]\nmax_requests = 2\nretry_after_s = 7\n"
    with backends("a", "b") as bs:
        text = h1_config(
            admin, web(port, "pool"), tail=cluster("pool", addresses(bs), extra=breaker)
        )
        with gateway(text, admin_port=admin) as gw:
            slow: list[tuple[int, str | None, dict[str, str]]] = []
            threads = [
                threading.Thread(target=lambda: slow.append(one(port, "/slow/2000")))
                for _ in range(2)
            ]
            for t in threads:
                t.start()
            try:
                assert poll(lambda: sum(b.count() for b in bs) == 2, timeout=5)
                started = time.monotonic()
                status, name, headers = one(port)
                refused_in = time.monotonic() - started
                overflows = gw.metric(
                    "circuit_breaker_overflows_total", cluster="pool", limit="max_requests"
                )
            finally:
                for t in threads:
                    t.join(10)
            after = one(port)
    assert (status, name) == (503, None)
    assert headers.get("retry-after") == "7"
    assert refused_in < 1.0
    assert overflows == 1
    assert [s[0] for s in slow] == [200, 200]
    assert after[0] == 200


# -- L4 -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def echo_process(name: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", NAMED_ECHO, str(port), name])
    try:
        wait_port(port)
        yield port, proc
    finally:
        proc.kill()
        proc.wait(5)


def test_l4_tcp_connections_keep_succeeding_while_a_backend_is_dead() -> None:
    admin, port = free_port(), free_port()
    with echo_process("a") as (a, _), echo_process("b") as (b, _), echo_process("c") as (c, c_proc):
        tail = cluster("echo", [f"127.0.0.1:{p}" for p in (a, b, c)], protocol="tcp")
        text = h1_config(admin, web(port, "echo", name="tcp", protocol="tcp"), workers=2, tail=tail)

        def name_of() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(5)
                got = recv_line(s)
                s.sendall(b"ping\n")
                assert recv_line(s) == b"ping"
            return got

        with gateway(text, admin_port=admin) as gw:
            assert set(Counter(name_of() for _ in range(30))) == {b"a", b"b", b"c"}
            c_proc.kill()
            c_proc.wait(5)
            after = Counter(name_of() for _ in range(40))
            connect_errors = gw.metric("backend_connect_errors_total", listener="tcp")
    assert set(after) == {b"a", b"b"}, after
    assert sum(after.values()) == 40
    assert connect_errors >= 1


def test_l4_circuit_breaker_caps_the_connections_relayed_at_once() -> None:
    """On a `tcp` listener a relayed connection is one request in flight:
    with max_requests = 2 a third concurrent client is closed at once
    (counted), and gets through once one of the two has left."""
    admin, port = free_port(), free_port()
    breaker = "\n[clusters.circuit_breaker]\nmax_requests = 2\n"
    with echo_process("a") as (a, _):
        tail = cluster("echo", [f"127.0.0.1:{a}"], protocol="tcp", extra=breaker)
        text = h1_config(admin, web(port, "echo", name="tcp", protocol="tcp"), tail=tail)
        with gateway(text, admin_port=admin) as gw:
            held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
            try:
                for s in held:
                    assert recv_line(s) == b"a"
                with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
                    third.settimeout(5)
                    with pytest.raises((ConnectionError, OSError)):
                        recv_line(third)  # closed without a byte from the backend
                overflows = gw.metric(
                    "circuit_breaker_overflows_total", cluster="echo", limit="max_requests"
                )
                refused = gw.metric(
                    "backend_connect_errors_total", listener="tcp", reason="circuit_open"
                )
            finally:
                held.pop().close()
            # one slot is free again
            assert poll(lambda: _echo_name(port) == b"a")
            held[0].close()
    assert overflows == 1
    assert refused == 1


def _echo_name(port: int) -> bytes | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            return recv_line(s)
    except OSError:
        return None


def test_circuit_breaker_max_connections_still_lets_requests_reuse_idle_connections() -> None:
    """``max_connections`` bounds the upstream connections open: a request
    over it while both are busy is refused, but once they are idle in the
    pool a request reuses one (it opens nothing) and must be served."""
    admin, port = free_port(), free_port()
    breaker = "\n[clusters.circuit_breaker]\nmax_connections = 2\n"
    with backends("a") as bs:
        text = h1_config(
            admin, web(port, "pool"), tail=cluster("pool", addresses(bs), extra=breaker)
        )
        with gateway(text, admin_port=admin) as gw:
            slow: list[tuple[int, str | None, dict[str, str]]] = []
            threads = [
                threading.Thread(target=lambda: slow.append(one(port, "/slow/1000")))
                for _ in range(2)
            ]
            for t in threads:
                t.start()
            try:
                assert poll(lambda: bs[0].count() == 2, timeout=5)
                busy = one(port)
            finally:
                for t in threads:
                    t.join(10)
            assert poll(lambda: gw.metric("pool_idle_connections") == 2, timeout=5)
            idle = [one(port)[:2] for _ in range(3)]
            overflows = gw.metric(
                "circuit_breaker_overflows_total", cluster="pool", limit="max_connections"
            )
    assert [s[0] for s in slow] == [200, 200]
    assert busy[:2] == (503, None) and busy[2].get("retry-after") == "1"
    assert idle == [(200, "a")] * 3, (idle, overflows)
    assert overflows == 1
