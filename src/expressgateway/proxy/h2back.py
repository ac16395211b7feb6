"""The HTTP/2 back: many exchanges multiplexed over few upstream connections.

:class:`H2Upstream` is one connection to a backend (TLS with ALPN ``h2``, or
cleartext prior knowledge); :class:`H2StreamBack` is one exchange on it and
is the :class:`~expressgateway.proxy.interfaces.Back` a
:class:`~expressgateway.proxy.stream.Stream` drives. Response DATA is
acknowledged only once handed downstream and while the client is not
pushing back, so a slow client stalls only its own stream's window.
Connections are shared per peer (same address, TLS, SNI, verification) and
a new one is opened only when every live one is at the peer's
``SETTINGS_MAX_CONCURRENT_STREAMS`` or draining (GOAWAY).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, cast

from expressgateway.codec.h2.client import H2ClientCodec
from expressgateway.codec.h2.errors import H2ConnectionError
from expressgateway.codec.h2.events import GoAwayReceived
from expressgateway.core.events import (
    Body,
    Headers,
)
from expressgateway.io.sockets import configure_upstream
from expressgateway.proxy.h2outbox import Outbox
from expressgateway.proxy.muxback import MuxStreamBack
from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.pool import PeerKey, open_connection

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.stream import Stream

log = logging.getLogger("expressgateway.h2back")

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class H2StreamBack(MuxStreamBack):
    """One exchange on an upstream HTTP/2 connection: request bytes go out
    within the backend's flow-control window, the rest waits in the outbox."""

    __slots__ = ("outbox",)

    def __init__(self, conn: H2Upstream, reused: bool) -> None:
        super().__init__(conn, reused)
        self.outbox = Outbox()

    def send_body(self, data: bytes, end_stream: bool) -> None:
        if self.sid < 0:
            return
        sent_all = self.outbox.send_body(self.conn.codec, self.sid, data, end_stream)
        if not sent_all and self.stream is not None:
            self.stream.front.pause_request()

    def send_trailers(self, headers: Headers) -> None:
        if self.sid >= 0:
            self.outbox.send_trailers(self.conn.codec, self.sid, headers)

    def window_opened(self) -> None:
        if self.outbox.window_opened(self.conn.codec, self.sid) and self.stream is not None:
            self.stream.front.resume_request()


