"""The HTTP/3 back: exchanges multiplexed over QUIC connections to ``h3``
backends.

:class:`H3Upstream` is one QUIC connection (its own connected UDP socket);
:class:`H3StreamBack` is one exchange on it, the
:class:`~expressgateway.proxy.interfaces.Back` a
:class:`~expressgateway.proxy.stream.Stream` drives. Certificates are
verified (``tls_ca_path``, name ``tls_verify_hostname``) unless
``tls_verify_peer = false``, which is logged loudly.

Pool: up to :data:`PER_PEER` connections per backend and :data:`TOTAL` per
worker; a stream goes on the live connection with the fewest streams; a
connection idle for the pool's ``idle_timeout`` or older than its
``max_age`` is closed; a connection is used only while its handshake is
done, it has not been closed or told GOAWAY, and it can open a stream.

Backpressure as on the front: response bytes are credited back to the
backend only once written on to the client (and while the client keeps
up); request bytes queue in QUIC's send buffer and the client's stream is
paused while more than :data:`~.h3front.STREAM_HIGH` wait for ACKs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from typing import TYPE_CHECKING, cast

from aioquic.h3.connection import H3_ALPN, ErrorCode
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress

from expressgateway.codec.h2.events import GoAwayReceived
from expressgateway.codec.h3.client import H3ClientCodec
from expressgateway.codec.h3.quic import FlowQuic
from expressgateway.core.errors import UpstreamError
from expressgateway.core.events import (
    Body,
    Headers,
)
from expressgateway.observability.metrics import REGISTRY
from expressgateway.proxy.h3front import STREAM_HIGH, STREAM_LOW, STREAM_WINDOW
from expressgateway.proxy.muxback import MuxStreamBack
from expressgateway.upstream.endpoint import Endpoint

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.stream import Stream

log = logging.getLogger("expressgateway.h3back")

PER_PEER = 4
TOTAL = 128
#: streams one upstream connection carries at once
MAX_STREAMS = 100

_CONNECTIONS = REGISTRY.counter(
    "h3_upstream_connections_total", "QUIC connections opened to h3 backends.", ()
)
_EXHAUSTED = REGISTRY.counter(
    "h3_upstream_pool_exhausted_total",
    "Requests refused (503) because every h3 upstream connection was full.",
    (),
)

H3Key = tuple[str, int, str, bool, str]


def h3_key(ep: Endpoint) -> H3Key:
    return (ep.host, ep.port, ep.sni, ep.tls_verify_peer, ep.tls_ca_path or "")


class H3StreamBack(MuxStreamBack):
    """One exchange on an upstream HTTP/3 connection: request bytes go to
    QUIC's send buffer; the client is paused while too many wait for ACKs."""

    __slots__ = ("req_paused",)

    def __init__(self, conn: H3Upstream, reused: bool) -> None:
        super().__init__(conn, reused)
        self.req_paused = False

    def send_body(self, data: bytes, end_stream: bool) -> None:
        if self.sid < 0:
            return
        codec = self.conn.codec
        codec.send_body(self.sid, data, end_stream)
        if not end_stream and not self.req_paused and codec.buffered(self.sid) > STREAM_HIGH:
            self.req_paused = True
            self.conn.blocked[self.sid] = self
            if self.stream is not None:
                self.stream.front.pause_request()

    def window_opened(self) -> None:
        self.req_paused = False
        if self.stream is not None:
            self.stream.front.resume_request()

    def send_trailers(self, headers: Headers) -> None:
        if self.sid >= 0:
            self.conn.codec.send_trailers(self.sid, headers)


