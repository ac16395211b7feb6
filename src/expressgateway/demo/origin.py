"""The built-in demo origin: a tiny HTTP/1.1 server for ``expressgateway demo``.

It answers every request with a short text page naming the request, so a
user sees the gateway at work (``curl -i http://127.0.0.1:8080/``).
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools


class DemoOrigin(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)  # uvloop transports are not subclasses
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        lines = [
            b"Hello from the ExpressGateway demo origin!",
            b"method: " + self.parser.get_method(),
            b"path: " + self.url,
        ]
        lines += [b"header " + n + b": " + v for n, v in self.headers]
        body = b"\n".join(lines) + b"\n"
        keep = self.parser.should_keep_alive()
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\n%s\r\n" % (len(body), b"" if keep else b"connection: close\r\n")
        )
        if self.transport is not None:
            self.transport.write(head + body)
            if not keep:
                self.transport.close()
        self.url = b""
        self.headers = []


async def start_demo_origin(host: str, port: int) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(DemoOrigin, host, port, reuse_address=True)
