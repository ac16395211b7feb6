"""RFC 9114 §4.1-§4.3 on the server side: a real aioquic client's requests
become neutral events (head, body pieces, trailers), the body is held to
its ``content-length`` and to the body cap, well-formed requests over a
limit are answered (413, 431, 400, 405), and responses go back as HEADERS
and DATA frames. Frame sequences no client library would send are written
as raw frames on the request stream."""

from __future__ import annotations

import json

import pytest

from expressgateway.codec.h1.framing import local_reply_body
from expressgateway.codec.h2.events import StreamRejected
from expressgateway.core.events import (
    CANCEL,
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
from tests.unit.h3.helpers import (
    GET,
    H3_FRAME_UNEXPECTED,
    H3_MESSAGE_ERROR,
    H3_NO_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
    POST,
    WINDOW,
    Output,
    ServerPair,
    body_of,
    data_frame,
    frame,
    headers_frame,
    of_type,
)

MISMATCH = Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "content_length_mismatch")


def only_head(out: Output) -> RequestHead:
    assert out and isinstance(out[0][1], RequestHead), out
    head: RequestHead = out[0][1]
    return head


def rejection(out: Output) -> StreamRejected:
    assert len(out) == 1 and isinstance(out[0][1], StreamRejected), out
    ev: StreamRejected = out[0][1]
    return ev


# -- §4.1 message framing: HEADERS, DATA*, trailers -----------------------------------


def test_get_becomes_a_request_head(pair: ServerPair) -> None:
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.test:8443")]
    fields += [(b":path", b"/p/q?x=1"), (b"accept", b"*/*"), (b"x-trace", b"7")]
    sid, out = pair.request(fields)
    assert out == [
        (
            sid,
            RequestHead(
                b"GET",
                b"https",
                b"a.test:8443",
                b"/p/q?x=1",
                [(b"accept", b"*/*"), (b"x-trace", b"7")],
                True,
                None,
                None,
            ),
        )
    ]
    assert sid == 0 and pair.codec.open_streams() == 1
    assert pair.codec.requests == 1


def test_post_body_arrives_in_pieces_and_ends(pair: ServerPair) -> None:
    body = bytes(range(256)) * 20
    _, out = pair.request([*POST, (b"content-type", b"application/octet-stream")], body)
    head = only_head(out)
    assert (head.method, head.end_stream, head.content_length) == (b"POST", False, None)
    bodies = of_type(out, Body)
    assert b"".join(b.data for b in bodies) == body
    assert [b.end_stream for b in bodies][-1] is True
    assert not any(b.end_stream for b in bodies[:-1])


def test_content_length_moves_to_the_head(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"content-length", b"5")], b"hello")
    head = only_head(out)
    assert head.content_length == 5 and head.headers == []
    assert body_of(out, sid) == b"hello"
    assert out[-1] == (sid, Body(b"hello", True))


def test_zero_content_length_without_data_is_fine(pair: ServerPair) -> None:
    _, out = pair.request([*POST, (b"content-length", b"0")])
    assert only_head(out).content_length == 0
    assert len(out) == 1


def test_trailers_end_the_request(pair: ServerPair) -> None:
    sid, out = pair.request(
        [*POST, (b"te", b"trailers")], b"abc", trailers=[(b"x-checksum", b"99")]
    )
    assert only_head(out).headers == [(b"te", b"trailers")]
    assert body_of(out) == b"abc"
    assert out[-1] == (sid, Trailers([(b"x-checksum", b"99")]))
    assert not any(b.end_stream for b in of_type(out, Body))


def test_trailers_after_a_matching_content_length(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"content-length", b"3")], b"abc", trailers=[(b"x-t", b"1")])
    assert out[-1] == (sid, Trailers([(b"x-t", b"1")]))


def test_fin_after_headers_ends_an_empty_body(pair: ServerPair) -> None:
    """A lone FIN (no DATA frame) ends the request cleanly (§4.1)."""
    sid, out = pair.raw_request(headers_frame(POST), end=False)
    assert only_head(out).end_stream is False
    pair.client.raw(sid, b"", end_stream=True)
    assert pair.pump() == [(sid, Body(b"", True))]


def test_unknown_frame_types_are_ignored(pair: ServerPair) -> None:
    """§7.2.8 / §9: reserved (greased) frame types on a request stream."""
    grease = frame(0x21 + 0x1F * 3, b"ignore me")
    wire = grease + headers_frame(POST) + grease + data_frame(b"ab") + grease + data_frame(b"c")
    sid, out = pair.raw_request(wire + grease)
    assert only_head(out).method == b"POST"
    assert body_of(out, sid) == b"abc"
    assert of_type(out, Body)[-1].end_stream
    assert pair.client.terminated is None


