"""Bounded HTTP/3 load on libcurl (curl_cffi: ngtcp2 + nghttp3 + BoringSSL).

Standalone:

    python h3_curl.py HOST PORT [--sni localhost] [--path /1k] [-c 4] [-m 16] [-d 10]
                      [--procs 1] [--handshake-timeout 5]

Prints one JSON line: {"requests": 200 responses over HTTP/3 completed in the measured
window, "duration", "errors", "error_detail", "p50_ms", "p99_ms", "bytes",
"connections", "client_cpu_s"}. Each of the C connections is a multi handle of its own
holding M easy handles (a multi handle's connection cache is its own, so libcurl opens
exactly one QUIC connection per multi handle and multiplexes the M transfers on it;
with one shared multi handle libcurl ignores CURLMOPT_MAX_CONCURRENT_STREAMS for
HTTP/3 and piles streams onto as few connections as the server allows). A finished
handle is checked (result code, status 200, HTTP version 3) and re-added as it is, so
nothing is rebuilt per request. The window is D seconds from the first request
(handshakes, with the server's Retry, are in it); responses still in flight at the end
are neither counted nor errors, and the loop ends D + handshake timeout + 5 s later
whatever happens.

This is the default client of the HTTP/3 scenarios because it is the cheapest here:
libcurl, ngtcp2 and nghttp3 are C, driven through libcurl's socket API on one epoll
selector (curl_cffi's C socket/timer callbacks, a minimal loop below instead of
asyncio). Measured here: 21 CPU-µs per request at 36k req/s, 27-34 at the proxies'
rates (fewer responses per wake-up), against 45-60 for the aioquic client in
h3_load.py. Bodies go to /dev/null through libc fwrite, not a Python callback; status,
sizes and timings come from curl_easy_getinfo.
"""

from __future__ import annotations

import heapq
import selectors
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from cffi import FFI
from curl_cffi import (
    Curl,
    CurlHttpVersion,
    CurlInfo,
    CurlMOpt,
    CurlOpt,
    aio,  # noqa: F401  (defines the C socket/timer callbacks used below)
)
from curl_cffi._wrapper import ffi, lib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from h3_common import cpu_seconds, main

HTTP_VERSION_3 = 30  # CURL_HTTP_VERSION_3 as CURLINFO_HTTP_VERSION reports it
LAT_SAMPLES = 500_000
POLL_S = 0.05
CURL_SOCKET_TIMEOUT = -1

_libc = FFI()
_libc.cdef(
    "void *fopen(const char *path, const char *mode);"
    "size_t fwrite(const void *ptr, size_t size, size_t n, void *stream);"
)
_C = _libc.dlopen(None)


def _discard_writes(curl: Curl, devnull: Any) -> None:
    """Body bytes to fwrite(…, /dev/null): no Python call per chunk."""
    fwrite = ffi.cast("void *", int(_libc.cast("uintptr_t", _libc.addressof(_C, "fwrite"))))
    lib._curl_easy_setopt(curl._curl, CurlOpt.WRITEFUNCTION, fwrite)
    lib._curl_easy_setopt(curl._curl, CurlOpt.WRITEDATA, devnull)


def _easy(url: str, resolve: str, devnull: Any, timeout_s: float) -> Curl:
    curl = Curl()
    curl.setopt(CurlOpt.URL, url)
    curl.setopt(CurlOpt.RESOLVE, [resolve])
    curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V3ONLY)
    curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
    curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
    curl.setopt(CurlOpt.PIPEWAIT, 1)
    curl.setopt(CurlOpt.USERAGENT, "eg-bench-h3")
    curl.setopt(CurlOpt.TIMEOUT_MS, int(timeout_s * 1000))
    curl.setopt(CurlOpt.NOSIGNAL, 1)
    _discard_writes(curl, devnull)
    return curl


class Timer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args, self.cancelled = when, callback, args, False

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        self.cancelled = True


