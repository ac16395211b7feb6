"""H1ServerCodec: requests in, neutral events out."""

import pytest

from expressgateway.codec.h1 import H1ServerCodec
from expressgateway.core.errors import DownstreamError
from expressgateway.core.events import Body, RequestHead, Trailers
from tests.unit.h1.helpers import bytewise, coalesce, feed_all, only_head, request, serve


def test_get_becomes_one_request_head_with_end_stream() -> None:
    codec, events = serve(
        request(headers=[("Host", "example.com"), ("User-Agent", "t/1"), ("Accept", "*/*")])
    )
    assert events == [
        RequestHead(
            b"GET",
            b"http",
            b"example.com",
            b"/",
            [(b"user-agent", b"t/1"), (b"accept", b"*/*")],
            True,
        )
    ]
    assert codec.request_complete and codec.keep_alive and codec.http_minor == 1
    assert codec.method == b"GET"


def test_scheme_comes_from_the_codec_configuration() -> None:
    _, events = serve(request(), scheme=b"https")
    assert only_head(events).scheme == b"https"


def test_content_length_body_ends_with_the_last_piece() -> None:
    codec, events = serve(
        request("POST", headers=[("Host", "a"), ("Content-Length", "5")], body=b"hello")
    )
    head = only_head(events)
    assert head.content_length == 5 and not head.end_stream
    assert (b"content-length", b"5") not in head.headers
    assert events[1:] == [Body(b"hello", True)]
    assert codec.request_complete


def test_content_length_zero_is_end_stream() -> None:
    _, events = serve(request("POST", headers=[("Host", "a"), ("Content-Length", "0")]))
    head = only_head(events)
    assert head.end_stream and head.content_length == 0 and len(events) == 1


def test_body_split_across_feeds_yields_pieces_then_end() -> None:
    codec = H1ServerCodec()
    raw = request("PUT", headers=[("Host", "a"), ("Content-Length", "6")], body=b"abcdef")
    first = codec.feed(raw[:-4])
    assert first[-1] == Body(b"ab")
    assert codec.feed(raw[-4:]) == [Body(b"cdef", True)]


def test_chunked_body_ends_with_empty_final_body() -> None:
    raw = request(
        "POST",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked")],
        body=b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    )
    codec, events = serve(raw)
    head = only_head(events)
    assert head.content_length is None and not head.end_stream
    assert (b"transfer-encoding", b"chunked") not in head.headers
    assert events[1:] == [Body(b"abc"), Body(b"de"), Body(b"", True)]
    assert codec.request_complete


def test_chunked_body_with_trailers_ends_with_trailers() -> None:
    raw = request(
        "POST",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked"), ("TE", "trailers")],
        body=b"3\r\nabc\r\n0\r\nX-Checksum: 42 \r\nGrpc-Status: 0\r\n\r\n",
    )
    codec, events = serve(raw)
    assert events[1:] == [Body(b"abc"), Trailers([(b"x-checksum", b"42"), (b"grpc-status", b"0")])]
    assert codec.te_trailers
    assert (b"te", b"trailers") in only_head(events).headers


@pytest.mark.parametrize(
    "name",
    [
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Trailer",
        "TE",
        "Connection",
        "Keep-Alive",
        "Upgrade",
    ],
)
def test_forbidden_trailer_names_are_rejected(name: str) -> None:
    raw = request(
        "POST",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked")],
        body=f"1\r\na\r\n0\r\n{name}: 1\r\n\r\n".encode(),
    )
    with pytest.raises(DownstreamError) as exc:
        serve(raw)
    assert exc.value.status == 400 and exc.value.reason == "bad_trailer"


