"""Active health checks end to end: the supervisor runs the checks once per
gateway (not once per worker), logs and counts each verdict, and every
worker, including one restarted after a crash, takes a DOWN backend out of
rotation until it passes again."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from tests.support.gateway import Gateway, free_port, gateway, http_get
from tests.support.l4 import poll

pytestmark = pytest.mark.timeout(120)

INTERVAL_MS = 100


class Origin:
    """An HTTP origin on a thread: ``/health`` answers ``health_status``,
    anything else 200 with the origin's name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.health_status = 200
        self.health_hits = 0
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    origin.health_hits += 1
                    status, body = origin.health_status, b"health"
                else:
                    status, body = 200, origin.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def backend(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def origins(*names: str) -> Iterator[list[Origin]]:
    out = [Origin(n) for n in names]
    for o in out:
        o.thread.start()
    try:
        yield out
    finally:
        for o in out:
            o.server.shutdown()
            o.server.server_close()


def cfg(admin: int, port: int, a: Origin, b: Origin) -> str:
    return f"""
[runtime]
workers = 2
readiness_settle_ms = 0
drain_timeout_ms = 1000

[observability]
metrics_bind = "127.0.0.1:{admin}"

[[listeners]]
name = "web"
address = "127.0.0.1:{port}"
protocol = "h1"
cluster = "pool"

[[clusters]]
name = "pool"

[[clusters.backends]]
address = "{a.backend}"
protocol = "h1"

[[clusters.backends]]
address = "{b.backend}"
protocol = "h1"

[clusters.health_check]
kind = "http"
path = "/health"
interval_ms = {INTERVAL_MS}
jitter_ms = 0
timeout_ms = 500
fall = 2
rise = 2
"""


def workers_of(gw: Gateway) -> list[psutil.Process]:
    out = []
    for p in gw.processes()[1:]:
        with contextlib.suppress(psutil.Error):
            if (
                "expressgateway.runtime.worker" in " ".join(p.cmdline())
                and p.status() != psutil.STATUS_ZOMBIE
            ):
                out.append(p)
    return out


def has_sample(gw: Gateway, name: str, **labels: str) -> bool:
    for line in gw.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return True
    return False


def served_by(port: int, n: int = 20) -> set[str]:
    seen = set()
    for _ in range(n):
        status, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200, (status, body)
        seen.add(body.decode())
    return seen


def test_checks_run_once_per_gateway_and_every_worker_follows_the_verdict() -> None:
    admin, port = free_port(), free_port()
    with origins("A", "B") as (a, b), gateway(cfg(admin, port, a, b), admin_port=admin) as gw:
        # -- the supervisor checks; the workers do not --------------------------------
        assert poll(lambda: a.health_hits >= 3 and b.health_hits >= 3, timeout=10)
        assert gw.metric("health_check_up", cluster="pool", backend=a.backend) == 1
        hits0 = a.health_hits
        count0 = gw.metric("health_checks_total", cluster="pool", backend=a.backend)
        time.sleep(1.0)
        hits = a.health_hits - hits0
        count = gw.metric("health_checks_total", cluster="pool", backend=a.backend) - count0
        # one checker for two workers: at most one check per interval, and every
        # check the backend saw is one the supervisor counted
        assert 5 <= hits <= 1000 / INTERVAL_MS + 1, hits
        assert abs(hits - count) <= 1, (hits, count)

        # -- A fails: DOWN after `fall` checks, logged with its reason ---------------------
        a.health_status = 503
        assert poll(
            lambda: gw.metric("health_check_up", cluster="pool", backend=a.backend) == 0,
            timeout=10,
        )
        assert gw.metric("health_check_up", cluster="pool", backend=b.backend) == 1
        assert gw.metric("health_checks_total", cluster="pool", backend=a.backend, result="fail")
        logs = gw.logs()
        assert "backend health check down" in logs
        assert '"reason":"status 503"' in logs and f'"backend":"{a.backend}"' in logs

        assert has_sample(gw, "backend_up", cluster="pool"), gw.metrics()

        # -- every worker takes A out of rotation ------------------------------------------
        assert poll(
            lambda: (
                gw.metric("backend_up", cluster="pool", backend=a.backend) == 0
                and gw.metric("backend_up", cluster="pool", backend=b.backend) == 2
            ),
            timeout=10,
        ), gw.metrics()
        assert served_by(port) == {"B"}

        # -- a restarted worker is told the current DOWN verdicts --------------------------
        victim = workers_of(gw)[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)
        assert poll(lambda: gw.metric("worker_restarts_total") == 1, timeout=10)
        assert poll(
            lambda: (
                gw.metric("workers") == 2
                and gw.metric("backend_up", cluster="pool", backend=b.backend) == 2
                and gw.metric("backend_up", cluster="pool", backend=a.backend) == 0
            ),
            timeout=10,
        ), gw.metrics()
        assert served_by(port) == {"B"}

        # -- A recovers: UP after `rise` passes, back in rotation everywhere -----------------
        a.health_status = 200
        assert poll(
            lambda: gw.metric("backend_up", cluster="pool", backend=a.backend) == 2, timeout=10
        ), gw.metrics()
        assert gw.metric("health_check_up", cluster="pool", backend=a.backend) == 1
        assert "backend health check up" in gw.logs()
        assert served_by(port) == {"A", "B"}
