"""A QUIC connection whose receive credit follows what the gateway consumed,
and whose packet building does less per packet.

aioquic grants MAX_STREAM_DATA as bytes *arrive* (doubling the window when
half of it was used), because its applications read at once. A proxy must
stop reading when the other side is slow: here a stream's limit is
``received - held + window``, where ``held`` is body bytes handed to the
bridge but not yet written on (:meth:`FlowQuic.hold` / :meth:`release`).
While the other side pushes back, the peer runs out of credit and stops.

Packet building (:meth:`FlowQuic._write_application`): aioquic's loop
visits every stream twice per packet (once for MAX_STREAM_DATA, once in the
send queue, even after the packet is full) and ends each batch with an
empty packet. With ten responses per batch that was a quarter of the
gateway's CPU. The steady-state case (1-RTT keys, handshake done, nothing
but ACKs, limits, probes and stream data to send, no qlog) is built here
with the same frames in the same order, except that stream limits are
written only when something could have changed them, the send queue is
walked once per batch (finished streams discarded, the streams with
something to send picked) and each packet takes frames from that list
until it is full, and no empty packet ends the batch. Anything else goes
to aioquic's own loop.
"""

from __future__ import annotations

import logging
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.connection import (
    MAX_STREAM_DATA_FRAME_CAPACITY,
    NetworkAddress,
    QuicConnection,
    QuicNetworkPath,
)
from aioquic.quic.connection import logger as quic_logger
from aioquic.quic.packet import QuicFrameType, QuicPacketType
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder
from aioquic.quic.stream import QuicStream

_ONE_RTT = tls.Epoch.ONE_RTT
_ONE_RTT_PACKET = QuicPacketType.ONE_RTT
#: largest STREAM frame header (type, stream id, offset, length): with no
#: more room than this a packet takes no more stream data
_STREAM_FRAME_MAX_HEADER = 1 + 8 + 8 + 2


def _no_debug(*_args: Any, **_kwargs: Any) -> None:
    return None


