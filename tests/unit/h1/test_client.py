"""H1ClientCodec: neutral requests out to the backend, responses back in."""

import pytest

from expressgateway.codec.h1 import H1ClientCodec
from expressgateway.core.errors import ProxyError, Retry, UpstreamError
from expressgateway.core.events import (
    Body,
    Informational,
    RequestHead,
    ResponseHead,
    Trailers,
    TunnelData,
)
from tests.unit.h1.helpers import bytewise, coalesce, feed_all


def get(path: bytes = b"/", headers: list | None = None, method: bytes = b"GET") -> RequestHead:
    return RequestHead(method, b"http", b"example.com", path, headers or [], True)


def started(method: bytes = b"GET") -> H1ClientCodec:
    codec = H1ClientCodec()
    codec.encode_request_head(get(method=method))
    return codec


# -- encoding ------------------------------------------------------------------


def test_get_is_encoded_with_host_from_authority() -> None:
    wire = H1ClientCodec().encode_request_head(get(b"/a?b=1", [(b"accept", b"*/*")]))
    assert wire == b"GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\n\r\n"


def test_extra_headers_follow_the_request_headers() -> None:
    wire = H1ClientCodec().encode_request_head(
        get(headers=[(b"accept", b"*/*")]), extra_headers=[(b"x-forwarded-for", b"10.0.0.1")]
    )
    assert wire.endswith(b"accept: */*\r\nx-forwarded-for: 10.0.0.1\r\n\r\n")


def test_known_length_body_gets_content_length() -> None:
    codec = H1ClientCodec()
    wire = codec.encode_request_head(RequestHead(b"POST", b"http", b"a", b"/", [], False, None, 3))
    assert wire == b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\n"
    assert codec.encode_body(b"abc", True) == b"abc"


def test_unknown_length_body_is_chunked_and_may_carry_trailers() -> None:
    codec = H1ClientCodec()
    wire = codec.encode_request_head(RequestHead(b"POST", b"http", b"a", b"/", [], False))
    assert wire == b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    assert codec.encode_body(b"abc") == b"3\r\nabc\r\n"
    assert codec.encode_trailers([(b"x-sum", b"1"), (b"host", b"evil")]) == b"0\r\nx-sum: 1\r\n\r\n"


def test_bodiless_post_gets_content_length_zero_but_get_does_not() -> None:
    assert b"content-length: 0" in H1ClientCodec().encode_request_head(get(method=b"POST"))
    assert b"content-length" not in H1ClientCodec().encode_request_head(get(method=b"GET"))


def test_te_trailers_is_kept_with_connection_te() -> None:
    wire = H1ClientCodec().encode_request_head(get(headers=[(b"te", b"trailers"), (b"x", b"1")]))
    assert (
        wire
        == b"GET / HTTP/1.1\r\nhost: example.com\r\nx: 1\r\nte: trailers\r\nconnection: te\r\n\r\n"
    )


def test_hop_by_hop_fields_are_never_copied_to_the_backend() -> None:
    wire = H1ClientCodec().encode_request_head(
        get(
            headers=[
                (b"connection", b"close"),
                (b"transfer-encoding", b"chunked"),
                (b"host", b"evil"),
                (b"upgrade", b"x"),
            ]
        )
    )
    assert wire == b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n"


