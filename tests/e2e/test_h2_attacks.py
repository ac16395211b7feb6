"""HTTP/2 attacks and malformed requests against a live gateway, with frames
crafted by hand (hyperframe, hpack) over a plain socket to an ``h1``
listener (prior knowledge) and over TLS (ALPN h2) to an ``h1s`` listener.

Floods end the attacker's connection with GOAWAY ENHANCE_YOUR_CALM, are
counted in ``h2_connection_errors_total{reason=...}``, cost the gateway no
memory to speak of, and leave every other connection serving. Malformed
requests (RFC 9113 §8.2.2 connection-specific fields, ``te`` other than
``trailers``) are stream errors: RST_STREAM PROTOCOL_ERROR, nothing reaches
the origin, and the connection keeps serving.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import MiB, OriginWatch, RssSampler, h1_config
from tests.support.h2 import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RawH2,
    curl,
    h2_listener,
)
from tests.support.processes import origin

RSS_BUDGET = 16 * MiB


@dataclass
class Rig:
    gw: Gateway
    origin: int
    clear: int  # h1 listener "clear": prior knowledge
    tls: int  # h1s listener "tls": ALPN h2
    small: int  # h1 listener "small": max_concurrent_streams = 4
    ca: str

    def client(self, listener: str) -> RawH2:
        """A started raw client on ``clear`` or ``tls``."""
        c = RawH2(self.tls, ca=self.ca) if listener == "tls" else RawH2(self.clear)
        c.start()
        return c

    def errors(self, listener: str, reason: str) -> float:
        return self.gw.metric("h2_connection_errors_total", listener=listener, reason=reason)


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str]) -> Iterator[Rig]:
    with origin() as op:
        admin, clear, tls, small = free_port(), free_port(), free_port(), free_port()
        cfg = h1_config(
            admin,
            h2_listener(clear, [op], name="clear"),
            h2_listener(tls, [op], name="tls", protocol="h1s", tls_files=tls_files),
            h2_listener(small, [op], name="small", h2_security="max_concurrent_streams = 4"),
        )
        with gateway(cfg, admin_port=admin) as gw:
            yield Rig(gw, op, clear, tls, small, tls_files["ca"])


def sendall_until_closed(c: RawH2, data: bytes) -> None:
    """Send ``data``; the gateway may close before it has read it all."""
    with contextlib.suppress(OSError):
        c.send(data)


def assert_calm_goaway(c: RawH2, reason: str) -> None:
    """The connection ends with GOAWAY ENHANCE_YOUR_CALM naming ``reason``."""
    assert c.wait_closed(10), "the gateway kept the connection open"
    assert c.goaway is not None, "closed without GOAWAY"
    assert c.goaway.error_code == ENHANCE_YOUR_CALM
    assert c.goaway.additional_data == reason.encode()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def assert_serves(c: RawH2, path: str = "/") -> None:
    sid = c.request(path)
    ex = c.response(sid)
    assert ex.status == 200, ex
    assert bytes(ex.data) == b"hello from origin"


listeners = pytest.mark.parametrize("listener", ["clear", "tls"])


# -- floods ----------------------------------------------------------------------------------


@listeners
def test_rapid_reset_sends_goaway_enhance_your_calm(rig: Rig, listener: str) -> None:
    """CVE-2023-44487: 200 HEADERS each followed by RST_STREAM. The budget
    (100 per window) runs out; streams reset in the read that opened them
    never reach the origin; a bystander's connection keeps working."""
    before = rig.errors(listener, "rapid_reset")
    watch = OriginWatch(rig.origin)
    with rig.client(listener) as bystander, rig.client(listener) as c:
        assert_serves(bystander)
        burst = b""
        for _ in range(200):
            sid = c.new_stream()
            burst += c.headers_frame(sid, c.request_headers("/"))
            burst += RstStreamFrame(sid, error_code=CANCEL).serialize()
        sendall_until_closed(c, burst)
        assert_calm_goaway(c, "rapid_reset")
        assert watch.new_requests() == 1  # the bystander's only
        assert_serves(bystander)
    assert rig.errors(listener, "rapid_reset") == before + 1
    assert curl("--http2-prior-knowledge", f"http://127.0.0.1:{rig.clear}/").stdout == (
        b"hello from origin"
    )


