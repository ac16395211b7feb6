"""RFC 9113 §8 (HTTP semantics in HTTP/2) and RFC 8441, request side: each
rule with a header block crafted by hpack, so the codec sees exactly what
a hostile client would send. Malformed requests are stream errors
(RST_STREAM PROTOCOL_ERROR, §8.1.1) reported as ``StreamRejected`` with
status 0; well-formed requests the gateway refuses carry a status."""

from __future__ import annotations

import pytest

from expressgateway.codec.h2 import H2ServerCodec, StreamRejected
from expressgateway.core.events import PROTOCOL_ERROR, Body, RequestHead, Reset, Source
from tests.unit.h2.helpers import BASIC, RawClient, data, only_head, rst_codes, server

Fields = list[tuple[bytes, bytes]]


def send(fields: Fields, *, end_stream: bool = True, **kw: object) -> tuple[H2ServerCodec, list]:
    codec = server(**kw)
    out = codec.feed(RawClient().headers(1, fields, end_stream=end_stream), 1.0)
    return codec, out


def assert_malformed(fields: Fields, reason: str, **kw: object) -> None:
    codec, out = send(fields, **kw)
    assert len(out) == 1, out
    sid, ev = out[0]
    assert sid == 1 and isinstance(ev, StreamRejected), out
    assert (ev.error.status, ev.error.reason) == (0, reason)
    assert rst_codes(codec.data_to_send()) == {1: PROTOCOL_ERROR}
    assert codec.open_streams == 0


def assert_refused(fields: Fields, status: int, reason: str, **kw: object) -> None:
    codec, out = send(fields, **kw)
    assert len(out) == 1, out
    _, ev = out[0]
    assert isinstance(ev, StreamRejected), out
    assert (ev.error.status, ev.error.reason) == (status, reason)
    assert rst_codes(codec.data_to_send()) == {}  # waits for the answer
    assert codec.open_streams == 1


# -- §8.1.1 malformed messages: content-length ------------------------------------


def test_content_length_larger_than_data_is_a_stream_error() -> None:
    codec, out = send([*BASIC, (b"content-length", b"10")], end_stream=False)
    assert only_head(out).content_length == 10
    out = codec.feed(data(1, b"abc", end_stream=True), 2.0)
    assert out == [(1, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "content_length_mismatch"))]
    assert rst_codes(codec.data_to_send()) == {1: PROTOCOL_ERROR}
    assert codec.open_streams == 0


def test_content_length_smaller_than_data_is_a_stream_error() -> None:
    codec, out = send([*BASIC, (b"content-length", b"2")], end_stream=False)
    out = codec.feed(data(1, b"abc"), 2.0)
    assert out == [(1, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "content_length_mismatch"))]


def test_content_length_with_end_stream_on_headers_is_malformed() -> None:
    assert_malformed([*BASIC, (b"content-length", b"1")], "content_length_mismatch")


def test_content_length_zero_with_end_stream_is_fine() -> None:
    _, out = send([*BASIC, (b"content-length", b"0")])
    assert only_head(out).content_length == 0


def test_content_length_split_over_data_frames_is_fine() -> None:
    codec, out = send([*BASIC, (b"content-length", b"4")], end_stream=False)
    out = codec.feed(data(1, b"ab") + data(1, b"cd", end_stream=True), 2.0)
    assert out == [(1, Body(b"ab", False)), (1, Body(b"cd", True))]


@pytest.mark.parametrize("value", [b"abc", b"-1", b"1 ", b"1,1", b"\xd9\xa1"])
def test_non_numeric_content_length_is_malformed(value: bytes) -> None:
    reason = "bad_header_value" if value.endswith(b" ") else "bad_content_length"
    assert_malformed([*BASIC, (b"content-length", value)], reason)


def test_conflicting_content_lengths_are_malformed() -> None:
    assert_malformed(
        [*BASIC, (b"content-length", b"1"), (b"content-length", b"2")], "bad_content_length"
    )


def test_content_length_over_the_body_cap_is_413() -> None:
    assert_refused(
        [*BASIC, (b"content-length", b"101")],
        413,
        "body_too_large",
        end_stream=False,
        max_request_body_bytes=100,
    )


def test_body_over_the_cap_without_content_length_resets_the_stream() -> None:
    codec, _ = send(BASIC, end_stream=False, max_request_body_bytes=4)
    out = codec.feed(data(1, b"abc") + data(1, b"de"), 2.0)
    assert out == [(1, Body(b"abc", False)), (1, Reset(8, Source.DOWNSTREAM, "body_too_large"))]


# -- §8.2.1 field validity ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b"Upper", b"sp ace", b"colon:in", b"", b"tab\t", b"del\x7f", b"hi\xff", b'quo"te'],
)
def test_invalid_field_names_are_malformed(name: bytes) -> None:
    assert_malformed([*BASIC, (name, b"v")], "bad_header_name")


