"""DoS detectors, each triggered by the real frame sequence of the attack:
the connection ends with GOAWAY ENHANCE_YOUR_CALM (or the code named) and
an ``H2ConnectionError`` whose reason labels the metric."""

from __future__ import annotations

import pytest
from hpack import Encoder
from hyperframe.frame import HeadersFrame

from expressgateway.codec.h2 import AbuseLimits, H2ConnectionError, H2ServerCodec
from expressgateway.core.events import (
    ENHANCE_YOUR_CALM,
    NO_ERROR,
    REFUSED_STREAM,
    RequestHead,
    Reset,
    ResponseHead,
    Source,
)
from tests.unit.h2.helpers import (
    BASIC,
    RawClient,
    ServerPair,
    continuation,
    data,
    goaway,
    goaway_of,
    ping,
    priority,
    raw_frame,
    rst,
    rst_codes,
    server,
    settings,
    window_update,
)

EYC = ENHANCE_YOUR_CALM


def expect_calm(codec: H2ServerCodec, wire: bytes, reason: str, now: float = 1.0) -> None:
    with pytest.raises(H2ConnectionError) as info:
        codec.feed(wire, now)
    assert info.value.reason == reason
    assert info.value.code == EYC
    assert goaway_of(codec.data_to_send()).error_code == EYC
    assert codec.closed
    with pytest.raises(H2ConnectionError):  # dead for good
        codec.feed(ping(), now)


# -- rapid reset (CVE-2023-44487) -------------------------------------------------


def test_rapid_reset_sends_goaway_enhance_your_calm() -> None:
    """200 HEADERS + RST_STREAM pairs in one burst."""
    raw = RawClient()
    codec = server()
    wire = b"".join(raw.headers(1 + 2 * i, BASIC) + rst(1 + 2 * i) for i in range(200))
    expect_calm(codec, wire, "rapid_reset")
    assert codec.abuse_totals["rapid_reset"] == 101


def test_rapid_reset_across_reads() -> None:
    raw = RawClient()
    codec = server()
    with pytest.raises(H2ConnectionError) as info:
        for i in range(200):
            out = codec.feed(raw.headers(1 + 2 * i, BASIC, end_stream=False), 1.0)
            assert isinstance(out[0][1], RequestHead)
            assert codec.feed(rst(1 + 2 * i), 1.0) == [
                (1 + 2 * i, Reset(8, Source.DOWNSTREAM, "client_reset"))
            ]
    assert info.value.reason == "rapid_reset"


def test_stream_reset_in_the_read_that_opened_it_never_reaches_the_shell() -> None:
    """A stream opened and reset before the shell accepted it (hyper's
    "pending accept"): no RequestHead, no Reset, no upstream work."""
    raw = RawClient()
    codec = server()
    out = codec.feed(raw.headers(1, BASIC, end_stream=False) + rst(1) + raw.headers(3, BASIC), 1.0)
    assert [sid for sid, _ in out] == [3]
    assert codec.abuse_totals["rapid_reset"] == 1


def test_resets_spread_over_windows_are_tolerated() -> None:
    raw = RawClient()
    codec = server(max_pending_accept_reset_streams=10)
    sid = 1
    for window in range(5):
        now = window * 10.0
        for _ in range(10):
            codec.feed(raw.headers(sid, BASIC, end_stream=False) + rst(sid), now)
            sid += 2
    assert codec.abuse_totals["rapid_reset"] == 50
    assert not codec.closed


def test_resets_after_the_response_head_are_not_rapid() -> None:
    pair = ServerPair(H2ServerCodec(max_pending_accept_reset_streams=5))
    for _ in range(20):
        sid, _ = pair.request(end_stream=False)
        pair.codec.send_response_head(sid, ResponseHead(200, [], False))
        pair.to_client()
        pair.client.reset_stream(sid, 8)
        pair.to_server()
    assert "rapid_reset" not in pair.codec.abuse_totals
    assert not pair.codec.closed


