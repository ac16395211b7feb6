"""One real request through the proxy before measuring: proves the chain works.

Each probe raises ProbeError with a short reason; `until_ok` retries until a deadline
(some proxies load their routes a moment after opening the port).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .origin import GRPC_PATH
from .proxies.base import Front
from .settings import TLS_NAME


class ProbeError(RuntimeError):
    pass


def until_ok(probe: Callable[[Front], None], front: Front, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    last = "no attempt"
    while time.monotonic() < end:
        try:
            probe(front)
            return
        except Exception as exc:  # any failure is "not ready yet" until the deadline
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    raise ProbeError(f"probe failed: {last}"[:300])


def h1_get(front: Front, path: str = "/1k", size: int = 1024) -> None:
    conn = http.client.HTTPConnection(front.host, front.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or len(body) != size:
        raise ProbeError(f"GET {path}: status {resp.status}, {len(body)} bytes")


def h1_post(front: Front) -> None:
    conn = http.client.HTTPConnection(front.host, front.port, timeout=5)
    try:
        conn.request("POST", "/upload", body=b"z" * 4096)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or body.strip() != b"received=4096":
        raise ProbeError(f"POST /upload: status {resp.status}, {body[:60]!r}")


def ws_echo(front: Front) -> None:
    from websockets.sync.client import connect

    with connect(f"ws://{front.host}:{front.port}/ws", open_timeout=5, compression=None) as ws:
        ws.send(b"probe")
        if ws.recv(timeout=5) != b"probe":
            raise ProbeError("websocket echo mismatch")


def _h2load_once(url: str, extra: list[str]) -> str:
    proc = subprocess.run(
        ["h2load", "-n2", "-c1", *extra, url],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    out = proc.stdout
    if "2 succeeded" not in out or "status codes: 2 2xx" not in out:
        keep = [
            line.strip()
            for line in (out + proc.stderr).splitlines()
            if line.startswith(
                ("requests:", "status codes:", "Application protocol", "No protocol")
            )
            or "rror" in line
        ]
        raise ProbeError("h2load: " + " / ".join(keep)[:200])
    if "Application protocol: h2" not in out:
        raise ProbeError("no HTTP/2 negotiated (ALPN)")
    return out


def h2_get(front: Front) -> None:
    _h2load_once(f"https://{front.host}:{front.port}/1k", [])


def grpc_args(docroot: Path) -> list[str]:
    return [
        "-d",
        str(docroot / "grpc-request.bin"),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
    ]


def make_grpc_probe(docroot: Path, cert: Path) -> Callable[[Front], None]:
    def probe(front: Front) -> None:
        _h2load_once(f"https://{front.host}:{front.port}{GRPC_PATH}", grpc_args(docroot))
        _grpcio_call(front, cert)

    return probe


def _grpcio_call(front: Front, cert: Path) -> None:
    """A real gRPC client call, so grpc-status trailers must survive the proxy."""
    try:
        import grpc
    except ImportError:
        return
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    options = [("grpc.ssl_target_name_override", TLS_NAME)]
    with grpc.secure_channel(f"{front.host}:{front.port}", creds, options=options) as channel:
        call = channel.unary_unary(GRPC_PATH)
        try:
            reply = call(b"\x0a\x03abc", timeout=5)
        except grpc.RpcError as exc:
            raise ProbeError(f"grpc call failed: {exc.code()} {exc.details()}") from exc
    if not reply.startswith(b"\x0a"):
        raise ProbeError("grpc reply is not the canned message")


def h3_get(front: Front) -> None:
    """GETs of /1k over HTTP/3 (after the server's Retry) with the load client in use:
    every one must be a 200 over HTTP/3 with the full 1 KiB body."""
    from .scenarios import h3_argv

    argv = h3_argv(front, 1, 2, 0.3, 1)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ProbeError(f"h3 client failed: {proc.stderr.strip()[-200:]}") from None
    done, errors = result.get("requests", 0), result.get("errors", 0)
    if not done or errors:
        detail = "; ".join(result.get("error_detail") or ["no response"])
        raise ProbeError(f"h3: {done} ok, {errors} errors: {detail[:200]}")
    if result.get("bytes") != done * 1024:
        raise ProbeError(f"h3: {result.get('bytes')} body bytes for {done} responses of 1 KiB")
