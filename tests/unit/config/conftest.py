"""Fixtures for config tests: write configs and referenced files under tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from expressgateway.config import Config, ConfigError, load_config
from tests.unit.config.helpers import write


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """tmp_path with cert.pem, key.pem (0600), ca.pem, quic.crt, quic.key."""
    for name in ("cert.pem", "key.pem", "ca.pem", "quic.crt", "quic.key"):
        write(tmp_path / name)
    return tmp_path


@pytest.fixture
def load(tmp_path: Path) -> Callable[[str], Config]:
    """Write a config into tmp_path/gw.toml and load it."""

    def _load(text: str) -> Config:
        path = tmp_path / "gw.toml"
        path.write_text(text)
        return load_config(path)

    return _load


@pytest.fixture
def load_problems(tmp_path: Path) -> Callable[[str], list[str]]:
    """Write a config into tmp_path/gw.toml and return its problem lines."""

    def _problems(text: str) -> list[str]:
        path = tmp_path / "gw.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        return [str(p) for p in info.value.problems]

    return _problems
