"""The shipped ``examples/tcp.toml``, ``tls.toml`` and ``udp.toml`` are real:
``check`` accepts them, and they boot and relay traffic once their ports
(and, for TLS, certificate paths) are pointed at this machine."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.gateway import free_port, gateway
from tests.support.l4 import UdpEcho, named_echo, recv_exactly, recv_line

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("expressgateway")), "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def localize(text: str, backends: list[int], *, udp: bool = False) -> tuple[str, int, int]:
    """Point the example at this machine: its listener at a free loopback
    port, its backends at ``backends`` (in order), its admin endpoint at a
    free port; comments and every other key stay as written. Also pins one
    worker (so round robin is observable) and no readiness settle (so the
    test stops fast). Returns (text, port, admin port)."""
    doc = tomllib.loads(text)
    (lst,) = doc["listeners"]
    port, admin = free_port(udp=udp), free_port()
    text = text.replace(f'"{lst["address"]}"', f'"127.0.0.1:{port}"')
    written = [b["address"] for b in lst["backends"]]
    assert len(written) == len(backends)
    for old, new in zip(written, backends, strict=True):
        text = text.replace(f'address = "{old}"', f'address = "127.0.0.1:{new}"')
    text = text.replace(f'"{doc["observability"]["metrics_bind"]}"', f'"127.0.0.1:{admin}"')
    text = re.sub(r"(?m)^workers = \d+", "workers = 1", text)
    text = re.sub(r"(?m)^readiness_settle_ms = .*\n", "", text)
    assert "\n[runtime]\n" in text
    text = text.replace("\n[runtime]\n", "\n[runtime]\nreadiness_settle_ms = 0\n", 1)
    return text, port, admin


@pytest.mark.parametrize("name", ["tcp.toml", "udp.toml"])
def test_example_passes_check_as_shipped(name: str) -> None:
    out = check(EXAMPLES / name)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


def test_tls_example_names_its_missing_certificate_files() -> None:
    """As shipped, the TLS example points at /etc/expressgateway/: ``check``
    says exactly which files are missing."""
    out = check(EXAMPLES / "tls.toml")
    assert out.returncode == 2
    assert (
        'listeners[0].tls.cert_path = "/etc/expressgateway/cert.pem": file not found' in out.stderr
    )
    assert 'listeners[0].tls.key_path = "/etc/expressgateway/key.pem": file not found' in out.stderr


def tls_example(tls_files: dict[str, str]) -> str:
    text = (EXAMPLES / "tls.toml").read_text()
    assert '"/etc/expressgateway/cert.pem"' in text and '"/etc/expressgateway/key.pem"' in text
    return text.replace('"/etc/expressgateway/cert.pem"', f'"{tls_files["cert"]}"').replace(
        '"/etc/expressgateway/key.pem"', f'"{tls_files["key"]}"'
    )


def test_tls_example_passes_check_with_real_certificate_paths(
    tmp_path: Path, tls_files: dict[str, str]
) -> None:
    path = tmp_path / "tls.toml"
    path.write_text(tls_example(tls_files))
    out = check(path)
    assert out.returncode == 0, out.stderr


def test_tcp_example_boots_and_relays_round_robin() -> None:
    with named_echo("first") as a, named_echo("second") as b:
        text, port, admin = localize((EXAMPLES / "tcp.toml").read_text(), [a, b])
        with gateway(text, admin_port=admin):
            seen = []
            for i in range(4):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    seen.append(recv_line(c))
                    c.sendall(b"payload %d" % i)
                    assert recv_exactly(c, 9) == b"payload %d" % i
            assert seen in ([b"first", b"second"] * 2, [b"second", b"first"] * 2)  # random start


def test_tls_example_boots_and_relays(tls_files: dict[str, str]) -> None:
    with named_echo("plain-backend") as a, named_echo("plain-backend") as b:
        text, port, admin = localize(tls_example(tls_files), [a, b])
        ctx = ssl.create_default_context(cafile=tls_files["ca"])
        with gateway(text, admin_port=admin):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with raw, ctx.wrap_socket(raw, server_hostname="localhost") as c:
                assert recv_line(c) == b"plain-backend"
                c.sendall(b"over tls")
                assert recv_exactly(c, 8) == b"over tls"


def test_udp_example_boots_and_relays() -> None:
    with UdpEcho() as a, UdpEcho() as b:
        text, port, admin = localize(
            (EXAMPLES / "udp.toml").read_text(), [a.port, b.port], udp=True
        )
        with gateway(text, admin_port=admin) as gw:
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            try:
                for i, c in enumerate(clients):
                    c.settimeout(5)
                    c.sendto(b"query %d" % i, ("127.0.0.1", port))
                    data, sender = c.recvfrom(65535)
                    assert sender == ("127.0.0.1", port)
                    assert data.endswith(b"|query %d" % i)
            finally:
                for c in clients:
                    c.close()
            # two clients, two flows, one per backend (round robin per flow)
            assert len(a.peers) == len(b.peers) == 1
            assert gw.metric("udp_flows", listener="udp-8053") == 2
