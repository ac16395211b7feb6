"""H2ClientCodec against a real h2 server: neutral request heads out,
responses in, GOAWAY last-stream-id semantics, response validation and
caps, flow control and liveness."""

from __future__ import annotations

import h2.events
import pytest
from hpack import NeverIndexedHeaderTuple
from hyperframe.frame import SettingsFrame, WindowUpdateFrame

from expressgateway.codec.h2 import (
    WINDOW_OPENED,
    GoAwayReceived,
    H2ClientCodec,
    H2ConnectionError,
)
from expressgateway.codec.h2.frames import PREFACE
from expressgateway.core.errors import Retry, UpstreamError
from expressgateway.core.events import (
    CANCEL,
    NO_ERROR,
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
from tests.unit.h2.helpers import ClientPair, coalesce, of_type, parse_frames, rst_codes

GET = RequestHead(b"GET", b"https", b"example.com", b"/a?b=1", [(b"accept", b"*/*")], True)


def request(
    pair: ClientPair, head: RequestHead = GET, **kw: object
) -> tuple[int, h2.events.RequestReceived]:
    sid = pair.codec.send_request(head, **kw)  # type: ignore[arg-type]
    events = pair.to_server()
    req = of_type(events, h2.events.RequestReceived)[0]
    return sid, req


def respond(
    pair: ClientPair,
    sid: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None = None,
    *,
    end: bool = True,
) -> None:
    pair.server.send_headers(sid, headers, end_stream=body is None and end)
    if body is not None:
        size = pair.server.max_outbound_frame_size
        for off in range(0, max(len(body), 1), size):
            last = off + size >= len(body)
            pair.server.send_data(sid, body[off : off + size], end_stream=end and last)


# -- opening and requests ------------------------------------------------------------


def test_initiate_sends_preface_settings_and_window_update() -> None:
    wire = H2ClientCodec(max_header_list_size=32768).initiate()
    assert wire.startswith(PREFACE)
    frames = parse_frames(wire[len(PREFACE) :])
    settings = of_type(frames, SettingsFrame)[0].settings
    assert settings[SettingsFrame.ENABLE_PUSH] == 0
    assert settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 32768
    assert of_type(frames, WindowUpdateFrame)[0].window_increment == 1048576 - 65535


def test_request_head_becomes_pseudo_headers() -> None:
    pair = ClientPair()
    head = RequestHead(
        b"POST",
        b"https",
        b"example.com:8443",
        b"/upload",
        [
            (b"content-type", b"text/plain"),
            (b"connection", b"keep-alive"),
            (b"transfer-encoding", b"chunked"),
            (b"te", b"trailers"),
            (b"host", b"ignored"),
            (b"x-evil", b"a\r\nb"),
        ],
        False,
        content_length=5,
    )
    sid, req = request(pair, head)
    assert req.headers == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"example.com:8443"),
        (b":path", b"/upload"),
        (b"content-type", b"text/plain"),
        (b"te", b"trailers"),
        (b"content-length", b"5"),
    ]
    assert pair.codec.send_body(sid, b"hello", True) == 5
    data = of_type(pair.to_server(), h2.events.DataReceived)[0]
    assert data.data == b"hello" and data.stream_ended is not None


@pytest.mark.parametrize("size", [100, 40000])
def test_a_request_head_of_any_size_reaches_a_real_server_whole(size: int) -> None:
    """The codec frames request heads itself (not through hyperframe): a
    block over the server's 16 KiB frame size goes out as HEADERS plus
    CONTINUATION frames, END_HEADERS on the last only, END_STREAM on the
    HEADERS frame; h2 reads back the same fields and opens the stream."""
    pair = ClientPair()
    value = b"v" * size
    sid = pair.codec.send_request(
        RequestHead(b"GET", b"https", b"a", b"/", [(b"x-big", value)], True)
    )
    wire = pair.codec.data_to_send()
    heads = [f for f in parse_frames(wire) if f.type in (0x1, 0x9)]
    assert heads[0].type == 0x1 and all(f.type == 0x9 for f in heads[1:])
    assert (len(heads) > 1) == (size > 16384)
    assert ["END_HEADERS" in f.flags for f in heads] == [False] * (len(heads) - 1) + [True]
    assert "END_STREAM" in heads[0].flags
    events = pair.server.receive_data(wire)
    req = of_type(events, h2.events.RequestReceived)[0]
    assert req.stream_id == sid
    assert req.headers == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"a"),
        (b":path", b"/"),
        (b"x-big", value),
    ]
    assert of_type(events, h2.events.StreamEnded)


