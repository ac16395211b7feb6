"""The HTTP/3 front's defenses and lifecycle, seen from the client side of
the wire: stateless Retry and its tokens (packet by packet over a raw UDP
socket), malformed request heads (a stream error, never a connection
error), the header-section cap, connection recycling after
``max_requests_per_h3_connection``, the per-IP and per-worker connection
caps, 0-RTT (safe methods only, single-use tickets), upstream failures,
graceful drain on SIGTERM, and bounded memory under a large upload to a
slow backend."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from aioquic._buffer import Buffer
from aioquic.h3.connection import ErrorCode
from aioquic.quic.packet import QuicErrorCode, QuicPacketType, pull_quic_header

from tests.support.gateway import Gateway, free_port, gateway, wait_port
from tests.support.h3 import H3Client, h3_request
from tests.support.h3raw import (
    HOST_CID_LENGTH,
    QuicProbe,
    RawH3Client,
    connection_error,
    first_initial,
    h3_config,
    packet_headers,
    quic_listener,
    receive,
    udp_socket,
)
from tests.support.processes import origin

MiB = 1 << 20
H3_MESSAGE_ERROR = int(ErrorCode.H3_MESSAGE_ERROR)  # 0x10e
H3_REQUEST_REJECTED = int(ErrorCode.H3_REQUEST_REJECTED)  # 0x10b
CONNECTION_REFUSED = int(QuicErrorCode.CONNECTION_REFUSED)  # 0x2
SILENCE = 1.0  # "no answer": nothing within this long


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str]) -> Iterator[tuple[int, Gateway]]:
    """The Python origin behind a default ``quic`` listener named h3."""
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        with gateway(
            h3_config(admin, quic_listener(port, [backend], tls_files)), admin_port=admin
        ) as gw:
            yield port, gw


# -- stateless Retry -----------------------------------------------------------------------------


def test_first_initial_gets_a_stateless_retry(rig: tuple[int, Gateway]) -> None:
    port, gw = rig
    retries = gw.metric("quic_retries_total", listener="h3")
    accepted = gw.metric("quic_connections_total", listener="h3")
    quic, initial = first_initial(port)
    (hello,) = packet_headers(initial)
    assert hello.packet_type == QuicPacketType.INITIAL and not hello.token
    with udp_socket() as sock:
        sock.sendto(initial, ("127.0.0.1", port))
        reply = receive(sock, 2.0)
    assert reply is not None, "no answer to a full-size Initial"
    retry = pull_quic_header(Buffer(data=reply), host_cid_length=HOST_CID_LENGTH)
    assert retry.packet_type == QuicPacketType.RETRY
    assert retry.destination_cid == hello.source_cid
    assert retry.source_cid != hello.destination_cid
    assert retry.token
    # the Retry is one a real client accepts: its integrity tag checks out
    quic.receive_datagram(reply, ("127.0.0.1", port), now=time.monotonic())
    datagrams = quic.datagrams_to_send(now=time.monotonic())
    again = packet_headers(datagrams[0][0])[0]
    assert again.packet_type == QuicPacketType.INITIAL
    assert again.token == retry.token
    assert gw.metric("quic_retries_total", listener="h3") == retries + 1
    assert gw.metric("quic_connections_total", listener="h3") == accepted  # no state yet


def _retried_initial(port: int) -> tuple[bytes, bytes]:
    """A client's second Initial (carrying the Retry token) and that token;
    the Retry was fetched from its own socket, so the token is bound to it."""
    quic, initial = first_initial(port)
    with udp_socket() as sock:
        sock.sendto(initial, ("127.0.0.1", port))
        reply = receive(sock, 2.0)
        assert reply is not None
        quic.receive_datagram(reply, ("127.0.0.1", port), now=time.monotonic())
        (second, _), *_ = quic.datagrams_to_send(now=time.monotonic())
    token = packet_headers(second)[0].token
    assert token
    return second, token


def test_tampered_retry_token_is_dropped_silently(rig: tuple[int, Gateway]) -> None:
    port, gw = rig
    bad_before = gw.metric("quic_datagrams_dropped_total", listener="h3", reason="bad_token")
    quic, initial = first_initial(port)
    with udp_socket() as sock:
        sock.sendto(initial, ("127.0.0.1", port))
        reply = receive(sock, 2.0)
        assert reply is not None
        quic.receive_datagram(reply, ("127.0.0.1", port), now=time.monotonic())
        (second, _), *_ = quic.datagrams_to_send(now=time.monotonic())
        token = packet_headers(second)[0].token
        at = second.index(token) + len(token) - 1  # a byte of the token's MAC
        tampered = bytearray(second)
        tampered[at] ^= 0x01
        sock.sendto(bytes(tampered), ("127.0.0.1", port))
        assert receive(sock, SILENCE) is None, "a tampered token was answered"
        dropped = gw.metric("quic_datagrams_dropped_total", listener="h3", reason="bad_token")
        assert dropped == bad_before + 1
        # the same Initial with its token intact is answered: the handshake goes on
        sock.sendto(second, ("127.0.0.1", port))
        answer = receive(sock, 2.0)
    assert answer is not None
    kinds = [h.packet_type for h in packet_headers(answer)]
    assert kinds[0] == QuicPacketType.INITIAL
    assert QuicPacketType.HANDSHAKE in kinds


def test_retry_token_is_bound_to_the_client_address(rig: tuple[int, Gateway]) -> None:
    port, gw = rig
    bad_before = gw.metric("quic_datagrams_dropped_total", listener="h3", reason="bad_token")
    second, _ = _retried_initial(port)
    with udp_socket() as elsewhere:  # another source port
        elsewhere.sendto(second, ("127.0.0.1", port))
        assert receive(elsewhere, SILENCE) is None
    assert (
        gw.metric("quic_datagrams_dropped_total", listener="h3", reason="bad_token")
        == bad_before + 1
    )


def test_initial_shorter_than_1200_bytes_is_dropped(rig: tuple[int, Gateway]) -> None:
    port, gw = rig
    short_before = gw.metric("quic_datagrams_dropped_total", listener="h3", reason="short_initial")
    retries = gw.metric("quic_retries_total", listener="h3")
    _, initial = first_initial(port)
    (hello,) = packet_headers(initial)
    short = initial[: hello.packet_length]  # the same Initial without its padding
    assert len(short) < 1200
    with udp_socket() as sock:
        sock.sendto(short, ("127.0.0.1", port))
        assert receive(sock, SILENCE) is None, "a short Initial was answered"
        assert (
            gw.metric("quic_datagrams_dropped_total", listener="h3", reason="short_initial")
            == short_before + 1
        )
        assert gw.metric("quic_retries_total", listener="h3") == retries
        sock.sendto(initial, ("127.0.0.1", port))  # padded: answered
        reply = receive(sock, 2.0)
    assert reply is not None
    assert packet_headers(reply)[0].packet_type == QuicPacketType.RETRY


# -- malformed request heads -------------------------------------------------------------------

MALFORMED = {
    "duplicate :path": lambda h: [*h, (b":path", b"/other")],
    "missing :scheme": lambda h: [f for f in h if f[0] != b":scheme"],
    "unknown pseudo-header": lambda h: [*h, (b":protocol-x", b"1")],
    "pseudo-header after a regular field": lambda h: [*h[:3], (b"x-a", b"1"), h[3]],
    "connection-specific field": lambda h: [*h, (b"connection", b"close")],
    "upper-case field name": lambda h: [*h, (b"X-Upper", b"1")],
    "transfer-encoding": lambda h: [*h, (b"transfer-encoding", b"chunked")],
}


def test_well_formed_head_sent_raw_is_served(
    rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    """The control for the cases below: the hand-encoded field section
    itself is fine, only what the cases change in it is not."""
    port, _ = rig
    with RawH3Client(port, ca=tls_files["ca"]) as client:
        head = [*client.head_for("GET", "/headers"), (b"x-probe", b"raw")]
        resp = client.request_fields(head, timeout=5)
    assert resp.complete and resp.status == 200, resp
    assert ["x-probe", "raw"] in json.loads(resp.body)["headers"]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_resets_only_its_stream(
    case: str, rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    port, gw = rig
    stats_before = h3_request(port, "GET", "/stats", ca=tls_files["ca"])
    with RawH3Client(port, ca=tls_files["ca"]) as client:
        accepted = gw.metric("quic_connections_total", listener="h3")
        bad = client.request_fields(MALFORMED[case](client.head_for("GET", "/")), timeout=5)
        assert bad.status is None
        assert bad.reset_code == H3_MESSAGE_ERROR, bad
        good = client.request("GET", "/")  # same connection
        assert good.complete and good.status == 200, good
        assert good.body == b"hello from origin"
        assert connection_error(client, timeout=0.1) is None
        assert gw.metric("quic_connections_total", listener="h3") == accepted
    stats_after = h3_request(port, "GET", "/stats", ca=tls_files["ca"])
    # only the good request and the /stats probe reached the origin
    seen = json.loads(stats_after.body)["requests"] - json.loads(stats_before.body)["requests"]
    assert seen == 2


def test_oversized_header_section_is_refused_and_the_connection_lives_on(
    rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    port, _ = rig
    with RawH3Client(port, ca=tls_files["ca"]) as client:
        head = [*client.head_for("GET", "/"), (b"x-big", b"a" * (200 * 1024))]
        big = client.request_fields(head, timeout=10)
        assert big.reset_code == H3_MESSAGE_ERROR or big.status == 431, big
        good = client.request("GET", "/")
        assert good.complete and good.status == 200
        assert connection_error(client, timeout=0.1) is None


# -- recycling ---------------------------------------------------------------------------------


def test_connection_is_recycled_after_max_requests(tls_files: dict[str, str]) -> None:
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        cfg = h3_config(
            admin,
            quic_listener(port, [backend], tls_files),
            runtime="max_requests_per_h3_connection = 3",
        )
        with gateway(cfg, admin_port=admin) as gw:
            with H3Client(port, ca=tls_files["ca"]) as client:
                first = [client.request("GET", "/") for _ in range(2)]
                third = client.open("GET", "/slow-head/500")  # the last one served
                time.sleep(0.2)
                fourth = client.open("GET", "/").finish(5)
                third_resp = third.finish(5)
                closed = connection_error(client, timeout=3)
            assert [r.status for r in first] == [200, 200]
            assert third_resp.complete and third_resp.body == b"slow head"
            assert fourth.status is None
            assert fourth.reset_code == H3_REQUEST_REJECTED, fourth
            assert closed is not None and "error 0x100" in closed  # H3_NO_ERROR
            assert gw.metric("quic_connections_recycled_total", listener="h3") == 1
            assert gw.metric("h3_streams_refused_total", listener="h3") == 1
            # a fresh connection is served
            assert h3_request(port, "GET", "/", ca=tls_files["ca"]).status == 200


def test_last_request_before_recycling_is_answered_when_the_gateway_answers_it_itself(
    tls_files: dict[str, str],
) -> None:
    """``max_requests_per_h3_connection = 1`` and a request the gateway
    answers on its own (the gRPC health check): the answer must reach the
    client before the connection closes."""
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        cfg = h3_config(
            admin,
            quic_listener(port, [backend], tls_files, extra="\n[listeners.grpc]\n"),
            runtime="max_requests_per_h3_connection = 1",
        )
        grpc_head = [("content-type", "application/grpc"), ("te", "trailers")]
        empty_request = b"\x00\x00\x00\x00\x00"  # HealthCheckRequest{service: ""}
        with gateway(cfg, admin_port=admin), H3Client(port, ca=tls_files["ca"]) as client:
            resp = client.request(
                "POST", "/grpc.health.v1.Health/Check", headers=grpc_head, body=empty_request
            )
            closed = connection_error(client, timeout=3)
    assert resp.complete and resp.status == 200, resp
    assert resp.body == b"\x00\x00\x00\x00\x02\x08\x01"  # SERVING
    assert ("grpc-status", "0") in resp.trailers
    assert closed is not None and "error 0x100" in closed  # then recycled


# -- connection caps ---------------------------------------------------------------------------


def test_per_ip_connection_cap_refuses_the_third_connection(tls_files: dict[str, str]) -> None:
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        listener = quic_listener(port, [backend], tls_files, quic="per_ip_connection_cap = 2")
        with gateway(h3_config(admin, listener), admin_port=admin) as gw:
            a = H3Client(port, ca=tls_files["ca"])
            b = H3Client(port, ca=tls_files["ca"])
            try:
                assert a.request("GET", "/").status == 200
                assert b.request("GET", "/").status == 200
                with QuicProbe(port, ca=tls_files["ca"]) as third:
                    assert not third.handshake(timeout=5)
                    assert third.state.terminated is not None
                    assert third.state.terminated.error_code == CONNECTION_REFUSED
                assert gw.metric("quic_connections_refused_total", reason="per_ip_cap") == 1
                assert gw.metric("quic_connections_open", listener="h3") == 2
                # a slot frees once a connection closes
                a.close()
                deadline = time.monotonic() + 5
                while gw.metric("quic_connections_open", listener="h3") > 1:
                    assert time.monotonic() < deadline, "closed connection still counted"
                    time.sleep(0.05)
                assert h3_request(port, "GET", "/", ca=tls_files["ca"]).status == 200
            finally:
                a.close()
                b.close()


def test_max_connections_refuses_past_the_cap(tls_files: dict[str, str]) -> None:
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        listener = quic_listener(port, [backend], tls_files, quic="max_connections = 1")
        with (
            gateway(h3_config(admin, listener), admin_port=admin) as gw,
            H3Client(port, ca=tls_files["ca"]) as a,
        ):
            assert a.request("GET", "/").status == 200
            with QuicProbe(port, ca=tls_files["ca"]) as second:
                assert not second.handshake(timeout=5)
                assert second.state.terminated is not None
                assert second.state.terminated.error_code == CONNECTION_REFUSED
            assert gw.metric("quic_connections_refused_total", reason="max_connections") == 1
            assert a.request("GET", "/").status == 200  # the one inside is unaffected


# -- 0-RTT ------------------------------------------------------------------------------------


def _ticket(port: int, ca: str) -> object:
    """A session ticket from a first, complete connection."""
    with QuicProbe(port, ca=ca) as first:
        assert first.handshake()
        first.request("GET", "/")
        assert first.finish()
        assert first.pump(lambda s: bool(s.tickets), 3.0), "no session ticket issued"
        return first.state.tickets[0]


def _early_requests(port: int, ca: str, ticket: object) -> tuple[QuicProbe, int, int]:
    """Resume with ``ticket``; after the Retry, a GET and a POST are sent
    with the new Initial, before any handshake packet from the gateway.
    Returns (probe, GET stream, POST stream) once both are over."""
    probe = QuicProbe(port, ca=ca, ticket=ticket)  # type: ignore[arg-type]
    probe.connect()
    retry = probe.receive_one(2.0)
    assert retry is not None
    assert packet_headers(retry)[0].packet_type == QuicPacketType.RETRY
    probe.feed(retry)
    get = probe.request("GET", "/")
    post = probe.request("POST", "/sink", b"not idempotent")
    probe.send()
    assert probe.finish(5.0)
    return probe, get, post


@pytest.fixture(scope="module")
def early_rig(tls_files: dict[str, str]) -> Iterator[int]:
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        listener = quic_listener(port, [backend], tls_files, quic="early_data = true")
        with gateway(h3_config(admin, listener), admin_port=admin):
            yield port


def test_0rtt_serves_safe_methods_and_answers_others_425(
    early_rig: int, tls_files: dict[str, str]
) -> None:
    ticket = _ticket(early_rig, tls_files["ca"])
    probe, get, post = _early_requests(early_rig, tls_files["ca"], ticket)
    with probe:
        # the requests really went out as 0-RTT, next to the second Initial
        assert QuicPacketType.ZERO_RTT in probe.state.sent[1]
        assert probe.state.handshake is not None
        assert probe.state.handshake.early_data_accepted
        assert probe.exchanges[get].status == 200
        assert probe.exchanges[get].body == b"hello from origin"
        assert probe.exchanges[post].status == 425
        assert probe.exchanges[post].ended


def test_0rtt_ticket_is_single_use(early_rig: int, tls_files: dict[str, str]) -> None:
    ticket = _ticket(early_rig, tls_files["ca"])
    first, _, _ = _early_requests(early_rig, tls_files["ca"], ticket)
    with first:
        assert first.state.handshake is not None
        assert first.state.handshake.early_data_accepted
    replay, get, post = _early_requests(early_rig, tls_files["ca"], ticket)
    with replay:
        assert QuicPacketType.ZERO_RTT in replay.state.sent[1]
        assert replay.state.handshake is not None
        assert not replay.state.handshake.early_data_accepted
        assert not replay.state.handshake.session_resumed
        # the client resent both in 1-RTT: after the handshake, both are served
        assert replay.exchanges[get].status == 200
        assert replay.exchanges[post].status == 200


def test_no_session_tickets_without_early_data(
    rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    port, _ = rig
    with QuicProbe(port, ca=tls_files["ca"]) as probe:
        assert probe.handshake()
        probe.request("GET", "/")
        assert probe.finish()
        assert not probe.pump(lambda s: bool(s.tickets), 1.0)


# -- upstream failures -------------------------------------------------------------------------


def test_backend_down_is_502_and_backend_timeout_is_504(tls_files: dict[str, str]) -> None:
    with origin() as backend:
        dead = free_port()  # nothing listens there
        admin, down_port, slow_port = free_port(), free_port(udp=True), free_port(udp=True)
        cfg = h3_config(
            admin,
            quic_listener(down_port, [dead], tls_files, name="down"),
            quic_listener(
                slow_port, [backend], tls_files, name="slow", http="head_timeout_ms = 500"
            ),
        )
        with gateway(cfg, admin_port=admin) as gw:
            with H3Client(down_port, ca=tls_files["ca"]) as client:
                down = client.request("GET", "/")
                again = client.request("GET", "/")
            with H3Client(slow_port, ca=tls_files["ca"]) as client:
                started = time.monotonic()
                slow = client.request("GET", "/slow-head/3000")
                took = time.monotonic() - started
                fine = client.request("GET", "/")
            assert gw.metric("http_requests_total", listener="down", status_class="5xx") == 2
    assert down.complete and down.status == 502, down
    assert json.loads(down.body)["status"] == 502
    assert again.status == 502  # the connection still answers
    assert slow.complete and slow.status == 504, slow
    assert took < 2.5
    assert fine.complete and fine.status == 200


# -- graceful drain ----------------------------------------------------------------------------


def test_sigterm_lets_the_request_in_flight_finish_and_serves_no_new_connection(
    tls_files: dict[str, str],
) -> None:
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        cfg = h3_config(admin, quic_listener(port, [backend], tls_files), drain_ms=8000)
        with gateway(cfg, admin_port=admin) as gw:
            assert gw.proc is not None
            with H3Client(port, ca=tls_files["ca"]) as client:
                slow = client.open("GET", "/slow-body/2500")
                assert slow.head(3).status == 200  # in flight: head sent, body pending
                gw.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
                late = h3_request(port, "GET", "/", ca=tls_files["ca"], timeout=1.0)
                done = slow.finish(8)
            assert late.status is None and late.error is not None, late
            assert done.complete, done
            assert done.status == 200 and done.body == b"done"
            assert gw.proc.wait(10) == 0


# -- bounded memory ------------------------------------------------------------------------------

SLOW_SINK = r"""
import hashlib, json, socket, sys, time
MiB = 1 << 20
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = srv.accept()
    with conn:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
        head, _, body = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        time.sleep(5)  # reads nothing of the body for 5 s
        sha = hashlib.sha256(body)
        n = len(body)
        pause_at = 50 * MiB
        while n < length:
            data = conn.recv(min(65536, length - n))
            if not data:
                break
            n += len(data)
            sha.update(data)
            if n >= pause_at:  # then stalls 0.5 s every 50 MiB
                time.sleep(0.5)
                pause_at += 50 * MiB
        answer = json.dumps({"bytes": n, "sha256": sha.hexdigest()}).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                     % (len(answer), answer))
