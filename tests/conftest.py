"""Shared fixtures: a TLS chain made with trustme, origins, gateways."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.processes import origin, tcp_echo


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Server cert + key (mode 0600) for localhost/127.0.0.1, and the CA bundle."""
    d = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1", "gateway.test")
    cert_path = d / "cert.pem"
    key_path = d / "key.pem"
    ca_path = d / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    os.chmod(key_path, 0o600)
    ca.cert_pem.write_to_path(str(ca_path))
    # cert_path holds key+chain; give a cert-only file too
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    cert_only = d / "cert-only.pem"
    cert_only.write_bytes(chain)
    return {"cert": str(cert_only), "key": str(key_path), "ca": str(ca_path), "dir": str(d)}


@pytest.fixture()
def origin_port() -> Iterator[int]:
    with origin() as port:
        yield port


@pytest.fixture()
def echo_port() -> Iterator[int]:
    with tcp_echo() as port:
        yield port


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return tmp_path
