"""Backends, clients and config text for the L4 (tcp, tls, udp) end-to-end tests.

Heavy servers (the bulk echo) run as their own processes so they do not
share the test's GIL; light ones whose state a test inspects (what the
backend saw, how much it managed to send) run on a thread here.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tests.support.gateway import free_port, wait_port

# A thread-per-connection echo with blocking sockets: recv/sendall gives
# natural backpressure and runs near memcpy speed. FIN is answered with FIN.
BULK_ECHO = r"""
import socket, sys, threading
def serve(conn):
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    with conn:
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            conn.sendall(view[:n])
        conn.shutdown(socket.SHUT_WR)
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=128)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Sends its name and a newline on accept, then echoes; tells backends apart.
NAMED_ECHO = r"""
import asyncio, sys
NAME = sys.argv[2].encode() + b"\n"
class Named(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t
        t.write(NAME)
    def data_received(self, d): self.t.write(d)
    def eof_received(self):
        self.t.write_eof()
        return True
async def main():
    s = await asyncio.get_running_loop().create_server(Named, "127.0.0.1", int(sys.argv[1]))
    async with s: await s.serve_forever()
asyncio.run(main())
"""


@contextlib.contextmanager
def _server_process(code: str, *args: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", code, str(port), *args])
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.contextmanager
def bulk_echo() -> Iterator[int]:
    """A fast TCP echo server (own process) for bulk transfers."""
    with _server_process(BULK_ECHO) as port:
        yield port


@contextlib.contextmanager
def named_echo(name: str) -> Iterator[int]:
    """A TCP echo server that first sends ``name\\n`` on every connection."""
    with _server_process(NAMED_ECHO, name) as port:
        yield port


class ThreadServer:
    """A listening TCP socket whose connections run ``handler`` on threads."""

    def __init__(self, handler: Callable[..., None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> ThreadServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._acceptor.join(5)
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        for t in self._threads:
            t.join(5)
        self.sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._run, args=self._accepted(conn), daemon=True)
            self._threads.append(t)
            t.start()

    def _accepted(self, conn: socket.socket) -> tuple[object, ...]:
        """The arguments of ``_run`` for a new connection (subclasses add state)."""
        return (conn,)

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn)


@dataclass
class EofRecorder:
    """A backend that reads until EOF, then answers ``got:<what it read>``
    and closes: its answer proves it saw the client's FIN."""

    received: list[bytes] = field(default_factory=list)

    def __call__(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        self.received.append(bytes(data))
        conn.sendall(b"got:" + bytes(data))
        conn.shutdown(socket.SHUT_WR)
        conn.close()


class Firehose:
    """A backend that writes ``total`` bytes as fast as its peer takes them,
    counting what the kernel accepted (``sent``)."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.chunk = b"x" * chunk
        self.sent = 0

    def __call__(self, conn: socket.socket) -> None:
        # ThreadServer's exit shuts the socket down, which ends a blocked send.
        conn.settimeout(0.2)
        view = memoryview(self.chunk)
        while self.sent < self.total:
            try:
                self.sent += conn.send(view)
            except TimeoutError:
                continue
        conn.close()


class UdpEcho:
    """A UDP echo server on a thread that answers ``<client port>|<payload>``,
    so a test can see which gateway socket (flow) a datagram came from."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.peers: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> UdpEcho:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.add(peer)
            self.sock.sendto(b"%d|" % peer[1] + data, peer)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_line(sock: socket.socket, limit: int = 1024) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"EOF before newline, got {bytes(buf)!r}")
        buf += chunk
        if len(buf) > limit:
            raise ValueError("line too long")
    return bytes(buf[:-1])


def recv_until_eof(sock: socket.socket) -> bytes:
    buf = bytearray()
    while chunk := sock.recv(65536):
        buf += chunk
    return bytes(buf)


def closed_without_data(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True if the peer closes (FIN or RST) without sending one byte."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def poll(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Call ``predicate`` until it is true or ``timeout`` passes; the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def listener(
    name: str,
    port: int,
    protocol: str,
    backends: list[int],
    *,
    backend_protocol: str | None = None,
    extra: str = "",
) -> str:
    """One ``[[listeners]]`` block on 127.0.0.1:``port`` with its backends;
    ``extra`` holds sub-tables written after the backends (``[listeners.tls]``)."""
    text = f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "{protocol}"
"""
    for b in backends:
        text += f'\n[[listeners.backends]]\naddress = "127.0.0.1:{b}"\n'
        if backend_protocol:
            text += f'protocol = "{backend_protocol}"\n'
    return text + extra


def config(
    admin_port: int, *listeners: str, workers: int = 1, runtime: str = "", tail: str = ""
) -> str:
    """A whole config: ``[runtime]`` (fast drain, plus ``runtime`` lines), the
    admin listener, the listeners, then ``tail`` (more top-level tables)."""
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
