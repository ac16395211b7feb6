"""RFC 9204 (QPACK) and RFC 9114 §4.2.2 / §7.2.4 on the server side: the
codec offers no dynamic table (capacity 0, no blocked streams), so a field
section can only grow by static references and Huffman; a peer that uses
the dynamic table anyway is a connection error; a field section over the
advertised MAX_FIELD_SECTION_SIZE is refused (a stream error, the
connection goes on). SETTINGS are read from the wire of the control
stream, as the client received them."""

from __future__ import annotations

import os
from collections.abc import Callable

import pylsqpack

from expressgateway.core.events import PROTOCOL_ERROR, RequestHead, Reset, Source
from tests.unit.h3.helpers import (
    GET,
    H3_MESSAGE_ERROR,
    POST,
    QPACK_DECOMPRESSION_FAILED,
    QPACK_ENCODER_STREAM_ERROR,
    SETTINGS_MAX_FIELD_SECTION_SIZE,
    SETTINGS_QPACK_BLOCKED_STREAMS,
    SETTINGS_QPACK_MAX_TABLE_CAPACITY,
    AioPeer,
    RecordingQuic,
    ServerPair,
    frame,
)

SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8


def noise(n: int) -> bytes:
    """``n`` printable octets spread over the whole range: Huffman barely
    shrinks them, so the encoded size stays close to ``n``."""
    alphabet = bytes(range(0x21, 0x7F))
    return bytes(alphabet[b % len(alphabet)] for b in os.urandom(n))


def assert_serves(pair: ServerPair) -> None:
    sid, out = pair.request(GET)
    assert [(s, type(ev)) for s, ev in out] == [(sid, RequestHead)]


# -- §7.2.4.1 / RFC 9204 §5: what the server advertises ----------------------------------


def test_settings_offer_no_dynamic_table_and_cap_the_field_section(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(max_field_section=12345)
    settings = pair.client.control.settings()
    assert settings[SETTINGS_QPACK_MAX_TABLE_CAPACITY] == 0
    assert settings[SETTINGS_QPACK_BLOCKED_STREAMS] == 0
    assert settings[SETTINGS_MAX_FIELD_SECTION_SIZE] == 12345
    assert pair.client.h3.received_settings == settings


def test_extended_connect_is_not_offered_since_it_is_refused(pair: ServerPair) -> None:
    """RFC 9220 §3 (RFC 8441 §3): after SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 a
    client may send extended CONNECT (``:protocol``). The server codec's
    validator has extended CONNECT disabled and resets such a request as
    malformed (H3_MESSAGE_ERROR), so it must not advertise the setting
    (aioquic's H3Connection puts it in by default)."""
    settings = pair.client.control.settings()
    offered = settings.get(SETTINGS_ENABLE_CONNECT_PROTOCOL, 0)
    sid, out = pair.request(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"https"),
            (b":authority", b"example.com"),
            (b":path", b"/chat"),
        ],
        end=False,
    )
    refused_as_malformed = pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert not (offered and refused_as_malformed), (settings, out)


# -- RFC 9204 §2.2.3 / §4.3.1: a peer using the dynamic table anyway ----------------------


def test_field_section_referencing_the_dynamic_table_is_a_connection_error(
    pair: ServerPair,
) -> None:
    """Required Insert Count > 0 where the table capacity is 0 (§4.5.1.1)."""
    block = b"\x02\x00" + b"\x80"  # RIC 1, base 0, indexed field line (dynamic, index 0)
    _, out = pair.raw_request(frame(0x1, block))
    assert out == []
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == QPACK_DECOMPRESSION_FAILED
    assert pair.codec.terminated is not None


def test_setting_a_table_capacity_over_zero_is_a_connection_error(pair: ServerPair) -> None:
    """§4.3.1: Set Dynamic Table Capacity above the decoder's maximum."""
    instruction = pylsqpack.Encoder().apply_settings(max_table_capacity=4096, blocked_streams=16)
    pair.client.raw(pair.client.h3._local_encoder_stream_id, instruction)  # type: ignore[arg-type]
    pair.pump()
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == QPACK_ENCODER_STREAM_ERROR