class FlowQuic(QuicConnection):
    def __init__(self, *, window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not quic_logger.isEnabledFor(logging.DEBUG):
            # aioquic logs a few debug lines per request (streams created,
            # limits raised); each costs a LoggerAdapter call and a level check
            self._logger.debug = _no_debug  # type: ignore[method-assign]
        self.window = window
        #: request/response streams whose credit the gateway steers
        self.held: dict[int, int] = {}
        #: some stream's MAX_STREAM_DATA may be due (data arrived, credit was
        #: released, or a MAX_STREAM_DATA frame was lost)
        self.limits_dirty = True

    def track(self, stream_id: int) -> None:
        self.held.setdefault(stream_id, 0)

    def untrack(self, stream_id: int) -> None:
        self.held.pop(stream_id, None)

    def hold(self, stream_id: int, n: int) -> None:
        if stream_id in self.held:
            self.held[stream_id] += n

    def release(self, stream_id: int, n: int) -> None:
        held = self.held.get(stream_id)
        if held is not None:
            self.held[stream_id] = max(0, held - n)
            self.limits_dirty = True

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        # twice per response: an open stream we may send on is written at
        # once; anything else gets aioquic's checks (and its errors)
        stream = self._streams.get(stream_id)
        if stream is not None and (not stream_id & 2 or bool(stream_id & 1) != self._is_client):
            stream.sender.write(data, end_stream=end_stream)
            return
        super().send_stream_data(stream_id, data, end_stream)

    def receive_datagram(self, data: bytes, addr: NetworkAddress, now: float) -> None:
        self.limits_dirty = True
        super().receive_datagram(data, addr, now)

    def _handle_max_stream_data_frame(self, context: Any, frame_type: int, buf: Buffer) -> None:
        # One per response from some clients (ngtcp2), often for a stream
        # already discarded: skip aioquic's checks and exception for those.
        start = buf.tell()
        stream_id = buf.pull_uint_var()
        maximum = buf.pull_uint_var()
        stream = self._streams.get(stream_id)
        if self._quic_logger is None and (
            not stream_id & 2 or bool(stream_id & 1) != self._is_client  # we may send on it
        ):
            if stream is not None:
                if maximum > stream.max_stream_data_remote:
                    stream.max_stream_data_remote = maximum
                return
            if self._stream_is_discarded(stream_id):
                return  # no state left for it: ignored, as aioquic does
        buf.seek(start)
        super()._handle_max_stream_data_frame(context, frame_type, buf)

    def _on_max_stream_data_delivery(self, delivery: QuicDeliveryState, stream: QuicStream) -> None:
        if delivery != QuicDeliveryState.ACKED:
            stream.max_stream_data_local_sent = 0
            self.limits_dirty = True

    def _write_stream_limits(  # aioquic hook, called while packets are built
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream
    ) -> None:
        local = stream.max_stream_data_local
        if not local:
            return  # a stream we opened for sending only
        held = self.held.get(stream.stream_id)  # type: ignore[arg-type]
        if held is None:
            # aioquic's rule (control and QPACK streams): double once half used
            if stream.receiver.highest_offset * 2 > local:
                local = stream.max_stream_data_local = local * 2
        else:
            target = stream.receiver.highest_offset - held + self.window
            # update once half the window was used, not on every packet
            if target - local >= self.window // 2:
                local = stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)  # type: ignore[arg-type]
            buf.push_uint_var(local)
            stream.max_stream_data_local_sent = local

    def _steady(self, network_path: QuicNetworkPath) -> bool:
        """Is there nothing to send but ACKs, limits, probes, CRYPTO and stream data?"""
        return (
            self._handshake_complete
            and self._cryptos[_ONE_RTT].send.is_valid()
            and self._quic_logger is None
            and network_path.is_validated
            and not network_path.remote_challenges
            and not self._handshake_done_pending
            and not self._retire_connection_ids
            and not self._streams_blocked_pending
            and not self._ping_pending
            and not self._datagrams_pending
            and all(c.was_sent for c in self._host_cids)
        )

    def _write_application(
        self, builder: QuicPacketBuilder, network_path: QuicNetworkPath, now: float
    ) -> None:
        if not self._steady(network_path):
            super()._write_application(builder, network_path, now)
            return
        crypto = self._cryptos[_ONE_RTT]
        crypto_stream = self._crypto_streams[_ONE_RTT]
        space = self._spaces[_ONE_RTT]
        pacer = self._loss._pacer
        streams = self._streams
        work = self._stream_work()
        sent: dict[QuicStream, None] = {}
        i = 0
        try:
            while True:
                # pacing, except when ACKs are due
                if space.ack_at is None or space.ack_at >= now:
                    self._pacing_at = pacer.next_send_time(now=now)
                    if self._pacing_at is not None:
                        break
                builder.start_packet(_ONE_RTT_PACKET, crypto)
                if space.ack_at is not None and space.ack_at <= now:
                    self._write_ack_frame(builder=builder, space=space, now=now)
                self._write_connection_limits(builder=builder, space=space)
                if self.limits_dirty:
                    for stream in streams.values():
                        self._write_stream_limits(builder, space, stream)
                    # every stream's limit is out (a full packet raised above)
                    self.limits_dirty = False
                if self._probe_pending:  # PTO (RFC 9002 §6.2.4)
                    self._write_ping_frame(builder, comment="probe")
                    self._probe_pending = False
                if not crypto_stream.sender.buffer_is_empty:
                    self._write_crypto_frame(builder=builder, space=space, stream=crypto_stream)
                i = self._fill(builder, space, work, i, sent)
                if builder.packet_is_empty:
                    break
                pacer.update_after_send(now=now)
                if i >= len(work) and crypto_stream.sender.buffer_is_empty:
                    break
        finally:
            if sent:
                # served streams go to the end of the queue
                queue = [s for s in self._streams_queue if s not in sent]
                queue.extend(sent)
                self._streams_queue = queue

    def _stream_work(self) -> list[QuicStream]:
        """Discard finished streams (the peer may open one more for each,
        RFC 9000 §4.6); the others with a frame to send, in queue order."""
        work: list[QuicStream] = []
        kept: list[QuicStream] = []
        discarded = False
        for stream in self._streams_queue:
            sender = stream.sender
            if sender.is_finished and stream.receiver.is_finished:
                sid: int = stream.stream_id  # type: ignore[assignment]
                del self._streams[sid]
                if bool(sid & 1) == self._is_client:  # opened by the peer
                    self._stream_limit(sid).value += 1
                discarded = True
                continue
            kept.append(stream)
            if not sender.buffer_is_empty and not (sender._pending_eof or len(sender._pending)):
                sender.buffer_is_empty = True  # as get_frame() would find
            if (
                stream.receiver.stop_pending
                or sender.reset_pending
                or not (stream.is_blocked or sender.buffer_is_empty)
            ):
                work.append(stream)
        if discarded:
            self._streams_queue = kept
        return work

    def _fill(
        self,
        builder: QuicPacketBuilder,
        space: Any,
        work: list[QuicStream],
        i: int,
        sent: dict[QuicStream, None],
    ) -> int:
        """Stream frames from ``work[i:]`` into the current packet, until it
        is full; returns where the next packet goes on."""
        n = len(work)
        while i < n:
            stream = work[i]
            sender = stream.sender
            if stream.receiver.stop_pending:
                self._write_stop_sending_frame(builder=builder, stream=stream)
            if sender.reset_pending:
                self._write_reset_stream_frame(builder=builder, stream=stream)
                i += 1
                continue
            if stream.is_blocked or sender.buffer_is_empty:
                i += 1
                continue
            if builder.remaining_flight_space <= _STREAM_FRAME_MAX_HEADER:
                return i  # full: this stream goes on in the next packet
            used = self._write_stream_frame(
                builder=builder,
                space=space,
                stream=stream,
                max_offset=min(
                    sender.highest_offset + self._remote_max_data - self._remote_max_data_used,
                    stream.max_stream_data_remote,
                ),
            )
            self._remote_max_data_used += used
            if used > 0:
                sent[stream] = None
                if (
                    sender._pending_eof or len(sender._pending)
                ) and builder.remaining_flight_space <= _STREAM_FRAME_MAX_HEADER:
                    return i  # the rest of this stream goes in the next packet
            # all sent, or held back by flow control until the peer grants more
            i += 1
        return i
