"""What the HTTP/3 server and client codecs share: the QUIC + HTTP/3 pair,
per-stream state, body accounting, sending and resets.

A codec is driven by its shell: the shell hands datagrams to ``quic``
(``receive_datagram``) and timer expiries (``handle_timer``), then calls
:meth:`H3Codec.events` for the neutral ``(stream_id, event)`` pairs, and
sends ``quic.datagrams_to_send()``. Nothing here does I/O.
"""

from __future__ import annotations

from aioquic.h3.connection import ErrorCode
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)

from expressgateway.codec.h2.validate import CONTENT_LENGTH, encode_fields
from expressgateway.core.events import Headers, Reset, Source

from .connection import GatewayH3, from_h3, to_h3
from .quic import FlowQuic

Output = list[tuple[int, object]]
STATUS = {code: str(code).encode() for code in range(100, 600)}
NO_CONTENT = frozenset({204, 304})


class H3Stream:
    """The gateway's view of one request stream."""

    __slots__ = (
        "expected",
        "head_seen",
        "local_done",
        "no_body",
        "received",
        "remote_done",
        "sid",
    )

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.head_seen = False
        self.expected: int | None = None
        self.received = 0
        self.local_done = False
        self.remote_done = False
        self.no_body = False


def mark_content_length(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The shared validators know ``content-length`` by the HPACK decoder's
    marker object; QPACK hands a plain name."""
    for name, _ in headers:
        if name == b"content-length":
            return [(CONTENT_LENGTH, v) if n == b"content-length" else (n, v) for n, v in headers]
    return headers


class H3Codec:
    _source = Source.DOWNSTREAM

    def __init__(self, quic: FlowQuic, *, max_headers: int, max_field_section: int) -> None:
        self.quic = quic
        self.h3 = GatewayH3(quic, max_field_section)
        self.max_headers = max_headers
        self.max_list = max_field_section
        self.streams: dict[int, H3Stream] = {}
        self.handshake_done = False
        self.terminated: ConnectionTerminated | None = None
        #: (issued?, connection id) since the shell last looked: it routes by them
        self.cid_changes: list[tuple[bool, bytes]] = []

    # -- inbound -------------------------------------------------------------------
    def events(self) -> Output:
        """Neutral events for everything QUIC has delivered since last time."""
        out: Output = []
        quic = self.quic
        h3 = self.h3
        while (qe := quic.next_event()) is not None:
            for he in h3.handle_event(qe):
                self._on_h3(he, out)
            if not isinstance(qe, (StreamReset, StopSendingReceived)):
                if isinstance(qe, HandshakeCompleted):
                    self.handshake_done = True
                elif isinstance(qe, ConnectionTerminated):
                    self.terminated = qe
                else:
                    self._on_quic(qe, out)
                continue
            if isinstance(qe, StopSendingReceived) and not self._stop_ends(qe):
                # RFC 9114 §4.1: H3_NO_ERROR: the peer answered without
                # needing the rest of our message; its answer still counts
                st = self.streams.get(qe.stream_id)
                if st is not None:
                    self._local_end(st)
                continue
            st = self.streams.pop(qe.stream_id, None)
            if st is None:
                continue
            quic.untrack(st.sid)
            if isinstance(qe, StopSendingReceived):
                # the peer wants no more of this stream: stop both halves
                h3.abandon(st.sid, ErrorCode.H3_REQUEST_CANCELLED)
            else:
                h3.kill(st.sid)
            out.append((st.sid, Reset(from_h3(qe.error_code), self._source, self._reset_reason)))
        if h3.broken:
            for sid, reason in h3.broken:
                self._broken(sid, reason, out)
            h3.broken.clear()
        return out

    _reset_reason = "client_reset"

    def _stop_ends(self, qe: StopSendingReceived) -> bool:
        """Does the peer's STOP_SENDING end the exchange? (On the server,
        always: the client wants no more of the response.)"""
        return True

    def _on_quic(self, qe: QuicEvent, out: Output) -> None:
        if isinstance(qe, ConnectionIdIssued):
            self.cid_changes.append((True, qe.connection_id))
        elif isinstance(qe, ConnectionIdRetired):
            self.cid_changes.append((False, qe.connection_id))

    def _on_h3(self, he: H3Event, out: Output) -> None:
        if isinstance(he, DataReceived):
            st = self.streams.get(he.stream_id)
            if st is not None:
                self._on_data(st, he.data, he.stream_ended, out)
        elif isinstance(he, HeadersReceived):
            self._on_headers(he, out)

    def _on_headers(self, he: HeadersReceived, out: Output) -> None:
        raise NotImplementedError

    def _on_data(self, st: H3Stream, data: bytes, end: bool, out: Output) -> None:
        raise NotImplementedError

    def _broken(self, sid: int, reason: str, out: Output) -> None:
        st = self.streams.pop(sid, None)
        if st is not None:
            self.quic.untrack(sid)
            out.append((sid, Reset(from_h3(ErrorCode.H3_MESSAGE_ERROR), self._source, reason)))

    def _stream_error(self, st: H3Stream, code: int, reason: str, out: Output) -> None:
        """Reset ``st`` (neutral ``code``) and tell the shell."""
        self.streams.pop(st.sid, None)
        self.quic.untrack(st.sid)
        self.h3.abandon(st.sid, to_h3(code))
        out.append((st.sid, Reset(code, self._source, reason)))

    def _remote_end(self, st: H3Stream) -> None:
        st.remote_done = True
        if st.local_done:
            self._forget(st)

    def _forget(self, st: H3Stream) -> None:
        self.streams.pop(st.sid, None)
        self.quic.untrack(st.sid)

    # -- flow control --------------------------------------------------------------
    def ack_data(self, stream_id: int, n: int) -> None:
        """``n`` body bytes of ``stream_id`` were written on: credit them back."""
        self.quic.release(stream_id, n)

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on ``stream_id`` toward the peer and not yet acknowledged."""
        qs = self.quic._streams.get(stream_id)
        if qs is None:
            return 0
        sender = qs.sender
        return sender._buffer_stop - sender._buffer_start

    # -- outbound ------------------------------------------------------------------
    def send_body(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        st = self.streams.get(stream_id)
        if st is None or st.local_done:
            return len(data)
        if data or end_stream:
            self.h3.send_data(stream_id, data, end_stream)
        if end_stream:
            self._local_end(st)
        return len(data)

    def send_trailers(self, stream_id: int, headers: Headers) -> None:
        st = self.streams.get(stream_id)
        if st is None or st.local_done:
            return
        fields, _, _ = encode_fields(headers)
        self.h3.send_headers(stream_id, fields, end_stream=True)
        self._local_end(st)

    def _local_end(self, st: H3Stream) -> None:
        st.local_done = True
        if st.remote_done:
            self._forget(st)

    def reset_stream(self, stream_id: int, code: int) -> None:
        """End ``stream_id`` abnormally (neutral ``code``)."""
        st = self.streams.pop(stream_id, None)
        self.quic.untrack(stream_id)
        if st is not None or stream_id in self.quic._streams:
            self.h3.abandon(stream_id, to_h3(code))

    def open_streams(self) -> int:
        return len(self.streams)
