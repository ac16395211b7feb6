"""Our gateway, run from the working tree: `python -m expressgateway CONFIG.toml`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ..procs import Managed, port_open
from ..settings import HOST, PROXY_ADMIN_PORT, REPO_DIR
from .base import GRPC, H1, H2TLS, H2TLS_H2, H3, TCP, Context, Front, Proxy, render

SRC_DIR = REPO_DIR / "src"

# front kind -> (listener protocol, backend protocol) in our TOML schema
PROTOCOLS: dict[str, tuple[str, str]] = {
    H1: ("h1", "h1"),
    H2TLS: ("h1s", "h1"),
    H2TLS_H2: ("h1s", "h2"),
    GRPC: ("h1s", "h2"),
    H3: ("quic", "h1"),
    TCP: ("tcp", "tcp"),
}


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{SRC_DIR}{os.pathsep}{path}" if path else str(SRC_DIR)}


def sections(front: Front, listen: str, ctx: Context) -> str:
    """The per-listener TOML tables a front end needs."""
    out: list[str] = []
    if listen in ("h1s", "tls"):
        out += [
            "[listeners.tls]",
            f'cert_path = "{ctx.certs.cert}"',
            f'key_path = "{ctx.certs.key}"',
        ]
    if listen == "quic":
        out += [
            "[listeners.quic]",
            f'cert_path = "{ctx.certs.cert}"',
            f'key_path = "{ctx.certs.key}"',
            f'retry_secret_path = "{ctx.run_dir / "retry.key"}"',
        ]
    if listen in ("h1", "h1s"):
        out += [
            "[listeners.http]",
            "total_timeout_ms = 3600000",
            f"max_request_body_bytes = {4 << 30}",
            f"max_response_body_bytes = {4 << 30}",
        ]
    if front.websocket:
        out += ["[listeners.websocket]", "idle_timeout_seconds = 600"]
    if front.kind == GRPC:
        out += ["[listeners.grpc]"]
    return "\n".join(out) + "\n"


class ExpressGateway(Proxy):
    name = "expressgateway"
    label = "expressgateway"

    def __init__(self, fixed_workers: int | None = None) -> None:
        self.fixed_workers = fixed_workers
        if fixed_workers is not None:
            self.name = f"expressgateway-{fixed_workers}w"
            self.label = (
                f"expressgateway ({fixed_workers} worker{'s' if fixed_workers > 1 else ''})"
            )

    def available(self) -> str | None:
        probe = subprocess.run(
            [sys.executable, "-c", "import expressgateway.cli"],
            capture_output=True,
            text=True,
            env={**os.environ, **_env()},
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            return f"not available ({last[:160]})"
        return None

    def version(self) -> str:
        try:
            sha = subprocess.run(
                ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
        except OSError:
            sha = "?"
        return f"expressgateway (working tree, git {sha or '?'})"

    def command(self, front: Front, ctx: Context) -> tuple[list[str], dict[str, str]]:
        listen, backend = PROTOCOLS[front.kind]
        if self.fixed_workers is not None:
            workers = self.fixed_workers
        else:
            workers = ctx.workers if ctx.workers is not None else 0
        cfg = ctx.run_dir / "gateway.toml"
        cfg.write_text(
            render(
                "expressgateway/gateway.toml",
                workers=workers,
                host=front.host,
                port=front.port,
                listen_protocol=listen,
                sections=sections(front, listen, ctx),
                backend=front.backend,
                backend_protocol=backend,
                admin_port=PROXY_ADMIN_PORT,
            )
        )
        return [sys.executable, "-m", "expressgateway", str(cfg)], _env()

    def wait_ready(self, front: Front, managed: Managed, timeout: float) -> bool:
        url = f"http://{HOST}:{PROXY_ADMIN_PORT}/readyz"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not managed.alive():
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                # No admin endpoint yet: an open TCP listener is good enough.
                if front.kind != H3 and port_open(front.host, front.port):
                    return True
            time.sleep(0.1)
        return False