@listeners
def test_continuation_flood_is_cut_off_before_memory_grows(rig: Rig, listener: str) -> None:
    """CVE-2024-27316: a header block that never ends (HEADERS without
    END_HEADERS, then thousands of CONTINUATION frames)."""
    before = rig.errors(listener, "continuation_flood")
    watch = OriginWatch(rig.origin)
    with RssSampler(rig.gw.rss) as rss, rig.client(listener) as c:
        sid = c.new_stream()
        block = c.encode(c.request_headers("/"))
        flood = HeadersFrame(sid, data=block, flags=[]).serialize()
        flood += ContinuationFrame(sid, data=b"\x40\x01a\x01b" * 200).serialize() * 5000
        sendall_until_closed(c, flood)
        assert_calm_goaway(c, "continuation_flood")
    assert rss.growth < RSS_BUDGET, f"gateway RSS grew {rss.growth / MiB:.1f} MiB"
    assert rig.errors(listener, "continuation_flood") == before + 1
    assert watch.new_requests() == 0


@listeners
def test_hpack_bomb_closes_the_connection(rig: Rig, listener: str) -> None:
    """One header block: a 4000-octet field, literal with incremental
    indexing, then 100 one-octet references to its dynamic-table entry:
    about 4 KB on the wire decode to 400 KB, over twice
    ``max_header_list_size`` (64 KiB)."""
    before = rig.errors(listener, "hpack_bomb")
    watch = OriginWatch(rig.origin)
    with rig.client(listener) as c:
        block = c.encode(c.request_headers("/", extra=[("x-bomb", "b" * 4000)] * 101))
        assert len(block) < 4200
        sid = c.new_stream()
        c.send(HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        assert_calm_goaway(c, "hpack_bomb")
    assert rig.errors(listener, "hpack_bomb") == before + 1
    assert watch.new_requests() == 0


def test_header_list_over_the_advertised_size_gets_431_and_the_connection_lives(rig: Rig) -> None:
    """20 references (80 KB decoded): over the 64 KiB SETTINGS_MAX_HEADER_LIST_SIZE
    but under the bomb cap: the stream is answered 431, the connection serves on."""
    watch = OriginWatch(rig.origin)
    with rig.client("clear") as c:
        sid = c.request(extra=[("x-big", "b" * 4000)] * 20)
        ex = c.response(sid)
        assert ex.status == 431
        assert c.goaway is None
        assert_serves(c)
    assert watch.new_requests() == 1


def open_post(c: RawH2) -> bytes:
    """HEADERS of a POST to /sink on stream 1, body to follow."""
    return c.headers_frame(1, c.request_headers("/sink", "POST"), end_stream=False)


#: (reason, what to send 500 times, what goes first)
FLOODS: dict[str, tuple[str, bytes, Callable[[RawH2], bytes]]] = {
    "settings": ("settings_flood", SettingsFrame(0, settings={}).serialize(), lambda c: b""),
    "ping": ("ping_flood", PingFrame(0, opaque_data=b"flooding").serialize(), lambda c: b""),
    "window-update": (
        "window_update_flood",
        WindowUpdateFrame(0, window_increment=1).serialize(),
        lambda c: b"",
    ),
    "priority": (
        "priority_flood",
        PriorityFrame(1, depends_on=0, stream_weight=16).serialize(),
        lambda c: b"",
    ),
    "rst-on-idle-streams": (
        "rst_flood",
        RstStreamFrame(1, error_code=CANCEL).serialize(),
        lambda c: b"",
    ),
    "empty-data": ("empty_data_flood", DataFrame(1, data=b"").serialize(), open_post),
}


@listeners
@pytest.mark.parametrize("flood", list(FLOODS))
def test_frame_flood_sends_goaway_enhance_your_calm(rig: Rig, listener: str, flood: str) -> None:
    """500 frames that each cost the gateway work and the attacker nothing
    (CVE-2019-9512 ping, -9515 settings, -9516/-9518 empty frames, -9513
    priority): a per-window budget runs out, the connection ends, another
    connection on the same listener is not disturbed."""
    reason, frame, first = FLOODS[flood]
    before = rig.errors(listener, reason)
    with rig.client(listener) as bystander, rig.client(listener) as c:
        sendall_until_closed(c, first(c) + frame * 500)
        assert_calm_goaway(c, reason)
        assert_serves(bystander)
    assert rig.errors(listener, reason) == before + 1


def test_goaway_after_a_flood_names_the_last_stream_that_reached_the_origin(rig: Rig) -> None:
    """RFC 9113 §6.8: streams up to last-stream-id may have been processed,
    so the client must not replay them; streams above were not. A POST
    that reached the origin is stream 1; the flood comes in a later read."""
    watch = OriginWatch(rig.origin)
    with rig.client("clear") as c:
        c.send(open_post(c))
        assert wait_for(lambda: watch.new_requests() == 1)
        sendall_until_closed(c, DataFrame(1, data=b"").serialize() * 500)
        assert_calm_goaway(c, "empty_data_flood")
        assert c.goaway is not None and c.goaway.last_stream_id == 1


def test_streams_beyond_max_concurrent_streams_are_refused(rig: Rig) -> None:
    """RFC 9113 §5.1.2: a stream error REFUSED_STREAM, not a connection error;
    the streams within the limit complete."""
    with RawH2(rig.small) as c:
        c.start()
        c.ack_pings = True
        c.read_until(lambda: bool(c.server_settings))
        assert c.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 4
        sids = [c.request("/slow-head/300") for _ in range(5)]
        results = [c.response(sid) for sid in sids]
        assert [r.status for r in results[:4]] == [200] * 4
        assert results[4].reset == REFUSED_STREAM
        assert results[4].headers == []
        assert c.goaway is None
        sid = c.request("/")
        assert c.response(sid).status == 200  # a slot is free again


# -- malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "h2c"),
        ("te", "gzip"),
    ],
    ids=lambda f: f"{f[0]}: {f[1]}",
)
@listeners
def test_connection_specific_field_resets_the_stream_and_reaches_nobody(
    rig: Rig, listener: str, field: tuple[str, str]
) -> None:
    """RFC 9113 §8.2.2: malformed; on an HTTP/1.1 backend these fields
    would change the framing (request smuggling)."""
    watch = OriginWatch(rig.origin)
    with rig.client(listener) as c:
        sid = c.request(
            "/sink", method="POST", extra=[field], body=b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
        )
        ex = c.response(sid)
        assert ex.reset == PROTOCOL_ERROR
        assert ex.headers == []
        assert c.goaway is None
        assert watch.new_requests() == 0
        assert_serves(c)


def test_te_trailers_is_allowed(rig: Rig) -> None:
    with rig.client("clear") as c:
        sid = c.request("/", extra=[("te", "trailers")])
        assert c.response(sid).status == 200


@listeners
def test_authority_and_host_disagreeing_is_400(rig: Rig, listener: str) -> None:
    """RFC 9113 §8.3.1: ``:authority`` and ``host`` must name the same
    authority; the request is refused, the connection serves on."""
    watch = OriginWatch(rig.origin)
    with rig.client(listener) as c:
        sid = c.request("/", extra=[("host", "evil.test")])
        ex = c.response(sid)
        assert ex.status == 400
        assert b"bad_host" in ex.data
        assert watch.new_requests() == 0
        assert_serves(c)


def test_host_agreeing_with_authority_is_accepted(rig: Rig) -> None:
    with rig.client("clear") as c:
        sid = c.request("/", extra=[("host", "GATEWAY.test")])
        assert c.response(sid).status == 200
