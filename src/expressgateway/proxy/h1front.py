"""The HTTP/1.1 front: one client connection, one request at a time.

Pipelined requests wait in the codec until the current response is done.
Timers are deadlines checked by the worker's sweeper:
- header timeout (idle keep-alive and slowloris): no complete head in time
  -> close;
- body timeout (slow POST): no request-body progress in time -> 408;
- head timeout: upload done, no response head in time -> 504;
- total timeout: a request's whole exchange -> 504, or abort after the head.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, cast

from expressgateway.codec.h1.server import H1ServerCodec
from expressgateway.core.errors import DownstreamError, ProxyError
from expressgateway.core.events import (
    Body,
    Event,
    Headers,
    Informational,
    RequestHead,
    ResponseHead,
    Trailers,
    TunnelData,
)
from expressgateway.io.cork import CORK_LIMIT, cork
from expressgateway.observability.metrics import REGISTRY
from expressgateway.proxy.checks import is_grpc, sni_mismatch
from expressgateway.proxy.clock import (
    BODY,
    IDLE,
    WAIT_HEAD,
    request_progress,
    request_started,
    response_started,
)
from expressgateway.proxy.forwarding import upstream_head
from expressgateway.proxy.h1back import H1Back
from expressgateway.proxy.stream import Stream
from expressgateway.upstream.endpoint import Endpoint
from expressgateway.upstream.pool import Pool, peer_key

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.interfaces import Back
    from expressgateway.proxy.websocket import WsTunnel

log = logging.getLogger("expressgateway.h1")

_SLOWLORIS = REGISTRY.counter(
    "security_slowloris_reaped_total",
    "Connections closed because a request head did not arrive within header_timeout_ms.",
    ("listener",),
)
_SLOW_POST = REGISTRY.counter(
    "security_slow_post_total",
    "Requests answered 408 because the body made no progress within body_timeout_ms.",
    ("listener",),
)

# phases of the connection
TUNNEL, CLOSING = 4, 5  # after clock.IDLE, BODY, WAIT_HEAD, RESPONDING
# reasons to stop reading the client (a bit each)
P_CONNECT, P_BACKPRESSURE, P_PIPELINE = 1, 2, 4

#: the client connection preface of HTTP/2 (RFC 9113 §3.4)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class H1Front(asyncio.Protocol):
    __slots__ = (
        "_cork",
        "_wbuf",
        "_wsize",
        "admitted",
        "codec",
        "corked",
        "ctx",
        "deadline",
        "early",
        "got_bytes",
        "keep_alive",
        "loop",
        "park_slot",
        "parked",
        "paused",
        "peer_ip",
        "phase",
        "pre_admitted",
        "request_method",
        "requests",
        "sni",
        "stream",
        "total_deadline",
        "transport",
        "tunnel",
    )

    def __init__(self, ctx: L7Context, admitted_ip: str | None = None) -> None:
        self.ctx = ctx
        self.pre_admitted = admitted_ip is not None
        self.early = bytearray()
        http = ctx.listener.http
        rt = ctx.config.runtime
        self.codec = H1ServerCodec(
            max_header_bytes=http.max_header_bytes,
            max_headers=http.max_headers,
            max_request_body_bytes=http.max_request_body_bytes,
            underscore_policy=rt.header_underscore_policy,
            strict_te=ctx.config.security.strict_te,
            scheme=ctx.scheme,
        )
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.peer_ip = ""
        self.admitted = False
        self.phase = IDLE
        self.paused = 0
        self.requests = 0
        self.keep_alive = True
        self.deadline = math.inf
        self.total_deadline = math.inf
        self.sni: str | None = None
        self.request_method = b"GET"
        self.got_bytes = False
        self.tunnel: WsTunnel | None = None
        #: the upstream connection of the last exchange, kept for the next one
        self.parked: H1Back | None = None
        #: holds one of the worker's parking slots (pool.park_max)
        self.park_slot = False
        self._wbuf: list[bytes] = []
        #: body bytes in _wbuf (CORK_LIMIT)
        self._wsize = 0
        self.corked = False
        self._cork = cork()
        self.loop = asyncio.get_running_loop()

    # -- connection -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # uvloop transports are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        ctx = self.ctx
        if not self.pre_admitted and not ctx.admission.admit(ctx.name, self.peer_ip):
            transport.abort()
            return
        self.admitted = True
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        if ctx.tls:
            sslobj = transport.get_extra_info("ssl_object")
            self.sni = getattr(sslobj, "eg_sni", None) if sslobj is not None else None
            if sslobj is not None and sslobj.selected_alpn_protocol() == "h2":
                self._become_h2(transport, b"")
                return
        self.deadline = self.loop.time() + ctx.header_timeout
        ctx.sweeper.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.phase = CLOSING
        if self.admitted:
            self.admitted = False
            self.ctx.admission.release(self.ctx.name, self.peer_ip)
            self.ctx.sweeper.discard(self)
        stream = self.stream
        if stream is not None:
            self.stream = None
            stream.on_front_closed()
        if self.tunnel is not None:
            self.tunnel.client_closed()
        parked = self.parked
        if parked is not None:
            self.parked = None
            parked.release()
        if self.park_slot:
            self.park_slot = False
            self.ctx.pool.give_park_slot()

    def eof_received(self) -> bool:
        # A client half-close while a response is pending is allowed by RFC 9112
        # §9.6 only loosely; we finish the response, then close.
        if self.stream is not None and self.stream.request_done:
            self.keep_alive = False
            return True
        return False

    # -- input ------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        if not self.got_bytes and self.requests == 0 and (self.early or data[:3] == b"PRI"):
            # HTTP/2 with prior knowledge (RFC 9113 §3.3) on a cleartext listener.
            self.early += data
            if len(self.early) < len(H2_PREFACE):
                if H2_PREFACE.startswith(bytes(self.early)):
                    return
            elif self.early.startswith(H2_PREFACE) and self.transport is not None:
                self._become_h2(self.transport, bytes(self.early))
                return
            data = bytes(self.early)
        self.got_bytes = True
        try:
            events = self.codec.feed(data)
        except DownstreamError as err:
            self._bad_request(err)
            return
        if events:
            self._dispatch(events)
        if self.codec.paused:
            # A pipelined request is held in the codec: read no more until
            # the current response is done.
            self._pause(P_PIPELINE)
        if self.stream is not None:
            self.stream.flush()
        else:
            self.flush()

    def _dispatch(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Body):
                stream = self.stream
                if stream is None:
                    continue
                if ev.end_stream:
                    request_progress(self, self.ctx, self.loop.time(), True)
                else:
                    request_progress(self, self.ctx, self.loop.time(), False)
                stream.on_request_body(ev.data, ev.end_stream)
            elif isinstance(ev, RequestHead):
                self._on_head(ev)
            elif isinstance(ev, Trailers):
                if self.stream is not None:
                    request_progress(self, self.ctx, self.loop.time(), True)
                    self.stream.on_request_trailers(ev.headers)
            elif isinstance(ev, TunnelData) and self.tunnel is not None:
                self.tunnel.client_data(ev.data)

    def _become_h2(self, transport: asyncio.Transport, data: bytes) -> None:
        """Hand this connection to an HTTP/2 front (ALPN h2, or the preface)."""
        from expressgateway.proxy.h2front import H2Front

        self.ctx.sweeper.discard(self)
        self.admitted = False  # the HTTP/2 front owns the admission slot now
        self.transport = None
        h2 = H2Front(self.ctx, admitted_ip=self.peer_ip, preface=data, sni=self.sni)
        transport.set_protocol(h2)
        h2.connection_made(transport)

    def _on_head(self, head: RequestHead) -> None:
        ctx = self.ctx
        now = self.loop.time()
        self.request_method = head.method
        request_started(self, ctx, now, head.end_stream)
        stream = Stream(ctx, self, head, self.peer_ip, "h1")
        self.stream = stream
        # the checks every front applies (421, gRPC needs HTTP/2)
        problem = sni_mismatch(head, self.sni) if self.sni is not None else None
        if problem is None and is_grpc(head):
            problem = DownstreamError("grpc_over_http1", status=415)
        if problem is not None:
            stream.fail(problem)
            return
        if head.protocol is not None:
            ws = ctx.listener.websocket
            if ws is not None and ws.enabled:
                from expressgateway.proxy.websocket import start_websocket

                start_websocket(stream, self, head)
                return
            # WebSocket is off here: forward a plain request, never an upgrade.
            head = RequestHead(
                head.method,
                head.scheme,
                head.authority,
                head.path,
                head.headers,
                head.end_stream,
                None,
                head.content_length,
            )
        http = ctx.listener.http
        stream.start(
            upstream_head(
                head, self.peer_ip, ctx.scheme, x_forwarded=http.x_forwarded, via=http.via
            )
        )

    def _bad_request(self, err: DownstreamError) -> None:
        """Bad input: answer with the error's status and close."""
        self.keep_alive = False
        stream = self.stream
        if stream is not None and not stream.closed:
            if stream.response_started:
                stream.on_timeout(err)  # counts it, aborts both sides
            else:
                stream.fail(err)
            self.flush()
            self._close()
            return
        self.ctx.reject(err.reason)
        self._write_local(err.status, err.reason)
        self.ctx.count_request("h1", err.status)
        self._close()

    # -- flow control ---------------------------------------------------------------------
    def _pause(self, bit: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= bit

    def _resume(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and self.transport is not None:
                self.transport.resume_reading()

    def pause_request(self) -> None:
        self._pause(P_BACKPRESSURE if self.stream and not self.stream.connecting else P_CONNECT)

    def resume_request(self) -> None:
        self._resume(P_CONNECT | P_BACKPRESSURE)
        # Reading resumed: the body clock restarts (the wait was ours, not the client's).
        request_progress(self, self.ctx, self.loop.time(), False)

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.back.pause_response()
            return
        stream = self.stream
        if stream is not None and stream.back is not None:
            stream.back.pause_response()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.back.resume_response()
            return
        stream = self.stream
        if stream is not None and stream.back is not None:
            stream.back.resume_response()

    # -- tunnels ------------------------------------------------------------------------------
    def start_tunnel(self, head: ResponseHead, back: H1Back) -> None:
        """The backend said 101: say 101 to the client and relay frames."""
        from expressgateway.proxy.websocket import WsTunnel

        self._wbuf.append(
            self.codec.encode_response_head(head, request_method=b"GET", keep_alive=False)
        )
        self.flush_now()
        self.phase = TUNNEL
        self.deadline = math.inf
        self.total_deadline = math.inf
        tunnel = WsTunnel(self, back)
        self.tunnel = tunnel
        back.tunnel = tunnel
        self._resume(P_PIPELINE | P_CONNECT | P_BACKPRESSURE)
        for ev in self.codec.start_tunnel():
            if type(ev) is TunnelData:
                tunnel.client_data(ev.data)

    def write_raw(self, data: bytes) -> None:
        if self.corked:
            self.flush_now()
        if self.transport is not None:
            self.transport.write(data)

    def close_after_flush(self) -> None:
        self._close()

    # -- Front interface (called by the stream) ------------------------------------------
    def send_informational(self, info: Informational) -> None:
        if info.status == 100 and not self.codec.expect_continue:
            return  # the client did not ask; a stray 100 would confuse it
        self._wbuf.append(self.codec.encode_informational(info))

    def send_response_head(self, head: ResponseHead) -> None:
        response_started(self)
        keep = self._keep_alive_after()
        self._wbuf.append(
            self.codec.encode_response_head(
                head, request_method=self.request_method, keep_alive=keep
            )
        )

    def send_body(self, data: bytes, end_stream: bool) -> None:
        out = self.codec.encode_body(data, end_stream)
        if out:
            self._wbuf.append(out)
            self._wsize += len(out)
            if self._wsize >= CORK_LIMIT:
                self.flush_now()  # its pause_writing must stop the read loop now

    def send_trailers(self, headers: Headers) -> None:
        out = self.codec.encode_trailers(headers)
        if out:
            self._wbuf.append(out)

    def local_reply(self, status: int, reason: str, extra: Headers = ()) -> None:  # type: ignore[assignment]
        stream = self.stream
        if stream is not None and not stream.request_done:
            self.keep_alive = False
        self._write_local(status, reason, extra)

    def _write_local(self, status: int, reason: str, extra: Headers = ()) -> None:  # type: ignore[assignment]
        keep = self._keep_alive_after()
        self._wbuf.append(
            self.codec.encode_local_reply(
                status, reason=reason, extra_headers=extra, keep_alive=keep
            )
        )

    def abort(self, reason: str) -> None:
        # Closing without the message's end (last chunk, or short of
        # Content-Length) tells the client the response is truncated.
        self.keep_alive = False
        self.flush_now()
        if self.transport is not None:
            self.transport.close()

    def park_back(self, back: Back) -> None:
        assert isinstance(back, H1Back)
        old = self.parked
        if (
            self.transport is None
            or not self.keep_alive
            or not (self.park_slot or self._take_park_slot())
        ):
            back.release()
            return
        self.parked = back
        if old is not None and old is not back:
            old.release()

    def _take_park_slot(self) -> bool:
        self.park_slot = self.ctx.pool.take_park_slot()
        return self.park_slot

    def take_parked(self, ep: Endpoint) -> Back | None:
        back = self.parked
        if back is None:
            return None
        self.parked = None
        if back.key == peer_key(ep) and back.alive():
            back.reused = True
            Pool.count_reuse()
            return back
        back.release()
        return None

    def pause_for_connect(self) -> None:
        self._pause(P_CONNECT)

    def _keep_alive_after(self) -> bool:
        ctx = self.ctx
        if not self.keep_alive or not self.codec.keep_alive:
            self.keep_alive = False
            return False
        if ctx.max_keepalive and self.requests + 1 >= ctx.max_keepalive:
            self.keep_alive = False
            return False
        if ctx.draining:  # type: ignore[attr-defined]
            self.keep_alive = False
            return False
        return True

    def flush(self) -> None:
        """Send what is buffered at the end of this loop iteration (io/cork.py)."""
        if self._wbuf and not self.corked:
            self._cork.defer(self)

    def flush_now(self) -> None:
        self.corked = False
        self._wsize = 0
        buf = self._wbuf
        t = self.transport
        if buf and t is not None and not t.is_closing():
            t.write(buf[0] if len(buf) == 1 else b"".join(buf))
        buf.clear()

    def stream_done(self) -> None:
        self.stream = None
        self.requests += 1
        if self.transport is None or self.phase == TUNNEL:
            return
        if not self.keep_alive or not self.codec.reusable:
            self.flush()
            self._close()
            return
        self.phase = IDLE
        self.got_bytes = False
        self.deadline = self.loop.time() + self.ctx.header_timeout
        self.total_deadline = math.inf
        self._resume(P_PIPELINE | P_CONNECT | P_BACKPRESSURE)
        try:
            events = self.codec.next_request()
        except DownstreamError as err:
            self.flush()
            self._bad_request(err)
            return
        if events:
            # A pipelined request was waiting: start it now (we may be inside
            # the previous exchange's upstream callback, so flush explicitly).
            self.got_bytes = True
            self.flush()
            self._dispatch(events)
            if self.stream is not None:
                self.stream.flush()
            else:
                self.flush()

    def drain(self) -> None:
        """The gateway is draining: close now if idle between requests, else
        after this exchange. A connection that has not sent its first request
        yet is left its chance (it may be in flight: closing would fail a
        client that did nothing wrong); that request is answered with
        ``Connection: close``, and the header timeout still bounds the wait."""
        self.keep_alive = False
        if (
            self.stream is None
            and self.tunnel is None
            and self.phase == IDLE
            and not self.got_bytes
            and self.requests > 0
        ):
            self._close()

    def _close(self) -> None:
        self.phase = CLOSING
        if self.transport is not None:
            self.flush_now()
            self.transport.close()

    # -- deadlines ---------------------------------------------------------------------------
    def on_deadline(self, now: float) -> None:
        phase = self.phase
        stream = self.stream
        ctx = self.ctx
        if stream is None:
            if phase == IDLE:
                if self.got_bytes:
                    _SLOWLORIS.labels(ctx.name).inc()
                    ctx.reject("header_timeout")
                self.deadline = math.inf
                self._close()
            return
        if now >= self.total_deadline:
            err = ProxyError("total_timeout", status=504)
        elif phase == BODY:
            _SLOW_POST.labels(ctx.name).inc()
            err = DownstreamError("body_timeout", status=408)
            self.keep_alive = False
        elif phase == WAIT_HEAD:
            err = ProxyError("head_timeout", status=504)
        elif phase == TUNNEL:
            self.deadline = math.inf
            return
        else:
            self.deadline = self.total_deadline
            return
        self.deadline = math.inf
        stream.on_timeout(err)
        self.flush()
