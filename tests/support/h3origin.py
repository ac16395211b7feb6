"""The test origin of tests/support/origin.py, spoken in HTTP/3 (aioquic)
or in HTTP/2 prior knowledge (the ``h2`` library), run as its own process:

    python tests/support/h3origin.py PORT CERT KEY      # HTTP/3, UDP PORT, ALPN h3
    python tests/support/h3origin.py --h2c PORT         # HTTP/2 cleartext, TCP PORT

Both wires share one set of routes with the semantics of origin.py
(GET unless said):

  /                     200 "hello from origin"
  /size/N               N bytes (content-length), streamed in 64 KiB pieces;
                        the next piece waits while 256 KiB are still
                        unacknowledged (HTTP/3) or held back by the peer's
                        flow-control window (HTTP/2), so a slow reader
                        holds the origin back instead of filling its memory
  /chunked/N            N bytes without content-length, in 4 KiB pieces
  /trailers             body "hello" then trailers x-checksum: abc123 and
                        grpc-status: 0
  /headers              the request head as JSON: method, path, and
                        headers as [name, value] pairs (names lower case;
                        the pseudo-headers :authority and :scheme included)
  /status/N             status N with a short body
  /early-hints          103 (link: </style.css>; rel=preload) then, 50 ms
                        later, 200 "after hints"
  /continue             honours expect: 100-continue, then {"bytes", "sha256"}
  /slow-head/MS         waits MS ms before the head
  /slow-body/MS         head (content-length 4) at once, body after MS ms
  /truncate             content-length 100, 50 bytes, then (50 ms later)
                        the stream is reset (HTTP/3 H3_INTERNAL_ERROR,
                        HTTP/2 RST_STREAM INTERNAL_ERROR): never a clean end
  /drip/N/MS            N bytes one per MS ms, no content-length
  POST /echo            the request body streamed back as it arrives
  POST /sink            reads the whole body, answers {"bytes": n, "sha256": ...}
  /stats                JSON {"requests": n, "paths": [last 100 paths]}

A request stream the client resets is dropped (its route stops writing).
:func:`h3_origin` and :func:`h2c_origin` run it for a test and wait until
it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

STATS: dict[str, object] = {"requests": 0, "paths": []}
CHUNK = b"x" * 65536
#: a writer waits while more than this is buffered on its stream
HIGH_WATER = 256 * 1024
H3_INTERNAL_ERROR = 0x102
H2_INTERNAL_ERROR = 0x2

Headers = list[tuple[str, str]]


# -- the routes, wire-neutral ----------------------------------------------------------------


class Exchange:
    """One request stream, as a route sees it. The wire adapters fill in
    ``_head``/``_data``/``_trailers``/``_reset``/``buffered`` and call
    :meth:`wake` when flow control or acknowledgements made room."""

    def __init__(self, method: str, path: str, headers: Headers) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.closed = False  # reset by the client, or the connection ended
        self.echo = False
        self.sink = False
        self.body_size = 0
        self.sha = hashlib.sha256()
        self.task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()

    # wire hooks ----------------------------------------------------------------------------
    def _head(self, headers: Headers, end: bool) -> None:
        raise NotImplementedError

    def _data(self, data: bytes, end: bool) -> None:
        raise NotImplementedError

    def _trailers(self, headers: Headers) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def buffered(self) -> int:
        raise NotImplementedError

    def flush(self) -> None:
        """Put what was queued on the wire now (outside a receive callback)."""

    def wake(self) -> None:
        self._room.set()

    # for routes ----------------------------------------------------------------------------
    def head(self, status: int, headers: Iterable[tuple[str, str]] = (), end: bool = False) -> None:
        if not self.closed:
            self._head([(":status", str(status)), *headers], end)
            self.flush()

    def data(self, data: bytes, end: bool = False) -> None:
        if not self.closed:
            self._data(data, end)
            self.flush()

    def trailers(self, headers: Headers) -> None:
        if not self.closed:
            self._trailers(headers)
            self.flush()

    def reset(self) -> None:
        if not self.closed:
            self._reset()
            self.closed = True
            self.flush()

    def respond(self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        extra = list(headers)
        if not any(n == "content-type" for n, _ in extra):
            extra.append(("content-type", "text/plain"))
        self.head(status, [("content-length", str(len(body))), *extra])
        self.data(body, end=True)

    async def room(self) -> None:
        """Wait until the stream's send buffer is under the high-water mark."""
        while not self.closed and self.buffered() > HIGH_WATER:
            self._room.clear()
            await self._room.wait()


