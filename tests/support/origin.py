"""A test origin with edge-case routes, run as its own process:

    python tests/support/origin.py PORT [--tls CERT KEY]

Routes (GET unless said):
  /                     200 "hello from origin"
  /size/N               N bytes (content-length), streamed in 64 KiB pieces
  /chunked/N            N bytes, chunked
  /trailers             chunked body + trailers x-checksum and grpc-status
  /headers              the request head as JSON (method, path, headers)
  /status/N             status N with a short body
  /early-hints          103 (link) then 200
  /continue             honours Expect: 100-continue, then echoes the body size
  /slow-head/MS         waits MS ms before the head
  /slow-body/MS         head at once, body after MS ms
  /truncate             content-length 100, sends 50 bytes, closes
  /truncate-chunked     one chunk, then closes mid-body
  /close-delimited      no framing, body ends at close
  /drip/N/MS            N bytes one per MS ms (chunked)
  POST /echo            echoes the request body back (chunked), streamed
  POST /sink            reads the whole body, answers {"bytes": n, "sha256": ...}
Every request also counts in /stats (JSON: requests seen).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import sys

import httptools

STATS = {"requests": 0, "paths": []}
CHUNK = b"x" * 65536


class Origin(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.reset()
        self.queue: asyncio.Queue[bytes | None] | None = None
        self.paused = False

    def reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_size = 0
        self.sha = hashlib.sha256()
        self.echo = False
        self.sink = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        STATS["requests"] += 1
        path = self.url.decode()
        STATS["paths"].append(path)
        del STATS["paths"][:-100]
        method = self.parser.get_method()
        if method == b"POST" and path == "/echo":
            self.echo = True
            self.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/octet-stream\r\n\r\n"
            )
        elif path == "/sink" or path.startswith("/continue"):
            self.sink = True
            if path.startswith("/continue") and any(
                n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in self.headers
            ):
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.echo:
            self.write(b"%x\r\n%s\r\n" % (len(body), body))
        elif self.sink:
            self.sha.update(body)

    def on_message_complete(self) -> None:
        path = self.url.decode()
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        if self.echo:
            self.write(b"0\r\n\r\n")
        elif self.sink:
            self.respond(
                200, json.dumps({"bytes": self.body_size, "sha256": self.sha.hexdigest()}).encode()
            )
        else:
            asyncio.get_running_loop().create_task(self.route(method, path, list(self.headers)))
        if not keep and (self.echo or self.sink):
            self.close()
        self.reset()

    def respond(self, status: int, body: bytes, extra: bytes = b"") -> None:
        self.write(
            b"HTTP/1.1 %d X\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n%s\r\n%s"
            % (status, len(body), extra, body)
        )

    async def route(self, method: bytes, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        parts = path.split("?")[0].strip("/").split("/")
        head = parts[0]
        if path == "/":
            self.respond(200, b"hello from origin")
        elif head == "size":
            n = int(parts[1])
            self.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % n)
            if method == b"HEAD":
                return
            while n > 0 and self.transport is not None:
                piece = CHUNK[: min(n, len(CHUNK))]
                self.write(piece)
                n -= len(piece)
                if self.transport.get_write_buffer_size() > 1 << 20:
                    while self.transport and self.transport.get_write_buffer_size() > 1 << 18:
                        await asyncio.sleep(0.001)
        elif head == "chunked":
            n = int(parts[1])
            self.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            while n > 0:
                piece = CHUNK[: min(n, 4096)]
                self.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                n -= len(piece)
            self.write(b"0\r\n\r\n")
        elif head == "trailers":
            self.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum, grpc-status\r\n\r\n"
                b"5\r\nhello\r\n0\r\nx-checksum: abc123\r\ngrpc-status: 0\r\n\r\n"
            )
        elif head == "headers":
            body = json.dumps(
                {
                    "method": method.decode(),
                    "path": path,
                    "headers": [
                        [n.decode("latin-1").lower(), v.decode("latin-1")] for n, v in headers
                    ],
                }
            ).encode()
            self.respond(200, body, b"content-type: application/json\r\n")
        elif head == "status":
            self.respond(int(parts[1]), b"status %s\n" % parts[1].encode())
        elif head == "early-hints":
            self.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            await asyncio.sleep(0.05)
            self.respond(200, b"after hints")
        elif head == "slow-head":
            await asyncio.sleep(int(parts[1]) / 1000)
            self.respond(200, b"slow head")
        elif head == "slow-body":
            self.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
            await asyncio.sleep(int(parts[1]) / 1000)
            self.write(b"done")
        elif head == "truncate":
            self.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"y" * 50)
            await asyncio.sleep(0.05)
            if self.transport:
                self.transport.abort()
        elif head == "truncate-chunked":
            self.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await asyncio.sleep(0.05)
            if self.transport:
                self.transport.abort()
        elif head == "close-delimited":
            self.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end")
            self.close()
        elif head == "drip":
            n, ms = int(parts[1]), int(parts[2])
            self.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(n):
                await asyncio.sleep(ms / 1000)
                self.write(b"1\r\nd\r\n")
            self.write(b"0\r\n\r\n")
        elif head == "stats":
            self.respond(200, json.dumps(STATS).encode())
        else:
            self.respond(404, b"no such route")


async def main() -> None:
    port = int(sys.argv[1])
    ctx = None
    if len(sys.argv) > 2 and sys.argv[2] == "--tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server = await asyncio.get_running_loop().create_server(
        Origin, "127.0.0.1", port, ssl=ctx, reuse_address=True
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
