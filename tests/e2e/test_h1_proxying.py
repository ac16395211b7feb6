"""HTTP/1.1 proxying through an ``h1`` listener, seen with real clients
(curl, httpx, raw sockets) against the edge-case Python origin and nginx:
methods, both body framings in both directions, trailers, 1xx responses,
close-delimited bodies, upstream keep-alive reuse and retry, and the
per-connection request cap."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import (
    MiB,
    OriginWatch,
    ResponseReader,
    ScriptedBackend,
    closed_by_peer,
    connect,
    get,
    h1_config,
    h1_listener,
    read_head,
    request,
)
from tests.support.h2 import RawH2
from tests.support.l4 import poll
from tests.support.processes import nginx_origin, origin

NGINX_FILE = os.urandom(MiB + 123)


@dataclass
class Rig:
    gw: Gateway
    port: int  # h1 listener -> the Python origin
    nginx_port: int  # h1 listener -> nginx
    alt_port: int  # h1 listener -> the Python origin, with [listeners.alt_svc]
    origin: int
    nginx: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with origin() as op, nginx_origin({"file.bin": NGINX_FILE}) as np:
        admin, port, nport, aport = free_port(), free_port(), free_port(), free_port()
        alt = "\n[listeners.alt_svc]\nh3_port = 443\nmax_age = 3600\n"
        cfg = h1_config(
            admin,
            h1_listener(port, [op], name="py"),
            h1_listener(nport, [np], name="nginx"),
            h1_listener(aport, [op], name="alt", extra=alt),
        )
        with gateway(cfg, admin_port=admin) as gw:
            yield Rig(gw, port, nport, aport, op, np)


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


# -- methods and framing ------------------------------------------------------------------


def test_curl_get_is_answered_by_the_origin(rig: Rig) -> None:
    out = curl("-i", rig.url("/"))
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"hello from origin"


def test_head_response_has_length_but_no_body_and_connection_stays_usable(rig: Rig) -> None:
    with connect(rig.port) as s:
        reader = ResponseReader(b"HEAD")
        s.sendall(b"HEAD /size/1000 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        head = reader.read(s)
        assert head.status == 200
        assert head.header("content-length") == "1000"
        # no body bytes followed: the next response on the socket is the GET's
        reader.expect(b"GET")
        s.sendall(get(rig.port, "/"))
        nxt = reader.read(s)
        assert (nxt.status, nxt.body) == (200, b"hello from origin")


def test_content_length_request_body_reaches_origin_intact(rig: Rig) -> None:
    body = os.urandom(3 * MiB + 7)
    with httpx.Client() as client:
        resp = client.post(rig.url("/sink"), content=body)
    assert resp.status_code == 200
    assert resp.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_chunked_request_body_reaches_origin_intact(rig: Rig) -> None:
    pieces = [os.urandom(n) for n in (1, 4096, 70_000, 3)]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    raw = b"POST /sink HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n" + wire
    resp = request(rig.port, raw)
    assert resp.status == 200
    data = b"".join(pieces)
    assert json.loads(resp.body) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_httpx_streamed_upload_is_echoed_back_chunked(rig: Rig) -> None:
    pieces = [os.urandom(50_000) for _ in range(8)]
    with httpx.Client() as client:
        resp = client.post(rig.url("/echo"), content=iter(pieces))  # no length: chunked
    assert resp.status_code == 200
    assert resp.headers["transfer-encoding"] == "chunked"
    assert resp.content == b"".join(pieces)


def test_content_length_response_keeps_its_length(rig: Rig) -> None:
    resp = request(rig.port, get(rig.port, "/size/100000"))
    assert resp.status == 200
    assert resp.header("content-length") == "100000"
    assert resp.header("transfer-encoding") is None
    assert resp.body == b"x" * 100000


def test_chunked_response_is_relayed_chunked(rig: Rig) -> None:
    resp = request(rig.port, get(rig.port, "/chunked/100000"))
    assert resp.status == 200
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body == b"x" * 100000
    assert resp.complete


def test_http10_client_gets_a_close_delimited_body_for_a_chunked_response(rig: Rig) -> None:
    with connect(rig.port) as s:
        s.sendall(b"GET /chunked/5000 HTTP/1.0\r\nHost: gateway.test\r\n\r\n")
        resp = ResponseReader().read(s)
        assert resp.status == 200
        assert resp.header("transfer-encoding") is None  # HTTP/1.0 knows no chunked
        assert resp.body == b"x" * 5000
        assert closed_by_peer(s, 5)


def test_trailers_reach_a_client_that_sent_te_trailers(rig: Rig) -> None:
    resp = request(rig.port, get(rig.port, "/trailers", "TE: trailers\r\n"))
    assert resp.status == 200
    assert resp.body == b"hello"
    assert ("x-checksum", "abc123") in resp.trailers
    assert ("grpc-status", "0") in resp.trailers


def test_curl_with_te_trailers_sees_the_trailers(rig: Rig) -> None:
    out = curl("-i", "-H", "TE: trailers", rig.url("/trailers"))
    assert out.returncode == 0, out.stderr
    assert b"x-checksum: abc123" in out.stdout


def test_trailers_are_dropped_for_a_client_that_did_not_ask(rig: Rig) -> None:
    """RFC 9110 §6.5.1: without ``TE: trailers`` the body still arrives whole."""
    resp = request(rig.port, get(rig.port, "/trailers"))
    assert (resp.status, resp.body, resp.complete) == (200, b"hello", True)
    assert resp.trailers == []


def test_early_hints_103_is_forwarded_before_the_final_response(rig: Rig) -> None:
    with connect(rig.port) as s:
        s.sendall(get(rig.port, "/early-hints"))
        reader = ResponseReader()
        final = reader.read(s)
    assert [r.status for r in reader.informational] == [103]
    assert reader.informational[0].header("link") == "</style.css>; rel=preload"
    assert (final.status, final.body) == (200, b"after hints")


def test_expect_100_continue_gets_100_before_the_body_is_sent(rig: Rig) -> None:
    """RFC 9110 §10.1.1: a client that sends ``Expect: 100-continue`` waits
    for ``100 Continue`` before the body; the gateway must relay the
    origin's 100 (or send its own) rather than leave the client waiting."""
    with connect(rig.port, timeout=3) as s:
        s.sendall(
            b"POST /continue HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        reader = ResponseReader()
        s.settimeout(3)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 100"), first
        s.sendall(b"hello")
        final = reader.read(s)  # the 100 was consumed above: only the final answer is left
    assert final.status == 200
    assert json.loads(final.body)["bytes"] == 5


def test_curl_large_post_with_expect_does_not_stall(rig: Rig, tmp_path: Path) -> None:
    """curl sends ``Expect: 100-continue`` for bodies over 1 MiB; with a long
    expect timeout any stall shows as seconds of delay."""
    body = tmp_path / "body.bin"
    data = os.urandom(2 * MiB)
    body.write_bytes(data)
    start = time.monotonic()
    out = curl("--expect100-timeout", "10", "--data-binary", f"@{body}", "-v", rig.url("/continue"))
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert b"Expect: 100-continue" in out.stderr
    assert json.loads(out.stdout)["bytes"] == len(data)
    assert elapsed < 3, f"client waited {elapsed:.1f}s for 100 Continue"


def test_close_delimited_origin_response_reaches_the_client_whole(rig: Rig) -> None:
    out = curl("-i", rig.url("/close-delimited"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"HTTP/1.1 200")
    assert out.stdout.endswith(b"\r\n\r\nuntil the end")


def test_status_codes_pass_through(rig: Rig) -> None:
    for status in (201, 204, 304, 404, 418, 500, 503):
        resp = request(rig.port, get(rig.port, f"/status/{status}"))
        assert resp.status == status
        if status in (204, 304):
            assert resp.body == b""


# -- upstream connection reuse -------------------------------------------------------------


def serve_forever(conn: object, backend: ScriptedBackend) -> None:
    """Answer every request on the connection with a small keep-alive 200."""
    while True:
        try:
            read_head(conn)  # type: ignore[arg-type]
        except ConnectionError:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[attr-defined]


def test_one_upstream_connection_serves_a_keep_alive_client() -> None:
    with ScriptedBackend(serve_forever) as backend:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [backend.port])), admin_port=admin) as gw:
            with httpx.Client() as client:
                for _ in range(10):
                    assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
            assert backend.connections == 1
            assert gw.metric("pool_connections_total") == 1


