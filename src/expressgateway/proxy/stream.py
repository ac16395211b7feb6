"""The bridge: one request/response exchange between a front and a back.

The stream is protocol-neutral. A front hands it the request's events; it
picks a backend, takes a pooled connection or opens one, forwards the
request, and relays the response's events back. It never buffers a body:
while no upstream is attached the front is paused (at most the bytes of one
read wait here), and flow control after that is each side pausing the
other's reads.

The stream asks the listener's router for a route (which cluster, what to
change), the cluster's circuit breaker whether it may go on, and the
cluster's balancer for an endpoint; it reports every try's outcome back
(balancer feedback, passive health).

A retry happens only before any response byte went downstream, only while
the request body (if any) is still held whole in the small replay buffer,
on another backend when there is one, within the route's ``max_retries``
and the cluster's retry budget, and only for failures the route's
``retry_on`` names: connect failures and refused streams (never processed:
any method), resets before the head and listed statuses (idempotent
methods only). A request that failed on a *reused* keep-alive connection
(the peer may have closed it while idle) is retried once on a new one.
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
from expressgateway.upstream.balancer import PickContext
from expressgateway.upstream.endpoint import Endpoint

if TYPE_CHECKING:
    from expressgateway.proxy.connectors import Connector
    from expressgateway.proxy.interfaces import Back, Front
    from expressgateway.proxy.router import Route
    from expressgateway.upstream.cluster import Cluster

log = logging.getLogger("expressgateway.access")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
#: upstream failure reason -> retry_on kind
RETRY_KIND = {
    "connect_refused": "connect_failure",
    "connect_error": "connect_failure",
    "connect_timeout": "connect_failure",
    "refused_stream": "refused_stream",
    "upstream_reset": "reset",
    "upstream_closed": "reset",
    "upstream_truncated": "reset",
    "per_try_timeout": "per_try_timeout",
}
#: kinds where the backend never processed the request: safe for any method
_UNPROCESSED = frozenset({"connect_failure", "refused_stream"})
#: request bodies up to this size are kept whole so the request can be replayed
REPLAY_LIMIT = 64 * 1024


class Stream:
    __slots__ = (
        "back",
        "bytes_out",
        "closed",
        "cluster",
        "connecting",
        "ctx",
        "endpoint",
        "failed",
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
        "route",
        "set_cookie",
        "started",
        "status",
        "tries",
        "try_started",
        "try_timer",
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
        replayable = head.content_length is None or head.content_length <= REPLAY_LIMIT
        self.replay: list[bytes] | None = [] if replayable else None
        self.route: Route | None = None
        self.cluster: Cluster | None = None
        self.failed: list[Endpoint] = []
        self.tries = 0
        self.try_started = 0.0
        self.try_timer: asyncio.TimerHandle | None = None
        self.set_cookie: bytes | None = None
        self.replay_size = 0
        ctx.inflight.value += 1

    # -- start -----------------------------------------------------------------
    def start(self, up_head: RequestHead) -> None:
        """Route the request and send ``up_head`` (the request as the
        backend should see it, before the route's edits)."""
        router = self.ctx.router
        route = router.match(self.head) if router.routes else router.default
        if route is None:
            # routes, none matching and no default pool: 404; no pool at all: 503
            if router.routes:
                self.fail(ProxyError("no_route", status=404))
            else:
                self.fail(ProxyError("no_backend", status=503))
            return
        self.route = route
        cluster = route.cluster
        limit = cluster.overflow()
        if limit is not None:
            cluster.count_overflow(limit)
            retry_after = b"%d" % cluster.breaker.retry_after_s
            self.fail(ProxyError("circuit_open", status=503), [(b"retry-after", retry_after)])
            return
        self.cluster = cluster
        cluster.requests += 1
        self.up_head = route.apply(up_head) if route.edits else up_head
        if route.timeout is not None:
            self._route_timeout(route.timeout)
        ep = self._pick()
        if ep is None:
            self.fail(ProxyError("no_backend", status=503))
            return
        self._use(ep)

    def _route_timeout(self, seconds: float) -> None:
        front = self.front
        deadline = asyncio.get_running_loop().time() + seconds
        if deadline < getattr(front, "total_deadline", deadline):
            front.total_deadline = deadline  # type: ignore[attr-defined]
            front.deadline = min(front.deadline, deadline)  # type: ignore[attr-defined]

    def _pick(self) -> Endpoint | None:
        assert self.cluster is not None
        balancer = self.cluster.balancer
        if not self.failed and not balancer.needs_context:
            return balancer.select(None)  # round robin, least request...: no keys
        pick = PickContext(
            self.peer_ip, self.head.path, self._header, self._cookie, tuple(self.failed)
        )
        ep = self.cluster.balancer.select(pick)
        if pick.set_cookie is not None:
            self.set_cookie = pick.set_cookie
        return ep

    def _header(self, name: bytes) -> bytes | None:
        for n, v in self.head.headers:
            if n == name:
                return v
        return None

    def _cookie(self, name: bytes) -> bytes | None:
        for n, v in self.head.headers:
            if n != b"cookie":
                continue
            for part in v.split(b";"):
                k, sep, val = part.strip().partition(b"=")
                if sep and k == name:
                    return val
        return None

    def _use(self, ep: Endpoint) -> None:
        self.endpoint = ep
        cluster = self.cluster
        assert cluster is not None
        cluster.balancer.on_start(ep)
        self.tries += 1
        self.try_started = time.monotonic()
        route = self.route
        if route is not None and route.retry.per_try_timeout_ms:
            self.try_timer = asyncio.get_running_loop().call_later(
                route.retry.per_try_timeout_ms / 1000, self._per_try_expired, self.tries
            )
        if not self.fresh_connection:
            back = self.front.take_parked(ep)
            if back is not None:
                self._attach_now(back)
                return
        from expressgateway.proxy.connectors import connector_for

        connector = connector_for(ep)
        back = None if self.fresh_connection else connector.take(self.ctx, ep)
        if back is not None:
            self._attach_now(back)
            return
        if cluster.connections_full():
            cluster.count_overflow("max_connections")
            retry_after = b"%d" % cluster.breaker.retry_after_s
            self._finish_try(ep, ok=True, status=0, stale=True)
            self.fail(ProxyError("circuit_open", status=503), [(b"retry-after", retry_after)])
            return
        self.connecting = True
        cluster.pending += 1
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
        finally:
            cluster = self.cluster
            if cluster is not None:
                cluster.pending -= 1
        self.connecting = False
        if self.closed:
            back.abort()
            return
        self._attach(back)
        self.front.resume_request()
        self.flush()

    def _attach_now(self, back: Back) -> None:
        """A back that needs no connect (parked, pooled, multiplexed)."""
        self._attach(back)
        if self.retried:
            # an earlier try paused the client while it connected
            self.front.resume_request()

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
        route = self.route
        if (
            route is not None
            and "status" in route.retry.retry_on
            and head.status in route.retry.retry_statuses
            and self._status_retry(head.status)
        ):
            return
        self.response_started = True
        self.status = head.status
        ctx = self.ctx
        if self.set_cookie is not None and self.cluster is not None:
            head.headers.append((b"set-cookie", self._affinity_cookie(self.cluster)))
        # The back codec made this header list for this response alone, so the
        # encode filters may append to it rather than copy it.
        if ctx.via:
            head.headers.append((b"via", VIA))
        if ctx.alt_svc is not None:
            head.headers.append((b"alt-svc", ctx.alt_svc))
        self.front.send_response_head(head)
        if head.end_stream:
            self._response_end()

    def _status_retry(self, status: int) -> bool:
        """An answer the route retries (e.g. 503): drop it and try again, if allowed."""
        route, cluster, ep = self.route, self.cluster, self.endpoint
        if route is None or cluster is None or ep is None or self.replay is None:
            return False
        if not self.request_done or self.head.method not in IDEMPOTENT:
            return False
        if self.tries > route.retry.max_retries or not cluster.retry_allowed(route.retry):
            return False
        back, self.back = self.back, None
        if back is not None:
            back.abort()  # the rest of this answer is not wanted
        self._finish_try(ep, ok=False, status=status)
        RETRIES.labels(self.ctx.name, f"status_{status}").inc()
        self._retry()
        return True

    def _affinity_cookie(self, cluster: Cluster) -> bytes:
        assert cluster.affinity_cookie is not None and self.set_cookie is not None
        cookie = b"%s=%s; Path=/; HttpOnly" % (cluster.affinity_cookie, self.set_cookie)
        if cluster.affinity_ttl:
            cookie += b"; Max-Age=%d" % cluster.affinity_ttl
        return cookie

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
        kind = RETRY_KIND.get(err.reason)
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
            stale = reused and kind == "reset"
            self._finish_try(
                ep, ok=False, status=0 if kind != "connect_failure" else -1, stale=stale
            )
        if not self.response_started and self._may_retry(kind, reused):
            RETRIES.labels(ctx.name, err.reason).inc()
            self._retry(new_connection=reused)
            return
        if self.response_started:
            self.front.abort(err.reason)
            self._end(self.status or 502)
        else:
            self.fail(err)

    def _may_retry(self, kind: str | None, reused: bool) -> bool:
        """May the request go out again (the response has not started)?"""
        if self.closed:
            return False
        # The body still arriving (or too big to keep): only a try that never
        # reached a backend may go again. What arrived waits in ``pending``
        # (the client is not read while connecting); the rest follows.
        if (self.replay is None or not self.request_done) and (
            kind != "connect_failure" or self.pending is None
        ):
            return False
        if reused and not self.retried:
            # a stale keep-alive connection (or a stream the peer refused):
            # once more, on a new connection
            return self.head.method in IDEMPOTENT or kind in _UNPROCESSED
        route, cluster = self.route, self.cluster
        if route is None or cluster is None or kind is None:
            return False
        retry = route.retry
        # a per-try timeout exists to be retried (Envoy's per_try_timeout)
        if kind not in retry.retry_on and kind != "per_try_timeout":
            return False
        if kind not in _UNPROCESSED and self.head.method not in IDEMPOTENT:
            return False
        if self.tries > retry.max_retries:
            return False
        return cluster.retry_allowed(retry)

    def _retry(self, new_connection: bool = False) -> None:
        """Send the request again: another backend when there is one (a
        stale pooled connection: a new connection)."""
        if new_connection:
            self.fresh_connection = True
        cluster = self.cluster
        if cluster is not None and not self.retried:
            cluster.retries += 1
        self.retried = True
        self.endpoint = None
        if self.pending is None:
            # the last try sent the request: send it again from the replay copy
            self.pending = []
            if not self.head.end_stream:
                for piece in self.replay or ():
                    self.pending.append((piece, False))
                self.pending.append((b"", True))
        new_ep = self._pick() if cluster is not None else None
        if new_ep is None:
            self.fail(ProxyError("no_backend", status=503))
            return
        self._use(new_ep)

    def _finish_try(self, ep: Endpoint, *, ok: bool, status: int, stale: bool = False) -> None:
        """One try on ``ep`` is over: balancer feedback and passive health.
        ``status`` -1 is a connect failure, 0 a reset; a stale pooled
        connection is nobody's fault."""
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        cluster = self.cluster
        if cluster is None or not self.try_started:
            return  # this try was already accounted for
        seconds = time.monotonic() - self.try_started
        cluster.balancer.on_finish(ep, seconds, ok)
        cluster.observe(ep, seconds)
        self.try_started = 0.0
        if not ok and not stale:
            self.failed.append(ep)
        if stale:
            return
        if status == -1:
            cluster.record(ep, connect_failed=True)
        else:
            cluster.record(ep, status=status)

    def _per_try_expired(self, try_no: int) -> None:
        self.try_timer = None
        if self.closed or self.response_started or try_no != self.tries:
            return
        back, self.back = self.back, None
        if back is not None:
            back.abort()
        self._upstream_failed(UpstreamError("per_try_timeout", status=504), reused=False)
        self.flush()

    def fail(self, err: ProxyError, extra: Headers = ()) -> None:  # type: ignore[assignment]
        """Answer locally (no response byte went out yet) and end."""
        if self.closed:
            return
        self.ctx.reject(err.reason)
        if self.back is not None:
            self.back.abort()
            self.back = None
        self.status = err.status
        if extra:
            self.front.local_reply(err.status, err.reason, extra)
        else:
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
            if status == 499 and not self.response_started:
                self._finish_try(ep, ok=True, status=0, stale=True)  # the client left
            else:
                self._finish_try(ep, ok=status < 500, status=status)
        cluster = self.cluster
        if cluster is not None:
            cluster.requests -= 1
            if self.retried:
                cluster.retries -= 1
        elapsed = time.monotonic() - self.started
        route = self.route
        ctx.count(
            self.version,
            ep.name if ep is not None else "",
            status,
            elapsed,
            route.name if route is not None and route.name != "default" else "",
        )
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
