"""TLS on either side of the HTTP/1.1 proxy: an ``h1s`` listener (curl and
httpx trusting a trustme CA, the SNI/Host check) and TLS to the backend
(``tls = true`` with ``tls_ca_path``)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support.gateway import free_port, gateway
from tests.support.h1 import (
    OriginWatch,
    get,
    h1_config,
    h1_listener,
    request,
    seen_headers,
)
from tests.support.processes import origin


def tls_block(tls_files: dict[str, str]) -> str:
    return (
        f'\n[listeners.tls]\ncert_path = "{tls_files["cert"]}"\nkey_path = "{tls_files["key"]}"\n'
    )


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)


# -- h1s listener -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "status_line"), [("--http1.1", b"HTTP/1.1 200"), ("--http2", b"HTTP/2 200")]
)
def test_h1s_listener_serves_curl_over_tls(
    tls_files: dict[str, str], flag: str, status_line: bytes
) -> None:
    """ALPN offers h2 then http/1.1: curl gets the protocol it asks for."""
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h1_listener(port, [op], protocol="h1s", extra=tls_block(tls_files))
        with gateway(h1_config(admin, listener), admin_port=admin):
            out = curl(
                "-i",
                flag,
                "--cacert",
                tls_files["ca"],
                "--resolve",
                f"localhost:{port}:127.0.0.1",
                f"https://localhost:{port}/headers",
            )
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(status_line)
    seen = seen_headers(body)
    assert seen["x-forwarded-proto"] == ["https"]
    assert seen["x-forwarded-host"] == [f"localhost:{port}"]


def test_h1s_listener_serves_httpx_keep_alive(tls_files: dict[str, str]) -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h1_listener(port, [op], protocol="h1s", extra=tls_block(tls_files))
        with gateway(h1_config(admin, listener), admin_port=admin):
            ctx = ssl.create_default_context(cafile=tls_files["ca"])
            with httpx.Client(verify=ctx) as client:
                for _ in range(3):
                    resp = client.get(f"https://127.0.0.1:{port}/size/100000")
                    assert resp.status_code == 200
                    assert len(resp.content) == 100000
                    assert resp.http_version == "HTTP/1.1"


def test_h1s_host_not_matching_sni_is_421(tls_files: dict[str, str]) -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h1_listener(port, [op], protocol="h1s", extra=tls_block(tls_files))
        with gateway(h1_config(admin, listener), admin_port=admin):
            watch = OriginWatch(op)
            out = curl(
                "-i",
                "--cacert",
                tls_files["ca"],
                "--resolve",
                f"localhost:{port}:127.0.0.1",
                "-H",
                "Host: gateway.test",
                f"https://localhost:{port}/",
            )
            assert watch.new_requests() == 0
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(b"\r\n")[0].split(b" ")[1] == b"421", out.stdout


def test_h1s_host_matching_sni_with_port_is_served(tls_files: dict[str, str]) -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h1_listener(port, [op], protocol="h1s", extra=tls_block(tls_files))
        with gateway(h1_config(admin, listener), admin_port=admin):
            out = curl(
                "-i",
                "--cacert",
                tls_files["ca"],
                "--resolve",
                f"gateway.test:{port}:127.0.0.1",
                "-H",
                f"Host: GATEWAY.test:{port}",  # case-insensitive, port ignored
                f"https://gateway.test:{port}/",
            )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(b"\r\n")[0].split(b" ")[1] == b"200", out.stdout


def test_h1s_refuses_a_plaintext_request(tls_files: dict[str, str]) -> None:
    with origin() as op:
        admin, port = free_port(), free_port()
        listener = h1_listener(port, [op], protocol="h1s", extra=tls_block(tls_files))
        with gateway(h1_config(admin, listener), admin_port=admin):
            watch = OriginWatch(op)
            out = curl("-i", f"http://127.0.0.1:{port}/")
            assert watch.new_requests() == 0
    assert not out.stdout.startswith(b"HTTP/1.1 200")


# -- TLS to the backend ----------------------------------------------------------------------


def test_backend_over_tls_verified_with_the_configured_ca(tls_files: dict[str, str]) -> None:
    with origin(tls=(tls_files["cert"], tls_files["key"])) as op:
        admin, port = free_port(), free_port()
        backend = f'tls = true\ntls_ca_path = "{tls_files["ca"]}"'
        listener = h1_listener(port, [op], backend_extra=backend)
        with gateway(h1_config(admin, listener), admin_port=admin) as gw:
            for _ in range(3):
                resp = request(port, get(port, "/size/200000"))
                assert resp.status == 200
                assert len(resp.body) == 200000
            body = request(port, b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            assert b'"bytes": 3' in body.body
            assert gw.metric("pool_connections_total") == 1  # one TLS session, reused


def test_backend_over_tls_with_an_explicit_verify_hostname(tls_files: dict[str, str]) -> None:
    with origin(tls=(tls_files["cert"], tls_files["key"])) as op:
        admin, port = free_port(), free_port()
        backend = (
            f'tls = true\ntls_ca_path = "{tls_files["ca"]}"\ntls_verify_hostname = "gateway.test"'
        )
        with gateway(
            h1_config(admin, h1_listener(port, [op], backend_extra=backend)), admin_port=admin
        ):
            resp = request(port, get(port, "/"))
    assert (resp.status, resp.body) == (200, b"hello from origin")


def test_backend_certificate_from_another_ca_is_502(
    tls_files: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with origin(tls=(tls_files["cert"], tls_files["key"])) as op:
        admin, port = free_port(), free_port()
        backend = f'tls = true\ntls_ca_path = "{other}"'
        listener = h1_listener(port, [op], backend_extra=backend, http="header_timeout_ms = 1000")
        with gateway(h1_config(admin, listener), admin_port=admin) as gw:
            resp = request(port, get(port, "/"), timeout=15)
            assert resp.status == 502
            assert gw.metric("upstream_errors_total") >= 1


def test_backend_hostname_not_in_certificate_is_502(tls_files: dict[str, str]) -> None:
    with origin(tls=(tls_files["cert"], tls_files["key"])) as op:
        admin, port = free_port(), free_port()
        backend = (
            f'tls = true\ntls_ca_path = "{tls_files["ca"]}"\ntls_verify_hostname = "other.example"'
        )
        listener = h1_listener(port, [op], backend_extra=backend, http="header_timeout_ms = 1000")
        with gateway(h1_config(admin, listener), admin_port=admin):
            resp = request(port, get(port, "/"), timeout=15)
    assert resp.status == 502
