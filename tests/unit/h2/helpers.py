"""Helpers shared by the HTTP/2 codec tests: frame crafting with hyperframe
and hpack (a "raw" peer that can break every rule), parsing of what a codec
sends, and pairs of a codec with a real h2 connection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
from h2.settings import SettingCodes, Settings
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from expressgateway.codec.h2 import H2ClientCodec, H2ServerCodec
from expressgateway.codec.h2.connection import Output
from expressgateway.codec.h2.frames import PREFACE
from expressgateway.core.events import Body, Event, RequestHead

BASIC = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse_frames(data: bytes) -> list[Frame]:
    """Split bytes a codec sent into hyperframe frames (no preface)."""
    frames: list[Frame] = []
    view = memoryview(data)
    while view:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def of_type(frames: Iterable[Frame], cls: type[Frame]) -> list[Any]:
    return [f for f in frames if isinstance(f, cls)]


def goaway_of(data: bytes) -> GoAwayFrame:
    goaways = of_type(parse_frames(data), GoAwayFrame)
    assert goaways, parse_frames(data)
    frame: GoAwayFrame = goaways[-1]
    return frame


def rst_codes(data: bytes) -> dict[int, int]:
    return {f.stream_id: f.error_code for f in of_type(parse_frames(data), RstStreamFrame)}


class RawClient:
    """Builds client frames byte by byte (for rules h2 would not let a
    well-behaved client break)."""

    def __init__(self) -> None:
        self.encoder = Encoder()

    def block(self, headers: Sequence[tuple[bytes, bytes]]) -> bytes:
        return self.encoder.encode(headers)

    def headers(
        self,
        sid: int,
        headers: Sequence[tuple[bytes, bytes]] = BASIC,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
    ) -> bytes:
        f = HeadersFrame(sid, data=self.block(headers))
        if end_stream:
            f.flags.add("END_STREAM")
        if end_headers:
            f.flags.add("END_HEADERS")
        return bytes(f.serialize())

    def raw_headers(self, sid: int, block: bytes, *, end_stream: bool = True) -> bytes:
        f = HeadersFrame(sid, data=block)
        f.flags.add("END_HEADERS")
        if end_stream:
            f.flags.add("END_STREAM")
        return bytes(f.serialize())


def data(sid: int, payload: bytes, *, end_stream: bool = False, pad: int | None = None) -> bytes:
    f = DataFrame(sid, data=payload)
    if end_stream:
        f.flags.add("END_STREAM")
    if pad is not None:
        f.flags.add("PADDED")
        f.pad_length = pad
    return bytes(f.serialize())


def continuation(sid: int, block: bytes, *, end_headers: bool = False) -> bytes:
    f = ContinuationFrame(sid, data=block)
    if end_headers:
        f.flags.add("END_HEADERS")
    return bytes(f.serialize())


def settings(values: dict[int, int] | None = None, *, ack: bool = False) -> bytes:
    f = SettingsFrame(0, settings=values or {})
    if ack:
        f.flags.add("ACK")
    return bytes(f.serialize())


def ping(payload: bytes = b"\0" * 8, *, ack: bool = False) -> bytes:
    f = PingFrame(0, opaque_data=payload)
    if ack:
        f.flags.add("ACK")
    return bytes(f.serialize())


def rst(sid: int, code: int = 8) -> bytes:
    return bytes(RstStreamFrame(sid, error_code=code).serialize())


def window_update(sid: int, increment: int) -> bytes:
    return bytes(WindowUpdateFrame(sid, window_increment=increment).serialize())


def priority(sid: int, depends_on: int = 0) -> bytes:
    return bytes(PriorityFrame(sid, depends_on=depends_on, stream_weight=15).serialize())


def goaway(last: int, code: int = 0, debug: bytes = b"") -> bytes:
    return bytes(
        GoAwayFrame(0, last_stream_id=last, error_code=code, additional_data=debug).serialize()
    )


def raw_frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    """A frame header and body exactly as given (any length, any type)."""
    n = len(payload)
    return (
        bytes([n >> 16, (n >> 8) & 0xFF, n & 0xFF, ftype, flags]) + sid.to_bytes(4, "big") + payload
    )


# -- a server codec after the handshake ---------------------------------------


def server(**kw: Any) -> H2ServerCodec:
    """A server codec that has exchanged prefaces and SETTINGS (ACKed both
    ways) with a raw client; its output so far is drained."""
    codec = H2ServerCodec(**kw)
    codec.initiate()
    codec.feed(PREFACE + settings() + settings(ack=True), 0.0)
    codec.data_to_send()
    return codec


def events_of(out: Output) -> list[Event | Any]:
    return [ev for _, ev in out]


def coalesce(out: Output) -> list[tuple[int, Any]]:
    """Merge consecutive Body events of a stream so chunkings compare equal."""
    merged: list[tuple[int, Any]] = []
    for sid, ev in out:
        if isinstance(ev, Body) and merged:
            prev_sid, prev = merged[-1]
            if prev_sid == sid and isinstance(prev, Body) and not prev.end_stream:
                merged[-1] = (sid, Body(prev.data + ev.data, ev.end_stream))
                continue
        if isinstance(ev, Body) and not ev.data and not ev.end_stream:
            continue
        merged.append((sid, ev))
    return merged


def only_head(out: Output) -> RequestHead:
    assert out and isinstance(out[0][1], RequestHead), out
    return out[0][1]


# -- pairs with real h2 peers ---------------------------------------------------


def h2_client(**settings_values: int) -> h2.connection.H2Connection:
    """A real h2 client (its outbound checks off, so tests can send what a
    sloppy client would; use :class:`RawClient` for framing violations)."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
    )
    if settings_values:
        conn.local_settings = Settings(
            client=True,
            initial_values={SettingCodes[k.upper()]: v for k, v in settings_values.items()},
        )
    conn.initiate_connection()
    return conn


