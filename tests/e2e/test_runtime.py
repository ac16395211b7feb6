"""The process model and lifecycle: worker processes, restarts after a crash,
SIGTERM / SIGINT drain, and the logs an operator reads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.gateway import Gateway, free_port, gateway, http_get
from tests.support.l4 import config, listener, poll, recv_exactly


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


def echo_once(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        return recv_exactly(c, len(payload))


def wait_exit(gw: Gateway, timeout: float = 20.0) -> int:
    assert gw.proc is not None
    return gw.proc.wait(timeout)


@contextlib.contextmanager
def started(cfg: str, admin: int) -> Iterator[Gateway]:
    """A gateway the test stops itself (with a signal of its choice); killed
    in the end if the test failed before stopping it."""
    with tempfile.TemporaryDirectory(prefix="eg-test-") as tmp:
        gw = Gateway(cfg, admin_port=admin, workdir=Path(tmp))
        gw.start()
        try:
            yield gw
        finally:
            if gw.proc is not None and gw.proc.poll() is None:
                for p in reversed(gw.processes()):
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                gw.proc.wait(10)


def test_workers_setting_starts_that_many_worker_processes(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port]), workers=2)
    with gateway(cfg, admin_port=admin) as gw:
        assert len(workers_of(gw)) == 2
        assert gw.metric("workers") == 2
        for i in range(10):
            assert echo_once(port, b"conn %d" % i) == b"conn %d" % i


def test_killed_worker_is_restarted_and_traffic_keeps_flowing(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port]), workers=2)
    with gateway(cfg, admin_port=admin) as gw:
        before = {p.pid for p in workers_of(gw)}
        victim = workers_of(gw)[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(5)

        assert poll(lambda: gw.metric("worker_restarts_total") == 1)
        assert poll(lambda: len(workers_of(gw)) == 2 and gw.metric("workers") == 2)
        after = {p.pid for p in workers_of(gw)}
        assert victim.pid not in after
        assert len(after & before) == 1  # the other worker was left alone
        for i in range(20):
            assert echo_once(port, b"after %d" % i) == b"after %d" % i
        assert gw.metric("worker_restarts_total") == 1


def _stop_and_check_gone(gw: Gateway, sig: signal.Signals) -> None:
    procs = gw.processes()
    assert len(procs) == 3  # supervisor + 2 workers
    assert gw.proc is not None
    gw.proc.send_signal(sig)
    assert wait_exit(gw) == 0, gw.logs()
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == [], f"left running after {sig.name}: {alive}"
    assert f"received {sig.name}" in gw.logs()


def test_sigterm_exits_zero_and_leaves_no_process(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port]), workers=2)
    with started(cfg, admin) as gw:
        assert echo_once(port) == b"ping"
        _stop_and_check_gone(gw, signal.SIGTERM)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is released


def test_sigint_exits_zero_and_leaves_no_process(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port]), workers=2)
    with started(cfg, admin) as gw:
        assert echo_once(port) == b"ping"
        _stop_and_check_gone(gw, signal.SIGINT)


def test_sigterm_fails_readiness_during_settle_while_liveness_stays_up(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port])).replace(
        "readiness_settle_ms = 0", "readiness_settle_ms = 5000"
    )
    with started(cfg, admin) as gw:
        assert http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            assert poll(lambda: http_get(f"http://127.0.0.1:{admin}/readyz")[0] == 503, timeout=2.5)
            status, body = http_get(f"http://127.0.0.1:{admin}/livez")
            assert status == 200
            assert json.loads(body) == {"status": "draining"}
            # during the settle the gateway still serves: old and new connections
            c.sendall(b"settling")
            assert recv_exactly(c, 8) == b"settling"
            assert echo_once(port) == b"ping"
        assert wait_exit(gw) == 0


def test_sigterm_lets_open_connections_finish_then_exits_early(echo_port: int) -> None:
    """Drain: the open connection keeps working, and the gateway exits as soon
    as it closes, well before ``drain_timeout_ms``."""
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port])).replace(
        "drain_timeout_ms = 1000", "drain_timeout_ms = 60000"
    )
    with started(cfg, admin) as gw:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"before")
            assert recv_exactly(c, 6) == b"before"
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
            assert poll(lambda: "received SIGTERM" in gw.logs())
            for _ in range(3):
                c.sendall(b"during drain")
                assert recv_exactly(c, 12) == b"during drain"
                time.sleep(0.2)
            assert gw.proc.poll() is None, "exited with a connection still open"
        closed_at = time.monotonic()
        assert wait_exit(gw, timeout=30) == 0
        assert time.monotonic() - closed_at < 15, "waited for the drain timeout, not the connection"


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_draining_gateway_refuses_new_connections(
    echo_port: int, tls_files: dict[str, str], protocol: str
) -> None:
    """Once draining, new connections are refused at once (so clients and
    a SO_REUSEPORT successor take them), not queued where nobody accepts;
    a connection already open keeps working."""
    admin, port = free_port(), free_port()
    tls = f'\n[listeners.tls]\ncert_path = "{tls_files["cert"]}"\nkey_path = "{tls_files["key"]}"\n'
    extra = tls if protocol == "tls" else ""
    cfg = config(admin, listener("in", port, protocol, [echo_port], extra=extra)).replace(
        "drain_timeout_ms = 1000", "drain_timeout_ms = 60000"
    )
    with started(cfg, admin) as gw:
        with contextlib.ExitStack() as stack:
            held = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            if protocol == "tls":
                client = ssl.create_default_context(cafile=tls_files["ca"])
                held = stack.enter_context(client.wrap_socket(held, server_hostname="localhost"))
            held.sendall(b"hold")
            assert recv_exactly(held, 4) == b"hold"
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)

            def refused() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                except ConnectionRefusedError:
                    return True
                return False

            assert poll(refused, timeout=10), "new connections are still accepted while draining"
            assert echo_once_on(held) == b"ping"
        assert wait_exit(gw, timeout=30) == 0


def echo_once_on(c: socket.socket) -> bytes:
    c.sendall(b"ping")
    return recv_exactly(c, 4)


def test_sigterm_closes_connections_left_open_after_drain_timeout(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("tcp-in", port, "tcp", [echo_port])).replace(
        "drain_timeout_ms = 1000", "drain_timeout_ms = 500"
    )
    with started(cfg, admin) as gw, socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"x")
        assert recv_exactly(c, 1) == b"x"
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        assert wait_exit(gw, timeout=15) == 0
        try:
            assert c.recv(1) == b""
        except ConnectionResetError:
            pass


def run_for_logs(cfg: str, admin: int, env: dict[str, str]) -> str:
    """Start, wait ready, stop: everything the gateway wrote, with ``env`` on
    top of an environment that has no LB_LOG_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LB_LOG")}
    with tempfile.TemporaryDirectory(prefix="eg-test-") as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(cfg)
        proc = subprocess.Popen(
            [sys.executable, "-m", "expressgateway", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**clean, **env},
        )
        try:
            assert poll(lambda: _ready(admin) or proc.poll() is not None, timeout=20), (
                "gateway not ready"
            )
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            out = proc.communicate(timeout=20)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, out
    return out.decode()


