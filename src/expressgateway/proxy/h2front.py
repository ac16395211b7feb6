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
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from expressgateway.codec.h2.errors import H2ConnectionError
from expressgateway.codec.h2.events import GoAwayReceived, StreamRejected, WindowOpened
from expressgateway.codec.h2.server import H2ServerCodec
from expressgateway.core.errors import DownstreamError
from expressgateway.core.events import (
    INTERNAL_ERROR,
    Body,
    Headers,
    Informational,
    RequestHead,
    Reset,
    ResponseHead,
    Trailers,
)
from expressgateway.observability.metrics import REGISTRY
from expressgateway.proxy import grpc
from expressgateway.proxy.checks import is_grpc, sni_mismatch
from expressgateway.proxy.clock import (
    IDLE,
    expired,
    request_progress,
    request_started,
    response_started,
)
from expressgateway.proxy.forwarding import upstream_head
from expressgateway.proxy.h2outbox import Outbox
from expressgateway.proxy.stream import Stream
from expressgateway.upstream.endpoint import Endpoint

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.interfaces import Back

log = logging.getLogger("expressgateway.h2")

_CONN_ERRORS = REGISTRY.counter(
    "h2_connection_errors_total",
    "HTTP/2 connections ended by the gateway with GOAWAY, by reason (rapid_reset, "
    "continuation_flood, hpack_bomb, settings_flood, ping_flood, keepalive_timeout, ...).",
    ("listener", "reason"),
)
_STREAMS = REGISTRY.counter("h2_streams_total", "HTTP/2 streams opened by clients.", ("listener",))

#: gateway reasons with their own gRPC status (others use the HTTP map)
_GRPC_REASONS = {
    "grpc_bad_timeout": grpc.INVALID_ARGUMENT,
    "total_timeout": grpc.DEADLINE_EXCEEDED,
    "head_timeout": grpc.DEADLINE_EXCEEDED,
}
#: a health-check request message is tiny; anything bigger is not one
HEALTH_BODY_CAP = 4096

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
#: streams waiting for a response head, body progress...: checked each sweep


