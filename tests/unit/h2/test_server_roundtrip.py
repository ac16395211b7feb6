"""H2ServerCodec against a real h2 client: requests in, neutral events out,
responses back, byte-at-a-time feeding."""

from __future__ import annotations

import h2.events
import pytest

from expressgateway.codec.h2 import H2ServerCodec, StreamRejected
from expressgateway.core.events import (
    NO_ERROR,
    Body,
    Informational,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
    Trailers,
    TunnelData,
)
from tests.unit.h2.helpers import BASIC, ServerPair, coalesce, of_type, only_head, parse_frames

POST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"example.com:8443"),
    (b":path", b"/upload?x=1"),
    (b"content-type", b"text/plain"),
]


def test_get_becomes_one_request_head_with_end_stream() -> None:
    pair = ServerPair()
    sid, out = pair.request(
        [*BASIC, (b"user-agent", b"t/1"), (b"accept", b"*/*")],
    )
    assert out == [
        (
            sid,
            RequestHead(
                b"GET",
                b"https",
                b"example.com",
                b"/",
                [(b"user-agent", b"t/1"), (b"accept", b"*/*")],
                True,
            ),
        )
    ]


def test_scheme_is_the_listeners_not_the_clients() -> None:
    pair = ServerPair(H2ServerCodec(scheme=b"http"))
    _, out = pair.request()
    assert only_head(out).scheme == b"http"


def test_post_body_comes_as_body_events_ending_the_stream() -> None:
    pair = ServerPair()
    sid, out = pair.request([*POST, (b"content-length", b"11")], b"hello world")
    head = only_head(out)
    assert (head.method, head.authority, head.path) == (
        b"POST",
        b"example.com:8443",
        b"/upload?x=1",
    )
    assert head.content_length == 11 and not head.end_stream
    assert (b"content-length", b"11") not in head.headers
    assert out[1:] == [(sid, Body(b"hello world", True))]


def test_byte_at_a_time_feeding_gives_the_same_events() -> None:
    whole = ServerPair()
    _, out = whole.request([*POST, (b"content-length", b"5")], b"abcde")
    split = ServerPair()
    sid2 = split.client.get_next_available_stream_id()
    split.client.send_headers(sid2, [*POST, (b"content-length", b"5")])
    split.client.send_data(sid2, b"abcde", end_stream=True)
    assert coalesce(split.to_server(bytewise_feed=True)) == coalesce(out)


def test_byte_at_a_time_handshake_and_many_streams() -> None:
    codec = H2ServerCodec()
    import tests.unit.h2.helpers as h

    client = h.h2_client()
    client.receive_data(codec.initiate())
    for sid in (1, 3, 5):
        client.send_headers(sid, BASIC, end_stream=True)
    out = []
    for piece in h.bytewise(client.data_to_send()):
        out.extend(codec.feed(piece, 0.0))
    assert [sid for sid, _ in out] == [1, 3, 5]
    assert all(isinstance(ev, RequestHead) for _, ev in out)


def test_request_trailers_end_the_stream() -> None:
    pair = ServerPair()
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_headers(sid, [*POST, (b"te", b"trailers")])
    pair.client.send_data(sid, b"abc")
    pair.client.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
    out = pair.to_server()
    head = only_head(out)
    assert (b"te", b"trailers") in head.headers
    assert out[1:] == [(sid, Body(b"abc", False)), (sid, Trailers([(b"grpc-status", b"0")]))]


def test_multiple_cookie_fields_are_joined_for_http1() -> None:
    """RFC 9113 §8.2.3: cookie crumbs become one field with "; "."""
    pair = ServerPair()
    _, out = pair.request(
        [*BASIC, (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
    )
    assert only_head(out).headers == [(b"cookie", b"a=1; b=2; c=3"), (b"accept", b"*/*")]


def test_single_cookie_is_kept_as_is() -> None:
    pair = ServerPair()
    _, out = pair.request([*BASIC, (b"cookie", b"a=1")])
    assert only_head(out).headers == [(b"cookie", b"a=1")]


def test_a_repeated_request_gets_its_own_head() -> None:
    """Heads of repeated requests are remembered: each stream still gets
    its own object, with its own field list and END_STREAM."""
    pair = ServerPair()
    fields = [*BASIC, (b"grpc-timeout", b"5S")]
    first = only_head(pair.request(fields)[1])
    first.headers[0] = (b"grpc-timeout", b"1S")  # as the gRPC deadline clamp does
    second = only_head(pair.request(fields)[1])
    assert second is not first
    assert second.headers == [(b"grpc-timeout", b"5S")]
    third = only_head(pair.request(fields, b"x")[1])
    assert (second.end_stream, third.end_stream) == (True, False)


def test_host_alone_gives_the_authority() -> None:
    pair = ServerPair()
    _, out = pair.request(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"h.test")]
    )
    head = only_head(out)
    assert head.authority == b"h.test"
    assert head.headers == []


