"""Listening sockets: one SO_REUSEPORT socket per worker and listener.

The supervisor binds every socket before any worker starts, so a port in use
is found (and named) before anything serves, and the gateway never boots
half up. Workers inherit the file descriptors; a restarted worker gets the
same descriptors back, so connections queued meanwhile are not lost.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass

#: the original's socket buffer size for listeners and backends
SOCKET_BUFFER = 262_144


class BindError(Exception):
    """A listener could not be bound; the message names it."""


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """What to bind: a name for errors, host, port, and UDP or TCP."""

    name: str
    host: str
    port: int
    udp: bool = False
    backlog: int = 50_000


def family_of(host: str) -> socket.AddressFamily:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return socket.AF_INET
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this host"
    return exc.strerror or str(exc)


def bind_socket(spec: ListenSpec) -> socket.socket:
    """Create, configure and bind (and for TCP, listen on) one socket."""
    fam = family_of(spec.host)
    kind = socket.SOCK_DGRAM if spec.udp else socket.SOCK_STREAM
    sock = socket.socket(fam, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if not spec.udp:
            # Linux hands these to every accepted socket.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.bind((spec.host, spec.port))
        if not spec.udp:
            sock.listen(spec.backlog)
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), True)
    except OSError as exc:
        sock.close()
        proto = "udp" if spec.udp else "tcp"
        raise BindError(
            f"listener {spec.name!r} cannot bind {proto} {spec.host}:{spec.port}: {_describe(exc)}"
        ) from exc
    return sock


def bind_all(specs: list[ListenSpec], copies: int) -> list[list[socket.socket]]:
    """Bind ``copies`` sockets for every spec, all or nothing.

    Returns ``result[copy][spec_index]``. On any failure every socket bound so
    far is closed and one :class:`BindError` lists every listener that failed.
    """
    result: list[list[socket.socket]] = []
    errors: list[str] = []
    opened: list[socket.socket] = []
    for copy in range(copies):
        row: list[socket.socket] = []
        for spec in specs:
            try:
                sock = bind_socket(spec)
            except BindError as exc:
                if copy == 0 or str(exc) not in errors:
                    errors.append(str(exc))
                continue
            opened.append(sock)
            row.append(sock)
        result.append(row)
        if errors:
            break
    if errors:
        for sock in opened:
            sock.close()
        raise BindError("; ".join(errors))
    return result


def configure_upstream(sock: socket.socket) -> None:
    """Socket options for a backend connection (the original's: nodelay, keepalive)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:
        pass