class H2StreamFront:
    """The :class:`~expressgateway.proxy.interfaces.Front` of one HTTP/2 stream."""

    __slots__ = (
        "conn",
        "deadline",
        "done",
        "drop_body",
        "grpc",
        "health",
        "outbox",
        "paused",
        "phase",
        "sid",
        "stream",
        "total_deadline",
        "unacked",
    )

    def __init__(self, conn: H2Front, sid: int) -> None:
        self.conn = conn
        self.sid = sid
        self.stream: Stream | None = None
        self.paused = False
        self.unacked = 0
        self.outbox = Outbox()
        self.phase = IDLE
        self.deadline = math.inf
        self.total_deadline = math.inf
        self.done = False
        #: a gRPC call with [listeners.grpc] handling
        self.grpc = False
        #: a non-200 answer became a trailers-only gRPC status: drop the body
        self.drop_body = False
        #: request body of a locally answered health check
        self.health: bytearray | None = None

    # -- request side -----------------------------------------------------------
    def received(self, nbytes: int) -> None:
        """Request DATA handed on: give the credit back unless pushed back."""
        if self.paused:
            self.unacked += nbytes
        elif nbytes:
            self.conn.codec.ack_data(self.sid, nbytes)

    def pause_request(self) -> None:
        self.paused = True

    def resume_request(self) -> None:
        self.paused = False
        if self.unacked:
            n, self.unacked = self.unacked, 0
            self.conn.codec.ack_data(self.sid, n)
            self.conn.flush()
        request_progress(self, self.conn.ctx, self.conn.loop.time(), False)

    # -- response side ------------------------------------------------------------
    def send_informational(self, info: Informational) -> None:
        self.conn.codec.send_informational(self.sid, info)

    def send_response_head(self, head: ResponseHead) -> None:
        response_started(self)
        if self.grpc and head.status != 200:
            code = grpc.HTTP_TO_GRPC.get(head.status, grpc.UNKNOWN)
            head = grpc.trailers_only(code, f"upstream answered HTTP {head.status}")
            self.drop_body = True
        self.conn.codec.send_response_head(self.sid, head)

    def send_body(self, data: bytes, end_stream: bool) -> None:
        if self.drop_body:
            return
        if not self.outbox.send_body(self.conn.codec, self.sid, data, end_stream):
            stream = self.stream
            if stream is not None and stream.back is not None:
                stream.back.pause_response()

    def window_opened(self) -> None:
        if not self.outbox.window_opened(self.conn.codec, self.sid):
            return
        stream = self.stream
        if stream is not None and stream.back is not None:
            stream.back.resume_response()
        if self.done:
            self.conn.forget(self)

    def send_trailers(self, headers: Headers) -> None:
        if not self.drop_body:
            self.outbox.send_trailers(self.conn.codec, self.sid, headers)

    def local_reply(self, status: int, reason: str, extra: Headers = ()) -> None:  # type: ignore[assignment]
        if self.grpc:
            code = _GRPC_REASONS.get(reason) or grpc.HTTP_TO_GRPC.get(status, grpc.UNKNOWN)
            self.conn.codec.send_response_head(self.sid, grpc.trailers_only(code, reason))
            return
        self.conn.codec.send_local_reply(self.sid, status, reason)

    def abort(self, reason: str) -> None:
        self.outbox.clear()
        if self.grpc and reason == "total_timeout" and not self.drop_body:
            # The head went out: end the call with its status, not a reset.
            self.conn.codec.send_trailers(
                self.sid,
                [
                    (b"grpc-status", b"%d" % grpc.DEADLINE_EXCEEDED),
                    (b"grpc-message", b"deadline exceeded"),
                ],
            )
            return
        self.conn.codec.reset_stream(self.sid, INTERNAL_ERROR)

    def stream_done(self) -> None:
        self.done = True
        self.stream = None
        if not self.outbox:
            self.conn.forget(self)

    def park_back(self, back: Back) -> None:
        back.release()  # multiplexed clients share the pool

    def take_parked(self, ep: Endpoint) -> Back | None:
        return None

    def flush(self) -> None:
        self.conn.flush()

    # -- deadlines ------------------------------------------------------------------
    def check(self, now: float) -> None:
        stream = self.stream
        if stream is None or now < self.deadline:
            return
        err = expired(self, now)
        if err is None:
            self.deadline = self.total_deadline
            return
        self.deadline = math.inf
        if stream.response_started:
            self.conn.ctx.reject(err.reason)
        stream.on_timeout(err)


