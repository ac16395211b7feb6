"""core.headers: hop-by-hop rules, validators, authority, forwarding."""

import pytest

from expressgateway.core.headers import (
    FORBIDDEN_TRAILERS,
    HOP_BY_HOP,
    append_forwarded,
    connection_tokens,
    split_authority,
    strip_hop_by_hop,
    te_allows_trailers,
    valid_authority,
    valid_header_name,
    valid_header_value,
)


@pytest.mark.parametrize(
    "value",
    [
        b"example.com",
        b"example.com:8080",
        b"EXAMPLE.com",
        b"127.0.0.1",
        b"127.0.0.1:1",
        b"[::1]",
        b"[::1]:443",
        b"[2001:db8::ff00:42:8329]:65535",
        b"xn--bcher-kva.example",
        b"a-b_c~d.e",
        b"%41bc",
        b"localhost:0",
    ],
)
def test_valid_authority_accepts_rfc3986_hosts(value: bytes) -> None:
    assert valid_authority(value)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b":80",
        b"a,b",
        b"example.com, evil.com",
        b"user@example.com",
        b"user:pw@example.com",
        b"exa mple.com",
        b"example.com:",
        b"example.com:65536",
        b"example.com:123456",
        b"example.com:8o",
        b"[::1",
        b"[::1]x",
        b"[not-ip]",
        b"[fe80::1%25eth0]",
        b"[v1.fe]",
        b"::1",
        b"a/b",
        b"a?b",
        b"a#b",
        b"a\\b",
        b"exa\x00mple",
        b"%4",
        b'ex"ample',
    ],
)
def test_valid_authority_rejects_malformed_hosts(value: bytes) -> None:
    assert not valid_authority(value)


def test_valid_authority_cache_gives_the_same_answer_twice() -> None:
    assert valid_authority(b"cache.example") and valid_authority(b"cache.example")
    assert not valid_authority(b"ca,che") and not valid_authority(b"ca,che")


def test_split_authority_handles_ports_and_ipv6() -> None:
    assert split_authority(b"example.com") == (b"example.com", None)
    assert split_authority(b"example.com:81") == (b"example.com", 81)
    assert split_authority(b"[::1]:8443") == (b"::1", 8443)
    assert split_authority(b"[::1]") == (b"::1", None)


def test_connection_tokens_are_lowercased_trimmed_and_skip_empties() -> None:
    assert connection_tokens(b" Keep-Alive ,, Upgrade,\tX-Foo ") == (
        b"keep-alive",
        b"upgrade",
        b"x-foo",
    )
    assert connection_tokens(b"") == ()


def test_te_allows_trailers_finds_the_token() -> None:
    assert te_allows_trailers(b"trailers")
    assert te_allows_trailers(b"gzip, Trailers")
    assert not te_allows_trailers(b"gzip")


def test_strip_hop_by_hop_removes_listed_and_connection_named_fields() -> None:
    headers = [
        (b"connection", b"keep-alive, x-secret"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic x"),
        (b"accept", b"*/*"),
        (b"te", b"trailers, deflate"),
    ]
    assert strip_hop_by_hop(headers) == [(b"accept", b"*/*"), (b"te", b"trailers")]


def test_strip_hop_by_hop_drops_te_without_trailers() -> None:
    assert strip_hop_by_hop([(b"te", b"gzip"), (b"a", b"b")]) == [(b"a", b"b")]


def test_strip_hop_by_hop_uses_a_given_connection_value() -> None:
    assert strip_hop_by_hop([(b"x-a", b"1"), (b"x-b", b"2")], b"X-A") == [(b"x-b", b"2")]


def test_hop_by_hop_and_forbidden_trailer_sets() -> None:
    assert {b"connection", b"te", b"transfer-encoding", b"upgrade", b"keep-alive"} <= HOP_BY_HOP
    assert {b"content-length", b"host", b"trailer"} <= FORBIDDEN_TRAILERS
    assert HOP_BY_HOP <= FORBIDDEN_TRAILERS


@pytest.mark.parametrize("name", [b"x-a", b"Accept", b"!#$%&'*+-.^_`|~09az"])
def test_valid_header_name_accepts_tokens(name: bytes) -> None:
    assert valid_header_name(name)


@pytest.mark.parametrize("name", [b"", b"a b", b"a:b", b":path", b"a\r\nb", b"\xff", b"a\x00"])
def test_valid_header_name_rejects_non_tokens(name: bytes) -> None:
    assert not valid_header_name(name)


def test_valid_header_value_rejects_only_field_splitting_octets() -> None:
    assert valid_header_value(b"a b\tc \xff")
    assert valid_header_value(b"")
    for bad in (b"a\rb", b"a\nb", b"a\r\nb: c", b"a\x00"):
        assert not valid_header_value(bad)


def test_append_forwarded_adds_all_four_fields_when_absent() -> None:
    headers = [(b"accept", b"*/*")]
    append_forwarded(headers, b"10.0.0.1", b"https", b"example.com", b"1.1 expressgateway")
    assert headers == [
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"example.com"),
        (b"via", b"1.1 expressgateway"),
    ]


def test_append_forwarded_keeps_every_prior_xff_and_via_and_replaces_proto_host() -> None:
    headers = [
        (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"3.3.3.3"),
        (b"x-forwarded-proto", b"spoofed"),
        (b"x-forwarded-host", b"spoofed"),
        (b"via", b"1.0 other"),
    ]
    append_forwarded(headers, b"10.0.0.1", b"http", b"", b"1.1 expressgateway")
    assert headers == [
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"via", b"1.0 other, 1.1 expressgateway"),
    ]
