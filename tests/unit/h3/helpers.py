"""Helpers shared by the HTTP/3 codec tests: a codec and a real aioquic
peer joined in memory (datagrams shuttled by hand under a fake clock, no
sockets), a recording aioquic peer that can break every HTTP/3 rule by
writing raw frames on its streams, and a wire-level reader of the peer's
control stream (SETTINGS, GOAWAY as they were sent)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pylsqpack
from aioquic._buffer import Buffer, BufferReadError
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import pull_quic_header

from expressgateway.codec.h3.base import H3Codec
from expressgateway.codec.h3.client import H3ClientCodec
from expressgateway.codec.h3.quic import FlowQuic
from expressgateway.codec.h3.server import H3ServerCodec
from expressgateway.core.events import Body

Fields = list[tuple[bytes, bytes]]
Output = list[tuple[int, Any]]

CLIENT_ADDR = ("192.0.2.1", 50000)
SERVER_ADDR = ("192.0.2.2", 443)
#: the receive window of the codec side (initial MAX_STREAM_DATA and FlowQuic)
WINDOW = 16 * 1024

# RFC 9114 §8.1 / RFC 9204 §6 error codes
H3_NO_ERROR = 0x100
H3_FRAME_UNEXPECTED = 0x105
H3_REQUEST_REJECTED = 0x10B
H3_REQUEST_CANCELLED = 0x10C
H3_MESSAGE_ERROR = 0x10E
QPACK_DECOMPRESSION_FAILED = 0x200
QPACK_ENCODER_STREAM_ERROR = 0x201

# RFC 9114 §7.2.4.1 / RFC 9204 §5 settings
SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0x1
SETTINGS_MAX_FIELD_SECTION_SIZE = 0x6
SETTINGS_QPACK_BLOCKED_STREAMS = 0x7

GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
]
POST = [(b":method", b"POST"), *GET[1:]]


def frame(ftype: int, payload: bytes) -> bytes:
    """One HTTP/3 frame exactly as given (RFC 9114 §7.1)."""
    return encode_frame(ftype, payload)


def qpack_block(headers: Sequence[tuple[bytes, bytes]], stream_id: int = 0) -> bytes:
    """A field section encoded without the dynamic table (static references
    and literals only): what a peer honouring capacity 0 sends."""
    encoder = pylsqpack.Encoder()
    encoder.apply_settings(max_table_capacity=0, blocked_streams=0)
    _, block = encoder.encode(stream_id, list(headers))
    return bytes(block)


def headers_frame(headers: Sequence[tuple[bytes, bytes]], stream_id: int = 0) -> bytes:
    return frame(FrameType.HEADERS, qpack_block(headers, stream_id))


def data_frame(payload: bytes) -> bytes:
    return frame(FrameType.DATA, payload)


def body_of(out: Output, sid: int | None = None) -> bytes:
    return b"".join(ev.data for s, ev in out if isinstance(ev, Body) and sid in (None, s))


def of_type(out: Output, cls: type) -> list[Any]:
    return [ev for _, ev in out if isinstance(ev, cls)]


# -- certificates and configurations --------------------------------------------


@dataclass
class Cert:
    certificate: Any
    private_key: Any


def server_configuration(cert: Cert, **kw: Any) -> QuicConfiguration:
    conf = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, **kw)
    conf.certificate = cert.certificate
    conf.private_key = cert.private_key
    return conf


def client_configuration(**kw: Any) -> QuicConfiguration:
    conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost", **kw)
    conf.verify_mode = ssl.CERT_NONE
    return conf


# -- a recording aioquic peer ------------------------------------------------------


class RecordingQuic(QuicConnection):
    """aioquic's QuicConnection, noting every MAX_STREAM_DATA it receives."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        #: (stream id, maximum) in arrival order
        self.max_stream_data: list[tuple[int, int]] = []

    def _handle_max_stream_data_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        start = buf.tell()
        sid = buf.pull_uint_var()
        value = buf.pull_uint_var()
        self.max_stream_data.append((sid, value))
        buf.seek(start)
        super()._handle_max_stream_data_frame(context, frame_type, buf)


