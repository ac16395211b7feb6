"""Value checks for string settings: addresses, names, tokens.

A :class:`Check` turns a written string into the stored value or raises
:class:`CheckFailed` with a reason (and maybe a suggestion). Checks are pure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BIND_ADDR",
    "HEX64",
    "HOSTNAME",
    "HOST_PORT",
    "LISTENER_NAME",
    "LISTEN_ADDR",
    "NONEMPTY",
    "SOCKET_ADDR",
    "Check",
    "CheckFailed",
    "HostPort",
    "is_loopback",
    "split_host_port",
]


class CheckFailed(ValueError):
    """A value failed a check; ``reason`` says why, ``suggestion`` how to fix it."""

    def __init__(self, reason: str, suggestion: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.suggestion = suggestion


@dataclass(frozen=True, slots=True)
class Check:
    """A named string check; ``label`` appears in the generated docs."""

    label: str
    fn: Callable[[str], str]

    def __call__(self, value: str) -> str:
        return self.fn(value)


@dataclass(frozen=True, slots=True)
class HostPort:
    """A parsed ``host:port``; ``host`` has no brackets, ``is_ip`` tells literals apart."""

    host: str
    port: int
    is_ip: bool

    def key(self) -> tuple[str, int]:
        """A normalised (host, port) for duplicate detection."""
        if self.is_ip:
            return (str(ipaddress.ip_address(self.host.split("%", 1)[0])), self.port)
        return (self.host.lower().rstrip("."), self.port)


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")
_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._:/\[\]-]{1,128}$")


def split_host_port(address: str, *, min_port: int = 1, ip_only: bool = False) -> HostPort:
    """Parse ``host:port``; IPv6 literals must be bracketed (``[::1]:8080``).

    Raises :class:`CheckFailed` with an operator-facing reason.
    """
    if not address:
        raise CheckFailed("must not be empty", "write host:port, e.g. 127.0.0.1:8080")
    if address.startswith("["):
        close = address.find("]")
        if close < 0:
            raise CheckFailed("unclosed '[' in IPv6 address", "write [::1]:8080")
        host, rest = address[1:close], address[close + 1 :]
        if not rest.startswith(":"):
            raise CheckFailed("missing port after ']'", f"write [{host}]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise CheckFailed(f"'{host}' is not an IPv6 address") from None
        is_ip = True
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise CheckFailed("missing port", f"write {address}:PORT")
        if ":" in host:
            raise CheckFailed("IPv6 address must be in brackets", f"write [{host}]:{port_text}")
        is_ip = _is_ip(host)
        if not is_ip:
            if ip_only:
                raise CheckFailed(
                    f"'{host}' is not an IP address (host names are not allowed here)"
                )
            if not _HOSTNAME_RE.match(host):
                raise CheckFailed(f"'{host}' is not a valid host name or IP address")
    if not port_text.isdigit() or not port_text.isascii():
        raise CheckFailed(f"port '{port_text}' is not a number")
    port = int(port_text)
    if not min_port <= port <= 65535:
        raise CheckFailed(f"port {port} out of range (allowed {min_port}..=65535)")
    return HostPort(host=host, port=port, is_ip=is_ip)


def is_loopback(host: str) -> bool:
    """True for loopback IP literals (127.0.0.0/8, ::1) and ``localhost``."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _nonempty(value: str) -> str:
    if not value.strip():
        raise CheckFailed("must not be empty")
    return value


def _host_port(value: str) -> str:
    split_host_port(value)
    return value


def _listen_addr(value: str) -> str:
    split_host_port(value, min_port=0)
    return value


def _socket_addr(value: str) -> str:
    split_host_port(value, ip_only=True)
    return value


def _bind_addr(value: str) -> str:
    split_host_port(value, ip_only=True, min_port=0)
    return value


def _hostname(value: str) -> str:
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if _is_ip(host) or _HOSTNAME_RE.match(host):
        return value
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise CheckFailed(f"'{value}' is not a valid host name") from None
    return value


def _hex64(value: str) -> str:
    if not _HEX64_RE.match(value):
        raise CheckFailed(
            f"must be exactly 64 hex characters (got {len(value)} characters)",
            "write the SHA-256 of the bearer token: printf %s TOKEN | sha256sum",
        )
    return value.lower()


def _listener_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise CheckFailed(
            "must be 1..=128 characters from A-Z a-z 0-9 . _ - : / [ ]",
            "it is used as a metric label",
        )
    return value


#: Any non-blank string.
NONEMPTY = Check("non-empty", _nonempty)
#: ``host:port`` where host is a name or IP literal (IPv6 bracketed); port 1..=65535.
HOST_PORT = Check("host:port", _host_port)
#: ``host:port`` to listen on; port 0 asks the kernel for a free port.
LISTEN_ADDR = Check("host:port, port 0 = any free port", _listen_addr)
#: ``ip:port`` (no host names; IPv6 bracketed); port 1..=65535.
SOCKET_ADDR = Check("ip:port", _socket_addr)
#: ``ip:port`` to bind; port 0 asks the kernel for a free port.
BIND_ADDR = Check("ip:port, port 0 = any free port", _bind_addr)
#: A DNS host name or an IP literal.
HOSTNAME = Check("host name", _hostname)
#: 64 hex characters (a SHA-256 digest); stored lower-case.
HEX64 = Check("64 hex characters", _hex64)
#: A listener name: also a metric label, so a restricted alphabet.
LISTENER_NAME = Check("name", _listener_name)
