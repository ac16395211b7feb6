"""The bridge: one request/response exchange between a front and a back.

The stream is protocol-neutral. A front hands it the request's events; it
picks a backend, takes a pooled connection or opens one, forwards the
request, and relays the response's events back. It never buffers a body:
while no upstream is attached the front is paused (at most the bytes of one
read wait here), and flow control after that is each side pausing the
other's reads.

A retry happens only before any response byte went downstream, only for an
idempotent request whose body (if any) is still held whole in the small
replay buffer, and only when the failed connection was a reused one (the
peer may have closed it while idle) or the connection attempt itself failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from expressgateway.core.errors import ProxyError, UpstreamError
from expressgateway.core.events import Headers, Informational, RequestHead, ResponseHead
from expressgateway.proxy.context import RETRIES, UPSTREAM_ERRORS, L7Context
from expressgateway.proxy.forwarding import VIA
from expressgateway.upstream.endpoint import Endpoint

if TYPE_CHECKING:
    from expressgateway.proxy.connectors import Connector
    from expressgateway.proxy.interfaces import Back, Front

log = logging.getLogger("expressgateway.access")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
#: request bodies up to this size are kept whole so the request can be replayed
REPLAY_LIMIT = 64 * 1024


class Stream:
    __slots__ = (
        "back",
        "bytes_out",
        "closed",
        "connecting",
        "ctx",
        "endpoint",
        "fresh_connection",
        "front",
        "head",
        "peer_ip",
        "pending",
        "replay",
        "replay_size",
        "request_done",
        "response_done",
        "response_started",
        "retried",
        "started",
        "status",
        "up_head",
        "version",
    )

    def __init__(
        self, ctx: L7Context, front: Front, head: RequestHead, peer_ip: str, version: str
    ) -> None:
        self.ctx = ctx
        self.front = front
        self.head = head
        self.peer_ip = peer_ip
        self.version = version
        self.back: Back | None = None
        self.endpoint: Endpoint | None = None
        self.pending: list[tuple[bytes, bool] | Headers] | None = []
        self.request_done = head.end_stream
        self.response_started = False
        self.response_done = False
        self.retried = False
        self.closed = False
        self.connecting = False
        self.fresh_connection = False
        self.status = 0
        self.bytes_out = 0
        self.started = time.monotonic()
        self.up_head = head
        replayable = head.method in IDEMPOTENT and (
            head.content_length is None or head.content_length <= REPLAY_LIMIT
        )
        self.replay: list[bytes] | None = [] if replayable else None
        self.replay_size = 0
        ctx.inflight.value += 1

    # -- start -----------------------------------------------------------------
    def start(self, up_head: RequestHead) -> None:
        """Send ``up_head`` (the request as the backend should see it)."""
        self.up_head = up_head
        ep = self.ctx.balancer.select()
        if ep is None:
            self.fail(ProxyError("no_backend", status=503))
            return
        self._use(ep)

    def _use(self, ep: Endpoint) -> None:
        self.endpoint = ep
        ep.active += 1
        if not self.fresh_connection:
            back = self.front.take_parked(ep)
            if back is not None:
                self._attach(back)
                return
        from expressgateway.proxy.connectors import connector_for

        connector = connector_for(ep)
        back = None if self.fresh_connection else connector.take(self.ctx, ep)
        if back is not None:
            self._attach(back)
            return
        self.connecting = True
        self.front.pause_request()
        asyncio.get_running_loop().create_task(self._connect(connector, ep))

    async def _connect(self, connector: Connector, ep: Endpoint) -> None:
        try:
            back = await connector.connect(self.ctx, ep)
        except TimeoutError:
            self.connecting = False
            self._upstream_failed(UpstreamError("connect_timeout", status=504), reused=False)
            self.flush()
            return
        except OSError as exc:
            self.connecting = False
            reason = (
                "connect_refused" if isinstance(exc, ConnectionRefusedError) else "connect_error"
            )
            self._upstream_failed(UpstreamError(reason, detail=str(exc)), reused=False)
            self.flush()
            return
        except UpstreamError as err:  # e.g. a multiplexed pool at its cap
            self.connecting = False
            self._upstream_failed(err, reused=False)
            self.flush()
            return
        self.connecting = False
        if self.closed:
            back.abort()
            return
        self._attach(back)
        self.front.resume_request()
        self.flush()

    def _attach(self, back: Back) -> None:
        self.back = back
        back.attach(self)
        back.send_request_head(self.up_head)
        pending, self.pending = self.pending, None
        if pending:
            for item in pending:
                if isinstance(item, tuple):
                    back.send_body(item[0], item[1])
                else:
                    back.send_trailers(item)

    # -- request events (from the front) ----------------------------------------
    def on_request_body(self, data: bytes, end_stream: bool) -> None:
        if end_stream:
            self.request_done = True
        if self.replay is not None:
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None
            else:
                self.replay.append(data)
        if self.response_done:
            return
        back = self.back
        if back is not None:
            back.send_body(data, end_stream)
        elif self.pending is not None:
            # Bounded: the front is paused while no upstream is attached, so
            # at most what one read (or one flow-control window) brought waits.
            self.pending.append((data, end_stream))

    def on_request_trailers(self, headers: Headers) -> None:
        self.request_done = True
        self.replay = None
        if self.response_done:
            return
        if self.back is not None:
            self.back.send_trailers(headers)
        elif self.pending is not None:
            self.pending.append(headers)

    def on_front_closed(self) -> None:
        """The client went away before the exchange ended."""
        if self.closed:
            return
        if self.back is not None and not self.response_done:
            self.back.abort()
        self._end(499 if not self.status else self.status)

    # -- response events (from the back) -----------------------------------------
    def on_informational(self, info: Informational) -> None:
        self.front.send_informational(info)

    def on_response_head(self, head: ResponseHead) -> None:
        if head.status == 101:
            self._upgraded(head)
            return
        self.response_started = True
        self.status = head.status
        ctx = self.ctx
        # The back codec made this header list for this response alone, so the
        # encode filters may append to it rather than copy it.
        if ctx.via:
            head.headers.append((b"via", VIA))
        if ctx.alt_svc is not None:
            head.headers.append((b"alt-svc", ctx.alt_svc))
        self.front.send_response_head(head)
        if head.end_stream:
            self._response_end()

    def _upgraded(self, head: ResponseHead) -> None:
        """The backend switched protocols: hand both connections to a tunnel."""
        back = self.back
        if self.head.protocol is None or back is None:
            self.fail(UpstreamError("unexpected_101"))
            return
        self.response_started = True
        self.response_done = True
        self.status = 101
        self.back = None
        self.front.start_tunnel(head, back)  # type: ignore[attr-defined]
        self._end(101)

    def on_response_body(self, data: bytes, end_stream: bool) -> None:
        self.bytes_out += len(data)
        self.front.send_body(data, end_stream)
        if end_stream:
            self._response_end()

    def on_response_trailers(self, headers: Headers) -> None:
        self.front.send_trailers(headers)
        self._response_end()

    def on_back_error(self, err: UpstreamError, reused: bool) -> None:
        """The upstream connection failed mid-exchange."""
        if self.closed or self.response_done:
            return
        self.back = None
        self._upstream_failed(err, reused=reused)

    def flush(self) -> None:
        self.front.flush()
        if self.back is not None:
            self.back.flush()

    # -- endings --------------------------------------------------------------------
    def _upstream_failed(self, err: ProxyError, *, reused: bool) -> None:
        ep = self.endpoint
        ctx = self.ctx
        if ep is not None:
            UPSTREAM_ERRORS.labels(ctx.name, ep.name, err.reason).inc()
            log.warning(
                "upstream failed",
                extra={
                    "listener": ctx.name,
                    "backend": ep.name,
                    "reason": err.reason,
                    "detail": err.detail,
                },
            )
        can_retry = (
            not self.response_started
            and not self.retried
            and self.replay is not None
            and self.request_done
            and (reused or err.reason in ("connect_refused", "connect_error"))
        )
        if can_retry:
            self.retried = True
            RETRIES.labels(ctx.name, err.reason).inc()
            if ep is not None:
                ep.active -= 1
            self.endpoint = None
            self.pending = []
            if not self.head.end_stream:
                for piece in self.replay or ():
                    self.pending.append((piece, False))
                self.pending.append((b"", True))
            new_ep = ctx.balancer.select()
            if new_ep is None:
                self.fail(ProxyError("no_backend", status=503))
                return
            self._use(new_ep)
            return
        if self.response_started:
            self.front.abort(err.reason)
            self._end(self.status or 502)
        else:
            self.fail(err)

    def fail(self, err: ProxyError) -> None:
        """Answer locally (no response byte went out yet) and end."""
        if self.closed:
            return
        self.ctx.reject(err.reason)
        if self.back is not None:
            self.back.abort()
            self.back = None
        self.status = err.status
        self.front.local_reply(err.status, err.reason)
        self._end(err.status)

    def finish_locally(self, status: int) -> None:
        """The front answered this request itself (e.g. a gRPC health check)."""
        self.status = status
        self._end(status)

    def on_timeout(self, err: ProxyError) -> None:
        """A front deadline passed (head, body or total timeout)."""
        if self.closed:
            return
        if self.response_started:
            self.ctx.reject(err.reason)
            if self.back is not None:
                self.back.abort()
                self.back = None
            self.front.abort(err.reason)
            self._end(self.status)
        else:
            self.fail(err)

    def _response_end(self) -> None:
        self.response_done = True
        back = self.back
        if back is not None:
            self.back = None
            if back.finish(self.request_done):
                # Keep it with the client connection for its next request; it
                # goes to the shared pool when that connection ends.
                self.front.park_back(back)
        self._end(self.status)

    def _end(self, status: int) -> None:
        if self.closed:
            return
        self.closed = True
        ctx = self.ctx
        ctx.inflight.value -= 1
        ep = self.endpoint
        if ep is not None:
            ep.active -= 1
        elapsed = time.monotonic() - self.started
        ctx.count(self.version, ep.name if ep is not None else "", status, elapsed)
        if ctx.access_log:
            h = self.head
            log.info(
                "request",
                extra={
                    "listener": ctx.name,
                    "client": self.peer_ip,
                    "method": h.method.decode("latin-1"),
                    "authority": h.authority.decode("latin-1"),
                    "path": h.path.decode("latin-1")[:512],
                    "version": self.version,
                    "status": status,
                    "bytes_out": self.bytes_out,
                    "backend": ep.name if ep else None,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        self.front.stream_done()
