"""A throwaway self-signed ECDSA P-256 certificate for every TLS/QUIC front end."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .settings import HOST, TLS_NAME


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path
    combined: Path  # cert + key in one PEM (haproxy)


def make_cert(directory: Path) -> CertPair:
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "3",
            "-subj",
            f"/CN={TLS_NAME}",
            "-addext",
            f"subjectAltName=DNS:{TLS_NAME},IP:{HOST}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    os.chmod(key, 0o600)
    combined = directory / "combined.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    os.chmod(combined, 0o600)
    return CertPair(cert, key, combined)
