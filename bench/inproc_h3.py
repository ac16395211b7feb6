"""The Python cost of HTTP/3 -> HTTP/1.1 exchanges, without the kernel.

A real ``quic`` listener (built by the worker's own builder from a real config)
is fed the datagrams of in-process aioquic HTTP/3 clients (C connections x M
streams kept busy, like the bench's ``h3_h1``); its packets are captured by a fake
transport and handed back to the clients. Upstream HTTP/1.1 connections are the
real ``H1Back`` protocol on fake transports, answered with what nginx sends for
1 KiB. Only the gateway's calls are timed (the clients are aioquic too, and not
counted); the event loop runs between the phases so the gateway's end-of-iteration
callbacks (packet building, the HTTP/1.1 cork) run as they would in a worker.

    python bench/inproc_h3.py                  # µs of gateway Python per exchange
    python bench/inproc_h3.py --profile FILE   # cProfile of the gateway's calls only

The clients pack two requests per datagram and acknowledge rarely, unlike curl, so
the figure is for comparing gateway versions, not for comparing with
``bench/run.sh`` (which includes the kernel and libcurl's packet pattern).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from expressgateway.config.load import parse_config
from expressgateway.io import cork as cork_module
from expressgateway.proxy import connectors
from expressgateway.proxy.h1back import H1Back
from expressgateway.proxy.h3listener import build_quic
from expressgateway.upstream.pool import peer_key
from inproc_h1 import RESPONSE, worker_context
from inproc_h1 import FakeTransport as H1FakeTransport

CONFIG = """
[runtime]
workers = 1
max_keepalive_requests = 0
max_requests_per_h3_connection = 0
per_ip_connection_cap = 20000

[[listeners]]
name = "bench"
address = "127.0.0.1:0"
protocol = "quic"
[listeners.quic]
cert_path = "{dir}/cert.pem"
key_path = "{dir}/key.pem"
retry_secret_path = "{dir}/retry.key"

[[listeners.backends]]
address = "127.0.0.1:38081"
protocol = "h1"
"""

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"localhost"),
    (b":path", b"/1k"),
    (b"user-agent", b"curl/8.11"),
    (b"accept", b"*/*"),
]
SERVER = ("127.0.0.1", 4433)


class Timer:
    """Times (or profiles) only the calls made into the gateway."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.profile: cProfile.Profile | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.profile is not None:
            self.profile.enable()
            fn(*args)
            self.profile.disable()
            return
        t0 = time.process_time()
        fn(*args)
        self.seconds += time.process_time() - t0


class FakeTransport(H1FakeTransport):
    """An upstream connection's transport; notes which backs got a request."""

    def __init__(self, back: H1Back, asked: list[H1Back]) -> None:
        super().__init__(("127.0.0.1", 38081))
        self.back = back
        self.asked = asked

    def write(self, data: bytes) -> None:
        self.asked.append(self.back)

    def writelines(self, chunks: list[bytes]) -> None:
        self.asked.append(self.back)


class FakeUdp:
    def __init__(self) -> None:
        self.out: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.out.append((data, addr))

    def close(self) -> None:
        pass


class Client:
    """An aioquic HTTP/3 client keeping ``streams`` requests in flight."""

    def __init__(self, port: int, now: float) -> None:
        conf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
        conf.verify_mode = ssl.CERT_NONE
        self.quic = QuicConnection(configuration=conf)
        self.quic.connect(SERVER, now=now)
        self.h3 = H3Connection(self.quic)
        self.addr = ("127.0.0.1", port)
        self.open = 0
        self.done = 0

    def request(self) -> None:
        sid = self.quic.get_next_available_stream_id()
        self.h3.send_headers(sid, REQUEST, end_stream=True)
        self.open += 1

    def receive(self, data: bytes, now: float) -> None:
        self.quic.receive_datagram(data, SERVER, now)
        while (ev := self.quic.next_event()) is not None:
            for he in self.h3.handle_event(ev):
                if isinstance(he, DataReceived) and he.stream_ended:
                    self.done += 1
                    self.open -= 1


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-c", type=int, default=10, help="connections")
    ap.add_argument("-m", type=int, default=10, help="streams in flight per connection")
    ap.add_argument("-n", type=int, default=1000, help="rounds timed (c x m exchanges each)")
    ap.add_argument("--per-datagram", type=int, default=2, help="requests per client datagram")
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile of the gateway's calls")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="inproc-h3-"))
    key, cert = str(tmp / "key.pem"), str(tmp / "cert.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-keyout", key, "-out", cert),
        ],
        check=True,
        capture_output=True,
    )
    wc = worker_context(parse_config(CONFIG.format(dir=tmp)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    running = await build_quic(wc, wc.config.listeners[0], sock)
    endpoint = running.quic
    udp = FakeUdp()
    endpoint.transport = udp
    endpoint.sock = None  # one sendto per datagram, into the fake

    timer = Timer()
    asked: list[H1Back] = []

    # upstream connections: made on demand on fake transports, then parked and
    # reused by the gateway as usual
    take = connectors.H1Connector.take

    def take_or_make(self: Any, ctx: Any, ep: Any) -> H1Back:
        back = take(self, ctx, ep)
        if back is None:
            back = H1Back(ctx, peer_key(ep))
            back.connection_made(FakeTransport(back, asked))  # type: ignore[arg-type]
            back.endpoint = ep
            ep.connections += 1
        return back

    connectors.H1Connector.take = take_or_make  # type: ignore[method-assign]
    # the gateway's end-of-iteration callbacks are timed too
    transmit = endpoint._transmit
    endpoint._transmit = lambda: timer.call(transmit)
    cork_run = cork_module.Cork.run
    cork_module.Cork.run = lambda self: timer.call(cork_run, self)  # type: ignore[method-assign]

    loop = asyncio.get_running_loop()
    clients = [Client(50000 + i, loop.time()) for i in range(args.c)]
    by_addr = {cl.addr: cl for cl in clients}

    def send(cl: Client) -> None:
        for data, _ in cl.quic.datagrams_to_send(loop.time()):
            timer.call(endpoint.datagram_received, data, cl.addr)

    def deliver() -> None:
        out = list(udp.out)
        udp.out.clear()
        for data, addr in out:
            by_addr[addr].receive(data, loop.time())

    for _ in range(50):  # handshakes, the Retry included
        for cl in clients:
            send(cl)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        deliver()

    async def rounds(n: int) -> None:
        for _ in range(n):
            for cl in clients:
                k = 0
                while cl.open < args.m:
                    cl.request()
                    k += 1
                    if k % args.per_datagram == 0:
                        send(cl)
                send(cl)
            await asyncio.sleep(0)  # packets built, requests written upstream
            backs = list(asked)
            asked.clear()
            for back in backs:
                timer.call(back.data_received, RESPONSE)
            await asyncio.sleep(0)  # responses packed
            deliver()

    await rounds(200)
    timer.seconds = 0.0
    before = sum(cl.done for cl in clients)
    if args.profile:
        timer.profile = cProfile.Profile()
    await rounds(args.n)
    done = sum(cl.done for cl in clients) - before
    if done < args.n * args.c * args.m // 2:
        raise SystemExit(f"only {done} exchanges completed: the harness is broken")
    if timer.profile is not None:
        timer.profile.dump_stats(args.profile)
        print(f"profile of {done} exchanges written to {args.profile}")
        return
    print(f"{timer.seconds / done * 1e6:.2f} µs of gateway Python per HTTP/3 exchange ({done})")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
