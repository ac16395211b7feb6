"""RFC 9113 §3-§7 on the server codec, section by section (the cases an
h2spec run checks): connection preface, frame format and size, header
blocks, stream states and identifiers, concurrency, error handling, each
frame type, flow control and error codes. Frames are crafted with
hyperframe/hpack or byte by byte; the expected outcome is the GOAWAY or
RST_STREAM code the RFC names."""

from __future__ import annotations

import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame

from expressgateway.codec.h2 import GoAwayReceived, H2ConnectionError, H2ServerCodec
from expressgateway.codec.h2.frames import PREFACE
from expressgateway.core.events import (
    COMPRESSION_ERROR,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
    Body,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
)
from tests.unit.h2.helpers import (
    BASIC,
    RawClient,
    bytewise,
    continuation,
    data,
    goaway,
    goaway_of,
    of_type,
    parse_frames,
    ping,
    priority,
    raw_frame,
    rst,
    rst_codes,
    server,
    settings,
    window_update,
)


def connection_error(codec: H2ServerCodec, wire: bytes, code: int) -> H2ConnectionError:
    with pytest.raises(H2ConnectionError) as info:
        codec.feed(wire, 1.0)
    assert info.value.code == code, info.value
    assert goaway_of(codec.data_to_send()).error_code == code
    return info.value


def open_stream(codec: H2ServerCodec, raw: RawClient, sid: int = 1, end: bool = False) -> None:
    [(got, head)] = codec.feed(raw.headers(sid, BASIC, end_stream=end), 1.0)
    assert got == sid and isinstance(head, RequestHead)


# -- §3.4 connection preface ---------------------------------------------------------


