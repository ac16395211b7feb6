"""TLS session resumption through a real gateway (``h1s``, two workers):
the supervisor's ticket keys are shared by every worker and rotate.

Clients are Python's ``ssl`` (a saved ``SSLSession`` offered again) and
``openssl s_client -sess_out/-sess_in``. The kernel spreads connections over
the two workers (SO_REUSEPORT hashes each source port), so ten resumptions
in a row all succeeding means tickets opened on both: with per-process
keys about half would be full handshakes (all ten by chance: 1 in 1024).
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.gateway import free_port, gateway
from tests.support.h1 import ResponseReader, h1_config, h1_listener
from tests.support.l4 import poll

WORKERS = 2
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


def config(admin: int, port: int, op: int, tls_files: dict[str, str], tls: str = "") -> str:
    block = (
        f'\n[listeners.tls]\ncert_path = "{tls_files["cert"]}"\n'
        f'key_path = "{tls_files["key"]}"\n{tls}\n'
    )
    listener = h1_listener(port, [op], name="secure", protocol="h1s", extra=block)
    return h1_config(admin, listener, workers=WORKERS)


class Client:
    """HTTPS GETs to the gateway, offering a saved session when given one."""

    def __init__(self, port: int, ca: str, version: ssl.TLSVersion) -> None:
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.minimum_version = self.ctx.maximum_version = version

    def get(self, session: ssl.SSLSession | None = None) -> tuple[bool, ssl.SSLSession]:
        """(resumed, the session to offer next time). The response is read
        before the session is taken: TLS 1.3 tickets come after the handshake."""
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw,
            self.ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s,
        ):
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert ResponseReader(b"GET").read(s, timeout=10).status == 200
            got = s.session
            assert got is not None
            return s.session_reused, got


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_one_saved_session_resumes_on_every_worker(
    tls_files: dict[str, str], origin_port: int, version: ssl.TLSVersion
) -> None:
    admin, port = free_port(), free_port()
    with gateway(config(admin, port, origin_port, tls_files), admin_port=admin) as gw:
        client = Client(port, tls_files["ca"], version)
        reused, session = client.get()
        assert not reused and session.has_ticket
        resumed = [client.get(session)[0] for _ in range(10)]
        assert resumed == [True] * 10
        assert poll(lambda: gw.metric("tls_handshakes_total", resumed="true") == 10, 5)
        assert gw.metric("tls_handshakes_total", listener="secure", resumed="false") == 1


def test_openssl_s_client_resumes_its_saved_session(
    tls_files: dict[str, str], origin_port: int, tmp_path: Path
) -> None:
    """An independent client: s_client saves the TLS 1.2 session (ticket
    included) to a file and offers it again from new processes."""
    admin, port = free_port(), free_port()
    sess = tmp_path / "session.pem"

    def s_client(*args: str) -> str:
        target = ["-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
        out = subprocess.run(
            ["openssl", "s_client", *target, "-CAfile", tls_files["ca"], "-tls1_2", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    with gateway(config(admin, port, origin_port, tls_files), admin_port=admin):
        first = s_client("-sess_out", str(sess))
        assert "New, TLSv1.2" in first and "Verify return code: 0 (ok)" in first
        again = [s_client("-sess_in", str(sess)) for _ in range(6)]
    assert all("Reused, TLSv1.2" in out for out in again), again


def test_a_ticket_outlives_a_rotation_by_the_overlap_then_gets_a_full_handshake(
    tls_files: dict[str, str], origin_port: int
) -> None:
    """interval 1 s, overlap 5 s: the key that sealed a ticket retires within
    a second and opens it 5 s more. Resumed after a rotation; a full
    handshake (and still a 200) once the key is gone, not before the overlap."""
    admin, port = free_port(), free_port()
    timings = "ticket_rotation_interval_seconds = 1\nticket_rotation_overlap_seconds = 5"
    with gateway(config(admin, port, origin_port, tls_files, timings), admin_port=admin) as gw:
        client = Client(port, tls_files["ca"], ssl.TLSVersion.TLSv1_3)
        rotations = gw.metric("tls_ticket_key_rotations_total", listener="secure")
        _, session = client.get()
        saved = time.monotonic()
        assert poll(
            lambda: gw.metric("tls_ticket_key_rotations_total") > rotations, 10, interval=0.1
        )
        reused, _ = client.get(session)
        assert reused, "the retired key no longer opened the ticket"
        assert poll(lambda: not client.get(session)[0], 30, interval=0.25)
        assert time.monotonic() - saved >= 4  # the overlap (5 s), less a second of slack


@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_session_tickets_off_means_no_session_ever_resumes(
    tls_files: dict[str, str], origin_port: int, version: ssl.TLSVersion
) -> None:
    admin, port = free_port(), free_port()
    off = "session_tickets = false"
    with gateway(config(admin, port, origin_port, tls_files, off), admin_port=admin) as gw:
        client = Client(port, tls_files["ca"], version)
        reused, session = client.get()
        assert not reused and not session.has_ticket
        # TLS 1.2 offers the session ID: no worker's cache may know it either
        assert [client.get(session)[0] for _ in range(6)] == [False] * 6
        assert gw.metric("tls_handshakes_total", resumed="true") == 0


def test_a_reload_turns_tickets_on_and_changes_the_rotation_interval(
    tls_files: dict[str, str], origin_port: int
) -> None:
    admin, port = free_port(), free_port()
    off = "session_tickets = false"
    with gateway(config(admin, port, origin_port, tls_files, off), admin_port=admin) as gw:
        client = Client(port, tls_files["ca"], ssl.TLSVersion.TLSv1_3)
        assert not client.get()[1].has_ticket
        assert gw.metric("tls_ticket_key_rotations_total") == 0
        gw.config_path.write_text(
            config(admin, port, origin_port, tls_files, "ticket_rotation_interval_seconds = 1")
        )
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        assert poll(lambda: gw.metric("config_reloads_total", result="applied") == 1, 10)
        _, session = client.get()
        assert session.has_ticket
        assert client.get(session)[0]
        assert poll(lambda: gw.metric("tls_ticket_key_rotations_total") >= 1, 10)