@pytest.mark.parametrize("value", [b"a\r\nb", b"a\nb", b"a\x00b", b"\rx"])
def test_values_with_cr_lf_nul_are_malformed(value: bytes) -> None:
    assert_malformed([*BASIC, (b"x-a", value)], "bad_header_value")


@pytest.mark.parametrize("value", [b" lead", b"trail ", b"\ttab", b"tab\t", b" "])
def test_values_with_surrounding_whitespace_are_malformed(value: bytes) -> None:
    assert_malformed([*BASIC, (b"x-a", value)], "bad_header_value")


def test_empty_value_and_inner_whitespace_are_fine() -> None:
    _, out = send([*BASIC, (b"x-a", b""), (b"x-b", b"a b\tc")])
    assert only_head(out).headers == [(b"x-a", b""), (b"x-b", b"a b\tc")]


def test_bad_value_in_a_pseudo_header_is_malformed() -> None:
    assert_malformed(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a\nb"), (b":path", b"/")],
        "bad_header_value",
    )


# -- §8.2.2 connection-specific fields ------------------------------------------


@pytest.mark.parametrize(
    "name", [b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"]
)
def test_connection_specific_fields_are_malformed(name: bytes) -> None:
    """The H2 -> H1 downgrade smuggling vectors."""
    assert_malformed([*BASIC, (name, b"chunked")], "connection_specific_header")


@pytest.mark.parametrize("value", [b"gzip", b"trailers, gzip", b"chunked"])
def test_te_other_than_trailers_is_malformed(value: bytes) -> None:
    assert_malformed([*BASIC, (b"te", value)], "bad_te")


def test_te_trailers_survives() -> None:
    _, out = send([*BASIC, (b"te", b"trailers")])
    assert only_head(out).headers == [(b"te", b"trailers")]


# -- §8.3 pseudo-header fields --------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([*BASIC, (b":unknown", b"x")], "bad_pseudo_header"),
        ([(b":unknown", b"x"), *BASIC], "bad_pseudo_header"),
        ([*BASIC[:3], (b":status", b"200"), BASIC[3]], "bad_pseudo_header"),
        ([*BASIC, (b":method", b"GET")], "bad_pseudo_header"),
        ([BASIC[0], BASIC[0], *BASIC[1:]], "bad_pseudo_header"),
        ([*BASIC[:2], BASIC[1], *BASIC[2:]], "bad_pseudo_header"),
        ([*BASIC, BASIC[2]], "bad_pseudo_header"),
        ([*BASIC[:3], (b"x-a", b"1"), BASIC[3]], "bad_pseudo_header"),
        (BASIC[1:], "bad_pseudo_header"),
        ([BASIC[0], *BASIC[2:]], "bad_pseudo_header"),
        (BASIC[:3], "bad_pseudo_header"),
        ([*BASIC[:3], (b":path", b"")], "bad_path"),
        ([*BASIC[:3], (b":path", b"noslash")], "bad_path"),
        ([*BASIC[:3], (b":path", b"*")], "bad_path"),
        ([*BASIC[:3], (b":path", b"/a b")], "bad_path"),
        ([*BASIC[:3], (b":path", b"/\x7f")], "bad_path"),
        ([*BASIC[:3], (b":path", b"/\xc3\xa9")], "bad_path"),
        ([(b":method", b"G ET"), *BASIC[1:]], "bad_method"),
        ([*BASIC[:1], (b":scheme", b"1http"), *BASIC[2:]], "bad_pseudo_header"),
    ],
)
def test_pseudo_header_misuse_is_malformed(fields: Fields, reason: str) -> None:
    assert_malformed(fields, reason)


def test_pseudo_headers_in_trailers_are_malformed() -> None:
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC, end_stream=False), 1.0)
    out = codec.feed(raw.headers(1, [(b":path", b"/x")], end_stream=True), 2.0)
    assert out == [(1, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "bad_pseudo_header"))]
    assert rst_codes(codec.data_to_send()) == {1: PROTOCOL_ERROR}


@pytest.mark.parametrize("name", [b"content-length", b"host", b"transfer-encoding", b"trailer"])
def test_forbidden_trailer_fields_reset_the_stream(name: bytes) -> None:
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC, end_stream=False), 1.0)
    out = codec.feed(raw.headers(1, [(name, b"1")], end_stream=True), 2.0)
    assert out == [(1, Reset(PROTOCOL_ERROR, Source.DOWNSTREAM, "bad_trailer"))]


def test_scheme_other_than_http_is_refused_with_400() -> None:
    assert_refused([BASIC[0], (b":scheme", b"ftp"), *BASIC[2:]], 400, "bad_scheme")


# -- §8.3.1 authority and Host ---------------------------------------------------


def test_authority_and_host_that_disagree_are_400() -> None:
    assert_refused([*BASIC, (b"host", b"other.example")], 400, "bad_host")