def test_empty_data_frames_are_harmless(pair: ServerPair) -> None:
    sid, out = pair.raw_request(
        headers_frame(POST) + data_frame(b"") + data_frame(b"x") + data_frame(b"")
    )
    assert body_of(out, sid) == b"x"
    assert of_type(out, Body)[-1].end_stream


def test_data_before_headers_is_a_connection_error(pair: ServerPair) -> None:
    """§4.1: an invalid frame sequence is H3_FRAME_UNEXPECTED on the connection."""
    _, out = pair.raw_request(data_frame(b"x") + headers_frame(GET))
    assert out == []
    assert pair.codec.terminated is not None
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == H3_FRAME_UNEXPECTED


def test_concurrent_requests_stay_apart(pair: ServerPair) -> None:
    h3 = pair.client.h3
    sids = []
    for n in range(3):
        sids.append(pair.client.new_stream())
        h3.send_headers(sids[-1], [*POST[:3], (b":path", b"/%d" % n)])
    for n, sid in enumerate(sids):
        h3.send_data(sid, bytes([65 + n]) * 3000, end_stream=True)
    out = pair.pump()
    heads = {sid: ev.path for sid, ev in out if isinstance(ev, RequestHead)}
    assert heads == {0: b"/0", 4: b"/1", 8: b"/2"}
    for n, sid in enumerate(sids):
        assert body_of(out, sid) == bytes([65 + n]) * 3000
    assert pair.codec.open_streams() == 3


# -- §4.1.2 content-length against the DATA frames --------------------------------------


def test_body_shorter_than_content_length_resets_the_stream(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"content-length", b"10")], b"abc")
    assert only_head(out).content_length == 10
    assert out[-1] == (sid, MISMATCH)
    assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert pair.codec.open_streams() == 0


def test_body_longer_than_content_length_resets_the_stream(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"content-length", b"2")], b"abc", end=False)
    assert out[-1] == (sid, MISMATCH)
    assert body_of(out) == b""  # nothing of the excess was handed on
    log = pair.client.streams[sid]
    assert (log.reset, log.stop) == (H3_MESSAGE_ERROR, H3_MESSAGE_ERROR)


def test_trailers_before_the_declared_length_reset_the_stream(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"content-length", b"5")], b"abc", trailers=[(b"x-t", b"1")])
    assert out[-1] == (sid, MISMATCH)
    assert not of_type(out, Trailers)


def test_content_length_with_fin_on_headers_is_malformed(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"content-length", b"4")])
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (0, "content_length_mismatch")
    assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR


def test_late_data_of_a_reset_stream_is_dropped(pair: ServerPair) -> None:
    h3 = pair.client.h3
    sid = pair.client.new_stream()
    h3.send_headers(sid, [*POST, (b"content-length", b"1")])
    h3.send_data(sid, b"ab", end_stream=False)
    assert pair.to_server()[-1] == (sid, MISMATCH)
    # the client has not seen the reset yet: more of the body is in flight
    h3.send_data(sid, b"cd" * 1000, end_stream=True)
    assert pair.pump() == []
    sid2, out = pair.request(GET)
    assert [s for s, _ in out] == [sid2]
    assert pair.client.terminated is None


# -- body cap ----------------------------------------------------------------------------


