"""HTTP/3 client side (toward ``h3`` backends): requests out, responses in.

A response head is checked by the rules shared with HTTP/2; a malformed one
resets the stream (H3_MESSAGE_ERROR) and is reported as ``Reset`` (the
bridge answers 502). A GOAWAY from the backend turns every stream at or
after its id into ``Reset(REFUSED_STREAM)``: not processed, safe to retry.
"""

from __future__ import annotations

from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import HeadersReceived
from aioquic.quic.events import StopSendingReceived

from expressgateway.codec.h2.events import GoAwayReceived
from expressgateway.codec.h2.validate import (
    StreamError,
    encode_fields,
    response_fields,
    trailer_fields,
)
from expressgateway.core.errors import Retry, UpstreamError
from expressgateway.core.events import (
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    Body,
    Informational,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
    Trailers,
)

from .base import NO_CONTENT, H3Codec, H3Stream, Output, mark_content_length
from .quic import FlowQuic


class H3ClientCodec(H3Codec):
    _source = Source.UPSTREAM
    _reset_reason = "upstream_reset"

    def __init__(
        self,
        quic: FlowQuic,
        *,
        scheme: bytes = b"https",
        max_headers: int = 100,
        max_field_section: int = 65536,
        max_streams: int = 100,
    ) -> None:
        super().__init__(quic, max_headers=max_headers, max_field_section=max_field_section)
        self.scheme = scheme
        self.max_streams = max_streams
        self.goaway_seen = False

    def _stop_ends(self, qe: StopSendingReceived) -> bool:
        return qe.error_code != ErrorCode.H3_NO_ERROR

    def can_open_stream(self) -> bool:
        return (
            not self.goaway_seen
            and self.terminated is None
            and len(self.streams) < self.max_streams
            and self.quic._close_event is None
        )

    def send_request(self, head: RequestHead) -> int:
        """Open a stream for ``head``; raises ``UpstreamError`` (retry safe)
        when this connection cannot take one."""
        if not self.can_open_stream():
            raise UpstreamError("h3_no_stream", retry=Retry.YES, detail="cannot open a stream")
        fields, _, header_cl = encode_fields(head.headers, keep_te=True)
        cl = head.content_length if head.content_length is not None else header_cl
        block = [(b":method", head.method), (b":scheme", self.scheme)]
        block.append((b":authority", head.authority or b"localhost"))
        block.append((b":path", head.path))
        block.extend(fields)
        if cl is not None:
            block.append((b"content-length", b"%d" % cl))
        sid = self.quic.get_next_available_stream_id()
        self.h3.send_headers(sid, block, end_stream=head.end_stream)
        st = H3Stream(sid)
        st.no_body = head.method == b"HEAD"
        st.local_done = head.end_stream
        self.streams[sid] = st
        self.quic.track(sid)
        return sid

    def events(self) -> Output:
        out = super().events()
        goaway = self.h3.goaway_id
        if goaway is not None and not self.goaway_seen:
            self.goaway_seen = True
            out.append((0, GoAwayReceived(0, goaway)))
            for st in [s for s in self.streams.values() if s.sid >= goaway]:
                # not processed by the backend (RFC 9114 §5.2): retry elsewhere
                self.streams.pop(st.sid, None)
                self.quic.untrack(st.sid)
                self.h3.abandon(st.sid, 0x10C)  # H3_REQUEST_CANCELLED
                out.append((st.sid, Reset(REFUSED_STREAM, Source.UPSTREAM, "refused_stream")))
        return out

    def _on_headers(self, he: HeadersReceived, out: Output) -> None:
        st = self.streams.get(he.stream_id)
        if st is None:
            return
        headers = mark_content_length(he.headers)
        end = he.stream_ended
        if st.head_seen:
            try:
                fields = trailer_fields(headers, self.max_headers, self.max_list)  # type: ignore[arg-type]
            except StreamError as exc:
                self._stream_error(st, PROTOCOL_ERROR, exc.reason, out)
                return
            if not st.no_body and st.expected is not None and st.received != st.expected:
                self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out)
                return
            out.append((st.sid, Trailers(fields)))
            self._remote_end(st)
            return
        try:
            status, fields, cl = response_fields(headers, self.max_headers, self.max_list)  # type: ignore[arg-type]
        except StreamError as exc:
            self._stream_error(st, PROTOCOL_ERROR, exc.reason, out)
            return
        if status < 200:
            out.append((st.sid, Informational(status, fields)))
            return
        st.head_seen = True
        if st.no_body or status in NO_CONTENT:
            st.no_body = True
            st.expected = 0
        else:
            st.expected = cl
            if end and cl:
                self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out)
                return
        out.append((st.sid, ResponseHead(status, fields, end, cl)))
        if end:
            self._remote_end(st)

    def _on_data(self, st: H3Stream, data: bytes, end: bool, out: Output) -> None:
        n = len(data)
        if not st.head_seen:
            if n:
                self._stream_error(st, PROTOCOL_ERROR, "data_before_head", out)
            return
        total = st.received + n
        st.received = total
        expected = st.expected
        mismatch = expected is not None and (total > expected or (end and total != expected))
        if mismatch and not (st.no_body and not n):
            self._stream_error(st, PROTOCOL_ERROR, "content_length_mismatch", out)
            return
        if n:
            self.quic.hold(st.sid, n)
        out.append((st.sid, Body(data, end)))
        if end:
            self._remote_end(st)

    def request_done(self, stream_id: int) -> None:
        """The response ended before the request: the rest of the upload is not wanted."""
        st = self.streams.get(stream_id)
        if st is not None and not st.local_done:
            self.reset_stream(stream_id, 0x8)
