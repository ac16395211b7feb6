"""The HTTP/3 front: one QUIC connection, many streams, each bridged to a
back by its own :class:`~expressgateway.proxy.stream.Stream` (the stream
handling is shared with HTTP/2 in :mod:`.muxfront`).

Backpressure both ways is QUIC flow control:

- request body bytes are credited back (MAX_STREAM_DATA) only once written
  on upstream and while the upstream is not pushing back
  (:class:`~expressgateway.codec.h3.quic.FlowQuic`), so a slow backend
  stops the client after about one window (64 KiB) per stream;
- response bytes queue in QUIC's send buffer; once a stream holds more than
  :data:`STREAM_HIGH` unacknowledged bytes its upstream is paused, and
  resumed when the client's ACKs bring it under :data:`STREAM_LOW`.

Packets are built once per event-loop turn (``flush`` asks the endpoint for
a ``transmit`` at the end of the iteration, shared by every connection of
the socket), so a burst of writes becomes as few datagrams as possible.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aioquic.h3.connection import ErrorCode
from aioquic.quic.connection import NetworkAddress

from expressgateway.codec.h3.quic import FlowQuic
from expressgateway.codec.h3.server import H3ServerCodec
from expressgateway.core.events import Headers
from expressgateway.observability.metrics import REGISTRY
from expressgateway.proxy.muxfront import MuxFront, MuxStreamFront

if TYPE_CHECKING:
    from expressgateway.io.quic import QuicEndpoint
    from expressgateway.proxy.context import L7Context

log = logging.getLogger("expressgateway.h3")

#: receive window per request stream (credit withheld past it)
STREAM_WINDOW = 64 * 1024
#: unacknowledged response bytes per stream before the upstream is paused
STREAM_HIGH = 256 * 1024
STREAM_LOW = 64 * 1024
#: longest wait for the client's ACKs before a requested close goes out anyway
CLOSE_LINGER = 5.0

_STREAMS = REGISTRY.counter("h3_streams_total", "HTTP/3 request streams opened.", ("listener",))
_RECYCLED = REGISTRY.counter(
    "quic_connections_recycled_total",
    "HTTP/3 connections closed after max_requests_per_h3_connection requests.",
    ("listener",),
)
_REFUSED_STREAMS = REGISTRY.counter(
    "h3_streams_refused_total",
    "HTTP/3 streams refused with H3_REQUEST_REJECTED after the gateway's GOAWAY.",
    ("listener",),
)


class H3StreamFront(MuxStreamFront):
    """One HTTP/3 request stream: response bytes go straight to QUIC's send
    buffer; the upstream pauses while too many wait for the client's ACKs."""

    __slots__ = ("out_paused",)

    conn: H3Front

    def __init__(self, conn: H3Front, sid: int) -> None:
        super().__init__(conn, sid)
        self.out_paused = False

    def send_body(self, data: bytes, end_stream: bool) -> None:
        if self.drop_body:
            return
        codec = self.conn.codec
        codec.send_body(self.sid, data, end_stream)
        if not end_stream and not self.out_paused and codec.buffered(self.sid) > STREAM_HIGH:
            self.out_paused = True
            self.conn.blocked[self.sid] = self
            stream = self.stream
            if stream is not None and stream.back is not None:
                stream.back.pause_response()

    def window_opened(self) -> None:
        self.out_paused = False
        stream = self.stream
        if stream is not None and stream.back is not None:
            stream.back.resume_response()

    def send_trailers(self, headers: Headers) -> None:
        if not self.drop_body:
            self.conn.codec.send_trailers(self.sid, headers)

    def stream_done(self) -> None:
        self.done = True
        self.stream = None
        self.conn.blocked.pop(self.sid, None)
        self.conn.forget(self)


