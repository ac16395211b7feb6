"""Deadlines and upstream failures on an ``h1`` listener, with small
timeouts: slowloris, slow POST, keep-alive idle, head and total timeouts,
and what the client gets when the upstream refuses, hangs or is missing."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import (
    ResponseReader,
    closed_by_peer,
    connect,
    get,
    h1_config,
    h1_listener,
    recv_until_close,
    request,
)
from tests.support.l4 import poll
from tests.support.processes import origin

TIMEOUTS = "header_timeout_ms = 500\nbody_timeout_ms = 500\nhead_timeout_ms = 500\n"


@dataclass
class Rig:
    gw: Gateway
    port: int
    total_port: int  # total_timeout_ms = 1000, head timeout long
    origin: int


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with origin() as op:
        admin, port, total = free_port(), free_port(), free_port()
        cfg = h1_config(
            admin,
            h1_listener(port, [op], name="short", http=TIMEOUTS),
            h1_listener(
                total,
                [op],
                name="total",
                http="total_timeout_ms = 1000\nhead_timeout_ms = 30000\nbody_timeout_ms = 30000",
            ),
        )
        with gateway(cfg, admin_port=admin) as gw:
            yield Rig(gw, port, total, op)


# -- client-side deadlines ----------------------------------------------------------------


def test_slowloris_partial_head_is_closed_and_counted(rig: Rig) -> None:
    reaped = rig.gw.metric("security_slowloris_reaped_total", listener="short")
    with connect(rig.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: gateway.test\r\nX-Slow: ")
        start = time.monotonic()
        assert closed_by_peer(s, 5)
        elapsed = time.monotonic() - start
    assert 0.3 < elapsed < 2.5, elapsed
    assert rig.gw.metric("security_slowloris_reaped_total", listener="short") == reaped + 1


def test_slowloris_trickling_bytes_does_not_extend_the_header_deadline(rig: Rig) -> None:
    with connect(rig.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        closed = False
        for i in range(40):  # one header byte every 100 ms, for up to 4 s
            try:
                s.sendall(b"X-%d: 1\r\n" % i)
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        if not closed:
            closed = closed_by_peer(s, 1)
        elapsed = time.monotonic() - start
    assert closed
    assert elapsed < 2.5, elapsed


def test_idle_keep_alive_connection_is_closed_without_counting_slowloris(rig: Rig) -> None:
    reaped = rig.gw.metric("security_slowloris_reaped_total", listener="short")
    with connect(rig.port) as s:
        s.sendall(get(rig.port, "/"))
        assert ResponseReader().read(s).status == 200
        assert closed_by_peer(s, 3)
    assert rig.gw.metric("security_slowloris_reaped_total", listener="short") == reaped


def test_connection_that_never_sends_is_closed(rig: Rig) -> None:
    with connect(rig.port) as s:
        assert closed_by_peer(s, 3)


def test_slow_post_gets_408_and_is_counted(rig: Rig) -> None:
    counted = rig.gw.metric("security_slow_post_total", listener="short")
    with connect(rig.port) as s:
        s.sendall(
            b"POST /sink HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        start = time.monotonic()
        resp = ResponseReader().read(s)
        elapsed = time.monotonic() - start
        assert closed_by_peer(s, 3)
    assert resp.status == 408
    assert 0.3 < elapsed < 2.5, elapsed
    assert rig.gw.metric("security_slow_post_total", listener="short") == counted + 1


def test_body_progress_rearms_the_body_timeout(rig: Rig) -> None:
    """Ten bytes every 200 ms for 2 s: never 500 ms without progress."""
    with connect(rig.port) as s:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 100\r\n\r\n")
        for _ in range(10):
            time.sleep(0.2)
            s.sendall(b"0123456789")
        resp = ResponseReader().read(s)
    assert resp.status == 200
    assert b'"bytes": 100' in resp.body


def test_origin_slow_to_answer_gets_504_after_head_timeout(rig: Rig) -> None:
    start = time.monotonic()
    resp = request(rig.port, get(rig.port, "/slow-head/3000"))
    elapsed = time.monotonic() - start
    assert resp.status == 504
    assert elapsed < 2, elapsed
    assert rig.gw.metric("http_request_errors_total", listener="short", reason="head_timeout") >= 1


def test_total_timeout_before_the_response_head_is_504(rig: Rig) -> None:
    start = time.monotonic()
    resp = request(rig.total_port, get(rig.total_port, "/slow-head/4000"), timeout=8)
    elapsed = time.monotonic() - start
    assert resp.status == 504
    assert 0.7 < elapsed < 2.5, elapsed


def test_total_timeout_after_the_response_head_cuts_the_body(rig: Rig) -> None:
    """/drip/100/50 needs 5 s; after 1 s the body is cut, never completed."""
    start = time.monotonic()
    with connect(rig.total_port) as s:
        s.sendall(get(rig.total_port, "/drip/100/50"))
        resp = ResponseReader().read(s)
    elapsed = time.monotonic() - start
    assert resp.status == 200
    assert not resp.complete
    assert 0 < len(resp.body) < 100
    assert elapsed < 3, elapsed


# -- upstream failures ------------------------------------------------------------------------


def test_connect_refused_is_502_at_once() -> None:
    admin, port, dead = free_port(), free_port(), free_port()
    with gateway(h1_config(admin, h1_listener(port, [dead])), admin_port=admin) as gw:
        start = time.monotonic()
        resp = request(port, get(port), timeout=5)
        elapsed = time.monotonic() - start
        assert resp.status == 502
        assert elapsed < 1, elapsed
        assert gw.metric("upstream_errors_total", reason="connect_refused") >= 1
        assert gw.metric("http_requests_total", status_class="5xx") == 1


def test_connect_timeout_is_504() -> None:
    """A backend whose accept queue is full drops our SYNs: the connect hangs."""
    backlog = socket.socket()
    backlog.bind(("127.0.0.1", 0))
    backlog.listen(0)
    fillers: list[socket.socket] = []
    try:
        target = backlog.getsockname()
        for _ in range(4):  # fill the accept queue (backlog 0 admits one or two)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(target)
            fillers.append(f)
        time.sleep(0.2)
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [target[1]]), runtime="connect_timeout_ms = 300")
        with gateway(cfg, admin_port=admin) as gw:
            start = time.monotonic()
            resp = request(port, get(port), timeout=5)
            elapsed = time.monotonic() - start
            assert resp.status == 504
            assert elapsed < 2.5, elapsed
            assert gw.metric("upstream_errors_total", reason="connect_timeout") >= 1
    finally:
        for f in fillers:
            f.close()
        backlog.close()


def test_listener_without_backends_answers_503_with_a_json_reason() -> None:
    admin, port = free_port(), free_port()
    with gateway(h1_config(admin, h1_listener(port, [])), admin_port=admin):
        resp = request(port, get(port), timeout=5)
    assert resp.status == 503
    assert resp.header("content-type") == "application/json"
    assert resp.body == b'{"status":503,"reason":"no_backend"}\n'


def test_upstream_reset_before_the_response_is_502() -> None:
    """An origin that closes without answering (nothing reused: no retry)."""
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [srv.getsockname()[1]]))
        with gateway(cfg, admin_port=admin):
            c = connect(port)
            c.sendall(get(port))
            conn, _ = srv.accept()
            conn.recv(65536)
            conn.close()
            resp = ResponseReader().read(c, timeout=5)
            c.close()
        assert resp.status == 502
    finally:
        srv.close()


def test_listener_drain_timeout_overrides_the_runtime_one(origin_port: int) -> None:
    """A listener's own ``drain_timeout_ms`` (8 s) outlasts ``[runtime]``'s
    (1 s): a response still streaming at SIGTERM completes."""
    port, admin = free_port(), free_port()
    listener = (
        f'\n[[listeners]]\nname = "slow"\naddress = "127.0.0.1:{port}"\nprotocol = "h1"\n'
        f"drain_timeout_ms = 8000\n"
        f'\n[[listeners.backends]]\naddress = "127.0.0.1:{origin_port}"\nprotocol = "h1"\n'
    )
    with gateway(h1_config(admin, listener), admin_port=admin) as gw:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /slow-body/2500 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            data = head + recv_until_close(sock, timeout=10)
        assert data.endswith(b"\r\n\r\ndone"), data[-200:]


def test_drain_deadline_cuts_what_is_left_and_counts_it(origin_port: int) -> None:
    """A response slower than the drain budget (1 s): the request in flight
    is answered until the deadline, then cut, and the cut is logged."""
    port, admin = free_port(), free_port()
    cfg = h1_config(admin, h1_listener(port, [origin_port]))
    with gateway(cfg, admin_port=admin) as gw:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /slow-body/4000 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert gw.proc is not None
            started = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            data = head + recv_until_close(sock, timeout=10)
            took = time.monotonic() - started
            # the supervisor is still up: it counted the cut connection
            assert gw.metric("drain_aborted_connections_total") == 1
            assert gw.metric("worker_drains_total", outcome="cut") == 1
        assert not data.endswith(b"done")  # cut: the body never completed
        assert 0.9 < took < 3.5  # not before the 1 s budget, not long after
        assert gw.proc.wait(10) == 0
        logs = gw.logs()  # complete now that the gateway has stopped
    cut = [
        json.loads(line)
        for line in logs.splitlines()
        if '"drain deadline passed; aborting connections"' in line
    ]
    assert [r["left"] for r in cut] == [1], logs[-2000:]


def test_drain_serves_the_first_request_of_a_connection_that_had_not_sent_it(
    origin_port: int,
) -> None:
    """A connection accepted before SIGTERM whose request comes during the
    drain (it may have been in flight) is served, with `Connection: close`;
    a keep-alive connection idle after its request is closed at once."""
    port, admin = free_port(), free_port()
    cfg = h1_config(admin, h1_listener(port, [origin_port])).replace(
        "drain_timeout_ms = 1000", "drain_timeout_ms = 5000\ndrain_jitter_ms = 0"
    )
    with gateway(cfg, admin_port=admin) as gw:
        fresh = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            assert ResponseReader().read(idle, timeout=5).status == 200
            time.sleep(0.3)  # both accepted by the worker
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            assert poll(lambda: "received SIGTERM" in gw.logs(), 5)
            assert recv_until_close(idle, timeout=5) == b""  # closed by the drain
            time.sleep(0.3)  # the drain has reached the workers
            fresh.sendall(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            resp = ResponseReader().read(fresh, timeout=5)
        finally:
            fresh.close()
            idle.close()
    assert resp.status == 200
    assert resp.header("connection") == "close"