def test_host_equal_to_authority_is_dropped_from_headers() -> None:
    pair = ServerPair()
    _, out = pair.request([*BASIC, (b"host", b"EXAMPLE.com")])
    head = only_head(out)
    assert head.authority == b"example.com" and head.headers == []


def test_fragment_is_cut_from_the_path() -> None:
    pair = ServerPair()
    _, out = pair.request([*BASIC[:3], (b":path", b"/a?b=c#frag")])
    assert only_head(out).path == b"/a?b=c"


def test_options_asterisk_is_accepted() -> None:
    pair = ServerPair()
    _, out = pair.request([(b":method", b"OPTIONS"), *BASIC[1:3], (b":path", b"*")])
    assert only_head(out).path == b"*"


def test_proxy_authorization_is_consumed() -> None:
    pair = ServerPair()
    _, out = pair.request([*BASIC, (b"proxy-authorization", b"Basic x"), (b"a", b"b")])
    assert only_head(out).headers == [(b"a", b"b")]


def test_response_round_trip_with_trailers() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(
        sid, ResponseHead(200, [(b"content-type", b"application/grpc")], False)
    )
    assert pair.codec.send_body(sid, b"payload") == 7
    pair.codec.send_trailers(sid, [(b"grpc-status", b"0"), (b"content-length", b"9")])
    events = pair.to_client()
    resp = of_type(events, h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert of_type(events, h2.events.DataReceived)[0].data == b"payload"
    trailers = of_type(events, h2.events.TrailersReceived)[0]
    assert trailers.headers == [(b"grpc-status", b"0")]
    assert pair.codec.open_streams == 0


def test_response_head_gets_content_length_and_status_first() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(404, [(b"x-a", b"1")], False, 3))
    pair.codec.send_body(sid, b"nop", True)
    resp = of_type(pair.to_client(), h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"404"), (b"x-a", b"1"), (b"content-length", b"3")]


def test_response_drops_connection_specific_and_bad_fields() -> None:
    """Response splitting: HPACK carries any octet, so CR/LF/NUL values are
    dropped here, never encoded."""
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(
        sid,
        ResponseHead(
            200,
            [
                (b"connection", b"keep-alive"),
                (b"transfer-encoding", b"chunked"),
                (b"keep-alive", b"timeout=5"),
                (b"upgrade", b"h2c"),
                (b"x-evil", b"a\r\nset-cookie: x=1"),
                (b"X-Upper", b" padded "),
                (b"bad name", b"v"),
                (b":status", b"500"),
                (b"host", b"h"),
            ],
            True,
        ),
    )
    resp = of_type(pair.to_client(), h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"200"), (b"x-upper", b"padded")]


def test_204_never_carries_content_length() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(204, [], True, 0))
    resp = of_type(pair.to_client(), h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"204")]


def test_informational_103_before_the_final_response() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_informational(sid, Informational(103, [(b"link", b"</s.css>; rel=preload")]))
    pair.codec.send_response_head(sid, ResponseHead(200, [], True))
    events = pair.to_client()
    info = of_type(events, h2.events.InformationalResponseReceived)[0]
    assert info.headers == [(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]
    assert of_type(events, h2.events.ResponseReceived)


def test_informational_rejects_101_and_final_statuses() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    with pytest.raises(ValueError):
        pair.codec.send_informational(sid, Informational(101, []))
    with pytest.raises(ValueError):
        pair.codec.send_informational(sid, Informational(200, []))


def test_early_response_resets_the_unfinished_request_with_no_error() -> None:
    """RFC 9113 §8.1: a complete response before the request body ended is
    followed by RST_STREAM(NO_ERROR)."""
    pair = ServerPair()
    sid, _ = pair.request(POST, b"part", end_stream=False)
    pair.codec.send_response_head(sid, ResponseHead(413, [], True))
    frames = parse_frames(pair.codec.data_to_send())
    assert [type(f).__name__ for f in frames] == ["HeadersFrame", "RstStreamFrame"]
    assert frames[1].error_code == NO_ERROR
    assert pair.codec.open_streams == 0


def test_client_reset_after_the_response_began_is_reported() -> None:
    pair = ServerPair()
    sid, _ = pair.request(POST, b"x", end_stream=False)
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    pair.to_client()
    pair.client.reset_stream(sid, 8)
    assert pair.to_server() == [(sid, Reset(8, Source.DOWNSTREAM, "client_reset"))]
    assert pair.codec.open_streams == 0


def test_sends_on_a_finished_stream_are_ignored() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], True))
    assert pair.codec.send_body(sid, b"late", True) == 4
    pair.codec.send_response_head(sid, ResponseHead(200, [], True))
    pair.codec.send_trailers(sid, [(b"a", b"b")])
    pair.codec.reset_stream(sid)
    assert len(parse_frames(pair.codec.data_to_send())) == 1


