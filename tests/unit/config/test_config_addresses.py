"""Addresses: host:port parsing, IPv6 brackets, names."""

from __future__ import annotations

import pytest

from expressgateway.config import parse_config
from tests.unit.config.helpers import H1, problems


def _listener(address: str, extra: str = "") -> str:
    return f'[[listeners]]\naddress = "{address}"\nprotocol = "tcp"\n{extra}'


def test_ipv4_listener_address_is_split() -> None:
    (lst,) = parse_config(H1).listeners
    assert (lst.address, lst.host, lst.port) == ("127.0.0.1:8080", "127.0.0.1", 8080)


def test_bracketed_ipv6_listener_address_is_split_without_brackets() -> None:
    (lst,) = parse_config(_listener("[::1]:8080")).listeners
    assert (lst.address, lst.host, lst.port) == ("[::1]:8080", "::1", 8080)


def test_ipv6_wildcard_and_backend_are_parsed() -> None:
    text = _listener("[::]:443", '[[listeners.backends]]\naddress = "[2001:db8::5]:3000"\n')
    (lst,) = parse_config(text).listeners
    assert lst.host == "::"
    assert (lst.backends[0].host, lst.backends[0].port) == ("2001:db8::5", 3000)


def test_unbracketed_ipv6_is_rejected_with_the_bracketed_form() -> None:
    assert problems(_listener("::1:8080")) == [
        'listeners[0].address = "::1:8080": IPv6 address must be in brackets (write [::1]:8080)'
    ]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "missing port (write 127.0.0.1:PORT)"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:65536", "port 65536 out of range (allowed 0..=65535)"),
        ("[::1", "unclosed '[' in IPv6 address (write [::1]:8080)"),
        ("[::1]8080", "missing port after ']' (write [::1]:PORT)"),
        ("[1.2.3.4]:80", "'1.2.3.4' is not an IPv6 address"),
        ("bad host!:80", "'bad host!' is not a valid host name or IP address"),
        ("", "must not be empty (write host:port, e.g. 127.0.0.1:8080)"),
    ],
)
def test_malformed_listener_address_is_explained(address: str, reason: str) -> None:
    assert problems(_listener(address)) == [f'listeners[0].address = "{address}": {reason}']


def test_listener_port_zero_asks_for_any_free_port() -> None:
    (lst,) = parse_config(_listener("127.0.0.1:0")).listeners
    assert lst.port == 0


def test_backend_port_zero_is_rejected() -> None:
    (line,) = problems(H1 + '[[listeners.backends]]\naddress = "127.0.0.1:0"\n')
    assert line.endswith("port 0 out of range (allowed 1..=65535)")


def test_backend_host_names_are_allowed() -> None:
    text = H1 + '[[listeners.backends]]\naddress = "app.internal:3001"\n'
    backend = parse_config(text).listeners[0].backends[1]
    assert (backend.host, backend.port) == ("app.internal", 3001)


def test_passthrough_backends_must_be_ip_literals() -> None:
    text = """
[passthrough]
bind_addr = "0.0.0.0:4433"
backends = ["127.0.0.1:4434", "backend.local:4433"]
retry_secret_path = "/nonexistent-dir/retry.key"
"""
    assert problems(text) == [
        'passthrough.backends[1] = "backend.local:4433": '
        "'backend.local' is not an IP address (host names are not allowed here)"
    ]


def test_raw_proxy_backend_addr_must_be_an_ip_literal() -> None:
    text = """
[[listeners]]
address = "127.0.0.1:443"
protocol = "quic"
[listeners.quic]
cert_path = "/nonexistent/c"
key_path = "/nonexistent/k"
retry_secret_path = "/nonexistent/r"
[listeners.quic.raw_proxy]
backend_addr = "origin:443"
sni = "origin"
"""
    assert any(
        line.startswith('listeners[0].quic.raw_proxy.backend_addr = "origin:443": ')
        for line in problems(text)
    )


def test_metrics_bind_accepts_bracketed_ipv6_loopback() -> None:
    cfg = parse_config(H1 + '[observability]\nmetrics_bind = "[::1]:9090"\n')
    assert cfg.observability.metrics_bind == "[::1]:9090"


# ------------------------------------------------------------------------ names


def test_listener_name_defaults_to_address() -> None:
    assert parse_config(H1).listeners[0].name == "127.0.0.1:8080"


def test_explicit_listener_name_is_kept() -> None:
    text = H1.replace('protocol = "h1"', 'protocol = "h1"\nname = "web"')
    assert parse_config(text).listeners[0].name == "web"


@pytest.mark.parametrize("name", ["", "has space", 'quote"d', "x" * 129, "é"])
def test_listener_name_alphabet_is_restricted(name: str) -> None:
    text = H1.replace('protocol = "h1"', f"protocol = \"h1\"\nname = '{name}'")
    (line,) = problems(text)
    assert "must be 1..=128 characters from" in line


def test_udp_listener_sharing_an_address_gets_a_distinct_default_name() -> None:
    text = """
[[listeners]]
address = "0.0.0.0:9000"
protocol = "tcp"
[[listeners]]
address = "0.0.0.0:9000"
protocol = "udp"
[[listeners]]
address = "0.0.0.0:9001"
protocol = "udp"
"""
    names = [lst.name for lst in parse_config(text).listeners]
    assert names == ["0.0.0.0:9000", "0.0.0.0:9000/udp", "0.0.0.0:9001"]
