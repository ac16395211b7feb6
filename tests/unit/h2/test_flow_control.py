"""Flow control as backpressure (RFC 9113 §5.2, §6.9): credit goes back only
through ``ack_data``; ``send_body`` never exceeds the peer's windows and
says when it is blocked; ``WindowOpened`` says when to go on."""

from __future__ import annotations

import h2.events
import pytest
from hyperframe.frame import DataFrame, WindowUpdateFrame

from expressgateway.codec.h2 import WINDOW_OPENED, H2ConnectionError, H2ServerCodec
from expressgateway.core.events import CANCEL, Body, Reset, ResponseHead, Source
from tests.unit.h2.helpers import (
    BASIC,
    RawClient,
    ServerPair,
    data,
    of_type,
    parse_frames,
    server,
)

POST = [(b":method", b"POST"), *BASIC[1:]]


def window_updates(wire: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    for f in of_type(parse_frames(wire), WindowUpdateFrame):
        out[f.stream_id] = out.get(f.stream_id, 0) + f.window_increment
    return out


# -- inbound: credit only through ack_data -----------------------------------------


def test_no_window_update_until_the_shell_acks() -> None:
    pair = ServerPair()
    sid, out = pair.request(POST, b"x" * 40000, end_stream=False)
    assert sum(len(ev.data) for _, ev in out if isinstance(ev, Body)) == 40000
    assert window_updates(pair.codec.data_to_send()) == {}
    pair.codec.ack_data(sid, 40000)
    assert window_updates(pair.codec.data_to_send()) == {sid: 40000}


def test_client_is_held_at_the_window_until_acked() -> None:
    pair = ServerPair()
    sid, _ = pair.request(POST, b"x" * 65535, end_stream=False)
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 0
    pair.codec.ack_data(sid, 65535)
    pair.to_client()
    assert pair.client.local_flow_control_window(sid) == 65535


def test_partial_acks_are_batched_by_h2() -> None:
    pair = ServerPair()
    sid, _ = pair.request(POST, b"x" * 40000, end_stream=False)
    pair.codec.ack_data(sid, 20000)  # under half the stream window: held
    assert window_updates(pair.codec.data_to_send()) == {}
    pair.codec.ack_data(sid, 30000)  # more than outstanding: clamped
    assert window_updates(pair.codec.data_to_send()) == {sid: 40000}


def test_padding_is_acknowledged_by_the_codec() -> None:
    """The shell never sees padding, so the codec returns its credit."""
    codec = server()
    raw = RawClient()
    codec.feed(raw.headers(1, POST, end_stream=False), 1.0)
    wire = b"".join(data(1, b"ab", pad=250) for _ in range(200))
    out = codec.feed(wire, 1.0)
    assert len(out) == 200
    # padding (251 octets a frame) went back without any ack_data, in h2's
    # batches (half the window: 131 frames); the data octets did not
    assert window_updates(codec.data_to_send()) == {1: 131 * 251}


def test_connection_credit_of_a_reset_stream_comes_back() -> None:
    pair = ServerPair(H2ServerCodec(initial_connection_window_size=65535))
    sid, _ = pair.request(POST, b"x" * 40000, end_stream=False)
    assert window_updates(pair.codec.data_to_send()) == {}
    pair.client.reset_stream(sid, CANCEL)
    pair.to_server()
    assert window_updates(pair.codec.data_to_send()) == {0: 40000}
    pair.codec.ack_data(sid, 40000)  # late ack of a gone stream: ignored
    assert pair.codec.data_to_send() == b""


def test_credit_of_a_finished_stream_comes_back_when_it_ends() -> None:
    pair = ServerPair(H2ServerCodec(initial_connection_window_size=65535))
    sid, _ = pair.request(POST, b"x" * 40000)
    pair.codec.send_response_head(sid, ResponseHead(200, [], True))
    assert window_updates(pair.codec.data_to_send()) == {0: 40000}


def test_data_of_a_rejected_stream_is_credited_at_once() -> None:
    codec = server(initial_connection_window_size=65535)
    raw = RawClient()
    out = codec.feed(raw.headers(1, [*POST, (b"x_bad", b"1")], end_stream=False), 1.0)
    assert out[0][1].error.status == 400
    assert codec.feed(b"".join(data(1, b"x" * 10000) for _ in range(4)), 1.0) == []
    assert window_updates(codec.data_to_send()) == {0: 40000, 1: 40000}


# -- outbound: send_body and WindowOpened ------------------------------------------


def test_send_body_takes_only_what_the_stream_window_allows() -> None:
    pair = ServerPair(initial_window_size=10)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a" * 100, True) == 10
    events = pair.to_client()
    assert of_type(events, h2.events.DataReceived)[0].data == b"a" * 10
    assert not of_type(events, h2.events.StreamEnded)
    assert pair.codec.send_body(sid, b"a" * 90, True) == 0
    pair.client.increment_flow_control_window(50, sid)
    assert pair.to_server() == [(sid, WINDOW_OPENED)]
    assert pair.codec.send_body(sid, b"a" * 90, True) == 50
    pair.client.increment_flow_control_window(40, sid)
    assert pair.to_server() == [(sid, WINDOW_OPENED)]
    assert pair.codec.send_body(sid, b"a" * 40, True) == 40
    assert of_type(pair.to_client(), h2.events.StreamEnded)
    assert pair.codec.open_streams == 0


def test_connection_window_blocks_every_stream() -> None:
    pair = ServerPair()
    sids = [pair.request()[0] for _ in range(2)]
    for sid in sids:
        pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sids[0], b"a" * 65535) == 65535
    assert pair.codec.send_body(sids[1], b"b" * 10) == 0
    pair.to_client()
    pair.client.acknowledge_received_data(65535, sids[0])  # conn + stream 1
    out = pair.to_server()
    assert out == [(sids[1], WINDOW_OPENED)]
    assert pair.codec.send_body(sids[1], b"b" * 10) == 10


