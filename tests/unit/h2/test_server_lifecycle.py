"""Connection lifetime on the server codec: graceful shutdown (two-step
GOAWAY, RFC 9113 §6.8), immediate GOAWAY, keep-alive PINGs and timers,
construction from the configuration."""

from __future__ import annotations

import pytest
from hyperframe.frame import GoAwayFrame, PingFrame

from expressgateway.codec.h2 import H2ConnectionError, H2ServerCodec
from expressgateway.config.model import H2SecurityConfig
from expressgateway.core.events import NO_ERROR, REFUSED_STREAM, RequestHead, ResponseHead
from tests.unit.h2.helpers import (
    BASIC,
    RawClient,
    ServerPair,
    of_type,
    parse_frames,
    ping,
    rst_codes,
    server,
)

DRAIN = b"eg-drain"


def frames_of(codec: H2ServerCodec) -> list:
    return parse_frames(codec.data_to_send())


# -- graceful shutdown -----------------------------------------------------------------


def test_shutdown_is_two_goaways_around_a_ping() -> None:
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC, end_stream=False), 1.0)
    codec.shutdown(10.0)
    first = frames_of(codec)
    assert isinstance(first[0], GoAwayFrame)
    assert (first[0].last_stream_id, first[0].error_code) == (2**31 - 1, NO_ERROR)
    assert isinstance(first[1], PingFrame) and first[1].opaque_data == DRAIN
    assert codec.draining and not codec.closed

    # a request that crossed the first GOAWAY is still served
    out = codec.feed(raw.headers(3, BASIC) + ping(DRAIN, ack=True), 10.1)
    assert [sid for sid, _ in out] == [3]
    [final] = of_type(frames_of(codec), GoAwayFrame)
    assert (final.last_stream_id, final.error_code) == (3, NO_ERROR)

    # later streams are refused (safe for the client to retry elsewhere)
    assert codec.feed(raw.headers(5, BASIC), 10.2) == []
    assert rst_codes(codec.data_to_send()) == {5: REFUSED_STREAM}

    # in-flight streams finish; then the shell may close
    codec.send_response_head(1, ResponseHead(200, [], True))
    codec.send_response_head(3, ResponseHead(200, [], True))
    assert codec.open_streams == 0


def test_shutdown_without_ping_ack_sends_the_final_goaway_on_timeout() -> None:
    raw = RawClient()
    codec = server(keep_alive_timeout_ms=2000)
    codec.feed(raw.headers(1, BASIC), 1.0)
    codec.shutdown(10.0)
    codec.data_to_send()
    assert codec.next_deadline() == 12.0
    assert codec.check_timeouts(11.0) == []
    assert codec.data_to_send() == b""
    codec.check_timeouts(12.0)
    [final] = of_type(frames_of(codec), GoAwayFrame)
    assert final.last_stream_id == 1


def test_shutdown_twice_is_one_shutdown() -> None:
    codec = server()
    codec.shutdown(1.0)
    codec.data_to_send()
    codec.shutdown(2.0)
    assert codec.data_to_send() == b""


def test_immediate_goaway_with_a_last_stream_id() -> None:
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC) + raw.headers(3, BASIC), 1.0)
    codec.goaway(NO_ERROR, last_stream_id=1)
    [frame] = of_type(frames_of(codec), GoAwayFrame)
    assert frame.last_stream_id == 1
    assert codec.feed(raw.headers(5, BASIC), 1.0) == []
    assert rst_codes(codec.data_to_send()) == {5: REFUSED_STREAM}


def test_goaway_defaults_to_the_highest_stream_seen() -> None:
    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(7, BASIC), 1.0)
    codec.goaway()
    assert of_type(frames_of(codec), GoAwayFrame)[0].last_stream_id == 7


# -- keep-alive -------------------------------------------------------------------------