def on_head(ex: Exchange) -> None:
    STATS["requests"] = int(STATS["requests"]) + 1  # type: ignore[call-overload]
    paths = STATS["paths"]
    assert isinstance(paths, list)
    paths.append(ex.path)
    del paths[:-100]
    if ex.method == "POST" and ex.path == "/echo":
        ex.echo = True
        ex.head(200, [("content-type", "application/octet-stream")])
    elif ex.path == "/sink" or ex.path.startswith("/continue"):
        ex.sink = True
        expect = [v.lower() for n, v in ex.headers if n == "expect"]
        if ex.path.startswith("/continue") and "100-continue" in expect:
            ex.head(100)


def on_data(ex: Exchange, data: bytes) -> None:
    ex.body_size += len(data)
    if ex.echo:
        ex.data(data)
    elif ex.sink:
        ex.sha.update(data)


def on_end(ex: Exchange) -> None:
    """The request ended (all its body, if any, arrived)."""
    if ex.echo:
        ex.data(b"", end=True)
    elif ex.sink:
        body = json.dumps({"bytes": ex.body_size, "sha256": ex.sha.hexdigest()}).encode()
        ex.respond(200, body)
    else:
        ex.task = asyncio.get_running_loop().create_task(route(ex))


async def route(ex: Exchange) -> None:
    try:
        await _route(ex)
    except Exception as exc:
        # a send on a stream the peer reset or stopped: aioquic/h2 refuse it
        if not ex.closed:
            print(f"h3origin: route {ex.path} failed: {exc!r}", file=sys.stderr)


async def _route(ex: Exchange) -> None:
    path = ex.path
    parts = path.split("?")[0].strip("/").split("/")
    head = parts[0]
    if path == "/":
        ex.respond(200, b"hello from origin")
    elif head == "size":
        n = int(parts[1])
        ex.head(200, [("content-length", str(n))], end=ex.method == "HEAD")
        if ex.method == "HEAD":
            return
        while n > 0 and not ex.closed:
            await ex.room()
            piece = CHUNK[: min(n, len(CHUNK))]
            n -= len(piece)
            ex.data(piece, end=n == 0)
    elif head == "chunked":
        n = int(parts[1])
        ex.head(200)
        while n > 0 and not ex.closed:
            await ex.room()
            piece = CHUNK[: min(n, 4096)]
            n -= len(piece)
            ex.data(piece)
        ex.data(b"", end=True)
    elif head == "trailers":
        ex.head(200)
        ex.data(b"hello")
        ex.trailers([("x-checksum", "abc123"), ("grpc-status", "0")])
    elif head == "headers":
        pseudo = [(n, v) for n, v in ex.headers if n in (":authority", ":scheme")]
        regular = [(n, v) for n, v in ex.headers if not n.startswith(":")]
        body = json.dumps(
            {
                "method": ex.method,
                "path": path,
                "headers": [[n, v] for n, v in pseudo + regular],
            }
        ).encode()
        ex.respond(200, body, [("content-type", "application/json")])
    elif head == "status":
        ex.respond(int(parts[1]), f"status {parts[1]}\n".encode())
    elif head == "early-hints":
        ex.head(103, [("link", "</style.css>; rel=preload")])
        await asyncio.sleep(0.05)
        ex.respond(200, b"after hints")
    elif head == "slow-head":
        await asyncio.sleep(int(parts[1]) / 1000)
        ex.respond(200, b"slow head")
    elif head == "slow-body":
        ex.head(200, [("content-length", "4")])
        await asyncio.sleep(int(parts[1]) / 1000)
        ex.data(b"done", end=True)
    elif head == "truncate":
        ex.head(200, [("content-length", "100")])
        ex.data(b"y" * 50)
        await asyncio.sleep(0.05)
        ex.reset()
    elif head == "drip":
        n, ms = int(parts[1]), int(parts[2])
        ex.head(200)
        for _ in range(n):
            await asyncio.sleep(ms / 1000)
            ex.data(b"d")
        ex.data(b"", end=True)
    elif head == "stats":
        ex.respond(200, json.dumps(STATS).encode())
    else:
        ex.respond(404, b"no such route")


def split_head(headers: Headers) -> tuple[str, str]:
    fields = dict(headers)
    return fields.get(":method", ""), fields.get(":path", "")


# -- HTTP/3 on aioquic -----------------------------------------------------------------------


