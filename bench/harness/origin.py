"""The origin every proxy forwards to: nginx (H1 + h2c + canned gRPC) and two Python helpers.

Started once per run, on the load generator's core in pinned mode.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from .procs import Managed, spawn, stop, wait_port
from .proxies.base import render
from .settings import (
    HOST,
    ORIGIN_H1_PORT,
    ORIGIN_H2C_PORT,
    TOOLS_DIR,
    UPLOAD_SINK_PORT,
    WS_ECHO_PORT,
    Mode,
    find_tool,
)

BODIES = {"1k": 1024, "1m": 1024 * 1024, "16m": 16 * 1024 * 1024}
GRPC_PATH = "/bench.Echo/Unary"


def grpc_frame(payload: bytes) -> bytes:
    """A length-prefixed gRPC message holding protobuf field 1 (bytes) = payload."""
    message = b"\x0a" + _varint(len(payload)) + payload
    return b"\x00" + struct.pack(">I", len(message)) + message


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_docroot(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, size in BODIES.items():
        path = root / name
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes((b"0123456789abcdef" * (size // 16 + 1))[:size])
    grpc_dir = root / GRPC_PATH.strip("/").split("/")[0]
    grpc_dir.mkdir(exist_ok=True)
    (grpc_dir / "Unary").write_bytes(grpc_frame(b"r" * 100))
    (root / "grpc-request.bin").write_bytes(grpc_frame(b"q" * 100))


class OriginError(RuntimeError):
    pass


@contextlib.contextmanager
def origin(run_dir: Path, mode: Mode) -> Iterator[Path]:
    """Run the origin processes; yields the docroot."""
    nginx = find_tool("nginx")
    if nginx is None:
        raise OriginError("nginx is not installed (apt-get install nginx-light)")
    docroot = run_dir / "docroot"
    write_docroot(docroot)
    odir = run_dir / "origin"
    odir.mkdir(parents=True, exist_ok=True)
    conf = odir / "origin.conf"
    conf.write_text(
        render(
            "origin-nginx.conf",
            workers=1 if mode.load_cpus else "auto",
            run_dir=odir,
            host=HOST,
            h1_port=ORIGIN_H1_PORT,
            h2c_port=ORIGIN_H2C_PORT,
            docroot=docroot,
        )
    )
    started: list[Managed] = []
    try:
        started.append(
            spawn("origin-nginx", [nginx, "-p", str(odir), "-c", str(conf)], odir, mode.load_cpus)
        )
        started.append(
            spawn(
                "upload-sink",
                [sys.executable, str(TOOLS_DIR / "upload_sink.py"), str(UPLOAD_SINK_PORT)],
                odir,
                mode.load_cpus,
            )
        )
        started.append(
            spawn(
                "ws-echo",
                [sys.executable, str(TOOLS_DIR / "ws_echo.py"), str(WS_ECHO_PORT)],
                odir,
                mode.load_cpus,
            )
        )
        for proc, port in zip(
            started, (ORIGIN_H1_PORT, UPLOAD_SINK_PORT, WS_ECHO_PORT), strict=True
        ):
            if not wait_port(HOST, port, 15, proc):
                raise OriginError(f"origin {proc.name} did not start: {proc.log_tail()}")
        if not wait_port(HOST, ORIGIN_H2C_PORT, 5, started[0]):
            raise OriginError("origin nginx h2c port did not open")
        yield docroot
    finally:
        for proc in reversed(started):
            stop(proc)
