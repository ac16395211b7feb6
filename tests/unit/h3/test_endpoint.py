"""The QUIC endpoint's datagram plumbing: routing by connection ID and
sending with UDP GSO (runs of equal-size datagrams in one ``sendmsg``)."""

from __future__ import annotations

import errno
import sys
from typing import Any

import pytest
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from expressgateway.io.quic import UDP_SEGMENT, QuicEndpoint

PEER = ("127.0.0.1", 4433)


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class FakeSock:
    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple[bytes, int, Any]] = []
        self.error = error

    def sendmsg(self, buffers: list[bytes], ancdata: Any, flags: int, addr: Any) -> int:
        if self.error is not None:
            raise self.error
        ((_level, kind, size),) = ancdata
        assert kind == UDP_SEGMENT
        data = b"".join(buffers)
        self.calls.append((data, int.from_bytes(size, sys.byteorder), addr))
        return len(data)


class Conn:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)

    def transmit(self) -> None: ...

    def drain(self) -> None: ...

    def abort(self) -> None: ...


def endpoint(sock: Any = None) -> tuple[QuicEndpoint, FakeTransport]:
    conf = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    ep = QuicEndpoint(
        "q",
        conf,
        lambda *a: Conn(),
        b"s" * 32,
        max_connections=10,
        per_ip_cap=10,
        early_data=False,
    )
    ep.sock = sock
    tr = FakeTransport()
    ep.transport = tr  # type: ignore[assignment]
    return ep, tr


def test_a_run_of_equal_datagrams_and_a_shorter_last_leave_in_one_gso_send() -> None:
    sock = FakeSock()
    ep, tr = endpoint(sock)
    ep.send_datagrams([(b"a" * 1350, PEER), (b"b" * 1350, PEER), (b"c" * 700, PEER)])
    assert sock.calls == [(b"a" * 1350 + b"b" * 1350 + b"c" * 700, 1350, PEER)]
    assert tr.sent == []


def test_a_longer_datagram_starts_a_new_run() -> None:
    sock = FakeSock()
    ep, tr = endpoint(sock)
    ep.send_datagrams([(b"a" * 700, PEER), (b"b" * 1350, PEER), (b"c" * 1350, PEER)])
    assert tr.sent == [(b"a" * 700, PEER)]
    assert sock.calls == [(b"b" * 1350 + b"c" * 1350, 1350, PEER)]


def test_one_datagram_is_a_plain_sendto() -> None:
    sock = FakeSock()
    ep, tr = endpoint(sock)
    ep.send_datagrams([(b"a" * 100, PEER)])
    assert tr.sent == [(b"a" * 100, PEER)] and sock.calls == []


def test_a_kernel_without_gso_falls_back_to_one_send_per_datagram_for_good() -> None:
    ep, tr = endpoint(FakeSock(OSError(errno.EIO, "no GSO")))
    batch = [(b"a" * 1350, PEER), (b"b" * 1350, PEER)]
    ep.send_datagrams(batch)
    assert tr.sent == batch
    assert ep.sock is None  # not tried again


@pytest.mark.parametrize("error", [BlockingIOError(), OSError(errno.EHOSTUNREACH, "x")])
def test_a_failed_gso_send_hands_the_datagrams_to_the_transport(error: OSError) -> None:
    sock = FakeSock(error)
    ep, tr = endpoint(sock)
    batch = [(b"a" * 1350, PEER), (b"b" * 1350, PEER)]
    ep.send_datagrams(batch)
    assert tr.sent == batch
    assert ep.sock is sock  # GSO itself works: keep it


def test_a_short_header_datagram_is_routed_by_its_connection_id() -> None:
    ep, _ = endpoint()
    conn = Conn()
    cid = b"\x01" * ep.cid_length
    ep.add_cid(cid, conn)  # type: ignore[arg-type]
    datagram = b"\x40" + cid + b"payload" * 10
    ep.datagram_received(datagram, PEER)
    assert conn.got == [datagram]
    ep.datagram_received(b"\x40" + b"\x02" * ep.cid_length + b"payload" * 10, PEER)
    assert conn.got == [datagram]  # an unknown connection: dropped