def test_scheme_is_this_connections() -> None:
    pair = ClientPair(H2ClientCodec(scheme=b"https"))
    _, req = request(pair)
    assert (b":scheme", b"https") in req.headers


def test_secrets_are_never_indexed() -> None:
    """A connection carries many clients' requests: their credentials must
    not enter the shared HPACK table (compression oracle)."""
    pair = ClientPair()
    head = RequestHead(
        b"GET",
        b"https",
        b"a",
        b"/",
        [(b"authorization", b"Bearer s3cret"), (b"cookie", b"sid=1")],
        True,
    )
    _, req = request(pair, head)
    secret = [h for h in req.headers if h[0] in (b"authorization", b"cookie")]
    assert len(secret) == 2
    assert all(isinstance(h, NeverIndexedHeaderTuple) for h in secret)


def test_empty_authority_is_omitted() -> None:
    pair = ClientPair()
    pair.server.config.validate_inbound_headers = False
    _, req = request(pair, RequestHead(b"GET", b"http", b"", b"/", [], True))
    assert [n for n, _ in req.headers] == [b":method", b":scheme", b":path"]


def test_available_streams_follow_the_peer_setting() -> None:
    pair = ClientPair(max_concurrent_streams=2)
    assert pair.codec.available_streams == 2
    request(pair)
    request(pair)
    assert not pair.codec.can_open_stream()
    with pytest.raises(UpstreamError) as info:
        pair.codec.send_request(GET)
    assert info.value.retry is Retry.YES


def test_finished_streams_free_their_slot() -> None:
    pair = ClientPair(max_concurrent_streams=1)
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200")])
    pair.to_client()
    assert pair.codec.can_open_stream()


# -- responses ---------------------------------------------------------------------------


def test_response_events() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    pair.server.send_headers(sid, [(b":status", b"103"), (b"link", b"</a>")])
    respond(pair, sid, [(b":status", b"200"), (b"content-length", b"5"), (b"x-a", b"1")], b"hello")
    assert pair.to_client() == [
        (sid, Informational(103, [(b"link", b"</a>")])),
        (sid, ResponseHead(200, [(b"x-a", b"1")], False, 5)),
        (sid, Body(b"hello", True)),
    ]
    assert pair.codec.open_streams == 0


def test_response_fed_byte_by_byte() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200")], b"x" * 100, end=False)
    pair.server.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    out = coalesce(pair.to_client(bytewise_feed=True))
    assert out == [
        (sid, ResponseHead(200, [], False, None)),
        (sid, Body(b"x" * 100, False)),
        (sid, Trailers([(b"grpc-status", b"0")])),
    ]


def test_head_response_with_content_length_has_no_body() -> None:
    pair = ClientPair()
    sid, _ = request(pair, RequestHead(b"HEAD", b"https", b"a", b"/", [], True))
    respond(pair, sid, [(b":status", b"200"), (b"content-length", b"1000")])
    assert pair.to_client() == [(sid, ResponseHead(200, [], True, 1000))]


def test_304_with_content_length_is_fine() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"304"), (b"content-length", b"1000")])
    assert pair.to_client() == [(sid, ResponseHead(304, [], True, 1000))]


def test_304_ended_by_an_empty_data_frame_is_fine() -> None:
    """h2 alone would call this a connection error (test_h2_library)."""
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"304"), (b"content-length", b"1000")], b"")
    assert pair.to_client() == [
        (sid, ResponseHead(304, [], False, 1000)),
        (sid, Body(b"", True)),
    ]


def test_body_in_a_304_is_a_stream_error() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    raw_server = pair.server
    raw_server.send_headers(sid, [(b":status", b"304")])
    raw_server.send_data(sid, b"oops", end_stream=True)
    out = pair.to_client()
    assert out[-1] == (sid, Reset(PROTOCOL_ERROR, Source.UPSTREAM, "body_in_bodiless_response"))


