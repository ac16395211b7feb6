"""Our gateway: `python -m expressgateway CONFIG.toml`.

By default it runs from a snapshot of the committed tree (`git archive HEAD src`), so a
run measures a known revision even while the working tree is being edited;
`--gateway-src worktree` measures uncommitted code instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..procs import Managed
from ..settings import ADMIN_PORT_OFFSET, HOST, REPO_DIR
from .base import GRPC, H1, H2TLS, H2TLS_H2, H3, H3_H2, TCP, Context, Front, Proxy, render

SRC_DIR = REPO_DIR / "src"

# front kind -> (listener protocol, backend protocol) in our TOML schema
PROTOCOLS: dict[str, tuple[str, str]] = {
    H1: ("h1", "h1"),
    H2TLS: ("h1s", "h1"),
    H2TLS_H2: ("h1s", "h2"),
    GRPC: ("h1s", "h2"),
    H3: ("quic", "h1"),
    H3_H2: ("quic", "h2"),
    TCP: ("tcp", "tcp"),
}


def _git(*args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=30, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def export_source(rev: str, dest: Path) -> tuple[Path, str]:
    """(directory holding the `expressgateway` package, description) for `rev`.

    `worktree` uses src/ as it is on disk; any other value is a git revision whose
    src/ is extracted into dest.
    """
    sha = _git("rev-parse", "--short", "HEAD")
    if rev == "worktree":
        dirty = " + uncommitted changes" if _git("status", "--porcelain", "--", "src") else ""
        return SRC_DIR, f"working tree at {sha or '?'}{dirty}"
    full = _git("rev-parse", "--short", rev)
    if not full:
        return SRC_DIR, f"working tree ({rev!r} is not a git revision)"
    archive = dest / "gateway-src.tar"
    subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", "--format=tar", "-o", str(archive), full, "src"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "gateway", filter="data")
    archive.unlink()
    return dest / "gateway" / "src", f"git {full} ({rev})"


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
        self.src_dir = SRC_DIR
        self.src_description = "working tree"
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
            env={**os.environ, **self._env()},
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["?"])[-1]
            return f"not available ({last[:160]})"
        return None

    def version(self) -> str:
        return f"expressgateway ({self.src_description})"

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
                admin_port=front.port + ADMIN_PORT_OFFSET,
            )
        )
        return [sys.executable, "-m", "expressgateway", str(cfg)], self._env()

    def use_source(self, src_dir: Path, description: str) -> None:
        self.src_dir, self.src_description = src_dir, description

    def _env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH", "")
        src = str(self.src_dir)
        return {"PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}

    def wait_ready(self, front: Front, managed: Managed, timeout: float) -> bool:
        """Ready when GET /readyz on the admin endpoint answers 200 (all listeners up)."""
        url = f"http://{HOST}:{front.port + ADMIN_PORT_OFFSET}/readyz"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not managed.alive():
                return False
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False
