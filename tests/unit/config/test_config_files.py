"""Referenced files: resolved against the config's directory, stat-ed, key modes checked."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from expressgateway.config import Config, parse_config
from tests.unit.config.helpers import write


def _h1s(cert: str = "cert.pem", key: str = "key.pem") -> str:
    return f"""
[[listeners]]
address = "127.0.0.1:8443"
protocol = "h1s"
[listeners.tls]
cert_path = "{cert}"
key_path = "{key}"
"""


def _quic(retry: str = "retry.key") -> str:
    return f"""
[[listeners]]
address = "127.0.0.1:8443"
protocol = "quic"
[listeners.quic]
cert_path = "quic.crt"
key_path = "quic.key"
retry_secret_path = "{retry}"
"""


def test_relative_paths_resolve_against_the_config_directory(
    tls_dir: Path, load: Callable[[str], Config]
) -> None:
    tls = load(_h1s()).listeners[0].tls
    assert tls is not None
    assert (tls.cert_path, tls.key_path) == (str(tls_dir / "cert.pem"), str(tls_dir / "key.pem"))


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(
    tls_dir: Path, load: Callable[[str], Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    tls = load(_h1s()).listeners[0].tls
    assert tls is not None and tls.cert_path == str(tls_dir / "cert.pem")


def test_parse_config_with_a_path_source_resolves_against_its_directory(tls_dir: Path) -> None:
    cfg = parse_config(_h1s(), source=str(tls_dir / "gw.toml"))
    assert cfg.listeners[0].tls is not None
    assert cfg.listeners[0].tls.key_path == str(tls_dir / "key.pem")


def test_parse_config_from_a_string_resolves_against_the_cwd(
    tls_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tls_dir)
    cfg = parse_config(_h1s())
    assert cfg.listeners[0].tls is not None
    assert cfg.listeners[0].tls.cert_path == str(tls_dir / "cert.pem")


def test_absolute_paths_are_kept(tls_dir: Path) -> None:
    cfg = parse_config(_h1s(cert=str(tls_dir / "cert.pem"), key=str(tls_dir / "key.pem")))
    assert cfg.listeners[0].tls is not None
    assert cfg.listeners[0].tls.cert_path == str(tls_dir / "cert.pem")


def test_missing_certificate_is_reported_with_the_resolved_path(
    tmp_path: Path, load_problems: Callable[[str], list[str]]
) -> None:
    write(tmp_path / "key.pem")
    assert load_problems(_h1s()) == [
        f'listeners[0].tls.cert_path = "cert.pem": file not found '
        f"(resolved to {tmp_path / 'cert.pem'})"
    ]


def test_world_readable_key_is_rejected_with_chmod_hint(
    tls_dir: Path, load_problems: Callable[[str], list[str]]
) -> None:
    key = tls_dir / "key.pem"
    os.chmod(key, 0o644)
    assert load_problems(_h1s()) == [
        f'listeners[0].tls.key_path = "key.pem": mode 0644, must be 0600 or stricter '
        f"(chmod 600 {key})"
    ]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o700 | 0o001])
def test_key_with_any_group_or_other_bit_is_rejected(
    tls_dir: Path, load_problems: Callable[[str], list[str]], mode: int
) -> None:
    os.chmod(tls_dir / "key.pem", mode)
    (line,) = load_problems(_h1s())
    assert f"mode {mode:04o}, must be 0600 or stricter" in line


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_key_mode_0600_or_stricter_is_accepted(
    tls_dir: Path, load: Callable[[str], Config], mode: int
) -> None:
    os.chmod(tls_dir / "key.pem", mode)
    assert load(_h1s()).listeners[0].tls is not None


def test_certificate_mode_is_not_restricted(tls_dir: Path, load: Callable[[str], Config]) -> None:
    os.chmod(tls_dir / "cert.pem", 0o644)
    assert load(_h1s()).listeners[0].tls is not None


def test_directory_instead_of_file_is_rejected(
    tls_dir: Path, load_problems: Callable[[str], list[str]]
) -> None:
    (tls_dir / "certs").mkdir()
    (line,) = load_problems(_h1s(cert="certs"))
    assert line.startswith('listeners[0].tls.cert_path = "certs": not a regular file')


def test_unreadable_file_is_rejected(
    tls_dir: Path, load_problems: Callable[[str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access

    def access(path: str, mode: int) -> bool:
        return False if str(path).endswith("cert.pem") else real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    (line,) = load_problems(_h1s())
    assert line.startswith('listeners[0].tls.cert_path = "cert.pem": file is not readable')


def test_empty_path_is_rejected(tls_dir: Path, load_problems: Callable[[str], list[str]]) -> None:
    assert load_problems(_h1s(cert="")) == ['listeners[0].tls.cert_path = "": must not be empty']


def test_absent_retry_secret_is_allowed(tls_dir: Path, load: Callable[[str], Config]) -> None:
    quic = load(_quic()).listeners[0].quic
    assert quic is not None and quic.retry_secret_path == str(tls_dir / "retry.key")


def test_existing_retry_secret_must_be_private(
    tls_dir: Path, load_problems: Callable[[str], list[str]]
) -> None:
    write(tls_dir / "retry.key", mode=0o644)
    (line,) = load_problems(_quic())
    assert line.startswith('listeners[0].quic.retry_secret_path = "retry.key": mode 0644')


def test_missing_quic_key_is_reported(
    tls_dir: Path, load_problems: Callable[[str], list[str]]
) -> None:
    (tls_dir / "quic.key").unlink()
    (line,) = load_problems(_quic())
    assert line.startswith('listeners[0].quic.key_path = "quic.key": file not found')


def test_missing_backend_ca_is_reported(
    tls_dir: Path, load_problems: Callable[[str], list[str]]
) -> None:
    text = """
[[listeners]]
address = "127.0.0.1:8080"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:4433"
protocol = "h3"
tls_ca_path = "missing-ca.pem"
"""
    (line,) = load_problems(text)
    assert line.startswith(
        'listeners[0].backends[0].tls_ca_path = "missing-ca.pem": file not found'
    )
