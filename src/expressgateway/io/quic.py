"""The UDP side of a QUIC listener: one endpoint per worker socket.

Every datagram's public header is read (RFC 9000 §17, via aioquic's
``pull_quic_header``; the only place the gateway reads raw bytes) and
routed by Destination Connection ID to its connection. A datagram for no
connection must be a full-size Initial (>= 1200 bytes):

1. without a token it gets a stateless Retry (RFC 9000 §8.1.2) whose token
   binds the client's address and port, the original DCID and the Retry's
   own SCID under an HMAC with the listener's secret, valid 10 s;
2. with a token, the token is checked (constant time); a bad or stale one
   is dropped silently (a spoofer learns nothing);
3. then the caps: connections per worker and per client IP; over either
   the client gets CONNECTION_REFUSED.

SO_REUSEPORT spreads clients over workers by the kernel's 4-tuple hash, so
every datagram of a connection reaches the worker that owns it while the
client's address stays the same. A client that migrates (a new address or
port, e.g. NAT rebinding) may hash to another worker, which does not know
its connection IDs: its packets are dropped there and the client's
connection times out, then it reconnects (see docs/operations.md).

Sending: connections that have something to send register with the
endpoint (:meth:`QuicEndpoint.want_transmit`); one callback at the end of
the event-loop iteration builds every one's packets, so the datagrams of a
whole batch of reads leave together. A connection's consecutive datagrams of
one size (and a shorter last one) go out in one ``sendmsg`` with UDP GSO
(``UDP_SEGMENT``, Linux): one syscall and one trip down the stack instead
of one per datagram. Without GSO (another OS, or the kernel refuses it)
each datagram is its own ``sendto``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import logging
import os
import socket
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, cast

from aioquic._buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.tls import SessionTicket

from expressgateway.observability.metrics import REGISTRY

log = logging.getLogger("expressgateway.quic")

RETRY_TOKEN_LIFETIME = 10.0
_MIN_INITIAL = 1200
_MAC_LEN = 16
_TOKEN_HEAD = struct.Struct("!dB")
#: short header (RFC 9000 §17.3): the first bit clear, the DCID right after
_LONG_HEADER = 0x80

#: UDP generic segmentation offload (linux/udp.h); not in Python's socket module
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: datagrams per GSO send (the kernel takes up to 64, and 64 KiB in all)
GSO_MAX_SEGMENTS = 32
#: errors that say "no GSO here" (as opposed to a full buffer or a bad peer)
_NO_GSO = frozenset({errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP})

_CONNECTIONS = REGISTRY.counter(
    "quic_connections_total", "QUIC connections accepted (after Retry).", ("listener",)
)
_OPEN = REGISTRY.gauge("quic_connections_open", "QUIC connections open.", ("listener",))
_RETRIES = REGISTRY.counter(
    "quic_retries_total", "Stateless Retry packets sent to new clients.", ("listener",)
)
_DROPPED = REGISTRY.counter(
    "quic_datagrams_dropped_total",
    "Datagrams dropped before reaching a connection, by reason (bad_token, "
    "unparseable, short_initial, unknown_connection).",
    ("listener", "reason"),
)
_REFUSED = REGISTRY.counter(
    "quic_connections_refused_total",
    "New QUIC connections refused with CONNECTION_REFUSED, by reason (max_connections, "
    "per_ip_cap).",
    ("listener", "reason"),
)


class QuicConnectionShell(Protocol):
    """What the endpoint needs of a connection (the HTTP/3 front)."""

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None: ...

    def transmit(self) -> None: ...

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class RetryTokens:
    """Stateless Retry tokens: ``issued | len(odcid) | odcid | mac``."""

    def __init__(self, secret: bytes, lifetime: float = RETRY_TOKEN_LIFETIME) -> None:
        self.secret = secret
        self.lifetime = lifetime

    def _mac(self, addr: NetworkAddress, body: bytes, rscid: bytes) -> bytes:
        msg = b"%s|%d|" % (str(addr[0]).encode(), addr[1]) + body + rscid
        return hmac.new(self.secret, msg, hashlib.sha256).digest()[:_MAC_LEN]

    def mint(self, addr: NetworkAddress, odcid: bytes, rscid: bytes, now: float) -> bytes:
        body = _TOKEN_HEAD.pack(now, len(odcid)) + odcid
        return body + self._mac(addr, body, rscid)

    def check(self, addr: NetworkAddress, token: bytes, rscid: bytes, now: float) -> bytes | None:
        """The original DCID the token was minted for, or None."""
        if len(token) < _TOKEN_HEAD.size + _MAC_LEN:
            return None
        issued, n = _TOKEN_HEAD.unpack_from(token)
        body = token[: _TOKEN_HEAD.size + n]
        if len(token) != len(body) + _MAC_LEN:
            return None
        if not hmac.compare_digest(token[len(body) :], self._mac(addr, body, rscid)):
            return None
        if not 0 <= now - issued <= self.lifetime:
            return None
        return body[_TOKEN_HEAD.size :]


def load_retry_secret(path: str) -> bytes:
    """The listener's 32-byte Retry secret; minted with mode 0600 when absent."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            secret = f.read()
    else:
        # every worker must get the same secret: the first one mints it
        secret = os.urandom(32)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        log.info("minted a QUIC retry secret", extra={"path": path})
    if len(secret) < 32:
        raise ValueError(f"retry secret {path!r} holds {len(secret)} bytes; 32 are needed")
    return secret[:32]


