"""HTTP/1.1 client codec (gateway -> backend), sans-IO, on httptools (llhttp).

One request/response exchange at a time on a connection; the same codec
serves every exchange of a pooled connection. How the shell drives it:

1. ``wire = codec.encode_request_head(head, extra_headers=...)`` starts an
   exchange (only on a fresh codec or when ``codec.reusable``); then
   ``encode_body`` / ``encode_trailers`` for the request body. The request
   method is remembered, so a response to ``HEAD`` is read without a body.
2. ``events = codec.feed(data)`` for every read: ``Informational`` for 1xx
   (not 101), ``ResponseHead`` (hop-by-hop fields stripped,
   ``content_length`` set), ``Body`` pieces ending with ``end_stream=True``,
   or ``Trailers``. A ``101`` answering a websocket request gives
   ``ResponseHead(101)`` and every later byte comes out as ``TunnelData``.
   Raises ``UpstreamError`` (502) on a malformed response or a broken limit.
3. ``codec.feed_eof()`` when the backend closes: a close-delimited body gets
   its clean end (``[Body(b"", True)]``); a cut in the middle of a
   content-length or chunked body, or of the head, raises
   ``UpstreamError("upstream_truncated")`` - never a clean end; a close
   before any byte of the response raises ``UpstreamError
   ("upstream_closed", retry=IF_REUSED)``.
4. After the exchange, ``codec.reusable`` says whether the connection may go
   back to the pool (both sides keep-alive, request fully sent, response
   fully and cleanly read, no stray bytes). Bytes the backend sends when no
   response is due are dropped and make the connection not reusable.

Responses are normalised like requests on the server side: names lower-case,
hop-by-hop and ``Connection``-named fields stripped, ``content-length`` moved
to ``content_length``, trailing whitespace cut. A ``Transfer-Encoding``
other than ``chunked`` (e.g. ``gzip, chunked``) cannot be relayed faithfully
and is refused (502).
"""

from __future__ import annotations

import re
from itertools import chain
from operator import countOf, itemgetter
from typing import NoReturn

import httptools
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

from expressgateway.core.errors import ProxyError, Retry, UpstreamError
from expressgateway.core.events import (
    Body,
    Event,
    Headers,
    Informational,
    RequestHead,
    ResponseHead,
    Trailers,
    TunnelData,
)
from expressgateway.core.headers import FORBIDDEN_TRAILERS, connection_tokens, valid_authority

from .fields import (
    DROP_ON_ENCODE,
    K_CONNECTION,
    K_CONTENT_LENGTH,
    K_PLAIN,
    K_TRANSFER_ENCODING,
    K_UNDERSCORE,
    K_UPGRADE,
    K_WS_KEY,
    K_WS_VERSION,
    KINDS,
    PLAIN_NAMES,
    classify,
    encode_fields,
)
from .framing import CHUNKED, LENGTH, NONE, BodyFramer
from .parse_errors import parse_error_reason

_END = Body(b"", True)
_first = itemgetter(0)
_NO_NAMES: dict[bytes, bytes] = {}
_KEPT_KINDS = frozenset({K_PLAIN, K_UNDERSCORE, K_WS_KEY, K_WS_VERSION})
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade", b"te"})
#: methods whose requests carry ``content-length: 0`` when bodiless
#: (RFC 9110 §8.6: sent when the method defines a meaning for content)
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]").search
_BAD_METHOD = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]").search
_MAX_INFORMATIONAL = 32
_COMMON_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"})


def _join_cookies(headers: Headers) -> Headers:
    """One ``cookie`` field for HTTP/1.1 (RFC 9113 §8.2.3, RFC 6265 §5.4):
    HTTP/2 and HTTP/3 clients send one field per cookie."""
    crumbs = [v for n, v in headers if n == b"cookie"]
    out: Headers = [h for h in headers if h[0] != b"cookie"]
    out.append((b"cookie", b"; ".join(crumbs)))
    return out


class _Unsolicited(Exception):
    """Stops llhttp when the backend sends a response nobody asked for."""