def test_an_insert_into_a_zero_capacity_table_is_a_connection_error(pair: ServerPair) -> None:
    """§3.2.2 / §4.3.2: Insert With Literal Name into a table of capacity 0."""
    insert = b"\x43x-a\x01b"  # insert "x-a: b" (entry size 36 > capacity 0)
    pair.client.raw(pair.client.h3._local_encoder_stream_id, insert)  # type: ignore[arg-type]
    pair.pump()
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == QPACK_ENCODER_STREAM_ERROR


class GreedyEncoder:
    """An encoder that ignores the server's capacity 0 and uses a 4 KiB table."""

    def __init__(self) -> None:
        self.encoder = pylsqpack.Encoder()

    def apply_settings(self, max_table_capacity: int, blocked_streams: int) -> bytes:
        return bytes(self.encoder.apply_settings(max_table_capacity=4096, blocked_streams=16))

    def encode(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
        return self.encoder.encode(stream_id, headers)  # type: ignore[no-any-return]

    def feed_decoder(self, data: bytes) -> None:
        self.encoder.feed_decoder(data)


def test_a_client_encoder_ignoring_capacity_zero_is_cut_off(
    make_pair: Callable[..., ServerPair],
) -> None:
    def greedy_client(quic: RecordingQuic) -> AioPeer:
        peer = AioPeer(quic)
        peer.h3._encoder = GreedyEncoder()  # type: ignore[assignment]
        return peer

    pair = make_pair(client_h3=greedy_client)
    # its first encoder-stream instruction (capacity 4096) already ends the connection
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == QPACK_ENCODER_STREAM_ERROR
    assert pair.codec.terminated is not None


def test_static_table_and_huffman_only_blocks_decode(pair: ServerPair) -> None:
    fields = [(b"accept-encoding", b"gzip, deflate, br"), (b"user-agent", b"t" * 200)]
    _, out = pair.request([*GET, *fields] * 1)
    assert out[0][1].headers == fields


# -- RFC 9114 §4.2.2: field section size ------------------------------------------------


def test_encoded_field_section_over_the_cap_resets_the_stream(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(max_field_section=1000)
    sid, out = pair.request([*GET, (b"x-big", noise(2000))])
    assert out == []  # never delivered: nothing for the shell
    assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert pair.client.terminated is None
    assert_serves(pair)


def test_field_section_just_under_the_cap_is_fine(make_pair: Callable[..., ServerPair]) -> None:
    pair = make_pair(max_field_section=1000)
    value = noise(700)  # decoded: 177 for the pseudo-headers + 737
    _, out = pair.request([*GET, (b"x-big", value)])
    assert out[0][1].headers == [(b"x-big", value)]


def test_a_headers_frame_still_arriving_is_refused_once_over_the_cap(
    make_pair: Callable[..., ServerPair],
) -> None:
    """A HEADERS frame announcing 1 MB is not buffered up to its length: the
    stream fails as soon as more than the cap has arrived."""
    pair = make_pair(max_field_section=1000)
    head = b"\x01" + b"\x80\x10\x00\x00"  # HEADERS, length 1 MiB (4-byte varint)
    sid = pair.client.new_stream()
    pair.client.raw(sid, head + b"\x00\x00" + b"a" * 3000)
    assert pair.pump() == []
    log = pair.client.streams[sid]
    assert (log.reset, log.stop) == (H3_MESSAGE_ERROR, H3_MESSAGE_ERROR)
    stream = pair.codec.h3._stream.get(sid)
    assert stream is None or not stream.buffer
    assert pair.client.terminated is None
    assert_serves(pair)


def test_oversize_trailers_reset_a_delivered_request(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(max_field_section=1000)
    sid, out = pair.request(POST, b"abc", end=False)
    assert isinstance(out[0][1], RequestHead)
    pair.client.h3.send_headers(sid, [(b"x-trailer", noise(2000))], end_stream=True)
    assert pair.pump() == [(sid, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "header_too_large"))]
    assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert pair.codec.open_streams() == 0
    assert_serves(pair)
