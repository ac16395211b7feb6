"""Arbitrary and mutated input: the codecs answer with events or their own
error type, never with another exception, whatever the chunking."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expressgateway.codec.h1 import H1ClientCodec, H1ServerCodec
from expressgateway.core.errors import DownstreamError, UpstreamError
from expressgateway.core.events import RequestHead
from tests.unit.h1.helpers import chunks

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REQUESTS = [
    b"GET /a?b HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nX_Y: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
    b"3\r\nabc\r\n0\r\nX: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\nframes",
    b"POST / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\nhi",
    b"GET / HTTP/1.0\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\nX: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(corpus), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b",", b"\x00", b":", b"0"]))
        else:
            del data[pos]
    return bytes(data)


def drive_server(data: bytes, split: list[int], policy: str) -> None:
    codec = H1ServerCodec(underscore_policy=policy, max_buffered_bytes=4096)  # type: ignore[arg-type]
    try:
        for piece in chunks(data, split):
            codec.feed(piece)
            while codec.request_complete and not codec.websocket:
                codec.encode_local_reply(200, keep_alive=True)
                codec.next_request()
        codec.feed_eof()
    except DownstreamError:
        pass


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(1, 64), max_size=20))
def test_server_survives_arbitrary_bytes(data: bytes, split: list[int]) -> None:
    drive_server(data, split, "reject")


@SETTINGS
@given(
    mutated(REQUESTS),
    st.lists(st.integers(1, 64), max_size=20),
    st.sampled_from(["reject", "drop", "allow"]),
)
def test_server_survives_mutated_requests(data: bytes, split: list[int], policy: str) -> None:
    drive_server(data, split, policy)


def drive_client(data: bytes, split: list[int], method: bytes) -> None:
    codec = H1ClientCodec(max_response_body_bytes=1 << 20)
    codec.encode_request_head(RequestHead(method, b"http", b"a", b"/", [], True))
    try:
        for piece in chunks(data, split):
            codec.feed(piece)
        codec.feed_eof()
    except UpstreamError:
        pass


@SETTINGS
@given(
    st.binary(max_size=300),
    st.lists(st.integers(1, 64), max_size=20),
    st.sampled_from([b"GET", b"HEAD"]),
)
def test_client_survives_arbitrary_bytes(data: bytes, split: list[int], method: bytes) -> None:
    drive_client(data, split, method)


@SETTINGS
@given(
    mutated(RESPONSES),
    st.lists(st.integers(1, 64), max_size=20),
    st.sampled_from([b"GET", b"HEAD"]),
)
def test_client_survives_mutated_responses(data: bytes, split: list[int], method: bytes) -> None:
    drive_client(data, split, method)