class H2Front(asyncio.Protocol):
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
        self.streams: dict[int, H2StreamFront] = {}
        self.loop = asyncio.get_running_loop()
        self.deadline = math.inf
        self.closed = False
        self.draining = False
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

    def data_received(self, data: bytes) -> None:
        try:
            events = self.codec.feed(data, self.loop.time())
        except H2ConnectionError as err:
            self._connection_error(err)
            return
        self._dispatch(events)
        self.flush()

    def _dispatch(self, events: Sequence[tuple[int, object]]) -> None:
        streams = self.streams
        touched: list[Stream] = []
        for sid, ev in events:
            if isinstance(ev, Body):
                front = streams.get(sid)
                if front is None or front.stream is None:
                    self.codec.ack_data(sid, len(ev.data))
                    continue
                if front.health is not None:
                    self._health_body(front, ev.data, ev.end_stream)
                    continue
                stream = front.stream
                request_progress(front, self.ctx, self.loop.time(), ev.end_stream)
                stream.on_request_body(ev.data, ev.end_stream)
                front.received(len(ev.data))
            elif isinstance(ev, RequestHead):
                self._on_head(sid, ev)
            elif isinstance(ev, WindowOpened):
                front = streams.get(sid)
                if front is not None:
                    front.window_opened()
            elif isinstance(ev, Trailers):
                front = streams.get(sid)
                if front is not None and front.stream is not None:
                    request_progress(front, self.ctx, self.loop.time(), True)
                    front.stream.on_request_trailers(ev.headers)
            elif isinstance(ev, Reset):
                front = streams.pop(sid, None)
                if front is not None and front.stream is not None:
                    front.stream.on_front_closed()
            elif isinstance(ev, StreamRejected):
                self.ctx.reject(ev.error.reason)
                if ev.error.status:
                    self.codec.send_local_reply(sid, ev.error.status, ev.error.reason)
                    self.ctx.count_request("h2", ev.error.status)
            elif isinstance(ev, GoAwayReceived):
                pass  # the client is going away; its open streams finish
            front = streams.get(sid)
            if front is not None and front.stream is not None:
                touched.append(front.stream)
        # Upstream writes of this batch go out together, once per stream.
        for stream in touched:
            back = stream.back
            if back is not None:
                back.flush()

    def _on_head(self, sid: int, head: RequestHead) -> None:
        ctx = self.ctx
        self._streams_total.value += 1
        front = H2StreamFront(self, sid)
        self.streams[sid] = front
        now = self.loop.time()
        request_started(front, ctx, now, head.end_stream)
        stream = Stream(ctx, front, head, self.peer_ip, "h2")
        front.stream = stream
        problem = sni_mismatch(head, self.sni)
        if problem is not None:
            stream.fail(problem)
            return
        grpc_cfg = ctx.listener.grpc
        if grpc_cfg is not None and grpc_cfg.enabled and is_grpc(head):
            front.grpc = True
            if grpc_cfg.health_synthesized and head.path == grpc.HEALTH_CHECK_PATH:
                front.health = bytearray()
                if head.end_stream:
                    self._health_body(front, b"", True)
                return
            checked = self._grpc_deadline(front, head, float(grpc_cfg.max_deadline_seconds), now)
            if checked is None:
                return
            head = checked
        http = ctx.listener.http
        stream.start(
            upstream_head(
                head, self.peer_ip, ctx.scheme, x_forwarded=http.x_forwarded, via=http.via
            )
        )

    def _grpc_deadline(
        self, front: H2StreamFront, head: RequestHead, cap: float, now: float
    ) -> RequestHead | None:
        """Parse, clamp and rewrite ``grpc-timeout``; the call's deadline
        becomes the stream's total deadline."""
        headers = head.headers
        for i, (name, value) in enumerate(headers):
            if name != b"grpc-timeout":
                continue
            try:
                seconds = grpc.parse_timeout(value)
            except ValueError:
                assert front.stream is not None
                front.stream.fail(DownstreamError("grpc_bad_timeout", status=400))
                return None
            seconds = min(seconds, cap)
            headers[i] = (name, grpc.format_timeout(seconds))
            front.total_deadline = min(front.total_deadline, now + seconds)
            front.deadline = min(front.deadline, front.total_deadline)
            break
        return head

    def _health_body(self, front: H2StreamFront, data: bytes, end_stream: bool) -> None:
        """Collect a Health/Check request and answer it here."""
        assert front.health is not None
        if data:
            self.codec.ack_data(front.sid, len(data))
        if len(front.health) + len(data) > HEALTH_BODY_CAP:
            front.health = None
            if front.stream is not None:
                front.stream.fail(DownstreamError("grpc_health_too_large", status=400))
            return
        front.health += data
        if not end_stream:
            return
        message, code = grpc.health_response(bytes(front.health))
        front.health = None
        codec = self.codec
        if code == grpc.OK:
            codec.send_response_head(
                front.sid, ResponseHead(200, [(b"content-type", b"application/grpc")], False)
            )
            codec.send_body(front.sid, message, False)
            codec.send_trailers(front.sid, [(b"grpc-status", b"0")])
        else:
            codec.send_response_head(front.sid, grpc.trailers_only(code, "unknown service"))
        stream = front.stream
        if stream is not None:
            stream.finish_locally(200)

    def _connection_error(self, err: H2ConnectionError) -> None:
        _CONN_ERRORS.labels(self.ctx.name, err.reason).inc()
        log.warning(
            "http/2 connection error", extra={"listener": self.ctx.name, "reason": err.reason}
        )
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def forget(self, front: H2StreamFront) -> None:
        if self.streams.get(front.sid) is front:
            del self.streams[front.sid]
        if self.draining and not self.streams and self.transport is not None:
            self.flush()
            self.transport.close()

    def flush(self) -> None:
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
        self.codec.shutdown(self.loop.time())
        self.flush()
        if not self.streams and self.transport is not None:
            self.transport.close()