class StingyQuic(RecordingQuic):
    """A peer that stopped reading: it never raises a stream's receive limit."""

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        return None


@dataclass
class StreamLog:
    """What one request stream carried toward the aioquic peer."""

    #: every HEADERS block, in order (1xx, final head, trailers)
    headers: list[Fields] = field(default_factory=list)
    data: bytes = b""
    #: FIN received
    ended: bool = False
    #: RESET_STREAM error code received
    reset: int | None = None
    #: STOP_SENDING error code received
    stop: int | None = None


class ControlReader:
    """Parses the frames of the peer's unidirectional control stream from
    the raw stream bytes (independently of aioquic's H3Connection, which
    discards GOAWAY)."""

    def __init__(self) -> None:
        self.buffers: dict[int, bytes] = {}
        self.kinds: dict[int, int] = {}
        #: (frame type, payload) of every complete control frame
        self.frames: list[tuple[int, bytes]] = []

    def feed(self, sid: int, data: bytes) -> None:
        buf = self.buffers.get(sid, b"") + data
        if sid not in self.kinds:
            b = Buffer(data=buf)
            try:
                self.kinds[sid] = b.pull_uint_var()
            except BufferReadError:
                self.buffers[sid] = buf
                return
            buf = buf[b.tell() :]
        if self.kinds[sid] != 0:  # not the control stream
            self.buffers[sid] = b""
            return
        while True:
            b = Buffer(data=buf)
            try:
                ftype = b.pull_uint_var()
                size = b.pull_uint_var()
                payload = b.pull_bytes(size)
            except BufferReadError:
                break
            self.frames.append((ftype, payload))
            buf = buf[b.tell() :]
        self.buffers[sid] = buf

    def settings(self) -> dict[int, int]:
        for ftype, payload in self.frames:
            if ftype == FrameType.SETTINGS:
                b = Buffer(data=payload)
                out = {}
                while not b.eof():
                    key = b.pull_uint_var()
                    out[key] = b.pull_uint_var()
                return out
        raise AssertionError("no SETTINGS on the control stream")

    def goaways(self) -> list[int]:
        return [
            Buffer(data=payload).pull_uint_var()
            for ftype, payload in self.frames
            if ftype == FrameType.GOAWAY
        ]