class MiniLoop:
    """The part of an asyncio loop that curl_cffi's socket/timer callbacks call
    (add/remove reader/writer, call_later), on one epoll selector, without asyncio."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.readers: dict[int, tuple[Any, tuple[Any, ...]]] = {}
        self.writers: dict[int, tuple[Any, tuple[Any, ...]]] = {}
        self.timers: list[Timer] = []

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self.readers else 0) | (
            selectors.EVENT_WRITE if fd in self.writers else 0
        )
        try:
            self.selector.modify(fd, events) if events else self.selector.unregister(fd)
        except KeyError:
            if events:
                self.selector.register(fd, events)
        except (ValueError, OSError):
            pass

    def add_reader(self, fd: int, callback: Any, *args: Any) -> None:
        self.readers[fd] = (callback, args)
        self._update(fd)

    def add_writer(self, fd: int, callback: Any, *args: Any) -> None:
        self.writers[fd] = (callback, args)
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self.writers.pop(fd, None) is not None:
            self._update(fd)

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        timer = Timer(time.monotonic() + delay, callback, args)
        heapq.heappush(self.timers, timer)
        return timer

    def run_once(self, max_wait: float) -> None:
        timers = self.timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
        wait = max_wait
        if timers:
            wait = min(wait, max(0.0, timers[0].when - time.monotonic()))
        for key, mask in self.selector.select(wait):
            fd = key.fd
            if mask & selectors.EVENT_READ and fd in self.readers:
                callback, args = self.readers[fd]
                callback(*args)
            if mask & selectors.EVENT_WRITE and fd in self.writers:
                callback, args = self.writers[fd]
                callback(*args)
        now = time.monotonic()
        while timers and (timers[0].cancelled or timers[0].when <= now):
            timer = heapq.heappop(timers)
            if not timer.cancelled:
                timer.callback(*timer.args)


class Stats:
    def __init__(self) -> None:
        self.ok = self.errors = self.nbytes = 0
        self.counting = True
        self.detail: dict[str, int] = {}
        self.lat: list[float] = []
        self.ports: set[int] = set()


class Connection:
    """One multi handle with M easy handles: libcurl opens one QUIC connection for it
    and multiplexes the M transfers on it (a multi handle's connection cache is its own,
    so C multi handles give exactly C connections). curl_cffi's C socket and timer
    callbacks drive it through `loop` and `process_data`, as they drive its AsyncCurl."""

    def __init__(self, loop: MiniLoop, stats: Stats, easies: list[Curl]) -> None:
        self.loop, self.stats, self.easies = loop, stats, easies
        self._timer: Timer | None = None
        self._sockfds: set[int] = set()
        self._self_handle = ffi.new_handle(self)
        self.multi = lib.curl_multi_init()
        setopt = lib.curl_multi_setopt
        setopt(self.multi, CurlMOpt.SOCKETFUNCTION, lib.socket_function)
        setopt(self.multi, CurlMOpt.TIMERFUNCTION, lib.timer_function)
        setopt(self.multi, CurlMOpt.SOCKETDATA, self._self_handle)
        setopt(self.multi, CurlMOpt.TIMERDATA, self._self_handle)
        setopt(self.multi, CurlMOpt.MAX_HOST_CONNECTIONS, ffi.new("long *", 1))
        self.running = ffi.new("int *")
        self.queued = ffi.new("int *")
        self.code, self.version, self.port = (ffi.new("long *") for _ in range(3))
        self.size, self.total_us = ffi.new("int64_t *"), ffi.new("int64_t *")
        for curl in easies:
            lib.curl_multi_add_handle(self.multi, curl._curl)

    def process_data(self, sockfd: int, bitmask: int) -> None:
        multi = self.multi
        lib.curl_multi_socket_action(multi, sockfd, bitmask, self.running)
        info_read, null = lib.curl_multi_info_read, ffi.NULL
        msg = info_read(multi, self.queued)
        while msg != null:
            easy = msg.easy_handle
            result = msg.data.result
            lib.curl_multi_remove_handle(multi, easy)
            if self.stats.counting:
                self.finished(easy, result)
                lib.curl_multi_add_handle(multi, easy)
            msg = info_read(multi, self.queued)

    def finished(self, easy: Any, result: int) -> None:
        stats, getinfo = self.stats, lib.curl_easy_getinfo
        getinfo(easy, CurlInfo.RESPONSE_CODE, self.code)
        getinfo(easy, CurlInfo.HTTP_VERSION, self.version)
        if result == 0 and self.code[0] == 200 and self.version[0] == HTTP_VERSION_3:
            stats.ok += 1
            getinfo(easy, CurlInfo.SIZE_DOWNLOAD_T, self.size)
            stats.nbytes += self.size[0]
            if len(stats.lat) < LAT_SAMPLES:
                getinfo(easy, CurlInfo.TOTAL_TIME_T, self.total_us)
                stats.lat.append(self.total_us[0] / 1000.0)
            if len(stats.ports) < 4096:
                getinfo(easy, CurlInfo.LOCAL_PORT, self.port)
                stats.ports.add(self.port[0])
            return
        stats.errors += 1
        if result:
            text = ffi.string(lib.curl_easy_strerror(result)).decode()
        else:
            text = f"status {self.code[0]}, HTTP version code {self.version[0]}"
        stats.detail[text] = stats.detail.get(text, 0) + 1

    def kick(self) -> None:
        """Start the transfers (libcurl then asks for sockets and timers)."""
        self.process_data(CURL_SOCKET_TIMEOUT, 0)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for curl in self.easies:
            lib.curl_multi_remove_handle(self.multi, curl._curl)
        lib.curl_multi_cleanup(self.multi)


def run(args: Namespace) -> dict[str, Any]:
    devnull = _libc.cast("void *", _C.fopen(b"/dev/null", b"wb"))
    devnull = ffi.cast("void *", int(_libc.cast("uintptr_t", devnull)))
    url = f"https://{args.sni}:{args.port}{args.path}"
    resolve = f"{args.sni}:{args.port}:{args.host}"
    timeout_s = args.duration + args.handshake_timeout
    loop, stats = MiniLoop(), Stats()
    conns = [
        Connection(
            loop, stats, [_easy(url, resolve, devnull, timeout_s) for _ in range(args.streams)]
        )
        for _ in range(args.connections)
    ]
    cpu0 = cpu_seconds()
    start = time.monotonic()
    end = start + args.duration
    hard_end = end + args.handshake_timeout + 5.0
    for conn in conns:
        conn.kick()
    while time.monotonic() < end:
        loop.run_once(POLL_S)
    stats.counting = False
    elapsed = time.monotonic() - start
    client_cpu = cpu_seconds() - cpu0
    # Let the transfers in flight finish (not counted) so connections close cleanly.
    while any(c.running[0] for c in conns) and time.monotonic() < hard_end:
        loop.run_once(POLL_S)
    for conn in conns:
        conn.close()
    return {
        "requests": stats.ok,
        "duration": elapsed,
        "errors": stats.errors,
        "error_detail": [f"{k} (x{v})" for k, v in sorted(stats.detail.items())][:3],
        "bytes": stats.nbytes,
        "connections": len(stats.ports),
        "lat_ms": stats.lat,
        "client_cpu_s": client_cpu,
    }


if __name__ == "__main__":
    main(__file__, __doc__.split("\n\n")[0], run, sys.argv[1:])
