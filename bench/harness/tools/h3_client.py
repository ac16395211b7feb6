"""HTTP/3 load: curl_cffi (libcurl + ngtcp2 + nghttp3), C concurrent requests, D seconds.

The same client is used for every proxy, so its own ceiling (a few thousand req/s on
one core) is shared. Standalone: `python h3_client.py URL CONCURRENCY DURATION [RESOLVE]`
where RESOLVE is curl's `host:port:addr`. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from curl_cffi import CurlHttpVersion, CurlOpt
from curl_cffi.requests import AsyncSession


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values.sort()
    return values[min(len(values) - 1, int(q * len(values)))]


async def worker(
    session: AsyncSession, url: str, end: float, lat: list[float], errs: list[str]
) -> tuple[int, int]:
    done = 0
    nbytes = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            resp = await session.get(url, timeout=10)
        except Exception as exc:
            errs.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            await asyncio.sleep(0.01)
            continue
        lat.append((time.perf_counter() - t0) * 1000.0)
        if resp.status_code != 200 or resp.http_version not in (3, 30):
            errs.append(f"status {resp.status_code} http_version {resp.http_version}")
            continue
        done += 1
        nbytes += len(resp.content)
    return done, nbytes


async def main(url: str, conc: int, duration: float, resolve: str | None) -> dict[str, object]:
    opts: dict[CurlOpt, object] = {}
    if resolve:
        opts[CurlOpt.RESOLVE] = [resolve]
    lat: list[float] = []
    errs: list[str] = []
    async with AsyncSession(
        max_clients=conc,
        verify=False,
        http_version=CurlHttpVersion.V3ONLY,
        curl_options=opts,
    ) as session:
        start = time.monotonic()
        end = start + duration
        parts = await asyncio.gather(*(worker(session, url, end, lat, errs) for _ in range(conc)))
        elapsed = time.monotonic() - start
    total = sum(p[0] for p in parts)
    return {
        "requests": total,
        "duration": elapsed,
        "errors": len(errs),
        "error_detail": sorted(set(errs))[:3],
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "bytes": sum(p[1] for p in parts),
    }


if __name__ == "__main__":
    resolve = sys.argv[4] if len(sys.argv) > 4 else None
    result = asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), resolve))
    print(json.dumps(result))
