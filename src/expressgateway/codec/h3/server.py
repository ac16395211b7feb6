"""HTTP/3 server side (RFC 9114): requests in, responses out.

Requests are validated by the checks shared with HTTP/2 before anything is
dialed upstream: a malformed head (a pseudo-header repeated, missing,
unknown or after a regular field; a connection-specific field; ...) is a
stream error H3_MESSAGE_ERROR; a well-formed one over a limit is answered
(400, 413, 431). The body must match ``content-length``.

Connection recycling: after ``max_requests`` requests the codec sends
GOAWAY naming the next stream; later streams are refused with
H3_REQUEST_REJECTED (the client may retry them elsewhere).

Early data (0-RTT, only when the listener enables it): a request that
arrives before the handshake completed is served only if its method is
safe (RFC 8470); others get 425 Too Early.
"""

from __future__ import annotations

from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import HeadersReceived

from expressgateway.codec.h1.framing import local_reply_body
from expressgateway.codec.h2.events import StreamRejected
from expressgateway.codec.h2.validate import (
    RequestValidator,
    StreamError,
    UnderscorePolicy,
    encode_fields,
    trailer_fields,
)
from expressgateway.core.events import (
    CANCEL,
    PROTOCOL_ERROR,
    Body,
    Headers,
    Informational,
    ResponseHead,
    Source,
    Trailers,
)

from .base import STATUS, H3Codec, H3Stream, Output, mark_content_length
from .quic import FlowQuic

