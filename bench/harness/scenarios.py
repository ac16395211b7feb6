"""The scenarios: what front end each needs, how it is probed, loaded and measured."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from . import probes
from .loadgen import LoadResult, run_h2load, run_json_tool, run_wrk
from .memory import IdleConnections, Upload
from .monitor import Window
from .origin import GRPC_PATH
from .proxies.base import GRPC, H1, H2TLS, H2TLS_H2, H3, H3_H2, TCP, Front
from .scenario_base import MIB, Env, LoadFn, Measurement, Scenario
from .settings import ORIGIN_H1_PORT, ORIGIN_H2C_PORT, TLS_NAME, TOOLS_DIR, WS_ECHO_PORT

__all__ = ["Env", "Measurement", "Scenario", "Throughput", "all_scenarios", "by_name"]


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
        extra = {}
        if res.client_cpu_s is not None and units > 0:
            extra["client_cpu_us_per_unit"] = res.client_cpu_s * 1e6 / units
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
            extra=extra,
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


# HTTP/3 load client: libcurl through curl_cffi (default, the cheapest per request) or
# the aioquic one (EG_BENCH_H3_CLIENT=aioquic), both bounded; see harness/tools/h3_*.py.
H3_TOOLS = {"curl": "h3_curl.py", "aioquic": "h3_load.py"}


def h3_tool() -> str:
    choice = os.environ.get("EG_BENCH_H3_CLIENT", "curl")
    if choice not in H3_TOOLS:
        raise SystemExit(f"EG_BENCH_H3_CLIENT must be one of {', '.join(H3_TOOLS)}")
    return str(TOOLS_DIR / H3_TOOLS[choice])


def h3_argv(front: Front, conns: int, streams: int, duration: float, procs: int) -> list[str]:
    # Sent to the proxy's address with SNI "localhost" (caddy picks its certificate by SNI).
    return [
        sys.executable,
        h3_tool(),
        front.host,
        str(front.port),
        "--sni",
        TLS_NAME,
        "--path",
        "/1k",
        "-c",
        str(conns),
        "-m",
        str(streams),
        "-d",
        f"{duration:g}",
        "--procs",
        str(procs),
    ]


def _h3(conns: int, streams: int) -> LoadFn:
    def load(front: Front, env: Env, duration: float) -> LoadResult:
        # Pinned: one process on the load core. Natural: one per load thread (2 here).
        procs = 1 if env.mode.load_cpus else env.mode.load_threads
        argv = h3_argv(front, conns, streams, duration, procs)
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


H3_CONNS, H3_STREAMS = 10, 10  # 100 requests in flight (h2load scenarios: 50 x 10)


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
            f"H3 -> H1, 1 KiB (libcurl HTTP/3, -c{H3_CONNS} -m{H3_STREAMS})",
            H3,
            _h3(H3_CONNS, H3_STREAMS),
            probe=_probe_h3,
            reference="caddy",
        ),
        Throughput(
            "h3_h2",
            f"H3 -> H2 (h2c), 1 KiB (libcurl HTTP/3, -c{H3_CONNS} -m{H3_STREAMS})",
            H3_H2,
            _h3(H3_CONNS, H3_STREAMS),
            backend_port=ORIGIN_H2C_PORT,
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
            websocket=True,
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
