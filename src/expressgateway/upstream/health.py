"""Active health checks, run once per gateway (in the supervisor).

One asyncio task per (cluster, backend) whose cluster has a
``[clusters.health_check]``. Each task loops: wait ``interval`` plus a
random ``0..jitter`` (counted from the end of the previous check; the first
check comes after ``0..min(jitter, interval)``), run one probe under
``timeout``, and count consecutive passes and failures. A backend starts UP
(so traffic flows at boot), turns DOWN after ``fall`` consecutive failures
and UP again after ``rise`` consecutive passes. Only transitions reach
``on_change`` (the supervisor broadcasts them to every worker) and the log
(WARNING, with cluster, backend and the reason of the last check).

Probes (each on a new connection, closed afterwards):

- ``tcp``: connect, close.
- ``http`` / ``https``: one HTTP/1.1 ``GET path`` with ``Host`` and
  ``Connection: close``, response parsed by httptools; healthy when the
  status is in ``expected_status`` and, with ``body_contains``, the first
  64 KiB of the body contain it. ``https`` is TLS with the backend's
  ``tls_ca_path`` / ``tls_verify_hostname`` / ``tls_verify_peer``.
- ``h2``: HTTP/2 (h2c prior knowledge, or TLS with ALPN ``h2`` for a
  ``tls = true`` backend), ``GET path``, same status and body rules.
- ``grpc``: HTTP/2 as ``h2``, ``grpc.health.v1.Health/Check`` for
  ``grpc_service``; healthy when ``grpc-status`` is 0 and the answer is
  ``SERVING``.

Metrics (supervisor registry, rendered with the merged worker metrics):
``health_checks_total{cluster,backend,result}`` and
``health_check_up{cluster,backend}`` (the checker's verdict; a worker's
``backend_up`` also counts outlier ejection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools
from aioquic.asyncio.client import connect as quic_connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived as H3DataReceived
from aioquic.h3.events import HeadersReceived as H3HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent

from expressgateway import __version__
from expressgateway.config.model import BackendConfig, ClusterConfig
from expressgateway.config.traffic import HealthCheckConfig
from expressgateway.io.tls import client_context
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.endpoint import Endpoint

log = logging.getLogger("expressgateway.health")

_CHECKS = REGISTRY.counter(
    "health_checks_total",
    "Active health checks run by the supervisor, by result (pass|fail).",
    ("cluster", "backend", "result"),
)
_CHECK_UP = REGISTRY.gauge(
    "health_check_up",
    "1 while the active health check says a backend is up, else 0.",
    ("cluster", "backend"),
)

#: most body bytes read for ``body_contains`` (and most response bytes for gRPC)
BODY_LIMIT = 64 * 1024
_READ = 65536
USER_AGENT = f"ExpressGateway-HealthCheck/{__version__}"
GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check"
_GRPC_SERVING = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

OnChange = Callable[[str, str, bool], None]


class ProbeFailed(Exception):
    """One check failed; ``reason`` is short and goes to the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def backend_name(b: BackendConfig) -> str:
    """The name workers know the backend by (``Endpoint.name``: host:port)."""
    return Endpoint(host=b.host, port=b.port).name


def status_range(spec: str) -> tuple[int, int]:
    lo, sep, hi = spec.partition("-")
    a = int(lo)
    return a, int(hi) if sep else a


# -- probes ----------------------------------------------------------------------------


