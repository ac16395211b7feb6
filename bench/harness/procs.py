"""Starting, pinning and always stopping the processes the harness owns."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_LIVE: dict[int, Managed] = {}


@dataclass
class Managed:
    """A child process started in its own process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 1500) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()


def pinned_argv(argv: Sequence[str], cpus: tuple[int, ...] | None) -> list[str]:
    """Prefix argv with taskset when a CPU set is given (taskset execs, the pid stays)."""
    if cpus is None:
        return list(argv)
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv]


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    cpus: tuple[int, ...] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> Managed:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            pinned_argv(argv, cpus),
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    managed = Managed(name, popen, log_path)
    _LIVE[popen.pid] = managed
    return managed


def stop(managed: Managed, grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left."""
    pgid = managed.pid
    _signal_group(pgid, signal.SIGTERM)
    try:
        managed.popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.popen.wait(timeout=grace)
    # Children that outlived the leader (still in the group) get SIGKILL too.
    _signal_group(pgid, signal.SIGKILL)
    _LIVE.pop(managed.pid, None)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_all() -> None:
    for managed in list(_LIVE.values()):
        stop(managed, grace=2.0)


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    cpus: tuple[int, ...] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Managed]:
    managed = spawn(name, argv, log_dir, cpus=cpus, env=env, cwd=cwd)
    try:
        yield managed
    finally:
        stop(managed)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, deadline_s: float, managed: Managed | None = None) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if managed is not None and not managed.alive():
            return False
        if port_open(host, port):
            return True
        time.sleep(0.05)
    return False


def wait_port_free(host: str, port: int, deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not port_open(host, port, timeout=0.2):
            return True
        time.sleep(0.1)
    return False


def run_capture(
    argv: Sequence[str],
    timeout: float,
    cpus: tuple[int, ...] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a bounded command (load generator, client) and capture its output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        pinned_argv(argv, cpus),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
        start_new_session=True,
    )
