"""RFC 9114 §4.1.2, §4.2 and §4.3: malformed requests are *stream* errors.

Each request is sent by a real aioquic client (whose own outbound checks
do not stop it) or as raw frames. The codec reports ``StreamRejected``
with status 0, resets the stream with H3_MESSAGE_ERROR (0x10e), which the
client observes as RESET_STREAM, and the connection goes on serving the
next request. Frame-sequence violations, in contrast, are connection
errors (§4.1, §7.2.8)."""

from __future__ import annotations

import pytest

from expressgateway.codec.h2.events import StreamRejected
from expressgateway.core.events import PROTOCOL_ERROR, RequestHead, Reset, Source, Trailers
from tests.unit.h3.helpers import (
    GET,
    H3_FRAME_UNEXPECTED,
    H3_MESSAGE_ERROR,
    POST,
    Fields,
    ServerPair,
    data_frame,
    frame,
    headers_frame,
)

M, S, A, P = (
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"a.test"),
    (b":path", b"/"),
)


def assert_still_serves(pair: ServerPair) -> None:
    sid, out = pair.request(GET)
    assert [(s, type(ev)) for s, ev in out] == [(sid, RequestHead)]
    assert pair.client.terminated is None and pair.codec.terminated is None


def assert_malformed(pair: ServerPair, fields: Fields, reason: str, *, body: bool = False) -> None:
    sid, out = pair.request(fields, b"body" if body else None)
    assert len(out) == 1, out
    ev = out[0][1]
    assert out[0][0] == sid and isinstance(ev, StreamRejected), out
    assert (ev.error.status, ev.error.reason) == (0, reason)
    log = pair.client.streams[sid]
    assert log.reset == H3_MESSAGE_ERROR
    assert log.headers == [] and log.data == b""
    assert pair.codec.open_streams() == 0
    assert_still_serves(pair)


# -- §4.3.1 request pseudo-header fields --------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([M, S, A, P, (b":method", b"POST")], id="repeated-method"),
        pytest.param([M, S, A, P, (b":path", b"/b")], id="repeated-path"),
        pytest.param([M, S, A, P, (b":scheme", b"http")], id="repeated-scheme"),
        pytest.param([M, S, A, (b":authority", b"b.test"), P], id="repeated-authority"),
        pytest.param([S, A, P], id="missing-method"),
        pytest.param([M, A, P], id="missing-scheme"),
        pytest.param([M, S, A], id="missing-path"),
        pytest.param([M, S, A, P, (b":foo", b"x")], id="unknown"),
        pytest.param([M, S, A, P, (b":status", b"200")], id="response-pseudo"),
        pytest.param([M, S, A, P, (b":protocol", b"websocket")], id="protocol-without-connect"),
        pytest.param([M, S, A, (b"x-a", b"1"), P], id="after-a-regular-field"),
        pytest.param([(b":method", b"CONNECT"), A, (b":path", b"/")], id="plain-connect-with-path"),
    ],
)
def test_pseudo_header_violations(pair: ServerPair, fields: Fields) -> None:
    assert_malformed(pair, fields, "bad_pseudo_header")


@pytest.mark.parametrize(
    ("path", "reason"),
    [(b"", "bad_path"), (b"/a b", "bad_path"), (b"a/b", "bad_path"), (b"*", "bad_path")],
)
def test_bad_paths(pair: ServerPair, path: bytes, reason: str) -> None:
    assert_malformed(pair, [M, S, A, (b":path", path)], reason)


def test_asterisk_is_fine_for_options(pair: ServerPair) -> None:
    _, out = pair.request([(b":method", b"OPTIONS"), S, A, (b":path", b"*")])
    assert out[0][1].path == b"*"


def test_method_that_is_not_a_token(pair: ServerPair) -> None:
    assert_malformed(pair, [(b":method", b"GE T"), S, A, P], "bad_method")


def test_trailers_must_not_carry_pseudo_headers(pair: ServerPair) -> None:
    sid, out = pair.request(POST, b"abc", trailers=[(b":status", b"200")])
    assert out[-1] == (sid, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "bad_pseudo_header"))
    assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert_still_serves(pair)


# -- §4.2 field names and values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [b"X-Upper", b"content-Type", b"sp ace", b"col:on", b'quo"te', b"del\x7f"]
)
def test_field_names_must_be_lowercase_tokens(pair: ServerPair, name: bytes) -> None:
    assert_malformed(pair, [*GET, (name, b"v")], "bad_header_name")


@pytest.mark.parametrize("value", [b"a\r\nb", b"a\nx-injected: 1", b"a\x00b", b" lead", b"trail\t"])
def test_field_values_with_cr_lf_nul_or_edge_whitespace(pair: ServerPair, value: bytes) -> None:
    assert_malformed(pair, [*GET, (b"x-a", value)], "bad_header_value")


