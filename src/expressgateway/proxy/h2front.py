"""The HTTP/2 front: one client connection, many streams, each bridged to a
back by its own :class:`~expressgateway.proxy.stream.Stream`.

Flow control is the backpressure toward the client: request DATA is
acknowledged (WINDOW_UPDATE) only once it was handed to the upstream and
that upstream is not pushing back; while it is, the credit is withheld and
the client stops sending on that stream. Toward the client, ``send_body``
takes only what the client's window allows; the rest waits (one upstream
read at most) and the upstream is paused until ``WindowOpened``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any, cast

from expressgateway.codec.h2.errors import H2ConnectionError
from expressgateway.codec.h2.server import H2ServerCodec
from expressgateway.io.cork import cork
from expressgateway.observability.metrics import REGISTRY
from expressgateway.proxy.muxfront import MuxFront, MuxStreamFront

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context

log = logging.getLogger("expressgateway.h2")

_CONN_ERRORS = REGISTRY.counter(
    "h2_connection_errors_total",
    "HTTP/2 connections ended by the gateway with GOAWAY, by reason (rapid_reset, "
    "continuation_flood, hpack_bomb, settings_flood, ping_flood, keepalive_timeout, ...).",
    ("listener", "reason"),
)
_STREAMS = REGISTRY.counter("h2_streams_total", "HTTP/2 streams opened by clients.", ("listener",))

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class H2Front(MuxFront, asyncio.Protocol):
    """One HTTP/2 client connection (TLS with ALPN h2, or prior knowledge)."""

    def __init__(
        self,
        ctx: L7Context,
        admitted_ip: str | None = None,
        preface: bytes = b"",
        sni: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.sni = sni
        self.pre_admitted = admitted_ip is not None
        self.admitted = False
        self.peer_ip = admitted_ip or ""
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, MuxStreamFront] = {}
        self.parked: list[Any] = []
        self.loop = asyncio.get_running_loop()
        self.deadline = math.inf
        self.closed = False
        self.draining = False
        #: a write is deferred to the end of this loop iteration (io/cork.py)
        self.corked = False
        self._cork = cork()
        self.preface = preface
        http = ctx.listener.http
        sec = ctx.listener.h2_security
        rt = ctx.config.runtime
        self.codec = H2ServerCodec.from_config(
            sec,
            max_request_body_bytes=http.max_request_body_bytes,
            max_headers=http.max_headers,
            scheme=ctx.scheme,
            underscore_policy=rt.header_underscore_policy,
        )
        self._streams_total = _STREAMS.labels(ctx.name)

    # -- connection -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else self.peer_ip
        ctx = self.ctx
        if not self.pre_admitted and not ctx.admission.admit(ctx.name, self.peer_ip):
            transport.abort()
            return
        self.admitted = True
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        transport.write(self.codec.initiate())
        ctx.sweeper.add(self)
        self.deadline = self.loop.time() + ctx.sweeper.interval
        if self.preface:
            data, self.preface = self.preface, b""
            self.data_received(data)

    def take_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """Continue a connection whose first bytes (the HTTP/2 preface) an
        HTTP/1.1 front saw: prior-knowledge HTTP/2 on a cleartext listener."""
        self.pre_admitted = True
        transport.set_protocol(self)
        self.preface = data
        self.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closed = True
        if self.admitted:
            self.admitted = False
            self.ctx.admission.release(self.ctx.name, self.peer_ip)
            self.ctx.sweeper.discard(self)
        streams, self.streams = self.streams, {}
        for front in streams.values():
            if front.stream is not None:
                front.stream.on_front_closed()
        self.release_parked()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.feed(data, self.loop.time())
        except H2ConnectionError as err:
            self._connection_error(err)
            return
        self._dispatch(events)
        self.flush()

    def _connection_error(self, err: H2ConnectionError) -> None:
        _CONN_ERRORS.labels(self.ctx.name, err.reason).inc()
        log.warning(
            "http/2 connection error", extra={"listener": self.ctx.name, "reason": err.reason}
        )
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.flush_now()
            self.transport.close()

    def flush(self) -> None:
        """Write what the codec has queued at the end of this event-loop
        iteration (:mod:`expressgateway.io.cork`): the responses of every
        backend read in the iteration (and the frames h2 queued meanwhile)
        leave in one TLS record and one send, not one per response."""
        if not self.corked and self.transport is not None:
            self._cork.defer(self)

    def flush_now(self) -> None:
        self.corked = False
        self.unflushed = 0
        data = self.codec.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    # -- backpressure from the client's socket ---------------------------------------------
    def pause_writing(self) -> None:
        for front in self.streams.values():
            stream = front.stream
            if stream is not None and stream.back is not None:
                stream.back.pause_response()

    def resume_writing(self) -> None:
        for front in self.streams.values():
            stream = front.stream
            if stream is not None and stream.back is not None and not front.outbox:
                stream.back.resume_response()

    # -- timers ------------------------------------------------------------------------------
    def on_deadline(self, now: float) -> None:
        try:
            events = self.codec.check_timeouts(now)
        except H2ConnectionError as err:
            self._connection_error(err)
            return
        if events:
            self._dispatch(events)
        for front in list(self.streams.values()):
            front.check(now)
        self.flush()
        self.deadline = now + self.ctx.sweeper.interval

    def drain(self) -> None:
        """Graceful shutdown: GOAWAY, let open streams finish."""
        self.draining = True
        self.release_parked()
        self.codec.shutdown(self.loop.time())
        self.flush()
        if not self.streams:
            self.close()
