"""What the HTTP/2 and HTTP/3 fronts share: one client connection carries
many streams, each bridged to a back by its own
:class:`~expressgateway.proxy.stream.Stream`.

:class:`MuxStreamFront` is the :class:`~expressgateway.proxy.interfaces.Front`
of one stream; :class:`MuxFront` turns a codec's ``(stream_id, event)``
pairs into bridge calls (heads, bodies, trailers, resets, rejections), and
does the gRPC handling (deadline clamp, local health check). The protocol
shells (:mod:`.h2front`, :mod:`.h3front`) add the transport, timers and
flow control. Both codecs offer the same per-stream calls (``ack_data``,
``send_response_head``, ``send_body``, ``send_trailers``,
``send_local_reply``, ``reset_stream``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from expressgateway.codec.h2.events import GoAwayReceived, StreamRejected, WindowOpened
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
from expressgateway.io.cork import CORK_LIMIT
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
from expressgateway.upstream.pool import Pool

if TYPE_CHECKING:
    from expressgateway.observability.metrics import CounterChild
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.interfaces import Back

#: gateway reasons with their own gRPC status (others use the HTTP map)
_GRPC_REASONS = {
    "grpc_bad_timeout": grpc.INVALID_ARGUMENT,
    "total_timeout": grpc.DEADLINE_EXCEEDED,
    "head_timeout": grpc.DEADLINE_EXCEEDED,
}
#: a health-check request message is tiny; anything bigger is not one
HEALTH_BODY_CAP = 4096
#: upstream HTTP/1.1 connections parked per client connection
PARK_MAX = 64


class MuxStreamFront:
    """The :class:`~expressgateway.proxy.interfaces.Front` of one HTTP/2 or
    HTTP/3 stream."""

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

    def __init__(self, conn: MuxFront, sid: int) -> None:
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
        conn = self.conn
        conn.unflushed += len(data)
        if conn.unflushed >= CORK_LIMIT:
            conn.flush_now()  # its pause_writing must stop the backend's read loop now
        if not self.outbox.send_body(conn.codec, self.sid, data, end_stream):
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
        self.conn.codec.send_local_reply(self.sid, status, reason, list(extra) or None)

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
        self.conn.park(back)

    def take_parked(self, ep: Endpoint) -> Back | None:
        return self.conn.take_parked(ep)

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
        stream.on_timeout(err)  # counts the timeout once


class MuxFront:
    """One multiplexed client connection (HTTP/2 or HTTP/3), protocol-neutral part."""

    #: the label of this protocol in metrics and logs
    version = "h2"
    ctx: L7Context
    codec: Any
    streams: dict[int, MuxStreamFront]
    loop: asyncio.AbstractEventLoop
    peer_ip: str
    sni: str | None
    draining: bool
    _streams_total: CounterChild

    #: HTTP/1.1 upstream connections this client's streams finished with,
    #: kept for its next streams (at most PARK_MAX, i.e. about its peak
    #: concurrency); the rest go to the shared pool
    parked: list[Any]
    #: parking slots of the worker's pool.park_max this connection holds
    #: (taken as ``parked`` first grows, given back when it is released)
    park_slots = 0
    #: response body bytes handed to the codec since the last write (CORK_LIMIT)
    unflushed = 0

    def stream_front(self, sid: int) -> MuxStreamFront:
        return MuxStreamFront(self, sid)

    def park(self, back: Back) -> None:
        # Under many concurrent streams the shared idle pool (a few per peer)
        # would close and reopen upstream connections on every request.
        n = len(self.parked)
        if self.draining or n >= PARK_MAX:
            back.release()
        elif n < self.park_slots or self.ctx.pool.take_park_slot():
            if n >= self.park_slots:
                self.park_slots += 1
            self.parked.append(back)
        else:
            back.release()  # the worker's parking cap is reached

    def take_parked(self, ep: Endpoint) -> Back | None:
        parked = self.parked
        key = ep.key
        for i in range(len(parked) - 1, -1, -1):
            back = parked[i]
            if back.key == key:
                del parked[i]
                if back.alive():
                    back.reused = True
                    Pool.count_reuse()
                    return cast("Back", back)
                back.release()
                return None
        return None

    def release_parked(self) -> None:
        parked, self.parked = self.parked, []
        for back in parked:
            back.release()
        pool = self.ctx.pool
        for _ in range(self.park_slots):
            pool.give_park_slot()
        self.park_slots = 0

    def flush(self) -> None:
        raise NotImplementedError

    def flush_now(self) -> None:
        """Write what the codec holds now, not at the end of the iteration."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

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
                    self.ctx.count_request(self.version, ev.error.status)
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
        front = self.stream_front(sid)
        self.streams[sid] = front
        now = self.loop.time()
        request_started(front, ctx, now, head.end_stream)
        stream = Stream(ctx, front, head, self.peer_ip, self.version)
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
        self, front: MuxStreamFront, head: RequestHead, cap: float, now: float
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

    def _health_body(self, front: MuxStreamFront, data: bytes, end_stream: bool) -> None:
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

    def forget(self, front: MuxStreamFront) -> None:
        if self.streams.get(front.sid) is front:
            del self.streams[front.sid]
        if self.draining and not self.streams:
            self.flush()
            self.close()
