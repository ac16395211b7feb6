"""HTTP/1.1 server codec (client -> gateway), sans-IO, on httptools (llhttp).

Bytes in, neutral events out; responses in, bytes out. No sockets, no clock.

How the shell drives it (one request at a time, RFC 9112 §9.3.2):

1. ``events = codec.feed(data)`` for every read. Events of the *current*
   request only: ``RequestHead``, then ``Body`` pieces (the last one has
   ``end_stream=True``) or ``Trailers`` (chunked body with trailers). Raises
   ``DownstreamError`` on bad input: answer ``err.status`` (if a response can
   still be sent) and close.
2. Per-request facts on the codec once the head is out: ``method``,
   ``keep_alive``, ``http_minor``, ``expect_continue``, ``te_trailers``,
   ``websocket``, ``request_complete``.
3. Answer with ``encode_response_head`` / ``encode_body`` /
   ``encode_trailers`` (or ``encode_local_reply``); ``encode_informational``
   for 1xx.
4. When the response is fully written: if ``codec.reusable``, call
   ``events = codec.next_request()`` (it returns the events of the next
   pipelined request, possibly already parsed) and go on; else close.

Pipelining: llhttp parses ahead, so events of a request that arrives before
the current response is finished are *held* inside the codec (further reads
are buffered raw, capped by ``max_buffered_bytes``). While ``codec.paused``
is true the shell should pause reading. A parse error inside a held request
is raised by ``next_request()``, so the current exchange still completes.

Tunnels (WebSocket over HTTP/1.1 Upgrade, RFC 6455 §4): the head comes out
with ``protocol=b"websocket"`` (``end_stream=False``); later bytes are
buffered (capped) until the shell, having seen the upstream's 101, encodes
it and calls ``codec.start_tunnel()``, which returns the buffered bytes as
``TunnelData``; from then on ``feed`` returns ``TunnelData``. A websocket
request is never keep-alive: when the upstream refuses, the response closes.
Any other ``Upgrade`` (``h2c``, ``TLS/1.0``…) is ignored: the field is
stripped and the request goes on as plain HTTP/1.1 (RFC 9110 §7.8).

EOF: ``feed_eof()`` raises ``DownstreamError("client_truncated")`` when the
client closed in the middle of a request body (never a clean end).

Normalisation: names lower-case; hop-by-hop fields, the fields that
``Connection`` names, ``Host`` (-> ``authority``), ``Content-Length`` (->
``content_length``) and ``Transfer-Encoding`` are removed from ``headers``;
``te: trailers`` survives; ``expect: 100-continue`` is kept (normalised,
also exposed as ``expect_continue``; dropped for HTTP/1.0, any other
expectation is 417); values lose trailing whitespace. An absolute-form target
(``GET http://h/p``) gives its authority and path (RFC 9112 §3.2.2); a
fragment is cut off.
"""

from __future__ import annotations

from itertools import chain
from typing import Literal, NoReturn

import httptools
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

from expressgateway.core.errors import DownstreamError, ProxyError
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
from expressgateway.core.headers import connection_tokens, valid_authority

from .fields import (
    DROP_ON_ENCODE,
    K_CONNECTION,
    K_CONTENT_LENGTH,
    K_EXPECT,
    K_HOP,
    K_HOST,
    K_PLAIN,
    K_TE,
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
from .framing import CHUNKED, CLOSE, LENGTH, NONE, BodyFramer, local_reply_body, status_line
from .parse_errors import parse_error_reason

UnderscorePolicy = Literal["reject", "drop", "allow"]

_END = Body(b"", True)
_NO_NAMES: dict[bytes, bytes] = {}
_KEEP_ALIVE_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b"te"})
_FORBIDDEN_TRAILER_KINDS = frozenset(
    {K_HOP, K_CONNECTION, K_TE, K_TRANSFER_ENCODING, K_UPGRADE, K_HOST, K_CONTENT_LENGTH}
)
_NO_BODY_STATUS = frozenset({204, 304})
_STATE_IDLE, _STATE_HEAD, _STATE_BODY = 0, 1, 2

# per-request facts: (method, keep_alive, http_minor, expect_continue, te_trailers, websocket)
_Info = tuple[bytes, bool, int, bool, bool, bool]