def h2_server(**settings_values: int) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    if settings_values:
        conn.local_settings = Settings(
            client=False,
            initial_values={SettingCodes[k.upper()]: v for k, v in settings_values.items()},
        )
    conn.initiate_connection()
    return conn


class ServerPair:
    """:class:`H2ServerCodec` talking to a real h2 client connection."""

    def __init__(self, codec: H2ServerCodec | None = None, **client_settings: int) -> None:
        self.codec = codec or H2ServerCodec()
        self.client = h2_client(**client_settings)
        self.now = 0.0
        self.client_events: list[h2.events.Event] = []
        self.client.receive_data(self.codec.initiate())
        self.to_server()
        self.to_client()
        self.to_server()
        self.to_client()

    def to_server(self, *, bytewise_feed: bool = False) -> Output:
        wire = self.client.data_to_send()
        if not bytewise_feed:
            return self.codec.feed(wire, self.now) if wire else []
        out: Output = []
        for piece in bytewise(wire):
            out.extend(self.codec.feed(piece, self.now))
        return out

    def to_client(self) -> list[h2.events.Event]:
        wire = self.codec.data_to_send()
        events = self.client.receive_data(wire) if wire else []
        self.client_events.extend(events)
        return events

    def request(
        self,
        headers: Sequence[tuple[bytes, bytes]] = BASIC,
        body: bytes | None = None,
        *,
        end_stream: bool = True,
    ) -> tuple[int, Output]:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, headers, end_stream=body is None and end_stream)
        if body is not None:
            size = self.client.max_outbound_frame_size
            for off in range(0, max(len(body), 1), size):
                last = off + size >= len(body)
                self.client.send_data(sid, body[off : off + size], end_stream=end_stream and last)
        return sid, self.to_server()


class ClientPair:
    """:class:`H2ClientCodec` talking to a real h2 server connection."""

    def __init__(self, codec: H2ClientCodec | None = None, **server_settings: int) -> None:
        self.codec = codec or H2ClientCodec()
        self.server = h2_server(**server_settings)
        self.now = 0.0
        self.server_events: list[h2.events.Event] = []
        self.server.receive_data(self.codec.initiate())
        self.to_client()
        self.to_server()
        self.to_client()

    def to_server(self) -> list[h2.events.Event]:
        wire = self.codec.data_to_send()
        events = self.server.receive_data(wire) if wire else []
        self.server_events.extend(events)
        return events

    def to_client(self, *, bytewise_feed: bool = False) -> Output:
        wire = self.server.data_to_send()
        if not bytewise_feed:
            return self.codec.feed(wire, self.now) if wire else []
        out: Output = []
        for piece in bytewise(wire):
            out.extend(self.codec.feed(piece, self.now))
        return out