class TestPreface:
    def test_server_preface_is_settings_then_window_update(self) -> None:
        codec = H2ServerCodec(max_concurrent_streams=7, enable_connect_protocol=True)
        frames = parse_frames(codec.initiate())
        assert isinstance(frames[0], SettingsFrame)
        values = frames[0].settings
        assert values[SettingsFrame.MAX_CONCURRENT_STREAMS] == 7
        assert values[SettingsFrame.INITIAL_WINDOW_SIZE] == 65535
        assert values[SettingsFrame.MAX_HEADER_LIST_SIZE] == 65536
        assert values[SettingsFrame.MAX_FRAME_SIZE] == 16384
        assert values[SettingsFrame.ENABLE_PUSH] == 0
        assert values[SettingsFrame.ENABLE_CONNECT_PROTOCOL] == 1
        assert frames[1].stream_id == 0 and frames[1].window_increment == 1048576 - 65535

    def test_invalid_preface_is_a_protocol_error(self) -> None:
        codec = H2ServerCodec()
        codec.initiate()
        err = connection_error(codec, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", PROTOCOL_ERROR)
        assert err.reason == "bad_preface"

    def test_first_frame_must_be_settings(self) -> None:
        codec = H2ServerCodec()
        codec.initiate()
        err = connection_error(codec, PREFACE + ping(), PROTOCOL_ERROR)
        assert err.reason == "bad_preface"

    def test_first_settings_must_not_be_an_ack(self) -> None:
        codec = H2ServerCodec()
        codec.initiate()
        connection_error(codec, PREFACE + settings(ack=True), PROTOCOL_ERROR)

    def test_preface_and_settings_byte_by_byte(self) -> None:
        codec = H2ServerCodec()
        codec.initiate()
        wire = PREFACE + settings({3: 100}) + RawClient().headers(1, BASIC)
        out = []
        for piece in bytewise(wire):
            out.extend(codec.feed(piece, 1.0))
        assert [type(ev) for _, ev in out] == [RequestHead]
        assert of_type(parse_frames(codec.data_to_send()), SettingsFrame)[-1].flags == {"ACK"}


# -- §4 frames --------------------------------------------------------------------------


class TestFrameFormat:
    def test_unknown_frame_types_are_ignored(self) -> None:
        """§4.1, §5.5."""
        codec = server()
        raw = RawClient()
        out = codec.feed(raw_frame(0xEE, 0xFF, 0, b"abc") + raw.headers(1, BASIC), 1.0)
        assert [type(ev) for _, ev in out] == [RequestHead]

    def test_unknown_flags_are_ignored(self) -> None:
        codec = server()
        codec.feed(raw_frame(0x6, 0xF0, 0, b"\0" * 8), 1.0)  # PING, odd flags
        pings = of_type(parse_frames(codec.data_to_send()), PingFrame)
        assert pings and "ACK" in pings[0].flags

    def test_reserved_bit_of_the_stream_id_is_ignored(self) -> None:
        codec = server()
        block = RawClient().block(BASIC)
        wire = raw_frame(0x1, 0x5, 1 | 0x80000000, block)
        [(sid, _)] = codec.feed(wire, 1.0)
        assert sid == 1

    def test_frame_over_max_frame_size_is_refused_from_its_header(self) -> None:
        """§4.2: FRAME_SIZE_ERROR as soon as the 9-octet header arrives,
        before any of the (16 MiB) body is buffered."""
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        header = raw_frame(0x0, 0, 1, b"")[:9]
        big = bytes([0xFF, 0xFF, 0xFF]) + header[3:]
        err = connection_error(codec, big, FRAME_SIZE_ERROR)
        assert err.reason == "frame_too_large"

    def test_headers_frame_over_max_frame_size(self) -> None:
        codec = server()
        wire = bytes(HeadersFrame(1, data=b"\x82" * 16385, flags=["END_HEADERS"]).serialize())
        connection_error(codec, wire, FRAME_SIZE_ERROR)

    def test_data_frame_of_exactly_max_frame_size_is_fine(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        out = codec.feed(data(1, b"x" * 16384), 1.0)
        assert out == [(1, Body(b"x" * 16384, False))]


class TestHeaderBlocks:
    """§4.3, §6.10."""

    def test_header_block_split_over_continuation_frames(self) -> None:
        codec = server()
        block = RawClient().block(BASIC)
        wire = bytes(HeadersFrame(1, data=block[:3], flags=["END_STREAM"]).serialize())
        wire += continuation(1, block[3:6]) + continuation(1, block[6:], end_headers=True)
        [(_, head)] = codec.feed(wire, 1.0)
        assert isinstance(head, RequestHead) and head.path == b"/"

    def test_undecodable_header_block_is_a_compression_error(self) -> None:
        codec = server()
        err = connection_error(
            codec, RawClient().raw_headers(1, b"\xff\xff\xff\xff"), COMPRESSION_ERROR
        )
        assert err.reason == "hpack_error"

    def test_frame_of_another_type_inside_a_header_block(self) -> None:
        codec = server()
        raw = RawClient()
        wire = raw.headers(1, BASIC, end_headers=False) + data(1, b"x")
        connection_error(codec, wire, PROTOCOL_ERROR)

    def test_priority_inside_a_header_block(self) -> None:
        codec = server()
        wire = RawClient().headers(1, BASIC, end_headers=False) + priority(1)
        connection_error(codec, wire, PROTOCOL_ERROR)

    def test_headers_of_another_stream_inside_a_header_block(self) -> None:
        codec = server()
        raw = RawClient()
        wire = raw.headers(1, BASIC, end_headers=False) + raw.headers(3, BASIC)
        connection_error(codec, wire, PROTOCOL_ERROR)

    def test_continuation_of_another_stream(self) -> None:
        codec = server()
        wire = RawClient().headers(1, BASIC, end_headers=False) + continuation(
            3, b"", end_headers=True
        )
        connection_error(codec, wire, PROTOCOL_ERROR)

    def test_continuation_on_stream_zero_inside_a_block(self) -> None:
        codec = server()
        wire = RawClient().headers(1, BASIC, end_headers=False) + raw_frame(0x9, 0x4, 0, b"")
        connection_error(codec, wire, PROTOCOL_ERROR)

    def test_continuation_after_end_headers(self) -> None:
        codec = server()
        wire = RawClient().headers(1, BASIC) + continuation(1, b"", end_headers=True)
        connection_error(codec, wire, PROTOCOL_ERROR)

    def test_continuation_after_data(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        connection_error(codec, data(1, b"x") + continuation(1, b""), PROTOCOL_ERROR)

    def test_unknown_extension_frame_inside_a_header_block(self) -> None:
        """§5.5."""
        codec = server()
        wire = RawClient().headers(1, BASIC, end_headers=False) + raw_frame(0xEE, 0, 1, b"")
        connection_error(codec, wire, PROTOCOL_ERROR)


# -- §5.1 stream states -----------------------------------------------------------------


class TestStreamStates:
    def test_idle_data(self) -> None:
        connection_error(server(), data(1, b"x", end_stream=True), PROTOCOL_ERROR)

    def test_idle_rst_stream(self) -> None:
        connection_error(server(), rst(1), PROTOCOL_ERROR)

    def test_idle_window_update(self) -> None:
        connection_error(server(), window_update(1, 100), PROTOCOL_ERROR)

    def test_idle_continuation(self) -> None:
        connection_error(server(), continuation(1, b"", end_headers=True), PROTOCOL_ERROR)

    def test_priority_on_an_idle_stream_is_allowed(self) -> None:
        codec = server()
        assert codec.feed(priority(9), 1.0) == []
        assert not codec.closed

    def test_half_closed_remote_data(self) -> None:
        """A stream error STREAM_CLOSED; the stream is lost for the shell."""
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, end=True)
        out = codec.feed(data(1, b"x"), 1.0)
        assert out == [(1, Reset(STREAM_CLOSED, Source.DOWNSTREAM, "stream_closed"))]
        assert rst_codes(codec.data_to_send()) == {1: STREAM_CLOSED}
        assert codec.open_streams == 0

    def test_half_closed_remote_headers(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, end=True)
        out = codec.feed(raw.headers(1, [(b"x-a", b"1")]), 1.0)
        assert out == [(1, Reset(STREAM_CLOSED, Source.DOWNSTREAM, "stream_closed"))]

    def test_closed_after_end_stream_both_ways_data_is_a_stream_error(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, end=True)
        codec.send_response_head(1, ResponseHead(200, [], True))
        codec.data_to_send()
        assert codec.feed(data(1, b"x"), 1.0) == []
        assert rst_codes(codec.data_to_send()) == {1: STREAM_CLOSED}

    def test_frames_after_our_reset_get_rst_stream_closed(self) -> None:
        """§5.1 closed: frames in flight after RST_STREAM are answered with a
        stream error, not a connection error."""
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        codec.reset_stream(1, 8)
        codec.data_to_send()
        assert codec.feed(data(1, b"late"), 1.0) == []
        assert rst_codes(codec.data_to_send()) == {1: STREAM_CLOSED}
        assert not codec.closed

    def test_rst_stream_on_a_closed_stream_is_ignored(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, end=True)
        codec.send_response_head(1, ResponseHead(200, [], True))
        assert codec.feed(rst(1), 1.0) == []
        assert not codec.closed


class TestStreamIdentifiers:
    """§5.1.1."""

    def test_even_stream_id_from_a_client(self) -> None:
        connection_error(server(), RawClient().headers(2, BASIC), PROTOCOL_ERROR)

    def test_stream_id_lower_than_a_previous_one(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, sid=5)
        connection_error(codec, raw.headers(3, BASIC), PROTOCOL_ERROR)

    def test_skipped_ids_are_implicitly_closed(self) -> None:
        """DATA on a stream closed implicitly by a higher id: §6.1 stream
        error STREAM_CLOSED."""
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, sid=7)
        assert codec.feed(data(3, b"x"), 1.0) == []
        assert rst_codes(codec.data_to_send()) == {3: STREAM_CLOSED}

    def test_headers_on_an_implicitly_closed_stream(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, sid=7)
        connection_error(codec, raw.headers(3, BASIC), PROTOCOL_ERROR)


class TestConcurrency:
    """§5.1.2: over SETTINGS_MAX_CONCURRENT_STREAMS -> REFUSED_STREAM."""

    def test_refused_stream_beyond_the_limit(self) -> None:
        codec = server(max_concurrent_streams=1)
        raw = RawClient()
        open_stream(codec, raw)
        assert codec.feed(raw.headers(3, BASIC, end_stream=False), 1.0) == []
        assert rst_codes(codec.data_to_send()) == {3: REFUSED_STREAM}
        # the refused stream's DATA in flight is harmless
        assert codec.feed(data(3, b"x", end_stream=True), 1.0) == []
        assert not codec.closed


class TestPriority:
    """§5.3, §6.3 (deprecated scheme: accepted and ignored)."""

    def test_stream_depending_on_itself(self) -> None:
        connection_error(server(), priority(1, depends_on=1), PROTOCOL_ERROR)

    def test_priority_on_stream_zero(self) -> None:
        connection_error(server(), raw_frame(0x2, 0, 0, b"\0\0\0\x01\x0f"), PROTOCOL_ERROR)

    def test_priority_with_a_bad_length(self) -> None:
        connection_error(server(), raw_frame(0x2, 0, 1, b"\0\0\0\x01"), FRAME_SIZE_ERROR)

    def test_headers_with_priority_information(self) -> None:
        codec = server()
        f = HeadersFrame(
            1, data=RawClient().block(BASIC), flags=["END_HEADERS", "END_STREAM", "PRIORITY"]
        )
        f.depends_on, f.stream_weight = 0, 200
        [(_, head)] = codec.feed(bytes(f.serialize()), 1.0)
        assert isinstance(head, RequestHead)


class TestErrorHandling:
    """§5.4: a connection error is final; GOAWAY names the last stream."""

    def test_goaway_carries_the_last_processed_stream(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, sid=5)
        codec.data_to_send()
        with pytest.raises(H2ConnectionError):
            codec.feed(ping()[:-1] + raw_frame(0x6, 0, 0, b"\0" * 7), 1.0)
        frame = goaway_of(codec.data_to_send())
        assert frame.last_stream_id == 5

    def test_connection_error_is_raised_again_on_later_input(self) -> None:
        codec = server()
        with pytest.raises(H2ConnectionError) as first:
            codec.feed(data(1, b"x"), 1.0)
        with pytest.raises(H2ConnectionError) as again:
            codec.feed(ping(), 1.0)
        assert again.value is first.value
        assert codec.check_timeouts(100.0) == []


# -- §6 frame definitions ----------------------------------------------------------------


class TestData:
    """§6.1."""

    def test_data_on_stream_zero(self) -> None:
        connection_error(server(), raw_frame(0x0, 0, 0, b"x"), PROTOCOL_ERROR)

    def test_padding_longer_than_the_payload(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        connection_error(codec, raw_frame(0x0, 0x8, 1, b"\x05abc"), PROTOCOL_ERROR)

    def test_padded_data_delivers_only_the_payload(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        assert codec.feed(data(1, b"abc", pad=10, end_stream=True), 1.0) == [
            (1, Body(b"abc", True))
        ]


class TestHeaders:
    """§6.2."""

    def test_headers_on_stream_zero(self) -> None:
        block = RawClient().block(BASIC)
        connection_error(server(), raw_frame(0x1, 0x5, 0, block), PROTOCOL_ERROR)

    def test_padding_longer_than_the_block(self) -> None:
        block = RawClient().block(BASIC)
        wire = raw_frame(0x1, 0x4 | 0x8, 1, bytes([len(block) + 5]) + block)
        connection_error(server(), wire, PROTOCOL_ERROR)

    def test_padded_headers(self) -> None:
        f = HeadersFrame(
            1, data=RawClient().block(BASIC), flags=["END_HEADERS", "END_STREAM", "PADDED"]
        )
        f.pad_length = 20
        [(_, head)] = server().feed(bytes(f.serialize()), 1.0)
        assert isinstance(head, RequestHead)


class TestRstStream:
    """§6.4."""

    def test_rst_stream_on_stream_zero(self) -> None:
        connection_error(server(), raw_frame(0x3, 0, 0, b"\0\0\0\x08"), PROTOCOL_ERROR)

    def test_rst_stream_with_a_bad_length(self) -> None:
        codec = server()
        open_stream(codec, RawClient())
        connection_error(codec, raw_frame(0x3, 0, 1, b"\0\0\0\x08\0"), FRAME_SIZE_ERROR)

    def test_unknown_error_code_is_passed_on(self) -> None:
        """§7: unknown codes must not trigger special behaviour."""
        codec = server()
        open_stream(codec, RawClient())
        codec.send_response_head(1, ResponseHead(200, [], False))
        assert codec.feed(rst(1, 0xABCD), 1.0) == [
            (1, Reset(0xABCD, Source.DOWNSTREAM, "client_reset"))
        ]


class TestSettings:
    """§6.5."""

    def test_settings_are_acknowledged(self) -> None:
        codec = server()
        codec.feed(settings({3: 10}), 1.0)
        [ack] = of_type(parse_frames(codec.data_to_send()), SettingsFrame)
        assert ack.flags == {"ACK"} and not ack.settings

    def test_ack_with_a_payload(self) -> None:
        connection_error(server(), raw_frame(0x4, 0x1, 0, b"\0\x03\0\0\0\x01"), FRAME_SIZE_ERROR)

    def test_settings_on_a_stream(self) -> None:
        connection_error(server(), raw_frame(0x4, 0, 1, b""), PROTOCOL_ERROR)

    def test_length_not_a_multiple_of_six(self) -> None:
        connection_error(server(), raw_frame(0x4, 0, 0, b"\0\x03\0\0\0"), FRAME_SIZE_ERROR)

    def test_enable_push_other_than_0_or_1(self) -> None:
        connection_error(server(), settings({2: 2}), PROTOCOL_ERROR)

    def test_initial_window_size_over_the_maximum(self) -> None:
        connection_error(server(), settings({4: 2**31}), FLOW_CONTROL_ERROR)

    @pytest.mark.parametrize("size", [16383, 2**24])
    def test_max_frame_size_out_of_range(self, size: int) -> None:
        connection_error(server(), settings({5: size}), PROTOCOL_ERROR)

    def test_unknown_setting_is_ignored(self) -> None:
        codec = server()
        codec.feed(settings({0xFF: 1}), 1.0)
        assert not codec.closed

    def test_enable_connect_protocol_cannot_be_sent_by_a_client_as_2(self) -> None:
        connection_error(server(), settings({8: 2}), PROTOCOL_ERROR)


class TestPushPromise:
    """§6.6, §8.4: a client cannot push."""

    def test_push_promise_from_a_client(self) -> None:
        codec = server()
        open_stream(codec, RawClient())
        wire = raw_frame(0x5, 0x4, 1, b"\0\0\0\x02" + RawClient().block(BASIC))
        connection_error(codec, wire, PROTOCOL_ERROR)


class TestPing:
    """§6.7."""

    def test_ping_is_answered_with_the_same_payload(self) -> None:
        codec = server()
        codec.feed(ping(b"12345678"), 1.0)
        [pong] = of_type(parse_frames(codec.data_to_send()), PingFrame)
        assert pong.flags == {"ACK"} and pong.opaque_data == b"12345678"

    def test_ping_ack_is_not_answered(self) -> None:
        codec = server()
        codec.feed(ping(b"12345678", ack=True), 1.0)
        assert codec.data_to_send() == b""

    def test_ping_on_a_stream(self) -> None:
        connection_error(server(), raw_frame(0x6, 0, 1, b"\0" * 8), PROTOCOL_ERROR)

    def test_ping_with_a_bad_length(self) -> None:
        connection_error(server(), raw_frame(0x6, 0, 0, b"\0" * 6), FRAME_SIZE_ERROR)


class TestGoAway:
    """§6.8."""

    def test_goaway_on_a_stream(self) -> None:
        connection_error(server(), raw_frame(0x7, 0, 1, b"\0" * 8), PROTOCOL_ERROR)

    def test_goaway_too_short(self) -> None:
        connection_error(server(), raw_frame(0x7, 0, 0, b"\0" * 7), FRAME_SIZE_ERROR)

    def test_streams_in_flight_finish_after_a_client_goaway(self) -> None:
        """h2 alone would refuse to send anything after any GOAWAY."""
        codec = server()
        raw = RawClient()
        open_stream(codec, raw, end=True)
        out = codec.feed(goaway(0, 0, b"bye"), 1.0)
        assert out == [(0, GoAwayReceived(0, 0, b"bye"))]
        codec.send_response_head(1, ResponseHead(200, [], False))
        assert codec.send_body(1, b"done", True) == 4
        frames = parse_frames(codec.data_to_send())
        assert [type(f).__name__ for f in frames] == ["HeadersFrame", "DataFrame"]
        assert codec.draining and codec.open_streams == 0

    def test_goaway_split_across_reads_with_frames_around_it(self) -> None:
        codec = server()
        raw = RawClient()
        wire = raw.headers(1, BASIC) + goaway(1, 0, b"x" * 50) + raw.headers(3, BASIC)
        out = []
        for piece in bytewise(wire):
            out.extend(codec.feed(piece, 1.0))
        assert [(sid, type(ev).__name__) for sid, ev in out] == [
            (1, "RequestHead"),
            (0, "GoAwayReceived"),
            (3, "RequestHead"),
        ]

    def test_goaway_with_an_unknown_error_code(self) -> None:
        codec = server()
        [(_, ev)] = codec.feed(goaway(0, 0xDEAD), 1.0)
        assert isinstance(ev, GoAwayReceived) and ev.error_code == 0xDEAD


class TestWindowUpdate:
    """§6.9."""

    def test_zero_increment_on_the_connection(self) -> None:
        connection_error(server(), raw_frame(0x8, 0, 0, b"\0\0\0\0"), PROTOCOL_ERROR)

    def test_zero_increment_on_a_stream(self) -> None:
        codec = server()
        open_stream(codec, RawClient())
        connection_error(codec, raw_frame(0x8, 0, 1, b"\0\0\0\0"), PROTOCOL_ERROR)

    def test_bad_length(self) -> None:
        connection_error(server(), raw_frame(0x8, 0, 0, b"\0\0\0\x01\0"), FRAME_SIZE_ERROR)

    def test_connection_window_over_the_maximum(self) -> None:
        """§6.9.1: 2^31-1 is the largest window."""
        codec = server()
        connection_error(codec, window_update(0, 2**31 - 1), FLOW_CONTROL_ERROR)

    def test_stream_window_over_the_maximum_is_a_stream_error(self) -> None:
        codec = server()
        open_stream(codec, RawClient())
        out = codec.feed(window_update(1, 2**31 - 1), 1.0)
        assert out == [(1, Reset(FLOW_CONTROL_ERROR, Source.DOWNSTREAM, "flow_control_error"))]
        assert rst_codes(codec.data_to_send()) == {1: FLOW_CONTROL_ERROR}
        assert not codec.closed

    def test_data_beyond_the_stream_window(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        wire = b"".join(data(1, b"x" * 16384) for _ in range(4)) + data(1, b"x" * 4)
        connection_error(codec, wire, FLOW_CONTROL_ERROR)

    def test_data_beyond_the_connection_window(self) -> None:
        codec = server(initial_connection_window_size=65535, initial_stream_window_size=1 << 20)
        raw = RawClient()
        open_stream(codec, raw)
        open_stream(codec, raw, sid=3)
        wire = b"".join(data(1, b"x" * 16384) for _ in range(3)) + data(3, b"x" * 16384)
        connection_error(codec, wire, FLOW_CONTROL_ERROR)


class TestHttpMessages:
    """§8.1: message framing on the stream."""

    def test_trailers_without_end_stream(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        connection_error(codec, raw.headers(1, [(b"x-a", b"1")], end_stream=False), PROTOCOL_ERROR)

    def test_data_then_trailers(self) -> None:
        codec = server()
        raw = RawClient()
        open_stream(codec, raw)
        out = codec.feed(data(1, b"x") + raw.headers(1, [(b"x-t", b"1")]), 1.0)
        assert [type(ev).__name__ for _, ev in out] == ["Body", "Trailers"]


def test_goaway_frame_type_constant() -> None:
    assert GoAwayFrame.type == 0x7