@contextlib.contextmanager
def park_max_2_gateway() -> Iterator[tuple[Gateway, int, ScriptedBackend]]:
    """A gateway with ``pool.park_max = 2`` and one pooled connection per
    peer, in front of a backend that answers ``ok`` forever."""
    with ScriptedBackend(serve_forever) as backend:
        admin, port = free_port(), free_port()
        cfg = h1_config(
            admin,
            h1_listener(port, [backend.port]),
            tail="[pool]\npark_max = 2\nper_peer_max = 1\n",
        )
        with gateway(cfg, admin_port=admin) as gw:
            yield gw, port, backend


def test_idle_clients_hold_at_most_park_max_upstream_connections() -> None:
    """Each keep-alive client may keep its upstream connection between its
    requests, but only ``pool.park_max`` of them per worker: the others give
    theirs back to the shared idle pool (``per_peer_max``). So 6 idle clients
    hold 2 + 1 upstream sockets, not 6; and they all keep being served."""
    with park_max_2_gateway() as (gw, port, backend):
        clients = [httpx.Client() for _ in range(6)]
        try:
            for client in clients:
                assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
            assert gw.metric("pool_parked_connections") == 2
            assert gw.metric("pool_idle_connections") == 1
            # clients 3-6 came one after another: they shared the pooled one
            assert gw.metric("pool_connections_total") == 3
            assert backend.connections == 3
            # every client still gets answers; the first two on their own socket
            for client in clients:
                assert client.get(f"http://127.0.0.1:{port}/").text == "ok"
        finally:
            for client in clients:
                client.close()
        # the slots come back when the clients leave
        assert poll(lambda: gw.metric("pool_parked_connections") == 0)


