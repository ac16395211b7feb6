"""The scenarios: what front end each needs, how it is probed, loaded and measured."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import probes
from .certs import CertPair
from .loadgen import LoadError, LoadResult, run_h2load, run_json_tool, run_wrk
from .monitor import Window, tree_rss_bytes
from .origin import GRPC_PATH
from .procs import pinned_argv
from .proxies.base import GRPC, H1, H2TLS, H2TLS_H2, H3, TCP, Front
from .settings import (
    ORIGIN_H1_PORT,
    ORIGIN_H2C_PORT,
    TLS_NAME,
    TOOLS_DIR,
    UPLOAD_SINK_PORT,
    WS_ECHO_PORT,
    Mode,
)

MIB = 1024 * 1024


@dataclass
class Env:
    """Everything a scenario run needs besides the proxy's front end."""

    duration: float
    warmup: float
    mode: Mode
    work_dir: Path
    docroot: Path
    certs: CertPair
    smoke: bool = False
    probe_deadline: float = 20.0


@dataclass
class Measurement:
    """Figures of one (scenario, proxy, round)."""

    rate: float | None = None  # units per second
    mib_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us_per_unit: float | None = None
    peak_rss_mib: float | None = None
    errors: int = 0
    units: float = 0.0
    error_detail: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


LoadFn = Callable[[Front, Env, float], LoadResult]


class Scenario:
    name = ""
    title = ""
    kind = H1
    backend_port = ORIGIN_H1_PORT
    unit = "req"
    reference = "haproxy"
    big_idle = False
    websocket = False
    headline = "rate"  # which figure the chart shows

    def front(self) -> Front:
        return Front(
            kind=self.kind,
            backend_port=self.backend_port,
            big_idle=self.big_idle,
            websocket=self.websocket,
        )

    def probe(self, front: Front, env: Env) -> None:
        probes.until_ok(probes.h1_get, front, env.probe_deadline)

    def run(self, front: Front, pid: int, env: Env) -> Measurement:
        raise NotImplementedError


class Throughput(Scenario):
    """A load generator for `duration` seconds; CPU and RSS over the same window."""

    per_mib = False  # count units in MiB moved instead of requests

    def __init__(
        self,
        name: str,
        title: str,
        kind: str,
        load: LoadFn,
        *,
        unit: str = "req",
        backend_port: int = ORIGIN_H1_PORT,
        probe: Callable[[Front, Env], None] | None = None,
        reference: str = "haproxy",
        per_mib: bool = False,
        websocket: bool = False,
    ) -> None:
        self.name, self.title, self.kind, self.load = name, title, kind, load
        self.unit, self.backend_port, self.reference = unit, backend_port, reference
        self.per_mib = per_mib
        self.websocket = websocket
        self._probe = probe

    def probe(self, front: Front, env: Env) -> None:
        if self._probe is None:
            super().probe(front, env)
        else:
            self._probe(front, env)

    def run(self, front: Front, pid: int, env: Env) -> Measurement:
        if env.warmup > 0:
            self.load(front, env, env.warmup)
        with Window(pid) as win:
            res = self.load(front, env, env.duration)
        units = res.bytes_total / MIB if self.per_mib else float(res.requests)
        return Measurement(
            rate=units / res.duration if res.duration > 0 else None,
            mib_s=res.bytes_per_s / MIB,
            p50_ms=res.p50_ms,
            p99_ms=res.p99_ms,
            cpu_us_per_unit=win.cpu_seconds * 1e6 / units if units > 0 else None,
            peak_rss_mib=win.peak_rss / MIB,
            errors=res.errors,
            units=units,
            error_detail=res.error_detail,
        )