"""


def test_200_mib_upload_to_a_slow_backend_keeps_gateway_memory_bounded(
    tls_files: dict[str, str],
) -> None:
    size = 200 * MiB
    chunk = bytes(range(256)) * 4096  # 1 MiB
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SLOW_SINK, str(sink_port)])
    try:
        wait_port(sink_port)
        admin, port = free_port(), free_port(udp=True)
        listener = quic_listener(
            port, [sink_port], tls_files, http="max_request_body_bytes = 1073741824"
        )
        with (
            gateway(h3_config(admin, listener), admin_port=admin) as gw,
            H3Client(port, ca=tls_files["ca"], timeout=90) as client,
        ):
            before = gw.rss()
            peak = before
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, gw.rss())
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                resp = client.request(
                    "POST",
                    "/upload",
                    headers=[("content-length", str(size))],
                    body=(chunk for _ in range(size // len(chunk))),
                    timeout=90,
                )
            finally:
                stop.set()
                sampler.join()
    finally:
        sink.terminate()
        sink.wait(5)
    assert resp.complete and resp.status == 200, resp
    expected = hashlib.sha256()
    for _ in range(size // len(chunk)):
        expected.update(chunk)
    assert json.loads(resp.body) == {"bytes": size, "sha256": expected.hexdigest()}
    assert peak - before < 48 * MiB, f"gateway grew by {(peak - before) / MiB:.1f} MiB"
