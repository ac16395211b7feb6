"""What every proxy under test provides: supported front ends, a config, a command."""

from __future__ import annotations

import json
import string
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ..certs import CertPair
from ..procs import Managed, spawn, stop, wait_port
from ..settings import HOST, PEERS_DIR, PROXY_PORT, Mode

# Front-end kinds a scenario can ask for (client side -> origin side).
H1 = "h1"  # HTTP/1.1 -> HTTP/1.1 (also WebSocket, uploads, idle connections)
H2TLS = "h2tls"  # HTTP/2 over TLS -> HTTP/1.1
H2TLS_H2 = "h2tls_h2"  # HTTP/2 over TLS -> h2c
GRPC = "grpc"  # gRPC over HTTP/2 TLS -> gRPC over h2c
H3 = "h3"  # HTTP/3 (QUIC) -> HTTP/1.1
H3_H2 = "h3_h2"  # HTTP/3 (QUIC) -> h2c
TCP = "tcp"  # L4 TCP -> TCP

ALL_KINDS = (H1, H2TLS, H2TLS_H2, GRPC, H3, H3_H2, TCP)
H3_KINDS = (H3, H3_H2)


@dataclass(frozen=True)
class Front:
    """One listener of the proxy under test and where it forwards."""

    kind: str
    backend_port: int
    port: int = PROXY_PORT
    host: str = HOST
    big_idle: bool = False  # scenario holds ~10k idle connections
    websocket: bool = False  # scenario upgrades to WebSocket

    @property
    def backend(self) -> str:
        return f"{HOST}:{self.backend_port}"


@dataclass
class Context:
    """Per-start environment: a fresh temp dir, the certificate, the CPU budget."""

    run_dir: Path
    certs: CertPair
    mode: Mode
    workers_override: int | None = None
    start_timeout: float = 20.0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def workers(self) -> int | None:
        if self.workers_override is not None:
            return self.workers_override
        return self.mode.proxy_workers


class ProxyStartError(RuntimeError):
    """The proxy did not come up; the message is the reason shown as n/a."""


def render(template: str, **values: object) -> str:
    text = (PEERS_DIR / template).read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})


class Proxy(ABC):
    """A proxy under test. Subclasses render configs from bench/peers/ templates."""

    name: str = ""
    label: str = ""
    unsupported_kinds: dict[str, str] = {}

    def unsupported(self, kind: str) -> str | None:
        return self.unsupported_kinds.get(kind)

    def available(self) -> str | None:
        """None if the proxy can be started at all, else why not."""
        return None

    def version(self) -> str:
        return ""

    @abstractmethod
    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        """Write config files into ctx.run_dir and return (argv, extra env)."""

    def start(self, front: Front, ctx: Context) -> Managed:
        argv, env = self.command(front, ctx)
        managed = spawn(
            self.name, argv, ctx.run_dir, cpus=ctx.mode.proxy_cpus, env=env, cwd=ctx.run_dir
        )
        if not self.wait_ready(front, managed, ctx.start_timeout):
            tail = last_lines(managed.log_tail())
            stop(managed)
            raise ProxyStartError(f"{self.label} did not start: {tail or 'no output'}")
        return managed

    def wait_ready(self, front: Front, managed: Managed, timeout: float) -> bool:
        if front.kind in H3_KINDS:
            # UDP only for some proxies: the scenario probe retries until it answers.
            return managed.alive()
        return wait_port(front.host, front.port, timeout, managed)


def last_lines(text: str, count: int = 2, limit: int = 240) -> str:
    """The last few non-empty log lines on one line (for tables); JSON logs by msg/error."""
    lines = [_log_text(line.strip()) for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-count:])[:limit]


def _log_text(line: str) -> str:
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return line
        if isinstance(record, dict) and "msg" in record:
            extra = record.get("error") or record.get("exc") or ""
            return f"{record['msg']}: {extra}" if extra else str(record["msg"])
    return line


def first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "?"
