"""Structured logs: JSON lines by default, or plain text.

Format comes from ``LB_LOG_FORMAT`` (json|text|plain) and then the config;
level from ``LB_LOG_LEVEL`` (or ``RUST_LOG`` for configs and habits carried
over from the original), default ``info``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, pid, and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``ts level logger msg key=value ...`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _RESERVED and not k.startswith("_")
        )
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname:<7} {record.name}[{record.process}] {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _level_from_env() -> str | None:
    value = os.environ.get("LB_LOG_LEVEL") or os.environ.get("RUST_LOG")
    if not value:
        return None
    # RUST_LOG may look like "info,hyper=warn": take the first bare level.
    for part in value.split(","):
        if "=" not in part and part.strip():
            return part.strip()
    return None


def setup_logging(fmt: str | None = None, level: str | None = None) -> None:
    """Configure the root logger once for this process (idempotent)."""
    fmt = (os.environ.get("LB_LOG_FORMAT") or fmt or "json").lower()
    level = (_level_from_env() or level or "info").upper()
    if level == "WARN":
        level = "WARNING"
    if level == "TRACE":
        level = "DEBUG"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if fmt in ("text", "plain") else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging._nameToLevel else "INFO")
    # aioquic logs every connection's handshake steps at INFO: per-connection
    # noise at the edge; its warnings still come through
    if root.level > logging.DEBUG:
        logging.getLogger("quic").setLevel(logging.WARNING)