def _ready(admin: int) -> bool:
    with contextlib.suppress(OSError):
        return http_get(f"http://127.0.0.1:{admin}/readyz", timeout=1)[0] == 200
    return False


def test_logs_are_json_lines_by_default_with_one_started_line_per_listener(echo_port: int) -> None:
    admin, tcp_port, udp_port = free_port(), free_port(), free_port(udp=True)
    cfg = config(
        admin,
        listener("edge-tcp", tcp_port, "tcp", [echo_port]),
        listener("edge-udp", udp_port, "udp", [echo_port]),
    )
    out = run_for_logs(cfg, admin, {})
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert all(isinstance(r, dict) and "msg" in r and "level" in r for r in records)
    started_lines = [r for r in records if r["msg"] == "listener started"]
    assert sorted((r["listener"], r["address"], r["protocol"]) for r in started_lines) == [
        ("edge-tcp", f"127.0.0.1:{tcp_port}", "tcp"),
        ("edge-udp", f"127.0.0.1:{udp_port}", "udp"),
    ]


def test_text_log_format_writes_human_lines(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("edge-tcp", port, "tcp", [echo_port]))
    out = run_for_logs(cfg, admin, {"LB_LOG_FORMAT": "text"})
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert not line.lstrip().startswith("{"), f"JSON line in text mode: {line}"
    started_lines = [line for line in lines if "] listener started " in line]
    assert len(started_lines) == 1
    assert f"127.0.0.1:{port}" in started_lines[0]
    assert "edge-tcp" in started_lines[0]