def test_cookie_crumbs_from_h2_are_joined_into_one_field() -> None:
    wire = H1ClientCodec().encode_request_head(
        get(headers=[(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")])
    )
    assert wire == b"GET / HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\ncookie: a=1; b=2\r\n\r\n"


def test_websocket_request_becomes_get_with_upgrade_fields() -> None:
    head = RequestHead(
        b"CONNECT",
        b"https",
        b"a",
        b"/chat",
        [(b"sec-websocket-version", b"13")],
        False,
        b"websocket",
    )
    wire = H1ClientCodec().encode_request_head(head)
    assert wire == (
        b"GET /chat HTTP/1.1\r\nhost: a\r\nsec-websocket-version: 13\r\n"
        b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )


@pytest.mark.parametrize(
    "head",
    [
        RequestHead(b"GET", b"http", b"a", b"/x HTTP/1.1\r\nHost: evil", [], True),
        RequestHead(b"GET", b"http", b"a", b"/a b", [], True),
        RequestHead(b"G T", b"http", b"a", b"/", [], True),
        RequestHead(b"GET", b"http", b"a, b", b"/", [], True),
        RequestHead(b"GET", b"http", b"a\r\nx: y", b"/", [], True),
        RequestHead(b"CONNECT", b"http", b"a:443", b"", [], False),
        RequestHead(b"CONNECT", b"http", b"a", b"/", [], False, b"connect-udp"),
    ],
    ids=[
        "crlf_path",
        "space_path",
        "bad_method",
        "comma_authority",
        "crlf_authority",
        "connect",
        "other_protocol",
    ],
)
def test_requests_that_cannot_be_written_safely_are_refused(head: RequestHead) -> None:
    with pytest.raises(ProxyError):
        H1ClientCodec().encode_request_head(head)


def test_invalid_field_values_are_dropped_and_counted() -> None:
    codec = H1ClientCodec()
    wire = codec.encode_request_head(get(headers=[(b"x", b"a\r\nb"), (b"y", b"1")]))
    assert wire == b"GET / HTTP/1.1\r\nhost: example.com\r\ny: 1\r\n\r\n"
    assert codec.invalid_headers_dropped == 1


def test_a_new_exchange_needs_a_reusable_connection() -> None:
    codec = started()
    with pytest.raises(ProxyError):
        codec.encode_request_head(get())


# -- decoding ----------------------------------------------------------------------


def test_response_with_content_length() -> None:
    codec = started()
    events = codec.feed(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert events == [
        ResponseHead(200, [(b"content-type", b"text/plain")], False, 5),
        Body(b"hello", True),
    ]
    assert codec.reusable and codec.response_complete


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
def test_content_length_is_found_whatever_its_case(name: bytes) -> None:
    codec = started()
    events = codec.feed(b"HTTP/1.1 200 OK\r\n" + name + b": 2\r\n\r\nok")
    assert events == [ResponseHead(200, [], False, 2), Body(b"ok", True)]


def test_response_field_count_includes_content_length() -> None:
    codec = H1ClientCodec(max_headers=2)
    codec.encode_request_head(get())
    with pytest.raises(UpstreamError):
        codec.feed(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n")


def test_response_hop_by_hop_and_connection_named_fields_are_stripped() -> None:
    codec = started()
    events = codec.feed(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n"
        b"Proxy-Authenticate: Basic\r\nX-End: 2 \r\nContent-Length: 0\r\n\r\n"
    )
    assert events == [ResponseHead(200, [(b"x-end", b"2")], True, 0)]


def test_response_split_byte_by_byte_gives_the_same_events() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n"
        b"4\r\nwiki\r\n5\r\npedia\r\n0\r\nGrpc-Status: 0\r\n\r\n"
    )
    whole = started()
    slow = started()
    assert coalesce(whole.feed(raw)) == coalesce(feed_all(slow, bytewise(raw)))
    assert whole.reusable and slow.reusable


def test_chunked_response_with_trailers() -> None:
    codec = started()
    events = codec.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
        b"Grpc-Status: 0\r\nHost: evil\r\nConnection: close\r\n\r\n"
    )
    assert events == [
        ResponseHead(200, [], False, None),
        Body(b"abc"),
        Trailers([(b"grpc-status", b"0")]),
    ]
    assert codec.response_complete and not codec.reusable  # forbidden trailers: distrust


def test_chunked_response_with_clean_trailers_is_reusable() -> None:
    codec = started()
    events = codec.feed(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Sum: 1\r\n\r\n"
    )
    assert events[-1] == Trailers([(b"x-sum", b"1")]) and codec.reusable


def test_chunked_response_without_trailers_ends_with_empty_body() -> None:
    codec = started()
    events = codec.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert events[-1] == Body(b"", True)


def test_informational_responses_come_before_the_final_one() -> None:
    codec = started()
    events = codec.feed(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    assert events == [
        Informational(100, []),
        Informational(103, [(b"link", b"</a>")]),
        ResponseHead(204, [], True, None),
    ]
    assert codec.reusable


def test_too_many_informational_responses_are_refused() -> None:
    codec = started()
    with pytest.raises(UpstreamError):
        codec.feed(b"HTTP/1.1 100 Continue\r\n\r\n" * 40)


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    codec = started()
    events = codec.feed(b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status)
    assert len(events) == 1 and events[0].end_stream  # type: ignore[union-attr]
    assert codec.reusable


def test_head_response_has_no_body_even_with_content_length() -> None:
    codec = started(b"HEAD")
    events = codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert events == [ResponseHead(200, [], True, 1234)]
    assert codec.reusable
    # the connection can carry the next exchange: a fresh parser reads it
    codec.encode_request_head(get())
    assert codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")[-1] == Body(b"ok", True)
    assert codec.reusable


def test_head_response_with_chunked_framing_has_no_body() -> None:
    codec = started(b"HEAD")
    events = codec.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert events == [ResponseHead(200, [], True, None)] and codec.reusable


def test_bytes_after_a_head_response_are_never_forwarded() -> None:
    codec = started(b"HEAD")
    events = codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
    assert events == [ResponseHead(200, [], True, 4)]
    assert not codec.reusable
    assert codec.feed(b"more") == []


def test_close_delimited_body_ends_cleanly_on_eof() -> None:
    codec = started()
    events = codec.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert events == [ResponseHead(200, [], False, None), Body(b"abc")]
    assert codec.feed(b"def") == [Body(b"def")]
    assert codec.feed_eof() == [Body(b"", True)]
    assert codec.response_complete and not codec.reusable


def test_http10_response_without_length_is_close_delimited() -> None:
    codec = started()
    codec.feed(b"HTTP/1.0 200 OK\r\n\r\nabc")
    assert codec.feed_eof() == [Body(b"", True)]


def test_eof_in_a_content_length_body_is_truncation_never_a_clean_end() -> None:
    codec = started()
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(UpstreamError) as exc:
        codec.feed_eof()
    assert exc.value.reason == "upstream_truncated" and exc.value.retry is Retry.NO


def test_eof_in_a_chunked_body_is_truncation() -> None:
    codec = started()
    codec.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
    with pytest.raises(UpstreamError) as exc:
        codec.feed_eof()
    assert exc.value.reason == "upstream_truncated"


def test_eof_in_the_head_is_truncation() -> None:
    codec = started()
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-")
    with pytest.raises(UpstreamError) as exc:
        codec.feed_eof()
    assert exc.value.reason == "upstream_truncated"


def test_response_started_tracks_the_first_response_byte() -> None:
    codec = started()
    assert not codec.response_started
    codec.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert codec.response_started
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert codec.response_started and codec.reusable
    codec.encode_request_head(get())
    assert not codec.response_started


def test_eof_before_any_response_byte_is_retryable_on_a_reused_connection() -> None:
    codec = started()
    with pytest.raises(UpstreamError) as exc:
        codec.feed_eof()
    assert exc.value.reason == "upstream_closed" and exc.value.retry is Retry.IF_REUSED


def test_eof_after_a_complete_response_is_quiet() -> None:
    codec = started()
    codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert codec.feed_eof() == [] and not codec.reusable
    assert H1ClientCodec().feed_eof() == []


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=[
        "cl_te",
        "dup_cl",
        "obs_fold",
        "bare_lf",
        "status_4_digits",
        "status_600",
        "status_099",
        "not_http",
        "te_gzip",
        "te_gzip_chunked",
        "bad_chunk",
        "unasked_101",
    ],
)
def test_malformed_responses_are_502_bad_response(raw: bytes) -> None:
    codec = started()
    with pytest.raises(UpstreamError) as exc:
        codec.feed(raw)
    assert exc.value.status == 502 and exc.value.reason == "bad_response"
    with pytest.raises(UpstreamError):
        codec.feed(b"x")


def test_response_header_caps_are_502() -> None:
    codec = H1ClientCodec(max_headers=3)
    codec.encode_request_head(get())
    with pytest.raises(UpstreamError) as exc:
        codec.feed(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
    assert (exc.value.status, exc.value.reason) == (502, "header_too_large")
    codec = H1ClientCodec(max_header_bytes=1024)
    codec.encode_request_head(get())
    with pytest.raises(UpstreamError) as exc:
        codec.feed(b"HTTP/1.1 200 OK\r\nA: " + b"v" * 2000 + b"\r\n\r\n")
    assert exc.value.reason == "header_too_large"


def test_slowly_fed_response_head_is_capped() -> None:
    codec = H1ClientCodec(max_header_bytes=1024)
    codec.encode_request_head(get())
    codec.feed(b"HTTP/1.1 200 OK\r\nA: ")
    with pytest.raises(UpstreamError):
        for _ in range(100):
            codec.feed(b"v" * 100)


def test_response_body_cap() -> None:
    codec = H1ClientCodec(max_response_body_bytes=4)
    codec.encode_request_head(get())
    with pytest.raises(UpstreamError) as exc:
        codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert exc.value.reason == "body_too_large"
    codec = H1ClientCodec(max_response_body_bytes=4)
    codec.encode_request_head(get())
    codec.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    with pytest.raises(UpstreamError):
        codec.feed(b"3\r\ndef\r\n")


def test_connection_close_response_is_not_reusable() -> None:
    codec = started()
    codec.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert codec.response_complete and not codec.reusable


def test_unsolicited_bytes_make_the_connection_unusable() -> None:
    codec = started()
    events = codec.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    assert len(events) == 1 and not codec.reusable
    idle = H1ClientCodec()
    assert idle.feed(b"HTTP/1.1 408 Timeout\r\n\r\n") == [] and not idle.reusable


def test_early_response_before_the_request_body_ends_is_not_reusable() -> None:
    codec = H1ClientCodec()
    codec.encode_request_head(RequestHead(b"POST", b"http", b"a", b"/", [], False, None, 100))
    codec.feed(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert codec.response_complete and not codec.reusable


def test_keep_alive_connection_carries_several_exchanges() -> None:
    codec = H1ClientCodec()
    for i in range(3):
        codec.encode_request_head(get(b"/%d" % i))
        events = codec.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
        assert events[-1] == Body(b"%d" % i, True)
        assert codec.reusable


def test_websocket_101_switches_to_tunnel_data() -> None:
    codec = H1ClientCodec()
    codec.encode_request_head(RequestHead(b"GET", b"http", b"a", b"/", [], False, b"websocket"))
    events = codec.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: abc\r\n\r\n\x81\x02hi"
    )
    assert events == [
        ResponseHead(101, [(b"sec-websocket-accept", b"abc")], False),
        TunnelData(b"\x81\x02hi"),
    ]
    assert codec.tunnel and not codec.reusable
    assert codec.feed(b"more") == [TunnelData(b"more")]
    assert codec.feed_eof() == []


def test_websocket_101_split_byte_by_byte() -> None:
    codec = H1ClientCodec()
    codec.encode_request_head(RequestHead(b"GET", b"http", b"a", b"/", [], False, b"websocket"))
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nab"
    events = feed_all(codec, bytewise(raw))
    assert events[0] == ResponseHead(101, [], False)
    assert b"".join(e.data for e in events[1:]) == b"ab"  # type: ignore[union-attr]


def test_101_without_the_upgrade_fields_is_bad_response() -> None:
    codec = H1ClientCodec()
    codec.encode_request_head(RequestHead(b"GET", b"http", b"a", b"/", [], False, b"websocket"))
    with pytest.raises(UpstreamError):
        codec.feed(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        )


def test_refused_websocket_upgrade_is_a_normal_response() -> None:
    codec = H1ClientCodec()
    codec.encode_request_head(RequestHead(b"GET", b"http", b"a", b"/", [], False, b"websocket"))
    events = codec.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert events == [ResponseHead(403, [], True, 0)] and not codec.tunnel