def test_repeated_host_is_400() -> None:
    assert_refused(
        [*BASIC[:2], BASIC[3], (b"host", b"a.example"), (b"host", b"a.example")], 400, "bad_host"
    )


def test_missing_authority_and_host_is_400() -> None:
    assert_refused([BASIC[0], BASIC[1], BASIC[3]], 400, "bad_host")


@pytest.mark.parametrize(
    "authority", [b"user@example.com", b"a,b", b"example.com:99999", b"[::1", b"", b"ex ample"]
)
def test_malformed_authority_is_400(authority: bytes) -> None:
    fields = [BASIC[0], BASIC[1], (b":authority", authority), BASIC[3]]
    assert_refused(fields, 400, "bad_host")


def test_malformed_host_is_400() -> None:
    assert_refused([BASIC[0], BASIC[1], BASIC[3], (b"host", b"a/b")], 400, "bad_host")


# -- limits (RFC 9113 §10.5.1) ------------------------------------------------------


def test_more_fields_than_max_headers_is_431() -> None:
    fields = [*BASIC, *((b"x-%d" % i, b"v") for i in range(11))]
    assert_refused(fields, 431, "header_too_large", max_headers=10)


def test_max_headers_exactly_is_fine() -> None:
    _, out = send([*BASIC, *((b"x-%d" % i, b"v") for i in range(10))], max_headers=10)
    assert len(only_head(out).headers) == 10


def test_header_list_over_the_advertised_size_is_431() -> None:
    """Up to twice the advertised size the block is decoded and refused with
    431 (RFC 9113 §10.5.1); beyond that it is an HPACK bomb (test_abuse)."""
    assert_refused(
        [*BASIC, (b"x-big", b"v" * 1500)], 431, "header_too_large", max_header_list_size=1024
    )


# -- underscore policy (as on HTTP/1.1) --------------------------------------------


def test_underscore_reject_is_400() -> None:
    assert_refused([*BASIC, (b"x_forwarded_for", b"1.2.3.4")], 400, "header_underscore")


def test_underscore_drop_drops_the_field() -> None:
    _, out = send([*BASIC, (b"x_a", b"1"), (b"x-b", b"2")], underscore_policy="drop")
    assert only_head(out).headers == [(b"x-b", b"2")]


def test_underscore_allow_keeps_the_field() -> None:
    _, out = send([*BASIC, (b"x_a", b"1")], underscore_policy="allow")
    assert only_head(out).headers == [(b"x_a", b"1")]


def test_unknown_underscore_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        H2ServerCodec(underscore_policy="maybe")  # type: ignore[arg-type]


# -- CONNECT (§8.5) and extended CONNECT (RFC 8441 §4) ------------------------------

CONNECT = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
EXT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/ws"),
]


def test_plain_connect_is_405() -> None:
    assert_refused(CONNECT, 405, "connect_unsupported", end_stream=False)


def test_plain_connect_with_scheme_or_path_is_malformed() -> None:
    assert_malformed([*CONNECT, (b":path", b"/")], "bad_pseudo_header", end_stream=False)


def test_protocol_without_connect_is_malformed() -> None:
    assert_malformed(
        [*BASIC, (b":protocol", b"websocket")],
        "bad_pseudo_header",
        enable_connect_protocol=True,
    )


def test_extended_connect_when_not_enabled_is_malformed() -> None:
    assert_malformed(EXT, "bad_pseudo_header", end_stream=False)


@pytest.mark.parametrize("drop", [b":scheme", b":path"])
def test_extended_connect_needs_scheme_and_path(drop: bytes) -> None:
    assert_malformed(
        [f for f in EXT if f[0] != drop],
        "bad_pseudo_header",
        end_stream=False,
        enable_connect_protocol=True,
    )


def test_unknown_protocol_is_501() -> None:
    fields = [EXT[0], (b":protocol", b"bytestream"), *EXT[2:]]
    assert_refused(
        fields, 501, "unsupported_protocol", end_stream=False, enable_connect_protocol=True
    )


def test_extended_connect_head() -> None:
    _, out = send(EXT, end_stream=False, enable_connect_protocol=True)
    assert out == [
        (1, RequestHead(b"CONNECT", b"https", b"example.com", b"/ws", [], False, b"websocket"))
    ]


# -- malformed requests count as local errors ------------------------------------


def test_malformed_requests_count_against_the_local_error_budget() -> None:
    from tests.unit.h2.helpers import goaway_of

    raw = RawClient()
    codec = server(max_local_error_reset_streams=5)
    from expressgateway.codec.h2 import H2ConnectionError

    with pytest.raises(H2ConnectionError) as info:
        for i in range(10):
            codec.feed(raw.headers(1 + 2 * i, [*BASIC, (b"connection", b"close")]), 1.0)
    assert info.value.reason == "local_error_resets"
    assert goaway_of(codec.data_to_send()).error_code == 0xB
