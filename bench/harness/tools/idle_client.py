"""Open N HTTP/1.1 keep-alive connections, one request each, then hold them idle.

Standalone: `python idle_client.py HOST PORT N PATH`. Prints `READY {json}` once every
connection is idle, then waits until stdin closes, closes all sockets and exits.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time


async def one(host: str, port: int, path: str, sem: asyncio.Semaphore) -> asyncio.StreamWriter:
    async with sem:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 20)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await asyncio.wait_for(reader.readexactly(length), 20)
        return writer


async def main(host: str, port: int, count: int, path: str) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sem = asyncio.Semaphore(200)
    t0 = time.monotonic()
    results = await asyncio.gather(
        *(one(host, port, path, sem) for _ in range(count)), return_exceptions=True
    )
    writers = [r for r in results if isinstance(r, asyncio.StreamWriter)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    ready = {
        "open": len(writers),
        "errors": len(errors),
        "error_detail": sorted(set(errors))[:3],
        "setup_s": time.monotonic() - t0,
    }
    print("READY " + json.dumps(ready), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
