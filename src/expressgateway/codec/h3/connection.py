"""aioquic's HTTP/3 connection, adapted for a proxy, and the stream
bookkeeping both codecs share.

:class:`GatewayH3` changes four things in aioquic's ``H3Connection``:

- a malformed message is a *stream* error (RFC 9114 §4.1.2: reset with
  H3_MESSAGE_ERROR), not the connection error aioquic raises, so one bad
  request costs its sender only that stream;
- fields are validated by the checks shared with HTTP/2
  (:mod:`expressgateway.codec.h2.validate`), once per block and mostly in C;
  aioquic's own per-octet Python validation is switched off;
- the QPACK dynamic table is not offered (capacity 0, like quiche), so a
  header block can only grow by static-table references and Huffman: no
  QPACK bomb. A field section over ``max_field_section`` (encoded, or
  buffered while it arrives) is a stream error too;
- GOAWAY can be sent, and a received one is remembered.

Sending HEADERS and DATA on a request stream is done here without aioquic's
per-call context manager, and nothing is written on the QPACK encoder and
decoder streams when there is nothing to write (without a dynamic table
there never is): two QUIC stream writes per response instead of four.
"""

from __future__ import annotations

from typing import Any

import pylsqpack
from aioquic._buffer import Buffer, BufferReadError
from aioquic.buffer import encode_uint_var
from aioquic.h3 import connection as _h3
from aioquic.h3.connection import (
    ErrorCode,
    FrameType,
    FrameUnexpected,
    H3Connection,
    H3Stream,
    HeadersState,
    MessageError,
    QpackDecompressionFailed,
    Setting,
    is_interim_response,
)
from aioquic.h3.events import H3Event, HeadersReceived
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived

from expressgateway.core.events import (
    CANCEL,
    CONNECT_ERROR,
    ENHANCE_YOUR_CALM,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
)


def _unchecked(*_args: Any, **_kwargs: Any) -> None:
    return None


# aioquic walks every octet of every field in Python and closes the whole
# connection on a bad one; the codecs validate each block themselves.
_h3.validate_request_headers = _unchecked
_h3.validate_response_headers = _unchecked
_h3.validate_trailers = _unchecked

#: neutral (HTTP/2-style) reset codes -> HTTP/3 (RFC 9114 §8.1)
TO_H3 = {
    NO_ERROR: ErrorCode.H3_NO_ERROR,
    PROTOCOL_ERROR: ErrorCode.H3_MESSAGE_ERROR,
    INTERNAL_ERROR: ErrorCode.H3_INTERNAL_ERROR,
    REFUSED_STREAM: ErrorCode.H3_REQUEST_REJECTED,
    CANCEL: ErrorCode.H3_REQUEST_CANCELLED,
    CONNECT_ERROR: ErrorCode.H3_CONNECT_ERROR,
    ENHANCE_YOUR_CALM: ErrorCode.H3_EXCESSIVE_LOAD,
}
#: HTTP/3 codes -> neutral
FROM_H3 = {int(v): k for k, v in TO_H3.items()}


def to_h3(code: int) -> int:
    return int(TO_H3.get(code, ErrorCode.H3_INTERNAL_ERROR))


def from_h3(code: int) -> int:
    return FROM_H3.get(code, INTERNAL_ERROR)


def frame(frame_type: int, payload: bytes) -> bytes:
    """An HTTP/3 frame (RFC 9114 §7.1) of a one-byte type (DATA, HEADERS)."""
    n = len(payload)
    if n < 0x40:
        return bytes((frame_type, n)) + payload
    if n < 0x4000:
        return bytes((frame_type, 0x40 | n >> 8, n & 0xFF)) + payload
    return _h3.encode_frame(frame_type, payload)


#: streams remembered as failed (their late data is dropped); oldest forgotten first
_DEAD_MAX = 1024


