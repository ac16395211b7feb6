"""The ``expressgateway`` command line as an operator meets it: ``--version``,
``--help``, ``check``, and what a run does with a config it cannot serve."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import trustme

from tests.support.gateway import free_port
from tests.support.l4 import config, listener


def cli() -> list[str]:
    """The installed console script next to this interpreter."""
    script = Path(sys.executable).with_name("expressgateway")
    if not script.exists():
        found = shutil.which("expressgateway")
        assert found, "the expressgateway console script is not installed (pip install -e .)"
        script = Path(found)
    return [str(script)]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli(), *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def port_is_free(port: int) -> bool:
    """Bindable without SO_REUSEADDR/SO_REUSEPORT: nobody holds it."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def run_and_watch(
    path: Path, ports: list[int], timeout: float = 30.0
) -> tuple[int, str, list[int]]:
    """Run the gateway on ``path`` until it exits, probing ``ports`` all the
    while; returns (exit code, stderr+stdout, ports that ever accepted)."""
    proc = subprocess.Popen(
        [*cli(), str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    accepted: set[int] = set()
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            accepted.update(p for p in ports if accepts(p))
            time.sleep(0.01)
        assert proc.poll() is not None, "the gateway kept running with a config it cannot serve"
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate(timeout=10)[0]
    return proc.returncode, out, sorted(accepted)


@pytest.fixture()
def backend_port() -> int:
    return free_port()  # nothing needs to listen: these configs never serve


def test_version_prints_the_package_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"expressgateway {version('expressgateway')}"


def test_help_explains_run_check_and_demo() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    text = out.stdout
    assert "expressgateway CONFIG.toml" in text
    assert "expressgateway check CONFIG.toml" in text
    assert "expressgateway demo" in text
    assert "--version" in text


def test_no_arguments_prints_usage_and_fails() -> None:
    out = run_cli()
    assert out.returncode != 0
    assert "usage" in (out.stdout + out.stderr).lower()


def test_module_entry_point_matches_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "expressgateway", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert out.stdout == run_cli("--version").stdout


def test_check_accepts_a_valid_config(tmp_path: Path, backend_port: int) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(config(free_port(), listener("edge", free_port(), "tcp", [backend_port])))
    out = run_cli("check", str(path))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
    assert out.stderr == ""


def test_check_names_a_typo_with_its_key_path_and_a_suggestion(
    tmp_path: Path, backend_port: int
) -> None:
    text = config(free_port(), listener("edge", free_port(), "tcp", [backend_port]))
    path = tmp_path / "typo.toml"
    path.write_text(
        text.replace(
            f'address = "127.0.0.1:{backend_port}"',
            f'address = "127.0.0.1:{backend_port}"\nwieght = 3',
        )
    )
    out = run_cli("check", str(path))
    assert out.returncode == 2
    assert "listeners[0].backends[0].wieght = 3" in out.stderr
    assert "did you mean 'weight'" in out.stderr


def test_check_binds_nothing(tmp_path: Path, backend_port: int) -> None:
    """``check`` validates while the listener and admin ports are held by
    someone else: it never tries to bind them."""
    with (
        socket.create_server(("127.0.0.1", 0)) as held,
        socket.create_server(("127.0.0.1", 0)) as admin,
    ):
        port, admin_port = held.getsockname()[1], admin.getsockname()[1]
        path = tmp_path / "ok.toml"
        path.write_text(config(admin_port, listener("edge", port, "tcp", [backend_port])))
        out = run_cli("check", str(path))
        assert out.returncode == 0, out.stderr


def test_run_with_invalid_config_names_key_value_and_reason_and_binds_nothing(
    tmp_path: Path, backend_port: int
) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "bad.toml"
    path.write_text(
        config(
            admin,
            listener("edge", port, "tcp", [backend_port]),
            runtime="per_ip_connection_cap = 0",
        )
    )
    code, out, accepted = run_and_watch(path, [port, admin])
    assert code == 2
    assert "runtime.per_ip_connection_cap = 0: out of range (allowed 1..=2_000_000)" in out
    assert accepted == []
    assert port_is_free(port) and port_is_free(admin)


def test_run_with_missing_config_file_fails_clearly(tmp_path: Path) -> None:
    code, out, _ = run_and_watch(tmp_path / "nope.toml", [])
    assert code == 2
    assert "nope.toml" in out and "No such file" in out


def write_tls_config(
    tmp_path: Path, cert: str, key: str, port: int, admin: int, backend: int
) -> Path:
    extra = f'\n[listeners.tls]\ncert_path = "{cert}"\nkey_path = "{key}"\n'
    path = tmp_path / "tls.toml"
    path.write_text(config(admin, listener("secure", port, "tls", [backend], extra=extra)))
    return path


def test_key_file_readable_by_others_is_refused(
    tmp_path: Path, tls_files: dict[str, str], backend_port: int
) -> None:
    key = tmp_path / "open-key.pem"
    shutil.copy(tls_files["key"], key)
    os.chmod(key, 0o644)
    port, admin = free_port(), free_port()
    path = write_tls_config(tmp_path, tls_files["cert"], str(key), port, admin, backend_port)

    out = run_cli("check", str(path))
    assert out.returncode == 2
    assert f'listeners[0].tls.key_path = "{key}": mode 0644, must be 0600 or stricter' in out.stderr
    assert f"chmod 600 {key}" in out.stderr

    code, text, accepted = run_and_watch(path, [port, admin])
    assert code == 2
    assert "mode 0644" in text
    assert accepted == []


def test_certificate_and_key_that_do_not_match_are_refused(
    tmp_path: Path, tls_files: dict[str, str], backend_port: int
) -> None:
    other = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other))
    os.chmod(other, 0o600)
    port, admin = free_port(), free_port()
    path = write_tls_config(tmp_path, tls_files["cert"], str(other), port, admin, backend_port)

    out = run_cli("check", str(path))
    assert out.returncode == 2
    assert "listeners[0].tls" in out.stderr
    assert "private key does not match the certificate" in out.stderr

    code, text, accepted = run_and_watch(path, [port, admin])
    assert code == 2
    assert "private key does not match the certificate" in text
    assert accepted == []


def test_port_in_use_fails_boot_naming_the_listener_and_binds_nothing(
    tmp_path: Path, backend_port: int
) -> None:
    """All or nothing: one listener's port is taken, so the other listener
    and the admin port never accept a connection either."""
    free_one, admin = free_port(), free_port()
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        taken = squatter.getsockname()[1]
        path = tmp_path / "clash.toml"
        path.write_text(
            config(
                admin,
                listener("free-one", free_one, "tcp", [backend_port]),
                listener("clashing", taken, "tcp", [backend_port]),
            )
        )
        code, out, accepted = run_and_watch(path, [free_one, admin])
    assert code != 0
    assert f"listener 'clashing' cannot bind tcp 127.0.0.1:{taken}: address already in use" in out
    assert "listener 'free-one' cannot bind" not in out
    assert accepted == []
    assert port_is_free(free_one) and port_is_free(admin)
