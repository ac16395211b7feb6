"""What the HTTP/2 and HTTP/3 backs share: one exchange on a multiplexed
upstream connection, as the :class:`~expressgateway.proxy.stream.Stream`
drives it. The protocol modules add how request bytes are sent (HTTP/2:
within the peer's window; HTTP/3: into QUIC's send buffer).

Response DATA is credited back to the backend only once handed downstream
and while the client keeps up (``pause_response``), so a slow client stalls
only its own stream's window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from expressgateway.codec.h2.events import WindowOpened
from expressgateway.core.errors import UpstreamError
from expressgateway.core.events import (
    CANCEL,
    REFUSED_STREAM,
    Body,
    Informational,
    RequestHead,
    Reset,
    ResponseHead,
    Trailers,
)

if TYPE_CHECKING:
    from expressgateway.proxy.stream import Stream


class MuxStreamBack:
    """The shared part of :class:`.h2back.H2StreamBack` and
    :class:`.h3back.H3StreamBack`. ``conn`` offers ``codec`` (``send_request``,
    ``ack_data``, ``reset_stream``), ``streams``, ``forget``, ``flush`` and
    ``usable``."""

    __slots__ = ("conn", "head_seen", "paused", "reused", "sid", "stream", "unacked")

    def __init__(self, conn: Any, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        #: the stream id once the request head went out (-1 before)
        self.sid = -1
        self.stream: Stream | None = None
        self.paused = False
        self.unacked = 0
        self.head_seen = False

    # -- Back interface --------------------------------------------------------------
    def attach(self, stream: Stream) -> None:
        self.stream = stream

    def send_request_head(self, head: RequestHead) -> None:
        try:
            self.sid = self.conn.codec.send_request(head)
        except UpstreamError as err:
            stream = self.stream
            self.stream = None
            if stream is not None:
                stream.on_back_error(err, True)
            return
        self.conn.streams[self.sid] = self

    def window_opened(self) -> None:
        raise NotImplementedError

    def pause_response(self) -> None:
        self.paused = True

    def resume_response(self) -> None:
        self.paused = False
        if self.unacked and self.sid >= 0:
            n, self.unacked = self.unacked, 0
            self.conn.codec.ack_data(self.sid, n)
            self.conn.flush()

    def abort(self) -> None:
        self.stream = None
        if self.sid >= 0:
            self.conn.codec.reset_stream(self.sid, CANCEL)
            self.conn.forget(self.sid)
            self.conn.flush()

    def finish(self, request_complete: bool) -> bool:
        self.stream = None
        if self.sid >= 0:
            if not request_complete:
                # The response ended first: the rest of the upload is not wanted.
                self.conn.codec.reset_stream(self.sid, CANCEL)
            self.conn.forget(self.sid)
        self.conn.flush()
        return False  # the connection stays shared; nothing to park

    def release(self) -> None:
        pass

    def alive(self) -> bool:
        return bool(self.conn.usable())

    def flush(self) -> None:
        self.conn.flush()

    # -- events from the connection -------------------------------------------------------
    def on_event(self, ev: object) -> None:
        stream = self.stream
        if stream is None:
            if isinstance(ev, Body) and ev.data:
                self.conn.codec.ack_data(self.sid, len(ev.data))
            return
        if isinstance(ev, Body):
            n = len(ev.data)
            stream.on_response_body(ev.data, ev.end_stream)
            if n:
                if self.paused:
                    self.unacked += n
                else:
                    self.conn.codec.ack_data(self.sid, n)
        elif isinstance(ev, ResponseHead):
            self.head_seen = True
            stream.on_response_head(ev)
        elif isinstance(ev, Trailers):
            stream.on_response_trailers(ev.headers)
        elif isinstance(ev, Informational):
            stream.on_informational(ev)
        elif isinstance(ev, Reset):
            self.stream = None
            self.conn.forget(self.sid)
            refused = ev.code == REFUSED_STREAM and not self.head_seen
            reason = "refused_stream" if refused else (ev.reason or "upstream_reset")
            stream.on_back_error(UpstreamError(reason), refused)
        elif isinstance(ev, WindowOpened):
            self.window_opened()

    def connection_failed(self, reason: str, retry: bool = False) -> None:
        stream = self.stream
        self.stream = None
        if stream is not None:
            stream.on_back_error(UpstreamError(reason), retry)
            stream.flush()
