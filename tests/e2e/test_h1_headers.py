"""What the gateway does to header sections on an ``h1`` listener:
hop-by-hop stripping both ways, X-Forwarded-*, Via, W3C traceparent, the
431 caps, Host validation and the underscore policy. The origin's
``/headers`` route answers with the request head it saw."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import (
    OriginWatch,
    Response,
    ResponseReader,
    ScriptedBackend,
    closed_by_peer,
    connect,
    get,
    h1_config,
    h1_listener,
    read_head,
    request,
    seen_headers,
)
from tests.support.processes import origin

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass
class Rig:
    gw: Gateway
    port: int
    origin: int

    def headers_seen(self, extra: str = "", host: str = "gateway.test") -> dict[str, list[str]]:
        resp = request(self.port, get(self.port, "/headers", extra, host=host))
        assert resp.status == 200, resp
        return seen_headers(resp.body)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with origin() as op:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [op])), admin_port=admin) as gw:
            yield Rig(gw, port, op)


def rejected(rig: Rig, raw: bytes) -> tuple[Response, int]:
    """Send ``raw``; the gateway's answer and how many requests reached the origin."""
    watch = OriginWatch(rig.origin)
    with connect(rig.port) as s:
        s.sendall(raw)
        resp = ResponseReader().read(s)
        assert closed_by_peer(s, 5), "the gateway keeps a connection that sent a bad request"
    return resp, watch.new_requests()


# -- hop-by-hop --------------------------------------------------------------------------


def test_hop_by_hop_request_headers_are_not_forwarded(rig: Rig) -> None:
    seen = rig.headers_seen(
        "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
        "Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: gzip\r\nX-End-To-End: kept\r\n"
    )
    for name in ("keep-alive", "proxy-connection", "proxy-authorization", "te"):
        assert name not in seen
    # the gateway's own connection management is all the origin sees
    assert seen.get("connection", []) in ([], ["keep-alive"])
    assert seen["x-end-to-end"] == ["kept"]


def test_headers_named_in_connection_are_not_forwarded(rig: Rig) -> None:
    seen = rig.headers_seen(
        "Connection: x-private, X-Other\r\nX-Private: secret\r\nX-Other: 1\r\nX-Public: 2\r\n"
    )
    assert "x-private" not in seen
    assert "x-other" not in seen
    assert seen["x-public"] == ["2"]


def test_te_trailers_survives_as_the_one_hop_by_hop_field(rig: Rig) -> None:
    seen = rig.headers_seen("TE: trailers\r\n")
    assert seen["te"] == ["trailers"]


def hop_by_hop_response(conn: object, backend: ScriptedBackend) -> None:
    read_head(conn)  # type: ignore[arg-type]
    conn.sendall(  # type: ignore[attr-defined]
        b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    conn.recv(1)  # type: ignore[attr-defined]


def test_hop_by_hop_response_headers_are_not_forwarded() -> None:
    with ScriptedBackend(hop_by_hop_response) as backend:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h1_listener(port, [backend.port])), admin_port=admin):
            resp = request(port, get(port))
    assert (resp.status, resp.body) == (200, b"ok")
    assert resp.header("x-kept") == "yes"
    for name in ("x-secret", "keep-alive", "proxy-connection"):
        assert resp.header(name) is None, name
    assert resp.header("connection") in (None, "keep-alive")


# -- forwarding headers ------------------------------------------------------------------


def test_x_forwarded_for_is_the_client_ip_when_absent(rig: Rig) -> None:
    assert rig.headers_seen()["x-forwarded-for"] == ["127.0.0.1"]


def test_x_forwarded_for_appends_the_client_ip_to_existing_values(rig: Rig) -> None:
    seen = rig.headers_seen(
        "X-Forwarded-For: 203.0.113.7, 198.51.100.2\r\nX-Forwarded-For: 192.0.2.1\r\n"
    )
    assert seen["x-forwarded-for"] == ["203.0.113.7, 198.51.100.2, 192.0.2.1, 127.0.0.1"]


def test_x_forwarded_proto_and_host_describe_the_client_request(rig: Rig) -> None:
    seen = rig.headers_seen(host="shop.example:8080")
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["shop.example:8080"]
    assert seen["host"] == ["shop.example:8080"]


def test_client_supplied_x_forwarded_proto_and_host_are_replaced(rig: Rig) -> None:
    seen = rig.headers_seen("X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n")
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == ["gateway.test"]


def test_via_is_added(rig: Rig) -> None:
    assert rig.headers_seen()["via"] == ["1.1 expressgateway"]


def test_via_is_appended_to_an_existing_chain(rig: Rig) -> None:
    seen = rig.headers_seen("Via: 1.0 fred, 1.1 p.example\r\n")
    assert seen["via"] == ["1.0 fred, 1.1 p.example, 1.1 expressgateway"]


def test_responses_carry_via_too(rig: Rig) -> None:
    """``[listeners.http] via`` is documented as "Append `Via: 1.1
    expressgateway` to forwarded requests and responses"."""
    resp = request(rig.port, get(rig.port, "/"))
    assert resp.header("via") is not None
    assert "1.1 expressgateway" in resp.header("via")  # type: ignore[operator]


