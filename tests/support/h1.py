"""Config text, raw-socket clients and small backends for the HTTP/1.1
(``h1``/``h1s``) and WebSocket end-to-end tests.

Responses read off raw sockets are parsed with httptools (llhttp), an
independent parser from the one under test only in the sense that it runs
in the test process on the bytes the gateway really wrote.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httptools

from tests.support.gateway import free_port, http_get, wait_port
from tests.support.l4 import ThreadServer

MiB = 1024 * 1024


# -- config ---------------------------------------------------------------------------


def h1_listener(
    port: int,
    backends: list[int | str],
    *,
    name: str = "web",
    protocol: str = "h1",
    http: str = "",
    backend_extra: str = "",
    extra: str = "",
) -> str:
    """One ``h1``/``h1s`` listener on 127.0.0.1:``port``. ``backends`` are
    ports on 127.0.0.1 or ``host:port`` strings, each with ``protocol =
    "h1"`` plus ``backend_extra`` lines; ``http`` holds ``[listeners.http]``
    lines; ``extra`` more sub-tables (``[listeners.tls]``…)."""
    text = f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "{protocol}"
"""
    if http:
        text += f"\n[listeners.http]\n{http}\n"
    for b in backends:
        address = f"127.0.0.1:{b}" if isinstance(b, int) else b
        text += (
            f'\n[[listeners.backends]]\naddress = "{address}"\nprotocol = "h1"\n{backend_extra}\n'
        )
    return text + extra


def h1_config(
    admin_port: int, *listeners: str, workers: int = 1, runtime: str = "", tail: str = ""
) -> str:
    """A whole config: ``[runtime]`` (fast drain, plus ``runtime`` lines),
    the admin listener, the listeners, then ``tail`` (top-level tables)."""
    return f"""
[runtime]
workers = {workers}
readiness_settle_ms = 0
drain_timeout_ms = 1000
{runtime}

[observability]
metrics_bind = "127.0.0.1:{admin_port}"
{"".join(listeners)}
{tail}
"""


# -- raw HTTP/1.1 over sockets ---------------------------------------------------------


@dataclass
class Response:
    """One response as it came off the wire (1xx responses included)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return ", ".join(values) if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]


class _HeadDone(Exception):
    """Stops llhttp after the head of a response to HEAD."""


class ResponseReader:
    """Parses the responses a socket yields, in order (llhttp via httptools).

    ``read(sock)`` returns the next final response (the 1xx before it are in
    ``informational``); a response cut short by the peer comes back with
    ``complete=False``."""

    def __init__(self, method: bytes = b"GET") -> None:
        self.done: list[Response] = []
        self.informational: list[Response] = []
        self._current: Response | None = None
        self._in_body = False
        self._method = method
        self._parser = httptools.HttpResponseParser(self)
        self._buffer = b""

    def expect(self, method: bytes) -> None:
        self._method = method

    # llhttp callbacks
    def on_message_begin(self) -> None:
        self._current = Response(0, [])
        self._in_body = False

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        pair = (name.decode("latin-1").lower(), value.decode("latin-1"))
        (self._current.trailers if self._in_body else self._current.headers).append(pair)

    def on_headers_complete(self) -> None:
        current = self._current
        assert current is not None
        current.status = self._parser.get_status_code()
        current.keep_alive = self._parser.should_keep_alive()
        self._in_body = True
        if self._method == b"HEAD" and current.status >= 200:
            # a response to HEAD has no body whatever its framing says:
            # stop llhttp here and start afresh for the next response
            self.on_message_complete()
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body += body

    def on_message_complete(self) -> None:
        resp = self._current
        assert resp is not None
        resp.complete = True
        if 100 <= resp.status < 200 and resp.status != 101:
            self.informational.append(resp)
        else:
            self.done.append(resp)
        self._current = None

    def read(self, sock: socket.socket, timeout: float = 10.0) -> Response:
        """The next final response; ``complete=False`` when the peer closed
        mid-response. Raises ``ConnectionError`` on a close before any byte."""
        sock.settimeout(timeout)
        while not self.done:
            try:
                data = sock.recv(256 * 1024)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                raise TimeoutError(f"no complete response within {timeout}s") from None
            if not data:
                current = self._current
                with contextlib.suppress(httptools.HttpParserError):
                    self._parser.feed_data(b"")  # close-delimited bodies end here
                if self.done:
                    break
                if current is not None and current.status:
                    return current
                raise ConnectionError("connection closed before a response")
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                break
            except httptools.HttpParserCallbackError as exc:
                if not isinstance(exc.__context__, _HeadDone):
                    raise
                self._parser = httptools.HttpResponseParser(self)
        return self.done.pop(0)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def request(port: int, raw: bytes, *, method: bytes = b"GET", timeout: float = 10.0) -> Response:
    """Send ``raw`` on a new connection and read one response."""
    with connect(port, timeout) as s:
        s.sendall(raw)
        return ResponseReader(method).read(s, timeout)


def get(port: int, path: str = "/", headers: str = "", host: str = "gateway.test") -> bytes:
    """The bytes of a simple ``GET`` (``headers``: extra lines, each ending CRLF)."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes within ``timeout`` (bytes sent before the close
    are read and dropped)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def recv_until_close(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    out = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return bytes(out)


# -- the origin's point of view ----------------------------------------------------------


def origin_stats(origin_port: int) -> dict[str, object]:
    """The origin's ``/stats`` (this request itself is counted in it)."""
    status, body = http_get(f"http://127.0.0.1:{origin_port}/stats")
    assert status == 200
    result: dict[str, object] = json.loads(body)
    return result


class OriginWatch:
    """Counts the requests an origin sees from now on (its own ``/stats``
    queries left out): ``OriginWatch(port)`` ... ``watch.new_requests()``."""

    def __init__(self, origin_port: int) -> None:
        self.port = origin_port
        self.queries = 0
        self.start = self._requests()

    def _requests(self) -> int:
        self.queries += 1
        return int(origin_stats(self.port)["requests"])  # type: ignore[call-overload]

    def new_requests(self) -> int:
        return self._requests() - self.start - (self.queries - 1)


def origin_paths(origin_port: int) -> list[str]:
    """The paths of the last 100 requests the origin saw."""
    paths = origin_stats(origin_port)["paths"]
    assert isinstance(paths, list)
    return [str(p) for p in paths]


def seen_headers(body: bytes) -> dict[str, list[str]]:
    """The origin's ``/headers`` answer as ``{name: [values]}``."""
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name, []).append(value)
    return out