def test_hop_by_hop_and_connection_named_fields_are_stripped() -> None:
    raw = request(
        headers=[
            ("Host", "a"),
            ("Connection", "keep-alive, X-Internal"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic Zm9v"),
            ("X-Internal", "secret"),
            ("TE", "gzip"),
            ("Upgrade", "foo/1"),
            ("X-Kept", "1"),
        ]
    )
    _, events = serve(raw)
    assert only_head(events).headers == [(b"x-kept", b"1")]


def test_te_trailers_survives_as_the_only_te_value() -> None:
    codec, events = serve(request(headers=[("Host", "a"), ("TE", "deflate, Trailers")]))
    assert only_head(events).headers == [(b"te", b"trailers")]
    assert codec.te_trailers


def test_field_names_are_lowercased_and_values_trimmed() -> None:
    _, events = serve(request(headers=[("Host", "a"), ("X-MiXeD", "  v a l \t ")]))
    assert only_head(events).headers == [(b"x-mixed", b"v a l")]


def test_repeated_fields_keep_their_order() -> None:
    _, events = serve(
        request(headers=[("Host", "a"), ("Cookie", "a=1"), ("X", "1"), ("Cookie", "b=2")])
    )
    assert only_head(events).headers == [(b"cookie", b"a=1"), (b"x", b"1"), (b"cookie", b"b=2")]


def test_http10_request_is_not_keep_alive_by_default() -> None:
    codec, events = serve(b"GET / HTTP/1.0\r\n\r\n")
    head = only_head(events)
    assert head.authority == b"" and codec.http_minor == 0 and not codec.keep_alive


def test_http10_keep_alive_token_keeps_the_connection() -> None:
    codec, _ = serve(b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n")
    assert codec.http_minor == 0 and codec.keep_alive


def test_http11_connection_close_is_not_keep_alive() -> None:
    codec, _ = serve(request(headers=[("Host", "a"), ("Connection", "close")]))
    assert codec.http_minor == 1 and not codec.keep_alive


def test_http11_connection_keep_alive_is_http11() -> None:
    codec, _ = serve(request(headers=[("Host", "a"), ("Connection", "keep-alive")]))
    assert codec.http_minor == 1 and codec.keep_alive


def test_http09_request_is_rejected() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(b"GET /\r\n\r\n")
    assert exc.value.status == 400 and exc.value.reason == "bad_request_line"


def test_expect_100_continue_is_exposed_and_forwarded_normalised() -> None:
    codec, events = serve(
        request(
            "POST",
            headers=[("Host", "a"), ("Expect", "100-Continue"), ("Content-Length", "3")],
        )
    )
    assert codec.expect_continue
    assert only_head(events).headers == [(b"expect", b"100-continue")]


def test_expect_100_continue_is_ignored_for_http10() -> None:
    codec, events = serve(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert not codec.expect_continue
    assert only_head(events).headers == []


def test_unknown_expectation_is_417() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=[("Host", "a"), ("Expect", "something")]))
    assert exc.value.status == 417 and exc.value.reason == "expectation_failed"


# -- Host / target ------------------------------------------------------------


def test_missing_host_on_http11_is_400_bad_host() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")
    assert (exc.value.status, exc.value.reason) == (400, "bad_host")


@pytest.mark.parametrize(
    "host",
    ["a, b", "a,b", "user@a", "a b", "", "a:99999", "[::1", "a/b", "[zz::]"],
)
def test_malformed_host_is_400_bad_host(host: str) -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=[("Host", host)]))
    assert (exc.value.status, exc.value.reason) == (400, "bad_host")


def test_repeated_host_is_400_bad_host() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=[("Host", "a"), ("Host", "a")]))
    assert (exc.value.status, exc.value.reason) == (400, "bad_host")


@pytest.mark.parametrize("host", ["example.com:8080", "[::1]:443", "10.1.2.3", "[2001:db8::1]"])
def test_valid_host_becomes_authority(host: str) -> None:
    _, events = serve(request(headers=[("Host", host)]))
    assert only_head(events).authority == host.encode()


def test_absolute_form_target_gives_authority_and_path() -> None:
    _, events = serve(request(target="http://Origin.example:81/p?q=1", headers=[("Host", "other")]))
    head = only_head(events)
    assert (head.authority, head.path) == (b"Origin.example:81", b"/p?q=1")


def test_absolute_form_without_path_gets_slash() -> None:
    _, events = serve(request(target="https://o.example?x", headers=[("Host", "o.example")]))
    assert only_head(events).path == b"/?x"


def test_absolute_form_with_userinfo_is_rejected() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(target="http://u@o.example/", headers=[("Host", "o.example")]))
    assert exc.value.reason == "bad_host"


