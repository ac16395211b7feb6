"""HTTP/2 client codec (gateway -> backend), sans-IO, on h2.

Many exchanges share one connection. How the shell drives it:

1. ``wire = codec.initiate()`` once (preface + SETTINGS + WINDOW_UPDATE).
2. ``sid = codec.send_request(head)`` when ``codec.can_open_stream()``
   (the peer's SETTINGS_MAX_CONCURRENT_STREAMS minus the open streams, no
   GOAWAY received). The neutral head becomes ``:method``/``:scheme`` (this
   connection's scheme, not the client's)/``:authority``/``:path``;
   hop-by-hop fields are dropped except ``te: trailers``; ``authorization``
   and ``cookie`` are never indexed by HPACK (the connection carries many
   clients' requests). A head with ``protocol`` (an HTTP/1.1 WebSocket
   upgrade or an extended CONNECT) becomes an RFC 8441 extended CONNECT if
   the backend sent SETTINGS_ENABLE_CONNECT_PROTOCOL (else
   ``UpstreamError("h2_extended_connect_unsupported")``); the answer is a
   2xx ``ResponseHead`` and ``TunnelData`` (not 101 / Sec-WebSocket-Accept:
   the HTTP/1.1 front makes those from the original request).
3. ``send_body`` / ``send_trailers`` for the request body; flow control as
   in :mod:`.connection` (``WindowOpened`` when a blocked stream can go on).
4. ``events = codec.feed(data, now)``: per stream ``Informational`` (1xx),
   ``ResponseHead`` (``content_length`` set), ``Body`` pieces or
   ``Trailers``, or ``TunnelData`` after a 2xx to a CONNECT.
   ``Reset(code, UPSTREAM, reason)`` when the backend reset the stream or
   sent a malformed / oversized response (the codec reset it): answer 502 if
   no response head went downstream yet. ``Reset(REFUSED_STREAM, UPSTREAM,
   "goaway_unprocessed")`` (after a ``GoAwayReceived`` on stream 0) and
   ``Reset(REFUSED_STREAM, ...)`` from the backend both mean the request was
   not processed: safe to retry on another connection.
5. ``ack_data(stream_id, n)`` for every body octet written on downstream.
6. ``H2ConnectionError`` (source UPSTREAM) from ``feed``/``check_timeouts``:
   close; every open stream failed. When the backend closes first,
   ``connection_lost()`` returns ``Reset(CANCEL, UPSTREAM,
   "connection_lost")`` for each unfinished stream. ``ping(now)`` checks liveness (e.g.
   before reusing an idle pooled connection); ``check_timeouts`` as on the
   server side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2.events import (
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
)

from expressgateway.core.errors import Retry, UpstreamError
from expressgateway.core.events import (
    CANCEL,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    Body,
    Informational,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
    Trailers,
    TunnelData,
)

from .abuse import AbuseLimits
from .connection import (
    H2Codec,
    LeanConnection,
    Output,
    Stream,
    local_reset_reason,
    send_headers_frames,
)
from .events import GoAwayReceived
from .validate import StreamError, encode_fields, never_indexed, response_fields, trailer_fields

if TYPE_CHECKING:
    from collections.abc import Iterator

_END = Body(b"", True)
_NO_CONTENT = frozenset({204, 304})
_WS_DROP = frozenset({b"sec-websocket-key"})


class _ClientConnection(LeanConnection):
    """h2's connection, without a count of the open streams for every new
    request: h2 scans all its streams for it (500 in flight on a shared
    upstream connection: most of a request's cost), but the client codec
    keeps the backend's MAX_CONCURRENT_STREAMS itself
    (:attr:`H2ClientCodec.available_streams`). The scan, which also drops
    closed streams, still runs every :data:`.connection.CULL_EVERY` new streams."""

    @property
    def open_outbound_streams(self) -> int:
        return super().open_outbound_streams if self._cull_due() else 0


class H2ClientCodec(H2Codec):
    """HTTP/2 client side: encodes requests, parses responses.

    ``scheme`` is the ``:scheme`` of requests on this connection (``http``
    for h2c, ``https`` over TLS). ``max_header_list_size`` and
    ``max_headers`` bound response heads and trailers (a larger response is
    reset and reported as ``Reset(reason="header_too_large")``, a 502)."""

    _connection_class = _ClientConnection

    _source = Source.UPSTREAM

    def __init__(
        self,
        *,
        scheme: bytes = b"http",
        max_header_list_size: int = 65536,
        max_headers: int = 256,
        max_send_buf_size: int = 65536,
        keep_alive_interval_ms: int = 30000,
        keep_alive_timeout_ms: int = 30000,
        initial_stream_window_size: int = 65535,
        initial_connection_window_size: int = 1048576,
        send_stall_timeout: float = 60.0,
        max_continuation_frames: int = 32,
        max_header_block_bytes: int | None = None,
        abuse_limits: AbuseLimits | None = None,
        max_local_error_reset_streams: int = 100,
    ) -> None:
        super().__init__(
            client_side=True,
            max_concurrent_streams=100,
            max_header_list_size=max_header_list_size,
            max_headers=max_headers,
            max_send_buf_size=max_send_buf_size,
            keep_alive_interval_ms=keep_alive_interval_ms,
            keep_alive_timeout_ms=keep_alive_timeout_ms,
            initial_stream_window_size=initial_stream_window_size,
            initial_connection_window_size=initial_connection_window_size,
            send_stall_timeout=send_stall_timeout,
            max_continuation_frames=max_continuation_frames,
            max_header_block_bytes=max_header_block_bytes,
            abuse_limits=abuse_limits,
            max_rapid_resets=1 << 30,  # (a server does not open streams)
            max_local_error_resets=max_local_error_reset_streams,
        )
        self._scheme = scheme
        #: the lowest GOAWAY last-stream-id received
        self._peer_last = (1 << 31) - 1
        self._dispatch.update(
            {
                InformationalResponseReceived: self._on_informational,
                ResponseReceived: self._on_response,
                DataReceived: self._on_data,
                TrailersReceived: self._on_trailers,
                StreamReset: self._on_reset,
            }
        )

    # -- opening streams -------------------------------------------------------

    @property
    def available_streams(self) -> int:
        """How many more streams may be opened now."""
        if self.goaway_received or self._dead is not None:
            return 0
        limit = self._conn.remote_settings.max_concurrent_streams
        return max(0, min(limit, 1 << 20) - len(self._streams))

    def can_open_stream(self) -> bool:
        return self.available_streams > 0 and self._conn.highest_outbound_stream_id < (1 << 31) - 3

    @property
    def extended_connect(self) -> bool:
        """The backend accepts RFC 8441 extended CONNECT."""
        return bool(self._conn.remote_settings.enable_connect_protocol)

    def send_request(self, head: RequestHead, end_stream: bool | None = None) -> int:
        """Open a stream for ``head`` and return its id. ``end_stream``
        (default ``head.end_stream``) says no body follows. Raises
        ``UpstreamError`` (retry safe) when no stream can be opened."""
        if not self.can_open_stream():
            raise UpstreamError(
                "h2_no_stream", retry=Retry.YES, detail="connection cannot open a stream"
            )
        if end_stream is None:
            end_stream = head.end_stream
        conn = self._conn
        fields, _, header_cl = encode_fields(head.headers, keep_te=True)
        cl = head.content_length if head.content_length is not None else header_cl
        method = head.method
        tunnel = head.protocol is not None
        block: list[tuple[bytes, bytes]]
        if tunnel:
            if not self.extended_connect:
                raise UpstreamError(
                    "h2_extended_connect_unsupported",
                    status=502,
                    detail="backend did not send SETTINGS_ENABLE_CONNECT_PROTOCOL",
                )
            assert head.protocol is not None
            block = [
                (b":method", b"CONNECT"),
                (b":protocol", head.protocol),
                (b":scheme", self._scheme),
                (b":authority", head.authority),
                (b":path", head.path),
            ]
            block.extend(f for f in fields if f[0] not in _WS_DROP)
            cl = None
        else:
            block = [(b":method", method), (b":scheme", self._scheme)]
            if head.authority:
                block.append((b":authority", head.authority))
            block.append((b":path", head.path))
            block.extend(fields)
        if cl is not None and not tunnel:
            block.append((b"content-length", b"%d" % cl))
        sid = conn.get_next_available_stream_id()
        send_headers_frames(conn, sid, never_indexed(block), end_stream)
        st = Stream(sid)
        st.can_send = True
        st.tunnel = tunnel
        st.no_body = method == b"HEAD"
        self._streams[sid] = st
        if end_stream:
            st.local_done = True
        return sid

    # -- responses ----------------------------------------------------------------

    def _bad_response(self, st: Stream, exc: StreamError, out: Output) -> None:
        self._stream_error(st, PROTOCOL_ERROR, exc.reason, out)

    def _on_informational(self, ev: InformationalResponseReceived, out: Output) -> None:
        st = self._streams.get(ev.stream_id)
        if st is None:
            return
        try:
            status, headers, _ = response_fields(ev.headers, self._max_headers, self._max_list)  # type: ignore[arg-type]
        except StreamError as exc:
            self._bad_response(st, exc, out)
            return
        out.append((st.sid, Informational(status, headers)))

    def _on_response(self, ev: ResponseReceived, out: Output) -> None:
        st = self._streams.get(ev.stream_id)
        if st is None:
            return
        end = ev.stream_ended is not None
        try:
            status, headers, cl = response_fields(ev.headers, self._max_headers, self._max_list)  # type: ignore[arg-type]
        except StreamError as exc:
            self._bad_response(st, exc, out)
            return
        st.head_sent = True
        if st.no_body or status in _NO_CONTENT:
            st.no_body = True
            st.expected = 0
        else:
            st.expected = cl
            if end and cl:
                self._bad_response(
                    st, StreamError("content_length_mismatch", 0, "END_STREAM with content"), out
                )
                return
        if st.tunnel and not 200 <= status < 300:
            st.tunnel = False  # a refused CONNECT: an ordinary response body
        out.append((st.sid, ResponseHead(status, headers, end, cl)))
        if end:
            self._remote_end(st)

    def _remote_end(self, st: Stream) -> None:
        st.remote_done = True
        if st.local_done:
            self._forget(st)

    def _on_data(self, ev: DataReceived, out: Output) -> None:
        sid = ev.stream_id
        st = self._streams.get(sid)
        data = ev.data
        flc = ev.flow_controlled_length
        n = len(data)
        if st is None:
            if flc:
                self._conn.acknowledge_received_data(flc, sid)
            return
        if flc > n:
            self._conn.acknowledge_received_data(flc - n, sid)
        end = ev.stream_ended is not None
        if not st.head_sent:
            self._stream_error(st, PROTOCOL_ERROR, "data_before_response", out, n)
            return
        total = st.received + n
        st.received = total
        expected = st.expected
        if expected is not None and (total > expected or (end and total != expected)):
            reason = "body_in_bodiless_response" if st.no_body else "content_length_mismatch"
            self._stream_error(st, PROTOCOL_ERROR, reason, out, n)
            return
        st.unacked += n
        if st.tunnel:
            if n:
                out.append((sid, TunnelData(data)))
            if end:
                out.append((sid, _END))
        else:
            out.append((sid, Body(data, end)))
        if end:
            self._remote_end(st)

    def _on_trailers(self, ev: TrailersReceived, out: Output) -> None:
        st = self._streams.get(ev.stream_id)
        if st is None:
            return
        try:
            headers = trailer_fields(ev.headers, self._max_headers, self._max_list)  # type: ignore[arg-type]
        except StreamError as exc:
            self._bad_response(st, exc, out)
            return
        if st.expected is not None and st.received != st.expected:
            self._bad_response(
                st, StreamError("content_length_mismatch", 0, "trailers before the full body"), out
            )
            return
        out.append((st.sid, Trailers(headers)))
        self._remote_end(st)

    def _on_reset(self, ev: StreamReset, out: Output) -> None:
        sid = ev.stream_id
        st = self._streams.pop(sid, None)
        if st is None:
            return
        self._blocked.pop(sid, None)
        self._release(st)
        code = int(ev.error_code)
        if st.remote_done:
            # RFC 9113 §8.1: the response is complete, the rest of the
            # request is not wanted (NO_ERROR): not a failure
            return
        reason = "upstream_reset" if ev.remote_reset else local_reset_reason(code)
        if code == REFUSED_STREAM and ev.remote_reset:
            reason = "upstream_refused"
        out.append((sid, Reset(code, Source.UPSTREAM, reason)))

    def _on_goaway(self, last: int, code: int, debug: bytes, out: Output) -> None:
        """RFC 9113 §6.8: streams above ``last`` were not processed."""
        self.goaway_received = True
        out.append((0, GoAwayReceived(code, last, debug)))
        if last >= self._peer_last:
            return
        self._peer_last = last
        for st in list(self._unprocessed(last)):
            self._streams.pop(st.sid, None)
            self._blocked.pop(st.sid, None)
            self._rst(st.sid, CANCEL)
            self._release(st)
            out.append((st.sid, Reset(REFUSED_STREAM, Source.UPSTREAM, "goaway_unprocessed")))

    def _unprocessed(self, last: int) -> Iterator[Stream]:
        return (st for sid, st in self._streams.items() if sid > last)
