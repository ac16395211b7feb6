"""``expressgateway demo``: the first thing a new user runs. It needs the fixed
ports 8080 (gateway), 8081 (demo origin) and 9090 (admin)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.l4 import poll

REPO = Path(__file__).resolve().parents[2]
DEMO_PORTS = {8080: "gateway", 8081: "demo origin", 9090: "admin"}


def require_demo_ports_free() -> None:
    busy = []
    for port, role in DEMO_PORTS.items():
        with socket.socket() as s:
            # as the gateway binds: a TIME_WAIT leftover does not make a port busy
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({role})")
    if busy:
        pytest.fail(
            "the demo needs 127.0.0.1 ports 8080, 8081 and 9090, but these are taken on this machine: "
            + ", ".join(busy)
            + ". Stop whatever holds them and run again."
        )


def curl(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "5", url], capture_output=True, text=True, timeout=15
    )


@contextlib.contextmanager
def demo(command: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """Run the demo until the test is done, then Ctrl-C it (as its banner
    says) and insist it exits 0 leaving no process behind."""
    require_demo_ports_free()
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    tree: list[psutil.Process] = []
    try:
        ready = poll(
            lambda: proc.poll() is not None or curl("http://127.0.0.1:8080/").returncode == 0, 60
        )
        assert proc.poll() is None, f"demo exited with {proc.returncode}:\n{proc.communicate()[0]}"
        assert ready, "demo did not answer on 127.0.0.1:8080 within 60 s"
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                for p in tree:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                proc.wait(5)
        out = proc.communicate()[0]
    assert proc.returncode == 0, f"demo exited with {proc.returncode}:\n{out}"
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], f"demo left processes behind: {alive}"
    assert "127.0.0.1:8080" in out  # the banner tells the user where to look


def check_demo_answers() -> None:
    out = curl("http://127.0.0.1:8080/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 200")
    assert "Hello from the ExpressGateway demo origin!" in out.stdout
    assert "via: 1.1 expressgateway" in out.stdout.lower()  # it really went through the gateway
    metrics = curl("http://127.0.0.1:9090/metrics")
    assert metrics.stdout.startswith("HTTP/1.1 200")


def test_demo_answers_curl_on_port_8080() -> None:
    script = Path(sys.executable).with_name("expressgateway")
    with demo([str(script), "demo"]):
        check_demo_answers()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_works_from_a_fresh_virtualenv(tmp_path: Path) -> None:
    """A plain venv (no system site-packages) and ``pip install`` of this
    checkout, its dependencies from PyPI: what a new user does."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    bin_dir = env_dir / "bin"
    started = time.monotonic()
    install = subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    # the venv runs its own copy, not this checkout
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import expressgateway; print(expressgateway.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(env_dir)), where
    clean_env = {
        "PYTHONPATH": "",
        "VIRTUAL_ENV": str(env_dir),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    with demo([str(bin_dir / "expressgateway"), "demo"], env=clean_env):
        check_demo_answers()
    assert time.monotonic() - started < 600
