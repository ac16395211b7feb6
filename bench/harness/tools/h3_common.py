"""What the two HTTP/3 load clients (h3_curl.py, h3_load.py) share: arguments, the
split over processes and the merged JSON result."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from typing import Any

GRACE_S = 20.0  # a child gets duration + handshake timeout + this, then is killed


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("host", help="address to send to (the proxy's)")
    ap.add_argument("port", type=int)
    ap.add_argument("--sni", default="localhost", help="TLS server name and :authority")
    ap.add_argument("--path", default="/1k")
    ap.add_argument("-c", "--connections", type=int, default=4)
    ap.add_argument("-m", "--streams", type=int, default=16, help="requests in flight per conn")
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--procs", type=int, default=1, help="split connections over processes")
    ap.add_argument("--handshake-timeout", type=float, default=5.0)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    return ap


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge per-process results: counts add up, latency samples are pooled."""
    lat = sorted(x for p in parts for x in p.get("lat_ms", []))
    details: list[str] = []
    for p in parts:
        details += p.get("error_detail", [])
    durations = [p["duration"] for p in parts if p.get("duration")]
    return {
        "requests": sum(p["requests"] for p in parts),
        "duration": sum(durations) / len(durations) if durations else 0.0,
        "errors": sum(p["errors"] for p in parts),
        "error_detail": details[:3],
        "p50_ms": pct(lat, 0.50),
        "p99_ms": pct(lat, 0.99),
        "bytes": sum(p["bytes"] for p in parts),
        "connections": sum(p.get("connections", 0) for p in parts),
        "procs": len(parts),
        # the client's own CPU over the measured window, all processes
        "client_cpu_s": sum(p.get("client_cpu_s", 0.0) for p in parts),
    }


def children(script: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run `procs` copies of the script, each with its share of the connections."""
    procs = max(1, min(args.procs, args.connections))
    shares = [args.connections // procs + (i < args.connections % procs) for i in range(procs)]
    running = []
    for share in shares:
        child_argv = [sys.executable, script, *argv, "--procs", "1", "-c", str(share), "--raw"]
        running.append(subprocess.Popen(child_argv, stdout=subprocess.PIPE, text=True))
    parts: list[dict[str, Any]] = []
    for child in running:
        try:
            out, _ = child.communicate(timeout=args.duration + args.handshake_timeout + GRACE_S)
            parts.append(json.loads(out.strip().splitlines()[-1]))
        except (subprocess.TimeoutExpired, IndexError, ValueError) as exc:
            child.kill()
            child.wait()
            parts.append(
                {
                    "requests": 0,
                    "duration": 0.0,
                    "errors": 1,
                    "bytes": 0,
                    "error_detail": [f"child process: {type(exc).__name__}"],
                }
            )
    return summary(parts)


def main(
    script: str,
    description: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    argv: list[str],
) -> None:
    args = parser(description).parse_args(argv)
    if args.raw:
        print(json.dumps(run(args)))
    elif args.procs > 1 and args.connections > 1:
        print(json.dumps(children(script, args, argv)))
    else:
        print(json.dumps(summary([run(args)])))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (and any library's atexit work)