# -- CONTINUATION flood (CVE-2024-27316) -----------------------------------------------


def test_continuation_flood_is_stopped_after_the_cap() -> None:
    """A header block that never ends: 10 000 empty CONTINUATION frames."""
    raw = RawClient()
    codec = server()
    head = raw.headers(1, BASIC, end_headers=False)
    flood = continuation(1, b"") * 10_000
    expect_calm(codec, head + flood, "continuation_flood")


def test_continuation_flood_fed_frame_by_frame_stops_early() -> None:
    raw = RawClient()
    codec = server(max_continuation_frames=32)
    codec.feed(raw.headers(1, BASIC, end_headers=False), 1.0)
    for _ in range(32):
        assert codec.feed(continuation(1, b"\x82"), 1.0) == []
    expect_calm(codec, continuation(1, b"\x82"), "continuation_flood")


def test_header_block_over_the_raw_cap_is_refused_before_it_is_buffered() -> None:
    """16 KiB frames of literal bytes: stopped once the block passes 2x the
    header list cap, whatever the frame count."""
    codec = server(max_header_list_size=4096)
    block = b"\x00" * 16000
    head = bytes(HeadersFrame(1, data=block[:8000]).serialize())
    expect_calm(codec, head + continuation(1, block), "continuation_flood")


def test_header_block_in_a_few_continuations_is_fine() -> None:
    raw = RawClient()
    codec = server()
    block = raw.block([*BASIC, (b"x-a", b"v" * 3000)])
    parts = [block[i : i + 1000] for i in range(0, len(block), 1000)]
    wire = bytes(HeadersFrame(1, data=parts[0], flags=["END_STREAM"]).serialize())
    for i, part in enumerate(parts[1:]):
        wire += continuation(1, part, end_headers=i == len(parts) - 2)
    [(_, head)] = codec.feed(wire, 1.0)
    assert isinstance(head, RequestHead) and head.headers == [(b"x-a", b"v" * 3000)]


# -- HPACK bomb (RFC 7541 §7.3, RFC 9113 §10.5.1) ------------------------------------


def test_hpack_bomb_closes_the_connection() -> None:
    """One 4 KB entry in the dynamic table, referenced 100 times at one
    octet each: 400 KB decoded from a 100-octet block."""
    enc = Encoder()
    codec = server()
    big = (b"x-bomb", b"a" * 4000)
    first = enc.encode([*BASIC, big])
    codec.feed(RawClient().raw_headers(1, first), 1.0)
    bomb = enc.encode([*BASIC, *([big] * 100)])
    assert len(bomb) < 200
    with pytest.raises(H2ConnectionError) as info:
        codec.feed(RawClient().raw_headers(3, bomb), 1.0)
    assert (info.value.reason, info.value.code) == ("hpack_bomb", EYC)
    assert goaway_of(codec.data_to_send()).error_code == EYC


# -- control-frame floods ----------------------------------------------------------


def test_settings_flood() -> None:
    expect_calm(server(), settings() * 101, "settings_flood")


def test_ping_flood() -> None:
    expect_calm(server(), ping() * 101, "ping_flood")


def test_pings_paid_by_our_data_are_allowed() -> None:
    """A peer's BDP probe per DATA frame we send is not a flood."""
    pair = ServerPair(initial_window_size=1 << 24)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    for _ in range(300):
        pair.codec.send_body(sid, b"x" * 100)
        pair.to_client()
        pair.client.ping(b"bdpprobe")
        pair.to_server()
    assert not pair.codec.closed


def test_empty_data_flood() -> None:
    """CVE-2019-9518: DATA frames with no payload and no END_STREAM."""
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC, end_stream=False), 1.0)
    expect_calm(codec, data(1, b"") * 101, "empty_data_flood")


def test_window_update_flood() -> None:
    expect_calm(server(), window_update(0, 1) * 201, "window_update_flood")


def test_priority_flood() -> None:
    """CVE-2019-9513 style: PRIORITY frames on idle streams."""
    expect_calm(server(), b"".join(priority(2 * i + 1) for i in range(101)), "priority_flood")


