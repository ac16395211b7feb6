"""The HTTP/1.1 back: one upstream connection carrying one exchange at a
time, returned to the pool when the exchange ends cleanly."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

from expressgateway.codec.h1.client import H1ClientCodec
from expressgateway.core.errors import Retry, UpstreamError
from expressgateway.core.events import (
    Body,
    Event,
    Headers,
    Informational,
    RequestHead,
    ResponseHead,
    Trailers,
    TunnelData,
)
from expressgateway.io.cork import CORK_LIMIT, cork
from expressgateway.io.sockets import configure_upstream
from expressgateway.upstream.pool import PeerKey

if TYPE_CHECKING:
    from expressgateway.proxy.context import L7Context
    from expressgateway.proxy.stream import Stream
    from expressgateway.proxy.websocket import WsTunnel
    from expressgateway.upstream.endpoint import Endpoint

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class H1Back(asyncio.Protocol):
    __slots__ = (
        "_cork",
        "_wbuf",
        "_wsize",
        "codec",
        "corked",
        "created",
        "ctx",
        "endpoint",
        "eof",
        "idle_since",
        "key",
        "reused",
        "stream",
        "transport",
        "tunnel",
    )

    def __init__(self, ctx: L7Context, key: PeerKey) -> None:
        self.ctx = ctx
        self.key = key
        http = ctx.listener.http
        self.codec = H1ClientCodec(
            max_header_bytes=http.max_header_bytes,
            max_headers=http.max_headers,
            max_response_body_bytes=http.max_response_body_bytes,
        )
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.created = time.monotonic()
        self.idle_since = self.created
        self.reused = False
        self.eof = False
        self.tunnel: WsTunnel | None = None
        self._wbuf: list[bytes] = []
        #: body bytes in _wbuf (CORK_LIMIT)
        self._wsize = 0
        self.corked = False
        self._cork = cork()
        #: the endpoint whose connection count this connection is in
        self.endpoint: Endpoint | None = None

    # -- pool interface ---------------------------------------------------------
    def alive(self) -> bool:
        t = self.transport
        return t is not None and not self.eof and not t.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            if self.corked:
                self.flush_now()
            self.transport.close()

    # -- asyncio ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # uvloop transports are not subclasses
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            configure_upstream(sock)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.backend_data(data)
            return
        stream = self.stream
        if stream is None:
            # Bytes from an idle backend: nothing can be trusted on it any more.
            self.abort()
            return
        try:
            events = self.codec.feed(data)
        except UpstreamError as err:
            self.stream = None
            self.abort()
            stream.on_back_error(err, False)
            stream.flush()
            return
        self._dispatch(stream, events)
        stream.flush()

    def _dispatch(self, stream: Stream, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Body):
                stream.on_response_body(ev.data, ev.end_stream)
            elif isinstance(ev, ResponseHead):
                stream.on_response_head(ev)
            elif isinstance(ev, Informational):
                stream.on_informational(ev)
            elif isinstance(ev, Trailers):
                stream.on_response_trailers(ev.headers)
            elif isinstance(ev, TunnelData):
                if self.tunnel is not None:
                    self.tunnel.backend_data(ev.data)
                continue
            if self.stream is not stream:
                break  # the exchange ended (the connection may already serve the next)

    def eof_received(self) -> bool:
        self.eof = True
        stream = self.stream
        if stream is None or self.tunnel is not None:
            return False
        try:
            events = self.codec.feed_eof()
        except UpstreamError as err:
            self.stream = None
            stream.on_back_error(err, self.reused and err.retry is Retry.IF_REUSED)
            stream.flush()
            return False
        self._dispatch(stream, events)
        if self.stream is stream:
            # The exchange did not end with this EOF (e.g. still sending).
            self.stream = None
            stream.on_back_error(UpstreamError("upstream_closed"), False)
        stream.flush()
        return False

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pause_client()
        elif self.stream is not None:
            self.stream.front.pause_request()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resume_client()
        elif self.stream is not None:
            self.stream.front.resume_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.endpoint is not None:
            self.endpoint.connections -= 1
            self.endpoint = None
        if self.tunnel is not None:
            self.tunnel.backend_closed()
            return
        stream = self.stream
        if stream is not None:
            self.stream = None
            try:
                self.codec.feed_eof()
                err = UpstreamError("upstream_reset", detail=str(exc or ""))
            except UpstreamError as cut:
                err = cut
            stream.on_back_error(err, self.reused and err.retry is Retry.IF_REUSED)
            stream.flush()
        else:
            self.ctx.pool.discard(self)

    # -- Back interface -------------------------------------------------------------
    def attach(self, stream: Stream) -> None:
        self.stream = stream

    def send_request_head(self, head: RequestHead) -> None:
        self._wbuf.append(self.codec.encode_request_head(head))

    def send_body(self, data: bytes, end_stream: bool) -> None:
        out = self.codec.encode_body(data, end_stream)
        if out:
            self._wbuf.append(out)
            self._wsize += len(out)
            if self._wsize >= CORK_LIMIT:
                self.flush_now()  # its pause_writing must stop the read loop now

    def send_trailers(self, headers: Headers) -> None:
        self._wbuf.append(self.codec.encode_trailers(headers))

    def send_raw(self, data: bytes) -> None:
        if self.corked:
            self.flush_now()
        if self.transport is not None:
            self.transport.write(data)

    def flush(self) -> None:
        """Send what is buffered at the end of this loop iteration (io/cork.py)."""
        if self._wbuf and not self.corked:
            self._cork.defer(self)

    def flush_now(self) -> None:
        self.corked = False
        self._wsize = 0
        buf = self._wbuf
        t = self.transport
        if buf and t is not None and not t.is_closing():
            t.write(buf[0] if len(buf) == 1 else b"".join(buf))
        buf.clear()

    def pause_response(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_response(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.stream = None
        self._wbuf.clear()
        self._wsize = 0
        self.corked = False
        if self.transport is not None:
            self.transport.abort()

    def finish(self, request_complete: bool) -> bool:
        """The exchange ended; True when the connection can carry another."""
        self.stream = None
        self.flush()
        if request_complete and self.codec.reusable and self.alive():
            self.reused = False
            assert self.transport is not None
            self.transport.resume_reading()
            return True
        self.close()
        return False

    def release(self) -> None:
        """Offer this idle connection to the shared pool (it may close it)."""
        if self.stream is None and self.tunnel is None:
            self.ctx.pool.put(self)
