"""HTTP/2 flow control as backpressure, stalled peers, and what an HTTP/2
backend's resets and GOAWAYs become for the client.

- A client that grants a huge window but never reads: TCP backpressure must
  reach the origin (HTTP/1.1 or HTTP/2) and the gateway's memory stays flat.
- An upload to a backend that does not take it (an HTTP/1.1 backend that
  never reads, an HTTP/2 backend that never returns credit): the gateway
  withholds the client's flow-control credit, so the upload stalls.
- A client with a zero window: nothing is sent, nothing is buffered, and a
  client that also ignores PINGs is dropped by the keep-alive timeout.
- Backend RST_STREAM before the head is a 502, after it a reset (HTTP/2
  client) or a truncated body (HTTP/1.1 client); GOAWAY'd and refused
  streams are retried on a new connection; a client's reset (or an aborted
  HTTP/1.1 connection) resets the upstream stream.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hyperframe.frame import (
    DataFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import MiB, RssSampler, ScriptedBackend, h1_config, read_head
from tests.support.h2 import (
    CANCEL,
    INTERNAL_ERROR,
    NO_ERROR,
    H2Backend,
    RawH2,
    curl,
    h2_listener,
    h2load,
    nginx_h2_origin,
)
from tests.support.processes import origin

RSS_BUDGET = 32 * MiB
MAX_WINDOW = 2**31 - 1
BIG = "max_response_body_bytes = 1073741824"


@dataclass
class Rig:
    gw: Gateway
    ports: dict[str, int]
    backend: H2Backend
    ca: str

    def raw(self, listener: str) -> RawH2:
        if listener == "tls-h1":
            return RawH2(self.ports[listener], ca=self.ca)
        return RawH2(self.ports[listener])


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str]) -> Iterator[Rig]:
    release = threading.Event()

    def deaf(conn: socket.socket, _: ScriptedBackend) -> None:
        """Reads a request head, then nothing more until the module ends."""
        read_head(conn)
        release.wait(30)

    with (
        origin() as op,
        nginx_h2_origin(op, keepalive_requests=100) as ng,
        H2Backend() as backend,
        ScriptedBackend(deaf) as deaf_backend,
    ):
        try:
            admin = free_port()
            names = ("h1", "tls-h1", "h2c", "scripted", "stall", "deaf")
            ports = {n: free_port() for n in names}
            cfg = h1_config(
                admin,
                h2_listener(ports["h1"], [op], name="h1", http=BIG),
                h2_listener(
                    ports["tls-h1"],
                    [op],
                    name="tls-h1",
                    protocol="h1s",
                    tls_files=tls_files,
                    http=BIG,
                ),
                h2_listener(ports["h2c"], [ng], name="h2c", backend_protocol="h2", http=BIG),
                h2_listener(
                    ports["scripted"], [backend.port], name="scripted", backend_protocol="h2"
                ),
                h2_listener(
                    ports["stall"],
                    [op],
                    name="stall",
                    h2_security="keep_alive_interval_ms = 500\nkeep_alive_timeout_ms = 500",
                ),
                h2_listener(ports["deaf"], [deaf_backend.port], name="deaf", http=BIG),
            )
            with gateway(cfg, admin_port=admin) as gw:
                yield Rig(gw, ports, backend, tls_files["ca"])
        finally:
            release.set()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


# -- backpressure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener", "path"),
    [
        ("h1", "/size/{n}"),
        ("tls-h1", "/size/{n}"),
        ("h2c", "/origin/size/{n}"),
    ],
    ids=["h2c-to-h1", "h2tls-to-h1", "h2c-to-h2c"],
)
def test_client_that_never_reads_does_not_grow_gateway_memory(
    rig: Rig, listener: str, path: str
) -> None:
    """The client opens its windows to 2^31-1, so only TCP backpressure can
    stop the 200 MiB download; for 3 s it reads nothing. Then it reads it
    all: nothing was lost while the origin was paused."""
    size = 200 * MiB
    with RssSampler(rig.gw.rss) as rss, rig.raw(listener) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.start({SettingsFrame.INITIAL_WINDOW_SIZE: MAX_WINDOW}, window=MAX_WINDOW - 65535)
        sid = c.request(path.format(n=size))
        time.sleep(3)
        growth = rss.growth
        ex = c.response(sid, timeout=60)
    # 8 MiB, not RSS_BUDGET: writes gathered to the end of the loop iteration
    # once let libuv's 32-reads-per-wakeup loop queue 7-36 MiB before the
    # client's backpressure was seen (io/cork.py CORK_LIMIT); about 2 MiB now
    assert growth < 8 * MiB, f"gateway RSS grew {growth / MiB:.1f} MiB"
    assert ex.status == 200
    assert ex.ended and len(ex.data) == size


def test_zero_window_client_gets_nothing_and_is_dropped_by_keepalive_timeout(rig: Rig) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE 0, never a WINDOW_UPDATE, PINGs ignored:
    the head goes out, no DATA, and after keep_alive_interval (500 ms) plus
    keep_alive_timeout (500 ms) the gateway says GOAWAY and closes."""
    before = rig.gw.metric(
        "h2_connection_errors_total", listener="stall", reason="keepalive_timeout"
    )
    with RssSampler(rig.gw.rss) as rss, RawH2(rig.ports["stall"]) as c:
        c.start({SettingsFrame.INITIAL_WINDOW_SIZE: 0})
        sid = c.request(f"/size/{50 * MiB}")
        start = time.monotonic()
        assert c.wait_closed(10)
        elapsed = time.monotonic() - start
    assert rss.growth < RSS_BUDGET, f"gateway RSS grew {rss.growth / MiB:.1f} MiB"
    assert 0.9 < elapsed < 8
    assert c.goaway is not None
    assert (c.goaway.error_code, c.goaway.additional_data) == (NO_ERROR, b"keepalive_timeout")
    ex = c.exchanges[sid]
    assert ex.status == 200
    assert len(ex.data) == 0
    after = rig.gw.metric(
        "h2_connection_errors_total", listener="stall", reason="keepalive_timeout"
    )
    assert after == before + 1


