"""Checks that need more than the config file itself: certificates and keys
parse and match. Run by ``check`` and before binding anything at boot."""

from __future__ import annotations

import os

from expressgateway.config import Config
from expressgateway.io.tls import TlsConfigError, server_context


def preflight(cfg: Config, *, mint: bool = False) -> list[str]:
    """Every problem found, as ``key: reason`` lines (empty when all is well).
    ``mint`` (at boot, not for ``check``) creates missing QUIC retry secrets,
    so that every worker reads the same one."""
    problems: list[str] = []
    for i, lc in enumerate(cfg.listeners):
        quic = lc.quic
        if quic is not None and quic.raw_proxy is None:
            try:
                server_context(quic.cert_path, quic.key_path, where=f"listeners[{i}].quic")
            except TlsConfigError as exc:
                problems.append(str(exc))
            problems.extend(_retry_secret(f"listeners[{i}].quic", quic.retry_secret_path, mint))
        if lc.tls is not None:
            try:
                server_context(
                    lc.tls.cert_path,
                    lc.tls.key_path,
                    tls13_only=cfg.runtime.tls.tls13_only,
                    where=f"listeners[{i}].tls",
                )
            except TlsConfigError as exc:
                problems.append(str(exc))
            for j, extra in enumerate(lc.tls.certificates):
                try:
                    server_context(
                        extra.cert_path,
                        extra.key_path,
                        tls13_only=cfg.runtime.tls.tls13_only,
                        where=f"listeners[{i}].tls.certificates[{j}]",
                    )
                except TlsConfigError as exc:
                    problems.append(str(exc))
    return problems


def _retry_secret(where: str, path: str, mint: bool) -> list[str]:
    from expressgateway.io.quic import load_retry_secret

    if not mint and not os.path.exists(path):
        return []  # minted at boot
    try:
        load_retry_secret(path)
    except (OSError, ValueError) as exc:
        return [f"{where}.retry_secret_path: {path!r}: {exc}"]
    return []
