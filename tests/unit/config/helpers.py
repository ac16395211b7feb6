"""Shared helpers for the config tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from expressgateway.config import ConfigError, parse_config

#: One valid HTTP/1.1 listener with one backend: the smallest useful config.
H1 = """
[[listeners]]
address = "127.0.0.1:8080"
protocol = "h1"

[[listeners.backends]]
address = "127.0.0.1:3000"
"""


def problems(text: str, source: str = "<string>") -> list[str]:
    """The problem lines a config produces (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source)
    return [str(p) for p in info.value.problems]


def write(path: Path, content: str = "x", mode: int = 0o600) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path