def test_zero_window_client_that_answers_pings_stays_and_resumes_when_it_opens_the_window(
    rig: Rig,
) -> None:
    with RawH2(rig.ports["stall"]) as c:
        c.ack_pings = True
        c.start({SettingsFrame.INITIAL_WINDOW_SIZE: 0}, window=MiB)  # the stream is the stop
        sid = c.request("/size/100000")
        c.read_until(lambda: False, timeout=2.5)  # several keep-alive rounds
        assert not c.closed and c.goaway is None
        pings = [f for f in c.frames if isinstance(f, PingFrame)]
        assert pings, "no keep-alive PING in 2.5 s of silence"
        assert len(c.exchanges[sid].data) == 0
        c.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20}).serialize())
        ex = c.response(sid)
    assert ex.ended and len(ex.data) == 100000


def test_window_updates_dribbled_by_the_client_still_complete_the_download(rig: Rig) -> None:
    """The stream window starts at 16 KiB and the client hands back exactly
    what it consumed (stream and connection), read by read: the response
    completes."""
    with RawH2(rig.ports["h1"]) as c:
        c.start({SettingsFrame.INITIAL_WINDOW_SIZE: 16384})
        sid = c.request(f"/size/{MiB}")
        seen = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ex = c.exchanges.get(sid)
            got = len(ex.data) if ex else 0
            if got > seen:
                c.send(
                    WindowUpdateFrame(sid, window_increment=got - seen).serialize()
                    + WindowUpdateFrame(0, window_increment=got - seen).serialize()
                )
                seen = got
            if ex is not None and ex.ended:
                break
            c.pump(0.5)
    assert c.exchanges[sid].ended
    assert len(c.exchanges[sid].data) == MiB


def upload_as_credit_allows(c: RawH2, sid: int, seconds: float) -> list[int]:
    """Send DATA on ``sid`` as fast as the gateway's flow-control credit
    allows, for ``seconds``; the bytes sent so far at each whole second."""
    assert c.read_until(lambda: bool(c.server_settings))
    stream_credit = c.server_settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, 65535)
    conn_credit = 65535
    seen = 0
    sent = 0
    marks: list[int] = []
    piece = b"u" * 16384
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        if int(elapsed) > len(marks):
            marks.append(sent)
        for frame in c.frames[seen:]:
            if isinstance(frame, WindowUpdateFrame):
                if frame.stream_id == sid:
                    stream_credit += frame.window_increment
                elif frame.stream_id == 0:
                    conn_credit += frame.window_increment
        seen = len(c.frames)
        room = min(stream_credit, conn_credit) - sent
        if room > 0:
            n = min(room, len(piece))
            c.send(DataFrame(sid, data=piece[:n]).serialize())
            sent += n
        else:
            c.pump(0.05)
    marks.append(sent)
    return marks


@pytest.mark.parametrize(
    ("listener", "path", "budget", "seconds"),
    [("deaf", "/sink", 32 * MiB, 5), ("scripted", "/hold-upload", MiB, 2)],
    ids=["h1-backend-never-reads", "h2-backend-never-gives-credit"],
)
def test_upload_stalls_when_the_backend_does_not_take_it(
    rig: Rig, listener: str, path: str, budget: int, seconds: int
) -> None:
    """Request DATA is acknowledged only once handed upstream: with the
    backend not taking it the client runs out of credit (behind an HTTP/1.1
    backend after the sockets' buffers filled; behind HTTP/2 after the
    backend's own 64 KiB window) and the gateway's memory stays flat. (The
    kernel grows the gateway's send buffer to 4 MiB over 2-3 s: the
    HTTP/1.1 case waits that out before it looks for the stall.)"""
    with RssSampler(rig.gw.rss) as rss, RawH2(rig.ports[listener]) as c:
        c.start()
        sid = c.new_stream()
        c.send(c.headers_frame(sid, c.request_headers(path, "POST"), end_stream=False))
        marks = upload_as_credit_allows(c, sid, seconds)
        c.send(RstStreamFrame(sid, error_code=CANCEL).serialize())
    assert marks[-1] < budget, f"the client could send {marks[-1] / MiB:.1f} MiB"
    assert marks[-1] == marks[-2], f"still sending in the last second: {marks}"
    assert marks[-1] > 0
    assert rss.growth < RSS_BUDGET, f"gateway RSS grew {rss.growth / MiB:.1f} MiB"