def h3_server_main(port: int, cert: str, key: str) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import (
        ConnectionTerminated,
        QuicEvent,
        StopSendingReceived,
        StreamReset,
    )

    class H3Exchange(Exchange):
        def __init__(self, proto: H3Origin, sid: int, headers: Headers) -> None:
            super().__init__(*split_head(headers), headers)
            self.proto = proto
            self.sid = sid

        def _head(self, headers: Headers, end: bool) -> None:
            self.proto.h3.send_headers(self.sid, _enc(headers), end_stream=end)
            if end:
                self.proto.exchanges.pop(self.sid, None)

        def _data(self, data: bytes, end: bool) -> None:
            self.proto.h3.send_data(self.sid, data, end_stream=end)
            if end:
                self.proto.exchanges.pop(self.sid, None)

        def _trailers(self, headers: Headers) -> None:
            self.proto.h3.send_headers(self.sid, _enc(headers), end_stream=True)
            self.proto.exchanges.pop(self.sid, None)

        def _reset(self) -> None:
            self.proto._quic.reset_stream(self.sid, H3_INTERNAL_ERROR)
            self.proto.exchanges.pop(self.sid, None)

        def buffered(self) -> int:
            stream = self.proto._quic._streams.get(self.sid)
            if stream is None:  # finished and discarded
                return 0
            return len(stream.sender._buffer)

        def flush(self) -> None:
            self.proto.transmit()

    class H3Origin(QuicConnectionProtocol):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            self.h3 = H3Connection(self._quic)
            self.exchanges: dict[int, H3Exchange] = {}

        def datagram_received(self, data: bytes | str, addr: object) -> None:
            super().datagram_received(data, addr)  # type: ignore[arg-type]
            # acknowledgements or MAX_STREAM_DATA may have made room
            for ex in list(self.exchanges.values()):
                ex.wake()

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, StreamReset | StopSendingReceived):
                self._drop(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                for sid in list(self.exchanges):
                    self._drop(sid)
            for ev in self.h3.handle_event(event):
                self._on_h3(ev)

        def _drop(self, sid: int) -> None:
            ex = self.exchanges.pop(sid, None)
            if ex is not None:
                ex.closed = True
                ex.wake()
                if ex.task is not None:
                    ex.task.cancel()

        def _on_h3(self, ev: H3Event) -> None:
            if isinstance(ev, HeadersReceived):
                ex = self.exchanges.get(ev.stream_id)
                if ex is None:  # the request head
                    ex = H3Exchange(self, ev.stream_id, _dec(ev.headers))
                    self.exchanges[ev.stream_id] = ex
                    on_head(ex)
                if ev.stream_ended:  # a head without body, or request trailers
                    on_end(ex)
            elif isinstance(ev, DataReceived):
                ex = self.exchanges.get(ev.stream_id)
                if ex is None:
                    return
                if ev.data:
                    on_data(ex, ev.data)
                if ev.stream_ended:
                    on_end(ex)

    async def main() -> None:
        config = QuicConfiguration(
            is_client=False,
            alpn_protocols=H3_ALPN,
            max_datagram_frame_size=65536,
            idle_timeout=60.0,
        )
        config.load_cert_chain(cert, key)
        await serve("127.0.0.1", port, configuration=config, create_protocol=H3Origin)
        await asyncio.Future()

    asyncio.run(main())


def _enc(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(n.encode(), v.encode("latin-1")) for n, v in headers]


def _dec(headers: list[tuple[bytes, bytes]]) -> Headers:
    return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in headers]


# -- HTTP/2 prior knowledge on the h2 library -------------------------------------------------


