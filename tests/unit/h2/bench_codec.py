"""Micro-benchmark of the HTTP/2 codecs: ``python tests/unit/h2/bench_codec.py``.

Not a test (pytest does not collect it). Prints CPU µs per request
(process time, best of 5 runs of 5000): the server codec parsing a HEADERS
frame of a typical GET and answering with a response head and 1 KiB of
DATA; the same exchange on a bare h2 connection (with and without h2's own
header checks) for comparison; and the client codec sending a request and
parsing a 1 KiB response. Almost all of the time is h2 and hpack (pure
Python); the codecs' own work is about a tenth."""

from __future__ import annotations

import time
from collections.abc import Callable

import h2.config
import h2.connection
from h2.settings import SettingCodes, Settings

from expressgateway.codec.h2 import H2ClientCodec, H2ServerCodec
from expressgateway.core.events import Body, RequestHead, ResponseHead

REQ = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/api/v1/items?id=12345&sort=asc"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"x-request-id", b"abc123"),
]
RESP_FIELDS = [
    (b"content-type", b"text/html"),
    (b"server", b"nginx"),
    (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
    (b"cache-control", b"no-cache"),
]
RESP_HEAD = ResponseHead(200, RESP_FIELDS, False, 1024)
BODY = b"x" * 1024
N = 5000


def _peer(client_side: bool) -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    )


def _requests(n: int) -> tuple[list[bytes], h2.connection.H2Connection, bytes]:
    """``n`` request HEADERS frames from a real h2 client (each on a new
    stream; the client forgets its streams so it never hits a limit)."""
    client = _peer(True)
    client.initiate_connection()
    client.local_settings.initial_window_size = 2**31 - 1
    preface = client.data_to_send()
    wires = []
    for _ in range(n):
        sid = client.get_next_available_stream_id()
        client.send_headers(sid, REQ, end_stream=True)
        wires.append(client.data_to_send())
        del client.streams[sid]
    return wires, client, preface


def bench(name: str, setup: Callable[[], Callable[[], object]], repeat: int = 5) -> None:
    best = float("inf")
    for _ in range(repeat):
        fn = setup()
        t0 = time.process_time()
        for _ in range(N):
            fn()
        best = min(best, time.process_time() - t0)
    print(f"{name:64} {best / N * 1e6:7.2f} us")


def server_codec() -> Callable[[], object]:
    wires, client, preface = _requests(N)
    codec = H2ServerCodec(max_concurrent_streams=N + 1)
    codec.initiate()
    codec.feed(preface, 0.0)
    client.receive_data(codec.data_to_send())
    codec.feed(client.data_to_send(), 0.0)
    codec.data_to_send()
    codec._conn.outbound_flow_control_window = 2**31 - 1
    it = iter(wires)

    def one() -> None:
        events = codec.feed(next(it), 1.0)
        sid = events[0][0]
        codec.send_response_head(sid, RESP_HEAD)
        codec.send_body(sid, BODY, True)
        codec.data_to_send()

    return one


def bare_h2(validate: bool = True) -> Callable[[], object]:
    wires, _, preface = _requests(N)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=validate,
            normalize_inbound_headers=validate,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
    )
    conn.initiate_connection()
    conn.receive_data(preface)
    conn.outbound_flow_control_window = 2**31 - 1
    it = iter(wires)
    fields = [(b":status", b"200"), *RESP_FIELDS, (b"content-length", b"1024")]

    def one() -> None:
        events = conn.receive_data(next(it))
        sid = events[0].stream_id  # type: ignore[attr-defined]
        conn.send_headers(sid, fields)
        conn.send_data(sid, BODY, end_stream=True)
        conn.data_to_send()

    return one


UP_HEAD = RequestHead(
    b"GET", b"https", b"example.com", b"/api/v1/items?id=12345&sort=asc", REQ[4:], True
)


def _h2_server() -> h2.connection.H2Connection:
    server = _peer(False)
    server.local_settings = Settings(
        client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 2**31 - 1}
    )
    server.initiate_connection()
    return server


def _connected_client() -> tuple[H2ClientCodec, h2.connection.H2Connection]:
    codec = H2ClientCodec()
    server = _h2_server()
    server.receive_data(codec.initiate())
    codec.feed(server.data_to_send(), 0.0)
    server.receive_data(codec.data_to_send())
    server.outbound_flow_control_window = 2**31 - 1
    return codec, server


def client_codec() -> Callable[[], object]:
    # responses come from a real h2 server answering a twin codec that sends
    # the very same requests (same stream ids, same HPACK state): only the
    # measured codec's work is timed
    twin, server = _connected_client()
    fields = [(b":status", b"200"), *RESP_FIELDS, (b"content-length", b"1024")]
    responses = []
    for _ in range(N):
        sid = twin.send_request(UP_HEAD)
        server.receive_data(twin.data_to_send())
        server.send_headers(sid, fields)
        server.send_data(sid, BODY, end_stream=True)
        responses.append(server.data_to_send())
    codec, _ = _connected_client()
    it = iter(responses)

    def one() -> None:
        codec.send_request(UP_HEAD)
        codec.data_to_send()
        for sid, ev in codec.feed(next(it), 1.0):
            if type(ev) is Body:
                codec.ack_data(sid, len(ev.data))
        codec.data_to_send()

    return one


def main() -> None:
    bench("h2 server codec: HEADERS in -> head + 1 KiB DATA out", server_codec)
    bench("bare h2 connection, same exchange (h2's own checks)", bare_h2)
    bench("bare h2 connection, same exchange (no header checks)", lambda: bare_h2(False))
    bench("h2 client codec: request out -> head + 1 KiB DATA in, ack", client_codec)


if __name__ == "__main__":
    main()