class H1ClientCodec(BodyFramer):
    """HTTP/1.1 client side: encodes requests, parses responses.

    ``max_header_bytes``/``max_headers`` bound a response's status line plus
    header section (and a trailer section); ``max_response_body_bytes``
    (``None``: unbounded) the body. Broken limits raise ``UpstreamError``
    with status 502."""

    __slots__ = (
        "_active",
        "_body_total",
        "_broken",
        "_cb_error",
        "_chunked",
        "_cl",
        "_close_delimited",
        "_conn",
        "_error",
        "_feed_len",
        "_head_fed",
        "_headers",
        "_in_1xx",
        "_in_body",
        "_informational",
        "_max_body",
        "_max_header_bytes",
        "_max_headers",
        "_method",
        "_names",
        "_nspecial",
        "_parser",
        "_parser_idle",
        "_remaining",
        "_sink",
        "_special_size",
        "_stall",
        "_started",
        "_te",
        "_trailers",
        "_tunnel",
        "_upgrade",
        "_ws_sent",
        "keep_alive",
        "response_complete",
    )

    def __init__(
        self,
        *,
        max_header_bytes: int = 65536,
        max_headers: int = 256,
        max_response_body_bytes: int | None = None,
    ) -> None:
        super().__init__()
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body = max_response_body_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._parser_idle = True
        self._error: ProxyError | None = None
        self._cb_error: ProxyError | BaseException | None = None
        self._sink: list[Event] = []
        self._stall = 0
        self._feed_len = 0
        #: an exchange is under way (a request head was encoded)
        self._active = False
        self._method = b""
        self._ws_sent = False
        self._tunnel = False
        self._broken = False
        self._informational = 0
        self._in_1xx = False
        #: the backend's keep-alive wish for the current response
        self.keep_alive = False
        self.response_complete = False
        self.out_complete = False
        self._started = False
        self._trailers: Headers | None = None
        self._remaining = 0
        self._body_total = 0
        self._reset_response()

    # -- public: encoding ---------------------------------------------------

    def encode_request_head(
        self,
        head: RequestHead,
        *,
        extra_headers: Headers | tuple[tuple[bytes, bytes], ...] = (),
    ) -> bytes:
        """Start an exchange: the request line, ``host`` (from
        ``authority``), the headers then ``extra_headers`` (both
        re-validated), and framing: ``content-length`` when known (``0`` for a
        bodiless POST/PUT/PATCH), else ``transfer-encoding: chunked``.
        ``te: trailers`` is kept (with ``connection: te``). A websocket
        request (``protocol=b"websocket"``, from an H1 Upgrade or an H2/H3
        extended CONNECT) becomes ``GET`` + ``upgrade: websocket``; the
        ``sec-websocket-*`` fields must be in ``headers``."""
        if self._active and not self.reusable:
            raise ProxyError("connection_not_reusable", detail="encode_request_head")
        ws = head.protocol == b"websocket"
        method = head.method
        if ws:
            method = b"GET"
        elif head.protocol is not None or method == b"CONNECT":
            raise ProxyError("unsupported_upstream_request", status=501, detail="CONNECT")
        elif method not in _COMMON_METHODS and (not method or _BAD_METHOD(method)):
            raise ProxyError("bad_request", status=400, detail="method")
        path = head.path or b"/"
        if _BAD_TARGET(path):
            raise ProxyError("bad_request", status=400, detail="request target")
        authority = head.authority
        if authority and not valid_authority(authority):
            raise ProxyError("bad_host", status=400, detail="authority")
        headers = head.headers
        if countOf(map(_first, headers), b"cookie") > 1:
            headers = _join_cookies(headers)
        block, dropped, header_cl, te_trailers = encode_fields(headers, DROP_ON_ENCODE)
        if extra_headers:
            extra, n, _, _ = encode_fields(list(extra_headers), DROP_ON_ENCODE)
            dropped += n
            if extra:
                block = block + b"\r\n" + extra if block else extra
        if dropped:
            self.invalid_headers_dropped += dropped

        cl = head.content_length if head.content_length is not None else header_cl
        if ws:
            self._out_mode = NONE
            self.out_complete = True
            framing = b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"
        else:
            if head.end_stream:
                self._out_mode = NONE
                self.out_complete = True
                framing = b"content-length: 0\r\n" if method in _BODY_METHODS else b""
            elif cl is not None:
                self._out_mode = LENGTH
                self._out_remaining = cl
                self.out_complete = cl == 0
                framing = b"content-length: %d\r\n" % cl
            else:
                self._out_mode = CHUNKED
                self._out_trailers = True
                self.out_complete = False
                framing = b"transfer-encoding: chunked\r\n"
            if te_trailers:
                framing += b"te: trailers\r\nconnection: te\r\n\r\n"
            else:
                framing += b"\r\n"

        if not self._parser_idle:
            self._parser = httptools.HttpResponseParser(self)
            self._parser_idle = True
        self._active = True
        self._method = method
        self._ws_sent = ws
        self.keep_alive = False
        self.response_complete = False
        self._informational = 0
        self._in_1xx = False
        self._stall = 0
        self._started = self._close_delimited = self._in_body = False
        start = b"%b %b HTTP/1.1\r\nhost: %b\r\n" % (method, path, authority)
        if block:
            return b"".join((start, block, b"\r\n", framing))
        return start + framing

    @property
    def reusable(self) -> bool:
        """May this connection carry another exchange?"""
        return (
            self.keep_alive
            and self.response_complete
            and self.out_complete
            and not self._broken
            and not self._tunnel
            and self._error is None
        )

    @property
    def response_started(self) -> bool:
        """True once any byte of a response (a 1xx included) was parsed in
        the current exchange: from then on a retry is no longer safe."""
        return self._started

    @property
    def tunnel(self) -> bool:
        """True once a 101 switched the connection to a tunnel."""
        return self._tunnel

    # -- public: decoding ---------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse bytes from the backend."""
        if self._tunnel:
            return [TunnelData(data)] if data else []
        if self._error is not None:
            raise self._error
        if not data:
            return []
        if self.response_complete or not self._active:
            self._broken = True  # bytes nobody asked for
            return []
        out: list[Event] = []
        self._sink = out
        n = len(data)
        self._stall += n
        self._feed_len = n
        if self._started and not self._in_body:
            self._head_fed += n
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as exc:
            rest = data[exc.args[0] :]
            if rest:
                out.append(TunnelData(rest))
            return out
        except HttpParserError as exc:
            err = self._cb_error
            self._cb_error = None
            if isinstance(err, _Unsolicited) or (err is None and self.response_complete):
                self._broken = True  # e.g. data after "connection: close"
                return out
            if err is None:
                ctx = exc.__context__
                if isinstance(exc, HttpParserCallbackError) and ctx is not None:
                    raise ctx from exc  # a bug in a callback, not bad input
                err = UpstreamError("bad_response", detail=f"{parse_error_reason(exc)}: {exc}")
            assert isinstance(err, ProxyError)
            self._error = err
            raise err from None
        if self._stall > self._max_header_bytes:
            self._fail("header_too_large", "no progress in the head")
        return out

    def feed_eof(self) -> list[Event]:
        """The backend closed the connection (see the module docstring)."""
        if self._tunnel or self._error is not None or not self._active:
            return []
        if self.response_complete:
            self.keep_alive = False
            return []
        if self._close_delimited:
            self.response_complete = True
            self.keep_alive = False
            return [_END]
        if not self._started:
            err = UpstreamError("upstream_closed", retry=Retry.IF_REUSED)
        else:
            err = UpstreamError("upstream_truncated")
        self._error = err
        raise err

    # -- parsing internals ----------------------------------------------------

    def _reset_response(self) -> None:
        """Per-message parse state (body state is set once the head is
        known, in on_headers_complete)."""
        self._headers: Headers = []
        self._names = PLAIN_NAMES
        self._special_size = 0
        self._nspecial = 0
        self._head_fed = self._feed_len
        self._cl: bytes | None = None
        self._te: list[bytes] | None = None
        self._conn: bytes | None = None
        self._upgrade: bytes | None = None
        self._in_body = False
        self._chunked = False
        self._close_delimited = False

    def _fail(self, reason: str, detail: str = "") -> NoReturn:
        err = UpstreamError(reason, detail=detail)
        self._cb_error = err
        self._error = err
        raise err

    # -- llhttp callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        self._parser_idle = False
        if self.response_complete:
            self._cb_error = _Unsolicited()
            raise self._cb_error
        self._reset_response()
        self._started = True

    def on_header(self, raw_name: bytes, value: bytes) -> None:
        # Hot path: see H1ServerCodec.on_header.
        name = self._names.get(raw_name)
        if name is not None:
            self._headers.append((name, value.rstrip(b" \t")))
        elif raw_name == b"Content-Length" and self._cl is None and not self._in_body:
            self._cl = value.rstrip(b" \t")
        else:
            self._on_special_header(raw_name, value.rstrip(b" \t"))

    def _on_special_header(self, raw_name: bytes, value: bytes) -> None:
        hit = KINDS.get(raw_name)
        if hit is None:
            hit = classify(raw_name)
        name, kind = hit
        if self._in_body:
            self._special_size += len(name) + len(value) + 4
            if self._special_size > self._max_header_bytes:
                self._fail("header_too_large", "trailer section")
            if name in FORBIDDEN_TRAILERS:
                # dropped; llhttp may have acted on it (connection: close), so
                # this connection is not trusted for another exchange
                self._broken = True
            else:
                trailers = self._trailers
                if trailers is None:
                    trailers = self._trailers = []
                trailers.append((name, value))
                if len(trailers) > self._max_headers:
                    self._fail("header_too_large", "too many trailer fields")
            return
        if kind in _KEPT_KINDS:
            self._headers.append((name, value))
            return
        if kind == K_CONTENT_LENGTH:
            self._cl = value
            return  # counted at the end of the head
        # fields kept out of self._headers: their size is counted here
        self._special_size += len(name) + len(value) + 4
        self._nspecial += 1
        if kind == K_CONNECTION:
            conn = self._conn
            self._conn = value if conn is None else conn + b"," + value
        elif kind == K_TRANSFER_ENCODING:
            if self._te is None:
                self._te = []
            self._te.append(value)
        elif kind == K_UPGRADE:
            self._upgrade = value
        # hop-by-hop, te, host (meaningless in a response), expect: dropped

    def on_headers_complete(self) -> None:
        self._stall = 0
        headers = self._headers
        if len(headers) + self._nspecial + (self._cl is not None) > self._max_headers:
            self._fail("header_too_large", "too many fields")
        if self._head_fed > self._max_header_bytes or self._special_size > self._max_header_bytes:
            size = self._special_size + len(self._cl or b"")
            size += sum(map(len, chain(*headers))) + 4 * len(headers)
            if size > self._max_header_bytes:
                self._fail("header_too_large")
        parser = self._parser
        status: int = parser.get_status_code()
        conn = None if self._conn is None else connection_tokens(self._conn)
        if conn is not None and not _CONNECTION_OPTIONS.issuperset(conn):
            named = set(conn) - _CONNECTION_OPTIONS
            headers = [h for h in headers if h[0] not in named]
        if status < 200:
            if status == 101:
                if not (
                    self._ws_sent
                    and self._upgrade is not None
                    and b"websocket" in connection_tokens(self._upgrade)
                    and conn is not None
                    and b"upgrade" in conn
                ):
                    self._fail("bad_response", "unexpected 101")
                self._tunnel = True
                self.response_complete = True
                self._sink.append(ResponseHead(101, headers, False))
                return
            if status < 100:
                self._fail("bad_response", f"status {status}")
            self._informational += 1
            if self._informational > _MAX_INFORMATIONAL:
                self._fail("bad_response", "too many 1xx responses")
            self._in_1xx = True
            self._sink.append(Informational(status, headers))
            return
        if status > 599:
            self._fail("bad_response", f"status {status}")
        # (llhttp accepts only HTTP/0.9 to 2.0 version labels; the framing
        # is HTTP/1.x whatever the label says, so it is not checked here.)
        self.keep_alive = parser.should_keep_alive()

        chunked = False
        if self._te is not None:
            codings = [t for v in self._te for t in connection_tokens(v)]
            if codings != [b"chunked"]:
                self._fail("bad_response", "unsupported Transfer-Encoding")
            chunked = True
        cl = int(self._cl) if self._cl is not None else None
        no_body = self._method == b"HEAD" or status == 204 or status == 304
        if no_body:
            # llhttp knows 204/304 have no body but not that this answers a
            # HEAD: the exchange ends here; the parser is replaced next time.
            end_stream = True
            self.response_complete = True
            if status == 204:
                cl = None
        elif chunked:
            end_stream = False
            self._chunked = True
            self._body_total = 0
            self._trailers = None
            cl = None
        elif cl is not None:
            end_stream = cl == 0
            self._remaining = cl
            if self._max_body is not None and cl > self._max_body:
                self._fail("body_too_large", f"content-length {cl}")
            self.response_complete = end_stream
        else:
            end_stream = False
            self._close_delimited = True
            self._body_total = 0
            self.keep_alive = False
        if not self.response_complete:
            self._in_body = True
            self._special_size = 0  # from now on: the trailer section's size
            self._names = _NO_NAMES  # fields after the head are trailers
        self._sink.append(ResponseHead(status, headers, end_stream, cl))

    def on_body(self, data: bytes) -> None:
        self._stall = 0
        if self.response_complete:
            self._broken = True  # a body after a HEAD answer: never forwarded
            return
        if self._chunked or self._close_delimited:
            if self._max_body is not None:
                self._body_total += len(data)
                if self._body_total > self._max_body:
                    self._fail("body_too_large")
            self._sink.append(Body(data))
            return
        remaining = self._remaining - len(data)
        self._remaining = remaining
        if remaining == 0:
            self.response_complete = True
        self._sink.append(Body(data, remaining == 0))

    def on_message_complete(self) -> None:
        self._stall = 0
        self._parser_idle = True
        if self._in_1xx:
            self._in_1xx = False
            return
        if self._chunked and not self.response_complete:
            trailers = self._trailers
            self._sink.append(Trailers(trailers) if trailers else _END)
        self.response_complete = True
