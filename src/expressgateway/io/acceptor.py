"""The accept loop of every TCP listener, plain or TLS.

It admits a connection (per-IP and in-flight caps) *before* any protocol
work, bounds a TLS handshake with ``handshake_timeout_ms``, counts every
failed handshake by reason, and backs off with jitter on accept errors
(EMFILE, ENFILE, ENOBUFS...) instead of spinning or dying. The protocol only
sees connections whose handshake completed.

Why not the event loop's own server: uvloop closes a listening socket for
good when ``accept`` fails with anything but EAGAIN, ECONNABORTED, EMFILE
or ENFILE (ENOBUFS and ENOMEM under memory pressure, for instance), and
tells nobody; that worker would silently stop accepting. And for TLS, a
protocol cannot pause reading before uvloop delivers the ClientHello, so a
handshake started from inside the protocol would lose it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import ssl
import struct
from collections.abc import Callable

from expressgateway.io.admission import Admission
from expressgateway.observability.metrics import REGISTRY

log = logging.getLogger("expressgateway.accept")

HANDSHAKE_ERRORS = REGISTRY.counter(
    "tls_handshake_errors_total", "TLS handshakes that failed or timed out.", ("listener", "reason")
)
HANDSHAKES = REGISTRY.counter(
    "tls_handshakes_total",
    "TLS handshakes completed, by whether the client resumed a session (ticket or cache).",
    ("listener", "resumed"),
)
ACCEPT_ERRORS = REGISTRY.counter(
    "accept_errors_total", "Errors while accepting connections, by kind.", ("listener", "kind")
)
#: connections accepted per readiness event, so one busy listener cannot starve the loop
ACCEPT_BATCH = 64
BACKOFF_START = 0.01
_LINGER_RST = struct.pack("ii", 1, 0)


def _kind(exc: OSError) -> str:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return "fd_exhausted"
    if exc.errno in (errno.ENOBUFS, errno.ENOMEM):
        return "no_memory"
    if exc.errno in (errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO):
        return "conn_reset"
    return "other"


class Acceptor:
    def __init__(
        self,
        name: str,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None,
        factory: Callable[[str], asyncio.Protocol],
        admission: Admission,
        handshake_timeout: float,
        backoff_max: float = 1.0,
    ) -> None:
        self.name = name
        self.sock = sock
        self.ssl_context = ssl_context
        self.factory = factory
        self.admission = admission
        self.handshake_timeout = handshake_timeout
        self.backoff_max = backoff_max
        self._backoff = BACKOFF_START
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading = False
        self._closed = False
        self._full = HANDSHAKES.labels(name, "false")
        self._resumed = HANDSHAKES.labels(name, "true")

    def start(self) -> None:
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self._reading = True

    def close(self) -> None:
        """Stop accepting and close the listening socket, so new connections
        are refused at once (a SO_REUSEPORT sibling or successor takes them)
        rather than queued in a backlog nobody reads."""
        if self._closed:
            return
        self._closed = True
        if self._reading:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False
        self.sock.close()

    def _on_readable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                kind = _kind(exc)
                ACCEPT_ERRORS.labels(self.name, kind).inc()
                if kind == "conn_reset":
                    continue  # that one connection is gone; the listener is fine
                self._pause_accepting(exc)
                return
            self._backoff = BACKOFF_START
            ip = str(addr[0])
            if not self.admission.admit(self.name, ip):
                # Close with RST and no response: nothing to amplify.
                try:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                finally:
                    conn.close()
                continue
            conn.setblocking(False)
            opener = self._handshake if self.ssl_context is not None else self._open
            task = self._loop.create_task(opener(conn, ip))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pause_accepting(self, exc: OSError) -> None:
        delay = self._backoff * random.uniform(0.75, 1.25)
        self._backoff = min(self._backoff * 2, self.backoff_max)
        log.warning(
            "accept failed; backing off",
            extra={"listener": self.name, "error": str(exc), "delay_ms": round(delay * 1000)},
        )
        self._loop.remove_reader(self.sock.fileno())
        self._reading = False
        self._loop.call_later(delay, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if not self._closed and not self._reading:
            self.start()

    async def _open(self, conn: socket.socket, ip: str) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: self.factory(ip), conn)
        except (OSError, ConnectionError):
            self.admission.release(self.name, ip)
            conn.close()

    async def _handshake(self, conn: socket.socket, ip: str) -> None:
        try:
            transport, _ = await self._loop.connect_accepted_socket(
                lambda: self.factory(ip),
                conn,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 - uvloop raises the alias
            self._failed(conn, ip, "timeout")
        except ssl.SSLError as exc:
            self._failed(conn, ip, (exc.reason or "ssl_error").lower())
        except (OSError, ConnectionError) as exc:
            reason = "timeout" if isinstance(exc, ConnectionAbortedError) else "connection_error"
            self._failed(conn, ip, reason)
        else:
            sslobj = transport.get_extra_info("ssl_object")
            (self._resumed if sslobj is not None and sslobj.session_reused else self._full).inc()

    def _failed(self, conn: socket.socket, ip: str, reason: str) -> None:
        HANDSHAKE_ERRORS.labels(self.name, reason[:40]).inc()
        self.admission.release(self.name, ip)
        try:
            conn.close()
        except OSError:
            pass
