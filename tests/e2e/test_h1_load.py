"""Real load generators through an ``h1`` listener in front of nginx: every
response must be a 2xx and no connection may fail, with one worker and with
two (SO_REUSEPORT) workers."""

from __future__ import annotations

import re
import subprocess

import psutil
import pytest

from tests.support.gateway import free_port, gateway
from tests.support.h1 import ResponseReader, connect, get, h1_config, h1_listener
from tests.support.processes import nginx_origin

PAGE = b"p" * 1024


def wrk(url: str, connections: int, seconds: int) -> str:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def h2load(url: str, requests: int, clients: int) -> str:
    out = subprocess.run(
        ["h2load", "--h1", f"-n{requests}", f"-c{clients}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def wrk_counts(report: str) -> tuple[int, int]:
    """(requests completed, errors: socket errors + non-2xx/3xx) from wrk's report."""
    done = re.search(r"(\d+) requests in", report)
    assert done is not None, report
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    if sock is not None:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    if non2xx is not None:
        errors += int(non2xx.group(1))
    return int(done.group(1)), errors


def h2load_counts(report: str) -> dict[str, int]:
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        report,
    )
    assert m is not None, report
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", report)
    assert status is not None, report
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    counts = {k: int(v) for k, v in zip(keys, m.groups(), strict=True)}
    counts["2xx"] = int(status.group(1))
    return counts


@pytest.mark.parametrize("workers", [1, 2])
def test_wrk_through_the_gateway_has_no_errors(workers: int) -> None:
    with nginx_origin({"page.html": PAGE}) as np:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [np]), workers=workers)
        with gateway(cfg, admin_port=admin) as gw:
            report = wrk(f"http://127.0.0.1:{port}/page.html", connections=20, seconds=3)
            done, errors = wrk_counts(report)
            assert done > 500, report
            assert errors == 0, report
            assert gw.metric("http_requests_total", status_class="2xx") >= done


@pytest.mark.parametrize("workers", [1, 2])
def test_h2load_http1_through_the_gateway_all_succeed(workers: int) -> None:
    with nginx_origin({"page.html": PAGE}) as np:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [np]), workers=workers)
        with gateway(cfg, admin_port=admin) as gw:
            report = h2load(f"http://127.0.0.1:{port}/page.html", requests=2000, clients=10)
            counts = h2load_counts(report)
            assert counts["succeeded"] == 2000, report
            assert counts["2xx"] == 2000, report
            assert counts["failed"] == counts["errored"] == counts["timeout"] == 0, report
            assert gw.metric("http_requests_total", status_class="2xx") == 2000
            assert gw.metric("http_requests_inflight") == 0


def test_two_workers_share_keep_alive_client_connections() -> None:
    """Forty keep-alive clients spread over both SO_REUSEPORT workers, and
    each is served again on its own connection."""
    with nginx_origin({"page.html": PAGE}) as np:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [np]), workers=2)
        with gateway(cfg, admin_port=admin) as gw:
            socks = [connect(port) for _ in range(40)]
            try:
                readers = [ResponseReader() for _ in socks]
                for _ in range(3):
                    for s in socks:
                        s.sendall(get(port, "/page.html"))
                    for s, reader in zip(socks, readers, strict=True):
                        resp = reader.read(s)
                        assert (resp.status, resp.body) == (200, PAGE)
                workers = [p for p in gw.processes() if p.pid != gw.proc.pid]  # type: ignore[union-attr]
                assert len(workers) == 2
                held = [
                    sum(
                        1
                        for c in w.net_connections("tcp")
                        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
                    )
                    for w in workers
                ]
                assert sum(held) == 40, held
                assert min(held) > 0, f"one worker served every connection: {held}"
            finally:
                for s in socks:
                    s.close()
