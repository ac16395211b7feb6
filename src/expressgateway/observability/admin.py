"""The admin HTTP listener: ``/metrics``, ``/livez``, ``/healthz``,
``/readyz``, ``/startupz``.

Runs in the supervisor. Probes are anonymous and answer JSON
``{"status": ...}``; ``/metrics`` needs ``Authorization: Bearer <token>``
when ``[admin].api_token_hash`` is set (SHA-256 hex of the token, compared
in constant time; 403 otherwise). Non-GET gets 405, unknown paths 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, cast

import httptools

log = logging.getLogger("expressgateway.admin")

MAX_REQUEST_BYTES = 16 * 1024


class Phase(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class AdminState:
    """What the probes report; the supervisor moves it along."""

    def __init__(self, token_hash: str | None) -> None:
        self.phase = Phase.STARTING
        self.started = False
        self.token_hash = token_hash.lower() if token_hash else None

    def authorized(self, header: bytes | None) -> bool:
        if self.token_hash is None:
            return True
        if not header or not header.lower().startswith(b"bearer "):
            return False
        token = header[7:].strip()
        digest = hashlib.sha256(token).hexdigest()
        return hmac.compare_digest(digest, self.token_hash)


MetricsFn = Callable[[], Awaitable[str]]
#: runs a reload and says how it went (``result``, ``reason``, ``problems``)
ReloadFn = Callable[[str], Awaitable[dict[str, Any]]]


def _response(status: int, body: bytes, content_type: bytes) -> bytes:
    reason = {
        200: b"OK",
        403: b"Forbidden",
        404: b"Not Found",
        405: b"Method Not Allowed",
        400: b"Bad Request",
        503: b"Service Unavailable",
        500: b"Internal Server Error",
    }
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
        b"cache-control: no-store\r\nconnection: close\r\n\r\n"
        % (status, reason.get(status, b"Unknown"), content_type, len(body))
    ) + body


_JSON = b"application/json; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"
_PROM = b"text/plain; version=0.0.4; charset=utf-8"


class AdminProtocol(asyncio.Protocol):
    def __init__(
        self,
        state: AdminState,
        metrics: MetricsFn,
        reload: ReloadFn | None = None,
        *,
        backends: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        config: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.reload = reload
        self.backends = backends
        self.config = config
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.auth: bytes | None = None
        self.size = 0
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports do not subclass asyncio's: cast, not assert
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.size += len(data)
        if self.size > MAX_REQUEST_BYTES:
            self._send(_response(400, b"request too large\n", _TEXT))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(_response(400, b"bad request\n", _TEXT))

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.auth = value

    def on_headers_complete(self) -> None:
        self.done = True
        method = self.parser.get_method()
        path = httptools.parse_url(self.url).path.decode("latin-1")
        asyncio.get_running_loop().create_task(self._answer(method, path))

    async def _answer(self, method: bytes, path: str) -> None:
        try:
            self._send(await self._route(method, path))
        except Exception:
            log.exception("admin request failed")
            self._send(_response(500, b"internal error\n", _TEXT))

    async def _route(self, method: bytes, path: str) -> bytes:
        known = {"/metrics", "/livez", "/healthz", "/readyz", "/startupz", "/reload"}
        known |= {"/backends", "/config"}
        missing = (
            (path == "/reload" and self.reload is None)
            or (path == "/backends" and self.backends is None)
            or (path == "/config" and self.config is None)
        )
        if path not in known or missing:
            return _response(404, b"not found\n", _TEXT)
        st = self.state
        if path == "/reload":
            if method != b"POST":
                return _response(405, b"method not allowed\n", _TEXT)
            if not st.authorized(self.auth):
                return _response(403, b"forbidden\n", _TEXT)
            assert self.reload is not None
            outcome = await self.reload("POST /reload")
            code = 200 if outcome.get("result") == "applied" else 409
            return _response(code, json.dumps(outcome).encode() + b"\n", _JSON)
        if method != b"GET":
            return _response(405, b"method not allowed\n", _TEXT)
        if path in ("/backends", "/config"):
            if not st.authorized(self.auth):
                return _response(403, b"forbidden\n", _TEXT)
            if path == "/backends":
                assert self.backends is not None
                data = await self.backends()
            else:
                assert self.config is not None
                data = self.config()
            return _response(200, json.dumps(data, indent=1).encode() + b"\n", _JSON)
        if path == "/metrics":
            if not st.authorized(self.auth):
                return _response(403, b"forbidden\n", _TEXT)
            return _response(200, (await self.metrics()).encode(), _PROM)
        phase = st.phase.value
        if path in ("/livez", "/healthz"):
            code = 200
        elif path == "/readyz":
            code = 200 if st.phase is Phase.READY else 503
        else:  # /startupz
            code = 200 if st.started else 503
        body = json.dumps({"status": phase}).encode() + b"\n"
        return _response(code, body, _JSON)

    def _send(self, data: bytes) -> None:
        self.done = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()