def test_an_http2_client_parks_upstream_connections_within_park_max() -> None:
    """An HTTP/2 client's streams keep the HTTP/1.1 upstream connections they
    finished with, but within the worker's parking slots: 6 concurrent
    streams open 5 or 6 upstream connections, 2 stay parked, the pool keeps
    1, and the slots come back when the client leaves."""
    with park_max_2_gateway() as (gw, port, backend):
        with RawH2(port) as c:
            c.start()
            sids = [c.request("/") for _ in range(6)]
            for sid in sids:
                ex = c.response(sid)
                assert (ex.status, bytes(ex.data)) == (200, b"ok")
            assert poll(lambda: gw.metric("pool_parked_connections") == 2)
            assert gw.metric("pool_idle_connections") == 1
            # (6, or 5 when the gateway reads the six HEADERS in two goes)
            assert backend.connections >= 5
        assert poll(lambda: gw.metric("pool_parked_connections") == 0)


def test_later_client_connections_reuse_the_pooled_upstream_connection(rig: Rig) -> None:
    reused = rig.gw.metric("pool_reused_total")
    opened = rig.gw.metric("pool_connections_total")
    for _ in range(5):
        out = curl(rig.url("/"))  # a new client connection each time
        assert out.stdout == b"hello from origin"
    assert rig.gw.metric("pool_connections_total") - opened <= 1
    assert rig.gw.metric("pool_reused_total") - reused >= 4


def test_pool_reused_total_counts_every_request_sent_on_a_reused_connection(rig: Rig) -> None:
    """The metric's help: "Requests sent on a reused upstream connection";
    that includes a keep-alive client's later requests."""
    reused = rig.gw.metric("pool_reused_total")
    with httpx.Client() as client:
        for _ in range(10):
            assert client.get(rig.url("/")).status_code == 200
    assert rig.gw.metric("pool_reused_total") - reused >= 9