def test_idle_connection_is_pinged_after_the_interval() -> None:
    codec = server(keep_alive_interval_ms=5000, keep_alive_timeout_ms=3000)
    codec.feed(ping(), 100.0)
    codec.data_to_send()
    assert codec.next_deadline() == 105.0
    assert codec.check_timeouts(104.9) == []
    assert codec.data_to_send() == b""
    codec.check_timeouts(105.0)
    [sent] = of_type(frames_of(codec), PingFrame)
    assert "ACK" not in sent.flags
    assert codec.next_deadline() == 108.0
    codec.feed(ping(sent.opaque_data, ack=True), 105.5)
    assert codec.ping_rtt == 0.5
    assert codec.next_deadline() == 110.5


def test_traffic_postpones_the_keepalive_ping() -> None:
    codec = server(keep_alive_interval_ms=5000)
    for t in range(0, 20, 2):
        codec.feed(ping(), float(t))
        codec.check_timeouts(float(t))
    pings = of_type(frames_of(codec), PingFrame)
    assert len(pings) == 10 and all("ACK" in f.flags for f in pings)  # answers only


def test_missing_ping_ack_closes_the_connection() -> None:
    codec = server(keep_alive_interval_ms=1000, keep_alive_timeout_ms=1000)
    codec.check_timeouts(0.0)
    codec.check_timeouts(1.0)
    with pytest.raises(H2ConnectionError) as info:
        codec.check_timeouts(2.0)
    assert (info.value.reason, info.value.code) == ("keepalive_timeout", NO_ERROR)
    assert of_type(frames_of(codec), GoAwayFrame)


def test_keepalive_disabled_with_zero_interval() -> None:
    codec = server(keep_alive_interval_ms=0)
    codec.check_timeouts(0.0)
    codec.check_timeouts(1e6)
    assert codec.data_to_send() == b""
    assert codec.next_deadline() is None


def test_unsolicited_ping_ack_is_ignored() -> None:
    codec = server()
    codec.feed(ping(b"whatever", ack=True), 1.0)
    assert codec.ping_rtt is None and not codec.closed


# -- construction ------------------------------------------------------------------------


def test_codec_from_the_security_config() -> None:
    cfg = H2SecurityConfig(max_concurrent_streams=3, initial_stream_window_size=1000)
    codec = H2ServerCodec.from_config(cfg, scheme=b"http")
    raw = RawClient()
    codec.initiate()
    from expressgateway.codec.h2.frames import PREFACE
    from tests.unit.h2.helpers import settings

    out = codec.feed(
        PREFACE + settings() + b"".join(raw.headers(1 + 2 * i, BASIC) for i in range(4)), 1.0
    )
    assert [sid for sid, _ in out] == [1, 3, 5]
    assert all(isinstance(ev, RequestHead) and ev.scheme == b"http" for _, ev in out)
    assert rst_codes(codec.data_to_send()) == {7: REFUSED_STREAM}


def test_defaults_match_the_security_config_defaults() -> None:
    cfg = H2SecurityConfig()
    codec = H2ServerCodec()
    assert codec.max_send_buf_size == cfg.max_send_buf_size
    assert codec._ka_interval == cfg.keep_alive_interval_ms / 1000
    assert codec._max_concurrent == cfg.max_concurrent_streams


# -- transport loss -------------------------------------------------------------------


def test_connection_lost_resets_every_unfinished_stream() -> None:
    from expressgateway.core.events import CANCEL, Reset, Source

    raw = RawClient()
    codec = server()
    codec.feed(raw.headers(1, BASIC) + raw.headers(3, BASIC, end_stream=False), 1.0)
    codec.send_response_head(1, ResponseHead(200, [], True))
    assert codec.connection_lost() == [(3, Reset(CANCEL, Source.DOWNSTREAM, "connection_lost"))]
    assert codec.closed and codec.open_streams == 0
    with pytest.raises(H2ConnectionError):
        codec.feed(ping(), 2.0)


def test_finished_streams_do_not_pile_up_in_h2() -> None:
    """h2 drops closed streams only while counting open ones, which the
    server codec asks it to do every few new streams, not on each: a long
    connection still keeps only a handful of finished streams."""
    pair = ServerPair()
    for _ in range(200):
        sid, _ = pair.request()
        pair.codec.send_response_head(sid, ResponseHead(204, [], True))
        pair.to_client()
    assert pair.codec.open_streams == 0
    assert len(pair.codec._conn.streams) <= 16