def test_forwarding_headers_can_be_turned_off() -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h1_listener(port, [op], http="x_forwarded = false\nvia = false")
        with gateway(h1_config(admin, listener), admin_port=admin):
            resp = request(port, get(port, "/headers", "X-Forwarded-For: 203.0.113.7\r\n"))
    seen = seen_headers(resp.body)
    assert seen["x-forwarded-for"] == ["203.0.113.7"]  # passed through untouched
    assert "x-forwarded-proto" not in seen
    assert "via" not in seen


# -- trace context --------------------------------------------------------------------------


def test_traceparent_keeps_the_trace_id_with_a_new_parent_span(rig: Rig) -> None:
    seen = rig.headers_seen(
        f"traceparent: 00-{TRACE}-{SPAN}-01\r\ntracestate: congo=t61rcWkgMzE\r\n"
    )
    (value,) = seen["traceparent"]
    m = TRACEPARENT.match(value)
    assert m is not None, value
    assert m.group(1) == TRACE
    assert m.group(2) != SPAN
    assert m.group(3) == "01"  # sampled flag kept
    assert seen["tracestate"] == ["congo=t61rcWkgMzE"]


def test_each_hop_gets_its_own_span_id(rig: Rig) -> None:
    extra = f"traceparent: 00-{TRACE}-{SPAN}-01\r\n"
    spans = {rig.headers_seen(extra)["traceparent"][0].split("-")[2] for _ in range(5)}
    assert len(spans) == 5


def test_a_trace_is_started_when_the_client_sent_none(rig: Rig) -> None:
    first = rig.headers_seen()["traceparent"][0]
    second = rig.headers_seen()["traceparent"][0]
    for value in (first, second):
        m = TRACEPARENT.match(value)
        assert m is not None, value
        assert m.group(1) != "0" * 32
        assert m.group(2) != "0" * 16
    assert first.split("-")[1] != second.split("-")[1]


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id is invalid
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id is invalid
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex is invalid
    ],
)
def test_an_invalid_traceparent_is_replaced_by_a_new_trace(rig: Rig, bad: str) -> None:
    (value,) = rig.headers_seen(f"traceparent: {bad}\r\n")["traceparent"]
    m = TRACEPARENT.match(value)
    assert m is not None, value
    assert m.group(1) not in (TRACE, "0" * 32)


# -- size caps ------------------------------------------------------------------------------


def test_256_header_fields_are_accepted(rig: Rig) -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(255))  # + Host = 256
    seen = rig.headers_seen(extra)
    assert seen["x-h254"] == ["v"]


def test_more_than_256_header_fields_is_431_and_not_forwarded(rig: Rig) -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(256))  # + Host = 257
    resp, reached = rejected(rig, get(rig.port, "/", extra))
    assert resp.status == 431
    assert reached == 0


def test_header_section_over_64_kib_is_431_and_not_forwarded(rig: Rig) -> None:
    extra = "".join(f"X-Big{i}: {'a' * 1000}\r\n" for i in range(70))
    resp, reached = rejected(rig, get(rig.port, "/", extra))
    assert resp.status == 431
    assert reached == 0


def test_one_header_value_over_64_kib_is_431(rig: Rig) -> None:
    resp, reached = rejected(rig, get(rig.port, "/", f"X-Huge: {'b' * 70_000}\r\n"))
    assert resp.status == 431
    assert reached == 0


def test_header_section_just_under_64_kib_is_accepted(rig: Rig) -> None:
    extra = "".join(f"X-Big{i}: {'a' * 1000}\r\n" for i in range(60))
    seen = rig.headers_seen(extra)
    assert len(seen["x-big59"][0]) == 1000


# -- Host ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.example,b.example\r\n\r\n", id="comma-joined"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", id="twice"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", id="space"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.example/path\r\n\r\n", id="slash"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n", id="userinfo"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a.example:port\r\n\r\n", id="bad-port"),
        pytest.param(b"GET / HTTP/1.1\r\nX-No-Host: 1\r\n\r\n", id="missing"),
    ],
)
def test_bad_host_is_400_and_not_forwarded(rig: Rig, raw: bytes) -> None:
    resp, reached = rejected(rig, raw)
    assert resp.status == 400
    assert reached == 0


def test_ipv6_literal_host_is_accepted(rig: Rig) -> None:
    seen = rig.headers_seen(host="[::1]:8080")
    assert seen["host"] == ["[::1]:8080"]


# -- underscores in names ---------------------------------------------------------------------


def test_underscore_header_is_rejected_by_default(rig: Rig) -> None:
    resp, reached = rejected(rig, get(rig.port, "/headers", "X_Forwarded_User: admin\r\n"))
    assert resp.status == 400
    assert reached == 0


@pytest.mark.parametrize(("policy", "kept"), [("drop", False), ("allow", True)])
def test_underscore_policy_drop_removes_and_allow_keeps_the_header(policy: str, kept: bool) -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        cfg = h1_config(
            admin, h1_listener(port, [op]), runtime=f'header_underscore_policy = "{policy}"'
        )
        with gateway(cfg, admin_port=admin):
            resp = request(port, get(port, "/headers", "X_User: admin\r\nX-Plain: 1\r\n"))
    assert resp.status == 200
    seen = seen_headers(resp.body)
    assert seen["x-plain"] == ["1"]
    assert ("x_user" in seen) is kept
    if kept:
        assert seen["x_user"] == ["admin"]
