"""Pair round trips: what the client codec writes, the server codec reads back
as the same neutral events, and the other way round; under any chunking."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expressgateway.codec.h1 import H1ClientCodec, H1ServerCodec
from expressgateway.core.events import Body, Event, RequestHead, ResponseHead, Trailers
from expressgateway.core.headers import FORBIDDEN_TRAILERS
from tests.unit.h1.helpers import chunks, coalesce, feed_all

SPECIAL = {
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"te",
    b"upgrade",
    b"expect",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"trailer",
    b"cookie",  # several cookie fields are joined into one (tested in test_client)
}
COMMON = [
    b"accept",
    b"user-agent",
    b"content-type",
    b"set-cookie",
    b"authorization",
    b"x-request-id",
    b"cache-control",
    b"grpc-status",
]
TCHARS = "abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^`|~"

names = st.one_of(
    st.sampled_from(COMMON),
    st.text(TCHARS, min_size=1, max_size=16).map(lambda s: b"x-" + s.encode()),
).filter(lambda n: n not in SPECIAL)
values = (
    st.binary(max_size=40)
    .map(lambda v: bytes(b for b in v if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80))
    .map(lambda v: v.strip(b" \t"))
)
fields = st.lists(st.tuples(names, values), max_size=8)
trailer_fields = st.lists(
    st.tuples(names.filter(lambda n: n not in FORBIDDEN_TRAILERS), values), min_size=1, max_size=4
)
bodies = st.lists(st.binary(min_size=1, max_size=64), max_size=4)
sizes = st.lists(st.integers(min_value=1, max_value=40), max_size=60)
paths = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?", max_size=30).map(
    lambda s: b"/" + s.encode()
)
authorities = st.sampled_from([b"example.com", b"example.com:8080", b"10.0.0.1", b"[::1]:443"])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def served(codec: H1ServerCodec, wire: bytes, sizes: list[int]) -> list[Event]:
    return coalesce(feed_all(codec, chunks(wire, sizes)))


@SETTINGS
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"]),
    authority=authorities,
    path=paths,
    headers=fields,
    body=bodies,
    declared=st.booleans(),
    trailers=st.one_of(st.none(), trailer_fields),
    split=sizes,
)
def test_client_request_reads_back_the_same_on_the_server(
    method: bytes,
    authority: bytes,
    path: bytes,
    headers: list,
    body: list[bytes],
    declared: bool,
    trailers: list | None,
    split: list[int],
) -> None:
    data = b"".join(body)
    chunked = bool(body) and not declared
    if not chunked:
        trailers = None
    head = RequestHead(
        method,
        b"http",
        authority,
        path,
        headers,
        not body,
        None,
        len(data) if declared and body else None,
    )
    client = H1ClientCodec()
    wire = client.encode_request_head(head)
    for i, piece in enumerate(body):
        wire += client.encode_body(piece, i == len(body) - 1 and trailers is None)
    if trailers is not None:
        wire += client.encode_trailers(trailers)
    assert client.out_complete

    server = H1ServerCodec()
    events = served(server, wire, split)
    expected_cl = (
        len(data)
        if (declared and body) or (not body and method in (b"POST", b"PUT", b"PATCH"))
        else None
    )
    expected: list[Event] = [
        RequestHead(method, b"http", authority, path, headers, not data, None, expected_cl)
    ]
    if chunked:
        expected.append(Body(data))
        expected.append(Trailers(trailers) if trailers else Body(b"", True))
        expected = coalesce(expected)
    elif data:
        expected.append(Body(data, True))
    assert events == expected
    assert server.request_complete and server.keep_alive


@SETTINGS
@given(
    status=st.sampled_from([200, 201, 202, 206, 301, 302, 400, 403, 404, 418, 500, 503]),
    headers=fields,
    body=bodies,
    declared=st.booleans(),
    te_trailers=st.booleans(),
    trailers=st.one_of(st.none(), trailer_fields),
    split=sizes,
)
def test_server_response_reads_back_the_same_on_the_client(
    status: int,
    headers: list,
    body: list[bytes],
    declared: bool,
    te_trailers: bool,
    trailers: list | None,
    split: list[int],
) -> None:
    data = b"".join(body)
    server = H1ServerCodec()
    req = b"GET / HTTP/1.1\r\nHost: a\r\n" + (b"TE: trailers\r\n" if te_trailers else b"") + b"\r\n"
    server.feed(req)
    if declared or not body:
        trailers = None
    head = ResponseHead(status, headers, not body, len(data) if declared and body else None)
    wire = server.encode_response_head(head, request_method=b"GET", keep_alive=True)
    for i, piece in enumerate(body):
        wire += server.encode_body(piece, i == len(body) - 1 and trailers is None)
    if trailers is not None:
        wire += server.encode_trailers(trailers)
    assert server.reusable

    client = H1ClientCodec()
    client.encode_request_head(RequestHead(b"GET", b"http", b"a", b"/", [], True))
    events = coalesce(feed_all(client, chunks(wire, split)))
    if not body:
        expected: list[Event] = [ResponseHead(status, headers, True, 0)]
    elif declared:
        expected = [ResponseHead(status, headers, False, len(data)), Body(data, True)]
    else:
        end: Event = Trailers(trailers) if trailers and te_trailers else Body(b"", True)
        expected = coalesce([ResponseHead(status, headers, False, None), Body(data), end])
    assert events == expected
    assert client.reusable


@SETTINGS
@given(headers=fields, length=st.integers(min_value=0, max_value=10**9), split=sizes)
def test_head_exchange_round_trips_the_declared_length(
    headers: list, length: int, split: list[int]
) -> None:
    client = H1ClientCodec()
    server = H1ServerCodec()
    req = client.encode_request_head(RequestHead(b"HEAD", b"http", b"a", b"/", [], True))
    assert served(server, req, split) == [RequestHead(b"HEAD", b"http", b"a", b"/", [], True)]
    wire = server.encode_response_head(
        ResponseHead(200, headers, True, length), request_method=b"HEAD", keep_alive=True
    )
    assert coalesce(feed_all(client, chunks(wire, split))) == [
        ResponseHead(200, headers, True, length)
    ]
    assert client.reusable and server.reusable


@SETTINGS
@given(split=sizes, n=st.integers(min_value=1, max_value=5))
def test_pipelined_requests_under_any_chunking(split: list[int], n: int) -> None:
    client = H1ClientCodec()
    wire = b""
    for i in range(n):
        head = RequestHead(
            b"POST", b"http", b"a", b"/%d" % i, [(b"x-i", b"%d" % i)], False, None, 1
        )
        wire += client.encode_request_head(head) + client.encode_body(b"%d" % i, True)
        client.keep_alive = client.response_complete = True  # pretend it was answered
    server = H1ServerCodec()
    got = [feed_all(server, chunks(wire, split))]
    while server.request_complete:
        server.encode_response_head(
            ResponseHead(204, [], True), request_method=b"POST", keep_alive=True
        )
        got.append(server.next_request())
    heads = [e for batch in got for e in batch if isinstance(e, RequestHead)]
    bodies_ = [e for batch in got for e in batch if isinstance(e, Body)]
    assert [h.path for h in heads] == [b"/%d" % i for i in range(n)]
    assert b"".join(b.data for b in bodies_) == b"".join(b"%d" % i for i in range(n))
    assert all(len(batch) >= 1 for batch in got[:n])
