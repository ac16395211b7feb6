"""Request smuggling and malformed framing, sent as raw bytes to an ``h1``
listener. Every rejected request must get its status, the connection must
close, and the origin must not have seen a request (a smuggled second
request behind it included)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import (
    OriginWatch,
    ResponseReader,
    closed_by_peer,
    connect,
    h1_config,
    h1_listener,
    origin_paths,
    recv_until_close,
    request,
    seen_headers,
)
from tests.support.processes import origin

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


@dataclass
class Rig:
    gw: Gateway
    port: int
    strict_port: int  # a second gateway with [security] strict_te = true
    origin: int


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with origin() as op:
        admin, port = free_port(), free_port()
        strict_admin, strict_port = free_port(), free_port()
        lenient = h1_config(admin, h1_listener(port, [op]))
        strict = h1_config(
            strict_admin, h1_listener(strict_port, [op]), tail="[security]\nstrict_te = true\n"
        )
        with gateway(lenient, admin_port=admin) as gw, gateway(strict, admin_port=strict_admin):
            yield Rig(gw, port, strict_port, op)


def post(*lines: str, body: bytes = b"", version: str = "1.1") -> bytes:
    head = f"POST /target HTTP/{version}\r\nHost: gateway.test\r\n" + "".join(
        line + "\r\n" for line in lines
    )
    return head.encode("latin-1") + b"\r\n" + body


def assert_rejected(port: int, origin_port: int, raw: bytes, status: int) -> None:
    watch = OriginWatch(origin_port)
    with connect(port) as s:
        s.sendall(raw)
        resp = ResponseReader().read(s)
        assert resp.status == status, resp
        assert resp.header("connection") == "close"
        assert closed_by_peer(s, 5), "connection kept open after a framing error"
    assert watch.new_requests() == 0
    assert "/smuggled" not in origin_paths(origin_port)


CASES = [
    pytest.param(
        post("Content-Length: 6", "Transfer-Encoding: chunked", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="cl-then-te",
    ),
    pytest.param(
        post("Transfer-Encoding: chunked", "Content-Length: 6", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-then-cl",
    ),
    pytest.param(
        post("Content-Length: 0", "Content-Length: 44", body=SMUGGLED), 400, id="duplicate-cl"
    ),
    pytest.param(post("Content-Length: 0, 44", body=SMUGGLED), 400, id="cl-list"),
    pytest.param(post("Content-Length: +44", body=SMUGGLED), 400, id="cl-signed"),
    pytest.param(post("Content-Length: 4 4", body=SMUGGLED), 400, id="cl-space"),
    pytest.param(
        post("Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-not-ending-in-chunked",
    ),
    pytest.param(
        post("Transfer-Encoding: gzip", body=b"0\r\n\r\n" + SMUGGLED), 400, id="te-gzip-only"
    ),
    pytest.param(
        post("Transfer-Encoding: xchunked", body=b"0\r\n\r\n" + SMUGGLED), 400, id="te-xchunked"
    ),
    pytest.param(
        post("Transfer-Encoding : chunked", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-space-before-colon",
    ),
    pytest.param(
        post("Transfer-Encoding: chunked", version="1.0", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="te-in-http10",
    ),
    pytest.param(post("X-Folded: a", " b", "Content-Length: 0", body=SMUGGLED), 400, id="obs-fold"),
    pytest.param(
        b"GET /target HTTP/1.1\nHost: gateway.test\nX-A: 1\n\n" + SMUGGLED, 400, id="bare-lf"
    ),
    pytest.param(
        b"GET /target HTTP/1.1\r\nHost: gateway.test\r\nX-A: 1\rX-B: 2\r\n\r\n" + SMUGGLED,
        400,
        id="bare-cr",
    ),
    pytest.param(
        b"GET /target HTTP/1.1\r\nHost: gateway.test\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED,
        400,
        id="nul-in-value",
    ),
    pytest.param(
        b"GET /target HTTP/1.1\r\nHost: gateway.test\r\nX(A): 1\r\n\r\n" + SMUGGLED,
        400,
        id="invalid-name",
    ),
    pytest.param(
        b"GET /target HTTP/1.1\r\nHost: gateway.test\r\n: empty\r\n\r\n" + SMUGGLED,
        400,
        id="empty-name",
    ),
    pytest.param(
        b"GET /target HTTP/1.1\r\nHost: gateway.test\r\n X-A: 1\r\n\r\n" + SMUGGLED,
        400,
        id="leading-space-line",
    ),
    pytest.param(
        b"GET /target HTTP/1.1\r\nHost: gateway.test\r\nX-A 1\r\n\r\n" + SMUGGLED,
        400,
        id="no-colon",
    ),
    pytest.param(b"GET /target HTTP/1.2\r\nHost: gateway.test\r\n\r\n", 400, id="http-1.2"),
    pytest.param(b"GET /tar get HTTP/1.1\r\nHost: gateway.test\r\n\r\n", 400, id="space-in-target"),
    pytest.param(b"G\x01T /target HTTP/1.1\r\nHost: gateway.test\r\n\r\n", 400, id="bad-method"),
]


@pytest.mark.parametrize(("raw", "status"), CASES)
def test_malformed_framing_is_rejected_before_the_origin(rig: Rig, raw: bytes, status: int) -> None:
    assert_rejected(rig.port, rig.origin, raw, status)


def test_over_long_request_line_is_rejected_before_the_origin(rig: Rig) -> None:
    raw = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
    watch = OriginWatch(rig.origin)
    with connect(rig.port) as s:
        s.sendall(raw)
        resp = ResponseReader().read(s)
        assert closed_by_peer(s, 5)
    assert resp.status in (414, 431)
    assert watch.new_requests() == 0


@pytest.mark.parametrize(
    "te",
    [
        pytest.param(["chunked, chunked"], id="chunked-twice"),
        pytest.param(["gzip, chunked"], id="gzip-chunked"),
        pytest.param(["chunked", "chunked"], id="two-fields"),
    ],
)
def test_strict_te_accepts_only_one_exact_chunked(rig: Rig, te: list[str]) -> None:
    raw = post(*(f"Transfer-Encoding: {v}" for v in te), body=b"0\r\n\r\n" + SMUGGLED)
    assert_rejected(rig.strict_port, rig.origin, raw, 400)


def test_strict_te_still_serves_plain_chunked(rig: Rig) -> None:
    raw = (
        b"POST /sink HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    resp = request(rig.strict_port, raw)
    assert resp.status == 200
    assert b'"bytes": 5' in resp.body


def test_gzip_then_chunked_without_strict_te_is_never_forwarded(rig: Rig) -> None:
    """Framing is sound but the coding cannot be relayed as such: 501
    (RFC 9112 §6.1), and nothing reaches the origin."""
    raw = post("Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n" + SMUGGLED)
    watch = OriginWatch(rig.origin)
    with connect(rig.port) as s:
        s.sendall(raw)
        resp = ResponseReader().read(s)
    assert resp.status in (400, 501)
    assert watch.new_requests() == 0


def test_pipelined_request_after_a_bad_one_is_not_served(rig: Rig) -> None:
    """A request the gateway rejected must not let bytes behind it through."""
    raw = post("Content-Length: 3", "Content-Length: 4", body=b"abc" + SMUGGLED)
    with connect(rig.port) as s:
        s.sendall(raw)
        wire = recv_until_close(s)
    assert wire.count(b"HTTP/1.1 ") == 1
    assert wire.startswith(b"HTTP/1.1 400")
    assert "/smuggled" not in origin_paths(rig.origin)


def test_upgrade_h2c_is_served_as_plain_http1(rig: Rig) -> None:
    """RFC 9110 §7.8: the gateway ignores ``Upgrade: h2c``: no 101, and the
    origin gets neither the upgrade nor HTTP2-Settings."""
    raw = (
        b"GET /headers HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    )
    with connect(rig.port) as s:
        s.sendall(raw)
        resp = ResponseReader().read(s)
        assert resp.status == 200
        # still an HTTP/1.1 connection: a second request is answered in kind
        s.sendall(b"GET / HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        again = ResponseReader().read(s)
    seen = seen_headers(resp.body)
    assert "upgrade" not in seen
    assert "http2-settings" not in seen
    assert again.status == 200


def test_upgrade_h2c_with_a_body_keeps_the_body_as_http1(rig: Rig) -> None:
    raw = (
        b"POST /sink HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade\r\n"
        b"Upgrade: h2c\r\nContent-Length: 5\r\n\r\nhello"
    )
    resp = request(rig.port, raw)
    assert resp.status == 200
    assert b'"bytes": 5' in resp.body


def test_rejections_are_counted_by_reason(rig: Rig) -> None:
    before = rig.gw.metric("http_request_errors_total", listener="web")
    assert_rejected(rig.port, rig.origin, post("Content-Length: 1", "Content-Length: 2"), 400)
    assert rig.gw.metric("http_request_errors_total", listener="web") == before + 1
