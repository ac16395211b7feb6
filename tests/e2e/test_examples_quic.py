"""The shipped ``examples/quic-h3.toml`` is real: ``check`` names its missing
certificate files and accepts it once they exist, and, pointed at this
machine, it boots and serves the same origin over HTTP/3 (UDP) and over
HTTPS (TCP, advertising the HTTP/3 endpoint with Alt-Svc) on one port."""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx

from tests.support.gateway import free_port, gateway
from tests.support.h3 import H3Client, curl_h3
from tests.support.h3raw import free_port_pair
from tests.support.processes import origin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quic-h3.toml"
CERT, KEY = "/etc/expressgateway/cert.pem", "/etc/expressgateway/key.pem"
RETRY_SECRET = "/var/lib/expressgateway/retry.key"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressgateway", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def with_files(text: str, tls_files: dict[str, str]) -> str:
    """The example with its /etc/expressgateway paths replaced by real files."""
    return text.replace(f'"{CERT}"', f'"{tls_files["cert"]}"').replace(
        f'"{KEY}"', f'"{tls_files["key"]}"'
    )


def localize(text: str, backend: int, retry_secret: Path) -> tuple[str, int, int]:
    """Point the example at this machine: both listeners (UDP and TCP, one
    port number) and the advertised h3_port at a free loopback port, the
    backends at ``backend``, the Retry secret at ``retry_secret``, the admin
    endpoint at a free port; one worker and no readiness settle. All other
    keys and comments stay as written. Returns (text, port, admin port)."""
    doc = tomllib.loads(text)
    quic, https = doc["listeners"]
    assert quic["protocol"] == "quic" and https["protocol"] == "h1s"
    assert quic["address"] == https["address"] == "0.0.0.0:8443"
    assert https["alt_svc"]["h3_port"] == 8443
    port, admin = free_port_pair(), free_port()
    text = text.replace('address = "0.0.0.0:8443"', f'address = "127.0.0.1:{port}"')
    text = re.sub(r"(?m)^h3_port = 8443", f"h3_port = {port}", text)
    for lst in (quic, https):
        for b in lst["backends"]:
            text = text.replace(f'address = "{b["address"]}"', f'address = "127.0.0.1:{backend}"')
    text = text.replace(f'"{RETRY_SECRET}"', f'"{retry_secret}"')
    text = text.replace(f'"{doc["observability"]["metrics_bind"]}"', f'"127.0.0.1:{admin}"')
    text = re.sub(r"(?m)^workers = \d+", "workers = 1", text)
    text = re.sub(r"(?m)^readiness_settle_ms = \d+", "readiness_settle_ms = 0", text)
    return text, port, admin


def test_quic_example_names_its_missing_certificate_files() -> None:
    out = check(EXAMPLE)
    assert out.returncode == 2
    for where in ("listeners[0].quic", "listeners[1].tls"):
        assert f'{where}.cert_path = "{CERT}": file not found' in out.stderr
        assert f'{where}.key_path = "{KEY}": file not found' in out.stderr


def test_quic_example_passes_check_with_real_files(
    tls_files: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "quic-h3.toml"
    path.write_text(with_files(EXAMPLE.read_text(), tls_files))
    out = check(path)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


def test_quic_example_boots_and_serves_http3_and_https_with_alt_svc(
    tls_files: dict[str, str], tmp_path: Path
) -> None:
    secret = tmp_path / "retry.key"
    with origin() as backend:
        text, port, admin = localize(with_files(EXAMPLE.read_text(), tls_files), backend, secret)
        path = tmp_path / "quic-h3.toml"
        path.write_text(text)
        assert check(path).returncode == 0
        with gateway(text, admin_port=admin) as gw:
            with H3Client(port, ca=tls_files["ca"]) as client:
                over_h3 = client.request("GET", "/")
                headers_h3 = client.request("GET", "/headers")
            via_curl = curl_h3(f"https://localhost:{port}/", ca=tls_files["ca"])
            ctx = ssl.create_default_context(cafile=tls_files["ca"])
            with httpx.Client(verify=ctx, http2=True) as https:
                over_tcp = https.get(f"https://localhost:{port}/")
            retries = gw.metric("quic_retries_total", listener="h3")
            served = gw.metric("http_requests_total", listener="h3", version="h3")
    # HTTP/3 on UDP
    assert over_h3.complete and over_h3.status == 200
    assert over_h3.body == b"hello from origin"
    assert headers_h3.complete and headers_h3.status == 200
    assert ["x-forwarded-proto", "https"] in json.loads(headers_h3.body)["headers"]
    assert via_curl.error is None and via_curl.status == 200
    assert via_curl.body == b"hello from origin"
    assert retries >= 2  # every new client went through a Retry first
    assert served == 3
    # HTTPS on TCP, same port number, advertising HTTP/3
    assert over_tcp.status_code == 200
    assert over_tcp.http_version == "HTTP/2"
    assert over_tcp.content == b"hello from origin"
    assert over_tcp.headers["alt-svc"] == f'h3=":{port}"; ma=3600'
    # the Retry secret was minted at boot: 32 bytes, owner-only
    assert len(secret.read_bytes()) == 32
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
