"""The admin listener (``[observability] metrics_bind``): Prometheus metrics,
optionally behind a bearer token, and anonymous JSON probes. Requests are
made with curl, as an operator or a scraper would."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, free_port, gateway, wait_port
from tests.support.l4 import config, listener

TOKEN = "correct horse battery staple"
TOKEN_HASH = hashlib.sha256(TOKEN.encode()).hexdigest()

# a Prometheus text-format sample: name, optional {labels}, value
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]+="[^"]*",?)*\})? [-+0-9.eEinfNa]+$')


def curl(url: str, *args: str) -> tuple[int, dict[str, str], str]:
    """(status, lower-cased headers, body) of one curl request."""
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", *args, url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.splitlines()
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.fixture()
def admin_gateway(echo_port: int) -> Iterator[Gateway]:
    admin, port = free_port(), free_port()
    with gateway(
        config(admin, listener("tcp-in", port, "tcp", [echo_port])), admin_port=admin
    ) as gw:
        yield gw


def test_metrics_endpoint_serves_prometheus_text(admin_gateway) -> None:
    url = f"http://127.0.0.1:{admin_gateway.admin_port}/metrics"
    status, headers, body = curl(url)
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE connections_total counter" in body
    assert "# TYPE worker_restarts_total counter" in body
    samples = [line for line in body.splitlines() if line and not line.startswith("#")]
    assert samples
    for line in samples:
        assert SAMPLE.match(line), f"not a Prometheus sample: {line!r}"


@pytest.mark.parametrize("path", ["/livez", "/healthz", "/readyz", "/startupz"])
def test_probes_answer_json_when_ready(admin_gateway: Gateway, path: str) -> None:
    status, headers, body = curl(f"http://127.0.0.1:{admin_gateway.admin_port}{path}")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"status": "ready"}


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/metrics"), ("PUT", "/readyz"), ("DELETE", "/livez")]
)
def test_admin_refuses_other_methods_with_405(
    admin_gateway: Gateway, method: str, path: str
) -> None:
    status, _, _ = curl(f"http://127.0.0.1:{admin_gateway.admin_port}{path}", "-X", method)
    assert status == 405


@pytest.mark.parametrize("path", ["/", "/metricz", "/metrics/extra", "/admin"])
def test_admin_answers_unknown_paths_with_404(admin_gateway: Gateway, path: str) -> None:
    status, _, _ = curl(f"http://127.0.0.1:{admin_gateway.admin_port}{path}")
    assert status == 404


def test_metrics_need_the_bearer_token_when_a_hash_is_set(echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(
        admin,
        listener("tcp-in", port, "tcp", [echo_port]),
        tail=f'[admin]\napi_token_hash = "{TOKEN_HASH}"\n',
    )
    with gateway(cfg, admin_port=admin):
        url = f"http://127.0.0.1:{admin}/metrics"
        assert curl(url)[0] == 403
        assert curl(url, "-H", "Authorization: Bearer wrong-token")[0] == 403
        assert curl(url, "-H", f"Authorization: Basic {TOKEN}")[0] == 403
        assert curl(url, "-H", f"Authorization: Bearer {TOKEN}x")[0] == 403
        status, _, body = curl(url, "-H", f"Authorization: Bearer {TOKEN}")
        assert status == 200
        assert "# TYPE connections_total counter" in body
        # the probes stay anonymous
        for path in ("/livez", "/healthz", "/readyz", "/startupz"):
            status, _, body = curl(f"http://127.0.0.1:{admin}{path}")
            assert status == 200
            assert json.loads(body) == {"status": "ready"}


def _check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "admin.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "expressgateway", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _non_loopback_config(admin_section: str) -> str:
    port = free_port()
    text = config(
        free_port(), listener("tcp-in", free_port(), "tcp", [free_port()]), tail=admin_section
    )
    return re.sub(r'metrics_bind = "127\.0\.0\.1:\d+"', f'metrics_bind = "0.0.0.0:{port}"', text)


@pytest.mark.parametrize(
    ("admin_section", "missing"),
    [
        ("", "admin.allow_non_loopback = true and admin.api_token_hash"),
        ("[admin]\nallow_non_loopback = true\n", "admin.api_token_hash"),
        (f'[admin]\napi_token_hash = "{TOKEN_HASH}"\n', "admin.allow_non_loopback = true"),
    ],
)
def test_non_loopback_admin_needs_override_and_token(
    tmp_path: Path, admin_section: str, missing: str
) -> None:
    out = _check(tmp_path, _non_loopback_config(admin_section))
    assert out.returncode == 2
    assert 'observability.metrics_bind = "0.0.0.0:' in out.stderr
    assert f"non-loopback admin address needs {missing}" in out.stderr


def test_non_loopback_admin_with_override_and_token_is_accepted(tmp_path: Path) -> None:
    section = f'[admin]\nallow_non_loopback = true\napi_token_hash = "{TOKEN_HASH}"\n'
    out = _check(tmp_path, _non_loopback_config(section))
    assert out.returncode == 0, out.stderr


def test_admin_is_not_started_when_metrics_bind_is_unset(echo_port: int, tmp_path: Path) -> None:
    """No ``metrics_bind``: the gateway serves traffic and opens no admin port."""
    port = free_port()
    text = config(0, listener("tcp-in", port, "tcp", [echo_port]))
    text = re.sub(r'metrics_bind = "127\.0\.0\.1:\d+"\n', "", text)
    with tempfile.TemporaryDirectory(prefix="eg-test-") as tmp:
        gw = Gateway(text, admin_port=None, workdir=Path(tmp))
        gw.start(wait=False)
        try:
            wait_port(port)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"hi")
                assert c.recv(2) == b"hi"
            listening = {
                conn.laddr.port
                for p in gw.processes()
                for conn in p.net_connections(kind="tcp")
                if conn.status == "LISTEN"
            }
            assert listening == {port}
        finally:
            assert gw.stop() == 0, gw.logs()
