"""HTTP/2 field validation (RFC 9113 §8.2, §8.3) and normalisation to the
neutral model, in both directions.

h2's own inbound validation is switched off: it walks every octet of every
field in Python and turns each violation into a *connection* error. Here
the checks run once per header block, mostly in C (set lookups, one
``translate`` and one regex over the joined values), and a violation is a
*stream* error (RFC 9113 §8.1.1) that the codec reports and resets.

Inbound (requests on the server, responses on the client), a header block
is *malformed* (RST_STREAM PROTOCOL_ERROR, no answer) when:

- a pseudo-header is unknown, repeated, belongs to the other direction,
  follows a regular field, or appears in trailers (§8.3);
- a request lacks ``:method``, or (except CONNECT) ``:scheme`` / ``:path``;
  ``:path`` is empty or holds octets outside 0x21-0x7E; a plain CONNECT has
  ``:scheme`` or ``:path``; ``:protocol`` comes without CONNECT, without
  SETTINGS_ENABLE_CONNECT_PROTOCOL, or without ``:scheme``/``:path``
  (RFC 8441 §4);
- a field name is not a lower-case token (§8.2.1: upper case, controls,
  separators, a colon) or a value holds NUL, CR or LF or begins or ends
  with SP/HTAB (§8.2.1);
- a connection-specific field is present (``connection``,
  ``proxy-connection``, ``keep-alive``, ``transfer-encoding``, ``upgrade``),
  or ``te`` says anything but ``trailers`` (§8.2.2) - the fields that
  would smuggle a second request past an HTTP/1.1 backend;
- ``content-length`` is not a number, or two of them differ (§8.1.1; the
  match against the DATA frames is checked by the codec).

A well-formed request can still be refused with a status (the codec reports
:class:`~.events.StreamRejected`): 400 for a missing, malformed or
conflicting authority (``:authority`` vs ``Host``, RFC 9113 §8.3.1), a
repeated ``Host``, a field name with ``_`` under the ``reject`` policy or a
scheme other than http/https; 405 for a plain CONNECT (the gateway is not a
forward proxy); 413 for a ``content-length`` over the body cap; 431 for more
than ``max_headers`` fields or a decoded list over ``max_header_list_size``;
501 for an extended CONNECT ``:protocol`` the gateway does not speak.

Normalisation: ``Host`` becomes ``authority`` (``:authority`` wins; both
present must agree, case-insensitively) and is not repeated in ``headers``;
``content-length`` moves to ``content_length``; several ``cookie`` fields
are joined with ``"; "`` (§8.2.3) for an HTTP/1.1 backend;
``proxy-authorization`` / ``proxy-authenticate`` are dropped (the gateway
consumes them, as on HTTP/1.1); a ``#fragment`` is cut from ``:path``.

Outbound (:func:`encode_fields`), fields are re-checked so a header from
another codec, a filter or the config can never break the HTTP/2 rules:
connection-specific fields are dropped (``te: trailers`` is kept on
requests), names are lower-cased and must be tokens, values lose
surrounding whitespace, a value with CR/LF/NUL is dropped (counted).
"""

from __future__ import annotations

import re
from operator import countOf, itemgetter, methodcaller
from typing import Literal, NoReturn

from hpack import HeaderTuple, NeverIndexedHeaderTuple

from expressgateway.core.errors import DownstreamError, ProxyError, UpstreamError
from expressgateway.core.events import PROTOCOL_ERROR, Headers, RequestHead
from expressgateway.core.headers import FORBIDDEN_TRAILERS, HOP_BY_HOP, valid_authority

UnderscorePolicy = Literal["reject", "drop", "allow"]

#: the object our HPACK decoder puts in place of the name ``content-length``
#: (so h2 does not track lengths itself); compared with ``is``
CONTENT_LENGTH = b"content-length\x00"

#: RFC 9113 §8.2.2 connection-specific fields: malformed in HTTP/2
CONNECTION_SPECIFIC: frozenset[bytes] = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
#: hop-by-hop for the gateway but legal in HTTP/2: dropped on the way in
_CONSUMED = frozenset({b"proxy-authorization", b"proxy-authenticate"})
#: names kept out of the fast path of inbound checks
_SPECIAL_IN = CONNECTION_SPECIFIC | _CONSUMED | {b"te", b"host", b"content-length"}

