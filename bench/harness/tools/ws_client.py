"""WebSocket echo load: C connections, each in a send/receive loop for D seconds.

Standalone: `python ws_client.py URL CONNECTIONS DURATION [SIZE]`; prints one JSON line:
{"requests": messages echoed, "duration", "errors", "p50_ms", "p99_ms", "bytes"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


async def worker(url: str, end: float, payload: bytes, lat: list[float], errs: list[str]) -> int:
    done = 0
    try:
        async with connect(url, compression=None, max_size=None, open_timeout=10) as ws:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                await ws.send(payload)
                reply = await ws.recv()
                lat.append((time.perf_counter() - t0) * 1000.0)
                if reply != payload:
                    errs.append("echo mismatch")
                    break
                done += 1
    except Exception as exc:  # reported, not raised: the harness counts errors
        errs.append(f"{type(exc).__name__}: {exc}")
    return done


async def main(url: str, conns: int, duration: float, size: int) -> dict[str, object]:
    payload = b"x" * size
    lat: list[float] = []
    errs: list[str] = []
    start = time.monotonic()
    end = start + duration
    counts = await asyncio.gather(*(worker(url, end, payload, lat, errs) for _ in range(conns)))
    elapsed = time.monotonic() - start
    total = sum(counts)
    return {
        "requests": total,
        "duration": elapsed,
        "errors": len(errs),
        "error_detail": sorted(set(errs))[:3],
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "bytes": total * size * 2,
    }


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    result = asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), size))
    print(json.dumps(result))