def test_body_shorter_than_content_length_is_never_a_clean_end() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200"), (b"content-length", b"10")], b"short")
    assert pair.to_client() == [
        (sid, ResponseHead(200, [], False, 10)),
        (sid, Reset(PROTOCOL_ERROR, Source.UPSTREAM, "content_length_mismatch")),
    ]


def test_body_longer_than_content_length_resets_the_stream() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200"), (b"content-length", b"3")], b"toolong", end=False)
    assert pair.to_client()[-1] == (
        sid,
        Reset(PROTOCOL_ERROR, Source.UPSTREAM, "content_length_mismatch"),
    )
    assert rst_codes(pair.codec.data_to_send()) == {sid: PROTOCOL_ERROR}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(b":status", b"200"), (b"connection", b"close")], "connection_specific_header"),
        ([(b":status", b"200"), (b"transfer-encoding", b"chunked")], "connection_specific_header"),
        ([(b"x-a", b"1"), (b":status", b"200")], "bad_pseudo_header"),
        ([(b":status", b"200"), (b":path", b"/")], "bad_pseudo_header"),
        ([(b":status", b"2000")], "bad_status"),
        ([(b":status", b"abc")], "bad_status"),
        ([(b":status", b"200"), (b"Bad", b"1")], "bad_header_name"),
        ([(b":status", b"200"), (b"x-a", b"a\nb")], "bad_header_value"),
        ([(b":status", b"200"), (b"content-length", b"x")], "bad_content_length"),
    ],
)
def test_malformed_responses_are_stream_errors(
    headers: list[tuple[bytes, bytes]], reason: str
) -> None:
    pair = ClientPair()
    pair.server.config.validate_outbound_headers = False
    pair.server.config.normalize_outbound_headers = False
    sid, _ = request(pair)
    pair.server.send_headers(sid, headers, end_stream=False)
    assert pair.to_client() == [(sid, Reset(PROTOCOL_ERROR, Source.UPSTREAM, reason))]
    assert rst_codes(pair.codec.data_to_send()) == {sid: PROTOCOL_ERROR}
    assert pair.codec.open_streams == 0


def test_malformed_response_that_ends_the_stream_needs_no_reset() -> None:
    """Both sides ended the stream: nothing to reset (RFC 9113 §5.1)."""
    pair = ClientPair()
    pair.server.config.validate_outbound_headers = False
    pair.server.config.normalize_outbound_headers = False
    sid, _ = request(pair)
    pair.server.send_headers(sid, [(b":status", b"200"), (b"upgrade", b"x")], end_stream=True)
    assert pair.to_client() == [
        (sid, Reset(PROTOCOL_ERROR, Source.UPSTREAM, "connection_specific_header"))
    ]
    assert pair.codec.data_to_send() == b""
    assert pair.codec.open_streams == 0


def test_status_101_is_malformed_in_http2() -> None:
    pair = ClientPair()
    pair.server.config.validate_outbound_headers = False
    sid, _ = request(pair)
    pair.server.send_headers(sid, [(b":status", b"101")])
    assert pair.to_client() == [(sid, Reset(PROTOCOL_ERROR, Source.UPSTREAM, "bad_status"))]


def test_response_over_the_header_caps_is_a_502() -> None:
    pair = ClientPair(H2ClientCodec(max_headers=5))
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200"), *((b"x-%d" % i, b"v") for i in range(6))])
    [(rsid, reset)] = pair.to_client()
    assert rsid == sid and isinstance(reset, Reset) and reset.reason == "header_too_large"


def test_response_list_over_the_size_cap_is_a_502() -> None:
    pair = ClientPair(H2ClientCodec(max_header_list_size=1024))
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200"), (b"x-big", b"v" * 1500)])
    [(_, reset)] = pair.to_client()
    assert isinstance(reset, Reset) and reset.reason == "header_too_large"


def test_hop_by_hop_response_fields_are_dropped() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200"), (b"proxy-authenticate", b"Basic"), (b"x-a", b"1")])
    assert pair.to_client() == [(sid, ResponseHead(200, [(b"x-a", b"1")], True, None))]


