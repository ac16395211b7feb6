"""How :class:`FlowQuic` builds packets in the steady state (1-RTT, nothing
but ACKs, limits and stream data to send): the same frames as aioquic's own
loop, with stream limits written only when something could have changed
them and the send queue left at a full packet."""

from __future__ import annotations

from collections.abc import Callable

from aioquic._buffer import Buffer
from aioquic.buffer import encode_uint_var
from aioquic.quic.packet_builder import QuicDeliveryState

from expressgateway.core.events import ResponseHead
from tests.unit.h3.helpers import GET, POST, WINDOW, ServerPair

KIB = bytes(range(256)) * 4


def answer(pair: ServerPair, sid: int, body: bytes = KIB) -> None:
    pair.codec.send_response_head(sid, ResponseHead(200, [], False, len(body)))
    pair.codec.send_body(sid, body, True)


def test_a_batch_of_responses_fills_its_datagrams(pair: ServerPair) -> None:
    sids = []
    for _ in range(10):
        sids.append(pair.client.new_stream())
        pair.client.h3.send_headers(sids[-1], list(GET), end_stream=True)
    pair.to_server()
    for sid in sids:
        answer(pair, sid)
    pair.now += 0.001
    datagrams = [data for data, _ in pair.quic.datagrams_to_send(pair.now)]
    size = pair.quic._max_datagram_size
    assert len(datagrams) < len(sids)  # responses share datagrams
    assert all(len(d) >= size - 40 for d in datagrams[:-1])  # each one filled
    for data in datagrams:
        pair.client.quic.receive_datagram(data, ("127.0.0.1", 4433), pair.now)
    pair.client.drain()
    pair.pump()
    for sid in sids:
        log = pair.client.log(sid)
        assert log.data == KIB and log.ended


def test_finished_streams_are_discarded_and_the_peer_may_open_more(pair: ServerPair) -> None:
    """More requests than the initial stream limit (128): finished streams
    leave the connection and MAX_STREAMS lets the client go on."""
    for _ in range(300):
        sid, _ = pair.request()
        answer(pair, sid, b"ok")
        pair.pump()
        assert pair.client.log(sid).data == b"ok"
    assert len([s for s in pair.quic._streams if s % 4 == 0]) <= 2


def test_a_lost_max_stream_data_is_sent_again(pair: ServerPair) -> None:
    sid, _ = pair.request(POST, b"x" * (4 * WINDOW), end=False)
    got = pair.quic.held[sid]
    pair.codec.ack_data(sid, got)
    pair.pump()
    sent = [v for s, v in pair.client.quic.max_stream_data if s == sid]
    assert sent
    pair.quic.limits_dirty = False
    pair.quic._on_max_stream_data_delivery(QuicDeliveryState.LOST, pair.quic._streams[sid])
    assert pair.quic.limits_dirty
    pair.pump()
    again = [v for s, v in pair.client.quic.max_stream_data if s == sid]
    assert again[len(sent) :] == [sent[-1]]


def test_a_response_larger_than_the_client_window_follows_its_max_stream_data(
    make_pair: Callable[..., ServerPair],
) -> None:
    pair = make_pair(client_conf={"max_stream_data": WINDOW})
    sid, _ = pair.request()
    body = bytes(range(256)) * (10 * WINDOW // 256)
    answer(pair, sid, body)
    pair.pump()
    assert pair.client.log(sid).data == body
    # a MAX_STREAM_DATA for a stream already gone is ignored
    pair.quic._handle_max_stream_data_frame(
        None, 0x11, Buffer(data=encode_uint_var(sid) + encode_uint_var(1 << 20))
    )
    assert sid not in pair.quic._streams
