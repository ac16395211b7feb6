"""H1ServerCodec: WebSocket upgrades become tunnels; other upgrades are ignored."""

import pytest

from expressgateway.codec.h1 import H1ServerCodec
from expressgateway.core.errors import DownstreamError, ProxyError
from expressgateway.core.events import Body, RequestHead, ResponseHead, TunnelData
from tests.unit.h1.helpers import bytewise, feed_all, only_head, request

WS = [
    ("Host", "a"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Protocol", "chat"),
]


def test_websocket_upgrade_gives_a_websocket_head_with_its_fields() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(headers=WS))
    head = only_head(events)
    assert head.protocol == b"websocket" and not head.end_stream and head.method == b"GET"
    assert head.headers == [
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
        (b"sec-websocket-protocol", b"chat"),
    ]
    assert codec.websocket and not codec.keep_alive


def test_bytes_after_the_upgrade_wait_for_start_tunnel() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(headers=WS) + b"\x81\x05hello")
    assert len(events) == 1 and codec.paused
    assert codec.feed(b"more") == []
    codec.encode_response_head(
        ResponseHead(101, [(b"sec-websocket-accept", b"x")], False),
        request_method=b"GET",
        keep_alive=False,
    )
    assert codec.start_tunnel() == [TunnelData(b"\x81\x05hellomore")]
    assert codec.feed(b"frame") == [TunnelData(b"frame")]
    assert not codec.paused and not codec.reusable


def test_start_tunnel_without_buffered_bytes_returns_nothing() -> None:
    codec = H1ServerCodec()
    codec.feed(request(headers=WS))
    assert codec.start_tunnel() == []
    assert codec.feed(b"") == []


def test_101_response_writes_the_upgrade_fields() -> None:
    codec = H1ServerCodec()
    codec.feed(request(headers=WS))
    wire = codec.encode_response_head(
        ResponseHead(101, [(b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")], False),
        request_method=b"GET",
        keep_alive=True,
    )
    assert wire == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )


def test_refused_websocket_upgrade_closes_the_connection() -> None:
    codec = H1ServerCodec()
    codec.feed(request(headers=WS))
    wire = codec.encode_response_head(
        ResponseHead(403, [], True), request_method=b"GET", keep_alive=True
    )
    assert b"connection: close\r\n" in wire
    assert not codec.reusable
    with pytest.raises(RuntimeError):
        codec.next_request()


def test_101_without_a_websocket_request_is_an_internal_error() -> None:
    codec = H1ServerCodec()
    codec.feed(request())
    with pytest.raises(ProxyError):
        codec.encode_response_head(
            ResponseHead(101, [], False), request_method=b"GET", keep_alive=True
        )


def test_start_tunnel_without_websocket_is_a_misuse() -> None:
    codec = H1ServerCodec()
    codec.feed(request())
    with pytest.raises(RuntimeError):
        codec.start_tunnel()


def test_tunnel_buffer_over_the_cap_fails() -> None:
    codec = H1ServerCodec(max_buffered_bytes=100)
    codec.feed(request(headers=WS))
    with pytest.raises(DownstreamError) as exc:
        codec.feed(b"x" * 101)
    assert exc.value.reason == "tunnel_buffer_overflow"


def test_pipelined_websocket_upgrade_is_released_with_its_tunnel_bytes() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(target="/1") + request(target="/ws", headers=WS) + b"early")
    assert [e.path for e in events if isinstance(e, RequestHead)] == [b"/1"]
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"GET", keep_alive=True)
    head = only_head(codec.next_request())
    assert head.protocol == b"websocket" and codec.websocket
    assert codec.feed(b"-late") == []
    codec.encode_response_head(
        ResponseHead(101, [], False), request_method=b"GET", keep_alive=False
    )
    assert codec.start_tunnel() == [TunnelData(b"early-late")]