def h2c_server_main(port: int) -> None:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    class H2Exchange(Exchange):
        def __init__(self, proto: H2Origin, sid: int, headers: Headers) -> None:
            super().__init__(*split_head(headers), headers)
            self.proto = proto
            self.sid = sid
            #: body bytes the peer's window holds back, and whether END_STREAM follows
            self.pending = bytearray()
            self.pending_end = False
            self.pending_trailers: Headers | None = None

        def _head(self, headers: Headers, end: bool) -> None:
            self.proto.conn.send_headers(self.sid, headers, end_stream=end)
            if end:
                self.proto.exchanges.pop(self.sid, None)

        def _data(self, data: bytes, end: bool) -> None:
            self.pending += data
            self.pending_end = self.pending_end or end
            self.push()

        def _trailers(self, headers: Headers) -> None:
            self.pending_trailers = headers
            self.push()

        def _reset(self) -> None:
            self.push()
            self.proto.conn.reset_stream(self.sid, H2_INTERNAL_ERROR)
            self.proto.exchanges.pop(self.sid, None)

        def buffered(self) -> int:
            transport = self.proto.transport
            queued = transport.get_write_buffer_size() if transport else 0
            return len(self.pending) + queued

        def flush(self) -> None:
            self.proto.flush()

        def push(self) -> None:
            """Send what the flow-control windows allow."""
            conn = self.proto.conn
            while self.pending:
                room = min(
                    conn.local_flow_control_window(self.sid),
                    conn.max_outbound_frame_size,
                    len(self.pending),
                )
                if room <= 0:
                    return
                piece = bytes(self.pending[:room])
                del self.pending[:room]
                last = self.pending_end and not self.pending and self.pending_trailers is None
                conn.send_data(self.sid, piece, end_stream=last)
                if last:
                    self.pending_end = False
                    self.proto.exchanges.pop(self.sid, None)
                    return
            if self.pending_trailers is not None:
                conn.send_headers(self.sid, self.pending_trailers, end_stream=True)
                self.pending_trailers = None
                self.proto.exchanges.pop(self.sid, None)
            elif self.pending_end:
                conn.end_stream(self.sid)
                self.pending_end = False
                self.proto.exchanges.pop(self.sid, None)

    class H2Origin(asyncio.Protocol):
        def __init__(self) -> None:
            config = h2.config.H2Configuration(client_side=False, header_encoding="latin-1")
            self.conn = h2.connection.H2Connection(config)
            self.transport: asyncio.Transport | None = None
            self.exchanges: dict[int, H2Exchange] = {}

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.conn.initiate_connection()
            self.flush()

        def flush(self) -> None:
            data = self.conn.data_to_send()
            if data and self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

        def resume_writing(self) -> None:
            self._wake_all()

        def connection_lost(self, exc: Exception | None) -> None:
            for sid in list(self.exchanges):
                self._drop(sid)

        def _wake_all(self) -> None:
            for ex in list(self.exchanges.values()):
                ex.push()
                ex.wake()
            self.flush()

        def _drop(self, sid: int) -> None:
            ex = self.exchanges.pop(sid, None)
            if ex is not None:
                ex.closed = True
                ex.wake()
                if ex.task is not None:
                    ex.task.cancel()

        def data_received(self, data: bytes) -> None:
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.flush()
                if self.transport is not None:
                    self.transport.close()
                return
            for ev in events:
                self._on_event(ev)
            self.flush()

        def _on_event(self, ev: h2.events.Event) -> None:
            if isinstance(ev, h2.events.RequestReceived):
                headers = [(str(n).lower(), str(v)) for n, v in ev.headers or []]
                ex = H2Exchange(self, int(ev.stream_id or 0), headers)
                self.exchanges[ex.sid] = ex
                on_head(ex)
                if ev.stream_ended is not None:
                    on_end(ex)
            elif isinstance(ev, h2.events.DataReceived):
                sid = int(ev.stream_id or 0)
                self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
                ex = self.exchanges.get(sid)
                if ex is not None:
                    if ev.data:
                        on_data(ex, bytes(ev.data))
                    if ev.stream_ended is not None:
                        on_end(ex)
            elif isinstance(ev, h2.events.TrailersReceived):
                ex = self.exchanges.get(int(ev.stream_id or 0))
                if ex is not None:
                    on_end(ex)
            elif isinstance(ev, h2.events.StreamReset):
                self._drop(int(ev.stream_id or 0))
            elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self._wake_all()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            H2Origin, "127.0.0.1", port, reuse_address=True
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- for tests: run it ------------------------------------------------------------------------

HERE = Path(__file__).parent


@contextlib.contextmanager
def h3_origin(tls_files: dict[str, str]) -> Iterator[int]:
    """The HTTP/3 origin on a free UDP port (certificate from the
    ``tls_files`` fixture); yields once a GET /stats over HTTP/3 answers."""
    from tests.support.gateway import free_port
    from tests.support.h3 import h3_request

    port = free_port(udp=True)
    args = [sys.executable, str(HERE / "h3origin.py"), str(port), tls_files["cert"]]
    proc = subprocess.Popen([*args, tls_files["key"]])
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"h3origin exited with {proc.returncode}")
            resp = h3_request(port, "GET", "/stats", ca=tls_files["ca"], timeout=1.0)
            if resp.status == 200:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"h3origin on UDP {port} does not answer: {resp.error}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.contextmanager
def h2c_origin() -> Iterator[int]:
    """The same routes over HTTP/2 prior knowledge (TCP) on a free port."""
    from tests.support.gateway import free_port, wait_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "h3origin.py"), "--h2c", str(port)])
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    # run as a script, this directory comes first on sys.path, and its
    # h2.py would shadow the h2 library
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE.resolve()]
    if sys.argv[1] == "--h2c":
        h2c_server_main(int(sys.argv[2]))
    else:
        h3_server_main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
