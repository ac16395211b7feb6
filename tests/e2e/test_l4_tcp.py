"""The ``tcp`` listener: a byte relay to a pool of TCP backends, seen from
real sockets on both sides."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.l4 import (
    EofRecorder,
    Firehose,
    ThreadServer,
    bulk_echo,
    closed_without_data,
    config,
    listener,
    named_echo,
    poll,
    recv_exactly,
    recv_line,
    recv_until_eof,
)

MiB = 1024 * 1024


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def test_tcp_listener_relays_bytes_both_ways(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port]))
    with gateway(cfg, admin_port=admin), connect(port) as c:
        c.sendall(b"hello through the gateway")
        assert recv_exactly(c, 25) == b"hello through the gateway"


def test_tcp_listener_serves_concurrent_connections_independently(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    with gateway(config(admin, listener("tcp-in", port, "tcp", [echo_port])), admin_port=admin):
        conns = [connect(port) for _ in range(20)]
        try:
            # interleave: every connection gets its own bytes back, in order
            for round_ in range(3):
                for i, c in enumerate(conns):
                    c.sendall(b"conn %02d round %d;" % (i, round_))
                for i, c in enumerate(conns):
                    expected = b"conn %02d round %d;" % (i, round_)
                    assert recv_exactly(c, len(expected)) == expected
        finally:
            for c in conns:
                c.close()


def test_tcp_listener_round_robins_connections_across_backends() -> None:
    admin, port = free_port(), free_port()
    with named_echo("alpha") as a, named_echo("beta") as b:
        cfg = config(admin, listener("tcp-in", port, "tcp", [a, b]))
        with gateway(cfg, admin_port=admin):
            seen = []
            for _ in range(6):
                with connect(port) as c:
                    seen.append(recv_line(c).decode())
            # strict alternation (each worker starts the rotation at a random place)
            assert seen in (["alpha", "beta"] * 3, ["beta", "alpha"] * 3)


def test_tcp_listener_metrics_count_connections_and_exact_bytes(echo_port: int) -> None:
    admin, port, other = free_port(), free_port(), free_port()
    cfg = config(
        admin,
        listener("tcp-in", port, "tcp", [echo_port]),
        listener("tcp-other", other, "tcp", [echo_port]),
    )
    with gateway(cfg, admin_port=admin) as gw:
        sizes = [1, 1000, 70_000]
        for n in sizes:
            with connect(port) as c:
                c.sendall(b"a" * n)
                assert recv_exactly(c, n) == b"a" * n
        with connect(other) as c:
            c.sendall(b"b" * 5)
            recv_exactly(c, 5)

        total = sum(sizes)
        assert poll(lambda: gw.metric("bytes_backend_to_client", listener="tcp-in") == total)
        assert gw.metric("connections_total", listener="tcp-in") == 3
        assert gw.metric("bytes_client_to_backend", listener="tcp-in") == total
        assert gw.metric("connections_total", listener="tcp-other") == 1
        assert poll(lambda: gw.metric("bytes_client_to_backend", listener="tcp-other") == 5)
        assert poll(lambda: gw.metric("accept_inflight", listener="tcp-in") == 0)


def test_tcp_listener_propagates_half_close() -> None:
    """Client FIN reaches the backend as FIN; the backend's answer, sent only
    after it saw EOF, still reaches the client; then the client sees EOF."""
    admin, port = free_port(), free_port()
    recorder = EofRecorder()
    with (
        ThreadServer(recorder) as backend,
        gateway(config(admin, listener("tcp-in", port, "tcp", [backend.port])), admin_port=admin),
    ):
        with connect(port) as c:
            c.sendall(b"request body")
            c.shutdown(socket.SHUT_WR)
            assert recv_until_eof(c) == b"got:request body"
        assert recorder.received == [b"request body"]


def test_tcp_listener_propagates_backend_half_close_to_client(echo_port: int) -> None:
    """The echo backend answers FIN with FIN: after the client's FIN every
    echoed byte arrives and the client reads EOF, not a reset."""
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port]))
    with gateway(cfg, admin_port=admin), connect(port) as c:
        payload = bytes(range(256)) * 400
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == payload


def _rss_sampler(gw: Gateway, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], gw.rss())
        stop.wait(0.05)


def test_tcp_listener_relays_one_gib_with_bounded_memory() -> None:
    """1 GiB up and the same 1 GiB back down through one connection: every
    byte arrives in order and the gateway's RSS (all processes) grows < 32 MiB."""
    total = 1024 * MiB
    block = bytes(i * 7 % 251 for i in range(1_048_573))  # odd size: chunks never align
    expected = hashlib.sha256()
    sent_so_far = 0
    while sent_so_far < total:
        piece = block[: total - sent_so_far]
        expected.update(piece)
        sent_so_far += len(piece)

    admin, port = free_port(), free_port()
    with (
        bulk_echo() as echo,
        gateway(config(admin, listener("bulk", port, "tcp", [echo])), admin_port=admin) as gw,
    ):
        with connect(port, timeout=60) as warm:  # warm the relay path before the baseline
            warm.sendall(block)
            recv_exactly(warm, len(block))
        time.sleep(0.2)
        baseline = gw.rss()
        peak = [baseline]
        stop = threading.Event()
        sampler = threading.Thread(target=_rss_sampler, args=(gw, stop, peak), daemon=True)
        sampler.start()
        errors: list[BaseException] = []

        def send_all(sock: socket.socket) -> None:
            try:
                left = total
                view = memoryview(block)
                while left:
                    n = min(left, len(block))
                    sock.sendall(view[:n])
                    left -= n
                sock.shutdown(socket.SHUT_WR)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        started = time.monotonic()
        try:
            with connect(port, timeout=60) as c:
                sender = threading.Thread(target=send_all, args=(c,), daemon=True)
                sender.start()
                got = hashlib.sha256()
                received = 0
                buf = bytearray(1024 * 1024)
                while n := c.recv_into(buf):
                    got.update(memoryview(buf)[:n])
                    received += n
                sender.join(60)
        finally:
            stop.set()
            sampler.join(5)
        elapsed = time.monotonic() - started

        assert not errors, errors
        assert received == total
        assert got.hexdigest() == expected.hexdigest()
        growth = peak[0] - baseline
        assert growth < 32 * MiB, (
            f"RSS grew {growth / MiB:.1f} MiB relaying 1 GiB in {elapsed:.1f}s"
        )
        assert poll(
            lambda: gw.metric("bytes_client_to_backend", listener="bulk") == total + len(block)
        )
        assert gw.metric("bytes_backend_to_client", listener="bulk") == total + len(block)


