"""QUIC flow control as backpressure (RFC 9000 §4.1, RFC 9114 §4.1):
:class:`FlowQuic` grants MAX_STREAM_DATA on a request stream only for body
bytes the gateway consumed (``ack_data``), never because bytes arrived, and
raises the limit in steps of at least half a window, not on every packet.
What the server received is measured from the codec's ``Body`` events; the
MAX_STREAM_DATA frames are counted where the client received them."""

from __future__ import annotations

from collections.abc import Callable

from expressgateway.core.events import Body, ResponseHead
from tests.unit.h3.helpers import POST, WINDOW, ServerPair, StingyQuic, body_of

BIG = bytes(range(256)) * (10 * WINDOW // 256)  # ten windows


def received(pair: ServerPair, sid: int) -> int:
    return len(body_of(pair.out, sid))


def limits(pair: ServerPair, sid: int) -> list[int]:
    return [value for s, value in pair.client.quic.max_stream_data if s == sid]


def upload(pair: ServerPair, body: bytes = BIG) -> int:
    sid, _ = pair.request(POST, body)
    return sid


def ack_everything(pair: ServerPair, sid: int, step: int | None = None) -> int:
    """Consume what arrived (``step`` bytes at a time), pumping after each ack,
    until the body ended; returns how many acks it took."""
    acked = 0
    for acks in range(10_000):
        got = received(pair, sid)
        if got == acked:
            if any(isinstance(ev, Body) and ev.end_stream for s, ev in pair.out if s == sid):
                return acks
            raise AssertionError(f"stalled at {got} bytes")
        n = min(step or got - acked, got - acked)
        pair.codec.ack_data(sid, n)
        acked += n
        pair.pump()
    raise AssertionError("never ended")


# -- credit withheld until consumed ------------------------------------------------------


def test_client_is_held_to_one_window_without_ack(pair: ServerPair) -> None:
    sid = upload(pair)
    got = received(pair, sid)
    assert WINDOW - 100 < got <= WINDOW  # the HEADERS and DATA frame headers count too
    assert limits(pair, sid) == []
    assert pair.quic.held[sid] == got
    # time passing (timers, ACKs, PTOs) grants nothing
    for _ in range(5):
        pair.now += 0.5
        pair.pump()
    assert received(pair, sid) == got
    assert not pair.client.quic._streams[sid].sender.buffer_is_empty


def test_ack_data_lets_the_rest_arrive(pair: ServerPair) -> None:
    sid = upload(pair)
    first = received(pair, sid)
    pair.codec.ack_data(sid, first)
    pair.pump()
    second = received(pair, sid)
    assert WINDOW - 100 < second - first <= WINDOW  # one more window, not more
    ack_everything(pair, sid)
    assert body_of(pair.out, sid) == BIG
    assert pair.out[-1][1].end_stream


def test_credit_follows_consumption_not_arrival(pair: ServerPair) -> None:
    """With nothing consumed for a while, a later ack releases exactly what was
    acked: bytes that arrived meanwhile are not credited."""
    sid = upload(pair)
    got = received(pair, sid)
    pair.codec.ack_data(sid, got // 2 + 100)  # over half a window: one step of credit
    pair.pump()
    later = received(pair, sid)
    assert later > got
    assert later - got <= got // 2 + 100 + 100  # about what was acked, plus framing
    assert pair.quic.held[sid] == later - (got // 2 + 100)


def test_acks_under_half_a_window_grant_nothing_yet(pair: ServerPair) -> None:
    sid = upload(pair)
    got = received(pair, sid)
    pair.codec.ack_data(sid, WINDOW // 2 - 200)
    pair.pump()
    assert received(pair, sid) == got and limits(pair, sid) == []
    pair.codec.ack_data(sid, 300)  # now past half a window
    pair.pump()
    assert received(pair, sid) > got
    assert len(limits(pair, sid)) == 1


def test_max_stream_data_is_not_sent_on_every_packet(pair: ServerPair) -> None:
    sid = upload(pair)
    acks = ack_everything(pair, sid, step=1000)
    assert body_of(pair.out, sid) == BIG
    raised = limits(pair, sid)
    assert raised == sorted(raised) and len(set(raised)) == len(raised)
    steps = [b - a for a, b in zip([WINDOW, *raised], raised, strict=False)]
    assert min(steps) >= WINDOW // 2  # each update grants at least half a window
    assert len(raised) <= acks // 6


def test_ack_for_more_than_held_is_clamped(pair: ServerPair) -> None:
    sid = upload(pair)
    got = received(pair, sid)
    pair.codec.ack_data(sid, 10 * WINDOW)
    assert pair.quic.held[sid] == 0
    pair.pump()
    assert received(pair, sid) - got <= WINDOW  # still one window at a time


def test_credit_is_per_stream(pair: ServerPair) -> None:
    a = upload(pair)
    b = upload(pair)
    got_a, got_b = received(pair, a), received(pair, b)
    assert got_a > WINDOW - 100 and got_b > WINDOW - 100
    pair.codec.ack_data(a, got_a)
    pair.pump()
    assert received(pair, a) > got_a
    assert received(pair, b) == got_b


def test_ack_data_for_unknown_streams_is_harmless(pair: ServerPair) -> None:
    pair.codec.ack_data(40, 1000)
    pair.codec.ack_data(2, 1000)  # a unidirectional stream id
    pair.pump()
    assert pair.quic.held == {}


def test_streams_are_untracked_once_both_sides_ended(pair: ServerPair) -> None:
    sid, _ = pair.request(POST, b"small")
    assert pair.quic.held == {sid: 5}
    pair.codec.ack_data(sid, 5)
    assert pair.quic.held == {sid: 0}
    pair.codec.send_response_head(sid, ResponseHead(204, [], True))
    pair.pump()
    assert pair.quic.held == {} and pair.codec.open_streams() == 0


# -- outbound: what waits for the client's ACKs ---------------------------------------------


def test_buffered_counts_response_bytes_not_yet_acknowledged(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(client_conf={"max_stream_data": 4 * WINDOW}, client_quic=StingyQuic)
    sid, _ = pair.request(POST, b"x")
    pair.codec.send_response_head(sid, ResponseHead(200, [], False))
    pair.codec.send_body(sid, b"r" * (8 * WINDOW), True)
    assert pair.codec.buffered(sid) > 8 * WINDOW
    pair.pump()  # the client's window is 4 windows and it never reads: half stays queued
    assert 3 * WINDOW < pair.codec.buffered(sid) < 5 * WINDOW
    assert len(pair.client.streams[sid].data) <= 4 * WINDOW
    assert pair.codec.buffered(999) == 0
