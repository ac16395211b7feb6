"""Lower-level HTTP/3 and QUIC clients for the defense tests, next to the
ordinary clients of :mod:`tests.support.h3` (which they reuse):

- :class:`RawH3Client`: an :class:`~tests.support.h3.H3Client` that sends
  any list of header fields as a request head, pseudo-headers included
  (duplicated, missing, unknown, out of order), to see how the gateway
  treats a malformed request on an otherwise healthy connection;
- :func:`first_initial` / :func:`packet_headers`: a client's first Initial
  datagram and the public headers of the packets in a datagram, to speak
  to the UDP endpoint packet by packet (Retry, tokens, short Initials);
- :class:`QuicProbe`: one client QUIC connection driven step by step from
  the test thread over its own UDP socket (aioquic's sans-IO core, no event
  loop), so a test controls when each datagram goes out: the transport
  close code of a refused connection, 0-RTT requests put on the wire before
  the handshake, session tickets.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic._buffer import Buffer
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    StreamReset,
)
from aioquic.quic.packet import QuicHeader, QuicPacketType, pull_quic_header
from aioquic.tls import SessionTicket

from tests.support.gateway import free_port
from tests.support.h3 import H3Client, H3Response, H3Stream, _Exchange

Fields = list[tuple[bytes, bytes]]
#: the gateway's connection ids are 8 bytes (aioquic's default)
HOST_CID_LENGTH = 8


# -- any request head on a healthy connection ------------------------------------------------


def _qpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An integer with an N-bit prefix (RFC 7541 §5.1, used by QPACK)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_section(fields: Fields) -> bytes:
    """A QPACK field section with every field a literal with a literal name
    (RFC 9204 §4.5.6), no Huffman and no dynamic table: the fields go on the
    wire exactly as given, whatever their names, order or size."""
    out = bytearray(b"\x00\x00")  # Required Insert Count 0, Delta Base 0
    for name, value in fields:
        out += _qpack_int(len(name), 3, 0x20) + name
        out += _qpack_int(len(value), 7, 0x00) + value
    return bytes(out)


def _frame(kind: int, payload: bytes) -> bytes:
    return encode_uint_var(kind) + encode_uint_var(len(payload)) + payload


def headers_frame(fields: Fields) -> bytes:
    return _frame(0x01, field_section(fields))


def data_frame(data: bytes) -> bytes:
    return _frame(0x00, data)


class RawH3Client(H3Client):
    """:class:`H3Client` plus :meth:`open_fields`: the request head is sent
    exactly as given (see :func:`field_section`)."""

    def open_fields(self, fields: Fields, *, body: bytes = b"") -> H3Stream:
        if self.connect_error is not None:
            return H3Stream(self, -1, H3Response(error=self.connect_error))

        async def send() -> int:
            proto = self._proto
            assert proto is not None
            quic = proto._quic
            sid = quic.get_next_available_stream_id()
            proto.exchanges[sid] = _Exchange()
            quic.send_stream_data(sid, headers_frame(fields), end_stream=not body)
            if body:
                quic.send_stream_data(sid, data_frame(body), end_stream=True)
            proto.transmit()
            return sid

        return H3Stream(self, self._run(send(), self.timeout), None)

    def request_fields(self, fields: Fields, *, timeout: float | None = None) -> H3Response:
        return self.open_fields(fields).finish(timeout)

    def head_for(self, method: str, path: str) -> Fields:
        """A well-formed request head for this connection."""
        return [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
        ]


# -- packets ----------------------------------------------------------------------------------


def client_configuration(
    ca: str | None, server_name: str = "localhost", ticket: SessionTicket | None = None
) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=server_name,
        verify_mode=ssl.CERT_REQUIRED if ca else ssl.CERT_NONE,
        session_ticket=ticket,
        idle_timeout=30.0,
    )
    if ca:
        config.load_verify_locations(ca)
    return config


def first_initial(port: int) -> tuple[QuicConnection, bytes]:
    """A new client connection to 127.0.0.1:``port`` and its first datagram
    (one Initial packet carrying the ClientHello, padded to 1200 bytes)."""
    quic = QuicConnection(configuration=client_configuration(None))
    quic.connect(("127.0.0.1", port), now=time.monotonic())
    datagrams = quic.datagrams_to_send(now=time.monotonic())
    assert len(datagrams) == 1, datagrams
    return quic, datagrams[0][0]


def packet_headers(datagram: bytes) -> list[QuicHeader]:
    """The public headers of the packets coalesced in ``datagram`` (stops
    at a short-header packet, a Retry or Version Negotiation, or padding)."""
    out: list[QuicHeader] = []
    buf = Buffer(data=datagram)
    while not buf.eof():
        start = buf.tell()
        header = pull_quic_header(buf, host_cid_length=HOST_CID_LENGTH)
        out.append(header)
        if header.packet_type in (
            QuicPacketType.RETRY,
            QuicPacketType.VERSION_NEGOTIATION,
            QuicPacketType.ONE_RTT,
        ):
            break
        end = start + header.packet_length
        if not any(datagram[end:]):  # only padding left
            break
        buf.seek(end)
    return out


def udp_socket(timeout: float = 1.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(timeout)
    return sock


def receive(sock: socket.socket, timeout: float) -> bytes | None:
    """The next datagram on ``sock``, or None after ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        data, _ = sock.recvfrom(65536)
    except TimeoutError:
        return None
    return data


