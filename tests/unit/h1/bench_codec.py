"""Micro-benchmark of the HTTP/1.1 codecs: ``python tests/unit/h1/bench_codec.py``.

Not a test (pytest does not collect it). Prints CPU µs per operation
(process time, so other load on the machine matters less) for a typical
~200-byte GET and a 1 KiB response, on both codecs."""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from expressgateway.codec.h1 import H1ClientCodec, H1ServerCodec
from expressgateway.core.events import RequestHead, ResponseHead
from expressgateway.core.headers import append_forwarded

REQ = (
    b"GET /api/v1/items?id=12345&sort=asc HTTP/1.1\r\nHost: example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nX-Request-Id: abc123\r\n\r\n"
)
REQ_NO_CONN = REQ.replace(b"Connection: keep-alive\r\n", b"")
BODY = b"x" * 1024
RESP_HEAD = ResponseHead(
    200,
    [
        (b"content-type", b"text/html"),
        (b"server", b"nginx"),
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"cache-control", b"no-cache"),
    ],
    False,
    1024,
)
UP_HEAD = RequestHead(
    b"GET",
    b"http",
    b"example.com",
    b"/api/v1/items?id=12345&sort=asc",
    [
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64)"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"x-request-id", b"abc123"),
    ],
    True,
)


def bench(name: str, fn: Callable[[], object], n: int = 100_000) -> None:
    t = min(timeit.Timer(fn, timer=time.process_time).repeat(number=n, repeat=7)) / n * 1e6
    print(f"{name:64} {t:6.2f} us")


def main() -> None:
    server = H1ServerCodec()

    def answer() -> None:
        server.encode_response_head(RESP_HEAD, request_method=b"GET", keep_alive=True)
        server.encode_body(BODY, True)

    def server_cycle(raw: bytes = REQ) -> None:
        server.feed(raw)
        answer()
        server.next_request()

    bench(f"server: feed {len(REQ)} B GET + encode 1 KiB response + next", server_cycle)
    bench(
        f"server: same, {len(REQ_NO_CONN)} B GET without Connection",
        lambda: server_cycle(REQ_NO_CONN),
    )
    server.feed(REQ)
    bench("server: encode 1 KiB response alone (head + body)", answer)

    client = H1ClientCodec()
    resp = server.encode_response_head(
        RESP_HEAD, request_method=b"GET", keep_alive=True
    ) + server.encode_body(BODY, True)
    headers = list(UP_HEAD.headers)
    append_forwarded(headers, b"10.0.0.1", b"http", b"example.com", b"1.1 expressgateway")
    up = RequestHead(UP_HEAD.method, b"http", UP_HEAD.authority, UP_HEAD.path, headers, True)

    def client_cycle() -> None:
        client.encode_request_head(up)
        client.feed(resp)

    bench(f"client: encode GET (8 fields) + feed {len(resp)} B response", client_cycle)
    assert client.reusable

    def forwarded() -> None:
        h = list(UP_HEAD.headers)
        append_forwarded(h, b"10.0.0.1", b"http", b"example.com", b"1.1 expressgateway")

    bench("core.headers: append_forwarded on 4 fields (incl. list copy)", forwarded)
    bench(
        "events: RequestHead(...) construction (frozen dataclass)",
        lambda: RequestHead(b"GET", b"http", b"a", b"/", headers, True),
    )


if __name__ == "__main__":
    main()