def test_forbidden_response_trailers_reset_the_stream() -> None:
    pair = ClientPair()
    pair.server.config.validate_outbound_headers = False
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200")], b"x", end=False)
    pair.server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    out = pair.to_client()
    assert out[-1] == (sid, Reset(PROTOCOL_ERROR, Source.UPSTREAM, "bad_pseudo_header"))


# -- resets and GOAWAY ---------------------------------------------------------------------


def test_backend_reset_is_reported() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    pair.server.reset_stream(sid, CANCEL)
    assert pair.to_client() == [(sid, Reset(CANCEL, Source.UPSTREAM, "upstream_reset"))]


def test_refused_stream_says_not_processed() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    pair.server.reset_stream(sid, REFUSED_STREAM)
    assert pair.to_client() == [(sid, Reset(REFUSED_STREAM, Source.UPSTREAM, "upstream_refused"))]


def test_reset_no_error_after_a_complete_response_is_not_a_failure() -> None:
    """RFC 9113 §8.1: the server stops the rest of our request body."""
    pair = ClientPair()
    sid = pair.codec.send_request(GET, end_stream=False)
    pair.to_server()
    respond(pair, sid, [(b":status", b"413")])
    pair.server.reset_stream(sid, NO_ERROR)
    assert pair.to_client() == [(sid, ResponseHead(413, [], True, None))]
    assert pair.codec.open_streams == 0
    assert pair.codec.send_body(sid, b"rest", True) == 4  # dropped


def test_goaway_reports_unprocessed_streams_for_retry() -> None:
    """RFC 9113 §6.8: streams above last_stream_id were not processed; those
    below complete normally."""
    pair = ClientPair()
    sids = [request(pair)[0] for _ in range(3)]
    assert sids == [1, 3, 5]
    pair.server.close_connection(NO_ERROR, last_stream_id=1)
    out = pair.to_client()
    assert out == [
        (0, GoAwayReceived(NO_ERROR, 1, b"")),
        (3, Reset(REFUSED_STREAM, Source.UPSTREAM, "goaway_unprocessed")),
        (5, Reset(REFUSED_STREAM, Source.UPSTREAM, "goaway_unprocessed")),
    ]
    assert not pair.codec.can_open_stream() and pair.codec.draining
    with pytest.raises(UpstreamError):
        pair.codec.send_request(GET)
    # stream 1 still completes (h2 would have dropped everything)
    frames = b"".join(
        bytes(f.serialize()) for f in _response_frames(pair, 1, [(b":status", b"200")], b"late")
    )
    assert coalesce(pair.codec.feed(frames, 1.0)) == [
        (1, ResponseHead(200, [], False, None)),
        (1, Body(b"late", True)),
    ]
    assert pair.codec.open_streams == 0


def _response_frames(
    pair: ClientPair, sid: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> list:
    """Frames of a response built by hand (the h2 server object refuses to
    send after its own GOAWAY)."""
    from hyperframe.frame import DataFrame, HeadersFrame

    hf = HeadersFrame(sid, data=pair.server.encoder.encode(headers), flags=["END_HEADERS"])
    df = DataFrame(sid, data=body, flags=["END_STREAM"])
    return [hf, df]


def test_two_step_goaway_from_the_backend() -> None:
    pair = ClientPair()
    request(pair)
    request(pair)
    from tests.unit.h2.helpers import goaway

    out = pair.codec.feed(goaway(2**31 - 1), 1.0)
    assert out == [(0, GoAwayReceived(0, 2**31 - 1, b""))]
    out = pair.codec.feed(goaway(1), 1.0)
    assert out == [
        (0, GoAwayReceived(0, 1, b"")),
        (3, Reset(REFUSED_STREAM, Source.UPSTREAM, "goaway_unprocessed")),
    ]


# -- extended CONNECT (RFC 8441) ---------------------------------------------------------

WS = RequestHead(
    b"GET",
    b"https",
    b"example.com",
    b"/chat",
    [(b"sec-websocket-key", b"dGhlIHNhbXBsZQ=="), (b"sec-websocket-version", b"13")],
    False,
    protocol=b"websocket",
)


def test_websocket_becomes_extended_connect() -> None:
    pair = ClientPair(enable_connect_protocol=1)
    assert pair.codec.extended_connect
    sid, req = request(pair, WS)
    assert req.headers == [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":authority", b"example.com"),
        (b":path", b"/chat"),
        (b"sec-websocket-version", b"13"),
    ]
    respond(pair, sid, [(b":status", b"200")], b"hi", end=False)
    assert pair.to_client() == [
        (sid, ResponseHead(200, [], False, None)),
        (sid, TunnelData(b"hi")),
    ]
    assert pair.codec.send_body(sid, b"yo") == 2
    assert of_type(pair.to_server(), h2.events.DataReceived)[0].data == b"yo"


