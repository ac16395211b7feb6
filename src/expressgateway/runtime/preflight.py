"""Checks that need more than the config file itself: certificates and keys
parse and match. Run by ``check`` and before binding anything at boot."""

from __future__ import annotations

from expressgateway.config import Config
from expressgateway.io.tls import TlsConfigError, server_context


def preflight(cfg: Config) -> list[str]:
    """Every problem found, as ``key: reason`` lines (empty when all is well)."""
    problems: list[str] = []
    for i, lc in enumerate(cfg.listeners):
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
    return problems
