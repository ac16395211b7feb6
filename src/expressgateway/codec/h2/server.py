"""HTTP/2 server codec (client -> gateway), sans-IO, on h2.

Bytes in, ``(stream_id, event)`` pairs out; responses in, bytes out. No
sockets; the only clock is the ``now`` the shell passes to ``feed`` and
``check_timeouts``. How the shell drives it:

1. ``wire = codec.initiate()`` once, written before anything else.
2. ``events = codec.feed(data, now)`` for every read, then write
   ``codec.data_to_send()`` (h2 answers SETTINGS and PING by itself). Per
   stream, events come in this order: ``RequestHead``, ``Body`` pieces (the
   last with ``end_stream=True``) or ``Trailers``; or ``TunnelData`` pieces
   for an extended CONNECT (RFC 8441) stream, ended by ``Body(b"", True)``.
   ``Reset(code, DOWNSTREAM, reason)`` ends a stream abnormally at any point
   (client reset ``client_reset``, ``content_length_mismatch``,
   ``body_too_large``, ``bad_trailer``...): never forward it as a clean end.
   ``StreamRejected`` (no ``RequestHead`` before it) reports a refused
   request; when ``error.status`` is set answer it with
   ``send_local_reply`` (or ``send_response_head`` ...). ``WindowOpened``
   says a stream blocked in ``send_body`` can take more. ``GoAwayReceived``
   (stream 0) says the client is going away. A stream the client opens and
   resets within one read is never reported (nothing was started for it);
   it still counts as a rapid reset.
3. Every body octet delivered must be acknowledged with
   ``ack_data(stream_id, n)`` once written on (or dropped): that is the only
   way the client gets flow-control credit back (backpressure).
4. Answer with ``send_response_head`` (``send_informational`` for 1xx
   first), ``send_body`` (returns how much it took, see
   :mod:`.connection`), ``send_trailers``; ``reset_stream`` to abort.
   Body or trailers before the head is a ``RuntimeError``; any call for a
   stream that is over (reset, finished) is ignored (``send_body`` counts
   the data as taken), since the shell may learn of the end only later.
5. ``H2ConnectionError`` from ``feed``/``check_timeouts``: write
   ``data_to_send()`` (the GOAWAY) and close; every open stream is lost.
   When the transport goes away first, ``connection_lost()`` returns a
   ``Reset`` for each stream that had not finished.
6. Timers: call ``check_timeouts(now)`` by ``next_deadline()``.
   ``shutdown(now)`` starts a graceful two-step GOAWAY; close when
   ``draining`` and ``open_streams == 0``.

What h2 does here: parsing frames, HPACK, stream states, SETTINGS and
PING answers, flow-control windows, the frame-level checks of RFC 9113
§5-§6. Response HEADERS and DATA frames are framed by
:mod:`.connection` itself (h2's state inputs and encoder, no hyperframe
object per frame: most of h2's cost per request was building those).
What this module adds: see :mod:`.frames` (frame-header pre-pass),
:mod:`.abuse` (DoS detectors), :mod:`.validate` (request rules), and here:
REFUSED_STREAM beyond MAX_CONCURRENT_STREAMS (h2 would close the
connection), content-length against DATA as a stream error, the body cap,
the lifetime stream cap, and graceful GOAWAY (h2 cannot keep serving after
any GOAWAY).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from h2.events import DataReceived, RequestReceived, StreamReset, TrailersReceived
from h2.settings import SettingCodes, Settings

from expressgateway.codec.h1.framing import local_reply_body
from expressgateway.core.events import (
    CANCEL,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    Body,
    Headers,
    Informational,
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
from .events import GoAwayReceived, StreamRejected
from .validate import (
    RequestValidator,
    StreamError,
    UnderscorePolicy,
    encode_fields,
    trailer_fields,
)

if TYPE_CHECKING:
    from expressgateway.config.model import H2SecurityConfig

_END = Body(b"", True)


class _ServerConnection(LeanConnection):
    """h2's connection, without a count of the open streams for every new
    one: h2 scans all its streams for it (and drops the closed ones on the
    way), but the server codec enforces MAX_CONCURRENT_STREAMS itself (h2's
    copy of our settings has no limit). The scan still runs every
    :data:`.connection.CULL_EVERY` new streams, so closed streams do not pile up."""

    @property
    def open_inbound_streams(self) -> int:
        return super().open_inbound_streams if self._cull_due() else 0


_NO_CONTENT = frozenset({204, 304})
_STATUS = {code: str(code).encode() for code in range(100, 600)}


class H2ServerCodec(H2Codec):
    """HTTP/2 server side: parses requests, encodes responses.

    Limits (defaults are those of ``H2SecurityConfig``): the advertised
    ``max_concurrent_streams`` (beyond it: RST_STREAM REFUSED_STREAM),
    ``max_header_list_size`` (SETTINGS_MAX_HEADER_LIST_SIZE; a larger
    decoded list is 431, twice as large is an HPACK bomb and closes the
    connection), ``max_headers`` fields (431), ``max_request_body_bytes``
    (413 from content-length, else a reset), ``max_streams_per_connection``
    (then GOAWAY NO_ERROR), the rapid-reset and local-error budgets
    (``max_pending_accept_reset_streams``, ``max_local_error_reset_streams``
    per ``abuse_limits.window``), ``abuse_limits`` for the floods.
    ``underscore_policy`` decides what a ``_`` in a field name does
    (``reject`` 400, ``drop``, ``allow``). ``enable_connect_protocol``
    advertises RFC 8441 extended CONNECT for the ``connect_protocols``
    (default websocket); ``scheme`` is the listener's (the client's
    ``:scheme`` is checked, not trusted)."""

    _source = Source.DOWNSTREAM
    _connection_class = _ServerConnection

    def __init__(
        self,
        *,
        scheme: bytes = b"https",
        max_pending_accept_reset_streams: int = 100,
        max_local_error_reset_streams: int = 100,
        max_concurrent_streams: int = 256,
        max_header_list_size: int = 65536,
        max_send_buf_size: int = 65536,
        keep_alive_interval_ms: int = 30000,
        keep_alive_timeout_ms: int = 30000,
        initial_stream_window_size: int = 65535,
        initial_connection_window_size: int = 1048576,
        max_request_body_bytes: int = 64 * 1024 * 1024,
        max_headers: int = 256,
        underscore_policy: UnderscorePolicy = "reject",
        enable_connect_protocol: bool = False,
        connect_protocols: frozenset[bytes] = frozenset({b"websocket"}),
        max_streams_per_connection: int = 10000,
        send_stall_timeout: float = 60.0,
        max_continuation_frames: int = 32,
        max_header_block_bytes: int | None = None,
        abuse_limits: AbuseLimits | None = None,
    ) -> None:
        super().__init__(
            client_side=False,
            max_concurrent_streams=max_concurrent_streams,
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
            max_rapid_resets=max_pending_accept_reset_streams,
            max_local_error_resets=max_local_error_reset_streams,
            extra_settings=(
                {SettingCodes.ENABLE_CONNECT_PROTOCOL: 1} if enable_connect_protocol else None
            ),
        )
        # h2 itself must not refuse streams (it would close the connection,
        # RFC 9113 §5.1.2 asks for a stream error): the advertised value went
        # into the SETTINGS frame; h2's copy of our settings gets no limit.
        self._max_concurrent = max_concurrent_streams
        self._max_body = max_request_body_bytes
        self._max_lifetime = max_streams_per_connection
        self._opened = 0
        self._fresh: list[Stream] = []
        self._validator = RequestValidator(
            scheme=scheme,
            max_headers=max_headers,
            max_header_list_size=max_header_list_size,
            max_request_body_bytes=max_request_body_bytes,
            underscore_policy=underscore_policy,
            enable_connect_protocol=enable_connect_protocol,
            connect_protocols=connect_protocols,
        )
        self._dispatch.update(
            {
                RequestReceived: self._on_request,
                DataReceived: self._on_data,
                TrailersReceived: self._on_trailers,
                StreamReset: self._on_reset,
            }
        )

    @classmethod
    def from_config(cls, config: H2SecurityConfig, **kwargs: Any) -> H2ServerCodec:
        """A codec with the limits of an ``H2SecurityConfig`` (keyword
        arguments add or override)."""
        values: dict[str, Any] = {
            name: getattr(config, name)
            for name in (
                "max_pending_accept_reset_streams",
                "max_local_error_reset_streams",
                "max_concurrent_streams",
                "max_header_list_size",
                "max_send_buf_size",
                "keep_alive_interval_ms",
                "keep_alive_timeout_ms",
                "initial_stream_window_size",
                "initial_connection_window_size",
            )
        }
        values.update(kwargs)
        return cls(**values)

    def initiate(self) -> bytes:
        wire = super().initiate()
        # see __init__: SETTINGS carried the advertised limit already
        self._conn.local_settings = _unlimited_streams(self._conn.local_settings)
        return wire

    def _peer_highest(self) -> int:
        return self._conn.highest_inbound_stream_id

    def _after_feed(self) -> None:
        if self._fresh:
            for st in self._fresh:
                st.fresh = False
            self._fresh.clear()

    # -- requests ----------------------------------------------------------------

    def _on_request(self, ev: RequestReceived, out: Output) -> None:
        sid = ev.stream_id
        end = ev.stream_ended is not None
        if sid > self._last_accepted:
            # after our GOAWAY: not processed, the client may retry elsewhere
            self._rst(sid, REFUSED_STREAM)
            return
        if len(self._streams) >= self._max_concurrent:
            self._rst(sid, REFUSED_STREAM)
            self._guard.refused_stream()
            return
        try:
            head = self._validator.request(ev.headers, end)  # type: ignore[arg-type]
        except StreamError as exc:
            self._reject(sid, exc, end, out)
            return
        st = Stream(sid)
        st.remote_done = end
        st.expected = head.content_length
        st.fresh = True
        self._fresh.append(st)
        if head.protocol is not None:
            st.tunnel = True
        self._streams[sid] = st
        out.append((sid, head))
        self._opened += 1
        if self._opened >= self._max_lifetime and not self.goaway_sent:
            # lifetime cap: no stream after this one; the client reconnects
            self._guard.totals["stream_cap"] = 1
            self.goaway(NO_ERROR, sid)

    def _reject(self, sid: int, exc: StreamError, end: bool, out: Output) -> None:
        err = exc.downstream()
        if exc.status:
            st = Stream(sid)
            st.rejected = True
            st.remote_done = end
            st.fresh = True
            self._fresh.append(st)
            self._streams[sid] = st
        else:
            self._rst(sid, exc.code)
        out.append((sid, StreamRejected(err)))
        self._guard.local_error_reset()

    def _on_data(self, ev: DataReceived, out: Output) -> None:
        sid = ev.stream_id
        data = ev.data
        flc = ev.flow_controlled_length
        n = len(data)
        st = self._streams.get(sid)
        end = ev.stream_ended is not None
        if st is None or st.rejected:
            # nobody will consume it: the credit goes back now
            if flc:
                self._conn.acknowledge_received_data(flc, sid)
            if st is not None and end:
                st.remote_done = True
                if st.local_done:
                    self._forget(st)
            return
        if flc > n:  # padding is never the shell's to acknowledge
            self._conn.acknowledge_received_data(flc - n, sid)
        total = st.received + n
        st.received = total
        expected = st.expected
        if expected is not None:
            if total > expected or (end and total != expected):
                self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out, n)
                return
        elif total > self._max_body and not st.tunnel:
            self._stream_error(st, CANCEL, "body_too_large", out, n)
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
            st.remote_done = True
            if st.local_done:
                self._forget(st)

    def _on_trailers(self, ev: TrailersReceived, out: Output) -> None:
        st = self._streams.get(ev.stream_id)
        if st is None:
            return
        if st.rejected:
            st.remote_done = True
            if st.local_done:
                self._forget(st)
            return
        try:
            headers = trailer_fields(ev.headers, self._max_headers, self._max_list)  # type: ignore[arg-type]
        except StreamError as exc:
            self._stream_error(st, exc.code, exc.reason, out)
            return
        if st.expected is not None and st.received != st.expected:
            self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out)
            return
        st.remote_done = True
        out.append((st.sid, Trailers(headers)))
        if st.local_done:
            self._forget(st)

    def _on_reset(self, ev: StreamReset, out: Output) -> None:
        sid = ev.stream_id
        st = self._streams.pop(sid, None)
        if st is None:
            return
        self._blocked.pop(sid, None)
        self._release(st)
        code = int(ev.error_code)
        if not ev.remote_reset:
            # h2 reset it for the client's fault: a window overflow (§6.9.1),
            # a frame on a half-closed stream (§5.1)
            out.append((sid, Reset(code, Source.DOWNSTREAM, local_reset_reason(code))))
            self._guard.local_error_reset()
            return
        if not st.head_sent:
            if st.fresh:
                # reset in the same read that opened it: the shell never
                # hears of the stream (nothing was started for it)
                out[:] = [pair for pair in out if pair[0] != sid]
            else:
                out.append((sid, Reset(code, Source.DOWNSTREAM, "client_reset")))
            self._guard.rapid_reset()
            return
        out.append((sid, Reset(code, Source.DOWNSTREAM, "client_reset")))

    def _on_goaway(self, last: int, code: int, debug: bytes, out: Output) -> None:
        # the client pushes nothing we could lose: just stop expecting more
        self.goaway_received = True
        out.append((0, GoAwayReceived(code, last, debug)))

    # -- responses ----------------------------------------------------------------

    def send_informational(self, stream_id: int, info: Informational) -> None:
        """A 1xx response (not 101) before the final one (e.g. 103)."""
        st = self._streams.get(stream_id)
        if st is None or st.head_sent:
            return
        status = info.status
        if not 100 <= status < 200 or status == 101:
            raise ValueError(f"send_informational: status {status}")
        fields, _, _ = encode_fields(info.headers)
        self._conn.send_headers(stream_id, [(b":status", _STATUS[status]), *fields])

    def send_response_head(self, stream_id: int, head: ResponseHead) -> None:
        """The final response head. ``content-length`` comes from
        ``head.content_length`` (or a valid field); none for 204 (RFC 9110
        §8.6) or a 2xx answering CONNECT (§9.3.6). Connection-specific fields are dropped, the rest re-checked
        (:func:`.validate.encode_fields`). A response that ends the stream
        before the request did is followed by RST_STREAM NO_ERROR (RFC 9113
        §8.1), except on a tunnel (there the client's half stays open)."""
        st = self._streams.get(stream_id)
        if st is None or st.head_sent:
            return
        status = head.status
        if not 200 <= status < 600:
            raise ValueError(f"send_response_head: status {status}")
        fields, _, header_cl = encode_fields(head.headers)
        cl = head.content_length if head.content_length is not None else header_cl
        block = [(b":status", _STATUS[status]), *fields]
        if cl is not None and status != 204 and not (st.tunnel and status < 300):
            block.append((b"content-length", b"%d" % cl))
        send_headers_frames(self._conn, stream_id, block, head.end_stream)
        st.head_sent = st.can_send = True
        if head.end_stream:
            self._local_end(st)

    def send_local_reply(
        self, stream_id: int, status: int, reason: str = "", extra: Headers | None = None
    ) -> None:
        """Answer from the gateway itself (a rejected request, a failed
        upstream): the same one-line JSON body as on HTTP/1.1 (left out
        when flow control would hold it back). Only before the response head
        went out; ignored after."""
        st = self._streams.get(stream_id)
        if st is None or st.head_sent:
            return
        body = local_reply_body(status, reason)
        if self.window(stream_id) < len(body):
            body = b""
        headers: Headers = [(b"content-type", b"application/json")]
        if extra:
            headers.extend(extra)
        self.send_response_head(stream_id, ResponseHead(status, headers, False, len(body)))
        self.send_body(stream_id, body, True)

    def _local_end(self, st: Stream) -> None:
        st.local_done = True
        if st.blocked_since:
            st.blocked_since = 0.0
            self._blocked.pop(st.sid, None)
        if st.remote_done:
            self._forget(st)
        elif not st.tunnel:
            # RFC 9113 §8.1: the response is complete; the rest of the
            # request is not wanted
            self._streams.pop(st.sid, None)
            self._rst(st.sid, NO_ERROR)
            self._release(st)


def _unlimited_streams(settings: Settings) -> Settings:
    """A copy of h2's local settings without MAX_CONCURRENT_STREAMS (so h2
    never refuses a stream itself; the codec does)."""
    values = {
        SettingCodes(code): settings[code]
        for code in settings
        if code != SettingCodes.MAX_CONCURRENT_STREAMS
    }
    return Settings(client=False, initial_values=values)