def test_tcp_listener_pauses_backend_when_client_does_not_read() -> None:
    """A backend that would send 1 GiB to a client that reads nothing: the
    backend gets stalled after a few MiB of socket buffers and the gateway's
    memory stays flat."""
    admin, port = free_port(), free_port()
    hose = Firehose(total=1024 * MiB)
    with (
        ThreadServer(hose) as backend,
        gateway(
            config(admin, listener("slow", port, "tcp", [backend.port])), admin_port=admin
        ) as gw,
    ):
        baseline = gw.rss()
        with connect(port) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)

            # wait until the backend is stalled: no progress for a second
            def stalled() -> bool:
                before = hose.sent
                time.sleep(1.0)
                return hose.sent == before and before > 0

            assert poll(stalled, timeout=30, interval=0), (
                f"backend never paused ({hose.sent} bytes sent)"
            )
            growth = gw.rss() - baseline
            assert hose.sent < 32 * MiB, (
                f"backend sent {hose.sent / MiB:.1f} MiB to a client that reads nothing"
            )
            assert growth < 32 * MiB, f"RSS grew {growth / MiB:.1f} MiB"

            # and the relay resumes when the client reads again
            stalled_at = hose.sent
            c.settimeout(10)
            drained = 0
            while drained < stalled_at + 4 * MiB:
                chunk = c.recv(1024 * 1024)
                assert chunk, "gateway closed the slow client"
                drained += len(chunk)
            assert hose.sent > stalled_at


def test_tcp_listener_closes_client_when_backend_refuses() -> None:
    admin, port = free_port(), free_port()
    dead = free_port()  # nothing listens here
    with gateway(config(admin, listener("tcp-in", port, "tcp", [dead])), admin_port=admin) as gw:
        with connect(port) as c:
            c.sendall(b"anyone there?")
            assert closed_without_data(c)
        assert poll(
            lambda: (
                gw.metric("backend_connect_errors_total", listener="tcp-in", reason="refused") == 1
            )
        )


def test_tcp_connect_failure_moves_on_to_another_backend(echo_port: int) -> None:
    """Round robin over a dead and a live backend: a connection that lands on
    the dead one is connected to the live one instead (the cluster's connect
    retries), so every client gets through; each failed attempt is counted."""
    admin, port = free_port(), free_port()
    dead = free_port()
    with gateway(
        config(admin, listener("tcp-in", port, "tcp", [dead, echo_port])), admin_port=admin
    ) as gw:
        for i in range(4):
            with connect(port) as conn:
                conn.sendall(b"ping%d" % i)
                assert recv_exactly(conn, 5) == b"ping%d" % i
        assert gw.metric("backend_connect_errors_total", listener="tcp-in") >= 1


def test_tcp_connection_closes_when_every_backend_is_down() -> None:
    """No backend answers: the client's connection closes without data, and
    the attempts are counted (1 + max_retries, here on both dead backends)."""
    admin, port = free_port(), free_port()
    with gateway(
        config(admin, listener("tcp-in", port, "tcp", [free_port(), free_port()])),
        admin_port=admin,
    ) as gw:
        with connect(port) as conn:
            assert closed_without_data(conn)
        assert gw.metric("backend_connect_errors_total", listener="tcp-in") == 2


def test_per_ip_cap_closes_extra_connection_without_response(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(
        admin, listener("capped", port, "tcp", [echo_port]), runtime="per_ip_connection_cap = 2"
    )
    with gateway(cfg, admin_port=admin) as gw:
        with contextlib.ExitStack() as stack:
            held = [stack.enter_context(connect(port)) for _ in range(2)]
            for i, c in enumerate(held):
                c.sendall(b"held %d" % i)
                assert recv_exactly(c, 6) == b"held %d" % i
            with connect(port) as extra:
                with contextlib.suppress(OSError):
                    extra.sendall(b"let me in")
                assert closed_without_data(extra)
            assert poll(
                lambda: (
                    gw.metric("accept_reject_total", listener="capped", reason="over_per_ip_cap")
                    == 1
                )
            )
            # the held connections are untouched
            held[0].sendall(b"ok")
            assert recv_exactly(held[0], 2) == b"ok"
            held.pop().close()
        # a slot is free again once a connection closes
        assert poll(lambda: gw.metric("accept_inflight", listener="capped") == 0)
        with connect(port) as again:
            again.sendall(b"back")
            assert recv_exactly(again, 4) == b"back"
        assert gw.metric("connections_total", listener="capped") == 3
