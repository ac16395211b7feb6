"""Config text, clients and origins for the HTTP/2 end-to-end tests.

- :func:`h2_listener`: an ``h1`` / ``h1s`` listener (both speak HTTP/2:
  prior knowledge on ``h1``, ALPN on ``h1s``) with ``h1`` or ``h2``
  backends and ``[listeners.h2_security]`` limits.
- :func:`nginx_h2_origin`: nginx speaking HTTP/2 (h2c prior knowledge, or
  TLS with ALPN h2), with static files, trailers and a proxy to the Python
  origin for the routes that must see the request body.
- :class:`RawH2`: a hand-driven HTTP/2 client (hyperframe frames, hpack
  headers) over a plain or TLS socket, for the attacks and the protocol
  edges no polite client would produce.
- :class:`H2Backend`: a scripted HTTP/2 backend (h2 on a thread) that
  resets streams or sends GOAWAY on cue.
- :func:`curl`, :func:`nghttp`, :func:`h2load`: the command-line clients.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.l4 import ThreadServer
from tests.support.processes import run_nginx

MiB = 1024 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 §7 error codes
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
REFUSED_STREAM = 0x7
CANCEL = 0x8
ENHANCE_YOUR_CALM = 0xB


# -- config ---------------------------------------------------------------------------


def h2_listener(
    port: int,
    backends: Iterable[int | str],
    *,
    name: str = "web",
    protocol: str = "h1",
    backend_protocol: str = "h1",
    backend_extra: str = "",
    tls_files: dict[str, str] | None = None,
    h2_security: str = "",
    http: str = "",
) -> str:
    """One HTTP listener on 127.0.0.1:``port``: ``h1s`` needs ``tls_files``
    (the conftest fixture). ``backends`` are ports on 127.0.0.1 or
    ``host:port`` strings spoken to with ``backend_protocol`` (plus
    ``backend_extra`` lines); ``h2_security`` holds
    ``[listeners.h2_security]`` lines, ``http`` ``[listeners.http]`` lines."""
    text = (
        f'\n[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\nprotocol = "{protocol}"\n'
    )
    if http:
        text += f"\n[listeners.http]\n{http}\n"
    if h2_security:
        text += f"\n[listeners.h2_security]\n{h2_security}\n"
    if tls_files is not None:
        text += (
            f'\n[listeners.tls]\ncert_path = "{tls_files["cert"]}"\n'
            f'key_path = "{tls_files["key"]}"\n'
        )
    for b in backends:
        address = f"127.0.0.1:{b}" if isinstance(b, int) else b
        text += (
            f'\n[[listeners.backends]]\naddress = "{address}"\n'
            f'protocol = "{backend_protocol}"\n{backend_extra}\n'
        )
    return text


def tls_backend(ca_path: str) -> str:
    """``backend_extra`` for an ``h2`` backend over TLS verified by ``ca_path``."""
    return f'tls = true\ntls_ca_path = "{ca_path}"\ntls_verify_hostname = "localhost"\n'


# -- nginx speaking HTTP/2 ------------------------------------------------------------------

NGINX_H2_CONF = """
daemon off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests {keepalive_requests};
    http2_max_concurrent_streams {max_streams};
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_request_buffering off;
    proxy_buffering off;
    server {{
        listen 127.0.0.1:{port} {listen};
        {tls}
        root {dir}/www;
        location = /hello {{ return 200 "hello from nginx\\n"; }}
        location = /proto {{ return 200 "$server_protocol $scheme $http_host\\n"; }}
        location = /trailers {{
            add_trailer x-checksum abc123;
            add_trailer grpc-status 0;
            proxy_pass http://127.0.0.1:{origin}/trailers;
        }}
        location /origin/ {{ proxy_pass http://127.0.0.1:{origin}/; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_h2_origin(
    origin_port: int,
    files: dict[str, bytes] | None = None,
    *,
    tls_files: dict[str, str] | None = None,
    keepalive_requests: int = 100000,
    max_concurrent_streams: int = 256,
) -> Iterator[int]:
    """nginx speaking only HTTP/2: h2c prior knowledge, or (``tls_files``)
    TLS with ALPN h2. Serves ``files`` from its root, ``/hello``, ``/proto``
    (the protocol nginx saw), ``/trailers`` (the Python origin's body
    ``hello`` with trailers ``x-checksum: abc123`` and ``grpc-status: 0``
    added by nginx), and proxies ``/origin/...`` to the Python origin on
    ``origin_port`` (unbuffered both ways, so ``/origin/sink`` hashes the
    body the gateway sent). After ``keepalive_requests`` streams on one
    connection nginx sends GOAWAY; it advertises
    ``max_concurrent_streams``."""
    tls = ""
    listen = "http2"
    if tls_files is not None:
        listen = "ssl http2"
        tls = (
            f"ssl_certificate {tls_files['cert']};\n        ssl_certificate_key {tls_files['key']};"
        )

    def conf_for(tmp: str, port: int) -> str:
        return NGINX_H2_CONF.format(
            dir=tmp,
            port=port,
            listen=listen,
            tls=tls,
            origin=origin_port,
            keepalive_requests=keepalive_requests,
            max_streams=max_concurrent_streams,
        )

    with run_nginx(conf_for, files) as port:
        yield port


# -- command-line clients ---------------------------------------------------------------------


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


def curl_tls(ca: str, port: int) -> list[str]:
    """curl options to reach ``https://localhost:PORT`` trusting ``ca``."""
    return ["--cacert", ca, "--resolve", f"localhost:{port}:127.0.0.1"]


def nghttp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["nghttp", *args], capture_output=True, timeout=timeout)


@dataclass
class LoadResult:
    """What h2load printed: requests done/succeeded and 2xx statuses."""

    done: int
    succeeded: int
    status_2xx: int
    protocol: str
    output: str


def h2load(url: str, *args: str, timeout: float = 60) -> LoadResult:
    out = subprocess.run(["h2load", *args, url], capture_output=True, timeout=timeout, text=True)
    text = out.stdout + out.stderr
    req = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", text)
    codes = re.search(r"status codes: (\d+) 2xx", text)
    proto = re.search(r"Application protocol: (\S+)", text)
    assert req and codes, text
    return LoadResult(
        int(req.group(1)),
        int(req.group(2)),
        int(codes.group(1)),
        proto.group(1) if proto else "",
        text,
    )


# -- a raw HTTP/2 client ----------------------------------------------------------------------


@dataclass
class Exchange:
    """The frames one stream got back, decoded."""

    headers: list[list[tuple[str, str]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    ended: bool = False

    @property
    def status(self) -> int | None:
        for block in self.headers:
            for name, value in block:
                if name == ":status" and not value.startswith("1"):
                    return int(value)
        return None


class RawH2:
    """An HTTP/2 client that sends exactly the frames it is told to.

    ``RawH2(port)`` connects in cleartext (prior knowledge, for an ``h1``
    listener), ``RawH2(port, ca=...)`` over TLS with ALPN h2 (``h1s``).
    ``start()`` sends the preface and a SETTINGS frame; frames received
    are parsed by ``pump``/``read_until`` and kept: ``goaway`` (the first
    GOAWAY frame), ``exchanges`` per stream, ``closed`` once the peer closed.
    Incoming PINGs are not acknowledged unless ``ack_pings`` is set, and no
    WINDOW_UPDATE is ever sent unless asked."""

    def __init__(self, port: int, *, ca: str | None = None, timeout: float = 10.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ca is not None:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.set_alpn_protocols(["h2"])
            self.sock: socket.socket = ctx.wrap_socket(raw, server_hostname="localhost")
            assert self.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        else:
            self.sock = raw
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder(max_header_list_size=1 << 24)
        self.buffer = b""
        #: a header block waiting for its END_HEADERS
        self.block = bytearray()
        self.block_ends_stream = False
        self.frames: list[Frame] = []
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self.exchanges: dict[int, Exchange] = {}
        self.ack_pings = False
        self.server_settings: dict[int, int] = {}
        self.next_sid = 1
        #: the default ``:authority``: the TLS server name must match it
        self.authority = "localhost" if ca is not None else "gateway.test"
        self.scheme = "https" if ca is not None else "http"

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- sending --------------------------------------------------------------------------
    def start(self, settings: dict[int, int] | None = None, window: int = 0) -> None:
        """Preface + SETTINGS (``settings``), and a connection WINDOW_UPDATE
        of ``window`` when non-zero."""
        out = PREFACE + SettingsFrame(0, settings=settings or {}).serialize()
        if window:
            out += WindowUpdateFrame(0, window_increment=window).serialize()
        self.send(out)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _reply(self, data: bytes) -> None:
        """An automatic answer (SETTINGS ACK, PING ACK): the peer may have
        closed already, which the reading side will see."""
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def new_stream(self) -> int:
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def encode(self, headers: list[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(headers))

    def request_headers(
        self,
        path: str = "/",
        method: str = "GET",
        authority: str | None = None,
        scheme: str | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> list[tuple[str, str]]:
        return [
            (":method", method),
            (":scheme", scheme or self.scheme),
            (":authority", authority or self.authority),
            (":path", path),
            *(extra or []),
        ]

    def headers_frame(
        self, sid: int, headers: list[tuple[str, str]], *, end_stream: bool = True
    ) -> bytes:
        """A header block: one HEADERS frame, plus CONTINUATION frames when
        it is over the default 16 KiB frame size."""
        block = self.encode(headers)
        pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)] or [b""]
        flags = ["END_STREAM"] if end_stream else []
        if len(pieces) == 1:
            flags.append("END_HEADERS")
        out = HeadersFrame(sid, data=pieces[0], flags=flags).serialize()
        for i, piece in enumerate(pieces[1:], 2):
            last = ["END_HEADERS"] if i == len(pieces) else []
            out += ContinuationFrame(sid, data=piece, flags=last).serialize()
        return bytes(out)

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        authority: str | None = None,
        scheme: str | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> int:
        """Send one request (HEADERS, and DATA when ``body`` is given); its id."""
        sid = self.new_stream()
        headers = self.request_headers(path, method, authority, scheme, extra)
        out = self.headers_frame(sid, headers, end_stream=body is None)
        if body is not None:
            out += DataFrame(sid, data=body, flags=["END_STREAM"]).serialize()
        self.send(out)
        return sid

    # -- receiving ------------------------------------------------------------------------
    def pump(self, timeout: float) -> bool:
        """Read what arrives within ``timeout`` (one recv); False once closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return True
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buffer += data
        self._parse()
        return True

    def _parse(self) -> None:
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf)[pos : pos + 9])
            if len(buf) - pos < 9 + length:
                break
            frame.parse_body(memoryview(buf)[pos + 9 : pos + 9 + length])
            pos += 9 + length
            self._on_frame(frame)
        self.buffer = buf[pos:]

    def _on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        if isinstance(frame, GoAwayFrame):
            if self.goaway is None:
                self.goaway = frame
        elif isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self.server_settings.update(frame.settings)
                self._reply(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags and self.ack_pings:
                self._reply(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(frame, HeadersFrame | ContinuationFrame):
            ex = self.exchanges.setdefault(frame.stream_id, Exchange())
            if isinstance(frame, HeadersFrame):
                self.block_ends_stream = "END_STREAM" in frame.flags
            self.block += frame.data
            if "END_HEADERS" in frame.flags:
                decoded = self.decoder.decode(bytes(self.block), raw=True)
                ex.headers.append([(n.decode(), v.decode()) for n, v in decoded])
                self.block = bytearray()
                ex.ended = ex.ended or self.block_ends_stream
        elif isinstance(frame, DataFrame):
            ex = self.exchanges.setdefault(frame.stream_id, Exchange())
            ex.data += frame.data
            if "END_STREAM" in frame.flags:
                ex.ended = True
        elif isinstance(frame, RstStreamFrame):
            self.exchanges.setdefault(frame.stream_id, Exchange()).reset = frame.error_code

    def read_until(self, done: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Pump until ``done()`` is true (returns True), the peer closes or
        ``timeout`` passes (returns ``done()``)."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0 or not self.pump(min(left, 0.5)):
                break
        return bool(done())

    def response(self, sid: int, timeout: float = 10.0) -> Exchange:
        """Wait until stream ``sid`` ended or was reset."""

        def over() -> bool:
            ex = self.exchanges.get(sid)
            return ex is not None and (ex.ended or ex.reset is not None)

        self.read_until(over, timeout)
        return self.exchanges.get(sid, Exchange())

    def wait_goaway(self, timeout: float = 10.0) -> GoAwayFrame | None:
        self.read_until(lambda: self.goaway is not None, timeout)
        return self.goaway

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """Read (and keep) frames until the peer closes; True if it did."""
        return self.read_until(lambda: self.closed, timeout)


# -- a scripted HTTP/2 backend ------------------------------------------------------------------


class H2Backend(ThreadServer):
    """An h2c backend on a thread (h2 library), one thread per connection.
    Paths: ``/ok`` 200 "ok"; ``/reset-before-head`` RST_STREAM
    INTERNAL_ERROR without a head; ``/reset-mid-body`` head, 5 bytes of
    body, then RST_STREAM INTERNAL_ERROR; ``/goaway-refuse`` on the first
    connection: GOAWAY with a last-stream-id below the stream (it was not
    processed) and a close; on later ones 200 "ok". Anything else 404. ``requests`` logs ``(connection, path)``."""

    def __init__(self) -> None:
        super().__init__(self._serve)
        self.requests: list[tuple[int, str]] = []
        self.resets: list[tuple[int, int, int]] = []
        self._refused = False
        self.connections = 0

    def __enter__(self) -> H2Backend:
        super().__enter__()
        return self

    def _accepted(self, conn: socket.socket) -> tuple[object, ...]:
        self.connections += 1
        return (conn, self.connections)

    def _run(self, conn: socket.socket, number: int = 0) -> None:  # type: ignore[override]
        self._serve(conn, number)

    def _serve(self, sock: socket.socket, index: int) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        held: set[int] = set()
        sock.settimeout(0.5)
        with contextlib.suppress(OSError):
            sock.sendall(conn.data_to_send())
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        if dict(ev.headers).get(b":path") == b"/hold-upload":
                            held.add(ev.stream_id)
                        if not self._answer(conn, ev, index):
                            sock.sendall(conn.data_to_send())
                            sock.close()
                            return
                    elif isinstance(ev, h2.events.StreamReset):
                        self.resets.append((index, ev.stream_id, int(ev.error_code)))
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id not in held:
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                sock.sendall(conn.data_to_send())

    def _answer(
        self, conn: h2.connection.H2Connection, ev: h2.events.RequestReceived, index: int
    ) -> bool:
        headers = {bytes(n): bytes(v) for n, v in ev.headers}
        path = headers[b":path"].decode()
        self.requests.append((index, path))
        sid = ev.stream_id
        if path == "/reset-before-head":
            conn.reset_stream(sid, INTERNAL_ERROR)
        elif path == "/reset-mid-body":
            conn.send_headers(sid, [(":status", "200"), ("content-length", "100")])
            conn.send_data(sid, b"hello")
            conn.reset_stream(sid, INTERNAL_ERROR)
        elif path == "/goaway-refuse" and not self._refused:
            self._refused = True
            conn.close_connection(NO_ERROR, last_stream_id=sid - 2 if sid > 2 else 0)
            return False
        elif path == "/hold-upload":
            pass
        elif path == "/hold":
            conn.send_headers(sid, [(":status", "200")])
            conn.send_data(sid, b"h")
        elif path in ("/ok", "/goaway-refuse"):
            conn.send_headers(sid, [(":status", "200"), ("content-length", "2")])
            conn.send_data(sid, b"ok", end_stream=True)
        else:
            conn.send_headers(sid, [(":status", "404"), ("content-length", "0")], end_stream=True)
        return True
