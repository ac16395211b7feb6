"""Run a real gateway process for a test: write its config, start it, wait
until it is ready, and stop it (and check it stopped cleanly) afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil


def _test_port_range() -> tuple[int, int]:
    """Ports the tests hand out: below the kernel's ephemeral range, so no
    outgoing connection (ours or the backends') can take a port between the
    test picking it and the gateway binding it. Also below the benchmark
    harness's ports (EG_BENCH_PORT_BASE, 28080 up), which its smoke test uses."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if low - 10000 >= 4000:
        return 10000, min(low, 28000)
    return high + 1, 65536


_PORT_LOW, _PORT_HIGH = _test_port_range()
_next_port = _PORT_LOW + os.getpid() % (_PORT_HIGH - _PORT_LOW)


def _bindable(family: int, kind: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family, kind) as s:
            s.bind((host, port))
    except OSError as exc:
        # no IPv6 on this host is not a clash
        return family == socket.AF_INET6 and exc.errno in (97, 99)
    return True


def free_port(udp: bool = False) -> int:
    """A port free on 127.0.0.1 and ::1 for both TCP and UDP, never handed
    out twice in one test run (the cursor only moves forward)."""
    global _next_port
    del udp  # every port is checked for both
    span = _PORT_HIGH - _PORT_LOW
    for _ in range(span):
        port = _next_port
        _next_port = _PORT_LOW + (_next_port + 1 - _PORT_LOW) % span
        if all(
            _bindable(family, kind, host, port)
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM)
        ):
            return port
    raise RuntimeError(f"no free port in {_PORT_LOW}-{_PORT_HIGH - 1}")


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


class Gateway:
    """A running ``expressgateway CONFIG`` process."""

    def __init__(self, config: str, *, admin_port: int | None, workdir: Path) -> None:
        self.config_text = config
        self.admin_port = admin_port
        self.workdir = workdir
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        full_env = {**os.environ, "LB_LOG_FORMAT": "json", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "expressgateway", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=self.workdir,
        )
        log.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.logs()}")
            if self.admin_port is not None:
                with contextlib.suppress(OSError):
                    status, _ = http_get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1)
                    if status == 200:
                        return
            time.sleep(0.05)
        raise TimeoutError(f"gateway not ready in {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def metrics(self) -> str:
        status, body = http_get(f"http://127.0.0.1:{self.admin_port}/metrics")
        assert status == 200, body
        return body.decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            key, _, value = line.rpartition(" ")
            metric_name, _, rest = key.partition("{")
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for p in self.processes():
                with contextlib.suppress(psutil.Error):
                    p.kill()
            self.proc.wait(5)
            raise AssertionError(f"gateway did not stop on signal {sig}:\n{self.logs()}") from None


@contextlib.contextmanager
def gateway(
    config: str, *, admin_port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[Gateway]:
    """Start a gateway from TOML text; stop it after, and insist it stopped cleanly."""
    with tempfile.TemporaryDirectory(prefix="eg-test-") as tmp:
        gw = Gateway(config, admin_port=admin_port, workdir=Path(tmp))
        gw.start(env=env)
        try:
            yield gw
        finally:
            code = gw.stop()
        assert code == 0, f"gateway exited with {code}:\n{gw.logs()}"


def base_config(admin_port: int, workers: int = 1) -> str:
    return f"""
[runtime]
workers = {workers}
readiness_settle_ms = 0
drain_timeout_ms = 1000

[observability]
metrics_bind = "127.0.0.1:{admin_port}"
"""