def test_fragment_is_cut_from_the_path() -> None:
    _, events = serve(request(target="/a?b=1#frag"))
    assert only_head(events).path == b"/a?b=1"


def test_asterisk_form_is_kept_for_options() -> None:
    _, events = serve(request("OPTIONS", "*"))
    assert only_head(events).path == b"*"


def test_asterisk_form_is_rejected_for_get() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request("GET", "*"))
    assert exc.value.reason == "bad_request_line"


def test_connect_is_405() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request("CONNECT", "a:443", headers=[("Host", "a:443")]))
    assert (exc.value.status, exc.value.reason) == (405, "connect_unsupported")


# -- underscore policy ---------------------------------------------------------


def test_underscore_policy_reject_is_400() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=[("Host", "a"), ("X_Auth_User", "admin")]))
    assert (exc.value.status, exc.value.reason) == (400, "header_underscore")


def test_underscore_policy_drop_removes_the_field() -> None:
    _, events = serve(
        request(headers=[("Host", "a"), ("X_Auth_User", "admin"), ("X-Auth-User", "bob")]),
        underscore_policy="drop",
    )
    assert only_head(events).headers == [(b"x-auth-user", b"bob")]


def test_underscore_policy_allow_keeps_the_field() -> None:
    _, events = serve(
        request(headers=[("Host", "a"), ("X_Auth_User", "admin")]), underscore_policy="allow"
    )
    assert only_head(events).headers == [(b"x_auth_user", b"admin")]


def test_underscore_policy_applies_to_trailers() -> None:
    raw = request(
        "POST",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked")],
        body=b"0\r\nX_T: 1\r\n\r\n",
    )
    with pytest.raises(DownstreamError):
        serve(raw)
    _, events = serve(raw, underscore_policy="drop")
    assert events[-1] == Body(b"", True)
    _, events = serve(raw, underscore_policy="allow")
    assert events[-1] == Trailers([(b"x_t", b"1")])


def test_unknown_underscore_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        H1ServerCodec(underscore_policy="maybe")  # type: ignore[arg-type]


# -- limits ----------------------------------------------------------------------


def test_too_many_fields_is_431() -> None:
    headers = [("Host", "a")] + [(f"X-{i}", "v") for i in range(10)]
    serve(request(headers=headers), max_headers=11)
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=headers), max_headers=10)
    assert (exc.value.status, exc.value.reason) == (431, "header_too_large")


def test_header_section_over_the_byte_cap_is_431() -> None:
    raw = request(headers=[("Host", "a"), ("X-Big", "v" * 3000)])
    serve(raw, max_header_bytes=4096)
    with pytest.raises(DownstreamError) as exc:
        serve(raw, max_header_bytes=2048)
    assert (exc.value.status, exc.value.reason) == (431, "header_too_large")


def test_huge_host_counts_toward_the_cap() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=[("Host", "a" * 3000)]), max_header_bytes=2048)
    assert exc.value.status == 431


@pytest.mark.parametrize("host", ["Host", "host", "HOST"])
def test_host_is_found_whatever_its_case(host: str) -> None:
    _, events = serve(request(headers=[(host, "h.example")]))
    assert only_head(events).authority == b"h.example"


def test_big_special_field_counts_toward_the_cap() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(headers=[("Host", "a"), ("Connection", "x" * 3000)]), max_header_bytes=2048)
    assert exc.value.status == 431


def test_slowly_fed_huge_field_is_caught_before_the_head_ends() -> None:
    codec = H1ServerCodec(max_header_bytes=1024)
    codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
    with pytest.raises(DownstreamError) as exc:
        for _ in range(100):
            codec.feed(b"v" * 100)
    assert (exc.value.status, exc.value.reason) == (431, "header_too_large")


def test_many_small_fields_fed_one_by_one_are_caught() -> None:
    codec = H1ServerCodec(max_header_bytes=1024, max_headers=10_000)
    codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    with pytest.raises(DownstreamError) as exc:
        for i in range(1000):
            codec.feed(b"X-%d: v\r\n" % i)
    assert exc.value.status == 431


def test_long_request_target_is_414() -> None:
    with pytest.raises(DownstreamError) as exc:
        serve(request(target="/" + "a" * 3000), max_header_bytes=2048)
    assert (exc.value.status, exc.value.reason) == (414, "uri_too_long")