#: RFC 8470 §2.1: methods a server may answer from early data
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class H3ServerCodec(H3Codec):
    _source = Source.DOWNSTREAM

    def __init__(
        self,
        quic: FlowQuic,
        *,
        scheme: bytes = b"https",
        max_headers: int = 100,
        max_field_section: int = 65536,
        max_request_body_bytes: int = 64 << 20,
        underscore_policy: UnderscorePolicy = "reject",
        max_requests: int = 0,
    ) -> None:
        super().__init__(quic, max_headers=max_headers, max_field_section=max_field_section)
        self.validator = RequestValidator(
            scheme=scheme,
            max_headers=max_headers,
            max_header_list_size=max_field_section,
            max_request_body_bytes=max_request_body_bytes,
            underscore_policy=underscore_policy,
            enable_connect_protocol=False,
            connect_protocols=frozenset(),
        )
        self.max_body = max_request_body_bytes
        self.max_requests = max_requests
        self.requests = 0
        #: first client stream id not processed, once GOAWAY went out
        self.goaway_at: int | None = None
        self.rejected_after_goaway = 0
        #: highest client stream seen (for GOAWAY)
        self.highest = -4

    # -- requests ----------------------------------------------------------------
    def _on_headers(self, he: HeadersReceived, out: Output) -> None:
        sid = he.stream_id
        st = self.streams.get(sid)
        if st is not None:
            self._on_trailers(st, he.headers, he.stream_ended, out)
            return
        if sid in self.h3.dead:
            return
        if sid > self.highest:
            self.highest = sid
        if self.goaway_at is not None and sid >= self.goaway_at:
            # after our GOAWAY: not processed; safe for the client to retry
            self.rejected_after_goaway += 1
            self.h3.abandon(sid, ErrorCode.H3_REQUEST_REJECTED)
            return
        end = he.stream_ended
        try:
            head = self.validator.request(mark_content_length(he.headers), end)  # type: ignore[arg-type]
        except StreamError as exc:
            self._reject(sid, exc, end, out)
            return
        self.requests += 1
        if self.max_requests and self.requests >= self.max_requests and self.goaway_at is None:
            self.goaway(sid + 4)
        if not self.handshake_done and head.method not in SAFE_METHODS:
            # 0-RTT is replayable: only safe methods (RFC 8470 §5.2)
            self._reject(sid, StreamError("too_early", 425), end, out)
            return
        st = H3Stream(sid)
        st.head_seen = True
        st.expected = head.content_length
        st.remote_done = end
        self.streams[sid] = st
        self.quic.track(sid)
        out.append((sid, head))

    def _reject(self, sid: int, exc: StreamError, end: bool, out: Output) -> None:
        err = exc.downstream()
        if exc.status:
            st = H3Stream(sid)
            st.head_seen = True
            st.remote_done = end
            st.expected = 0  # its body is not wanted
            self.streams[sid] = st
        else:
            self.h3.abandon(sid, ErrorCode.H3_MESSAGE_ERROR)
        out.append((sid, StreamRejected(err)))

    def _on_data(self, st: H3Stream, data: bytes, end: bool, out: Output) -> None:
        n = len(data)
        total = st.received + n
        st.received = total
        expected = st.expected
        if expected is not None:
            if total > expected or (end and total != expected):
                if st.head_seen and expected == 0 and st.sid not in self.quic.held:
                    # a rejected request's body: drop it
                    if end:
                        self._remote_end(st)
                    return
                self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out)
                return
        elif total > self.max_body:
            self._stream_error(st, CANCEL, "body_too_large", out)
            return
        if st.sid not in self.quic.held:
            if end:
                self._remote_end(st)
            return  # rejected stream: nobody consumes it
        if n:
            self.quic.hold(st.sid, n)
        out.append((st.sid, Body(data, end)))
        if end:
            self._remote_end(st)

    def _on_trailers(self, st: H3Stream, headers: Headers, end: bool, out: Output) -> None:
        if st.sid not in self.quic.held:
            self._remote_end(st)  # a refused request: its answer is out or due
            return
        try:
            fields = trailer_fields(headers, self.max_headers, self.max_list)  # type: ignore[arg-type]
        except StreamError as exc:
            self._stream_error(st, PROTOCOL_ERROR, exc.reason, out)
            return
        if st.expected is not None and st.received != st.expected:
            self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out)
            return
        if st.sid in self.quic.held:
            out.append((st.sid, Trailers(fields)))
        self._remote_end(st)

    # -- responses ----------------------------------------------------------------
    def send_informational(self, stream_id: int, info: Informational) -> None:
        st = self.streams.get(stream_id)
        if st is None or st.local_done:
            return
        fields, _, _ = encode_fields(info.headers)
        self.h3.send_headers(stream_id, [(b":status", STATUS[info.status]), *fields])

    def send_response_head(self, stream_id: int, head: ResponseHead) -> None:
        st = self.streams.get(stream_id)
        if st is None or st.local_done:
            return
        status = head.status
        fields, _, header_cl = encode_fields(head.headers)
        cl = head.content_length if head.content_length is not None else header_cl
        block = [(b":status", STATUS[status]), *fields]
        if cl is not None and status != 204:
            block.append((b"content-length", b"%d" % cl))
        self.h3.send_headers(stream_id, block, end_stream=head.end_stream)
        if head.end_stream:
            self._local_end(st)

    def send_local_reply(
        self, stream_id: int, status: int, reason: str = "", extra: Headers | None = None
    ) -> None:
        """Answer from the gateway itself (same JSON body as on the other fronts)."""
        body = local_reply_body(status, reason)
        headers: Headers = [(b"content-type", b"application/json")]
        if extra:
            headers.extend(extra)
        self.send_response_head(stream_id, ResponseHead(status, headers, False, len(body)))
        self.send_body(stream_id, body, True)

    def _local_end(self, st: H3Stream) -> None:
        st.local_done = True
        if st.remote_done:
            self._forget(st)
            return
        # RFC 9114 §4.1: the response is complete; the rest of the request
        # is not wanted
        self._forget(st)
        self.h3.kill(st.sid)
        qs = self.quic._streams.get(st.sid)
        if qs is not None and not qs.receiver.is_finished:
            self.quic.stop_stream(st.sid, ErrorCode.H3_NO_ERROR)

    # -- connection ---------------------------------------------------------------
    def goaway(self, first_unprocessed: int | None = None) -> None:
        """Send GOAWAY: streams from ``first_unprocessed`` on (default: the
        next the client may open) will be refused."""
        if self.goaway_at is not None:
            return
        if first_unprocessed is None:
            first_unprocessed = self.highest + 4
        self.goaway_at = first_unprocessed
        self.h3.send_goaway(first_unprocessed)
