"""Memory scenarios: RSS per idle connection, RSS growth during a large upload."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from . import probes
from .loadgen import LoadError, run_json_tool
from .monitor import Window, tree_rss_bytes
from .procs import pinned_argv
from .proxies.base import Front
from .scenario_base import MIB, Env, Measurement, Scenario
from .settings import TOOLS_DIR, UPLOAD_SINK_PORT


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
