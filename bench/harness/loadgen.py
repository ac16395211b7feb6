"""Load generators (wrk, h2load, our small Python clients) and their output parsers."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .procs import run_capture

_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass
class LoadResult:
    """What one measured load run produced."""

    requests: int
    duration: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    bytes_total: float = 0.0
    error_detail: list[str] = field(default_factory=list)
    client_cpu_s: float | None = None  # the load client's own CPU (tools that report it)

    @property
    def rate(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes_total / self.duration if self.duration > 0 else 0.0


class LoadError(RuntimeError):
    """The load generator itself failed (not the proxy answering with errors)."""


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def _bytes(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([KMGT]?B)", text.strip())
    if not match:
        raise ValueError(f"bad size {text!r}")
    return float(match.group(1)) * _SIZE_UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Parse `wrk --latency` output."""
    summary = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),\s+([\d.]+[KMGT]?B) read", output)
    if not summary:
        raise LoadError(f"unparseable wrk output: {output[-400:]!r}")
    requests = int(summary.group(1))
    duration = _ms(summary.group(2) + summary.group(3)) / 1000.0
    pcts = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.M))
    errors = 0
    detail: list[str] = []
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(x) for x in sock.groups())
        detail.append(sock.group(0))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
        detail.append(non2xx.group(0))
    # Successful requests only: wrk counts non-2xx responses as requests.
    good = requests - (int(non2xx.group(1)) if non2xx else 0)
    return LoadResult(
        requests=max(0, good),
        duration=duration,
        p50_ms=_ms(pcts["50"]) if "50" in pcts else None,
        p99_ms=_ms(pcts["99"]) if "99" in pcts else None,
        errors=errors,
        bytes_total=_bytes(summary.group(4)),
        error_detail=detail,
    )


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def parse_h2load(output: str, log_file: Path | None = None) -> LoadResult:
    """Parse h2load's summary; latency percentiles come from its --log-file."""
    fin = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s, ([\d.]+[KMGT]?B)/s", output)
    req = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if not (fin and req and codes):
        raise LoadError(f"unparseable h2load output: {output[-400:]!r}")
    duration = _ms(fin.group(1) + fin.group(2)) / 1000.0
    ok_2xx = int(codes.group(1))
    failed, errored, timeout = int(req.group(5)), int(req.group(6)), int(req.group(7))
    bad_status = int(codes.group(3)) + int(codes.group(4))
    detail = [req.group(0), codes.group(0)] if (failed or errored or timeout or bad_status) else []
    p50 = p99 = None
    if log_file is not None and log_file.exists():
        lat = sorted(
            int(cols[2]) / 1000.0
            for cols in (line.split("\t") for line in log_file.read_text().splitlines())
            if len(cols) >= 3
        )
        p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    return LoadResult(
        requests=ok_2xx,
        duration=duration,
        p50_ms=p50,
        p99_ms=p99,
        errors=failed + errored + timeout + bad_status,
        bytes_total=_bytes(fin.group(4)) * duration,
        error_detail=detail,
    )


def run_wrk(
    url: str,
    duration: float,
    connections: int,
    threads: int,
    cpus: tuple[int, ...] | None,
    headers: list[str] | None = None,
) -> LoadResult:
    argv = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s"]
    argv += ["--timeout", "10s"]
    for header in headers or []:
        argv += ["-H", header]
    argv.append(url)
    proc = _run(argv, duration, cpus)
    return parse_wrk(proc.stdout)


def run_h2load(
    url: str,
    duration: float,
    connections: int,
    streams: int,
    threads: int,
    cpus: tuple[int, ...] | None,
    work_dir: Path,
    extra: list[str] | None = None,
) -> LoadResult:
    log_file = work_dir / "h2load-requests.tsv"
    log_file.unlink(missing_ok=True)
    argv = [
        "h2load",
        f"-c{connections}",
        f"-m{streams}",
        f"-t{threads}",
        f"-D{max(1, round(duration))}",
        "--log-file",
        str(log_file),
        *(extra or []),
        url,
    ]
    proc = _run(argv, duration, cpus)
    try:
        return parse_h2load(proc.stdout, log_file)
    finally:
        log_file.unlink(missing_ok=True)


def run_json_tool(argv: list[str], duration: float, cpus: tuple[int, ...] | None) -> LoadResult:
    """Run one of harness/tools/*.py clients; they print a JSON line."""
    proc = _run(argv, duration, cpus)
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        raise LoadError(f"client failed: {(proc.stderr or proc.stdout)[-400:]}") from exc
    return LoadResult(
        requests=int(data["requests"]),
        duration=float(data["duration"]),
        p50_ms=data.get("p50_ms"),
        p99_ms=data.get("p99_ms"),
        errors=int(data.get("errors", 0)),
        bytes_total=float(data.get("bytes", 0)),
        error_detail=list(data.get("error_detail", [])),
        client_cpu_s=data.get("client_cpu_s"),
    )


def _run(
    argv: list[str], duration: float, cpus: tuple[int, ...] | None
) -> subprocess.CompletedProcess[str]:
    try:
        proc = run_capture(argv, timeout=duration + 60, cpus=cpus)
    except FileNotFoundError as exc:
        raise LoadError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{argv[0]} did not finish in time") from exc
    if proc.returncode != 0 and not proc.stdout:
        raise LoadError(f"{argv[0]} exited {proc.returncode}: {proc.stderr[-400:]}")
    return proc