def test_listener_with_inactive_protocol_is_skipped_and_the_rest_served(
    echo_port: int, tls_files: dict[str, str], tmp_path: Path
) -> None:
    """A QUIC Mode B listener (``raw_proxy``: accepted by the config, not
    served yet in this version) is logged as not bound; the other listeners
    still start."""
    retry = tmp_path / "retry.key"
    retry.write_bytes(os.urandom(32))
    retry.chmod(0o600)
    quic_port = free_port(udp=True)
    quic = f"""
[[listeners]]
name = "h3-later"
address = "127.0.0.1:{quic_port}"
protocol = "quic"

[listeners.quic]
cert_path = "{tls_files["cert"]}"
key_path = "{tls_files["key"]}"
retry_secret_path = "{retry}"

[listeners.quic.raw_proxy]
backend_addr = "127.0.0.1:{echo_port}"
sni = "localhost"
"""
    admin, port = free_port(), free_port()
    cfg = config(admin, quic, listener("tcp-in", port, "tcp", [echo_port]))
    with gateway(cfg, admin_port=admin) as gw:
        assert echo_once(port) == b"ping"
        records = [json.loads(line) for line in gw.logs().splitlines() if line.startswith("{")]
        assert any(
            r["msg"] == "listener protocol is not active yet in this version; not bound"
            and r.get("listener") == "h3-later"
            for r in records
        )
        assert [r["listener"] for r in records if r["msg"] == "listener started"] == ["tcp-in"]


def test_a_worker_out_of_file_descriptors_backs_off_and_keeps_its_listener(
    echo_port: int,
) -> None:
    """The worker's descriptor limit is lowered until accept() fails with
    EMFILE: the error is counted, and once clients leave the same worker
    accepts and relays again (the listener was neither closed nor lost)."""
    admin, port = free_port(), free_port()
    cfg = config(admin, listener("in", port, "tcp", [echo_port]))
    with gateway(cfg, admin_port=admin) as gw:
        assert echo_once(port) == b"ping"
        (worker,) = workers_of(gw)
        soft, hard = worker.rlimit(psutil.RLIMIT_NOFILE)
        worker.rlimit(psutil.RLIMIT_NOFILE, (worker.num_fds() + 6, hard))
        clients = []
        try:
            for _ in range(12):
                c = socket.create_connection(("127.0.0.1", port), timeout=10)
                c.settimeout(0.5)
                clients.append(c)
                with contextlib.suppress(OSError):
                    c.sendall(b"x")
                    c.recv(1)
            assert poll(
                lambda: gw.metric("accept_errors_total", listener="in", kind="fd_exhausted") > 0,
                timeout=10,
            ), "no accept error counted at the descriptor limit"
        finally:
            for c in clients:
                c.close()
            worker.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
        assert poll(lambda: _echoes(port), timeout=10), "the listener did not come back"
        assert workers_of(gw) == [worker]  # the same process, not a restarted one


def _echoes(port: int) -> bool:
    try:
        return echo_once(port) == b"ping"
    except OSError:
        return False