_first = itemgetter(0)
_second = itemgetter(1)
#: (``strip`` returns the very same object when there is nothing to strip,
#: so comparing the lists is mostly identity checks)
_strip_ws = methodcaller("strip", b" \t")

_TOKEN_LC = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_PATH = re.compile(rb"[^\x21-\x7e]")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")
_SPLITTERS = b"\r\n\x00"

#: names already checked to be lower-case tokens without "_" and not
#: special: the common case is one ``issuperset`` over a header block
_GOOD_NAMES: set[bytes] = {b"cookie"}
_GOOD_METHODS: set[bytes] = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}
_CACHE_MAX = 4096
#: request heads remembered per server codec (see RequestValidator), and
#: how large a remembered one may be (fields, octets of values)
_HEAD_MEMO_MAX = 16
_HEAD_MEMO_FIELDS = 32
_HEAD_MEMO_OCTETS = 4096


class StreamError(Exception):
    """A header block the codec must refuse. ``status`` 0: malformed, reset
    with ``code``; else answer ``status`` (requests) or fail the exchange
    (responses)."""

    def __init__(self, reason: str, status: int = 0, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.status = status
        self.detail = detail
        self.code = PROTOCOL_ERROR

    def downstream(self) -> DownstreamError:
        return DownstreamError(self.reason, status=self.status, detail=self.detail)

    def upstream(self) -> ProxyError:
        return UpstreamError(self.reason, status=502, detail=self.detail)


def _malformed(reason: str, detail: str = "") -> NoReturn:
    raise StreamError(reason, 0, detail)


def _refuse(reason: str, status: int, detail: str = "") -> NoReturn:
    raise StreamError(reason, status, detail)


def _remember(cache: set[bytes], name: bytes) -> None:
    if len(cache) < _CACHE_MAX:
        cache.add(name)


def check_values(headers: list[HeaderTuple] | Headers, size_cap: int) -> None:
    """RFC 9113 §8.2.1 value rules for a whole block, and the decoded size
    cap (RFC 9113 §6.5.2: name + value + 32 per field)."""
    n = len(headers)
    if not n:
        return
    values = list(map(_second, headers))
    if list(map(_strip_ws, values)) != values:
        _malformed("bad_header_value", "whitespace around a field value")
    joined = b"\n".join(values)
    if len(joined) - len(joined.translate(None, _SPLITTERS)) != n - 1:
        _malformed("bad_header_value", "NUL, CR or LF in a field value")
    size = len(joined) - n + 1 + sum(map(len, map(_first, headers))) + 32 * n
    if size > size_cap:
        raise StreamError("header_too_large", 431, f"header list of {size} octets")


def _check_name(name: bytes) -> None:
    if _TOKEN_LC.fullmatch(name) is None:
        if not name:
            _malformed("bad_header_name", "empty name")
        if name.startswith(b":"):
            _malformed("bad_pseudo_header", "pseudo-header after a regular field")
        _malformed("bad_header_name", repr(name)[2:-1][:64])


def _content_length(value: bytes, previous: int | None) -> int:
    if not value.isdigit() or not value.isascii():
        _malformed("bad_content_length", repr(value)[2:-1][:32])
    cl = int(value)
    if previous is not None and previous != cl:
        _malformed("bad_content_length", "conflicting content-length fields")
    return cl


class RequestValidator:
    """Turns a request header block from h2 into a :class:`RequestHead`
    (raising :class:`StreamError`). One per server codec.

    The heads of the last few distinct accepted blocks are remembered (by
    their fields and END_STREAM): a client that repeats a request gets a
    copy instead of a second check. The answer depends on nothing else
    (the limits are fixed per codec). Only small heads are remembered
    (at most 16 x 4 KiB of values per connection)."""

    __slots__ = (
        "_memo",
        "connect_protocol",
        "max_body",
        "max_headers",
        "max_list",
        "protocols",
        "scheme",
        "underscore",
    )

    def __init__(
        self,
        *,
        scheme: bytes,
        max_headers: int,
        max_header_list_size: int,
        max_request_body_bytes: int,
        underscore_policy: UnderscorePolicy,
        enable_connect_protocol: bool,
        connect_protocols: frozenset[bytes],
    ) -> None:
        if underscore_policy not in ("reject", "drop", "allow"):
            raise ValueError(f"underscore_policy: {underscore_policy!r}")
        self.scheme = scheme
        self.max_headers = max_headers
        self.max_list = max_header_list_size
        self.max_body = max_request_body_bytes
        self.underscore = underscore_policy
        self.connect_protocol = enable_connect_protocol
        self.protocols = connect_protocols
        self._memo: dict[tuple[tuple[HeaderTuple, ...], bool], RequestHead] = {}

    def request(self, headers: list[HeaderTuple], end_stream: bool) -> RequestHead:
        key = (tuple(headers), end_stream)
        memo = self._memo
        head = memo.get(key)
        if head is None:
            head = self._request(headers, end_stream)
            if (
                len(headers) <= _HEAD_MEMO_FIELDS
                and sum(map(len, map(_second, headers))) <= _HEAD_MEMO_OCTETS
            ):
                if len(memo) >= _HEAD_MEMO_MAX:
                    memo.clear()
                memo[key] = head
        return RequestHead(
            head.method,
            head.scheme,
            head.authority,
            head.path,
            list(head.headers),
            end_stream,
            head.protocol,
            head.content_length,
        )

    def _request(self, headers: list[HeaderTuple], end_stream: bool) -> RequestHead:
        method = scheme = authority = path = protocol = None
        i = 0
        for name, value in headers:
            if name == b":method":
                if method is not None:
                    _malformed("bad_pseudo_header", "repeated :method")
                method = value
            elif name == b":path":
                if path is not None:
                    _malformed("bad_pseudo_header", "repeated :path")
                path = value
            elif name == b":scheme":
                if scheme is not None:
                    _malformed("bad_pseudo_header", "repeated :scheme")
                scheme = value
            elif name == b":authority":
                if authority is not None:
                    _malformed("bad_pseudo_header", "repeated :authority")
                authority = value
            elif name == b":protocol":
                if protocol is not None:
                    _malformed("bad_pseudo_header", "repeated :protocol")
                protocol = value
            elif name.startswith(b":"):
                _malformed("bad_pseudo_header", f"unknown {name.decode('latin-1')[:32]}")
            else:
                break
            i += 1
        regular: Headers = headers[i:] if i else headers  # type: ignore[assignment]
        check_values(headers, self.max_list)
        if len(regular) > self.max_headers:
            _refuse("header_too_large", 431, f"more than {self.max_headers} fields")

        # -- regular fields ---------------------------------------------------
        names = list(map(_first, regular))
        content_length: int | None = None
        host: bytes | None = None
        if not _GOOD_NAMES.issuperset(names) or countOf(names, b"cookie") > 1:
            regular, content_length, host = self._slow_fields(regular)

        # -- pseudo-headers (RFC 9113 §8.3.1, RFC 8441 §4) --------------------
        if method is None:
            _malformed("bad_pseudo_header", "missing :method")
        if method not in _GOOD_METHODS:
            if _TOKEN.fullmatch(method) is None:
                _malformed("bad_method", repr(method)[2:-1][:32])
            _remember(_GOOD_METHODS, method)
        if method == b"CONNECT":
            if protocol is None:
                if scheme is not None or path is not None:
                    _malformed("bad_pseudo_header", "CONNECT with :scheme or :path")
                _refuse("connect_unsupported", 405)
            if not self.connect_protocol:
                _malformed("bad_pseudo_header", ":protocol without ENABLE_CONNECT_PROTOCOL")
            if scheme is None or path is None:
                _malformed("bad_pseudo_header", "extended CONNECT without :scheme or :path")
            if protocol.lower() not in self.protocols:
                _refuse("unsupported_protocol", 501, protocol.decode("latin-1")[:32])
        elif protocol is not None:
            _malformed("bad_pseudo_header", ":protocol without CONNECT")
        elif scheme is None or path is None:
            _malformed("bad_pseudo_header", "missing :scheme or :path")
        if scheme != b"https" and scheme != b"http":
            if _SCHEME.fullmatch(scheme) is None:
                _malformed("bad_pseudo_header", "malformed :scheme")
            _refuse("bad_scheme", 400, scheme.decode("latin-1")[:32])
        if not path:
            _malformed("bad_path", "empty :path")
        if _BAD_PATH.search(path) is not None:
            _malformed("bad_path", "octet outside 0x21-0x7E in :path")
        if path[0] != 0x2F:  # "/"
            if path != b"*" or method != b"OPTIONS":
                _malformed("bad_path", ":path is neither origin-form nor '*'")
        elif b"#" in path:
            path = path[: path.index(b"#")]

        # -- authority (RFC 9113 §8.3.1) --------------------------------------
        if authority is None:
            if host is None:
                _refuse("bad_host", 400, "no :authority or Host")
            authority = host
        elif host is not None and host.lower() != authority.lower():
            _refuse("bad_host", 400, ":authority and Host differ")
        if not valid_authority(authority):
            _refuse("bad_host", 400, "malformed authority")

        if content_length is not None:
            if content_length > self.max_body:
                _refuse("body_too_large", 413)
            if end_stream and content_length:
                _malformed("content_length_mismatch", "END_STREAM with a non-zero content-length")
        return RequestHead(
            method,
            self.scheme,
            authority,
            path,
            regular,
            end_stream,
            protocol,
            content_length,
        )

    def _slow_fields(self, regular: Headers) -> tuple[Headers, int | None, bytes | None]:
        """Every field that is not an already-checked plain name."""
        out: Headers = []
        cookies: list[bytes] | None = None
        content_length: int | None = None
        host: bytes | None = None
        for item in regular:
            name = item[0]
            if name == b"cookie":
                if cookies is None:
                    cookies = []
                    out.append(item)  # the joined field takes this place
                cookies.append(item[1])
                continue
            if name in _GOOD_NAMES:
                out.append(item)
                continue
            if name is CONTENT_LENGTH:
                content_length = _content_length(item[1], content_length)
                continue
            if name in _SPECIAL_IN:
                if name in CONNECTION_SPECIFIC:
                    _malformed("connection_specific_header", name.decode("latin-1"))
                if name == b"te":
                    if item[1].lower() != b"trailers":
                        _malformed("bad_te", "te other than 'trailers'")
                    out.append((b"te", b"trailers"))
                elif name == b"host":
                    if host is not None:
                        _refuse("bad_host", 400, "repeated Host")
                    host = item[1]
                # (proxy-authorization, proxy-authenticate: consumed)
                continue
            _check_name(name)
            if b"_" in name:
                if self.underscore == "reject":
                    _refuse("header_underscore", 400, name.decode("latin-1")[:64])
                if self.underscore == "drop":
                    continue
            else:
                _remember(_GOOD_NAMES, name)
            out.append(item)
        if cookies is not None and len(cookies) > 1:
            joined = (b"cookie", b"; ".join(cookies))
            for k, item in enumerate(out):
                if item[0] == b"cookie":
                    out[k] = joined
                    break
        return out, content_length, host


def trailer_fields(headers: list[HeaderTuple], max_headers: int, size_cap: int) -> Headers:
    """Validate a trailer section (either direction). Pseudo-headers are
    malformed (RFC 9113 §8.1); so are connection-specific fields; the other
    fields that must not be trailers (RFC 9110 §6.5.1: ``content-length``,
    ``host``, ``trailer``, ``te``...) refuse the stream as well."""
    check_values(headers, size_cap)
    if len(headers) > max_headers:
        _malformed("header_too_large", "too many trailer fields")
    for name, _ in headers:
        if name in _GOOD_NAMES:
            continue
        if name is CONTENT_LENGTH or name in FORBIDDEN_TRAILERS:
            _malformed("bad_trailer", "content-length" if name is CONTENT_LENGTH else name.decode())
        if name.startswith(b":"):
            _malformed("bad_pseudo_header", "pseudo-header in trailers")
        _check_name(name)
    return headers  # type: ignore[return-value]


def response_fields(
    headers: list[HeaderTuple], max_headers: int, size_cap: int
) -> tuple[int, Headers, int | None]:
    """Validate a response header block from a backend: ``(status, headers,
    content_length)``. Raises :class:`StreamError` (the codec resets the
    stream and reports a 502)."""
    if not headers or headers[0][0] != b":status":
        _malformed("bad_pseudo_header", "missing :status")
    raw = headers[0][1]
    if len(raw) != 3 or not raw.isdigit() or not raw.isascii():
        _malformed("bad_status", repr(raw)[2:-1][:16])
    status = int(raw)
    if status < 100:
        _malformed("bad_status", str(status))
    if status == 101:
        _malformed("bad_status", "101 is not allowed in HTTP/2 (RFC 9113 §8.6)")
    check_values(headers, size_cap)
    regular = headers[1:]
    if len(regular) > max_headers:
        _refuse("header_too_large", 502, f"more than {max_headers} response fields")
    names = list(map(_first, regular))
    content_length: int | None = None
    if _GOOD_NAMES.issuperset(names):
        return status, regular, None  # type: ignore[return-value]
    out: Headers = []
    for item in regular:
        name = item[0]
        if name in _GOOD_NAMES:
            out.append(item)
        elif name is CONTENT_LENGTH:
            content_length = _content_length(item[1], content_length)
        elif name.startswith(b":"):
            _malformed("bad_pseudo_header", f"{name.decode('latin-1')[:32]} in a response")
        elif name in CONNECTION_SPECIFIC:
            _malformed("connection_specific_header", name.decode("latin-1"))
        elif name in HOP_BY_HOP:
            continue  # te, proxy-authenticate: not forwarded
        else:
            _check_name(name)
            if b"_" not in name:
                _remember(_GOOD_NAMES, name)
            out.append(item)
    return status, out, content_length


# -- outbound ---------------------------------------------------------------------

#: names never copied from neutral headers into an HTTP/2 header block:
#: pseudo-headers and ``host``/``content-length`` are written by the codec
DROP_OUT: frozenset[bytes] = HOP_BY_HOP | frozenset({b"content-length", b"host"})
#: names safe to copy as they are (lower-case tokens, not in DROP_OUT)
_GOOD_OUT: set[bytes] = set()
#: kept out of the HPACK dynamic table (RFC 7541 §7.1.3): on a connection
#: shared by many clients, an indexed secret could be probed by another
#: client through compression (CRIME-style)
SENSITIVE = frozenset({b"authorization", b"cookie", b"proxy-authorization"})


def encode_fields(
    headers: Headers, drop: frozenset[bytes] = DROP_OUT, *, keep_te: bool = False
) -> tuple[list[tuple[bytes, bytes]], int, int | None]:
    """Fields to put in an outbound header block: ``(fields, dropped,
    content_length)``. ``content_length`` is a valid ``content-length``
    value found among ``headers`` (never copied as such); ``dropped``
    counts invalid fields left out. ``keep_te`` keeps ``te: trailers``
    (requests)."""
    if not headers:
        return [], 0, None
    if drop is DROP_OUT and _GOOD_OUT.issuperset(map(_first, headers)):
        values = list(map(_second, headers))
        joined = b"\n".join(values)
        if (
            len(joined) - len(joined.translate(None, _SPLITTERS)) == len(headers) - 1
            and list(map(_strip_ws, values)) == values
        ):
            return headers, 0, None
    return _encode_fields_slow(headers, drop, keep_te)


def _encode_fields_slow(
    headers: Headers, drop: frozenset[bytes], keep_te: bool
) -> tuple[list[tuple[bytes, bytes]], int, int | None]:
    out: list[tuple[bytes, bytes]] = []
    dropped = 0
    content_length: int | None = None
    for name, value in headers:
        if name not in _GOOD_OUT:
            if _TOKEN.fullmatch(name) is None:
                dropped += 1
                continue
            name = name.lower()
        if name in drop:
            if name == b"content-length":
                v = value.strip(b" \t")
                if v.isdigit() and (content_length is None or content_length == int(v)):
                    content_length = int(v)
                else:
                    dropped += 1
            elif name == b"te" and keep_te and value.strip(b" \t").lower() == b"trailers":
                out.append((b"te", b"trailers"))
            continue
        if name not in DROP_OUT:
            _remember(_GOOD_OUT, name)
        if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
            value = value.strip(b" \t")
        if value.translate(None, _SPLITTERS) != value:
            dropped += 1
            continue
        out.append((name, value))
    return out, dropped, content_length


def never_indexed(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Mark :data:`SENSITIVE` fields as never indexed (only when present)."""
    if SENSITIVE.isdisjoint(map(_first, fields)):
        return fields
    return [
        NeverIndexedHeaderTuple(n, v) if n in SENSITIVE else (n, v)  # type: ignore[misc]
        for n, v in fields
    ]