class GatewayH3(H3Connection):
    def __init__(self, quic: QuicConnection, max_field_section: int) -> None:
        self.max_field_section = max_field_section
        #: (stream id, reason) of streams failed since the codec last looked
        self.broken: list[tuple[int, str]] = []
        self.dead: dict[int, None] = {}
        #: the peer's GOAWAY id (first stream / push it will not process)
        self.goaway_id: int | None = None
        #: scanning state of the peer's control stream (see _scan_control)
        self._ctl_buf = b""
        self._ctl_typed = False
        self._ctl_skip = 0
        super().__init__(quic)
        self._max_table_capacity = 0
        self._blocked_streams = 0
        self._decoder = pylsqpack.Decoder(0, 0)

    def _init_connection(self) -> None:
        # a proxy ignores pushed responses: do not invite any (no MAX_PUSH_ID)
        self._max_push_id = None
        super()._init_connection()

    def _get_local_settings(self) -> dict[int, int]:
        settings = super()._get_local_settings()
        settings[Setting.QPACK_MAX_TABLE_CAPACITY] = 0
        settings[Setting.QPACK_BLOCKED_STREAMS] = 0
        settings[Setting.MAX_FIELD_SECTION_SIZE] = self.max_field_section
        # extended CONNECT (RFC 9220) is not served: do not advertise it
        settings.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        return settings

    def _receive_stream_data_uni(self, stream: Any, data: bytes, stream_ended: bool) -> Any:
        events = super()._receive_stream_data_uni(stream, data, stream_ended)
        if stream.stream_id == self._peer_control_stream_id and data:
            self._scan_control(data)
        return events

    def _scan_control(self, data: bytes) -> None:
        """Find GOAWAY on the peer's control stream (aioquic validates the
        control stream but drops GOAWAY's payload). Only GOAWAY payloads are
        buffered; other frames are skipped as they pass."""
        buf = self._ctl_buf + data
        pos = 0
        if not self._ctl_typed:  # the stream-type varint opens the stream
            b = Buffer(data=buf)
            try:
                b.pull_uint_var()
            except BufferReadError:
                self._ctl_buf = buf
                return
            pos = b.tell()
            self._ctl_typed = True
        while pos < len(buf):
            if self._ctl_skip:
                n = min(self._ctl_skip, len(buf) - pos)
                self._ctl_skip -= n
                pos += n
                continue
            b = Buffer(data=buf[pos:])
            try:
                frame_type = b.pull_uint_var()
                length = b.pull_uint_var()
            except BufferReadError:
                break
            if frame_type != FrameType.GOAWAY:
                pos += b.tell()
                self._ctl_skip = length
                continue
            if len(buf) - pos - b.tell() < length:
                break
            payload = buf[pos + b.tell() : pos + b.tell() + length]
            try:
                self.goaway_id = Buffer(data=payload).pull_uint_var()
            except BufferReadError:
                raise _h3.FrameError("malformed GOAWAY frame") from None
            pos += b.tell() + length
        self._ctl_buf = buf[pos:][:64]

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> list[Any]:
        if frame_data is None:
            return super()._decode_headers(stream_id, frame_data)
        if len(frame_data) > self.max_field_section:
            raise MessageError("header_too_large")
        try:
            decoder, headers = self._decoder.feed_header(stream_id, frame_data)
        except pylsqpack.DecompressionFailed as exc:
            raise QpackDecompressionFailed() from exc
        if decoder:
            self._decoder_bytes_sent += len(decoder)
            self._quic.send_stream_data(self._local_decoder_stream_id, decoder)  # type: ignore[arg-type]
        return headers  # type: ignore[no-any-return]

    def send_headers(self, stream_id: int, headers: Any, end_stream: bool = False) -> None:
        stream = self._stream.get(stream_id)
        if stream is None or self._quic_logger is not None:
            super().send_headers(stream_id, headers, end_stream)
            return
        state = stream.headers_send_state
        if state is HeadersState.AFTER_TRAILERS:
            raise FrameUnexpected("HEADERS frame is not allowed in this state")
        interim = (
            not self._is_client and state is HeadersState.INITIAL and is_interim_response(headers)
        )
        if end_stream:
            if interim:
                raise FrameUnexpected("Interim response cannot end the stream")
            stream.finish_sending()
        encoder, frame_data = self._encoder.encode(stream_id, headers)
        if encoder:
            self._encoder_bytes_sent += len(encoder)
            self._quic.send_stream_data(self._local_encoder_stream_id, encoder)  # type: ignore[arg-type]
        if state is HeadersState.INITIAL:
            if not interim:
                stream.headers_send_state = HeadersState.AFTER_HEADERS
        else:
            stream.headers_send_state = HeadersState.AFTER_TRAILERS
        if stream.is_ended():
            del self._stream[stream_id]
        self._quic.send_stream_data(stream_id, frame(FrameType.HEADERS, frame_data), end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self._stream.get(stream_id)
        if stream is None or self._quic_logger is not None:
            super().send_data(stream_id, data, end_stream)
            return
        if stream.headers_send_state is not HeadersState.AFTER_HEADERS:
            raise FrameUnexpected("DATA frame is not allowed in this state")
        if end_stream:
            stream.finish_sending()
            if stream.is_ended():
                del self._stream[stream_id]
        self._quic.send_stream_data(stream_id, frame(FrameType.DATA, data), end_stream)

    def _receive_stream_data(self, event: StreamDataReceived) -> list[H3Event]:
        sid = event.stream_id
        if sid & 2:  # unidirectional: aioquic's own path
            return super()._receive_stream_data(event)  # type: ignore[no-any-return]
        stream = self._stream.get(sid)
        if stream is None:
            stream = self._stream[sid] = H3Stream(sid)
        try:
            return self._receive_request_or_push_data(stream, event.data, event.end_stream)  # type: ignore[no-any-return]
        finally:
            if stream.is_ended():
                self._stream.pop(sid, None)

    def _receive_request_or_push_data(self, stream: Any, data: bytes, stream_ended: bool) -> Any:
        sid = stream.stream_id
        if sid in self.dead:
            if stream_ended:
                del self.dead[sid]
            stream.receiving_ended = stream_ended or stream.receiving_ended
            return []
        try:
            if (
                len(data) > 2
                and data[0] == FrameType.HEADERS
                and stream.frame_size is None
                and not stream.buffer
                and stream.headers_recv_state is HeadersState.INITIAL
                and not self._is_client
                and self._quic_logger is None
            ):
                events = self._whole_request_head(stream, data, stream_ended)
                if events is not None:
                    return events
            events = super()._receive_request_or_push_data(stream, data, stream_ended)
            if len(stream.buffer) > self.max_field_section + 16:
                # a HEADERS frame still arriving, already over the cap
                raise MessageError("header_too_large")
            return events
        except MessageError as exc:
            reason = str(exc) if str(exc) == "header_too_large" else "h3_message_error"
            self.fail_stream(stream, reason)
            return []

    def _whole_request_head(
        self, stream: Any, data: bytes, stream_ended: bool
    ) -> list[H3Event] | None:
        """A request's first STREAM frame holding exactly one whole HEADERS
        frame (the usual GET), decoded without aioquic's frame loop; None
        for anything else."""
        b = data[1]
        if b < 0x40:
            start = 2
            n = b
        elif b < 0x80:
            start = 3
            n = (b & 0x3F) << 8 | data[2]
        else:
            return None
        if start + n != len(data):
            return None
        if stream_ended:
            stream.receiving_ended = True
        headers = self._decode_headers(stream.stream_id, data[start:])
        stream.headers_recv_state = HeadersState.AFTER_HEADERS
        return [HeadersReceived(headers, stream.stream_id, stream_ended)]

    def fail_stream(self, stream: Any, reason: str) -> None:
        """Reset both halves of ``stream`` with H3_MESSAGE_ERROR."""
        sid = stream.stream_id
        stream.buffer = b""
        stream.blocked = False
        stream.frame_type = None
        stream.frame_size = None
        quic = self._quic
        if not stream.sending_ended:
            quic.reset_stream(sid, ErrorCode.H3_MESSAGE_ERROR)
        if not stream.receiving_ended:
            quic.stop_stream(sid, ErrorCode.H3_MESSAGE_ERROR)
        stream.sending_ended = stream.receiving_ended = True
        self.kill(sid)
        self.broken.append((sid, reason))

    def kill(self, sid: int) -> None:
        """Drop whatever still arrives on ``sid``."""
        self.dead[sid] = None
        if len(self.dead) > _DEAD_MAX:
            del self.dead[next(iter(self.dead))]

    def send_goaway(self, stream_id: int) -> None:
        """GOAWAY: streams from ``stream_id`` on will not be processed."""
        if self._local_control_stream_id is not None:
            self._quic.send_stream_data(
                self._local_control_stream_id,
                _h3.encode_frame(FrameType.GOAWAY, encode_uint_var(stream_id)),
            )

    def abandon(self, sid: int, code: int) -> None:
        """Reset what is still open of ``sid`` with ``code`` (an HTTP/3 code)
        and drop whatever still arrives on it."""
        stream = self._stream.pop(sid, None)
        quic = self._quic
        qs = quic._streams.get(sid)
        if qs is not None:
            if stream is None or not stream.sending_ended:
                quic.reset_stream(sid, code)
            if (stream is None or not stream.receiving_ended) and not qs.receiver.is_finished:
                quic.stop_stream(sid, code)
        self.kill(sid)
