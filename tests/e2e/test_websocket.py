"""WebSocket (RFC 6455 over an HTTP/1.1 Upgrade) through an ``h1`` listener
with a ``[listeners.websocket]`` block: the ``websockets`` client talks to a
``websockets`` echo server behind the gateway. The gateway's own limits
(ping flood, idle, message size) show as the close code the client gets."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import (
    ResponseReader,
    ScriptedBackend,
    connect,
    h1_config,
    h1_listener,
    read_head,
    websocket_echo,
)

WS_LIMITS = """
[listeners.websocket]
idle_timeout_seconds = 2
ping_rate_limit_per_window = 5
ping_rate_limit_window_seconds = 10
max_message_size_bytes = 65536
read_frame_timeout_seconds = 1
"""


@dataclass
class Rig:
    gw: Gateway
    port: int


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with websocket_echo() as echo:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [echo], extra=WS_LIMITS))
        with gateway(cfg, admin_port=admin) as gw:
            yield Rig(gw, port)


def open_ws(port: int, path: str = "/echo", **kw: object) -> ClientConnection:
    """A client that offers no extension (see the permessage-deflate test
    for the default offer)."""
    options: dict[str, object] = {
        "open_timeout": 5,
        "ping_interval": None,  # our pings only
        "max_size": None,
        "compression": None,
        **kw,
    }
    return ws_connect(f"ws://127.0.0.1:{port}{path}", **options)  # type: ignore[arg-type]


def close_code(ws: ClientConnection, timeout: float = 5) -> int | None:
    """Wait for the gateway to close the WebSocket; the code it sent."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as info:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    rcvd = info.value.rcvd
    return rcvd.code if rcvd is not None else None


# -- relaying ------------------------------------------------------------------------------


