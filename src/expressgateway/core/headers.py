"""Header rules shared by every codec: hop-by-hop stripping, field
validation, authority validation and the forwarding headers.

Everything here works on the neutral representation of
:mod:`expressgateway.core.events`: lower-case ``bytes`` names, ``bytes``
values. The predicates sit on the hot path, so the common answers are cached
in small bounded dicts (a proxy sees the same few hundred header names and
``Host`` values again and again).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from operator import itemgetter

from expressgateway.core.events import Headers

#: RFC 9110 §7.6.1 connection-specific fields, plus the legacy
#: ``proxy-connection`` and the proxy-auth pair that a reverse proxy consumes.
#: ``te`` is listed so it is stripped by default; codecs re-add ``te: trailers``
#: (the one hop-by-hop field that survives, RFC 9110 §10.1.4).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Fields that must never appear in a trailer section (RFC 9110 §6.5.1: they
#: control framing, routing or the connection). A request carrying one is
#: answered 400; on responses they are dropped.
FORBIDDEN_TRAILERS: frozenset[bytes] = HOP_BY_HOP | frozenset(
    {b"content-length", b"host", b"trailer"}
)

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN_RE = re.compile(rb"[" + _TCHAR + rb"]+")
_BAD_VALUE_RE = re.compile(rb"[\r\n\x00]")
_OWS = b" \t"

_CACHE_MAX = 1024


def valid_header_name(name: bytes) -> bool:
    """True if ``name`` is an RFC 9110 §5.1 token (no pseudo-headers, no
    whitespace, no colon)."""
    return _TOKEN_RE.fullmatch(name) is not None


def valid_header_value(value: bytes) -> bool:
    """True if ``value`` cannot split a field on an HTTP/1.1 wire: it holds
    no CR, LF or NUL (RFC 9110 §5.5). Other octets pass, as in llhttp."""
    return _BAD_VALUE_RE.search(value) is None


_tokens_cache: dict[bytes, tuple[bytes, ...]] = {}


def connection_tokens(value: bytes) -> tuple[bytes, ...]:
    """The lower-cased, trimmed tokens of a ``Connection`` (or ``Upgrade``,
    ``TE``, ``Transfer-Encoding``) field value; empty list elements are
    skipped (RFC 9110 §5.6.1). Short values are cached."""
    hit = _tokens_cache.get(value)
    if hit is not None:
        return hit
    tokens = tuple(t for t in (p.strip(_OWS) for p in value.lower().split(b",")) if t)
    if len(value) <= 64:
        if len(_tokens_cache) >= _CACHE_MAX:
            _tokens_cache.clear()
        _tokens_cache[value] = tokens
    return tokens


def te_allows_trailers(value: bytes) -> bool:
    """True if a ``TE`` field value lists the ``trailers`` token."""
    return b"trailers" in connection_tokens(value)


def strip_hop_by_hop(headers: Headers, connection_value: bytes | None = None) -> Headers:
    """Return ``headers`` without hop-by-hop fields and without the fields
    that ``Connection`` names (RFC 9110 §7.6.1). A ``te`` field that lists
    ``trailers`` survives as ``te: trailers``.

    ``connection_value`` is the joined ``Connection`` value when the caller
    already has it; otherwise the ``connection`` fields in ``headers`` are
    read. Names must already be lower-case."""
    if connection_value is None:
        values = [v for n, v in headers if n == b"connection"]
        connection_value = b",".join(values) if values else b""
    named = set(connection_tokens(connection_value)) if connection_value else set()
    out: Headers = []
    te_trailers = False
    for name, value in headers:
        if name in HOP_BY_HOP:
            if name == b"te" and te_allows_trailers(value):
                te_trailers = True
            continue
        if name in named:
            continue
        out.append((name, value))
    if te_trailers and b"te" not in named:
        out.append((b"te", b"trailers"))
    return out


# -- authority (RFC 3986 §3.2.2 host, §3.2.3 port) -----------------------

# reg-name / IPv4address, minus "," (a comma-joined Host is a smuggling and
# cache-poisoning vector). No userinfo ("@"), no whitespace.
_REG_NAME = rb"(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})+"
_AUTHORITY_RE = re.compile(
    rb"(?:(" + _REG_NAME + rb")|\[([0-9A-Fa-f:.]{2,45})\])(?::([0-9]{1,5}))?"
)
_authority_cache: dict[bytes, bool] = {}


def _check_authority(value: bytes) -> bool:
    m = _AUTHORITY_RE.fullmatch(value)
    if m is None:
        return False
    port = m.group(3)
    if port is not None and int(port) > 65535:
        return False
    literal = m.group(2)
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    return True


def valid_authority(value: bytes) -> bool:
    """True if ``value`` is ``host[:port]`` per RFC 3986: a reg-name or IPv4
    address, or a bracketed IPv6 literal; an optional port 0-65535. Rejects
    empty hosts, userinfo, whitespace, commas, zone ids and IPvFuture."""
    ok = _authority_cache.get(value)
    if ok is None:
        ok = _check_authority(value)
        if len(_authority_cache) >= _CACHE_MAX:
            _authority_cache.clear()
        _authority_cache[value] = ok
    return ok


def split_authority(value: bytes) -> tuple[bytes, int | None]:
    """Split a *valid* authority into host (brackets kept off for IPv6) and
    port (``None`` when absent)."""
    if value.startswith(b"["):
        end = value.index(b"]")
        host, rest = value[1:end], value[end + 1 :]
        return host, int(rest[1:]) if rest else None
    host, sep, port = value.rpartition(b":")
    if not sep:
        return value, None
    return host, int(port)


# -- forwarding headers -----------------------------------------------------


_FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via"})
_first = itemgetter(0)


def append_forwarded(
    headers: Headers,
    peer_ip: bytes,
    proto: bytes,
    host: bytes,
    via: bytes,
) -> None:
    """Add the forwarding headers to a request's ``headers`` *in place*
    (codec-made header lists belong to the stream, so no copy is made).

    - ``x-forwarded-for``: every prior value is kept, joined with ``", "``
      in order, and ``peer_ip`` appended (one field line);
    - ``x-forwarded-proto``: replaced by ``proto`` (``http``/``https``);
    - ``x-forwarded-host``: replaced by ``host`` (the request's authority;
      omitted when empty);
    - ``via``: ``via`` (e.g. ``b"1.1 expressgateway"``) appended to the
      prior values (RFC 9110 §7.6.3).
    """
    if _FORWARDING.isdisjoint(map(_first, headers)):
        xff, prior_via = peer_ip, via
    else:
        xffs: list[bytes] = []
        vias: list[bytes] = []
        keep: Headers = []
        for item in headers:
            name = item[0]
            if name == b"x-forwarded-for":
                xffs.append(item[1])
            elif name == b"via":
                vias.append(item[1])
            elif name not in _FORWARDING:
                keep.append(item)
        xffs.append(peer_ip)
        vias.append(via)
        xff, prior_via = b", ".join(xffs), b", ".join(vias)
        headers[:] = keep
    headers.append((b"x-forwarded-for", xff))
    headers.append((b"x-forwarded-proto", proto))
    if host:
        headers.append((b"x-forwarded-host", host))
    headers.append((b"via", prior_via))


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """All values of ``name`` (lower-case) in field order."""
    return [v for n, v in headers if n == name]
