"""A QUIC connection whose receive credit follows what the gateway consumed.

aioquic grants MAX_STREAM_DATA as bytes *arrive* (doubling the window when
half of it was used), because its applications read at once. A proxy must
stop reading when the other side is slow: here a stream's limit is
``received - held + window``, where ``held`` is body bytes handed to the
bridge but not yet written on (:meth:`FlowQuic.hold` / :meth:`release`).
While the other side pushes back, the peer runs out of credit and stops.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream


class FlowQuic(QuicConnection):
    def __init__(self, *, window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.window = window
        #: request/response streams whose credit the gateway steers
        self.held: dict[int, int] = {}

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

    def _write_stream_limits(  # aioquic hook, called while packets are built
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream
    ) -> None:
        held = self.held.get(stream.stream_id)  # type: ignore[arg-type]
        if held is None or not stream.max_stream_data_local:
            super()._write_stream_limits(builder, space, stream)
            return
        target = stream.receiver.highest_offset - held + self.window
        # update once half the window was used, not on every packet
        if target - stream.max_stream_data_local >= self.window // 2:
            stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)  # type: ignore[arg-type]
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