def test_local_reply_answers_a_rejected_request() -> None:
    pair = ServerPair()
    sid, out = pair.request([*BASIC, (b"x_y", b"1")])
    [(rsid, ev)] = out
    assert rsid == sid and isinstance(ev, StreamRejected)
    assert (ev.error.status, ev.error.reason) == (400, "header_underscore")
    pair.codec.send_local_reply(sid, ev.error.status, ev.error.reason)
    events = pair.to_client()
    resp = of_type(events, h2.events.ResponseReceived)[0]
    assert resp.headers[0] == (b":status", b"400")
    body = of_type(events, h2.events.DataReceived)[0].data
    assert body == b'{"status":400,"reason":"header_underscore"}\n'
    assert pair.codec.open_streams == 0


def test_extended_connect_gives_a_tunnel() -> None:
    """RFC 8441: CONNECT + :protocol; DATA is TunnelData both ways and the
    client's half stays open after the 200."""
    pair = ServerPair(H2ServerCodec(enable_connect_protocol=True))
    assert pair.client.remote_settings.enable_connect_protocol == 1
    sid, out = pair.request(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"https"),
            (b":authority", b"example.com"),
            (b":path", b"/chat"),
            (b"sec-websocket-version", b"13"),
        ],
        end_stream=False,
    )
    head = only_head(out)
    assert (head.method, head.protocol, head.end_stream) == (b"CONNECT", b"websocket", False)
    pair.codec.send_response_head(sid, ResponseHead(200, [], False, 0))
    resp = of_type(pair.to_client(), h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"200")]
    pair.client.send_data(sid, b"frame")
    assert pair.to_server() == [(sid, TunnelData(b"frame"))]
    assert pair.codec.send_body(sid, b"back", True) == 4
    assert of_type(pair.to_client(), h2.events.DataReceived)[0].data == b"back"
    assert pair.codec.open_streams == 1  # no RST: the client's half is open
    pair.client.send_data(sid, b"", end_stream=True)
    assert pair.to_server() == [(sid, Body(b"", True))]
    assert pair.codec.open_streams == 0


def test_body_or_trailers_before_the_head_is_a_programming_error() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    with pytest.raises(RuntimeError):
        pair.codec.send_body(sid, b"x")
    with pytest.raises(RuntimeError):
        pair.codec.send_trailers(sid, [(b"a", b"b")])


@pytest.mark.parametrize("size", [100, 16384 - 20, 40000])
def test_a_response_head_of_any_size_reaches_a_real_client_whole(size: int) -> None:
    """The codec frames response heads itself (not through hyperframe): a
    block over the client's 16 KiB frame size goes out as HEADERS plus
    CONTINUATION frames, END_HEADERS on the last one only, and h2 reads
    them back as the same fields; the body that follows goes in DATA
    frames no larger than that frame size."""
    pair = ServerPair()
    sid, _ = pair.request()
    value = b"v" * size
    body = b"b" * 40000
    pair.codec.send_response_head(sid, ResponseHead(200, [(b"x-big", value)], False, len(body)))
    assert pair.codec.send_body(sid, body, True) == len(body)
    wire = pair.codec.data_to_send()
    frames = parse_frames(wire)
    heads = [f for f in frames if f.type in (0x1, 0x9)]
    assert heads[0].type == 0x1 and all(f.type == 0x9 for f in heads[1:])
    assert ["END_HEADERS" in f.flags for f in heads] == [False] * (len(heads) - 1) + [True]
    assert (len(heads) > 1) == (size > 16384)
    datas = [f for f in frames if f.type == 0x0]
    assert max(len(f.data) for f in datas) <= 16384
    assert ["END_STREAM" in f.flags for f in datas] == [False] * (len(datas) - 1) + [True]
    events = pair.client.receive_data(wire)
    resp = of_type(events, h2.events.ResponseReceived)[0]
    assert resp.headers == [(b":status", b"200"), (b"x-big", value), (b"content-length", b"40000")]
    assert b"".join(e.data for e in of_type(events, h2.events.DataReceived)) == body
    assert of_type(events, h2.events.StreamEnded)
    assert pair.codec.open_streams == 0


def test_a_head_that_ends_the_stream_closes_it_for_a_real_client() -> None:
    pair = ServerPair()
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(204, [], True))
    events = pair.to_client()
    assert of_type(events, h2.events.ResponseReceived)[0].headers == [(b":status", b"204")]
    assert of_type(events, h2.events.StreamEnded)[0].stream_id == sid
    assert pair.codec.open_streams == 0
    # h2 agrees the stream is closed on both sides: a new request still works
    sid2, out = pair.request()
    assert sid2 > sid and isinstance(out[0][1], RequestHead)