def test_text_and_binary_messages_are_echoed(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        ws.send("hello through the gateway")
        assert ws.recv(timeout=5) == "hello through the gateway"
        blob = os.urandom(40_000)
        ws.send(blob)
        assert ws.recv(timeout=5) == blob
        ws.send("é ☃ 💡")
        assert ws.recv(timeout=5) == "é ☃ 💡"


def test_many_messages_keep_their_order(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        for i in range(200):
            ws.send(f"m{i}")
        assert [ws.recv(timeout=5) for _ in range(200)] == [f"m{i}" for i in range(200)]


def test_fragmented_message_is_reassembled_by_the_far_end(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        ws.send(iter([b"frag-", b"ment-", b"ed"]))
        assert ws.recv(timeout=5) == b"frag-ment-ed"


def test_pings_within_the_limit_are_answered(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        for _ in range(3):
            assert ws.ping().wait(5)
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"


def test_client_close_handshake_completes_through_the_gateway(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        ws.send("bye")
        assert ws.recv(timeout=5) == "bye"
        ws.close(1000, "done")
        assert ws.close_code == 1000  # the backend's close frame came back


def test_permessage_deflate_offered_by_a_default_client_works(rig: Rig) -> None:
    """Browsers and ``websockets`` offer ``permessage-deflate`` (RFC 7692);
    whatever the gateway does with the offer, messages must get through."""
    with open_ws(rig.port, compression="deflate") as ws:
        ws.send("compressible " * 100)
        assert ws.recv(timeout=5) == "compressible " * 100


def test_boot_log_does_not_call_the_websocket_feature_inactive(rig: Rig) -> None:
    """The supervisor warns about configured features "not active yet";
    WebSocket is served, so it must not be in that warning."""
    inactive = [
        line
        for line in rig.gw.logs().splitlines()
        if "not active yet" in line and '"feature":"websocket"' in line
    ]
    assert inactive == []


def test_tunnels_are_counted(rig: Rig) -> None:
    before = rig.gw.metric("websocket_connections_total")
    with open_ws(rig.port) as ws:
        ws.send("x")
        ws.recv(timeout=5)
    assert rig.gw.metric("websocket_connections_total") == before + 1


# -- the handshake ---------------------------------------------------------------------------


def test_backend_refusing_the_upgrade_has_its_answer_forwarded(rig: Rig) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_ws(rig.port, "/refuse")
    assert info.value.response.status_code == 403
    assert b"upgrade refused by the backend" in info.value.response.body


def test_backend_down_is_502() -> None:
    admin, port, dead = free_port(), free_port(), free_port()
    cfg = h1_config(admin, h1_listener(port, [dead], extra=WS_LIMITS))
    with gateway(cfg, admin_port=admin), pytest.raises(InvalidStatus) as info:
        open_ws(port)
    assert info.value.response.status_code == 502


HANDSHAKE = (
    b"GET /chat HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def test_client_gets_101_only_after_the_backend_said_101() -> None:
    release, got_head = threading.Event(), threading.Event()
    heads: list[bytes] = []

    def slow_upgrade(conn: object, backend: ScriptedBackend) -> None:
        head, _ = read_head(conn)  # type: ignore[arg-type]
        heads.append(head)
        got_head.set()
        release.wait(10)
        conn.sendall(  # type: ignore[attr-defined]
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            b"\x81\x05hello"  # an unmasked text frame right behind the 101
        )
        conn.recv(1)  # type: ignore[attr-defined]

    with ScriptedBackend(slow_upgrade) as backend:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [backend.port], extra=WS_LIMITS))
        with gateway(cfg, admin_port=admin), connect(port) as s:
            s.sendall(HANDSHAKE)
            assert got_head.wait(5), "the upgrade never reached the backend"
            s.settimeout(0.7)
            with pytest.raises(TimeoutError):
                s.recv(1)  # nothing while the backend has not answered
            release.set()
            s.settimeout(5)
            # The frame may arrive in the same read as the 101: split by hand.
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                assert chunk, "closed before the 101"
                data += chunk
            head, _, frame = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            assert b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
            while len(frame) < 7:
                frame += s.recv(7 - len(frame))
            assert frame[:7] == b"\x81\x05hello"
    head = heads[0].lower()
    assert b"upgrade: websocket" in head
    assert b"sec-websocket-key: dghlihnhbxbszsbub25jzq==" in head


@pytest.mark.parametrize(
    "block",
    [
        pytest.param("", id="no-block"),
        pytest.param("\n[listeners.websocket]\nenabled = false\n", id="disabled"),
    ],
)
def test_upgrade_is_not_tunnelled_when_websocket_is_off(block: str) -> None:
    """No ``[listeners.websocket]`` block (or ``enabled = false``): upgrades
    are not proxied (the request goes on as plain HTTP, or is refused)."""
    with websocket_echo() as echo:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [echo], extra=block))
        with gateway(cfg, admin_port=admin), pytest.raises(InvalidStatus) as info:
            open_ws(port)
    assert info.value.response.status_code != 101


# -- the gateway's limits ----------------------------------------------------------------------


def test_ping_flood_is_closed_with_1008(rig: Rig) -> None:
    before = rig.gw.metric("websocket_closed_by_gateway_total", reason="ping_flood")
    with open_ws(rig.port) as ws:
        for _ in range(10):
            try:
                ws.ping()
            except ConnectionClosed:
                break
        assert close_code(ws) == 1008
    assert rig.gw.metric("websocket_closed_by_gateway_total", reason="ping_flood") == before + 1


def test_idle_tunnel_is_closed_with_1001(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        ws.send("one")
        assert ws.recv(timeout=5) == "one"
        start = time.monotonic()
        assert close_code(ws, timeout=6) == 1001
        assert 1.5 < time.monotonic() - start < 5


def test_traffic_keeps_the_tunnel_open_past_the_idle_timeout(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        for i in range(8):  # 4 s of traffic every 0.5 s, idle timeout 2 s
            time.sleep(0.5)
            ws.send(f"tick {i}")
            assert ws.recv(timeout=5) == f"tick {i}"


def test_message_over_max_message_size_is_closed_with_1009(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        ws.send(b"a" * 65536)  # at the limit: relayed
        assert len(ws.recv(timeout=5)) == 65536
        ws.send(b"b" * 65537)
        assert close_code(ws) == 1009


def test_fragmented_message_over_max_message_size_is_closed_with_1009(rig: Rig) -> None:
    with open_ws(rig.port) as ws:
        ws.send(iter([b"c" * 40_000, b"c" * 40_000]))
        assert close_code(ws) == 1009


def test_frame_left_unfinished_is_closed_with_1008() -> None:
    """A frame header announcing 100 bytes, then silence past
    ``read_frame_timeout_seconds``."""
    with websocket_echo() as echo:
        admin, port = free_port(), free_port()
        cfg = h1_config(admin, h1_listener(port, [echo], extra=WS_LIMITS))
        with gateway(cfg, admin_port=admin), connect(port) as s:
            key = base64.b64encode(os.urandom(16))
            s.sendall(HANDSHAKE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", key))
            assert ResponseReader().read(s).status == 101
            s.sendall(b"\x82\xe4" + b"\x00\x00\x00\x00" + b"x" * 10)  # masked, 100 bytes
            s.settimeout(5)
            data = b""
            while len(data) < 4:
                chunk = s.recv(64)
                if not chunk:
                    break
                data += chunk
    assert data[:1] == b"\x88", data  # a close frame
    assert int.from_bytes(data[2:4], "big") == 1008
