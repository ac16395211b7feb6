"""The shipped ``examples/h1.toml``, ``h1s.toml`` and ``h1s-websocket.toml``
are real: ``check`` accepts them (given real certificate files), and each
boots and proxies once its ports and paths point at this machine."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from tests.support.gateway import free_port, gateway
from tests.support.h1 import ScriptedBackend, read_head, seen_headers, websocket_echo
from tests.support.processes import origin

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CERT, KEY, BACKEND_CA = (
    "/etc/expressgateway/cert.pem",
    "/etc/expressgateway/key.pem",
    "/etc/expressgateway/backend-ca.pem",
)


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressgateway", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def with_files(text: str, tls_files: dict[str, str]) -> str:
    """The example with its /etc/expressgateway paths replaced by real files."""
    for old, new in (
        (CERT, tls_files["cert"]),
        (KEY, tls_files["key"]),
        (BACKEND_CA, tls_files["ca"]),
    ):
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


def localize(text: str, backends: list[int]) -> tuple[str, int, int]:
    """Point the example at this machine: the listener at a free loopback
    port, the backends at ``backends`` (in order), the admin endpoint at a
    free port; one worker and no readiness settle. Comments and all other
    keys stay as written. Returns (text, port, admin port)."""
    doc = tomllib.loads(text)
    (lst,) = doc["listeners"]
    port, admin = free_port(), free_port()
    assert lst["address"].endswith((":8080", ":8443"))
    text = text.replace(f'"{lst["address"]}"', f'"127.0.0.1:{port}"')
    written = [b["address"] for b in lst["backends"]]
    assert len(written) == len(backends)
    for old, new in zip(written, backends, strict=True):
        text = text.replace(f'address = "{old}"', f'address = "127.0.0.1:{new}"')
    text = text.replace(f'"{doc["observability"]["metrics_bind"]}"', f'"127.0.0.1:{admin}"')
    text = re.sub(r"(?m)^workers = \d+", "workers = 1", text)
    text = re.sub(r"(?m)^readiness_settle_ms = \d+", "readiness_settle_ms = 0", text)
    return text, port, admin


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)


def named(name: bytes) -> object:
    """A backend handler answering every request with ``name``."""

    def handler(conn: object, backend: ScriptedBackend) -> None:
        while True:
            try:
                read_head(conn)  # type: ignore[arg-type]
            except ConnectionError:
                return
            conn.sendall(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(name), name)
            )

    return handler


# -- check ---------------------------------------------------------------------------------


def test_h1_example_passes_check_as_shipped() -> None:
    out = check(EXAMPLES / "h1.toml")
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


@pytest.mark.parametrize("name", ["h1s.toml", "h1s-websocket.toml"])
def test_tls_examples_name_their_missing_certificate_files(name: str) -> None:
    out = check(EXAMPLES / name)
    assert out.returncode == 2
    assert f'listeners[0].tls.cert_path = "{CERT}": file not found' in out.stderr
    assert f'listeners[0].tls.key_path = "{KEY}": file not found' in out.stderr


@pytest.mark.parametrize("name", ["h1s.toml", "h1s-websocket.toml"])
def test_tls_examples_pass_check_with_real_files(
    name: str, tls_files: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(with_files((EXAMPLES / name).read_text(), tls_files))
    out = check(path)
    assert out.returncode == 0, out.stderr


# -- boot and proxy ---------------------------------------------------------------------------


def test_h1_example_boots_and_proxies_round_robin() -> None:
    with ScriptedBackend(named(b"first")) as a, ScriptedBackend(named(b"second")) as b:  # type: ignore[arg-type]
        text, port, admin = localize((EXAMPLES / "h1.toml").read_text(), [a.port, b.port])
        with gateway(text, admin_port=admin):
            seen = [curl(f"http://127.0.0.1:{port}/").stdout for _ in range(4)]
    assert seen in ([b"first", b"second"] * 2, [b"second", b"first"] * 2)  # random start


def test_h1s_example_boots_and_proxies_to_plain_and_tls_backends(
    tls_files: dict[str, str],
) -> None:
    with origin() as plain, origin(tls=(tls_files["cert"], tls_files["key"])) as secure:
        text, port, admin = localize(
            with_files((EXAMPLES / "h1s.toml").read_text(), tls_files), [plain, secure]
        )
        with gateway(text, admin_port=admin):
            answers = [
                curl(
                    "--cacert",
                    tls_files["ca"],
                    "--resolve",
                    f"localhost:{port}:127.0.0.1",
                    f"https://localhost:{port}/headers",
                )
                for _ in range(2)  # one to each backend
            ]
    for out in answers:
        assert out.returncode == 0, out.stderr
        assert seen_headers(out.stdout)["x-forwarded-proto"] == ["https"]


def test_h1s_websocket_example_boots_and_relays_wss(tls_files: dict[str, str]) -> None:
    with websocket_echo() as a, websocket_echo() as b:
        text, port, admin = localize(
            with_files((EXAMPLES / "h1s-websocket.toml").read_text(), tls_files), [a, b]
        )
        ctx = ssl.create_default_context(cafile=tls_files["ca"])
        with gateway(text, admin_port=admin) as gw:
            for i in range(2):  # one tunnel to each backend
                with ws_connect(
                    f"wss://localhost:{port}/chat", ssl=ctx, open_timeout=5, compression=None
                ) as ws:
                    ws.send(f"over wss {i}")
                    assert ws.recv(timeout=5) == f"over wss {i}"
            assert gw.metric("websocket_connections_total", listener="wss") == 2