class H2Upstream(asyncio.Protocol):
    """One HTTP/2 connection to a backend, shared by many streams."""

    def __init__(self, ctx: L7Context, key: PeerKey, scheme: bytes) -> None:
        self.ctx = ctx
        self.key = key
        sec = ctx.listener.h2_security
        self.codec = H2ClientCodec(
            scheme=scheme,
            max_header_list_size=sec.max_header_list_size,
            max_headers=ctx.listener.http.max_headers,
            max_send_buf_size=sec.max_send_buf_size,
            keep_alive_interval_ms=sec.keep_alive_interval_ms,
            keep_alive_timeout_ms=sec.keep_alive_timeout_ms,
            initial_stream_window_size=sec.initial_stream_window_size,
            initial_connection_window_size=sec.initial_connection_window_size,
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2StreamBack] = {}
        self.created = time.monotonic()
        self.idle_since = self.created
        self.closed = False
        self.used = False
        #: the server's preface (a SETTINGS frame, RFC 9113 §3.4) has arrived
        self.settings_seen = False
        self.loop = asyncio.get_running_loop()
        self.settings_ready: asyncio.Future[None] = self.loop.create_future()
        self.deadline = math.inf
        #: the endpoint whose connection count this connection is in
        self.endpoint: Endpoint | None = None

    def usable(self) -> bool:
        return (
            self.transport is not None
            and not self.closed
            and not self.transport.is_closing()
            # Until the peer's SETTINGS arrive its stream limit is unknown (h2
            # would assume 100): one stream only, so none gets REFUSED_STREAM.
            and (self.settings_seen or not self.streams)
            and self.codec.can_open_stream()
            and time.monotonic() - self.created < self.ctx.pool.max_age
        )

    def forget(self, sid: int) -> None:
        self.streams.pop(sid, None)

    def new_back(self) -> H2StreamBack:
        back = H2StreamBack(self, reused=self.used)
        self.used = True
        return back

    # -- asyncio ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            configure_upstream(sock)
        transport.write(self.codec.initiate())
        self.ctx.sweeper.add(self)
        self.deadline = self.loop.time() + 1.0

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.feed(data, self.loop.time())
        except H2ConnectionError as err:
            self._fail(err.reason)
            return
        if not self.settings_seen:
            self.settings_seen = True
            self.settings_ready.set_result(None)
        touched: list[Stream] = []
        streams = self.streams
        for sid, ev in events:
            if isinstance(ev, GoAwayReceived):
                continue  # unprocessed streams come as Reset(REFUSED_STREAM)
            back = streams.get(sid)
            if back is None:
                if isinstance(ev, Body) and ev.data:
                    self.codec.ack_data(sid, len(ev.data))
                continue
            stream = back.stream
            back.on_event(ev)
            if stream is not None:
                touched.append(stream)
        self.flush()
        for stream in touched:
            stream.flush()

    def pause_writing(self) -> None:
        for back in self.streams.values():
            if back.stream is not None:
                back.stream.front.pause_request()

    def resume_writing(self) -> None:
        for back in self.streams.values():
            if back.stream is not None and not back.outbox:
                back.stream.front.resume_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed = True
        if self.endpoint is not None:
            self.endpoint.connections -= 1
            self.endpoint = None
        if not self.settings_ready.done():
            self.settings_ready.set_result(None)
        self.ctx.sweeper.discard(self)
        registry = self.ctx.pool.h2.get(self.key)
        if registry is not None and self in registry:
            registry.remove(self)
        streams, self.streams = self.streams, {}
        for back in streams.values():
            back.connection_failed("upstream_reset")

    def _fail(self, reason: str) -> None:
        self.flush()
        streams, self.streams = self.streams, {}
        for back in streams.values():
            back.connection_failed(reason)
        if self.transport is not None:
            self.transport.close()

    def flush(self) -> None:
        data = self.codec.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def on_deadline(self, now: float) -> None:
        try:
            events = self.codec.check_timeouts(now)
        except H2ConnectionError as err:
            self._fail(err.reason)
            return
        for sid, ev in events:
            back = self.streams.get(sid)
            if back is not None:
                stream = back.stream
                back.on_event(ev)
                if stream is not None:
                    stream.flush()
        self.flush()
        pool = self.ctx.pool
        expired = (
            now - self.idle_since > pool.idle_timeout
            or time.monotonic() - self.created > pool.max_age
        )
        if self.streams:
            self.idle_since = now
        elif expired and self.transport is not None:
            self.transport.close()
        self.deadline = now + 1.0


class H2Connector:
    """Gets an :class:`H2StreamBack` for an endpoint: on a live shared
    connection when one can open a stream, else on a new connection (only
    one connection is being opened per peer at a time)."""

    def __init__(self) -> None:
        self._opening: dict[PeerKey, asyncio.Future[H2Upstream]] = {}

    def take(self, ctx: L7Context, ep: Endpoint) -> H2StreamBack | None:
        conns: list[H2Upstream] = ctx.pool.h2.get(ep.key, [])
        for conn in conns:
            if conn.usable():
                return conn.new_back()
        return None

    async def connect(self, ctx: L7Context, ep: Endpoint) -> H2StreamBack:
        key = ep.key
        waited: set[H2Upstream] = set()
        while True:
            back = self.take(ctx, ep)
            if back is not None:
                return back
            opening = self._opening.get(key)
            if opening is not None:
                # Another request is opening a connection to this peer: wait
                # for it, then look again (it may already be full).
                await asyncio.shield(opening)
                continue
            # A fresh connection whose SETTINGS have not arrived yet may have
            # room: wait for them once rather than open another connection.
            conns: list[H2Upstream] = ctx.pool.h2.get(key, [])
            young = [c for c in conns if not c.settings_seen and not c.closed and c not in waited]
            if not young:
                break
            waited.update(young)
            await asyncio.wait([c.settings_ready for c in young], timeout=ctx.connect_timeout)
        fut: asyncio.Future[H2Upstream] = asyncio.get_running_loop().create_future()
        self._opening[key] = fut
        try:
            pool = ctx.pool
            ssl_ctx = pool.ssl_context(ep, alpn=("h2",)) if ep.tls else None
            scheme = b"https" if ep.tls else b"http"
            proto = await open_connection(
                lambda: H2Upstream(ctx, key, scheme), ep, ssl_ctx, ctx.connect_timeout
            )
            conn = cast(H2Upstream, proto)
            conn.endpoint = ep
            ep.connections += 1
            pool.h2.setdefault(key, []).append(conn)
            pool.count_new()
            fut.set_result(conn)
            return conn.new_back()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            if self._opening.get(key) is fut:
                del self._opening[key]