# -- an HTTP/2 backend's resets and GOAWAYs ----------------------------------------------------------


def scripted(rig: Rig, path: str, *flags: str) -> tuple[int, bytes, str]:
    out = curl(*flags, "-v", f"http://127.0.0.1:{rig.ports['scripted']}{path}")
    return out.returncode, out.stdout, out.stderr.decode(errors="replace")


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http1.1"])
def test_backend_reset_before_the_head_is_a_502(rig: Rig, flag: str) -> None:
    code, body, _ = scripted(rig, "/reset-before-head", flag, "-w", "%{http_code}")
    assert code == 0
    assert body.endswith(b"502")
    assert b"upstream_reset" in body


def test_backend_reset_mid_body_resets_the_h2_client_stream(rig: Rig) -> None:
    with RawH2(rig.ports["scripted"]) as c:
        c.start()
        sid = c.request("/reset-mid-body")
        ex = c.response(sid)
    assert ex.status == 200
    assert bytes(ex.data) == b"hello"
    assert not ex.ended  # never a clean END_STREAM after a truncated body
    assert ex.reset == INTERNAL_ERROR


def test_backend_reset_mid_body_truncates_the_h1_client_response(rig: Rig) -> None:
    code, body, log = scripted(rig, "/reset-mid-body", "--http1.1")
    assert code == 18, log  # CURLE_PARTIAL_FILE: content-length 100, 5 bytes
    assert body == b"hello"


def test_backend_goaway_for_an_unprocessed_stream_is_retried_on_a_new_connection(
    rig: Rig,
) -> None:
    code, body, log = scripted(rig, "/ok", "--http2-prior-knowledge")
    assert (code, body) == (0, b"ok"), log
    conns = rig.backend.connections
    code, body, log = scripted(rig, "/goaway-refuse", "--http2-prior-knowledge")
    assert (code, body) == (0, b"ok"), log
    assert rig.backend.connections == conns + 1
    tries = [r for r in rig.backend.requests if r[1] == "/goaway-refuse"]
    assert len(tries) == 2 and tries[0][0] != tries[1][0]


def test_client_reset_resets_the_upstream_stream(rig: Rig) -> None:
    before = len(rig.backend.resets)
    with RawH2(rig.ports["scripted"]) as c:
        c.start()
        sid = c.request("/hold")
        assert c.read_until(lambda: bool(c.exchanges.get(sid) and c.exchanges[sid].data))
        c.send(RstStreamFrame(sid, error_code=CANCEL).serialize())
        assert wait_for(lambda: len(rig.backend.resets) > before)
    assert rig.backend.resets[before][2] == CANCEL


def test_h1_client_aborting_resets_the_upstream_stream(rig: Rig) -> None:
    before = len(rig.backend.resets)
    s = socket.create_connection(("127.0.0.1", rig.ports["scripted"]), timeout=5)
    s.sendall(b"GET /hold HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    assert wait_for(lambda: len(rig.backend.resets) > before)
    assert rig.backend.resets[before][2] == CANCEL


def test_backend_goaways_under_load_lose_no_request(rig: Rig) -> None:
    """nginx says GOAWAY after 100 streams per connection while 20 are in
    flight: the streams it did not process are retried, every request
    gets its 200."""
    gw = rig.gw
    before = gw.metric("upstream_retries_total", listener="h2c")
    conns = gw.metric("pool_connections_total")
    result = h2load(f"http://127.0.0.1:{rig.ports['h2c']}/hello", "-c2", "-m10", "-n1000")
    assert (result.succeeded, result.status_2xx) == (1000, 1000), result.output
    assert gw.metric("pool_connections_total") - conns >= 9  # 1000 / 100 streams each
    assert gw.metric("upstream_retries_total", listener="h2c") > before


def test_h2_backend_connections_fill_to_the_peer_stream_limit_before_new_ones_open() -> None:
    """nginx allows 5 concurrent streams per connection and h2load keeps 50
    requests in flight: 10 upstream connections carry them. (h2back.py: a
    new connection opens only when every live one is at the peer's
    SETTINGS_MAX_CONCURRENT_STREAMS; one is opened per peer at a time.)"""
    with origin() as op, nginx_h2_origin(op, max_concurrent_streams=5) as ng:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h2_listener(port, [ng], backend_protocol="h2"))
        with gateway(cfg, admin_port=admin) as gw:
            url = f"http://127.0.0.1:{port}/origin/slow-head/20"
            result = h2load(url, "-c1", "-m50", "-n500")
            opened = gw.metric("pool_connections_total")
    assert (result.succeeded, result.status_2xx) == (500, 500), result.output
    assert opened <= 20, f"{opened:.0f} upstream connections for 50 streams at 5 per connection"