class _Ssl:
    """TLS client contexts, made once per (CA, verify, ALPN)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool, tuple[str, ...]], ssl.SSLContext] = {}

    def get(self, b: BackendConfig, alpn: tuple[str, ...]) -> ssl.SSLContext:
        key = (b.tls_ca_path or "", b.tls_verify_peer, alpn)
        ctx = self._cache.get(key)
        if ctx is None:
            try:
                ctx = client_context(ca_path=b.tls_ca_path, verify=b.tls_verify_peer, alpn=alpn)
            except (OSError, ssl.SSLError) as exc:
                raise ProbeFailed(f"tls config: {exc}") from exc
            self._cache[key] = ctx
        return ctx


_SSL = _Ssl()


async def _connect(
    b: BackendConfig, ctx: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(
            b.host,
            b.port,
            ssl=ctx,
            server_hostname=(b.tls_verify_hostname or b.host) if ctx is not None else None,
        )
    except ConnectionRefusedError as exc:
        raise ProbeFailed("connect refused") from exc
    except ssl.SSLCertVerificationError as exc:
        raise ProbeFailed(f"tls verify failed: {exc.verify_message or exc}") from exc
    except ssl.SSLError as exc:
        raise ProbeFailed(f"tls error: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ProbeFailed(f"connect error: {exc.strerror or exc}") from exc


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(_READ)
    except ssl.SSLError as exc:
        raise ProbeFailed(f"tls error: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ProbeFailed(f"read error: {exc.strerror or exc}") from exc


def _authority(b: BackendConfig, hc: HealthCheckConfig) -> str:
    return hc.host or backend_name(b)


def _check_status(status: int, hc: HealthCheckConfig) -> None:
    lo, hi = status_range(hc.expected_status)
    if not lo <= status <= hi:
        raise ProbeFailed(f"status {status}")


async def probe_tcp(b: BackendConfig, hc: HealthCheckConfig) -> None:
    _, writer = await _connect(b, None)
    _close(writer)


class _H1Response:
    """httptools callbacks: the final (non-1xx) status and up to 64 KiB of body."""

    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.complete = False
        self._skip = False  # inside a 1xx interim response
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._skip = False

    def on_headers_complete(self) -> None:
        code = int(self.parser.get_status_code())
        if 100 <= code < 200 and code != 101:
            self._skip = True
        else:
            self.status = code

    def on_body(self, data: bytes) -> None:
        room = BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += data[:room]

    def on_message_complete(self) -> None:
        if not self._skip:
            self.complete = True


async def probe_http(b: BackendConfig, hc: HealthCheckConfig, *, tls: bool) -> None:
    ctx = _SSL.get(b, ("http/1.1",)) if tls else None
    reader, writer = await _connect(b, ctx)
    try:
        writer.write(
            (
                f"GET {hc.path} HTTP/1.1\r\n"
                f"Host: {_authority(b, hc)}\r\n"
                f"User-Agent: {USER_AGENT}\r\n"
                "Accept: */*\r\n"
                "Connection: close\r\n\r\n"
            ).encode("latin-1")
        )
        resp = _H1Response()
        needle = hc.body_contains.encode() if hc.body_contains is not None else None
        while True:
            data = await _read(reader)
            if not data:
                if not resp.status:
                    raise ProbeFailed("closed before response")
                break
            try:
                resp.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                pass  # a 101: its status decides below
            except httptools.HttpParserError as exc:
                raise ProbeFailed(f"bad response: {exc}") from exc
            if not resp.status:
                continue
            _check_status(resp.status, hc)
            if needle is None or needle in resp.body:
                return
            if resp.complete or len(resp.body) >= BODY_LIMIT:
                break
        _check_status(resp.status, hc)
        if needle is not None and needle not in resp.body:
            raise ProbeFailed("body mismatch")
    finally:
        _close(writer)


# -- HTTP/2 and gRPC -------------------------------------------------------------------------


@dataclass
class _H2Result:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False

    @property
    def status(self) -> int:
        try:
            return int(self.headers.get(b":status", b"0"))
        except ValueError:
            return 0


async def _h2_exchange(
    b: BackendConfig,
    hc: HealthCheckConfig,
    headers: list[tuple[str, str]],
    body: bytes | None,
    done: Callable[[_H2Result], bool],
) -> _H2Result:
    """One HTTP/2 exchange on a new connection; returns once ``done`` says
    enough was seen, or the stream ended."""
    ctx = _SSL.get(b, ("h2",)) if b.tls else None
    reader, writer = await _connect(b, ctx)
    try:
        if ctx is not None:
            sslobj = writer.get_extra_info("ssl_object")
            alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
            if alpn != "h2":
                raise ProbeFailed(f"alpn {alpn or 'none'}, not h2")
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        scheme = "https" if ctx is not None else "http"
        conn.send_headers(
            1,
            [
                (":method", "GET" if body is None else "POST"),
                (":scheme", scheme),
                (":authority", _authority(b, hc)),
                *headers,
                ("user-agent", USER_AGENT),
            ],
            end_stream=body is None,
        )
        if body is not None:
            conn.send_data(1, body, end_stream=True)
        writer.write(conn.data_to_send())
        res = _H2Result()
        while not res.ended:
            data = await _read(reader)
            if not data:
                raise ProbeFailed("closed before response" if not res.headers else "closed early")
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise ProbeFailed(f"h2 protocol error: {exc}") from exc
            for ev in events:
                _h2_event(conn, ev, res)
            out = conn.data_to_send()
            if out:
                writer.write(out)
            if res.headers and done(res):
                break
        with contextlib.suppress(Exception):
            conn.close_connection()
            writer.write(conn.data_to_send())
        return res
    finally:
        _close(writer)


def _h2_event(conn: h2.connection.H2Connection, ev: Any, res: _H2Result) -> None:
    if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == 1:
        res.headers = {bytes(k): bytes(v) for k, v in ev.headers}
    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == 1:
        room = BODY_LIMIT - len(res.body)
        if room > 0:
            res.body += ev.data[:room]
        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
    elif isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == 1:
        res.trailers = {bytes(k): bytes(v) for k, v in ev.headers}
    elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
        res.ended = True
    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == 1:
        raise ProbeFailed(f"stream reset (code {int(ev.error_code)})")
    elif isinstance(ev, h2.events.ConnectionTerminated) and not res.ended:
        raise ProbeFailed(f"goaway (code {int(ev.error_code or 0)})")


async def probe_h2(b: BackendConfig, hc: HealthCheckConfig) -> None:
    needle = hc.body_contains.encode() if hc.body_contains is not None else None
    lo, hi = status_range(hc.expected_status)

    def done(res: _H2Result) -> bool:
        if not lo <= res.status <= hi or needle is None:
            return True
        return needle in res.body or len(res.body) >= BODY_LIMIT

    res = await _h2_exchange(b, hc, [(":path", hc.path)], None, done)
    _check_status(res.status, hc)
    if needle is not None and needle not in res.body:
        raise ProbeFailed("body mismatch")


class _H3Probe(QuicConnectionProtocol):
    """The client side of one HTTP/3 check: aioquic's QUIC connection with an
    H3 layer; ``response`` resolves with (status, body) or fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.status = 0
        self.body = bytearray()
        self.response: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.enough: Callable[[int, bytes], bool] = lambda status, body: False
        #: why the connection closed before a response ended, if it did
        self.failure = ""

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            self.failure = f"code {event.error_code}: {event.reason_phrase or 'no reason'}"
            if not self.response.done():
                self.response.set_result(None)
            return
        for ev in self.h3.handle_event(event):
            if self.response.done():
                return
            if isinstance(ev, H3HeadersReceived):
                for name, value in ev.headers:
                    if name == b":status":
                        self.status = int(value)
            elif isinstance(ev, H3DataReceived) and len(self.body) < BODY_LIMIT:
                self.body += ev.data[: BODY_LIMIT - len(self.body)]
            if getattr(ev, "stream_ended", False) or (
                self.status and self.enough(self.status, bytes(self.body))
            ):
                self.response.set_result(None)


