"""HTTP/1.1 origin that reads and discards request bodies of any size (upload scenario).

Standalone: `python upload_sink.py PORT`. Accepts Content-Length and chunked bodies,
answers 200 with the number of body bytes it received. Keep-alive.
"""

from __future__ import annotations

import asyncio
import sys

CHUNK = 1 << 20


async def _discard_exact(reader: asyncio.StreamReader, remaining: int) -> int:
    got = 0
    while remaining > 0:
        data = await reader.read(min(CHUNK, remaining))
        if not data:
            raise ConnectionError("body truncated")
        got += len(data)
        remaining -= len(data)
    return got


async def _discard_chunked(reader: asyncio.StreamReader) -> int:
    total = 0
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("chunked body truncated")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return total
        total += await _discard_exact(reader, size)
        await reader.readline()


def _headers(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            out[name.strip().lower()] = value.strip()
    return out


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = _headers(head)
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                got = await _discard_chunked(reader)
            else:
                got = await _discard_exact(reader, int(headers.get(b"content-length", b"0")))
            body = f"received={got}\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1])))