class H3Front(MuxFront):
    """One HTTP/3 client connection, fed datagrams by its endpoint."""

    version = "h3"

    def __init__(
        self,
        ctx: L7Context,
        endpoint: QuicEndpoint,
        addr: NetworkAddress,
        quic_kwargs: dict[str, Any],
    ) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.addr = addr
        self.peer_ip = str(addr[0])
        self.sni = None  # aioquic does not expose the client's SNI on the server
        self.loop = asyncio.get_running_loop()
        self.quic = FlowQuic(window=STREAM_WINDOW, **quic_kwargs)
        http = ctx.listener.http
        rt = ctx.config.runtime
        sec = ctx.listener.h2_security
        self.codec = H3ServerCodec(
            self.quic,
            scheme=b"https",
            max_headers=http.max_headers,
            max_field_section=sec.max_header_list_size,
            max_request_body_bytes=http.max_request_body_bytes,
            underscore_policy=rt.header_underscore_policy,
            max_requests=rt.max_requests_per_h3_connection,
        )
        self.streams: dict[int, MuxStreamFront] = {}
        self.parked: list[Any] = []
        self.blocked: dict[int, H3StreamFront] = {}
        self.draining = False
        self.closed = False
        self.cids: list[bytes] = [self.quic.host_cid]
        if "original_destination_connection_id" in quic_kwargs:
            self.cids.append(quic_kwargs["retry_source_connection_id"])
        for cid in self.cids:
            endpoint.add_cid(cid, self)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.flush_pending = False
        #: when close() was asked (the close waits for the last bytes' ACKs)
        self.closing_since: float | None = None
        self._streams_total = _STREAMS.labels(ctx.name)
        self.deadline = self.loop.time() + ctx.sweeper.interval
        ctx.sweeper.add(self)

    def stream_front(self, sid: int) -> MuxStreamFront:
        return H3StreamFront(self, sid)

    # -- datagrams and timers -------------------------------------------------------
    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        if self.closed:
            return
        self.quic.receive_datagram(data, addr, self.loop.time())
        self._process()

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
        if codec.cid_changes:
            for issued, cid in codec.cid_changes:
                if issued:
                    self.cids.append(cid)
                    self.endpoint.add_cid(cid, self)
                else:
                    self.endpoint.remove_cid(cid)
            codec.cid_changes.clear()
        if events:
            self._dispatch(events)
        if self.blocked:
            self._check_blocked()
        if codec.terminated is not None:
            self._terminated()
            return
        if codec.goaway_at is not None and not self.streams and not self.draining:
            if codec.rejected_after_goaway or codec.requests >= codec.max_requests > 0:
                _RECYCLED.labels(self.ctx.name).inc()
            self.draining = True
            self.release_parked()
            self.close()
        if self.closing_since is not None:
            self._close_when_acked()
        if codec.rejected_after_goaway:
            _REFUSED_STREAMS.labels(self.ctx.name).inc(codec.rejected_after_goaway)
            codec.rejected_after_goaway = 0
        self.flush()

    def _check_blocked(self) -> None:
        codec = self.codec
        for sid, front in list(self.blocked.items()):
            if codec.buffered(sid) <= STREAM_LOW:
                del self.blocked[sid]
                front.window_opened()

    def flush(self) -> None:
        if not self.flush_pending and not self.closed:
            self.flush_pending = True
            self.endpoint.want_transmit(self)

    def flush_now(self) -> None:
        self.transmit()

    def transmit(self) -> None:
        self.flush_pending = False
        self.unflushed = 0
        if self.closed:
            return
        quic = self.quic
        loop = self.loop
        datagrams = quic.datagrams_to_send(now=loop.time())
        if datagrams:
            self.endpoint.send_datagrams(datagrams)
        timer_at = quic.get_timer()
        if timer_at != self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = None if timer_at is None else loop.call_at(timer_at, self._on_timer)
            self.timer_at = timer_at

    # -- lifecycle ----------------------------------------------------------------------
    def _terminated(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ctx.sweeper.discard(self)
        self.endpoint.closed(self, self.cids)
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for front in streams.values():
            if front.stream is not None:
                front.stream.on_front_closed()
        self.release_parked()

    def close(self) -> None:
        """Close the connection (CONNECTION_CLOSE H3_NO_ERROR) once what the
        streams sent has been acknowledged (a close discards unsent and
        unacknowledged data, and a lost packet could not be resent), or
        after :data:`CLOSE_LINGER` seconds; it is forgotten once QUIC's
        closing period ends."""
        if self.closing_since is None:
            self.closing_since = self.loop.time()
        self.flush()
        self._close_when_acked()

    def _close_when_acked(self) -> None:
        if self.closing_since is None or self.quic._close_event is not None:
            return
        if self._unacked() and self.loop.time() - self.closing_since < CLOSE_LINGER:
            return
        self.quic.close(error_code=ErrorCode.H3_NO_ERROR)
        self.flush()

    def _unacked(self) -> bool:
        """Some request stream still has response bytes or its FIN in flight."""
        for sid, qs in self.quic._streams.items():
            if sid % 4 == 0 and not qs.sender.is_finished:
                sender = qs.sender
                if sender._buffer_stop > sender._buffer_start or (
                    sender._buffer_fin is not None and not sender._acked_fin
                ):
                    return True
        return False

    def abort(self) -> None:
        self.quic.close(error_code=ErrorCode.H3_NO_ERROR)
        self.transmit()
        self._terminated()

    def drain(self) -> None:
        """Graceful shutdown: GOAWAY; close once open streams finish."""
        self.draining = True
        self.release_parked()
        self.codec.goaway()
        self.flush()
        if not self.streams:
            self.close()

    def on_deadline(self, now: float) -> None:
        for front in list(self.streams.values()):
            front.check(now)
        if self.closing_since is not None:
            self._close_when_acked()
        self.flush()
        self.deadline = now + self.ctx.sweeper.interval


def front_factory(ctx: L7Context) -> Any:
    def make(endpoint: QuicEndpoint, addr: NetworkAddress, kwargs: dict[str, Any]) -> H3Front:
        return H3Front(ctx, endpoint, addr, kwargs)

    return make
