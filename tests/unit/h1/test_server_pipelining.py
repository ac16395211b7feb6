"""H1ServerCodec: one request at a time, pipelined requests held back."""

import pytest

from expressgateway.codec.h1 import H1ServerCodec
from expressgateway.core.errors import DownstreamError
from expressgateway.core.events import Body, RequestHead, ResponseHead
from tests.unit.h1.helpers import bytewise, coalesce, feed_all, request


def finish(codec: H1ServerCodec) -> None:
    """Answer the active request with a small keep-alive response."""
    codec.encode_response_head(
        ResponseHead(200, [], False, 2), request_method=codec.method, keep_alive=True
    )
    codec.encode_body(b"ok", True)
    assert codec.reusable


def paths(events: list) -> list[bytes]:
    return [e.path for e in events if isinstance(e, RequestHead)]


def test_second_pipelined_request_is_held_until_next_request() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(target="/1") + request(target="/2"))
    assert paths(events) == [b"/1"]
    assert codec.paused
    finish(codec)
    events = codec.next_request()
    assert paths(events) == [b"/2"] and codec.request_complete
    assert not codec.paused


def test_three_pipelined_requests_come_out_one_per_next_request() -> None:
    codec = H1ServerCodec()
    raw = request(target="/1") + request(target="/2") + request(target="/3")
    assert paths(codec.feed(raw)) == [b"/1"]
    finish(codec)
    assert paths(codec.next_request()) == [b"/2"]
    finish(codec)
    assert paths(codec.next_request()) == [b"/3"]
    finish(codec)
    assert codec.next_request() == []
    assert not codec.paused


def test_pipelined_post_bodies_stay_with_their_request() -> None:
    codec = H1ServerCodec()
    raw = request("POST", "/1", [("Host", "a"), ("Content-Length", "3")], b"abc") + request(
        "POST", "/2", [("Host", "a"), ("Transfer-Encoding", "chunked")], b"2\r\nde\r\n0\r\n\r\n"
    )
    first = codec.feed(raw)
    assert paths(first) == [b"/1"] and first[-1] == Body(b"abc", True)
    finish(codec)
    second = codec.next_request()
    assert paths(second) == [b"/2"] and second[1:] == [Body(b"de"), Body(b"", True)]


def test_bytes_after_a_held_request_are_buffered_raw_and_parsed_later() -> None:
    codec = H1ServerCodec()
    codec.feed(request(target="/1") + request(target="/2"))
    assert codec.feed(request(target="/3")) == []  # buffered, not parsed
    finish(codec)
    assert paths(codec.next_request()) == [b"/2"]
    finish(codec)
    assert paths(codec.next_request()) == [b"/3"]


def test_partial_pipelined_request_completes_after_next_request() -> None:
    codec = H1ServerCodec()
    raw2 = request("POST", "/2", [("Host", "a"), ("Content-Length", "4")], b"wxyz")
    codec.feed(request(target="/1") + raw2[:-2])
    finish(codec)
    events = codec.next_request()
    assert paths(events) == [b"/2"] and not codec.request_complete
    assert codec.feed(raw2[-2:]) == [Body(b"yz", True)]
    assert codec.request_complete


def test_request_split_across_feeds_after_the_first_completes() -> None:
    codec = H1ServerCodec()
    raw2 = request(target="/2")
    codec.feed(request(target="/1") + raw2[:5])
    assert codec.feed(raw2[5:]) == []
    finish(codec)
    assert paths(codec.next_request()) == [b"/2"]


def test_per_request_facts_follow_the_released_request() -> None:
    codec = H1ServerCodec()
    codec.feed(
        request("HEAD", "/1")
        + request(
            "POST",
            "/2",
            [
                ("Host", "a"),
                ("Expect", "100-continue"),
                ("Content-Length", "1"),
                ("Connection", "close"),
            ],
            b"x",
        )
    )
    assert codec.method == b"HEAD" and codec.keep_alive and not codec.expect_continue
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"HEAD", keep_alive=True)
    codec.next_request()
    assert codec.method == b"POST" and not codec.keep_alive and codec.expect_continue


