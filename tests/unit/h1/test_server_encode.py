"""H1ServerCodec: neutral responses out to the client."""

import json

import pytest

from expressgateway.codec.h1 import H1ServerCodec
from expressgateway.core.errors import ProxyError
from expressgateway.core.events import Informational, ResponseHead
from tests.unit.h1.helpers import request


def codec_for(raw: bytes = b"") -> H1ServerCodec:
    codec = H1ServerCodec()
    codec.feed(raw or request())
    return codec


def test_known_length_response_gets_content_length() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(200, [(b"content-type", b"text/plain")], False, 5),
        request_method=b"GET",
        keep_alive=True,
    )
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
    assert codec.encode_body(b"hel") == b"hel"
    assert not codec.reusable
    assert codec.encode_body(b"lo", True) == b"lo"
    assert codec.reusable and codec.response_keep_alive


def test_unknown_length_response_to_http11_is_chunked() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(200, [], False), request_method=b"GET", keep_alive=True
    )
    assert wire == b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    assert codec.encode_body(b"abc") == b"3\r\nabc\r\n"
    assert codec.encode_body(b"") == b""
    assert codec.encode_body(b"x" * 26, True) == b"1a\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"
    assert codec.reusable


def test_chunked_end_without_data_is_the_last_chunk() -> None:
    codec = codec_for()
    codec.encode_response_head(ResponseHead(200, [], False), request_method=b"GET", keep_alive=True)
    assert codec.encode_body(b"", True) == b"0\r\n\r\n"


def test_unknown_length_response_to_http10_is_close_delimited() -> None:
    codec = codec_for(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    wire = codec.encode_response_head(
        ResponseHead(200, [], False), request_method=b"GET", keep_alive=True
    )
    assert wire == b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
    assert codec.encode_body(b"abc", True) == b"abc"
    assert not codec.response_keep_alive and not codec.reusable


def test_http10_keep_alive_response_says_keep_alive() -> None:
    codec = codec_for(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    wire = codec.encode_response_head(
        ResponseHead(200, [], False, 0), request_method=b"GET", keep_alive=True
    )
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"
    assert codec.reusable


def test_keep_alive_false_writes_connection_close() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(200, [], True), request_method=b"GET", keep_alive=False
    )
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    assert not codec.reusable


def test_client_connection_close_wins_over_keep_alive() -> None:
    codec = codec_for(request(headers=[("Host", "a"), ("Connection", "close")]))
    wire = codec.encode_response_head(
        ResponseHead(204, [], True), request_method=b"GET", keep_alive=True
    )
    assert wire.endswith(b"connection: close\r\n\r\n") and not codec.reusable


def test_response_before_the_request_body_is_read_closes() -> None:
    codec = codec_for(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
    wire = codec.encode_response_head(
        ResponseHead(413, [], True), request_method=b"POST", keep_alive=True
    )
    assert b"connection: close" in wire and not codec.reusable


def test_head_response_keeps_content_length_and_sends_no_body() -> None:
    codec = codec_for(request("HEAD"))
    wire = codec.encode_response_head(
        ResponseHead(200, [], True, 1234), request_method=b"HEAD", keep_alive=True
    )
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"
    assert codec.encode_body(b"ignored", True) == b""
    assert codec.reusable


def test_head_response_of_unknown_length_has_no_framing() -> None:
    codec = codec_for(request("HEAD"))
    wire = codec.encode_response_head(
        ResponseHead(200, [], False), request_method=b"HEAD", keep_alive=True
    )
    assert wire == b"HTTP/1.1 200 OK\r\n\r\n"
    assert codec.reusable


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_framing(status: int) -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(status, [], False, 10), request_method=b"GET", keep_alive=True
    )
    assert b"transfer-encoding" not in wire
    assert (b"content-length" in wire) == (status == 304)
    assert codec.encode_body(b"x" * 10, True) == b""


def test_end_stream_response_gets_content_length_zero() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(404, [], True), request_method=b"GET", keep_alive=True
    )
    assert wire == b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def test_unknown_status_gets_an_empty_reason_phrase() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(599, [], True), request_method=b"GET", keep_alive=True
    )
    assert wire.startswith(b"HTTP/1.1 599 \r\n")


def test_hop_by_hop_and_framing_fields_in_headers_are_not_copied() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(
            200,
            [
                (b"connection", b"close"),
                (b"transfer-encoding", b"chunked"),
                (b"keep-alive", b"timeout=1"),
                (b"upgrade", b"h2c"),
                (b"host", b"x"),
                (b"x-ok", b"1"),
            ],
            False,
            3,
        ),
        request_method=b"GET",
        keep_alive=True,
    )
    assert wire == b"HTTP/1.1 200 OK\r\nx-ok: 1\r\ncontent-length: 3\r\n\r\n"


def test_content_length_header_is_used_when_the_field_is_unknown() -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(200, [(b"content-length", b"7")], False),
        request_method=b"GET",
        keep_alive=True,
    )
    assert wire == b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"