def test_connection_update_does_not_open_a_stream_at_zero() -> None:
    pair = ServerPair(initial_window_size=5)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a" * 10) == 5
    pair.client.increment_flow_control_window(1000)  # connection only
    assert pair.to_server() == []
    assert pair.codec.window(sid) == 0


def test_settings_initial_window_increase_opens_blocked_streams() -> None:
    """RFC 9113 §6.9.2: a SETTINGS change applies to open streams."""
    pair = ServerPair(initial_window_size=5)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a" * 10) == 5
    pair.client.update_settings({4: 65535})
    assert pair.to_server() == [(sid, WINDOW_OPENED)]
    assert pair.codec.send_body(sid, b"a" * 5) == 5


def test_window_made_negative_by_settings_must_be_refilled() -> None:
    pair = ServerPair(initial_window_size=100)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a" * 100) == 100
    pair.client.update_settings({4: 50})  # window now -50
    pair.to_server()
    assert pair.codec.send_body(sid, b"a" * 10) == 0
    pair.client.increment_flow_control_window(60, sid)  # -> 10
    assert pair.to_server() == [(sid, WINDOW_OPENED)]
    assert pair.codec.send_body(sid, b"a" * 50) == 10


def test_large_bodies_are_split_at_the_peer_frame_size() -> None:
    pair = ServerPair(initial_window_size=1 << 20)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a" * 40000, True) == 40000
    sizes = [len(f.data) for f in of_type(parse_frames(pair.codec.data_to_send()), DataFrame)]
    assert sizes == [16384, 16384, 7232]


def test_larger_peer_frame_size_is_used() -> None:
    pair = ServerPair(initial_window_size=1 << 20, max_frame_size=32768)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    pair.codec.send_body(sid, b"a" * 40000, True)
    sizes = [len(f.data) for f in of_type(parse_frames(pair.codec.data_to_send()), DataFrame)]
    assert sizes == [32768, 7232]


def test_end_stream_with_empty_body_needs_no_window() -> None:
    pair = ServerPair(initial_window_size=0)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"", True) == 0
    assert of_type(pair.to_client(), h2.events.StreamEnded)


def test_window_dribble_counts_a_glitch() -> None:
    pair = ServerPair(initial_window_size=0)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a" * 5000) == 0
    pair.client.increment_flow_control_window(1, sid)
    assert pair.to_server() == [(sid, WINDOW_OPENED)]
    assert pair.codec.abuse_totals["dribble"] == 1


def test_window_dribble_flood_closes_the_connection() -> None:
    """CVE-2019-9511 (data dribble): one-byte windows cost a frame each."""
    pair = ServerPair(initial_window_size=0)
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    with pytest.raises(H2ConnectionError) as info:
        for _ in range(100):
            assert pair.codec.send_body(sid, b"a" * 5000) in (0, 1)
            pair.codec.send_body(sid, b"a" * 5000)
            pair.client.increment_flow_control_window(1, sid)
            pair.to_server()
    assert info.value.reason == "glitches"


# -- zero-window stall (RFC 9113 §10.5) ----------------------------------------------


def test_stream_blocked_too_long_is_reset() -> None:
    pair = ServerPair(H2ServerCodec(send_stall_timeout=5.0), initial_window_size=0)
    pair.now = 10.0
    sid, _ = pair.request()
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    assert pair.codec.send_body(sid, b"a") == 0
    assert pair.codec.next_deadline() == 15.0
    assert pair.codec.check_timeouts(14.0) == []
    out = pair.codec.check_timeouts(15.0)
    assert out == [(sid, Reset(CANCEL, Source.DOWNSTREAM, "send_stall"))]
    resets = [e for e in pair.to_client() if isinstance(e, h2.events.StreamReset)]
    assert resets[0].error_code == CANCEL
    assert pair.codec.open_streams == 0


def test_zero_window_peer_is_pinged_and_dropped_without_an_ack() -> None:
    """The peer never opens the window and stops answering: send_body takes
    nothing and the keep-alive PING times out."""
    codec = server(keep_alive_interval_ms=1000, keep_alive_timeout_ms=2000)
    raw = RawClient()
    from tests.unit.h2.helpers import settings

    codec.feed(settings({4: 0}) + raw.headers(1, BASIC), 0.0)
    codec.send_response_head(1, ResponseHead(200, [], False))
    assert codec.send_body(1, b"a" * 100) == 0
    codec.data_to_send()
    assert codec.check_timeouts(0.5) == []
    assert codec.check_timeouts(1.0) == []  # PING sent
    from hyperframe.frame import PingFrame

    pings = of_type(parse_frames(codec.data_to_send()), PingFrame)
    assert len(pings) == 1 and "ACK" not in pings[0].flags
    assert codec.next_deadline() == 3.0
    with pytest.raises(H2ConnectionError) as info:
        codec.check_timeouts(3.0)
    assert info.value.reason == "keepalive_timeout"
    assert codec.closed
