"""H3ClientCodec (toward an ``h3`` backend) against a real aioquic server:
neutral request heads out as HEADERS/DATA, responses in as ``ResponseHead``
/ ``Body`` / ``Trailers`` / ``Informational``; a malformed response or one
whose body does not match its ``content-length`` is a ``Reset`` (the bridge
answers 502) and the stream is reset with H3_MESSAGE_ERROR; a response to
HEAD may declare a length it does not carry."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aioquic.h3.exceptions import NoAvailablePushIDError

from expressgateway.codec.h2.events import StreamRejected
from expressgateway.core.errors import Retry, UpstreamError
from expressgateway.core.events import (
    CANCEL,
    PROTOCOL_ERROR,
    Body,
    Informational,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
    Trailers,
)
from tests.unit.h3.helpers import (
    H3_MESSAGE_ERROR,
    H3_NO_ERROR,
    H3_REQUEST_CANCELLED,
    WINDOW,
    Cert,
    ClientPair,
    CodecPair,
    Fields,
    body_of,
    data_frame,
    headers_frame,
    of_type,
)

GET = RequestHead(b"GET", b"https", b"example.com", b"/a?b=1", [(b"accept", b"*/*")], True)
HEAD = RequestHead(b"HEAD", b"https", b"example.com", b"/", [], True)
POST = RequestHead(b"POST", b"https", b"example.com", b"/up", [], False)
OK = [(b":status", b"200")]
MISMATCH = Reset(PROTOCOL_ERROR, Source.UPSTREAM, "content_length_mismatch")


def request(pair: ClientPair, head: RequestHead = GET) -> int:
    sid = pair.codec.send_request(head)
    pair.pump()
    return sid


def malformed(reason: str) -> Reset:
    return Reset(PROTOCOL_ERROR, Source.UPSTREAM, reason)


# -- requests out ------------------------------------------------------------------------


def test_request_head_becomes_pseudo_headers_then_fields(client_pair: ClientPair) -> None:
    head = RequestHead(
        b"POST",
        b"https",
        b"api.test",
        b"/up?x=1",
        [
            (b"accept", b"*/*"),
            (b"connection", b"keep-alive"),
            (b"te", b"trailers"),
            (b"host", b"api.test"),
            (b"X-Mixed", b"v"),
        ],
        False,
        None,
        3,
    )
    sid = client_pair.codec.send_request(head)
    client_pair.codec.send_body(sid, b"abc", True)
    client_pair.pump()
    log = client_pair.server.streams[sid]
    assert log.headers == [
        [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"api.test"),
            (b":path", b"/up?x=1"),
            (b"accept", b"*/*"),
            (b"te", b"trailers"),
            (b"x-mixed", b"v"),
            (b"content-length", b"3"),
        ]
    ]
    assert (log.data, log.ended) == (b"abc", True)


def test_request_body_and_trailers(client_pair: ClientPair) -> None:
    sid = client_pair.codec.send_request(POST)
    client_pair.codec.send_body(sid, b"part1-")
    client_pair.codec.send_body(sid, b"part2")
    client_pair.codec.send_trailers(sid, [(b"x-sum", b"1")])
    client_pair.pump()
    log = client_pair.server.streams[sid]
    assert log.data == b"part1-part2" and log.ended
    assert log.headers[-1] == [(b"x-sum", b"1")]


def test_stream_ids_and_capacity(make_client_pair: Callable[..., ClientPair]) -> None:
    pair = make_client_pair(max_streams=2)
    assert [pair.codec.send_request(GET) for _ in range(2)] == [0, 4]
    assert not pair.codec.can_open_stream()
    with pytest.raises(UpstreamError) as err:
        pair.codec.send_request(GET)
    assert err.value.retry is Retry.YES
    pair.pump()
    pair.respond(0, OK)
    assert pair.codec.can_open_stream()
    assert pair.codec.send_request(GET) == 8


# -- responses in -----------------------------------------------------------------------


def test_response_head_body_and_trailers(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(
        sid,
        [*OK, (b"content-type", b"text/plain"), (b"content-length", b"5")],
        b"hello",
        trailers=[(b"x-checksum", b"1")],
    )
    assert out[0] == (sid, ResponseHead(200, [(b"content-type", b"text/plain")], False, 5))
    assert body_of(out) == b"hello"
    assert out[-1] == (sid, Trailers([(b"x-checksum", b"1")]))
    assert client_pair.codec.open_streams() == 0


def test_response_without_content_length_ends_with_fin(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, OK, b"x" * 3000)
    assert out[0] == (sid, ResponseHead(200, [], False, None))
    assert body_of(out) == b"x" * 3000
    assert of_type(out, Body)[-1].end_stream


def test_response_with_headers_only(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    assert client_pair.respond(sid, [(b":status", b"404")]) == [
        (sid, ResponseHead(404, [], True, None))
    ]


@pytest.mark.parametrize("status", [100, 103])
def test_informational_responses(client_pair: ClientPair, status: int) -> None:
    sid = request(client_pair)
    server = client_pair.server.h3
    server.send_headers(sid, [(b":status", b"%d" % status), (b"link", b"</a>; rel=preload")])
    out = client_pair.respond(sid, OK, b"z")
    assert out == [
        (sid, Informational(status, [(b"link", b"</a>; rel=preload")])),
        (sid, ResponseHead(200, [], False, None)),
        (sid, Body(b"z", True)),
    ]


def test_head_response_may_declare_a_length_without_a_body(client_pair: ClientPair) -> None:
    sid = request(client_pair, HEAD)
    out = client_pair.respond(sid, [*OK, (b"content-length", b"1234")])
    assert out == [(sid, ResponseHead(200, [], True, 1234))]
    assert client_pair.codec.open_streams() == 0


def test_head_response_ended_by_a_lone_fin(client_pair: ClientPair) -> None:
    sid = request(client_pair, HEAD)
    client_pair.server.raw(sid, headers_frame([*OK, (b"content-length", b"99")]))
    client_pair.pump()
    client_pair.server.raw(sid, b"", end_stream=True)
    out = client_pair.pump()
    assert client_pair.out[-2:] == [
        (sid, ResponseHead(200, [], False, 99)),
        (sid, Body(b"", True)),
    ], out


def test_head_response_with_a_body_is_a_mismatch(client_pair: ClientPair) -> None:
    sid = request(client_pair, HEAD)
    out = client_pair.respond(sid, [*OK, (b"content-length", b"4")], b"oops")
    assert out[-1] == (sid, MISMATCH)


@pytest.mark.parametrize("status", [b"204", b"304"])
def test_no_content_statuses_ignore_content_length(client_pair: ClientPair, status: bytes) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, [(b":status", status), (b"content-length", b"10")])
    assert out == [(sid, ResponseHead(int(status), [], True, 10))]


# -- content-length ----------------------------------------------------------------------------


def test_body_shorter_than_content_length(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, [*OK, (b"content-length", b"10")], b"short")
    assert out[0] == (sid, ResponseHead(200, [], False, 10))
    assert out[-1] == (sid, MISMATCH)
    assert not any(ev.end_stream for ev in of_type(out, Body))
    assert client_pair.codec.open_streams() == 0


def test_body_longer_than_content_length(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, [*OK, (b"content-length", b"2")], b"toolong", end=False)
    assert out[-1] == (sid, MISMATCH)
    assert body_of(out) == b""
    assert client_pair.server.streams[sid].stop == H3_MESSAGE_ERROR


def test_headers_ending_the_stream_with_a_nonzero_content_length(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, [*OK, (b"content-length", b"3")])
    assert out == [(sid, MISMATCH)]


def test_trailers_before_the_declared_length(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(
        sid, [*OK, (b"content-length", b"9")], b"abc", trailers=[(b"x-t", b"1")]
    )
    assert out[-1] == (sid, MISMATCH)
    assert not of_type(out, Trailers)


# -- malformed responses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param([(b"content-type", b"x")], "bad_pseudo_header", id="missing-status"),
        pytest.param([(b":status", b"2xx")], "bad_status", id="status-not-a-number"),
        pytest.param([(b":status", b"099")], "bad_status", id="status-under-100"),
        pytest.param([*OK, (b":path", b"/")], "bad_pseudo_header", id="request-pseudo"),
        pytest.param([*OK, (b"Content-Type", b"x")], "bad_header_name", id="uppercase"),
        pytest.param(
            [*OK, (b"transfer-encoding", b"chunked")], "connection_specific_header", id="te-chunked"
        ),
        pytest.param([*OK, (b"connection", b"close")], "connection_specific_header", id="conn"),
        pytest.param([*OK, (b"x-a", b"a\r\nb")], "bad_header_value", id="crlf"),
        pytest.param([*OK, (b"content-length", b"x")], "bad_content_length", id="bad-cl"),
    ],
)
def test_malformed_response_resets_the_stream(
    client_pair: ClientPair, fields: Fields, reason: str
) -> None:
    sid = request(client_pair)
    client_pair.server.raw(sid, headers_frame(fields) + data_frame(b"body"), end_stream=True)
    out = client_pair.pump()
    assert out == [(sid, malformed(reason))]
    assert client_pair.codec.open_streams() == 0
    assert client_pair.codec.terminated is None
    # the connection goes on
    sid2 = request(client_pair)
    assert client_pair.respond(sid2, OK) == [(sid2, ResponseHead(200, [], True, None))]


def test_101_is_not_allowed_in_http3(client_pair: ClientPair) -> None:
    """RFC 9114 §4.5: no Upgrade, so no 101 (it is a 1xx to aioquic: sent
    alone, without DATA after it)."""
    sid = request(client_pair)
    client_pair.server.raw(sid, headers_frame([(b":status", b"101"), (b"upgrade", b"x")]))
    assert client_pair.pump() == [(sid, malformed("bad_status"))]
    assert client_pair.codec.terminated is None


def test_malformed_response_stops_the_backend(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, [(b":status", b"abc")], b"x" * 2000, end=False)
    assert out == [(sid, malformed("bad_status"))]
    assert client_pair.server.streams[sid].stop == H3_MESSAGE_ERROR


def test_malformed_trailers(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    out = client_pair.respond(sid, OK, b"abc", trailers=[(b":status", b"200")])
    assert out[-1] == (sid, malformed("bad_pseudo_header"))
    assert not of_type(out, Trailers)


def test_interim_response_ending_the_stream_is_malformed(client_pair: ClientPair) -> None:
    """RFC 9114 §4.1: a final response must follow the interim ones."""
    sid = request(client_pair)
    client_pair.server.raw(sid, headers_frame([(b":status", b"103")]), end_stream=True)
    assert client_pair.pump() == [(sid, malformed("h3_message_error"))]
    assert client_pair.codec.terminated is None


def test_data_after_an_interim_response_is_a_connection_error(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    client_pair.server.raw(sid, headers_frame([(b":status", b"100")]) + data_frame(b"x"))
    client_pair.pump()
    assert client_pair.codec.terminated is not None


def test_oversize_response_field_section(make_client_pair: Callable[..., ClientPair]) -> None:
    pair = make_client_pair(max_field_section=1000)
    sid = request(pair)
    value = bytes(range(0x21, 0x7F)) * 25  # ~2350 octets, Huffman cannot shrink much
    out = pair.respond(sid, [*OK, (b"x-big", value)], b"body")
    assert out == [(sid, malformed("header_too_large"))]
    assert pair.codec.terminated is None


def test_too_many_response_fields(make_client_pair: Callable[..., ClientPair]) -> None:
    pair = make_client_pair(max_headers=5)
    sid = request(pair)
    out = pair.respond(sid, [*OK, *[(b"x-%d" % i, b"v") for i in range(6)]])
    assert out == [(sid, malformed("header_too_large"))]


def test_client_settings_offer_no_dynamic_table(
    make_client_pair: Callable[..., ClientPair],
) -> None:
    pair = make_client_pair(max_field_section=4321)
    settings = pair.server.control.settings()
    assert (settings[0x1], settings[0x7], settings[0x6]) == (0, 0, 4321)


# -- resets and early responses ------------------------------------------------------------------


def test_backend_reset_is_reported(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    client_pair.server.quic.reset_stream(sid, H3_REQUEST_CANCELLED)
    assert client_pair.pump() == [(sid, Reset(CANCEL, Source.UPSTREAM, "upstream_reset"))]


def test_request_done_cancels_the_rest_of_the_upload(client_pair: ClientPair) -> None:
    sid = client_pair.codec.send_request(POST)
    client_pair.codec.send_body(sid, b"partial")
    client_pair.pump()
    out = client_pair.respond(sid, [(b":status", b"200")])
    assert out == [(sid, ResponseHead(200, [], True, None))]
    client_pair.codec.request_done(sid)
    client_pair.pump()
    assert client_pair.server.streams[sid].reset == H3_REQUEST_CANCELLED
    assert client_pair.codec.open_streams() == 0
    assert client_pair.codec.send_body(sid, b"more", True) == 4  # dropped


def test_stop_sending_no_error_after_a_complete_response_is_not_a_failure(
    client_pair: ClientPair,
) -> None:
    """RFC 9114 §4.1: a server may send a complete response before the whole
    request arrived and stop the rest of the upload with H3_NO_ERROR;
    "clients MUST NOT discard complete responses as a result of having their
    requests terminated abruptly". (aioquic puts the STOP_SENDING frame
    before the STREAM frame in the packet, as the gateway's own server
    codec does.)"""
    sid = client_pair.codec.send_request(POST)
    client_pair.codec.send_body(sid, b"first")
    client_pair.pump()
    client_pair.server.h3.send_headers(sid, [(b":status", b"413")], end_stream=True)
    client_pair.server.quic.stop_stream(sid, H3_NO_ERROR)
    out = client_pair.pump()
    assert out == [(sid, ResponseHead(413, [], True, None))]
    assert client_pair.codec.open_streams() == 0
    assert client_pair.codec.send_body(sid, b"rest", True) == 4  # dropped


def test_gateway_to_gateway_early_413_reaches_the_client(h3_cert: Cert) -> None:
    """The backend is an H3ServerCodec refusing an upload by its
    content-length: its 413 (sent with STOP_SENDING H3_NO_ERROR) must reach
    the client codec as a response, not as a reset."""
    pair = CodecPair(h3_cert, max_request_body_bytes=100)
    sid = pair.client.send_request(
        RequestHead(b"POST", b"https", b"example.com", b"/up", [], False, None, 5000)
    )
    pair.client.send_body(sid, b"u" * 1000)
    pair.pump()
    assert [type(ev) for _, ev in pair.server_out] == [StreamRejected]
    pair.server.send_local_reply(sid, 413)
    out = pair.pump()
    assert [type(ev) for _, ev in out] == [ResponseHead, Body], out
    assert out[0][1].status == 413


# -- credit for response bodies ----------------------------------------------------------------


def test_response_body_is_held_to_one_window_until_acked(client_pair: ClientPair) -> None:
    sid = request(client_pair)
    big = b"r" * (6 * WINDOW)
    out = client_pair.respond(sid, OK, big)
    got = len(body_of(out))
    assert WINDOW - 100 < got <= WINDOW
    total = got
    for _ in range(20):
        client_pair.codec.ack_data(sid, got)
        got = len(body_of(client_pair.pump()))
        total += got
        if total == len(big):
            break
    assert body_of(client_pair.out) == big
    assert of_type(client_pair.out, Body)[-1].end_stream


# -- server push (RFC 9114 §4.6) -----------------------------------------------------------------


def test_push_is_not_invited(client_pair: ClientPair) -> None:
    """The gateway never uses pushed responses (the HTTP/2 client codec sends
    SETTINGS_ENABLE_PUSH = 0); in HTTP/3 push is off as long as the client
    sends no MAX_PUSH_ID (§4.6, §7.2.7), but aioquic's H3Connection sends
    MAX_PUSH_ID 8 by default, inviting the backend to spend the
    connection's bandwidth on responses that are dropped."""
    frames = client_pair.server.control.frames
    assert [ftype for ftype, _ in frames if ftype == 0xD] == []  # MAX_PUSH_ID


def test_the_backend_cannot_push_since_no_push_id_was_granted(client_pair: ClientPair) -> None:
    """No MAX_PUSH_ID from the gateway (RFC 9114 §4.6): the backend has no
    push id to promise with, and the real response still arrives."""
    sid = request(client_pair)
    server = client_pair.server.h3
    with pytest.raises(NoAvailablePushIDError):
        server.send_push_promise(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"example.com"),
                (b":path", b"/p"),
            ],
        )
    out = client_pair.respond(sid, OK, b"real")
    assert out == [(sid, ResponseHead(200, [], False, None)), (sid, Body(b"real", True))]
    assert client_pair.codec.terminated is None