def test_priority_per_new_stream_is_free() -> None:
    raw = RawClient()
    pair_codec = server(max_concurrent_streams=1000)
    wire = b"".join(priority(1 + 2 * i) + raw.headers(1 + 2 * i, BASIC) for i in range(300))
    assert len(pair_codec.feed(wire, 1.0)) == 300


def test_rst_stream_flood_on_closed_streams() -> None:
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC), 1.0)
    codec.send_response_head(1, ResponseHead(200, [], True))
    expect_calm(codec, rst(1) * 102, "rst_flood")


def test_limits_restart_with_each_window() -> None:
    codec = server(abuse_limits=AbuseLimits(glitch_threshold=10_000))
    for window in range(5):
        codec.feed(settings() * 90, window * 10.0)
    assert not codec.closed


def test_sustained_floods_under_each_limit_add_up_to_glitches() -> None:
    """90 SETTINGS per 10 s never trips the SETTINGS limit, but a minute of
    it does trip the glitch score."""
    codec = server()
    with pytest.raises(H2ConnectionError) as info:
        for window in range(6):
            codec.feed(settings() * 90, window * 10.0)
    assert info.value.reason == "glitches"


def test_configured_flood_limits() -> None:
    codec = server(abuse_limits=AbuseLimits(max_pings=3))
    codec.feed(ping() * 3, 1.0)
    expect_calm(codec, ping(), "ping_flood")


# -- glitches ------------------------------------------------------------------------


def test_unknown_frames_add_up_to_glitches() -> None:
    codec = server(abuse_limits=AbuseLimits(glitch_threshold=50))
    wire = raw_frame(0xFA, 0, 0, b"x") * 60
    expect_calm(codec, wire, "glitches")


def test_glitch_window_restarts() -> None:
    codec = server(abuse_limits=AbuseLimits(glitch_threshold=50))
    for minute in range(5):
        codec.feed(raw_frame(0xFA, 0, 0, b"x") * 40, minute * 60.0)
    assert not codec.closed
    assert codec.abuse_totals["glitches"] >= 200


# -- stream caps -------------------------------------------------------------------------


def test_concurrent_stream_limit_refuses_with_refused_stream() -> None:
    """RFC 9113 §5.1.2: a stream error, not a connection error (h2 alone
    would close the connection)."""
    raw = RawClient()
    codec = server(max_concurrent_streams=2)
    out = codec.feed(b"".join(raw.headers(1 + 2 * i, BASIC) for i in range(3)), 1.0)
    assert [sid for sid, _ in out] == [1, 3]
    assert rst_codes(codec.data_to_send()) == {5: REFUSED_STREAM}
    assert codec.abuse_totals["refused_stream"] == 1
    codec.send_response_head(1, ResponseHead(200, [], True))
    [(sid, _)] = codec.feed(raw.headers(7, BASIC), 1.0)
    assert sid == 7


def test_lifetime_stream_cap_sends_graceful_goaway() -> None:
    raw = RawClient()
    codec = server(max_streams_per_connection=3)
    out = codec.feed(b"".join(raw.headers(1 + 2 * i, BASIC) for i in range(3)), 1.0)
    assert [sid for sid, _ in out] == [1, 3, 5]
    frame = goaway_of(codec.data_to_send())
    assert (frame.error_code, frame.last_stream_id) == (NO_ERROR, 5)
    assert codec.draining and not codec.closed
    assert codec.feed(raw.headers(7, BASIC), 1.0) == []
    assert rst_codes(codec.data_to_send()) == {7: REFUSED_STREAM}
    # the streams below the cap are still served
    codec.send_response_head(5, ResponseHead(200, [], True))
    assert codec.open_streams == 2


def test_client_goaway_is_not_abuse() -> None:
    codec = server()
    out = codec.feed(goaway(0), 1.0)
    assert out[0][0] == 0 and codec.goaway_received