def test_slowly_fed_long_target_is_414() -> None:
    codec = H1ServerCodec(max_header_bytes=1024)
    codec.feed(b"GET /")
    with pytest.raises(DownstreamError) as exc:
        for _ in range(100):
            codec.feed(b"a" * 100)
    assert exc.value.status == 414


def test_declared_body_over_the_cap_is_413_at_head_time() -> None:
    codec = H1ServerCodec(max_request_body_bytes=10)
    with pytest.raises(DownstreamError) as exc:
        codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    assert (exc.value.status, exc.value.reason) == (413, "body_too_large")


def test_declared_body_at_the_cap_is_accepted() -> None:
    _, events = serve(
        request("POST", headers=[("Host", "a"), ("Content-Length", "10")], body=b"x" * 10),
        max_request_body_bytes=10,
    )
    assert events[-1] == Body(b"x" * 10, True)


def test_streamed_chunked_body_over_the_cap_is_413() -> None:
    codec = H1ServerCodec(max_request_body_bytes=10)
    events = codec.feed(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n"
    )
    assert events[-1] == Body(b"12345678")
    with pytest.raises(DownstreamError) as exc:
        codec.feed(b"8\r\n12345678\r\n")
    assert (exc.value.status, exc.value.reason) == (413, "body_too_large")


def test_a_failed_codec_keeps_raising() -> None:
    codec = H1ServerCodec()
    with pytest.raises(DownstreamError):
        codec.feed(b"BAD\r\n\r\n")
    with pytest.raises(DownstreamError):
        codec.feed(request())


def test_huge_chunk_extension_is_caught_by_the_stall_guard() -> None:
    codec = H1ServerCodec(max_header_bytes=1024)
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;x=")
    with pytest.raises(DownstreamError) as exc:
        for _ in range(100):
            codec.feed(b"y" * 100)
    assert exc.value.status == 431


def test_oversized_trailer_section_is_431() -> None:
    codec = H1ServerCodec(max_header_bytes=1024)
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
    with pytest.raises(DownstreamError) as exc:
        for i in range(200):
            codec.feed(b"X-%d: vvvvvvvv\r\n" % i)
    assert exc.value.status == 431


# -- EOF ----------------------------------------------------------------------------


def test_eof_in_the_middle_of_a_body_is_client_truncated() -> None:
    codec = H1ServerCodec()
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(DownstreamError) as exc:
        codec.feed_eof()
    assert exc.value.reason == "client_truncated"


def test_eof_in_the_middle_of_a_chunked_body_is_client_truncated() -> None:
    codec = H1ServerCodec()
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
    with pytest.raises(DownstreamError):
        codec.feed_eof()


def test_eof_between_requests_or_in_a_head_is_quiet() -> None:
    codec = H1ServerCodec()
    assert codec.feed_eof() == []
    codec = H1ServerCodec()
    codec.feed(request())
    assert codec.feed_eof() == []
    codec = H1ServerCodec()
    codec.feed(b"GET / HTTP/1.1\r\nHo")
    assert codec.feed_eof() == []


# -- fragmentation ----------------------------------------------------------------

CORPUS = [
    request(headers=[("Host", "a"), ("Accept", "*/*"), ("Connection", "keep-alive")]),
    request("POST", headers=[("Host", "a"), ("Content-Length", "11")], body=b"hello world"),
    request(
        "POST",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked"), ("TE", "trailers")],
        body=b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
    ),
    request("GET", "http://h.example/x#f", headers=[("Host", "h.example"), ("X_A", "1")]),
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
]


@pytest.mark.parametrize("raw", CORPUS)
def test_byte_by_byte_feeding_gives_the_same_events(raw: bytes) -> None:
    whole = H1ServerCodec(underscore_policy="allow")
    slow = H1ServerCodec(underscore_policy="allow")
    assert coalesce(whole.feed(raw)) == coalesce(feed_all(slow, bytewise(raw)))
    for attr in ("keep_alive", "http_minor", "te_trailers", "request_complete", "method"):
        assert getattr(whole, attr) == getattr(slow, attr)