def test_refused_extended_connect_has_an_ordinary_body() -> None:
    pair = ClientPair(enable_connect_protocol=1)
    sid, _ = request(pair, WS)
    respond(pair, sid, [(b":status", b"403")], b"no")
    assert pair.to_client() == [
        (sid, ResponseHead(403, [], False, None)),
        (sid, Body(b"no", True)),
    ]


def test_websocket_without_backend_support_fails() -> None:
    pair = ClientPair()
    with pytest.raises(UpstreamError) as info:
        pair.codec.send_request(WS)
    assert info.value.reason == "h2_extended_connect_unsupported"


# -- flow control ---------------------------------------------------------------------------


def test_response_credit_returns_only_through_ack_data() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200")], b"x" * 40000, end=False)
    pair.to_client()
    assert pair.codec.data_to_send() == b""
    pair.codec.ack_data(sid, 40000)
    ups = of_type(parse_frames(pair.codec.data_to_send()), WindowUpdateFrame)
    assert {f.stream_id: f.window_increment for f in ups} == {sid: 40000}


def test_request_body_waits_for_the_backend_window() -> None:
    pair = ClientPair(initial_window_size=10)
    sid = pair.codec.send_request(GET, end_stream=False)
    assert pair.codec.send_body(sid, b"a" * 30, True) == 10
    pair.to_server()
    pair.server.acknowledge_received_data(10, sid)
    pair.server.increment_flow_control_window(20, sid)
    assert pair.to_client() == [(sid, WINDOW_OPENED)]
    assert pair.codec.send_body(sid, b"a" * 20, True) == 20


# -- liveness and connection errors -------------------------------------------------------


def test_ping_measures_the_round_trip() -> None:
    pair = ClientPair()
    pair.codec.ping(5.0)
    pair.to_server()
    pair.codec.feed(pair.server.data_to_send(), 5.25)
    assert pair.codec.ping_rtt == 0.25


def test_unanswered_ping_is_a_connection_error() -> None:
    codec = H2ClientCodec(keep_alive_timeout_ms=1000)
    codec.initiate()
    codec.ping(1.0)
    with pytest.raises(H2ConnectionError) as info:
        codec.check_timeouts(2.0)
    assert info.value.reason == "keepalive_timeout"
    assert info.value.source is Source.UPSTREAM


def test_an_http1_backend_is_a_connection_error() -> None:
    codec = H2ClientCodec()
    codec.initiate()
    with pytest.raises(H2ConnectionError) as info:
        codec.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n", 1.0)
    assert info.value.reason in ("bad_preface", "frame_too_large")
    assert info.value.source is Source.UPSTREAM


def test_push_promise_is_a_connection_error() -> None:
    """We send SETTINGS_ENABLE_PUSH 0 (RFC 9113 §8.4)."""
    from tests.unit.h2.helpers import raw_frame

    pair = ClientPair()
    sid, _ = request(pair)
    block = pair.server.encoder.encode([(b":method", b"GET"), (b":path", b"/p")])
    wire = raw_frame(0x5, 0x4, sid, b"\0\0\0\x02" + block)
    with pytest.raises(H2ConnectionError) as info:
        pair.codec.feed(wire, 1.0)
    assert info.value.code == PROTOCOL_ERROR


def test_connection_lost_is_never_a_clean_end() -> None:
    pair = ClientPair()
    sid, _ = request(pair)
    respond(pair, sid, [(b":status", b"200")], b"part", end=False)
    pair.to_client()
    assert pair.codec.connection_lost() == [
        (sid, Reset(CANCEL, Source.UPSTREAM, "connection_lost"))
    ]
    assert not pair.codec.can_open_stream()