class _Held:
    """A pipelined request parsed ahead of the shell."""

    __slots__ = ("complete", "error", "events", "info")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.info: _Info | None = None
        self.complete = False
        self.error: ProxyError | None = None


class H1ServerCodec(BodyFramer):
    """HTTP/1.1 server side: parses requests, encodes responses.

    Limits: ``max_header_bytes`` bounds the request line plus the header
    section (and, separately, a trailer section); ``max_headers`` the field
    count; ``max_request_body_bytes`` the body (413). ``underscore_policy``
    decides what happens to a field name holding ``_`` (``reject`` -> 400,
    ``drop`` the field, ``allow`` it). ``strict_te`` accepts only a single,
    exact ``Transfer-Encoding: chunked``. ``max_buffered_bytes`` caps bytes
    held for a pipelined request or a pending tunnel (default
    ``max_header_bytes + 256 KiB``, one full socket read past a request).
    """

    __slots__ = (
        "_body_remaining",
        "_body_total",
        "_cb_error",
        "_chunked",
        "_cl",
        "_conn",
        "_error",
        "_expect",
        "_fast",
        "_feed_len",
        "_head_fed",
        "_headers",
        "_held",
        "_held_error",
        "_host",
        "_in_body",
        "_manual_remaining",
        "_max_body",
        "_max_buffered",
        "_max_header_bytes",
        "_max_headers",
        "_names",
        "_nspecial",
        "_parse_entry",
        "_parser",
        "_rare",
        "_raw",
        "_scheme",
        "_sink",
        "_special_size",
        "_stall",
        "_state",
        "_strict_te",
        "_te",
        "_te_trailers",
        "_trailers",
        "_tunnel",
        "_tunnel_buffer",
        "_underscore",
        "_upgrade",
        "_url",
        "_ws_key",
        "_ws_version",
        "expect_continue",
        "http_minor",
        "keep_alive",
        "method",
        "request_complete",
        "response_keep_alive",
        "te_trailers",
        "websocket",
    )

    def __init__(
        self,
        *,
        max_header_bytes: int = 65536,
        max_headers: int = 256,
        max_request_body_bytes: int = 64 * 1024 * 1024,
        underscore_policy: UnderscorePolicy = "reject",
        strict_te: bool = False,
        scheme: bytes = b"http",
        max_buffered_bytes: int | None = None,
    ) -> None:
        super().__init__()
        if underscore_policy not in ("reject", "drop", "allow"):
            raise ValueError(f"underscore_policy: {underscore_policy!r}")
        self._max_header_bytes = max_header_bytes
        self._max_headers = max_headers
        self._max_body = max_request_body_bytes
        self._underscore = underscore_policy
        self._strict_te = strict_te
        self._scheme = scheme
        self._max_buffered = (
            max_header_bytes + 262144 if max_buffered_bytes is None else max_buffered_bytes
        )
        self._parser = httptools.HttpRequestParser(self)

        # facts about the active request (the one the shell is serving)
        self.method, self.keep_alive, self.http_minor = b"", True, 1
        self.expect_continue = self.te_trailers = self.websocket = False
        #: the active request's message has been fully received
        self.request_complete = False
        #: decided by the last ``encode_response_head``
        self.response_keep_alive = True
        self.out_complete = False

        self._error: ProxyError | None = None
        self._cb_error: ProxyError | None = None
        self._sink: list[Event] = []
        self._held: list[_Held] = []
        self._parse_entry: _Held | None = None
        self._raw = bytearray()
        self._held_error = False
        self._tunnel = False
        self._tunnel_buffer: bytearray | None = None
        self._manual_remaining = 0
        self._fast = True
        self._rare = False
        self._chunked = False
        self._body_remaining = 0
        self._body_total = 0
        self._trailers: Headers | None = None
        self._stall = 0
        self._state = _STATE_IDLE
        self._reset_parse()

    # -- public: decoding ---------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse bytes from the client; return the active request's events."""
        if self._fast and data:
            # common case: nothing held, no tunnel, no error
            out: list[Event] = []
            self._sink = out
            n = len(data)
            self._stall += n
            self._feed_len = n
            if self._state == _STATE_HEAD:
                self._head_fed += n
            try:
                self._parser.feed_data(data)
            except (HttpParserUpgrade, HttpParserError) as exc:
                rest = self._parser_exception(exc, data)
            else:
                rest = b""
            if rest:  # (outside the handler: no implicit exception context)
                self._parse(rest)
            if self._stall > self._max_header_bytes:
                self._stalled()
            return out
        if self._error is not None:
            raise self._error
        if not data:
            return []
        if self._tunnel:
            return [TunnelData(data)]
        if self._held or self._held_error:
            self._hold_raw(data)
            return []
        out = []
        if self._parse_entry is None:
            self._sink = out
        self._count_fed(data)
        self._parse(data)
        if self._stall > self._max_header_bytes:
            self._stalled()
        return out

    def next_request(self) -> list[Event]:
        """Move on to the next request once the response is fully sent.
        Returns the events already parsed for it. The shell should call it
        only when ``reusable`` is true and close otherwise (a response that
        said ``connection: close`` must be followed by a close); calling it
        before the request was fully read, or after a websocket upgrade, is
        a ``RuntimeError``."""
        if self._error is not None:
            raise self._error
        if not self.request_complete or self.websocket or self._tunnel:
            raise RuntimeError("next_request(): the current request is not complete")
        self.request_complete = False
        self.response_keep_alive = True
        self.out_complete = False
        # keep_alive and http_minor stay those of the last request until the
        # next head: a reply made before it (408…) answers the same client.
        self.method = b""
        self.expect_continue = self.te_trailers = False
        out: list[Event]
        if not self._held and not self._raw:
            out = self._sink = []
            if not self._fast:
                self._refresh_fast()
            return out
        if self._held:
            entry = self._held.pop(0)
            if entry.error is not None:
                self._error = entry.error
                self._fast = False
                raise entry.error
            if entry.info is not None:
                self._apply(entry.info)
            self.request_complete = entry.complete
            out = entry.events
            if entry is self._parse_entry:
                self._parse_entry = None
                self._sink = out
        else:
            out = []
            self._sink = out
        if not self._held and self._raw:
            raw = bytes(self._raw)
            self._raw.clear()
            self._count_fed(raw)
            self._parse(raw)
            if self._stall > self._max_header_bytes:
                self._stalled()
        self._refresh_fast()
        return out

    def start_tunnel(self) -> list[Event]:
        """Switch to tunnel mode after the 101 went out; returns the client
        bytes received since the upgrade request as ``TunnelData``."""
        if not self.websocket or self._tunnel:
            raise RuntimeError("start_tunnel(): not a pending websocket upgrade")
        self._tunnel = True
        self._fast = False
        buf, self._tunnel_buffer = self._tunnel_buffer, None
        return [TunnelData(bytes(buf))] if buf else []

    def feed_eof(self) -> list[Event]:
        """The client closed its side. Raises ``DownstreamError
        ("client_truncated")`` if that cut the active request's body short."""
        if self._error is not None or self._tunnel:
            return []
        err = DownstreamError("client_truncated", status=400)
        entry = self._parse_entry
        if entry is None:
            if self._state == _STATE_BODY:
                self._error = err
                self._fast = False
                raise err
        elif not entry.complete and entry.info is not None:
            entry.events.clear()  # a pipelined request cut short
            entry.error = err
        return []

    @property
    def paused(self) -> bool:
        """True while the codec holds bytes it will not parse yet (a
        pipelined request or a pending tunnel): the shell should pause
        reading until ``next_request()`` / ``start_tunnel()``."""
        return bool(self._held) or self._held_error or self._tunnel_buffer is not None

    @property
    def reusable(self) -> bool:
        """After the response was fully encoded: may the connection serve the
        next request (both sides want keep-alive, the request was fully read,
        nothing went wrong)?"""
        return (
            self.response_keep_alive
            and self.keep_alive
            and self.request_complete
            and self.out_complete
            and self._error is None
            and not self.websocket
        )

    # -- public: encoding ---------------------------------------------------

    def encode_response_head(
        self, head: ResponseHead, *, request_method: bytes, keep_alive: bool
    ) -> bytes:
        """Encode a final response head (or the 101 of a websocket upgrade).

        Framing: no body for HEAD, 204, 304 (``content-length`` is still
        written for HEAD/304 when known); ``content-length`` when known,
        ``0`` when ``end_stream``; else ``transfer-encoding: chunked`` for an
        HTTP/1.1 client and close-delimited for HTTP/1.0. ``connection:
        close`` when the connection will not be kept (``keep_alive`` false,
        the client asked to close, or close-delimited)."""
        status = head.status
        block, dropped, header_cl, _ = encode_fields(head.headers, DROP_ON_ENCODE)
        if dropped:
            self.invalid_headers_dropped += dropped
        self._out_trailers = False
        if status == 101:
            if not self.websocket:
                raise ProxyError("bad_upgrade_response", detail="101 without a websocket request")
            self._out_mode = NONE
            self.out_complete = True
            self.response_keep_alive = False
            framing = b"connection: upgrade\r\nupgrade: websocket\r\n\r\n"
        else:
            if status < 200:
                raise ProxyError("bad_status", detail="use encode_informational for 1xx")
            cl = head.content_length if head.content_length is not None else header_cl
            # an unread request body would have to be drained: close instead
            keep_alive = keep_alive and self.keep_alive and self.request_complete
            if request_method == b"HEAD" or status in _NO_BODY_STATUS:
                self._out_mode = NONE
                self.out_complete = True
                framing = b"" if cl is None or status == 204 else b"content-length: %d\r\n" % cl
            elif head.end_stream:
                self._out_mode = NONE
                self.out_complete = True
                framing = b"content-length: 0\r\n"
            elif cl is not None:
                self._out_mode = LENGTH
                self._out_remaining = cl
                self.out_complete = cl == 0
                framing = b"content-length: %d\r\n" % cl
            elif self.http_minor:
                self._out_mode = CHUNKED
                self._out_trailers = self.te_trailers
                self.out_complete = False
                framing = b"transfer-encoding: chunked\r\n"
            else:
                self._out_mode = CLOSE
                self.out_complete = False
                keep_alive = False
                framing = b""
            if not keep_alive:
                framing += b"connection: close\r\n\r\n"
            elif self.http_minor == 0:
                framing += b"connection: keep-alive\r\n\r\n"
            else:
                framing += b"\r\n"
            self.response_keep_alive = keep_alive
        if block:
            return b"".join((status_line(status), block, b"\r\n", framing))
        return status_line(status) + framing

    def encode_informational(self, info: Informational) -> bytes:
        """Encode a 1xx (100 Continue, 103 Early Hints…). HTTP/1.0 clients
        get nothing (RFC 9110 §15.2)."""
        if not 100 <= info.status < 200 or info.status == 101:
            raise ProxyError("bad_status", detail=f"{info.status} is not informational")
        if self.http_minor == 0:
            return b""
        block, dropped, _, _ = encode_fields(info.headers, DROP_ON_ENCODE)
        self.invalid_headers_dropped += dropped
        if block:
            return b"".join((status_line(info.status), block, b"\r\n\r\n"))
        return status_line(info.status) + b"\r\n"

    def encode_local_reply(
        self,
        status: int,
        body: bytes | None = None,
        *,
        reason: str = "",
        extra_headers: Headers | tuple[tuple[bytes, bytes], ...] = (),
        keep_alive: bool = False,
        request_method: bytes = b"",
    ) -> bytes:
        """A complete response the proxy makes itself (errors, redirects…).

        With ``body=None`` the body is the standard one-line JSON
        ``{"status":<status>,"reason":"<reason>"}`` as ``application/json``;
        a given body is served as ``text/plain; charset=utf-8`` unless
        ``extra_headers`` set ``content-type``. ``request_method`` defaults to
        the active request's (no body is sent for HEAD)."""
        if body is None:
            body = local_reply_body(status, reason)
            ctype = b"application/json"
        else:
            ctype = b"text/plain; charset=utf-8"
        headers: Headers = list(extra_headers)
        if not any(n == b"content-type" for n, _ in headers):
            headers.insert(0, (b"content-type", ctype))
        if status < 200 or status == 101:
            raise ProxyError("bad_status", detail="local replies are final responses")
        head = ResponseHead(status, headers, end_stream=False, content_length=len(body))
        out = self.encode_response_head(
            head, request_method=request_method or self.method, keep_alive=keep_alive
        )
        return out + self.encode_body(body, True)

    # -- parsing internals ----------------------------------------------------

    def _reset_parse(self) -> None:
        self._url = b""
        self._headers: Headers = []
        self._names = PLAIN_NAMES
        self._feed_len = 0
        self._head_fed = 0
        self._special_size = 0
        self._nspecial = 0
        self._host: bytes | None = None
        self._conn: bytes | None = None
        self._cl: bytes | None = None
        self._in_body = False
        self._reset_rare()

    def _apply(self, info: _Info) -> None:
        (
            self.method,
            self.keep_alive,
            self.http_minor,
            self.expect_continue,
            self.te_trailers,
            self.websocket,
        ) = info

    def _refresh_fast(self) -> None:
        self._fast = (
            self._error is None
            and not self._tunnel
            and not self._held
            and not self._held_error
            and not self._manual_remaining
            and self._tunnel_buffer is None
        )

    def _parse(self, data: bytes) -> None:
        """Feed llhttp, handling what it cannot: the body of a request with
        an ignored Upgrade, bytes after a websocket upgrade, errors."""
        while data:
            if self._manual_remaining:
                data = self._manual_body(data)
                continue
            if self._tunnel_buffer is not None:
                self._buffer_tunnel(data)
                break
            if self._held_error:
                break
            try:
                self._parser.feed_data(data)
                break
            except (HttpParserUpgrade, HttpParserError) as exc:
                data = self._parser_exception(exc, data)
        self._refresh_fast()

    def _parser_exception(self, exc: HttpParserError | HttpParserUpgrade, data: bytes) -> bytes:
        """Handle an llhttp stop; return the bytes still to be parsed."""
        if isinstance(exc, HttpParserUpgrade):
            rest = data[exc.args[0] :]
            if self.websocket if self._parse_entry is None else self._held_ws():
                self._tunnel_buffer = bytearray()
            self._refresh_fast()
            return rest
        err = self._cb_error
        self._cb_error = None
        if err is None:
            ctx = exc.__context__
            if isinstance(exc, HttpParserCallbackError) and ctx is not None:
                raise ctx from exc  # a bug in a callback, not bad input
            reason = parse_error_reason(exc)
            if self._chunked and self._in_body and reason.startswith("smuggling"):
                reason = "bad_trailer"  # llhttp checks CL/TE in trailers too
            err = DownstreamError(reason, status=400, detail=str(exc))
        self._fail(err)
        return b""

    def _count_fed(self, data: bytes) -> None:
        n = len(data)
        self._stall += n
        self._feed_len = n
        if self._state == _STATE_HEAD:
            self._head_fed += n

    def _stalled(self) -> None:
        self._stall = 0
        self._fail(
            DownstreamError("header_too_large", status=431, detail="no progress in the head")
        )

    def _buffer_tunnel(self, data: bytes) -> None:
        buf = self._tunnel_buffer
        assert buf is not None
        self._stall = 0
        buf += data
        if len(buf) > self._max_buffered:
            overflow = DownstreamError("tunnel_buffer_overflow", status=400)
            self._tunnel_buffer = None
            entry = self._parse_entry
            if entry is None:  # the active request's tunnel
                self._error = overflow
                self._fast = False
                raise overflow
            entry.events.clear()  # a pipelined upgrade: fails at next_request()
            entry.error = overflow
            self._held_error = True

    def _held_ws(self) -> bool:
        entry = self._parse_entry
        return entry is not None and entry.info is not None and entry.info[5]

    def _manual_body(self, data: bytes) -> bytes:
        """Body of a request whose ignored ``Upgrade`` made llhttp skip it."""
        n = self._manual_remaining
        piece, rest = data[:n], data[n:]
        n -= len(piece)
        self._manual_remaining = n
        self._stall = 0
        self._sink.append(Body(piece, n == 0))
        if n == 0:
            self._message_done()
        return rest

    def _fail(self, err: ProxyError) -> None:
        """A request is broken. If it is the active one, raise; if it is a
        pipelined one, hold the error for ``next_request()``."""
        if self.request_complete or self._parse_entry is not None:
            entry = self._parse_entry
            if entry is None or (entry.complete and not self._held_ws()):
                # (bytes after a pipelined websocket upgrade belong to it)
                entry = _Held()
                self._held.append(entry)
                self._parse_entry = entry
            entry.events.clear()
            entry.error = err
            self._held_error = True
            self._raw.clear()
            self._tunnel_buffer = None
            self._fast = False
            return
        self._error = err
        self._fast = False
        raise err

    def _hold_raw(self, data: bytes) -> None:
        if self._held_error:
            return
        self._raw += data
        if len(self._raw) > self._max_buffered:
            self._fail(DownstreamError("pipeline_overflow", status=400))

    def _reject(self, reason: str, status: int, detail: str = "") -> NoReturn:
        err = DownstreamError(reason, status=status, detail=detail)
        self._cb_error = err
        raise err

    # -- llhttp callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.request_complete or self._parse_entry is not None:
            entry = _Held()
            self._held.append(entry)
            self._parse_entry = entry
            self._sink = entry.events
            self._fast = False
        self._state = _STATE_HEAD
        self._head_fed = self._feed_len
        self._url = b""
        self._headers = []
        self._special_size = 0
        self._nspecial = 0
        self._host = None
        self._conn = None
        self._cl = None
        if self._rare:
            self._reset_rare()

    def on_url(self, url: bytes) -> None:
        self._stall = 0
        if self._url:
            url = self._url + url
        self._url = url
        if len(url) > self._max_header_bytes:
            self._reject("uri_too_long", 414)

    def on_header(self, raw_name: bytes, value: bytes) -> None:
        # Hot: one call per field. ``_names`` maps the raw names of plain
        # fields to their lower-case form while in the head (it is empty for
        # trailers); anything else goes to _on_special_header. The caps on
        # plain fields are checked once the head is complete (a slowly fed
        # head is caught per feed by the _stall counter).
        name = self._names.get(raw_name)
        if name is not None:
            self._headers.append((name, value.rstrip(b" \t")))
        elif raw_name == b"Host" and self._host is None:
            # (after the head, _host is set: a trailer "Host" goes the slow way)
            self._host = value.rstrip(b" \t")
        else:
            self._on_special_header(raw_name, value.rstrip(b" \t"))

    def _on_special_header(self, raw_name: bytes, value: bytes) -> None:
        hit = KINDS.get(raw_name)
        if hit is None:
            hit = classify(raw_name)
        name, kind = hit
        if self._in_body:
            self._special_size += len(name) + len(value) + 4
            self._on_trailer(name, kind, value)
            return
        if kind == K_PLAIN:  # a name not cached yet
            self._headers.append((name, value))
            return
        if kind == K_HOST:
            if self._host is not None:
                self._reject("bad_host", 400, "repeated Host")
            self._host = value
            return  # counted at the end of the head
        # fields kept out of self._headers: their size is counted here
        self._special_size += len(name) + len(value) + 4
        if kind == K_CONNECTION:
            conn = self._conn
            self._conn = value if conn is None else conn + b"," + value
        elif kind == K_CONTENT_LENGTH:
            self._cl = value
        elif kind == K_UNDERSCORE:
            if self._underscore == "allow":
                self._headers.append((name, value))
                return
            if self._underscore == "reject":
                self._reject("header_underscore", 400, name.decode("latin-1"))
        elif kind != K_HOP:
            self._on_rare_header(name, kind, value)
        self._nspecial += 1

    def _reset_rare(self) -> None:
        self._rare = False
        self._te: list[bytes] | None = None
        self._upgrade: bytes | None = None
        self._expect: bytes | None = None
        self._te_trailers = False
        self._ws_key = False
        self._ws_version: bytes | None = None

    def _on_rare_header(self, name: bytes, kind: int, value: bytes) -> None:
        self._rare = True
        if kind == K_TRANSFER_ENCODING:
            if self._te is None:
                self._te = []
            self._te.append(value)
        elif kind == K_TE:
            if not self._te_trailers and b"trailers" in connection_tokens(value):
                self._te_trailers = True
                self._headers.append((b"te", b"trailers"))
        elif kind == K_UPGRADE:
            self._upgrade = value if self._upgrade is None else self._upgrade + b"," + value
        elif kind == K_EXPECT:
            self._expect = value
        elif kind == K_WS_KEY:
            self._ws_key = True
            self._headers.append((name, value))
        elif kind == K_WS_VERSION:
            self._ws_version = value
            self._headers.append((name, value))

    def _on_trailer(self, name: bytes, kind: int, value: bytes) -> None:
        if self._special_size > self._max_header_bytes:
            self._reject("header_too_large", 431, "trailer section")
        if kind in _FORBIDDEN_TRAILER_KINDS or name == b"trailer":
            self._reject("bad_trailer", 400, name.decode("latin-1"))
        if kind == K_UNDERSCORE:
            if self._underscore == "reject":
                self._reject("header_underscore", 400, name.decode("latin-1"))
            if self._underscore == "drop":
                return
        trailers = self._trailers
        if trailers is None:
            trailers = self._trailers = []
        trailers.append((name, value))
        if len(trailers) > self._max_headers:
            self._reject("header_too_large", 431, "too many trailer fields")

    def on_headers_complete(self) -> None:
        self._stall = 0
        headers = self._headers
        if len(headers) + self._nspecial + (self._host is not None) > self._max_headers:
            self._reject("header_too_large", 431, "too many fields")
        if self._head_fed > self._max_header_bytes or self._special_size > self._max_header_bytes:
            # more bytes than the cap were fed since the head began: count
            size = self._special_size + len(self._url) + len(self._host or b"")
            size += sum(map(len, chain(*headers)))
            if size + 4 * len(headers) > self._max_header_bytes:
                self._reject("header_too_large", 431)
        parser = self._parser
        keep_alive: bool = parser.should_keep_alive()
        conn = None if self._conn is None else connection_tokens(self._conn)
        if keep_alive and (conn is None or b"keep-alive" not in conn):
            # llhttp keeps an HTTP/1.0 (or 0.9, 2.0) request alive only on
            # an explicit keep-alive token, so this is HTTP/1.1; saves the
            # costly get_http_version().
            minor = 1
        else:
            version = parser.get_http_version()
            if version == "1.1":
                minor = 1
            elif version == "1.0":
                minor = 0
            else:
                self._reject("bad_request_line", 400, f"HTTP/{version}")
        method: bytes = parser.get_method()
        if method == b"CONNECT":
            self._reject("connect_unsupported", 405)

        # -- Host / target (RFC 9112 §3.2) --
        host = self._host
        if host is None:
            if minor:
                self._reject("bad_host", 400, "missing Host")
            host = b""
        elif not valid_authority(host):
            self._reject("bad_host", 400, "malformed Host")
        path = self._url
        if not path.startswith(b"/"):
            if path == b"*":
                if method != b"OPTIONS":
                    self._reject("bad_request_line", 400, "asterisk-form")
            else:
                host, path = self._absolute_form(path)
        if b"#" in path:
            path = path[: path.index(b"#")]

        # -- framing (RFC 9112 §6) --
        chunked = False
        cl: int | None = None
        if self._cl is not None:
            cl = int(self._cl)
            if cl > self._max_body:
                self._reject("body_too_large", 413)
        if conn is not None and not _KEEP_ALIVE_TOKENS.issuperset(conn):
            named = set(conn) - _KEEP_ALIVE_TOKENS
            headers = [h for h in headers if h[0] not in named]

        websocket = expect_continue = te_trailers = False
        protocol: bytes | None = None
        if self._rare:
            if self._te is not None:
                chunked = self._check_te(self._te, minor)
            te_trailers = self._te_trailers
            if self._expect is not None:
                if self._expect.lower() != b"100-continue":
                    self._reject("expectation_failed", 417)
                # RFC 9110 §10.1.1: forwarded so the origin can answer 100
                # (or a final status) before the body; ignored for HTTP/1.0
                expect_continue = minor == 1
                if expect_continue:
                    headers.append((b"expect", b"100-continue"))
            if self._upgrade is not None:
                websocket = self._check_upgrade(method, minor, conn, chunked, cl)
                if websocket:
                    protocol = b"websocket"
                    keep_alive = False
                elif parser.should_upgrade():
                    # llhttp takes it as an upgrade and skips the body; we
                    # ignore the upgrade (RFC 9110 §7.8): read a length body
                    # ourselves.
                    if chunked:
                        self._reject("bad_upgrade", 400, "ignored Upgrade with a chunked body")
                    self._manual_remaining = cl or 0

        entry = self._parse_entry
        if entry is None:
            self.method = method
            self.keep_alive = keep_alive
            self.http_minor = minor
            self.expect_continue = expect_continue
            self.te_trailers = te_trailers
            self.websocket = websocket
        else:
            entry.info = (method, keep_alive, minor, expect_continue, te_trailers, websocket)
        self._chunked = chunked
        if chunked or cl:
            self._body_remaining = cl or 0
            self._body_total = 0
            self._trailers = None
            self._special_size = 0  # from now on: the trailer section's size
            self._names = _NO_NAMES  # fields after the head are trailers
            self._in_body = True
            self._state = _STATE_BODY
        self._sink.append(
            RequestHead(
                method,
                self._scheme,
                host,
                path,
                headers,
                not (websocket or chunked or cl),
                protocol,
                None if chunked else cl,
            )
        )

    def _absolute_form(self, target: bytes) -> tuple[bytes, bytes]:
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            self._reject("bad_request_line", 400, "request target")
        end = len(rest)
        for c in (b"/", b"?", b"#"):
            i = rest.find(c)
            if i != -1 and i < end:
                end = i
        authority, path = rest[:end], rest[end:]
        if not valid_authority(authority):
            self._reject("bad_host", 400, "malformed authority in request target")
        if not path.startswith(b"/"):
            path = b"/" + path
        return authority, path

    def _check_te(self, values: list[bytes], minor: int) -> bool:
        """RFC 9112 §6.1: only ``chunked`` (once, last) can be relayed; an
        HTTP/1.0 message with Transfer-Encoding has faulty framing."""
        if minor == 0:
            self._reject("smuggling_bad_te", 400, "Transfer-Encoding in HTTP/1.0")
        if self._strict_te:
            if len(values) != 1 or values[0] != b"chunked":
                self._reject("smuggling_bad_te", 400, "strict: only 'chunked'")
            return True
        codings = [t for v in values for t in connection_tokens(v)]
        if codings != [b"chunked"]:
            if codings and codings[-1] == b"chunked":
                self._reject("unsupported_te", 501, b", ".join(codings).decode("latin-1"))
            self._reject("smuggling_bad_te", 400, b", ".join(codings).decode("latin-1"))
        return True

    def _check_upgrade(
        self,
        method: bytes,
        minor: int,
        conn: tuple[bytes, ...] | None,
        chunked: bool,
        cl: int | None,
    ) -> bool:
        """RFC 6455 §4.2.1: GET, ``Upgrade: websocket``, ``Connection:
        upgrade``, a key and version 13. Anything else is not a websocket
        upgrade and the Upgrade field is simply dropped."""
        assert self._upgrade is not None
        if b"websocket" not in connection_tokens(self._upgrade):
            return False
        if conn is None or b"upgrade" not in conn:
            return False
        if method != b"GET" or not minor or not self._ws_key or self._ws_version != b"13":
            return False
        if chunked or cl:
            self._reject("bad_upgrade", 400, "websocket upgrade with a body")
        return True

    def on_body(self, data: bytes) -> None:
        self._stall = 0
        if self._chunked:
            total = self._body_total + len(data)
            self._body_total = total
            if total > self._max_body:
                self._reject("body_too_large", 413)
            self._sink.append(Body(data))
            return
        remaining = self._body_remaining - len(data)
        self._body_remaining = remaining
        self._sink.append(Body(data, remaining == 0))

    def on_message_complete(self) -> None:
        self._stall = 0
        if self._manual_remaining:
            return
        if self._chunked:
            trailers = self._trailers
            self._sink.append(Trailers(trailers) if trailers else _END)
        self._message_done()

    def _message_done(self) -> None:
        self._state = _STATE_IDLE
        if self._in_body:
            self._names = PLAIN_NAMES
            self._in_body = False
        entry = self._parse_entry
        if entry is None:
            self.request_complete = True
        else:
            entry.complete = True