def test_error_in_a_pipelined_request_is_raised_by_next_request() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(target="/1") + b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n")
    assert paths(events) == [b"/1"]  # the first exchange still completes
    finish(codec)
    with pytest.raises(DownstreamError) as exc:
        codec.next_request()
    assert exc.value.reason == "bad_host"


def test_garbage_after_a_complete_request_does_not_break_it() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(target="/1") + b"\x16\x03\x01garbage")
    assert paths(events) == [b"/1"] and codec.request_complete
    finish(codec)
    with pytest.raises(DownstreamError):
        codec.next_request()


def test_data_after_connection_close_is_not_raised_for_the_current_request() -> None:
    codec = H1ServerCodec()
    events = codec.feed(
        request(headers=[("Host", "a"), ("Connection", "close")]) + request(target="/2")
    )
    assert len(events) == 1 and not codec.keep_alive
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"GET", keep_alive=True)
    assert not codec.reusable


def test_pipelined_bytes_over_the_buffer_cap_fail_at_next_request() -> None:
    codec = H1ServerCodec(max_buffered_bytes=1000)
    codec.feed(request(target="/1") + request(target="/2"))
    for _ in range(20):
        codec.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 80 + b"\r\n\r\n")
    finish(codec)
    assert paths(codec.next_request()) == [b"/2"]  # parsed before the overflow
    finish(codec)
    with pytest.raises(DownstreamError) as exc:
        codec.next_request()
    assert exc.value.reason == "pipeline_overflow"


def test_next_request_before_the_request_is_complete_is_a_misuse() -> None:
    codec = H1ServerCodec()
    codec.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(RuntimeError):
        codec.next_request()


def test_pipelined_requests_fed_byte_by_byte_match_whole_feeding() -> None:
    raw = (
        request(target="/1")
        + request("POST", "/2", [("Host", "a"), ("Content-Length", "3")], b"abc")
        + request(
            "POST",
            "/3",
            [("Host", "a"), ("Transfer-Encoding", "chunked")],
            b"1\r\nz\r\n0\r\nX: 1\r\n\r\n",
        )
        + request(target="/4")
    )

    def run(pieces: list[bytes]) -> list:
        codec = H1ServerCodec()
        seen = feed_all(codec, pieces)
        out = [coalesce(seen)]
        while codec.request_complete:
            finish(codec)
            out.append(coalesce(codec.next_request()))
        return out

    assert run([raw]) == run(bytewise(raw))
    assert [paths(x) for x in run([raw])] == [[b"/1"], [b"/2"], [b"/3"], [b"/4"], []]


def test_closing_connection_is_not_reusable() -> None:
    codec = H1ServerCodec()
    codec.feed(request(headers=[("Host", "a"), ("Connection", "close")]))
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"GET", keep_alive=True)
    assert codec.request_complete and not codec.reusable and not codec.response_keep_alive


def test_eof_in_a_pipelined_body_fails_that_request_only() -> None:
    codec = H1ServerCodec()
    codec.feed(request(target="/1") + b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nab")
    assert codec.feed_eof() == []
    finish(codec)
    with pytest.raises(DownstreamError) as exc:
        codec.next_request()
    assert exc.value.reason == "client_truncated"


def test_buffer_overflow_after_a_pipelined_websocket_fails_the_upgrade() -> None:
    ws = [
        ("Host", "a"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "k"),
        ("Sec-WebSocket-Version", "13"),
    ]
    codec = H1ServerCodec(max_buffered_bytes=100)
    codec.feed(request(target="/1") + request(target="/ws", headers=ws))
    codec.feed(b"x" * 200)
    finish(codec)
    with pytest.raises(DownstreamError) as exc:
        codec.next_request()
    assert exc.value.reason == "pipeline_overflow"