# -- scripted backends ----------------------------------------------------------------------


class ScriptedBackend(ThreadServer):
    """A TCP backend on a thread; ``handler(conn, backend)`` runs for each
    connection. Records every connection's bytes in ``received`` (in accept
    order)."""

    def __init__(self, handler: Callable[[socket.socket, ScriptedBackend], None]) -> None:
        super().__init__(handler)
        self.received: list[bytearray] = []
        self.closed: list[threading.Event] = []

    def __enter__(self) -> ScriptedBackend:
        super().__enter__()
        return self

    @property
    def connections(self) -> int:
        return len(self.received)

    def _accepted(self, conn: socket.socket) -> tuple[object, ...]:
        self.received.append(bytearray())
        self.closed.append(threading.Event())
        return (conn, len(self.received) - 1)

    def _run(self, conn: socket.socket, index: int = 0) -> None:  # type: ignore[override]
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            self.handler(_Recording(conn, self.received[index]), self)
        self.closed[index].set()


class _Recording:
    """A socket wrapper that keeps a copy of every byte received."""

    def __init__(self, sock: socket.socket, log: bytearray) -> None:
        self._sock = sock
        self._log = log

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(n)
        self._log += data
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """Read up to the end of a request head; returns (head, bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"EOF inside a request head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def drain(conn: socket.socket) -> int:
    """Read until EOF; the byte count."""
    n = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            n += len(chunk)
    return n


# -- subprocess servers -------------------------------------------------------------------

WS_SERVER = r"""
import asyncio, sys
from http import HTTPStatus
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

def gate(connection, request):
    if request.path == "/refuse":
        return connection.respond(HTTPStatus.FORBIDDEN, "upgrade refused by the backend\n")
    return None

async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), process_request=gate,
                     ping_interval=None, max_size=None) as server:
        await server.serve_forever()

asyncio.run(main())
"""


@contextlib.contextmanager
def websocket_echo() -> Iterator[int]:
    """A ``websockets`` echo server (own process); ``/refuse`` answers 403."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", WS_SERVER, str(port)])
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


class RssSampler:
    """Samples a gateway's RSS on a thread; ``peak`` is the highest seen."""

    def __init__(self, rss: Callable[[], int], interval: float = 0.05) -> None:
        self.rss = rss
        self.interval = interval
        self.baseline = rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)