async def probe_h3(b: BackendConfig, hc: HealthCheckConfig) -> None:
    """HTTP/3 ``GET path`` on a new QUIC connection, verified like the
    ``h3`` backend itself (``tls_ca_path``, ``tls_verify_hostname``,
    ``tls_verify_peer``)."""
    conf = QuicConfiguration(
        is_client=True,
        alpn_protocols=["h3"],
        server_name=b.tls_verify_hostname or b.host,
    )
    if b.tls_verify_peer:
        conf.verify_mode = ssl.CERT_REQUIRED
        if b.tls_ca_path:  # else aioquic's default bundle (certifi)
            conf.load_verify_locations(cafile=b.tls_ca_path)
    else:
        conf.verify_mode = ssl.CERT_NONE
    needle = hc.body_contains.encode() if hc.body_contains is not None else None
    lo, hi = status_range(hc.expected_status)
    made: list[_H3Probe] = []

    def factory(*args: Any, **kwargs: Any) -> _H3Probe:
        made.append(_H3Probe(*args, **kwargs))
        return made[-1]

    try:
        async with quic_connect(
            b.host, b.port, configuration=conf, create_protocol=factory
        ) as client:
            probe = cast(_H3Probe, client)
            probe.enough = lambda status, body: (
                not lo <= status <= hi or needle is None or needle in body
            )
            sid = probe._quic.get_next_available_stream_id()
            probe.h3.send_headers(
                sid,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", _authority(b, hc).encode()),
                    (b":path", hc.path.encode()),
                    (b"user-agent", USER_AGENT.encode()),
                ],
                end_stream=True,
            )
            probe.transmit()
            await probe.response
    except ConnectionError as exc:  # the handshake failed (aioquic raises this)
        why = made[0].failure if made and made[0].failure else str(exc) or "closed"
        raise ProbeFailed(f"quic handshake failed ({why})") from exc
    if not probe.status:
        raise ProbeFailed(f"quic closed before a response ({probe.failure})")
    _check_status(probe.status, hc)
    if needle is not None and needle not in probe.body:
        raise ProbeFailed("body mismatch")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def grpc_health_request(service: str) -> bytes:
    """A length-prefixed gRPC message: HealthCheckRequest{service} (field 1,
    length-delimited; proto3 leaves an empty string out)."""
    raw = service.encode()
    msg = b"\x0a" + _varint(len(raw)) + raw if raw else b""
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ProbeFailed("bad grpc message")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def grpc_serving_status(body: bytes) -> int:
    """The ``status`` (field 1, varint) of a length-prefixed
    HealthCheckResponse; 0 (UNKNOWN) when absent."""
    if len(body) < 5:
        raise ProbeFailed("no grpc message")
    if body[0] != 0:
        raise ProbeFailed("compressed grpc message")
    (size,) = struct.unpack_from(">I", body, 1)
    msg = body[5 : 5 + size]
    if len(msg) < size:
        raise ProbeFailed("truncated grpc message")
    status, i = 0, 0
    while i < len(msg):
        key, i = _read_varint(msg, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(msg, i)
            if num == 1:
                status = value
        elif wire == 1:
            i += 8
        elif wire == 2:
            length, i = _read_varint(msg, i)
            i += length
        elif wire == 5:
            i += 4
        else:
            raise ProbeFailed("bad grpc message")
    if i > len(msg):
        raise ProbeFailed("bad grpc message")
    return status


async def probe_grpc(b: BackendConfig, hc: HealthCheckConfig) -> None:
    headers = [
        (":path", GRPC_HEALTH_PATH),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    res = await _h2_exchange(
        b, hc, headers, grpc_health_request(hc.grpc_service), lambda r: r.status != 200
    )
    if res.status != 200:
        raise ProbeFailed(f"status {res.status}")
    raw = res.trailers.get(b"grpc-status", res.headers.get(b"grpc-status"))
    if raw is None:
        raise ProbeFailed("no grpc-status")
    if raw != b"0":
        raise ProbeFailed(f"grpc-status {raw.decode('latin-1')}")
    serving = grpc_serving_status(bytes(res.body))
    if serving != 1:
        raise ProbeFailed(_GRPC_SERVING.get(serving, f"serving status {serving}"))


async def run_probe(b: BackendConfig, hc: HealthCheckConfig) -> str | None:
    """One check of ``b``: None when it passes, else the reason it failed."""
    try:
        async with asyncio.timeout(hc.timeout_ms / 1000):
            if hc.kind == "tcp":
                await probe_tcp(b, hc)
            elif hc.kind in ("http", "https"):
                await probe_http(b, hc, tls=hc.kind == "https")
            elif hc.kind == "h2":
                await probe_h2(b, hc)
            elif hc.kind == "h3":
                await probe_h3(b, hc)
            else:
                await probe_grpc(b, hc)
    except ProbeFailed as exc:
        return exc.reason
    except TimeoutError:
        return "timeout"
    except (OSError, ValueError) as exc:  # anything else the wire throws at us
        return f"error: {exc}"
    return None


# -- the checker ---------------------------------------------------------------------------


@dataclass
class Target:
    """One (cluster, backend) under check, and its counts."""

    cluster: str
    backend: str
    config: BackendConfig
    check: HealthCheckConfig
    up: bool = True
    passes: int = 0
    fails: int = 0
    checks: int = 0
    last_reason: str | None = None


class HealthChecker:
    """Runs the active checks of every cluster that has ``health_check``."""

    def __init__(
        self,
        clusters: Sequence[ClusterConfig],
        on_change: OnChange,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.on_change = on_change
        self.rng = rng or random.Random()
        self.targets: list[Target] = []
        seen: set[tuple[str, str]] = set()
        for c in clusters:
            hc = c.health_check
            if hc is None:
                continue
            for b in c.backends:
                name = backend_name(b)
                if (c.name, name) in seen:
                    continue
                seen.add((c.name, name))
                self.targets.append(Target(c.name, name, b, hc))
        self._tasks: list[asyncio.Task[None]] = []

    def verdicts(self) -> dict[tuple[str, str], bool]:
        """The current verdict of every (cluster, backend)."""
        return {(t.cluster, t.backend): t.up for t in self.targets}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for t in self.targets:
            _CHECK_UP.labels(t.cluster, t.backend).set(1 if t.up else 0)
            self._tasks.append(
                loop.create_task(self._run(t), name=f"health:{t.cluster}:{t.backend}")
            )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, t: Target) -> None:
        hc = t.check
        interval = hc.interval_ms / 1000
        jitter = hc.jitter_ms / 1000
        delay = self.rng.uniform(0, min(jitter, interval))
        while True:
            await asyncio.sleep(delay)
            try:
                reason = await run_probe(t.config, hc)
            except Exception as exc:  # a bug in a probe must not end the checks
                log.exception("health check crashed", extra=self._extra(t))
                reason = f"error: {type(exc).__name__}"
            self.record(t, reason)
            delay = interval + self.rng.uniform(0, jitter)

    @staticmethod
    def _extra(t: Target) -> dict[str, Any]:
        return {"cluster": t.cluster, "backend": t.backend, "kind": t.check.kind}

    def record(self, t: Target, reason: str | None) -> None:
        """Count one check result; flip the verdict at ``rise``/``fall``."""
        t.checks += 1
        t.last_reason = reason
        ok = reason is None
        _CHECKS.labels(t.cluster, t.backend, "pass" if ok else "fail").inc()
        if ok:
            t.passes += 1
            t.fails = 0
            flip = not t.up and t.passes >= t.check.rise
        else:
            t.fails += 1
            t.passes = 0
            flip = t.up and t.fails >= t.check.fall
            log.debug("health check failed", extra={**self._extra(t), "reason": reason})
        if not flip:
            return
        t.up = ok
        _CHECK_UP.labels(t.cluster, t.backend).set(1 if ok else 0)
        log.warning(
            "backend health check %s",
            "up" if ok else "down",
            extra={
                **self._extra(t),
                "reason": reason or "passed",
                "consecutive": t.passes if ok else t.fails,
            },
        )
        try:
            self.on_change(t.cluster, t.backend, ok)
        except Exception:
            log.exception("health verdict not delivered", extra=self._extra(t))