@pytest.mark.parametrize(
    "field",
    [
        (b"x-split", b"a\r\nset-cookie: evil=1"),
        (b"x-lf", b"a\nb"),
        (b"x-cr", b"a\rb"),
        (b"x-nul", b"a\x00b"),
        (b"bad name", b"v"),
        (b"x-split\r\nevil", b"v"),
        (b"Upper", b"v"),
        (b"", b"v"),
    ],
)
def test_fields_that_could_split_the_head_are_dropped_and_counted(
    field: tuple[bytes, bytes],
) -> None:
    codec = codec_for()
    wire = codec.encode_response_head(
        ResponseHead(200, [(b"x-a", b"1"), field, (b"x-b", b"2")], True),
        request_method=b"GET",
        keep_alive=True,
    )
    assert wire == b"HTTP/1.1 200 OK\r\nx-a: 1\r\nx-b: 2\r\ncontent-length: 0\r\n\r\n"
    assert codec.invalid_headers_dropped == 1


def test_body_longer_than_declared_is_an_error() -> None:
    codec = codec_for()
    codec.encode_response_head(
        ResponseHead(200, [], False, 2), request_method=b"GET", keep_alive=True
    )
    with pytest.raises(ProxyError) as exc:
        codec.encode_body(b"abc")
    assert exc.value.reason == "body_length_mismatch"


def test_body_ending_short_of_declared_is_an_error() -> None:
    codec = codec_for()
    codec.encode_response_head(
        ResponseHead(200, [], False, 5), request_method=b"GET", keep_alive=True
    )
    with pytest.raises(ProxyError):
        codec.encode_body(b"abc", True)


def test_trailers_are_sent_when_the_client_sent_te_trailers() -> None:
    codec = codec_for(request(headers=[("Host", "a"), ("TE", "trailers")]))
    codec.encode_response_head(ResponseHead(200, [], False), request_method=b"GET", keep_alive=True)
    wire = codec.encode_trailers(
        [(b"grpc-status", b"0"), (b"content-length", b"9"), (b"x-bad", b"a\nb")]
    )
    assert wire == b"0\r\ngrpc-status: 0\r\n\r\n"
    assert codec.reusable


def test_trailers_are_dropped_without_te_trailers() -> None:
    codec = codec_for()
    codec.encode_response_head(ResponseHead(200, [], False), request_method=b"GET", keep_alive=True)
    assert codec.encode_trailers([(b"grpc-status", b"0")]) == b"0\r\n\r\n"
    assert codec.reusable


def test_trailers_after_a_content_length_body_are_dropped() -> None:
    codec = codec_for(request(headers=[("Host", "a"), ("TE", "trailers")]))
    codec.encode_response_head(
        ResponseHead(200, [], False, 2), request_method=b"GET", keep_alive=True
    )
    codec.encode_body(b"ok")
    assert codec.encode_trailers([(b"x", b"1")]) == b""
    assert codec.reusable


def test_informational_goes_to_http11_clients_only() -> None:
    codec = codec_for(
        request(
            "POST", headers=[("Host", "a"), ("Expect", "100-continue"), ("Content-Length", "1")]
        )
    )
    assert codec.encode_informational(Informational(100, [])) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert (
        codec.encode_informational(Informational(103, [(b"link", b"</s.css>; rel=preload")]))
        == b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n"
    )
    old = codec_for(b"GET / HTTP/1.0\r\n\r\n")
    assert old.encode_informational(Informational(103, [])) == b""


def test_informational_rejects_final_and_101_statuses() -> None:
    codec = codec_for()
    for status in (101, 200):
        with pytest.raises(ProxyError):
            codec.encode_informational(Informational(status, []))


def test_local_reply_has_a_json_body_and_closes_by_default() -> None:
    codec = H1ServerCodec()
    wire = codec.encode_local_reply(431, reason="header_too_large")
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close" % len(body)
    )
    assert json.loads(body) == {"status": 431, "reason": "header_too_large"}
    assert body.endswith(b"\n") and not codec.reusable


def test_local_reply_reason_defaults_to_the_status_phrase() -> None:
    wire = H1ServerCodec().encode_local_reply(404)
    assert wire.endswith(b'{"status":404,"reason":"not_found"}\n')


def test_local_reply_with_a_given_body_and_keep_alive() -> None:
    codec = codec_for()
    wire = codec.encode_local_reply(
        301, b"moved\n", extra_headers=[(b"location", b"/new")], keep_alive=True
    )
    assert wire == (
        b"HTTP/1.1 301 Moved Permanently\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"location: /new\r\ncontent-length: 6\r\n\r\nmoved\n"
    )
    assert codec.reusable


def test_local_reply_to_head_has_no_body() -> None:
    codec = codec_for(request("HEAD"))
    wire = codec.encode_local_reply(503, reason="no_upstream")
    assert wire.endswith(b"\r\n\r\n") and b"content-length: " in wire


def test_local_reply_rejects_informational_statuses() -> None:
    with pytest.raises(ProxyError):
        H1ServerCodec().encode_local_reply(100)