class IdleConnections(Scenario):
    """N keep-alive connections, one request each, then idle: RSS per connection."""

    unit = "conn"
    big_idle = True
    headline = "rss_per_conn_kib"

    def __init__(self, count: int) -> None:
        self.count = count
        self.name = "idle_10k"
        self.title = f"{count} idle keep-alive connections (H1)"

    def run(self, front: Front, pid: int, env: Env) -> Measurement:
        count = 200 if env.smoke else self.count
        time.sleep(0.3)
        before = tree_rss_bytes(pid)
        argv = [
            sys.executable,
            str(TOOLS_DIR / "idle_client.py"),
            front.host,
            str(front.port),
            str(count),
            "/1k",
        ]
        proc = subprocess.Popen(
            pinned_argv(argv, env.mode.load_cpus),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            with Window(pid) as win:
                line = _read_ready(proc, timeout=180)
            ready = json.loads(line.split(" ", 1)[1])
            time.sleep(1.0)
            after = tree_rss_bytes(pid)
        finally:
            _close_client(proc)
        opened = int(ready["open"])
        growth = max(0, after - before)
        return Measurement(
            rate=opened / ready["setup_s"] if ready["setup_s"] > 0 else None,
            cpu_us_per_unit=win.cpu_seconds * 1e6 / opened if opened else None,
            peak_rss_mib=max(win.peak_rss, after) / MIB,
            errors=int(ready["errors"]),
            units=opened,
            error_detail=list(ready["error_detail"]),
            extra={
                "rss_per_conn_kib": growth / 1024 / opened if opened else float("nan"),
                "rss_growth_mib": growth / MIB,
                "open": float(opened),
            },
        )


def _read_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return line.strip()
        if not line and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise LoadError(f"idle client exited: {err[-300:]}")
    raise LoadError("idle client never became ready")


def _close_client(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait(timeout=10)


class Upload(Scenario):
    """One large streamed POST: the proxy's RSS growth over its idle baseline."""

    backend_port = UPLOAD_SINK_PORT
    unit = "MiB"
    headline = "rss_growth_mib"

    def __init__(self, size: int) -> None:
        self.size = size
        self.name = "upload_1g"
        self.title = f"{size // MIB} MiB upload (H1, streamed)"

    def probe(self, front: Front, env: Env) -> None:
        probes.until_ok(probes.h1_post, front, env.probe_deadline)

    def run(self, front: Front, pid: int, env: Env) -> Measurement:
        size = 32 * MIB if env.smoke else self.size
        time.sleep(0.3)
        before = tree_rss_bytes(pid)
        argv = [
            sys.executable,
            str(TOOLS_DIR / "upload_client.py"),
            front.host,
            str(front.port),
            "/upload",
            str(size),
        ]
        with Window(pid, interval=0.05) as win:
            res = run_json_tool(argv, 240, env.mode.load_cpus)
        mib = res.bytes_total / MIB if res.requests else 0.0
        return Measurement(
            rate=mib / res.duration if res.duration > 0 and mib else None,
            mib_s=mib / res.duration if res.duration > 0 and mib else None,
            cpu_us_per_unit=win.cpu_seconds * 1e6 / mib if mib else None,
            peak_rss_mib=win.peak_rss / MIB,
            errors=res.errors,
            units=mib,
            error_detail=res.error_detail,
            extra={"rss_growth_mib": max(0, win.peak_rss - before) / MIB},
        )


# ---------------------------------------------------------------- load functions


def _wrk(path: str, conns: int, headers: list[str] | None = None) -> LoadFn:
    def load(front: Front, env: Env, duration: float) -> LoadResult:
        url = f"http://{front.host}:{front.port}{path}"
        return run_wrk(url, duration, conns, env.mode.load_threads, env.mode.load_cpus, headers)

    return load


def _h2load(path: str, conns: int, streams: int, grpc: bool = False) -> LoadFn:
    def load(front: Front, env: Env, duration: float) -> LoadResult:
        extra = probes.grpc_args(env.docroot) if grpc else []
        url = f"https://{front.host}:{front.port}{path}"
        return run_h2load(
            url,
            duration,
            conns,
            streams,
            env.mode.load_threads,
            env.mode.load_cpus,
            env.work_dir,
            extra,
        )

    return load


def _ws(conns: int, size: int) -> LoadFn:
    def load(front: Front, env: Env, duration: float) -> LoadResult:
        url = f"ws://{front.host}:{front.port}/ws"
        argv = [
            sys.executable,
            str(TOOLS_DIR / "ws_client.py"),
            url,
            str(conns),
            str(duration),
            str(size),
        ]
        return run_json_tool(argv, duration, env.mode.load_cpus)

    return load


def _h3(concurrency: int) -> LoadFn:
    def load(front: Front, env: Env, duration: float) -> LoadResult:
        url = f"https://{TLS_NAME}:{front.port}/1k"
        resolve = f"{TLS_NAME}:{front.port}:{front.host}"
        argv = [
            sys.executable,
            str(TOOLS_DIR / "h3_client.py"),
            url,
            str(concurrency),
            str(duration),
            resolve,
        ]
        return run_json_tool(argv, duration, env.mode.load_cpus)

    return load


def _probe_h2(front: Front, env: Env) -> None:
    probes.until_ok(probes.h2_get, front, env.probe_deadline)


def _probe_grpc(front: Front, env: Env) -> None:
    probes.until_ok(probes.make_grpc_probe(env.docroot, env.certs.cert), front, env.probe_deadline)


def _probe_h3(front: Front, env: Env) -> None:
    probes.until_ok(probes.h3_get, front, env.probe_deadline + 5)


def _probe_ws(front: Front, env: Env) -> None:
    probes.until_ok(probes.ws_echo, front, env.probe_deadline)


def _probe_tcp(front: Front, env: Env) -> None:
    probes.until_ok(lambda f: probes.h1_get(f, "/16m", 16 * MIB), front, env.probe_deadline)


def all_scenarios() -> list[Scenario]:
    return [
        Throughput("h1_1k", "H1 -> H1, 1 KiB (wrk -c50)", H1, _wrk("/1k", 50)),
        Throughput("h1_1m", "H1 -> H1, 1 MiB (wrk -c10)", H1, _wrk("/1m", 10)),
        Throughput(
            "h2tls_h1",
            "H2 (TLS) -> H1, 1 KiB (h2load -c50 -m10)",
            H2TLS,
            _h2load("/1k", 50, 10),
            probe=_probe_h2,
        ),
        Throughput(
            "h2tls_h2",
            "H2 (TLS) -> H2 (h2c), 1 KiB (h2load -c50 -m10)",
            H2TLS_H2,
            _h2load("/1k", 50, 10),
            backend_port=ORIGIN_H2C_PORT,
            probe=_probe_h2,
        ),
        Throughput(
            "h3_h1",
            "H3 -> H1, 1 KiB (curl_cffi loop, 16 in flight)",
            H3,
            _h3(16),
            probe=_probe_h3,
            reference="caddy",
        ),
        Throughput(
            "ws_echo",
            "WebSocket echo, 64 B messages (50 connections)",
            H1,
            _ws(50, 64),
            unit="msg",
            backend_port=WS_ECHO_PORT,
            probe=_probe_ws,
        ),
        Throughput(
            "grpc_unary",
            "gRPC unary over H2 TLS -> h2c (h2load -c50 -m10)",
            GRPC,
            _h2load(GRPC_PATH, 50, 10, grpc=True),
            backend_port=ORIGIN_H2C_PORT,
            probe=_probe_grpc,
        ),
        Throughput(
            "tcp_bulk",
            "L4 TCP bulk, 16 MiB responses (wrk -c4)",
            TCP,
            _wrk("/16m", 4),
            unit="MiB",
            per_mib=True,
            probe=_probe_tcp,
        ),
        Throughput(
            "tcp_conn",
            "L4 TCP new connections (1 request each, wrk -c50)",
            TCP,
            _wrk("/1k", 50, ["Connection: close"]),
            unit="conn",
            probe=_probe_tcp,
        ),
        IdleConnections(10_000),
        Upload(1024 * MIB),
    ]


def by_name() -> dict[str, Scenario]:
    return {s.name: s for s in all_scenarios()}