# -- a connection driven step by step ---------------------------------------------------------


@dataclass
class ProbeExchange:
    status: int | None = None
    body: bytes = b""
    ended: bool = False
    reset_code: int | None = None

    @property
    def over(self) -> bool:
        return self.ended or self.reset_code is not None


@dataclass
class ProbeState:
    handshake: HandshakeCompleted | None = None
    terminated: ConnectionTerminated | None = None
    tickets: list[SessionTicket] = field(default_factory=list)
    #: packet types of every datagram sent, in order
    sent: list[list[QuicPacketType]] = field(default_factory=list)


class QuicProbe:
    """One client connection to 127.0.0.1:``port``, driven by :meth:`send`
    and :meth:`pump` from the calling thread. ``ticket``: resume with this
    session ticket (0-RTT when the ticket allows it)."""

    def __init__(
        self,
        port: int,
        *,
        ca: str,
        server_name: str = "localhost",
        ticket: SessionTicket | None = None,
    ) -> None:
        self.addr = ("127.0.0.1", port)
        self.state = ProbeState()
        self.quic = QuicConnection(
            configuration=client_configuration(ca, server_name, ticket),
            session_ticket_handler=self.state.tickets.append,
        )
        self.h3 = H3Connection(self.quic)
        self.sock = udp_socket()
        self.exchanges: dict[int, ProbeExchange] = {}
        self.authority = f"{server_name}:{port}"

    def __enter__(self) -> QuicProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.state.terminated is None:
            self.quic.close()
            self.send()
        self.sock.close()

    def connect(self) -> None:
        self.quic.connect(self.addr, now=time.monotonic())
        self.send()

    def send(self) -> None:
        for data, addr in self.quic.datagrams_to_send(now=time.monotonic()):
            self.state.sent.append([h.packet_type for h in packet_headers(data)])
            self.sock.sendto(data, addr)

    def request(self, method: str, path: str, body: bytes = b"") -> int:
        """Queue a request (sent with the next :meth:`send`); its stream id."""
        sid = self.quic.get_next_available_stream_id()
        self.exchanges[sid] = ProbeExchange()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
        ]
        if body:
            head.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(sid, head, end_stream=not body)
        if body:
            self.h3.send_data(sid, body, end_stream=True)
        return sid

    def receive_one(self, timeout: float) -> bytes | None:
        """Read one datagram (None after ``timeout``) without handing it to
        the connection."""
        return receive(self.sock, timeout)

    def feed(self, data: bytes) -> None:
        self.quic.receive_datagram(data, self.addr, now=time.monotonic())
        self._events()

    def pump(self, done: Callable[[ProbeState], bool], timeout: float) -> bool:
        """Exchange datagrams (and run timers) until ``done(state)`` or the
        connection ends or ``timeout`` passes; whether ``done`` held."""
        deadline = time.monotonic() + timeout
        while True:
            self.send()
            if done(self.state):
                return True
            if self.state.terminated is not None:
                return False
            now = time.monotonic()
            if now >= deadline:
                return False
            wait = deadline - now
            timer = self.quic.get_timer()
            if timer is not None:
                wait = max(0.0, min(wait, timer - now))
            data = receive(self.sock, max(wait, 0.001))
            if data is not None:
                self.feed(data)
            timer = self.quic.get_timer()
            if timer is not None and timer <= time.monotonic():
                self.quic.handle_timer(now=time.monotonic())
                self._events()

    def _events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.state.handshake = event
            elif isinstance(event, ConnectionTerminated):
                self.state.terminated = event
            elif isinstance(event, StreamReset) and event.stream_id in self.exchanges:
                self.exchanges[event.stream_id].reset_code = event.error_code
            for h3_event in self.h3.handle_event(event):
                ex = self.exchanges.get(getattr(h3_event, "stream_id", -1))
                if ex is None:
                    continue
                if isinstance(h3_event, HeadersReceived) and ex.status is None:
                    ex.status = int(dict(h3_event.headers)[b":status"])
                elif isinstance(h3_event, DataReceived):
                    ex.body += h3_event.data
                if isinstance(h3_event, HeadersReceived | DataReceived) and h3_event.stream_ended:
                    ex.ended = True

    def handshake(self, timeout: float = 5.0) -> bool:
        self.connect()
        return self.pump(lambda s: s.handshake is not None, timeout)

    def finish(self, timeout: float = 5.0) -> bool:
        """Pump until every queued request is over."""
        return self.pump(lambda _s: all(ex.over for ex in self.exchanges.values()), timeout)