class AioPeer:
    """A real aioquic HTTP/3 endpoint (QuicConnection + H3Connection) that
    records what it receives per stream; :meth:`raw` writes bytes on a
    stream that no well-behaved H3Connection would write."""

    def __init__(self, quic: RecordingQuic) -> None:
        self.quic = quic
        self.h3 = H3Connection(quic)
        self.streams: dict[int, StreamLog] = {}
        self.control = ControlReader()
        self.terminated: ConnectionTerminated | None = None
        self.quic_events: list[QuicEvent] = []

    def log(self, sid: int) -> StreamLog:
        return self.streams.setdefault(sid, StreamLog())

    def drain(self) -> None:
        while (qe := self.quic.next_event()) is not None:
            self.quic_events.append(qe)
            if isinstance(qe, StreamDataReceived) and qe.stream_id % 4 in (2, 3):
                self.control.feed(qe.stream_id, qe.data)
            elif isinstance(qe, StreamReset):
                self.log(qe.stream_id).reset = qe.error_code
            elif isinstance(qe, StopSendingReceived):
                self.log(qe.stream_id).stop = qe.error_code
            elif isinstance(qe, ConnectionTerminated):
                self.terminated = qe
            for he in self.h3.handle_event(qe):
                if isinstance(he, HeadersReceived):
                    log = self.log(he.stream_id)
                    log.headers.append(list(he.headers))
                    log.ended = log.ended or he.stream_ended
                elif isinstance(he, DataReceived):
                    log = self.log(he.stream_id)
                    log.data += he.data
                    log.ended = log.ended or he.stream_ended

    def raw(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        self.quic.send_stream_data(sid, data, end_stream)

    def new_stream(self) -> int:
        return self.quic.get_next_available_stream_id()


# -- a codec and a peer joined in memory ------------------------------------------------


class Link:
    """Two QUIC connections exchanging datagrams in memory under a fake clock.
    ``pump`` moves datagrams (and fires due timers) until both sides are
    quiet; what the codec reports on the way is returned and kept in
    ``out``."""

    def __init__(
        self,
        client_quic: QuicConnection,
        make_server: Callable[[bytes], QuicConnection],
        before_flight: Callable[[], None] | None = None,
    ) -> None:
        self.now = 1.0
        self.client_quic = client_quic
        client_quic.connect(SERVER_ADDR, now=self.now)
        if before_flight is not None:
            before_flight()  # e.g. a request sent as 0-RTT
        first = client_quic.datagrams_to_send(self.now)
        header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
        self.server_quic = make_server(header.destination_cid)
        self._pending = [data for data, _ in first]
        self.codec: H3Codec
        self.peer: AioPeer
        self.out: Output = []

    def _drain(self, out: Output) -> None:
        out.extend(self.codec.events())
        self.peer.drain()

    def to_server(self) -> Output:
        """Deliver only what the client has queued (the server's answer stays
        in its send buffer: the next flights cross)."""
        out: Output = []
        self.now += 0.001
        for data, _ in self.client_quic.datagrams_to_send(self.now):
            self.server_quic.receive_datagram(data, CLIENT_ADDR, self.now)
        self._drain(out)
        self.out.extend(out)
        return out

    def pump(self, *, max_rounds: int = 2000) -> Output:
        out: Output = []
        for data in self._pending:
            self.server_quic.receive_datagram(data, CLIENT_ADDR, self.now)
        self._pending = []
        self._drain(out)
        for _ in range(max_rounds):
            self.now += 0.001
            for q in (self.client_quic, self.server_quic):
                t = q.get_timer()
                if t is not None and t <= self.now:
                    q.handle_timer(self.now)
            moved = False
            for data, _ in self.client_quic.datagrams_to_send(self.now):
                self.server_quic.receive_datagram(data, CLIENT_ADDR, self.now)
                moved = True
            self._drain(out)
            for data, _ in self.server_quic.datagrams_to_send(self.now):
                self.client_quic.receive_datagram(data, SERVER_ADDR, self.now)
                moved = True
            self._drain(out)
            if not moved:
                timers = [
                    t for t in (self.client_quic.get_timer(), self.server_quic.get_timer()) if t
                ]
                if not timers or min(timers) > self.now + 1.0:
                    self.out.extend(out)
                    return out
                self.now = max(self.now, min(timers))
        raise AssertionError("the link never went quiet")


class ServerPair(Link):
    """:class:`H3ServerCodec` (on :class:`FlowQuic`) serving a real aioquic
    client (:attr:`client`)."""

    codec: H3ServerCodec

    def __init__(
        self,
        cert: Cert,
        *,
        window: int = WINDOW,
        server_conf: dict[str, Any] | None = None,
        client_conf: dict[str, Any] | None = None,
        client_h3: Callable[[RecordingQuic], AioPeer] = AioPeer,
        client_quic: type[RecordingQuic] = RecordingQuic,
        server_kw: dict[str, Any] | None = None,
        client_kw: dict[str, Any] | None = None,
        before_flight: Callable[[ServerPair], None] | None = None,
        handshake: bool = True,
        **codec_kw: Any,
    ) -> None:
        conf = {"max_stream_data": window, **(server_conf or {})}
        cquic = client_quic(
            configuration=client_configuration(**(client_conf or {})), **(client_kw or {})
        )
        self.peer = self.client = client_h3(cquic)

        def make_server(odcid: bytes) -> FlowQuic:
            return FlowQuic(
                window=window,
                configuration=server_configuration(cert, **conf),
                original_destination_connection_id=odcid,
                **(server_kw or {}),
            )

        super().__init__(
            cquic, make_server, None if before_flight is None else lambda: before_flight(self)
        )
        self.quic: FlowQuic = self.server_quic  # type: ignore[assignment]
        self.codec = H3ServerCodec(self.quic, **codec_kw)
        if handshake:
            self.pump()
            assert self.codec.handshake_done

    def request(
        self,
        headers: Sequence[tuple[bytes, bytes]] = GET,
        body: bytes | None = None,
        *,
        trailers: Sequence[tuple[bytes, bytes]] | None = None,
        end: bool = True,
    ) -> tuple[int, Output]:
        """Send a request from the aioquic client; what the codec made of it."""
        h3 = self.client.h3
        sid = self.client.new_stream()
        h3.send_headers(sid, list(headers), end_stream=end and body is None and trailers is None)
        if body is not None:
            h3.send_data(sid, body, end_stream=end and trailers is None)
        if trailers is not None:
            h3.send_headers(sid, list(trailers), end_stream=end)
        return sid, self.pump()

    def raw_request(self, wire: bytes, *, end: bool = True) -> tuple[int, Output]:
        """Frames written as they are on a new request stream."""
        sid = self.client.new_stream()
        self.client.raw(sid, wire, end)
        return sid, self.pump()


class ClientPair(Link):
    """:class:`H3ClientCodec` (on :class:`FlowQuic`) talking to a real aioquic
    server (:attr:`server`)."""

    codec: H3ClientCodec

    def __init__(
        self,
        cert: Cert,
        *,
        window: int = WINDOW,
        server_conf: dict[str, Any] | None = None,
        **codec_kw: Any,
    ) -> None:
        conf = server_configuration(cert, **(server_conf or {}))
        cquic = FlowQuic(window=window, configuration=client_configuration(max_stream_data=window))
        self.quic = cquic
        self.codec = H3ClientCodec(cquic, **codec_kw)

        def make_server(odcid: bytes) -> RecordingQuic:
            squic = RecordingQuic(configuration=conf, original_destination_connection_id=odcid)
            self.peer = self.server = AioPeer(squic)
            return squic

        super().__init__(cquic, make_server)
        self.pump()
        assert self.codec.handshake_done

    def respond(
        self,
        sid: int,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        trailers: Sequence[tuple[bytes, bytes]] | None = None,
        end: bool = True,
    ) -> Output:
        h3 = self.server.h3
        h3.send_headers(sid, list(headers), end_stream=end and body is None and trailers is None)
        if body is not None:
            h3.send_data(sid, body, end_stream=end and trailers is None)
        if trailers is not None:
            h3.send_headers(sid, list(trailers), end_stream=end)
        return self.pump()


def goaway_frame(stream_id: int) -> bytes:
    return frame(FrameType.GOAWAY, encode_uint_var(stream_id))


class CodecPair(Link):
    """:class:`H3ClientCodec` talking to :class:`H3ServerCodec`: the gateway on
    both ends. ``client_out`` / ``server_out`` keep what each reported."""

    def __init__(
        self,
        cert: Cert,
        *,
        window: int = WINDOW,
        client_kw: dict[str, Any] | None = None,
        **server_kw: Any,
    ) -> None:
        cquic = FlowQuic(window=window, configuration=client_configuration(max_stream_data=window))
        self.client = H3ClientCodec(cquic, **(client_kw or {}))
        self.client_out: Output = []
        self.server_out: Output = []

        def make_server(odcid: bytes) -> FlowQuic:
            return FlowQuic(
                window=window,
                configuration=server_configuration(cert, max_stream_data=window),
                original_destination_connection_id=odcid,
            )

        super().__init__(cquic, make_server)
        self.server = H3ServerCodec(self.server_quic, **server_kw)  # type: ignore[arg-type]
        self.pump()
        assert self.client.handshake_done and self.server.handshake_done

    def _drain(self, out: Output) -> None:
        server = self.server.events()
        client = self.client.events()
        self.server_out.extend(server)
        self.client_out.extend(client)
        out.extend(client)
