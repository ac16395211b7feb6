"""HTTP/1.1 field handling shared by the server and client codecs.

Decoding: :func:`classify` maps a raw field name from llhttp to its
lower-cased form and a *kind* (what the codec must do with it), cached.

Encoding: :func:`encode_fields` writes neutral headers as ``name: value``
lines. Values are re-validated (no CR, LF or NUL) so a header from another
codec, a filter or the config can never split a field (response splitting,
RFC 9112 §11.2); names are re-validated as tokens. A bad field is dropped
and counted, not raised: one broken header must not cost the whole exchange.
"""

from __future__ import annotations

from operator import itemgetter

from expressgateway.core.events import Headers
from expressgateway.core.headers import (
    FORBIDDEN_TRAILERS,
    HOP_BY_HOP,
    te_allows_trailers,
    valid_header_name,
    valid_header_value,
)

# -- decoding: field-name kinds ---------------------------------------------

K_PLAIN = 0  #: ordinary end-to-end field, kept
K_UNDERSCORE = 1  #: ordinary field whose name holds "_" (policy applies)
K_HOP = 2  #: hop-by-hop, silently dropped
K_CONNECTION = 3
K_TE = 4
K_TRANSFER_ENCODING = 5
K_UPGRADE = 6
K_HOST = 7
K_CONTENT_LENGTH = 8
K_EXPECT = 9
K_WS_KEY = 10  #: sec-websocket-key: kept, noted for the upgrade check
K_WS_VERSION = 11  #: sec-websocket-version: kept, noted

_SPECIAL = {
    b"connection": K_CONNECTION,
    b"te": K_TE,
    b"transfer-encoding": K_TRANSFER_ENCODING,
    b"upgrade": K_UPGRADE,
    b"host": K_HOST,
    b"content-length": K_CONTENT_LENGTH,
    b"expect": K_EXPECT,
    b"sec-websocket-key": K_WS_KEY,
    b"sec-websocket-version": K_WS_VERSION,
}
_NAME_CACHE_MAX = 4096
#: raw name -> (lower-cased name, kind)
KINDS: dict[bytes, tuple[bytes, int]] = {}
#: raw name -> lower-cased name, for K_PLAIN names only: the hot path of the
#: decoders is one lookup here; a miss means "special or not yet seen".
PLAIN_NAMES: dict[bytes, bytes] = {}


def classify(raw: bytes) -> tuple[bytes, int]:
    """``(lower-cased name, kind)`` for a field name as llhttp delivered it
    (llhttp has already checked it is a token)."""
    hit = KINDS.get(raw)
    if hit is not None:
        return hit
    name = raw.lower()
    kind = _SPECIAL.get(name)
    if kind is None:
        if name in HOP_BY_HOP:
            kind = K_HOP
        elif b"_" in name:
            kind = K_UNDERSCORE
        else:
            kind = K_PLAIN
    hit = (name, kind)
    if len(KINDS) < _NAME_CACHE_MAX:
        KINDS[raw] = hit
        if kind == K_PLAIN:
            PLAIN_NAMES[raw] = name
    return hit


# -- encoding ------------------------------------------------------------------

#: Never copied from neutral headers onto an HTTP/1.1 wire: the codec writes
#: framing, ``Host`` and connection management itself.
DROP_ON_ENCODE: frozenset[bytes] = HOP_BY_HOP | frozenset({b"content-length", b"host"})

_first = itemgetter(0)
_SPLITTERS = b"\r\n\x00"
_good_names: set[bytes] = set()
_GOOD_NAMES_MAX = 4096


def encode_fields(
    headers: Headers, drop: frozenset[bytes] = DROP_ON_ENCODE
) -> tuple[bytes, int, int | None, bool]:
    """Encode ``headers`` as field lines joined by CRLF (no trailing CRLF).

    Returns ``(block, dropped, content_length, te_trailers)``: ``dropped``
    counts invalid fields left out; ``content_length`` is a valid
    ``content-length`` value found among the headers (they are never copied
    as such); ``te_trailers`` says a ``te`` field listed ``trailers``.
    Names in ``drop`` are left out silently.

    Fast path (with the default ``drop``): every name is in the cache of
    names already checked, none of which is in ``DROP_ON_ENCODE``, and the
    joined block holds no CR, LF or NUL besides the separators."""
    if not headers:
        return b"", 0, None, False
    if drop is DROP_ON_ENCODE and _good_names.issuperset(map(_first, headers)):
        block = b"\r\n".join(map(b": ".join, headers))
        # the separators hold exactly 2 * (len - 1) of CR, LF and NUL: any
        # more comes from a name or a value
        if len(block) - len(block.translate(None, _SPLITTERS)) == 2 * len(headers) - 2:
            return block, 0, None, False
    return _encode_fields_slow(headers, drop)


def _encode_fields_slow(
    headers: Headers, drop: frozenset[bytes]
) -> tuple[bytes, int, int | None, bool]:
    lines: list[bytes] = []
    dropped = 0
    content_length: int | None = None
    te_trailers = False
    for name, value in headers:
        if name in drop:
            if name == b"content-length":
                v = value.strip(b" \t")
                if v.isdigit() and (content_length is None or content_length == int(v)):
                    content_length = int(v)
                else:
                    dropped += 1
            elif name == b"te" and te_allows_trailers(value):
                te_trailers = True
            continue
        if name not in _good_names:
            if not (valid_header_name(name) and name == name.lower()):
                dropped += 1
                continue
            if len(_good_names) < _GOOD_NAMES_MAX and name not in DROP_ON_ENCODE:
                _good_names.add(name)
        if not valid_header_value(value):
            dropped += 1
            continue
        lines.append(name + b": " + value)
    return b"\r\n".join(lines), dropped, content_length, te_trailers


def encode_trailer_fields(headers: Headers) -> tuple[bytes, int]:
    """Trailer lines (each CRLF-terminated) without forbidden names."""
    block, dropped, _, _ = encode_fields(headers, FORBIDDEN_TRAILERS)
    return (block + b"\r\n" if block else b""), dropped