# -- config ------------------------------------------------------------------------------------


def quic_listener(
    port: int,
    backends: list[int],
    tls_files: dict[str, str],
    *,
    name: str = "h3",
    keys: str = "",
    quic: str = "",
    http: str = "",
    extra: str = "",
    backend_protocol: str = "h1",
    backend_extra: str = "",
) -> str:
    """A ``quic`` listener on UDP 127.0.0.1:``port`` (certificate from the
    ``tls_files`` fixture, Retry secret minted beside it) with ``backends``
    (ports on 127.0.0.1). ``keys``: more listener keys; ``quic`` /
    ``http``: more ``[listeners.quic]`` / ``[listeners.http]`` lines;
    ``extra``: more sub-tables (``[listeners.grpc]``...)."""
    text = f"""
[[listeners]]
name = "{name}"
address = "127.0.0.1:{port}"
protocol = "quic"
{keys}

[listeners.quic]
cert_path = "{tls_files["cert"]}"
key_path = "{tls_files["key"]}"
retry_secret_path = "{tls_files["dir"]}/retry-{name}-{port}.key"
{quic}
"""
    if http:
        text += f"\n[listeners.http]\n{http}\n"
    text += extra
    for b in backends:
        text += (
            f'\n[[listeners.backends]]\naddress = "127.0.0.1:{b}"\n'
            f'protocol = "{backend_protocol}"\n{backend_extra}\n'
        )
    return text


def h3_config(admin_port: int, *listeners: str, runtime: str = "", drain_ms: int = 1000) -> str:
    """A whole config: one worker, no readiness settle, ``drain_ms`` to drain."""
    return f"""
[runtime]
workers = 1
readiness_settle_ms = 0
drain_timeout_ms = {drain_ms}
{runtime}

[observability]
metrics_bind = "127.0.0.1:{admin_port}"
{"".join(listeners)}
"""


def free_port_pair() -> int:
    """A port number free on 127.0.0.1 for both TCP and UDP (an ``h1s``
    listener and a ``quic`` listener side by side)."""
    return free_port()


def connection_error(client: H3Client, timeout: float = 3.0) -> str | None:
    """Wait (up to ``timeout``) until ``client``'s connection ended; how it
    ended (``"connection closed: error 0x..."``), or None if still open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proto = client._proto
        if proto is None or proto.error is not None:
            return proto.error if proto is not None else client.connect_error
        time.sleep(0.02)
    return None