def keepalive_then_close_on_next(conn: object, backend: ScriptedBackend) -> None:
    """First connection: answer one request keep-alive, then read the next
    request and close without a word (the backend's idle timeout racing a
    new request). Later connections: answer everything."""
    first = backend.connections == 1
    while True:
        try:
            read_head(conn)  # type: ignore[arg-type]
        except ConnectionError:
            return
        if first and backend.received[0].count(b"\r\n\r\n") >= 2:
            conn.close()  # type: ignore[attr-defined]
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[attr-defined]


def test_get_is_retried_when_a_reused_upstream_connection_closes_under_it() -> None:
    with ScriptedBackend(keepalive_then_close_on_next) as backend:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [backend.port])), admin_port=admin) as gw:
            assert request(port, get(port, "/one")).body == b"ok"
            time.sleep(0.2)  # the connection is idle in the pool
            resp = request(port, get(port, "/two"))
            assert (resp.status, resp.body) == (200, b"ok")
            assert gw.metric("upstream_retries_total") == 1
            assert backend.connections == 2


def test_post_is_not_retried_when_a_reused_upstream_connection_closes_under_it() -> None:
    """A non-idempotent request may have had its effect: 502, no replay."""
    with ScriptedBackend(keepalive_then_close_on_next) as backend:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [backend.port])), admin_port=admin) as gw:
            assert request(port, get(port, "/one")).body == b"ok"
            time.sleep(0.2)
            raw = b"POST /two HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 3\r\n\r\nabc"
            resp = request(port, raw)
            assert resp.status == 502
            assert gw.metric("upstream_retries_total") == 0


def answer_then_close_when_idle(conn: object, backend: ScriptedBackend) -> None:
    """Answer one request (keep-alive), then close after 100 ms idle."""
    read_head(conn)  # type: ignore[arg-type]
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[attr-defined]
    time.sleep(0.1)
    conn.close()  # type: ignore[attr-defined]


def test_upstream_closing_an_idle_pooled_connection_does_not_fail_the_next_request() -> None:
    with ScriptedBackend(answer_then_close_when_idle) as backend:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [backend.port])), admin_port=admin) as gw:
            for _ in range(3):
                resp = request(port, get(port))
                assert (resp.status, resp.body) == (200, b"ok")
                time.sleep(0.4)
            assert backend.connections == 3
            assert gw.metric("upstream_errors_total") == 0


# -- per-connection request cap ---------------------------------------------------------------


def test_connection_close_on_the_last_response_allowed_by_max_keepalive_requests() -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [op]), runtime="max_keepalive_requests = 3")
        with gateway(cfg, admin_port=admin), connect(port) as s:
            reader = ResponseReader()
            for i in range(3):
                s.sendall(get(port, "/"))
                resp = reader.read(s)
                assert resp.status == 200
                if i < 2:
                    assert resp.header("connection") is None
                    assert resp.keep_alive
                else:
                    assert resp.header("connection") == "close"
            assert closed_by_peer(s, 5)


# -- nginx as the origin ---------------------------------------------------------------------


def test_nginx_static_file_downloads_intact_with_curl(rig: Rig) -> None:
    out = curl(f"http://127.0.0.1:{rig.nginx_port}/file.bin")
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(NGINX_FILE).digest()


def test_nginx_head_and_missing_file_pass_through(rig: Rig) -> None:
    head = request(
        rig.nginx_port, b"HEAD /file.bin HTTP/1.1\r\nHost: gateway.test\r\n\r\n", method=b"HEAD"
    )
    assert head.status == 200
    assert head.header("content-length") == str(len(NGINX_FILE))
    assert request(rig.nginx_port, get(rig.nginx_port, "/nope")).status == 404


