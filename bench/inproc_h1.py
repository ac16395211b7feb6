"""The Python cost of one HTTP/1.1 -> HTTP/1.1 exchange, without the kernel.

A real ``h1`` listener context (built by the worker's own builder from a real
config) drives the real front and back protocols, whose transports are fakes:
each iteration feeds one request to the front, the upstream's response to the
back, and checks that a whole response left through the front. What is timed
is therefore only the gateway's Python (codecs, bridge, balancer, metrics).

    python bench/inproc_h1.py                 # µs per exchange, best of 5
    python bench/inproc_h1.py --profile       # plus a cProfile table

Use it to measure a hot-path change in seconds; `bench/run.sh` gives the
end-to-end figures (kernel and event loop included) against the peers.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from expressgateway.config import Config
from expressgateway.config.load import parse_config
from expressgateway.io.admission import Admission
from expressgateway.io.cork import cork
from expressgateway.proxy.h1back import H1Back
from expressgateway.proxy.h1front import H1Front
from expressgateway.proxy.h1listener import build_h1
from expressgateway.runtime.listeners import WorkerContext
from expressgateway.upstream.cluster import Clusters

CONFIG = """
[runtime]
workers = 1
max_keepalive_requests = 0

[[listeners]]
name = "bench"
address = "127.0.0.1:0"
protocol = "h1"

[[listeners.backends]]
address = "127.0.0.1:38081"
protocol = "h1"
"""

# What wrk sends, and what nginx answers for a 1 KiB file.
REQUEST = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:38080\r\n\r\n"
BODY = b"x" * 1024
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 1024\r\n"
    b"Last-Modified: Tue, 01 Dec 2026 09:00:00 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "674c2a10-400"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n" + BODY
)


class FakeTransport:
    """Just enough of an asyncio transport for the protocols."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.written += len(c)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            return ("127.0.0.1", 38080)
        return default

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def worker_context(cfg: Config) -> WorkerContext:
    """What a worker builds its listeners from, for worker 0 of ``cfg``."""
    rt = cfg.runtime
    return WorkerContext(
        config=cfg,
        admission=Admission(rt.per_ip_connection_cap, rt.max_inflight_connections),
        index=0,
        clusters=Clusters(cfg),
    )


async def setup() -> tuple[H1Front, H1Back, FakeTransport]:
    cfg = parse_config(CONFIG)
    wc = worker_context(cfg)
    lc = cfg.listeners[0]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    running = await build_h1(wc, lc, sock)
    ctx = running.extra[0]
    front = H1Front(ctx)  # type: ignore[arg-type]
    ftr = FakeTransport(("127.0.0.1", 40000))
    front.connection_made(ftr)  # type: ignore[arg-type]
    ep = wc.clusters.for_listener(lc).endpoints[0]  # type: ignore[union-attr]
    back = H1Back(ctx, ep.key)  # type: ignore[arg-type]
    back.connection_made(FakeTransport(("127.0.0.1", 38081)))  # type: ignore[arg-type]
    back.endpoint = ep
    ep.connections += 1
    ctx.pool.put(back)  # type: ignore[attr-defined]
    return front, back, ftr


def end_of_iteration() -> None:
    """What the event loop does after the I/O callbacks: the deferred writes.
    The cork stays marked as scheduled so that no loop callback piles up (in
    the gateway one callback serves a whole batch of connections)."""
    c = cork()
    c.run()
    c.scheduled = True


def exchange(front: H1Front, back: H1Back, ftr: FakeTransport) -> None:
    before = ftr.written
    front.data_received(REQUEST)
    end_of_iteration()
    back.data_received(RESPONSE)
    end_of_iteration()
    if ftr.written - before < len(BODY):
        raise SystemExit("no response reached the client: the harness is broken")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="exchanges per timing")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    front, back, ftr = await setup()
    for _ in range(2000):
        exchange(front, back, ftr)
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(args.n):
            exchange(front, back, ftr)
        best = min(best, (time.process_time() - t0) / args.n)
    print(f"{best * 1e6:.2f} µs of Python per HTTP/1.1 exchange (best of 5 x {args.n})")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.n):
            exchange(front, back, ftr)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