class TicketStore:
    """TLS session tickets for resumption, each usable once: a replayed
    ClientHello finds no ticket and gets a full handshake without 0-RTT
    (RFC 8446 §8.1). Bounded; the oldest ticket goes first."""

    def __init__(self, cap: int = 10_000) -> None:
        self.cap = cap
        self.tickets: OrderedDict[bytes, SessionTicket] = OrderedDict()

    def add(self, ticket: SessionTicket) -> None:
        self.tickets[ticket.ticket] = ticket
        while len(self.tickets) > self.cap:
            self.tickets.popitem(last=False)

    def pop(self, label: bytes) -> SessionTicket | None:
        return self.tickets.pop(label, None)


def _close_initial(version: int, scid: bytes, dcid: bytes, error: int) -> bytes:
    """A server Initial that closes the connection with ``error``, keyed on
    the client's DCID (``scid`` here), before any state exists."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=scid, is_client=False, version=version)
    builder = QuicPacketBuilder(
        host_cid=scid,
        is_client=False,
        max_datagram_size=_MIN_INITIAL,
        peer_cid=dcid,
        version=version,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE, capacity=64)
    buf.push_uint_var(error)
    buf.push_uint_var(QuicFrameType.PADDING)
    buf.push_uint_var(0)
    datagrams, _ = builder.flush()
    return datagrams[0]


ConnectionFactory = Callable[["QuicEndpoint", NetworkAddress, dict[str, Any]], QuicConnectionShell]


class QuicEndpoint(asyncio.DatagramProtocol):
    """Routes datagrams to connections; Retry, token checks and caps."""

    def __init__(
        self,
        name: str,
        configuration: QuicConfiguration,
        factory: ConnectionFactory,
        secret: bytes,
        *,
        max_connections: int,
        per_ip_cap: int,
        early_data: bool,
        sock: socket.socket | None = None,
    ) -> None:
        self.name = name
        self.configuration = configuration
        self.factory = factory
        self.tokens = RetryTokens(secret)
        self.max_connections = max_connections
        self.per_ip_cap = per_ip_cap
        self.tickets = TicketStore() if early_data else None
        self.transport: asyncio.DatagramTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: the listening socket, for GSO sends (None: one sendto per datagram)
        self.sock = sock if sys.platform == "linux" else None
        #: connections with packets to build at the end of this iteration
        self.outbox: list[QuicConnectionShell] = []
        self.transmit_scheduled = False
        self.cid_length = configuration.connection_id_length
        #: connection id -> connection (several ids per connection)
        self.cids: dict[bytes, QuicConnectionShell] = {}
        self.connections: dict[QuicConnectionShell, str] = {}
        self.per_ip: dict[str, int] = {}
        self.accepting = True
        self._open = _OPEN.labels(name)
        self._accepted = _CONNECTIONS.labels(name)
        self._retries = _RETRIES.labels(name)

    # -- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:  # type: ignore[override]
        if data and not data[0] & _LONG_HEADER:
            # a short header: no version, no token, just the DCID
            conn = self.cids.get(data[1 : 1 + self.cid_length])
            if conn is not None:
                conn.datagram_received(data, addr)
                return
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            _DROPPED.labels(self.name, "unparseable").inc()
            return
        conn = self.cids.get(header.destination_cid)
        if conn is not None:
            conn.datagram_received(data, addr)
            return
        if header.packet_type != QuicPacketType.INITIAL:
            _DROPPED.labels(self.name, "unknown_connection").inc()
            return
        if len(data) < _MIN_INITIAL:
            _DROPPED.labels(self.name, "short_initial").inc()
            return
        if header.version not in self.configuration.supported_versions:
            self.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return
        if not self.accepting:
            return
        now = time.time()
        if not header.token:
            rscid = os.urandom(self.configuration.connection_id_length)
            self.sendto(
                encode_quic_retry(
                    version=header.version,
                    source_cid=rscid,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=self.tokens.mint(addr, header.destination_cid, rscid, now),
                ),
                addr,
            )
            self._retries.value += 1
            return
        odcid = self.tokens.check(addr, header.token, header.destination_cid, now)
        if odcid is None:
            _DROPPED.labels(self.name, "bad_token").inc()
            return
        ip = str(addr[0])
        reason = None
        if len(self.connections) >= self.max_connections:
            reason = "max_connections"
        elif self.per_ip.get(ip, 0) >= self.per_ip_cap:
            reason = "per_ip_cap"
        if reason is not None:
            _REFUSED.labels(self.name, reason).inc()
            self.sendto(
                _close_initial(
                    header.version,  # type: ignore[arg-type]
                    header.destination_cid,
                    header.source_cid,
                    QuicErrorCode.CONNECTION_REFUSED,
                ),
                addr,
            )
            return
        kwargs: dict[str, Any] = {
            "configuration": self.configuration,
            "original_destination_connection_id": odcid,
            "retry_source_connection_id": header.destination_cid,
        }
        if self.tickets is not None:
            kwargs["session_ticket_fetcher"] = self.tickets.pop
            kwargs["session_ticket_handler"] = self.tickets.add
        conn = self.factory(self, addr, kwargs)
        self.connections[conn] = ip
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        self._accepted.value += 1
        self._open.value += 1
        self.cids[header.destination_cid] = conn
        conn.datagram_received(data, addr)

    def sendto(self, data: bytes, addr: NetworkAddress) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    # -- sending ------------------------------------------------------------------------
    def want_transmit(self, conn: QuicConnectionShell) -> None:
        """``conn.transmit()`` at the end of this event-loop iteration."""
        self.outbox.append(conn)
        if not self.transmit_scheduled:
            self.transmit_scheduled = True
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self.loop.call_soon(self._transmit)

    def _transmit(self) -> None:
        self.transmit_scheduled = False
        outbox, self.outbox = self.outbox, []
        for conn in outbox:
            conn.transmit()

    def send_datagrams(self, datagrams: list[tuple[bytes, NetworkAddress]]) -> None:
        """Send one connection's datagrams, in order; runs of one size to one
        address go out as one GSO send."""
        n = len(datagrams)
        if n == 1 or self.sock is None:
            for data, addr in datagrams:
                self.sendto(data, addr)
            return
        i = 0
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            j = i + 1
            while j < n and j - i < GSO_MAX_SEGMENTS:
                more, to = datagrams[j]
                if len(more) > size or to != addr:
                    break
                j += 1
                if len(more) < size:
                    break  # a shorter datagram ends a GSO run
            if j - i == 1:
                self.sendto(data, addr)
            else:
                self._send_segments([d for d, _ in datagrams[i:j]], size, addr)
            i = j

    def _send_segments(self, segments: list[bytes], size: int, addr: NetworkAddress) -> None:
        sock = self.sock
        assert sock is not None
        try:
            sock.sendmsg(
                [b"".join(segments)],
                [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))],
                0,
                addr,
            )
            return
        except BlockingIOError:
            pass  # the socket buffer is full: the transport queues them
        except OSError as exc:
            if exc.errno in _NO_GSO:
                self.sock = None
                log.info(
                    "UDP GSO unavailable; one send per datagram",
                    extra={"listener": self.name, "error": str(exc)},
                )
        for data in segments:
            self.sendto(data, addr)

    # -- connection ids ------------------------------------------------------------------
    def add_cid(self, cid: bytes, conn: QuicConnectionShell) -> None:
        self.cids[cid] = conn

    def remove_cid(self, cid: bytes) -> None:
        self.cids.pop(cid, None)

    def closed(self, conn: QuicConnectionShell, cids: list[bytes]) -> None:
        """``conn`` is over: forget its ids and release its slots."""
        for cid in cids:
            if self.cids.get(cid) is conn:
                del self.cids[cid]
        ip = self.connections.pop(conn, None)
        if ip is None:
            return
        self._open.value -= 1
        left = self.per_ip.get(ip, 1) - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)

    # -- lifecycle ------------------------------------------------------------------------
    def stop_accepting(self) -> None:
        self.accepting = False

    def drain(self) -> None:
        """GOAWAY on every connection; they close once their streams finish."""
        self.accepting = False
        for conn in list(self.connections):
            conn.drain()

    def close(self) -> None:
        self.accepting = False
        for conn in list(self.connections):
            conn.abort()
        if self.transport is not None:
            self.transport.close()
