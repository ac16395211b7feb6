"""HTTP/2 clients in front of an HTTP/1.1 origin: how the messages the two
sides exchange are translated (1xx, bodies that end early or at close,
204, cookies, lengths that lie, field names), a graceful shutdown with a
stream in flight, and what the boot log says about the HTTP/2 features."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import OriginWatch, h1_config, seen_headers
from tests.support.h2 import NO_ERROR, PROTOCOL_ERROR, Exchange, RawH2, h2_listener
from tests.support.processes import origin


@dataclass
class Rig:
    gw: Gateway
    port: int
    origin: int

    def exchange(self, path: str, **kwargs: object) -> Exchange:
        """One request on a fresh connection; checks the connection lived."""
        with RawH2(self.port) as c:
            c.start()
            sid = c.request(path, **kwargs)  # type: ignore[arg-type]
            ex = c.response(sid)
            assert c.goaway is None
            return ex


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with origin() as op:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h2_listener(port, [op])), admin_port=admin) as gw:
            yield Rig(gw, port, op)


def test_early_hints_reach_the_client_before_the_response(rig: Rig) -> None:
    ex = rig.exchange("/early-hints")
    assert [dict(block)[":status"] for block in ex.headers] == ["103", "200"]
    assert dict(ex.headers[0])["link"] == "</style.css>; rel=preload"
    assert bytes(ex.data) == b"after hints"


@pytest.mark.parametrize("path", ["/truncate", "/truncate-chunked"])
def test_origin_cutting_the_body_short_resets_the_stream(rig: Rig, path: str) -> None:
    """A truncated body must never end with END_STREAM: the client would
    take it as complete."""
    ex = rig.exchange(path)
    assert ex.status == 200
    assert not ex.ended
    assert ex.reset is not None and ex.reset != NO_ERROR


def test_close_delimited_body_ends_the_stream_cleanly(rig: Rig) -> None:
    ex = rig.exchange("/close-delimited")
    assert (ex.status, bytes(ex.data), ex.ended, ex.reset) == (200, b"until the end", True, None)


def test_204_has_no_body(rig: Rig) -> None:
    ex = rig.exchange("/status/204")
    assert (ex.status, bytes(ex.data), ex.ended) == (204, b"", True)


def test_cookie_fields_are_joined_for_the_h1_origin(rig: Rig) -> None:
    """RFC 9113 §8.2.3: HTTP/2 may split cookies; HTTP/1.1 needs one field."""
    ex = rig.exchange("/headers", extra=[("cookie", "a=1"), ("cookie", "b=2")])
    assert seen_headers(bytes(ex.data))["cookie"] == ["a=1; b=2"]


@pytest.mark.parametrize(
    ("declared", "body"), [(3, b"hello"), (10, b"hello")], ids=["long", "short"]
)
def test_body_not_matching_content_length_resets_the_stream(
    rig: Rig, declared: int, body: bytes
) -> None:
    """RFC 9113 §8.1.1: malformed, a stream error; the origin never answers
    it as a complete request."""
    ex = rig.exchange("/sink", method="POST", extra=[("content-length", str(declared))], body=body)
    assert ex.reset == PROTOCOL_ERROR
    assert ex.status is None


def test_declared_body_over_the_cap_is_413_before_the_origin(rig: Rig) -> None:
    watch = OriginWatch(rig.origin)
    with RawH2(rig.port) as c:
        c.start()
        sid = c.new_stream()
        headers = c.request_headers("/sink", "POST", extra=[("content-length", str(1 << 40))])
        c.send(c.headers_frame(sid, headers, end_stream=False))
        ex = c.response(sid)
    assert ex.status == 413
    assert watch.new_requests() == 0


@pytest.mark.parametrize(
    ("field", "expected"),
    [(("x_under", "1"), "400"), (("X-Upper", "1"), "reset"), (("x-v", "a\r\nb"), "reset")],
    ids=["underscore", "upper-case", "crlf"],
)
def test_bad_field_names_and_values_never_reach_the_origin(
    rig: Rig, field: tuple[str, str], expected: str
) -> None:
    """Underscores are refused by policy (400, they alias ``-`` behind some
    servers); upper case and CR/LF are malformed (RFC 9113 §8.2.1)."""
    watch = OriginWatch(rig.origin)
    ex = rig.exchange("/headers", extra=[field])
    if expected == "reset":
        assert ex.reset == PROTOCOL_ERROR
    else:
        assert ex.status == int(expected)
    assert watch.new_requests() == 0


def test_request_body_on_get_is_forwarded(rig: Rig) -> None:
    ex = rig.exchange("/headers", body=b"hello")
    assert ex.status == 200
    assert json.loads(bytes(ex.data))["method"] == "GET"


def test_graceful_shutdown_sends_goaway_and_finishes_the_stream_in_flight() -> None:
    """SIGTERM: GOAWAY NO_ERROR (last-stream-id 2^31-1 first, RFC 9113
    §6.8), the stream in flight completes, then the connection closes."""
    with origin() as op:
        admin, port = free_port(), free_port()
        with gateway(h1_config(admin, h2_listener(port, [op])), admin_port=admin) as gw:
            with RawH2(port) as c:
                c.start()
                sid = c.request("/slow-body/800")
                assert c.read_until(lambda: bool(c.exchanges.get(sid)))  # head is in
                assert gw.proc is not None
                gw.proc.send_signal(signal.SIGTERM)
                assert c.wait_goaway() is not None
                ex = c.response(sid)
                assert c.wait_closed()
            assert c.goaway is not None and c.goaway.error_code == NO_ERROR
            assert (ex.status, bytes(ex.data), ex.ended) == (200, b"done", True)


def test_boot_log_does_not_call_active_h2_features_ignored() -> None:
    """``h2_backend`` and ``h2_security`` work (see the other h2 tests), so
    the boot log must not say they are "accepted and ignored"."""
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h2_listener(
            port,
            [op],
            backend_protocol="h2",
            h2_security="max_concurrent_streams = 10",
        )
        with gateway(h1_config(admin, listener), admin_port=admin) as gw:
            logs = gw.logs()
    wrong = [
        line
        for line in logs.splitlines()
        if "not active yet" in line and ('"h2_backend"' in line or '"h2_security"' in line)
    ]
    assert wrong == []