@pytest.mark.parametrize(
    "name", [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)
def test_connection_specific_fields(pair: ServerPair, name: bytes) -> None:
    assert_malformed(pair, [*GET, (name, b"chunked")], "connection_specific_header")


@pytest.mark.parametrize("value", [b"gzip", b"trailers, deflate", b""])
def test_te_other_than_trailers(pair: ServerPair, value: bytes) -> None:
    assert_malformed(pair, [*GET, (b"te", value)], "bad_te")


def test_te_trailers_is_kept(pair: ServerPair) -> None:
    _, out = pair.request([*GET, (b"te", b"Trailers")])
    assert out[0][1].headers == [(b"te", b"trailers")]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([(b"content-length", b"abc")], id="not-a-number"),
        pytest.param([(b"content-length", b"-1")], id="negative"),
        pytest.param([(b"content-length", b"1"), (b"content-length", b"2")], id="conflicting"),
    ],
)
def test_bad_content_length(pair: ServerPair, fields: Fields) -> None:
    assert_malformed(pair, [*POST, *fields], "bad_content_length", body=True)


def test_malformed_request_with_a_body_stops_the_upload(pair: ServerPair) -> None:
    """The client is also told to stop sending (STOP_SENDING H3_MESSAGE_ERROR)."""
    sid, out = pair.request([*POST, (b"Upper", b"1")], b"x" * 5000, end=False)
    assert isinstance(out[0][1], StreamRejected) and len(out) == 1
    log = pair.client.streams[sid]
    assert (log.reset, log.stop) == (H3_MESSAGE_ERROR, H3_MESSAGE_ERROR)
    assert_still_serves(pair)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (b"content-length", "bad_trailer"),
        (b"host", "bad_trailer"),
        (b"transfer-encoding", "bad_trailer"),
        (b"X-Upper", "bad_header_name"),
    ],
)
def test_forbidden_trailers(pair: ServerPair, name: bytes, reason: str) -> None:
    sid, out = pair.request(POST, b"abc", trailers=[(name, b"3")])
    assert out[-1] == (sid, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, reason))
    assert not [ev for _, ev in out if isinstance(ev, Trailers)]
    assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert_still_serves(pair)


def test_many_malformed_requests_cost_only_their_streams(pair: ServerPair) -> None:
    for _ in range(20):
        sid, out = pair.request([*GET, (b"Bad", b"1")])
        assert isinstance(out[0][1], StreamRejected)
        assert pair.client.streams[sid].reset == H3_MESSAGE_ERROR
    assert_still_serves(pair)


# -- §4.1 / §7.2.8 frame sequences: connection errors ---------------------------------------------


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(
            headers_frame(GET) + headers_frame([(b"x-t", b"1")]) + headers_frame([(b"x", b"y")]),
            id="headers-after-trailers",
        ),
        pytest.param(
            headers_frame(POST) + headers_frame([(b"x-t", b"1")]) + data_frame(b"late"),
            id="data-after-trailers",
        ),
        pytest.param(headers_frame(GET) + frame(0x5, b"\x00" + b"x"), id="push-promise"),
        pytest.param(headers_frame(GET) + frame(0x4, b""), id="settings-on-request-stream"),
        pytest.param(headers_frame(GET) + frame(0x7, b"\x00"), id="goaway-on-request-stream"),
        pytest.param(headers_frame(GET) + frame(0x8, b"\x00\x00\x00\x01"), id="h2-window-update"),
    ],
)
def test_invalid_frame_sequences_close_the_connection(pair: ServerPair, wire: bytes) -> None:
    pair.raw_request(wire)
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == H3_FRAME_UNEXPECTED
    assert pair.codec.terminated is not None


# -- §6.2 unidirectional streams ---------------------------------------------------------------


def uni(pair: ServerPair, payload: bytes, *, end: bool = False) -> None:
    sid = pair.client.quic.get_next_available_stream_id(is_unidirectional=True)
    pair.client.raw(sid, payload, end)
    pair.pump()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(b"\x00" + frame(0x4, b""), 0x103, id="second-control-stream"),
        pytest.param(b"\x01\x00", 0x103, id="push-stream-from-a-client"),
        pytest.param(b"\x02", 0x103, id="second-qpack-encoder-stream"),
    ],
)
def test_forbidden_unidirectional_streams(pair: ServerPair, payload: bytes, code: int) -> None:
    uni(pair, payload)
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == code  # H3_STREAM_CREATION_ERROR


def test_closing_the_control_stream_is_a_connection_error(pair: ServerPair) -> None:
    control = pair.client.h3._local_control_stream_id
    pair.client.raw(control, b"", end_stream=True)  # type: ignore[arg-type]
    pair.pump()
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == 0x104  # H3_CLOSED_CRITICAL_STREAM


def test_second_settings_is_a_connection_error(pair: ServerPair) -> None:
    control = pair.client.h3._local_control_stream_id
    pair.client.raw(control, frame(0x4, b""))  # type: ignore[arg-type]
    pair.pump()
    assert pair.client.terminated is not None
    assert pair.client.terminated.error_code == H3_FRAME_UNEXPECTED


def test_unknown_unidirectional_stream_types_are_ignored(pair: ServerPair) -> None:
    uni(pair, b"\x40\x21" + b"grease" * 100, end=True)  # type 0x21 (reserved)
    assert pair.client.terminated is None
    assert_still_serves(pair)