def test_content_length_over_the_body_cap_is_413(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(max_request_body_bytes=100)
    sid, out = pair.request([*POST, (b"content-length", b"5000")], b"y" * 5000)
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (413, "body_too_large")
    assert pair.codec.open_streams() == 1  # waits for the answer; the body was drained
    pair.codec.send_local_reply(sid, 413)
    pair.pump()
    log = pair.client.streams[sid]
    assert dict(log.headers[0])[b":status"] == b"413"
    assert dict(log.headers[0])[b"content-type"] == b"application/json"
    assert log.data == local_reply_body(413) and json.loads(log.data)["status"] == 413
    assert log.ended and log.reset is None
    assert pair.codec.open_streams() == 0


def test_body_over_the_cap_without_content_length_is_cancelled(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(max_request_body_bytes=4000)
    sid, out = pair.request(POST, b"z" * 6000)
    assert len(body_of(out, sid)) <= 4000
    assert out[-1] == (sid, Reset(CANCEL, Source.DOWNSTREAM, "body_too_large"))
    assert pair.client.streams[sid].reset == H3_REQUEST_CANCELLED
    assert pair.codec.open_streams() == 0


def test_body_exactly_at_the_cap_is_fine(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(max_request_body_bytes=3000)
    sid, out = pair.request(POST, b"z" * 3000)
    assert body_of(out, sid) == b"z" * 3000
    assert not of_type(out, Reset)


# -- §4.2 fields: well-formed but refused -----------------------------------------------------


def test_too_many_fields_is_431(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(max_headers=10)
    fields = [(b"x-h%d" % i, b"v") for i in range(11)]
    sid, out = pair.request([*GET, *fields])
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (431, "header_too_large")
    pair.codec.send_local_reply(sid, 431)
    pair.pump()
    assert dict(pair.client.streams[sid].headers[0])[b":status"] == b"431"


def test_exactly_max_headers_fields_is_fine(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(max_headers=10)
    fields = [(b"x-h%d" % i, b"v") for i in range(10)]
    _, out = pair.request([*GET, *fields])
    assert only_head(out).headers == fields


def test_decoded_field_section_over_the_cap_is_431(make_pair) -> None:  # type: ignore[no-untyped-def]
    """§4.2.2: size is name + value + 32 per field, after QPACK decoding;
    a short QPACK encoding (Huffman) does not hide a large section."""
    pair = make_pair(max_field_section=2000)
    fields = [(b"x-a%d" % i, b"a" * 60) for i in range(30)]  # ~3000 decoded, Huffman-short
    _, out = pair.request([*GET, *fields])
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (431, "header_too_large")


def test_cookie_crumbs_are_joined(pair: ServerPair) -> None:
    """§4.2.1: a cookie field may be split into crumbs for compression."""
    _, out = pair.request([*GET, (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")])
    assert only_head(out).headers == [(b"cookie", b"a=1; b=2"), (b"x", b"y")]


def test_host_stands_in_for_a_missing_authority(pair: ServerPair) -> None:
    fields = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"h.test")]
    _, out = pair.request(fields)
    head = only_head(out)
    assert head.authority == b"h.test" and head.headers == []


def test_authority_and_host_that_differ_are_400(pair: ServerPair) -> None:
    _, out = pair.request([*GET, (b"host", b"other.test")])
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (400, "bad_host")


def test_no_authority_and_no_host_is_400(pair: ServerPair) -> None:
    _, out = pair.request([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")])
    assert rejection(out).error.status == 400


def test_underscore_in_a_name_is_400_by_default(pair: ServerPair) -> None:
    _, out = pair.request([*GET, (b"x_forwarded_for", b"1.2.3.4")])
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (400, "header_underscore")


def test_underscore_policy_drop(make_pair) -> None:  # type: ignore[no-untyped-def]
    pair = make_pair(underscore_policy="drop")
    _, out = pair.request([*GET, (b"x_a", b"1"), (b"x-b", b"2")])
    assert only_head(out).headers == [(b"x-b", b"2")]


def test_plain_connect_is_405(pair: ServerPair) -> None:
    """§4.4: the gateway is not a forward proxy."""
    _, out = pair.request([(b":method", b"CONNECT"), (b":authority", b"origin.test:443")])
    ev = rejection(out)
    assert (ev.error.status, ev.error.reason) == (405, "connect_unsupported")


def test_refused_request_body_is_drained_not_delivered(pair: ServerPair) -> None:
    sid, out = pair.request([*POST, (b"host", b"elsewhere.test")], b"q" * (3 * WINDOW))
    assert rejection(out).error.status == 400
    assert body_of(out) == b""
    # the whole body made it across: nobody consumes it, so credit is not withheld
    assert pair.client.quic._streams[sid].sender.buffer_is_empty
    pair.codec.send_local_reply(sid, 400)
    pair.pump()
    assert dict(pair.client.streams[sid].headers[0])[b":status"] == b"400"
    assert pair.codec.open_streams() == 0


def test_refused_request_with_trailers_still_gets_its_answer(pair: ServerPair) -> None:
    """A request refused with a status (here 400) waits for the shell's
    answer while its body is drained; trailers closing that body end the
    drain, they are no reason to reset the stream (the body was never
    counted against a content-length: there is none)."""
    sid, out = pair.request(
        [*POST, (b"host", b"elsewhere.test")], b"abc", trailers=[(b"x-t", b"1")]
    )
    assert rejection(out).error.status == 400
    seen = pair.client.streams.get(sid)  # nothing reached the client yet, no reset either
    assert seen is None or seen.reset is None
    pair.codec.send_local_reply(sid, 400)
    pair.pump()
    log = pair.client.streams[sid]
    assert dict(log.headers[0])[b":status"] == b"400" and log.ended
    assert pair.codec.open_streams() == 0


# -- responses ----------------------------------------------------------------------------------


def test_response_head_body_and_trailers(pair: ServerPair) -> None:
    sid, _ = pair.request(GET)
    pair.codec.send_response_head(
        sid, ResponseHead(200, [(b"content-type", b"text/plain"), (b"connection", b"close")], False)
    )
    pair.codec.send_body(sid, b"hello ")
    pair.codec.send_body(sid, b"world")
    pair.codec.send_trailers(sid, [(b"x-done", b"1")])
    pair.pump()
    log = pair.client.streams[sid]
    assert log.headers == [
        [(b":status", b"200"), (b"content-type", b"text/plain")],  # connection: dropped
        [(b"x-done", b"1")],
    ]
    assert log.data == b"hello world" and log.ended
    assert pair.codec.open_streams() == 0


def test_response_content_length_is_written(pair: ServerPair) -> None:
    sid, _ = pair.request(GET)
    pair.codec.send_response_head(sid, ResponseHead(200, [], False, 3))
    pair.codec.send_body(sid, b"abc", True)
    pair.pump()
    assert pair.client.streams[sid].headers[0] == [(b":status", b"200"), (b"content-length", b"3")]


def test_204_never_carries_content_length(pair: ServerPair) -> None:
    sid, _ = pair.request(GET)
    pair.codec.send_response_head(sid, ResponseHead(204, [(b"content-length", b"0")], True, 0))
    pair.pump()
    log = pair.client.streams[sid]
    assert log.headers == [[(b":status", b"204")]] and log.ended


def test_informational_before_the_final_response(pair: ServerPair) -> None:
    sid, _ = pair.request(GET)
    pair.codec.send_informational(sid, Informational(103, [(b"link", b"</s.css>; rel=preload")]))
    pair.codec.send_response_head(sid, ResponseHead(200, [], True))
    pair.pump()
    assert pair.client.streams[sid].headers == [
        [(b":status", b"103"), (b"link", b"</s.css>; rel=preload")],
        [(b":status", b"200")],
    ]


def test_complete_response_before_the_request_body_stops_the_upload(pair: ServerPair) -> None:
    """§4.1: the server may answer early and ask the client to stop sending
    with H3_NO_ERROR; what is still in flight is dropped."""
    sid, out = pair.request(POST, b"first", end=False)
    assert body_of(out) == b"first"
    pair.client.h3.send_data(sid, b"in flight", end_stream=False)  # crosses the response
    pair.codec.send_response_head(sid, ResponseHead(200, [], False, 2))
    pair.codec.send_body(sid, b"ok", True)
    out = pair.pump()
    assert out == []
    log = pair.client.streams[sid]
    assert (log.data, log.ended, log.stop, log.reset) == (b"ok", True, H3_NO_ERROR, None)
    assert pair.codec.open_streams() == 0


def test_client_reset_is_reported(pair: ServerPair) -> None:
    sid, _ = pair.request(POST, b"part", end=False)
    pair.client.quic.reset_stream(sid, H3_REQUEST_CANCELLED)
    assert pair.pump() == [(sid, Reset(CANCEL, Source.DOWNSTREAM, "client_reset"))]
    assert pair.codec.open_streams() == 0


def test_client_stop_sending_abandons_the_stream(pair: ServerPair) -> None:
    sid, _ = pair.request(POST, b"part", end=False)
    pair.client.quic.stop_stream(sid, H3_REQUEST_CANCELLED)
    assert pair.pump() == [(sid, Reset(CANCEL, Source.DOWNSTREAM, "client_reset"))]
    log = pair.client.streams[sid]
    assert (log.reset, log.stop) == (H3_REQUEST_CANCELLED, H3_REQUEST_CANCELLED)
    pair.codec.send_body(sid, b"late", True)  # the shell had not seen it yet: ignored
    pair.pump()
    assert pair.client.streams[sid].data == b""


@pytest.mark.parametrize(
    ("code", "wire"),
    [(CANCEL, H3_REQUEST_CANCELLED), (REFUSED_STREAM, H3_REQUEST_REJECTED), (0xB, 0x107)],
)
def test_shell_reset_maps_to_h3_codes(pair: ServerPair, code: int, wire: int) -> None:
    sid, _ = pair.request(POST, b"part", end=False)
    pair.codec.reset_stream(sid, code)
    assert pair.pump() == []
    log = pair.client.streams[sid]
    assert (log.reset, log.stop) == (wire, wire)
    assert pair.codec.open_streams() == 0


def test_shell_reset_mid_response(pair: ServerPair) -> None:
    sid, _ = pair.request(GET)
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    pair.codec.send_body(sid, b"x" * 100)
    pair.pump()
    pair.codec.reset_stream(sid, CANCEL)
    pair.pump()
    log = pair.client.streams[sid]
    assert (log.data, log.ended, log.reset) == (b"x" * 100, False, H3_REQUEST_CANCELLED)
    assert pair.codec.open_streams() == 0


def test_shell_reset_after_a_complete_exchange_is_harmless(pair: ServerPair) -> None:
    sid, _ = pair.request(GET)
    pair.codec.send_response_head(sid, ResponseHead(200, [], True))
    pair.pump()
    pair.codec.reset_stream(sid, CANCEL)
    pair.pump()
    log = pair.client.streams[sid]
    assert (log.ended, log.reset) == (True, None)
    assert pair.client.terminated is None
