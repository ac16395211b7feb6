"""HTTP/3 clients for the end-to-end tests, synchronous to call from a test.

- :class:`H3Client`: one QUIC connection (aioquic) driven by an event loop
  on its own thread, so packets are acknowledged while the test thinks.
  ``request()`` runs one exchange to its end; ``open()`` starts one and
  hands back an :class:`H3Stream` to read the response piece by piece
  (``window=`` makes it a slow reader whose receive window only opens as
  the test consumes), to send the request body in pieces, or to reset the
  stream mid-upload. Several ``request()`` calls share the connection.
- :func:`h3_request`: one request on a new connection.
- :func:`curl_h3`: the same through curl_cffi's libcurl (ngtcp2 + nghttp3),
  an HTTP/3 stack independent of aioquic.

The client records what the wire said rather than judging it: a response
whose body is shorter than its content-length but ends cleanly comes back
with ``ended=True`` and the short body (aioquic would close the connection);
a response to HEAD may carry content-length without a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.connection import H3Stream as _AioquicStream
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.stream import QuicStream

T = TypeVar("T")
Headers = list[tuple[str, str]]
H3_NO_ERROR = int(ErrorCode.H3_NO_ERROR)
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
H3_REQUEST_CANCELLED = int(ErrorCode.H3_REQUEST_CANCELLED)
#: a request body writer waits while this much is unacknowledged
SEND_HIGH_WATER = 1 << 20


@dataclass
class H3Response:
    """What came back on one request stream."""

    status: int | None = None
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers = field(default_factory=list)
    #: 1xx responses, in order: (status, headers)
    informational: list[tuple[int, Headers]] = field(default_factory=list)
    #: the peer reset the stream (RESET_STREAM error code)
    reset_code: int | None = None
    #: the connection failed or closed, or the wait timed out
    error: str | None = None
    #: the stream ended cleanly (FIN)
    ended: bool = False

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(values) if values else None

    @property
    def complete(self) -> bool:
        """A final status, a clean end, no reset and no error."""
        return (
            self.status is not None
            and self.ended
            and self.reset_code is None
            and self.error is None
        )


# -- a receive window that opens only as the application consumes ----------------------------


class WindowedQuicConnection(QuicConnection):
    """aioquic raises MAX_STREAM_DATA by itself as data arrives (it doubles
    the limit once half of it is used), so a slow application never slows
    the peer. Here the limit of each request stream (client-initiated
    bidirectional) is ``consumed + window``: it only moves when the test
    calls :meth:`consume`. The connection-level limit keeps aioquic's rule;
    the stream limit is what holds the sender back."""

    def __init__(self, *args: Any, window: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = window
        self.consumed: dict[int, int] = {}

    def consume(self, stream_id: int, n: int) -> None:
        self.consumed[stream_id] = self.consumed.get(stream_id, 0) + n

    def _write_stream_limits(self, builder: Any, space: Any, stream: QuicStream) -> None:
        sid = stream.stream_id
        if sid is None or sid % 4 != 0:  # not a request stream: aioquic's rule
            super()._write_stream_limits(builder, space, stream)
            return
        # ``consumed`` counts body bytes; the stream also carries a few bytes
        # of HTTP/3 framing, so the real window is a little smaller
        limit = self.consumed.get(sid, 0) + self.window
        if limit > stream.max_stream_data_local:
            stream.max_stream_data_local = limit
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=1 + 8 + 8,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local


class RecordingH3Connection(H3Connection):
    """aioquic closes the connection when a response body does not match its
    content-length; the tests want to see what arrived instead (a response
    to HEAD has a content-length and no body; a short body that ends
    cleanly is a finding, not a crash)."""

    def _check_content_length(self, stream: _AioquicStream) -> None:
        return


# -- the connection ---------------------------------------------------------------------------


class _Exchange:
    def __init__(self) -> None:
        self.response = H3Response()
        self.unread = bytearray()
        self.changed = asyncio.Event()

    @property
    def over(self) -> bool:
        r = self.response
        return r.ended or r.reset_code is not None or r.error is not None


class _Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = RecordingH3Connection(self._quic)
        self.exchanges: dict[int, _Exchange] = {}
        self.error: str | None = None
        self.progress = asyncio.Event()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        self.progress.set()  # acknowledgements may have made room for a sender

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset):
            ex = self.exchanges.get(event.stream_id)
            if ex is not None:
                ex.response.reset_code = event.error_code
                ex.changed.set()
        elif isinstance(event, ConnectionTerminated):
            self.error = (
                f"connection closed: error {event.error_code:#x}"
                f" frame {event.frame_type} {event.reason_phrase!r}"
            )
            for ex in self.exchanges.values():
                if not ex.over:
                    ex.response.error = self.error
                ex.changed.set()
            self.progress.set()
        for ev in self.h3.handle_event(event):
            self._on_h3(ev)

    def _on_h3(self, ev: H3Event) -> None:
        if not isinstance(ev, HeadersReceived | DataReceived):
            return
        ex = self.exchanges.get(ev.stream_id)
        if ex is None:
            return
        r = ex.response
        if isinstance(ev, HeadersReceived):
            headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in ev.headers]
            status = dict(headers).get(":status")
            if r.status is not None:
                r.trailers = headers
            elif status is not None and 100 <= int(status) < 200:
                r.informational.append(
                    (int(status), [(n, v) for n, v in headers if not n.startswith(":")])
                )
            else:
                r.status = int(status) if status else None
                r.headers = [(n, v) for n, v in headers if not n.startswith(":")]
        else:
            ex.unread += ev.data
        if ev.stream_ended:
            r.ended = True
        ex.changed.set()

    async def room(self, sid: int) -> None:
        """Wait while the stream holds more than the high-water mark unsent
        or unacknowledged."""
        while self.error is None:
            stream = self._quic._streams.get(sid)
            if stream is None or len(stream.sender._buffer) <= SEND_HIGH_WATER:
                return
            self.progress.clear()
            await self.progress.wait()


class H3Client:
    """One HTTP/3 connection to ``127.0.0.1:port`` (TLS name
    ``server_name``, verified with ``ca``). ``window``: make it a slow
    reader (see :class:`WindowedQuicConnection`). Use as a context manager.
    ``connect_error`` is set (and requests answer with ``error``) when the
    handshake fails."""

    def __init__(
        self,
        port: int,
        *,
        ca: str,
        server_name: str = "localhost",
        window: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.authority = f"{server_name}:{port}"
        self.timeout = timeout
        self.connect_error: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._proto: _Protocol | None = None
        self._transport: asyncio.DatagramTransport | None = None
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            server_name=server_name,
            verify_mode=ssl.CERT_REQUIRED,
            idle_timeout=30.0,
        )
        config.load_verify_locations(ca)
        if window is not None:
            config.max_stream_data = window
        try:
            self._run(self._connect(config, window), timeout)
        except Exception as exc:
            self.connect_error = f"connect: {exc!r}"

    def __enter__(self) -> H3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def _connect(self, config: QuicConfiguration, window: int | None) -> None:
        quic: QuicConnection
        if window is not None:
            quic = WindowedQuicConnection(configuration=config, window=window)
        else:
            quic = QuicConnection(configuration=config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        transport, proto = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(quic), sock=sock
        )
        self._transport = transport
        self._proto = proto
        proto.connect(("127.0.0.1", self.port))
        await proto.wait_connected()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self._close(), 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _close(self) -> None:
        if self._proto is not None:
            self._proto.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proto.wait_closed(), 1)
        if self._transport is not None:
            self._transport.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one exchange ---------------------------------------------------------------------
    def open(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | Iterable[bytes] | None = None,
        end: bool = True,
    ) -> H3Stream:
        """Send a request head, then ``body`` (sent on the loop, paced by
        acknowledgements); ``end=False`` leaves the request open for
        :meth:`H3Stream.send`."""
        if self.connect_error is not None:
            return H3Stream(self, -1, H3Response(error=self.connect_error))
        sid = self._run(self._open(method, path, list(headers), body, end), self.timeout)
        return H3Stream(self, sid, None)

    async def _open(
        self,
        method: str,
        path: str,
        headers: Headers,
        body: bytes | Iterable[bytes] | None,
        end: bool,
    ) -> int:
        proto = self._proto
        assert proto is not None
        sid = proto._quic.get_next_available_stream_id()
        proto.exchanges[sid] = _Exchange()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
            *[(n.lower().encode(), v.encode("latin-1")) for n, v in headers],
        ]
        no_body = body is None or body == b""
        proto.h3.send_headers(sid, head, end_stream=no_body and end)
        proto.transmit()
        if not no_body:
            assert body is not None
            pieces = [body] if isinstance(body, bytes | bytearray) else body
            self._loop.create_task(self._send_all(sid, pieces, end))
        return sid

    async def _send_all(self, sid: int, pieces: Iterable[bytes], end: bool) -> None:
        for piece in pieces:
            if not await self._send(sid, piece, False):
                return
        if end:
            await self._send(sid, b"", True)

    async def _send(self, sid: int, data: bytes, end: bool) -> bool:
        """Send ``data`` in pieces of 64 KiB, each once there is room; False
        when the stream or the connection is gone."""
        proto = self._proto
        assert proto is not None
        view = memoryview(data)
        first = True
        while first or view:
            first = False
            await proto.room(sid)
            ex = proto.exchanges.get(sid)
            if proto.error is not None or ex is None:
                return False
            piece, view = view[:65536], view[65536:]
            try:
                proto.h3.send_data(sid, bytes(piece), end_stream=end and not view)
            except Exception:  # the peer stopped the stream: stop sending
                return False
            proto.transmit()
        return True

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | Iterable[bytes] | None = None,
        timeout: float | None = None,
    ) -> H3Response:
        """One exchange to its end (or ``timeout``): the whole response."""
        return self.open(method, path, headers=headers, body=body).finish(timeout)


class H3Stream:
    """One request stream of an :class:`H3Client`, read on demand."""

    def __init__(self, client: H3Client, sid: int, failed: H3Response | None) -> None:
        self.client = client
        self.sid = sid
        self.failed = failed
        #: body bytes handed to the test so far
        self.received = 0

    @property
    def response(self) -> H3Response:
        """The response so far (its ``body`` is empty: read() hands it out)."""
        if self.failed is not None:
            return self.failed
        proto = self.client._proto
        assert proto is not None
        return proto.exchanges[self.sid].response

    def _ex(self) -> _Exchange:
        proto = self.client._proto
        assert proto is not None
        return proto.exchanges[self.sid]

    def head(self, timeout: float | None = None) -> H3Response:
        """Wait for the final response head (or the end of the stream)."""
        if self.failed is None:
            self._wait(lambda ex: ex.response.status is not None or ex.over, timeout)
        return self.response

    def _wait(self, done: Any, timeout: float | None) -> bool:
        async def wait() -> bool:
            ex = self._ex()
            while not done(ex):
                ex.changed.clear()
                await ex.changed.wait()
            return True

        try:
            return self.client._run(wait(), timeout or self.client.timeout)
        except TimeoutError:
            return False

    def read(self, n: int = 1 << 20, timeout: float | None = None) -> bytes:
        """Up to ``n`` body bytes as soon as some arrived; b"" at the end of
        the stream (or on reset, error or timeout: see ``response``). What is
        returned counts as consumed: a windowed client opens its window by
        that much."""
        if self.failed is not None:
            return b""
        ok = self._wait(lambda ex: bool(ex.unread) or ex.over, timeout)
        if not ok:
            if self.response.error is None:
                self.response.error = "timeout"
            return b""

        async def take() -> bytes:
            ex = self._ex()
            data = bytes(ex.unread[:n])
            del ex.unread[:n]
            proto = self.client._proto
            assert proto is not None
            if isinstance(proto._quic, WindowedQuicConnection) and data:
                proto._quic.consume(self.sid, len(data))
                proto.transmit()
            return data

        data = self.client._run(take(), self.client.timeout)
        self.received += len(data)
        return data

    def finish(self, timeout: float | None = None) -> H3Response:
        """Read to the end of the stream; the response with the body read here."""
        if self.failed is not None:
            return self.failed
        budget = timeout or self.client.timeout
        loop_time = self.client._loop.time
        deadline = loop_time() + budget
        body = bytearray()
        while True:
            left = deadline - loop_time()
            if left <= 0:
                self.response.error = self.response.error or "timeout"
                break
            piece = self.read(1 << 22, left)
            if not piece:
                break
            body += piece
        resp = self.response
        return H3Response(
            resp.status,
            list(resp.headers),
            bytes(body),
            list(resp.trailers),
            list(resp.informational),
            resp.reset_code,
            resp.error,
            resp.ended,
        )

    def send(self, data: bytes, end: bool = False) -> bool:
        """Send more of the request body (paced); False if the stream is gone."""
        if self.failed is not None:
            return False
        return self.client._run(self.client._send(self.sid, data, end), self.client.timeout)

    def reset(self, code: int = H3_REQUEST_CANCELLED) -> None:
        """Abort the request: RESET_STREAM for the upload and STOP_SENDING
        for the response."""

        async def reset() -> None:
            proto = self.client._proto
            assert proto is not None
            proto._quic.reset_stream(self.sid, code)
            with contextlib.suppress(ValueError):
                proto._quic.stop_stream(self.sid, code)
            proto.transmit()

        if self.failed is None:
            self.client._run(reset(), self.client.timeout)


def h3_request(
    port: int,
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes | Iterable[bytes] | None = None,
    ca: str,
    server_name: str = "localhost",
    timeout: float = 10.0,
) -> H3Response:
    """One request on a new HTTP/3 connection."""
    with H3Client(port, ca=ca, server_name=server_name, timeout=timeout) as client:
        return client.request(method, path, headers=headers, body=body, timeout=timeout)


# -- curl_cffi: libcurl with ngtcp2 and nghttp3 ------------------------------------------------


@dataclass
class CurlResponse:
    status: int | None
    headers: Headers
    body: bytes
    #: libcurl's CURL_HTTP_VERSION_*: 30 is HTTP/3
    http_version: int
    error: str | None = None


def curl_h3(
    url: str,
    method: str = "GET",
    *,
    ca: str,
    data: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> CurlResponse:
    """A request with libcurl forced to HTTP/3 (``V3ONLY``: no fallback).
    ``url`` is ``https://localhost:PORT/...``; localhost resolves to
    127.0.0.1. Transport errors come back in ``error``."""
    from curl_cffi import CurlHttpVersion, CurlOpt
    from curl_cffi import requests as curl_requests

    port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")[2]
    try:
        resp = curl_requests.request(
            method,  # type: ignore[arg-type]
            url,
            content=data,
            headers=headers,
            http_version=CurlHttpVersion.V3ONLY,
            verify=ca,  # type: ignore[arg-type]
            timeout=timeout,
            accept_encoding=None,
            curl_options={CurlOpt.RESOLVE: [f"localhost:{port}:127.0.0.1"]},
        )
    except Exception as exc:
        return CurlResponse(None, [], b"", 0, f"{type(exc).__name__}: {exc}")
    # libcurl reports trailers among the headers
    pairs = [(k.lower(), v) for k, v in resp.headers.multi_items()]
    return CurlResponse(resp.status_code, pairs, resp.content, int(resp.http_version))