class H3Upstream(asyncio.DatagramProtocol):
    """One QUIC connection to an HTTP/3 backend, shared by many streams."""

    def __init__(self, ctx: L7Context, key: H3Key, conf: QuicConfiguration) -> None:
        self.ctx = ctx
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.quic = FlowQuic(window=STREAM_WINDOW, configuration=conf)
        self.codec = H3ClientCodec(
            self.quic,
            max_headers=ctx.listener.http.max_headers,
            max_field_section=ctx.listener.h2_security.max_header_list_size,
            max_streams=MAX_STREAMS,
        )
        self.transport: asyncio.DatagramTransport | None = None
        self.addr: NetworkAddress | None = None
        self.streams: dict[int, H3StreamBack] = {}
        self.blocked: dict[int, H3StreamBack] = {}
        self.created = time.monotonic()
        self.idle_since = self.loop.time()
        self.used = False
        self.closed = False
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.flush_pending = False
        self.deadline = math.inf
        #: the endpoint whose connection count this connection is in
        self.endpoint: Endpoint | None = None

    def usable(self) -> bool:
        return (
            not self.closed
            and self.codec.handshake_done
            and self.codec.can_open_stream()
            and time.monotonic() - self.created < self.ctx.pool.max_age
        )

    def new_back(self) -> H3StreamBack:
        back = H3StreamBack(self, reused=self.used)
        self.used = True
        return back

    # -- asyncio ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        peer = self.transport.get_extra_info("peername")
        self.addr = (peer[0], peer[1])
        self.quic.connect(self.addr, now=self.loop.time())
        self.transmit()
        self.ctx.sweeper.add(self)
        self.deadline = self.loop.time() + 1.0

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:  # type: ignore[override]
        if self.closed:
            return
        self.quic.receive_datagram(data, addr, self.loop.time())
        self._process()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable before the handshake: nobody listens there
        if not self.codec.handshake_done and isinstance(exc, ConnectionRefusedError):
            self._terminated("connect_refused", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._terminated("upstream_closed")

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = None
        if self.closed:
            return
        self.quic.handle_timer(self.loop.time())
        self._process()

    def _process(self) -> None:
        codec = self.codec
        events = codec.events()
        if codec.handshake_done and not self.ready.done():
            self.ready.set_result(None)
        touched: list[Stream] = []
        streams = self.streams
        for sid, ev in events:
            if isinstance(ev, GoAwayReceived):
                continue  # streams past it come as Reset(REFUSED_STREAM)
            back = streams.get(sid)
            if back is None:
                if isinstance(ev, Body) and ev.data:
                    codec.ack_data(sid, len(ev.data))
                continue
            stream = back.stream
            back.on_event(ev)
            if stream is not None:
                touched.append(stream)
        if self.blocked:
            for sid, back in list(self.blocked.items()):
                if codec.buffered(sid) <= STREAM_LOW:
                    del self.blocked[sid]
                    back.window_opened()
        if codec.terminated is not None:
            term = codec.terminated
            reason = "upstream_closed" if term.error_code in (0, 0x100) else "upstream_reset"
            self._terminated(reason)
        else:
            self.flush()
        for stream in touched:
            stream.flush()

    def flush(self) -> None:
        if not self.flush_pending and not self.closed:
            self.flush_pending = True
            self.loop.call_soon(self.transmit)

    def transmit(self) -> None:
        self.flush_pending = False
        if self.closed or self.transport is None:
            return
        quic = self.quic
        loop = self.loop
        sendto = self.transport.sendto
        for data, _addr in quic.datagrams_to_send(now=loop.time()):
            sendto(data)
        timer_at = quic.get_timer()
        if timer_at != self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = None if timer_at is None else loop.call_at(timer_at, self._on_timer)
            self.timer_at = timer_at

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)
        self.blocked.pop(sid, None)
        if not self.streams:
            self.idle_since = self.loop.time()

    def _terminated(self, reason: str, exc: OSError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.endpoint is not None:
            self.endpoint.connections -= 1
            self.endpoint = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.ready.done():
            term = self.codec.terminated
            detail = term.reason_phrase if term is not None else reason
            self.ready.set_exception(exc or ConnectionError(f"QUIC handshake failed: {detail}"))
            self.ready.exception()
        self.ctx.sweeper.discard(self)
        conns = self.ctx.pool.h3.get(self.key)
        if conns is not None and self in conns:
            conns.remove(self)
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        # a stream the backend never answered was not processed: retry is safe
        for back in streams.values():
            back.connection_failed(reason, not back.head_seen)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if not self.closed:
            self.quic.close(error_code=ErrorCode.H3_NO_ERROR)
            self.transmit()
            self._terminated("upstream_closed")

    def on_deadline(self, now: float) -> None:
        pool = self.ctx.pool
        old = time.monotonic() - self.created > pool.max_age
        if self.streams:
            self.idle_since = now
        elif old or now - self.idle_since > pool.idle_timeout:
            self.close()
            return
        self.deadline = now + 1.0


class H3Connector:
    """Gets an :class:`H3StreamBack` for an endpoint: on the least busy
    usable connection, else on a new one within the caps."""

    def __init__(self) -> None:
        self._opening: dict[H3Key, asyncio.Future[H3Upstream]] = {}
        self._confs: dict[H3Key, QuicConfiguration] = {}
        self._warned: set[H3Key] = set()

    def _conf(self, ep: Endpoint, key: H3Key) -> QuicConfiguration:
        conf = self._confs.get(key)
        if conf is None:
            conf = QuicConfiguration(
                is_client=True,
                alpn_protocols=H3_ALPN,
                server_name=ep.sni,
                max_stream_data=STREAM_WINDOW,
                max_data=1 << 20,
                idle_timeout=60.0,
            )
            if ep.tls_verify_peer:
                conf.verify_mode = ssl.CERT_REQUIRED
                if ep.tls_ca_path:
                    conf.load_verify_locations(cafile=ep.tls_ca_path)
            else:
                conf.verify_mode = ssl.CERT_NONE
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning(
                        "h3 backend certificate NOT verified (tls_verify_peer = false)",
                        extra={"backend": ep.name},
                    )
            self._confs[key] = conf
        return conf

    def take(self, ctx: L7Context, ep: Endpoint) -> H3StreamBack | None:
        conns: list[H3Upstream] = ctx.pool.h3.get(h3_key(ep), [])
        best: H3Upstream | None = None
        for conn in conns:
            if conn.usable() and (best is None or len(conn.streams) < len(best.streams)):
                best = conn
        return best.new_back() if best is not None else None

    async def connect(self, ctx: L7Context, ep: Endpoint) -> H3StreamBack:
        key = h3_key(ep)
        while True:
            back = self.take(ctx, ep)
            if back is not None:
                return back
            opening = self._opening.get(key)
            if opening is None:
                break
            await asyncio.shield(opening)
        pool = ctx.pool
        conns: list[H3Upstream] = pool.h3.setdefault(key, [])
        total = sum(len(c) for c in pool.h3.values())
        if len(conns) >= PER_PEER or total >= TOTAL:
            # every connection is full or closing: shed rather than queue
            _EXHAUSTED.inc()
            raise UpstreamError("h3_pool_exhausted", status=503)
        fut: asyncio.Future[H3Upstream] = asyncio.get_running_loop().create_future()
        self._opening[key] = fut
        try:
            conn = await self._open(ctx, ep, key)
            conn.endpoint = ep
            ep.connections += 1
            conns.append(conn)
            fut.set_result(conn)
            return conn.new_back()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            if self._opening.get(key) is fut:
                del self._opening[key]

    async def _open(self, ctx: L7Context, ep: Endpoint, key: H3Key) -> H3Upstream:
        loop = asyncio.get_running_loop()
        conf = self._conf(ep, key)
        _, proto = await loop.create_datagram_endpoint(
            lambda: H3Upstream(ctx, key, conf), remote_addr=(ep.host, ep.port)
        )
        conn = proto
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), ctx.connect_timeout)
        except BaseException:
            conn.close()
            raise
        _CONNECTIONS.inc()
        return conn
