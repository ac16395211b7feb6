"""The ``tls`` listener: TLS termination, then a raw byte relay to TCP
backends. Clients are Python's ssl module and ``openssl s_client``, both
verifying the gateway's certificate against the test CA."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.gateway import free_port, gateway
from tests.support.l4 import closed_without_data, config, listener, poll, recv_exactly


def tls_listener(
    port: int, backend: int, files: dict[str, str], alpn: list[str] | None = None
) -> str:
    extra = f'\n[listeners.tls]\ncert_path = "{files["cert"]}"\nkey_path = "{files["key"]}"\n'
    if alpn is not None:
        extra += "alpn = [" + ", ".join(f'"{p}"' for p in alpn) + "]\n"
    return listener("tls-in", port, "tls", [backend], extra=extra)


def client_context(
    ca: str, *, version: ssl.TLSVersion | None = None, alpn: list[str] | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)  # verifies chain and host name
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


@contextlib.contextmanager
def tls_connect(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> Iterator[ssl.SSLSocket]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            yield tls
    finally:
        raw.close()


@dataclass
class SClient:
    returncode: int | None
    stdout: str
    stderr: str


def s_client(port: int, ca: str, *args: str, line: str = "hello over openssl") -> SClient:
    """``openssl s_client`` verifying the chain and host name: send ``line``,
    wait (bounded) until it is echoed or the connection ends, then quit."""
    proc = subprocess.Popen(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-CAfile",
            ca,
            "-verify_return_error",
            "-verify_hostname",
            "localhost",
            "-ign_eof",
            *args,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: list[str] = []
    echoed = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            out.append(text)
            if text.rstrip("\n") == line:
                echoed.set()
        echoed.set()  # EOF: the connection is over

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        echoed.wait(15)
        reader.join(0.5)
        if not reader.is_alive():  # the connection ended: let openssl exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        code = proc.poll()
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(5)
        reader.join(5)
        stderr = proc.stderr.read() if proc.stderr else ""
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
    return SClient(code, "".join(out), stderr)


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
    ids=["tls1.2", "tls1.3"],
)
def test_tls_listener_terminates_tls_and_relays(
    tls_files: dict[str, str], echo_port: int, version: ssl.TLSVersion, name: str
) -> None:
    admin, port = free_port(), free_port()
    with gateway(config(admin, tls_listener(port, echo_port, tls_files)), admin_port=admin) as gw:
        with tls_connect(port, client_context(tls_files["ca"], version=version)) as c:
            assert c.version() == name
            c.sendall(b"secret bytes")
            assert recv_exactly(c, 12) == b"secret bytes"
        assert poll(lambda: gw.metric("bytes_client_to_backend", listener="tls-in") == 12)
        assert gw.metric("connections_total", listener="tls-in") == 1


def test_tls_listener_relays_megabytes_intact(tls_files: dict[str, str], echo_port: int) -> None:
    admin, port = free_port(), free_port()
    payload = bytes(i % 253 for i in range(8 * 1024 * 1024))
    cfg = config(admin, tls_listener(port, echo_port, tls_files))
    with gateway(cfg, admin_port=admin), tls_connect(port, client_context(tls_files["ca"])) as c:
        got = bytearray()
        view = memoryview(payload)
        for off in range(0, len(payload), 256 * 1024):
            c.sendall(view[off : off + 256 * 1024])
            got += recv_exactly(c, len(view[off : off + 256 * 1024]))
        assert got == payload


def test_tls_listener_serves_openssl_s_client(tls_files: dict[str, str], echo_port: int) -> None:
    """openssl sends its ClientHello the instant it connects; the gateway must
    not lose it (repeated, as it is a race with the listener's setup)."""
    admin, port = free_port(), free_port()
    with gateway(config(admin, tls_listener(port, echo_port, tls_files)), admin_port=admin):
        for flag, version in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] * 3:
            out = s_client(port, tls_files["ca"], flag)
            assert "Verify return code: 0 (ok)" in out.stdout, out.stderr
            assert f"Protocol  : {version}" in out.stdout or f"New, {version}" in out.stdout
            assert "hello over openssl" in out.stdout.split("---")[-1]