def test_nginx_sees_forwarding_headers(rig: Rig) -> None:
    with httpx.Client() as client:
        resp = client.get(
            f"http://127.0.0.1:{rig.nginx_port}/echo-headers",
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
    assert resp.status_code == 200
    assert resp.text == (
        f"xff=203.0.113.9, 127.0.0.1 proto=http host=127.0.0.1:{rig.nginx_port} "
        "via=1.1 expressgateway\n"
    )


def test_chunked_upload_to_nginx_is_answered(rig: Rig) -> None:
    """nginx answers a POST to a static file with 405 after reading the body."""
    with httpx.Client() as client:
        resp = client.post(
            f"http://127.0.0.1:{rig.nginx_port}/file.bin", content=iter([b"a" * 1000] * 5)
        )
    assert resp.status_code == 405


def test_origin_not_contacted_for_grpc_over_http1(rig: Rig) -> None:
    watch = OriginWatch(rig.origin)
    out = curl(
        "-i", "-H", "content-type: application/grpc", "--data-binary", "x", rig.url("/svc/Method")
    )
    assert out.stdout.startswith(b"HTTP/1.1 415"), out.stdout
    assert watch.new_requests() == 0


def test_grpc_web_content_type_is_proxied_as_plain_http(rig: Rig) -> None:
    out = curl(
        "-i", "-H", "content-type: application/grpc-web", "--data-binary", "x", rig.url("/sink")
    )
    assert out.stdout.startswith(b"HTTP/1.1 200"), out.stdout


# -- Alt-Svc ------------------------------------------------------------------------------------


def test_alt_svc_is_added_to_every_response_when_configured(rig: Rig) -> None:
    for path in ("/", "/status/404", "/chunked/10"):
        resp = request(rig.alt_port, get(rig.alt_port, path))
        assert resp.header("alt-svc") == 'h3=":443"; ma=3600'


def test_boot_log_does_not_call_the_alt_svc_feature_inactive(rig: Rig) -> None:
    """The supervisor warns about configured features "not active yet";
    Alt-Svc is served, so it must not be in that warning."""
    inactive = [
        line
        for line in rig.gw.logs().splitlines()
        if "not active yet" in line and '"feature":"alt_svc"' in line
    ]
    assert inactive == []


def test_no_alt_svc_without_the_block(rig: Rig) -> None:
    assert request(rig.port, get(rig.port, "/")).header("alt-svc") is None


# -- request framing as the backend sees it ------------------------------------------------


def record_and_answer(conn: object, backend: ScriptedBackend) -> None:
    """Read until the request's body ends (the test's bodies end with
    ``0\\r\\n\\r\\n`` or a known length), then answer."""
    head, rest = read_head(conn)  # type: ignore[arg-type]
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while not rest.endswith(b"\r\n\r\n"):
            rest += conn.recv(65536)  # type: ignore[attr-defined]
    elif b"content-length: " in lower:
        n = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(rest) < n:
            rest += conn.recv(65536)  # type: ignore[attr-defined]
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")  # type: ignore[attr-defined]


def upstream_bytes(raw: bytes) -> bytes:
    with ScriptedBackend(record_and_answer) as backend:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [backend.port])), admin_port=admin):
            resp = request(port, raw)
            assert (resp.status, resp.body) == (200, b"ok")
    return bytes(backend.received[0])


def test_content_length_upload_stays_content_length_upstream() -> None:
    wire = upstream_bytes(
        b"POST /u HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\nhello"
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    assert b"content-length: 5" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == b"hello"


def test_chunked_upload_with_trailers_reaches_the_backend_with_its_trailers() -> None:
    wire = upstream_bytes(
        b"POST /u HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n"
    )
    head, _, body = wire.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = body.split(b"\r\n0\r\n", 1)
    assert chunks[0].replace(b"\r\n", b"").endswith(b"world")  # the data made it
    assert b"hello" in chunks[0]
    assert b"x-checksum: 42" in chunks[1].lower()


def test_pipelined_requests_are_answered_in_order(rig: Rig) -> None:
    with connect(rig.port) as s:
        s.sendall(
            get(rig.port, "/status/201")
            + get(rig.port, "/size/10")
            + get(rig.port, "/slow-body/100")
            + get(rig.port, "/")
        )
        reader = ResponseReader()
        answers = [reader.read(s, timeout=5) for _ in range(4)]
    assert [(r.status, r.body) for r in answers] == [
        (201, b"status 201\n"),
        (200, b"x" * 10),
        (200, b"done"),
        (200, b"hello from origin"),
    ]