def test_websocket_upgrade_fed_byte_by_byte() -> None:
    codec = H1ServerCodec()
    raw = request(headers=WS) + b"abc"
    events = feed_all(codec, bytewise(raw))
    assert only_head(events).protocol == b"websocket"
    assert codec.start_tunnel() == [TunnelData(b"abc")]


@pytest.mark.parametrize(
    "headers",
    [
        [
            ("Host", "a"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
        ],
        [
            ("Host", "a"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "k"),
            ("Sec-WebSocket-Version", "8"),
        ],
        [
            ("Host", "a"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "k"),
            ("Sec-WebSocket-Version", "13"),
        ],
    ],
    ids=["no_key", "version_8", "no_connection_upgrade"],
)
def test_incomplete_websocket_handshake_is_a_plain_request(headers: list) -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(headers=headers) + request(target="/next"))
    head = only_head(events)
    assert head.protocol is None and head.end_stream and not codec.websocket
    assert all(n not in (b"upgrade", b"connection") for n, _ in head.headers)
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"GET", keep_alive=True)
    assert only_head(codec.next_request()).path == b"/next"


def test_websocket_over_http10_is_a_plain_request() -> None:
    codec = H1ServerCodec()
    events = codec.feed(request(headers=WS, version="HTTP/1.0"))
    assert only_head(events).protocol is None


def test_h2c_upgrade_is_ignored_and_the_next_request_still_parses() -> None:
    codec = H1ServerCodec()
    raw = request(
        headers=[
            ("Host", "a"),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ]
    )
    events = codec.feed(raw + request(target="/2"))
    head = only_head(events)
    assert head.protocol is None and head.headers == []  # http2-settings is connection-named
    assert codec.keep_alive and codec.request_complete
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"GET", keep_alive=True)
    assert only_head(codec.next_request()).path == b"/2"


def test_h2c_upgrade_with_a_length_body_keeps_the_body() -> None:
    codec = H1ServerCodec()
    raw = request(
        "POST",
        headers=[
            ("Host", "a"),
            ("Connection", "Upgrade"),
            ("Upgrade", "h2c"),
            ("Content-Length", "5"),
        ],
        body=b"hello",
    )
    events = codec.feed(raw + request(target="/2"))
    assert only_head(events).content_length == 5
    assert events[1:] == [Body(b"hello", True)]
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"POST", keep_alive=True)
    assert only_head(codec.next_request()).path == b"/2"


def test_h2c_upgrade_with_a_length_body_fed_byte_by_byte() -> None:
    codec = H1ServerCodec()
    raw = request(
        "POST",
        headers=[
            ("Host", "a"),
            ("Connection", "Upgrade"),
            ("Upgrade", "h2c"),
            ("Content-Length", "5"),
        ],
        body=b"hello",
    )
    events = feed_all(codec, bytewise(raw))
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"hello"
    assert events[-1] == Body(b"o", True) and codec.request_complete


def test_eof_in_an_ignored_upgrade_body_is_truncation() -> None:
    codec = H1ServerCodec()
    codec.feed(
        request(
            "POST",
            headers=[
                ("Host", "a"),
                ("Connection", "Upgrade"),
                ("Upgrade", "h2c"),
                ("Content-Length", "5"),
            ],
            body=b"he",
        )
    )
    with pytest.raises(DownstreamError):
        codec.feed_eof()


def test_garbage_after_an_ignored_upgrade_fails_only_the_next_request() -> None:
    """Regression (found by fuzzing): the parse error after an llhttp upgrade
    stop was mistaken for a callback bug."""
    codec = H1ServerCodec()
    events = codec.feed(
        request(headers=[("Host", "a"), ("Upgrade", "ebsocket"), ("Connection", "Upgrade")])
        + b"frames"
    )
    assert only_head(events).protocol is None and codec.request_complete
    codec.encode_response_head(ResponseHead(200, [], True), request_method=b"GET", keep_alive=True)
    with pytest.raises(DownstreamError) as exc:
        codec.next_request()
    assert exc.value.reason == "bad_request_line"