def test_tls13_only_refuses_tls12_clients(tls_files: dict[str, str], echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(
        admin, tls_listener(port, echo_port, tls_files), runtime="[runtime.tls]\ntls13_only = true"
    )
    with gateway(cfg, admin_port=admin) as gw:
        tls12 = client_context(tls_files["ca"], version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError), tls_connect(port, tls12):
            pass
        # refused by the TLS stack for its version (not a handshake that timed out)
        assert poll(
            lambda: (
                gw.metric(
                    "tls_handshake_errors_total", listener="tls-in", reason="unsupported_protocol"
                )
                == 1
            )
        )
        with tls_connect(port, client_context(tls_files["ca"])) as c:
            assert c.version() == "TLSv1.3"
            c.sendall(b"ok")
            assert recv_exactly(c, 2) == b"ok"
        assert gw.metric("bytes_client_to_backend", listener="tls-in") == 2


def test_tls13_only_refuses_openssl_tls12_client(tls_files: dict[str, str], echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(
        admin, tls_listener(port, echo_port, tls_files), runtime="[runtime.tls]\ntls13_only = true"
    )
    with gateway(cfg, admin_port=admin) as gw:
        refused = s_client(port, tls_files["ca"], "-tls1_2")
        assert refused.returncode not in (0, None)
        assert "Cipher is (NONE)" in refused.stdout
        assert "hello over openssl" not in refused.stdout
        assert (
            gw.metric(
                "tls_handshake_errors_total", listener="tls-in", reason="unsupported_protocol"
            )
            == 1
        )
        ok = s_client(port, tls_files["ca"], "-tls1_3")
        assert "New, TLSv1.3" in ok.stdout, ok.stderr
        assert "hello over openssl" in ok.stdout.split("---")[-1]


def test_tls_listener_negotiates_configured_alpn(tls_files: dict[str, str], echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, tls_listener(port, echo_port, tls_files, alpn=["h2", "http/1.1"]))
    with gateway(cfg, admin_port=admin):
        ca = tls_files["ca"]
        with tls_connect(port, client_context(ca, alpn=["http/1.1", "h2"])) as c:
            assert c.selected_alpn_protocol() == "h2"  # the server's preference wins
        with tls_connect(port, client_context(ca, alpn=["http/1.1"])) as c:
            assert c.selected_alpn_protocol() == "http/1.1"
            c.sendall(b"still relayed")
            assert recv_exactly(c, 13) == b"still relayed"


def test_tls_listener_negotiates_alpn_with_openssl(
    tls_files: dict[str, str], echo_port: int
) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, tls_listener(port, echo_port, tls_files, alpn=["http/1.1"]))
    with gateway(cfg, admin_port=admin):
        out = s_client(port, tls_files["ca"], "-alpn", "h2,http/1.1")
        assert "ALPN protocol: http/1.1" in out.stdout, out.stderr


def test_tls_listener_without_alpn_selects_none(tls_files: dict[str, str], echo_port: int) -> None:
    admin, port = free_port(), free_port()
    cfg = config(admin, tls_listener(port, echo_port, tls_files))
    ctx = client_context(tls_files["ca"], alpn=["h2"])
    with gateway(cfg, admin_port=admin), tls_connect(port, ctx) as c:
        assert c.selected_alpn_protocol() is None


def test_tls_listener_counts_failed_handshakes_and_keeps_serving(
    tls_files: dict[str, str], echo_port: int
) -> None:
    admin, port = free_port(), free_port()
    with gateway(config(admin, tls_listener(port, echo_port, tls_files)), admin_port=admin) as gw:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a ClientHello
            assert closed_without_data(plain)
        assert poll(lambda: gw.metric("tls_handshake_errors_total", listener="tls-in") == 1)
        with tls_connect(port, client_context(tls_files["ca"])) as c:
            c.sendall(b"fine")
            assert recv_exactly(c, 4) == b"fine"
