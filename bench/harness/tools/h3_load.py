"""Bounded HTTP/3 load on aioquic: N connections x M concurrent streams for D seconds.

Standalone:

    python h3_load.py HOST PORT [--sni localhost] [--path /1k] [-c 4] [-m 16] [-d 10]
                      [--procs 1] [--handshake-timeout 5]

Prints one JSON line: {"requests": completed 200 responses in the measured window,
"duration", "errors", "error_detail", "p50_ms", "p99_ms", "bytes", "connections"}.
The measured window starts once every connection finished its handshake (a stateless
Retry is followed, as any client does) and lasts D seconds; responses still in flight
at the end are neither counted nor errors. Every loop is bounded: a connection that dies
is reopened at most a few times, and the process exits by D + 20 s whatever happens.

It is built to be cheap per request, because it shares a core with the origin in pinned
mode: uvloop when installed; the QUIC/H3 state machines of aioquic driven directly (no
asyncio stream objects, no futures per request); received datagrams of one loop pass
processed before anything is sent, and ACKs ride on the next request packet instead of a
packet of their own (ack delay 0, one transmit per connection per loop pass); no pacing
of our small packets; one timer tick for all connections instead of a timer per
connection; request HEADERS encoded once (no QPACK dynamic table either way) and the
response frames walked here rather than by aioquic's H3 layer. aioquic is still pure Python
above the AEAD and header protection, so this client costs tens of CPU-µs per request
itself: it is the ceiling of any figure it measures. `--procs P` splits the connections
over P processes (natural mode, several cores).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from pathlib import Path
from typing import Any

import pylsqpack
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, Setting, encode_frame
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from h3_common import cpu_seconds, main

TICK_S = 0.002  # timer resolution for loss detection / idle / pacing timers
MAX_RECONNECTS = 5  # per connection slot
LAT_SAMPLES = 500_000  # latency samples kept per process


def varint(data: bytes, i: int, end: int) -> tuple[int, int]:
    """QUIC variable-length integer at data[i]: (value, next index), or (0, -1) if cut."""
    if i >= end:
        return 0, -1
    first = data[i]
    size = 1 << (first >> 6)
    if i + size > end:
        return 0, -1
    value = first & 0x3F
    for k in range(i + 1, i + size):
        value = (value << 8) | data[k]
    return value, i + size


class StaticQpackH3(H3Connection):
    """aioquic's H3 connection for the control and QPACK streams only, advertising no
    QPACK dynamic table: responses are then decoded statelessly, in any order, with
    no blocked streams (the request streams are handled by Conn itself)."""

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[Setting.QPACK_MAX_TABLE_CAPACITY] = 0
        settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        return settings


class NoPacer:
    """Sends are not paced: a load client's packets are small requests and ACKs, and
    with a proxy's queueing in the RTT aioquic's pacer would hold each one back to the
    next timer tick (capping a connection at one packet per tick)."""

    def next_send_time(self, now: float) -> None:
        return None

    def update_after_send(self, now: float) -> None:
        pass

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        pass


class Stats:
    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.nbytes = 0
        self.detail: dict[str, int] = {}
        self.lat: list[float] = []
        self.counting = False

    def error(self, text: str) -> None:
        if self.counting:
            self.errors += 1
        self.detail[text] = self.detail.get(text, 0) + 1


class Conn(asyncio.DatagramProtocol):
    """One QUIC connection keeping `streams` GET requests in flight."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.stats = client.stats
        cfg = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            verify_mode=ssl.CERT_NONE,
            server_name=client.sni,
            max_data=1 << 24,
            max_stream_data=1 << 20,
            idle_timeout=30.0,
        )
        self.quic = QuicConnection(configuration=cfg)
        self.quic._ack_delay = 0.0  # ACK on the next packet we send anyway
        self.quic._loss._pacer = NoPacer()
        self.h3 = StaticQpackH3(self.quic)
        self.decoder = pylsqpack.Decoder(0, 0)
        self.transport: asyncio.DatagramTransport | None = None
        self.inflight: dict[int, list[Any]] = {}  # stream id -> response state
        self.ready = False
        self.dead = False
        self.flush_pending = False
        self.loop = asyncio.get_running_loop()
        self.handshake = self.loop.create_future()

    # ------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.quic.connect(self.client.addr, now=time.monotonic())
        self.flush()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.quic.receive_datagram(data, self.client.addr, now=time.monotonic())
        self.drain()
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self.flush)

    def error_received(self, exc: Exception) -> None:
        self.stats.error(f"socket: {type(exc).__name__}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True

    # ------------------------------------------------------------ QUIC / H3

    def flush(self) -> None:
        self.flush_pending = False
        if self.transport is None:
            return
        sendto = self.transport.sendto
        for data, _addr in self.quic.datagrams_to_send(now=time.monotonic()):
            sendto(data)

    def tick(self, now: float) -> None:
        timer = self.quic.get_timer()
        if timer is not None and timer <= now:
            self.quic.handle_timer(now=now)
            self.drain()
            self.flush()

    def drain(self) -> None:
        quic, stats, inflight = self.quic, self.stats, self.inflight
        event = quic.next_event()
        while event is not None:
            cls = event.__class__
            if cls is StreamDataReceived and event.stream_id & 3 == 0:
                state = inflight.get(event.stream_id)
                if state is not None:
                    self.response_data(state, event.data)
                    if event.end_stream:
                        self.done(event.stream_id)
            elif cls is StreamReset:
                if inflight.pop(event.stream_id, None) is not None:
                    stats.error(f"stream reset, code {event.error_code}")
                    self.request()
            elif cls is HandshakeCompleted:
                self.ready = True
                if not self.handshake.done():
                    self.handshake.set_result(None)
                for _ in range(self.client.streams):
                    self.request()
            elif cls is ConnectionTerminated:
                self.terminated(f"connection closed: {event.error_code} {event.reason_phrase}")
            else:
                self.h3.handle_event(event)  # control and QPACK streams
            event = quic.next_event()

    def response_data(self, state: list[Any], data: bytes) -> None:
        """Walk the H3 frames of a response: decode HEADERS, count DATA, skip the rest.

        state = [t0, status, unparsed bytes, payload bytes still to skip].
        """
        skip = state[3]
        if skip:
            n = min(skip, len(data))
            state[3] = skip - n
            if self.stats.counting:
                self.stats.nbytes += n
            data = data[n:]
        if state[2]:
            data = state[2] + data
            state[2] = b""
        i, end = 0, len(data)
        while i < end:
            head = i
            ftype, i = varint(data, i, end)
            if i < 0:
                state[2] = data[head:]
                return
            length, i = varint(data, i, end)
            if i < 0:
                state[2] = data[head:]
                return
            if ftype == 1:  # HEADERS
                if i + length > end:
                    state[2] = data[head:]
                    return
                if state[1] is None:
                    state[1] = self.status(data[i : i + length])
                i += length
            else:  # DATA (0) is counted; unknown and reserved frames are skipped
                take = min(length, end - i)
                if ftype == 0 and self.stats.counting:
                    self.stats.nbytes += take
                state[3] = length - take
                i += take

    def status(self, block: bytes) -> bytes:
        try:
            _control, headers = self.decoder.feed_header(0, block)
        except Exception as exc:  # DecompressionFailed, StreamBlocked
            return f"qpack {type(exc).__name__}".encode()
        for name, value in headers:
            if name == b":status":
                return value
        return b"no :status"

    def done(self, stream_id: int) -> None:
        state = self.inflight.pop(stream_id, None)
        if state is None:
            return
        stats = self.stats
        if state[1] == b"200" and not state[2] and not state[3]:
            if stats.counting:
                stats.ok += 1
                if len(stats.lat) < LAT_SAMPLES:
                    stats.lat.append(time.perf_counter() - state[0])
        else:
            stats.error(f"status {state[1]!r}" if state[1] != b"200" else "truncated response")
        self.request()

    def request(self) -> None:
        if self.client.stopping or self.dead:
            return
        stream_id = self.quic.get_next_available_stream_id()
        self.quic.send_stream_data(stream_id, self.client.request_frame, end_stream=True)
        self.inflight[stream_id] = [time.perf_counter(), None, b"", 0]

    def terminated(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = True
        for _ in self.inflight:
            self.stats.error(reason[:120])
        self.inflight.clear()
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if not self.dead:
            self.quic.close(error_code=0x100)  # H3_NO_ERROR
            self.flush()
            self.dead = True


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.addr = (args.host, args.port)
        self.sni = args.sni
        self.streams = args.streams
        self.stats = Stats()
        self.stopping = False
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", f"{args.sni}:{args.port}".encode()),
            (b":path", args.path.encode()),
            (b"user-agent", b"eg-bench-h3"),
        ]
        # Encoded once: an encoder without a dynamic table gives the same bytes for
        # every stream, valid whatever table size the server advertises.
        _encoder_stream, block = pylsqpack.Encoder().encode(0, headers)
        self.request_frame = encode_frame(FrameType.HEADERS, block)

    async def open(self) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_datagram_endpoint(lambda: Conn(self), remote_addr=self.addr)
        return conn


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = Client(args)
    stats = client.stats
    conns: list[Conn] = [await client.open() for _ in range(args.connections)]
    reconnects = [0] * len(conns)
    stop_tick = False

    async def ticker() -> None:
        while not stop_tick:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            for i, conn in enumerate(conns):
                if conn.dead:
                    if client.stopping or reconnects[i] >= MAX_RECONNECTS:
                        continue
                    reconnects[i] += 1
                    conns[i] = await client.open()
                    continue
                conn.tick(now)

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.handshake for c in conns), return_exceptions=True),
            args.handshake_timeout,
        )
    except TimeoutError:
        pass
    ready = sum(1 for c in conns if c.ready)
    stats.counting = True
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    if ready:
        await asyncio.sleep(args.duration)
    else:
        stats.errors += len(conns)
    elapsed = time.monotonic() - t0
    client_cpu = cpu_seconds() - cpu0
    stats.counting = False
    client.stopping = True
    for conn in conns:
        conn.close()
    stop_tick = True
    await asyncio.sleep(0.05)
    tick_task.cancel()
    return {
        "requests": stats.ok,
        "duration": elapsed,
        "errors": stats.errors,
        "error_detail": [f"{k} (x{v})" for k, v in sorted(stats.detail.items())][:3],
        "bytes": stats.nbytes,
        "connections": ready,
        "lat_ms": [x * 1000.0 for x in stats.lat],
        "client_cpu_s": client_cpu,
    }


def run_args(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run(args))


if __name__ == "__main__":
    main(__file__, __doc__.split("\n\n")[0], run_args, sys.argv[1:])
