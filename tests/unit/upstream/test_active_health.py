"""Active health checks (upstream/health.py) against real local servers:
asyncio HTTP/1.1 and HTTP/2 origins (cleartext and TLS), a grpcio health
server, a refused port and servers that never answer; the checker's
rise/fall thresholds, transitions, jitter and stop."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from expressgateway.config.model import BackendConfig, ClusterConfig
from expressgateway.config.traffic import HealthCheckConfig
from expressgateway.observability.metrics import REGISTRY
from expressgateway.upstream.health import (
    HealthChecker,
    backend_name,
    grpc_health_request,
    grpc_serving_status,
    run_probe,
)
from tests.support.h3origin import h3_origin

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0  # bound of every wait for the checker


def backend(port: int, host: str = "127.0.0.1", **kw: Any) -> BackendConfig:
    h = f"[{host}]" if ":" in host else host
    return BackendConfig(address=f"{h}:{port}", host=host, port=port, **kw)


def check(kind: str, **kw: Any) -> HealthCheckConfig:
    kw.setdefault("timeout_ms", 500)
    kw.setdefault("interval_ms", 50)
    kw.setdefault("jitter_ms", 0)
    return HealthCheckConfig(kind=kind, **kw)  # type: ignore[arg-type]


def probe(b: BackendConfig, hc: HealthCheckConfig) -> str | None:
    return asyncio.run(run_probe(b, hc))


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A bound, non-listening port: a connect gets RST (ECONNREFUSED)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


# -- servers -------------------------------------------------------------------------------


class Server:
    """An asyncio server on 127.0.0.1 that closes every connection it made."""

    def __init__(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.ssl_ctx = ssl_ctx
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepts: list[float] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.ssl_ctx)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(asyncio.get_running_loop().time())
        self.writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # TCP only: wait for the client to go


class Http1Origin(Server):
    """Answers each GET with the next status of ``script`` (then ``status``)
    and ``body``; ``hang`` never answers; ``interim`` sends a 103 first."""

    def __init__(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_ctx)
        self.status = 200
        self.body = b"all good"
        self.hang = False
        self.interim = False
        self.script: list[int] = []
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        if self.hang:
            await reader.read()
            return
        status = self.script.pop(0) if self.script else self.status
        if self.interim:
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(self.body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + self.body
        )
        await writer.drain()


class H2Origin(Server):
    """HTTP/2 (h2c prior knowledge, or TLS with ALPN h2): every request gets
    ``status`` and ``body``; ``hang`` never answers."""

    def __init__(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_ctx)
        self.status = 200
        self.body = b"all good"
        self.hang = False
        self.requests: list[dict[bytes, bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    self.requests.append({bytes(k): bytes(v) for k, v in ev.headers})
                    if self.hang:
                        continue
                    conn.send_headers(
                        ev.stream_id,
                        [(":status", str(self.status)), ("content-length", str(len(self.body)))],
                    )
                    conn.send_data(ev.stream_id, self.body, end_stream=True)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    writer.write(conn.data_to_send())
                    return
            writer.write(conn.data_to_send())


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> Callable[[list[str]], ssl.SSLContext]:
    cert = ca.issue_cert("localhost", "127.0.0.1")

    def make(alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        ctx.set_alpn_protocols(alpn)
        return ctx

    return make


@pytest.fixture(scope="module")
def ca_path(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hc") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def grpc_health() -> Iterator[tuple[int, health.HealthServicer]]:
    """A real grpcio health server: "" and "svc.Up" SERVING, "svc.Down" NOT_SERVING."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("svc.Up", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("svc.Down", health_pb2.HealthCheckResponse.NOT_SERVING)
    yield port, servicer
    server.stop(None).wait()


def serve(make: Callable[[], Server], body: Callable[[Any], Any]) -> Any:
    """Run ``body(server)`` (a coroutine function) with the server up."""

    async def main() -> Any:
        async with make() as srv:
            return await body(srv)

    return asyncio.run(main())


# -- tcp -------------------------------------------------------------------------------------


def test_tcp_passes_on_connect() -> None:
    async def body(srv: Server) -> str | None:
        return await run_probe(backend(srv.port), check("tcp"))

    assert serve(Server, body) is None


def test_tcp_fails_on_refused_port() -> None:
    with refused_port() as port:
        assert probe(backend(port), check("tcp")) == "connect refused"


# -- http / https ----------------------------------------------------------------------------


def test_http_passes_and_sends_get_with_host_and_close() -> None:
    async def body(srv: Server) -> tuple[str | None, str | None]:
        b = backend(srv.port)
        a = await run_probe(b, check("http", path="/healthz", body_contains="good"))
        c = await run_probe(b, check("http", host="api.example"))
        return a, c

    origin = Http1Origin()
    assert serve(lambda: origin, body) == (None, None)
    first = origin.heads[0].lower()
    assert first.startswith(b"get /healthz http/1.1\r\n")
    assert f"host: 127.0.0.1:{origin.port}\r\n".encode() in first
    assert b"connection: close\r\n" in first
    assert b"host: api.example\r\n" in origin.heads[1].lower()


@pytest.mark.parametrize(
    ("setup", "hc", "reason"),
    [
        (lambda o: setattr(o, "status", 503), {}, "status 503"),
        (lambda o: None, {"expected_status": "204-204"}, "status 200"),
        (lambda o: None, {"body_contains": "nope"}, "body mismatch"),
        (lambda o: setattr(o, "hang", True), {"timeout_ms": 150}, "timeout"),
    ],
    ids=["503", "outside-range", "body-mismatch", "timeout"],
)
def test_http_fails(setup: Callable[[Http1Origin], None], hc: dict[str, Any], reason: str) -> None:
    origin = Http1Origin()
    setup(origin)

    async def body(srv: Server) -> str | None:
        return await run_probe(backend(srv.port), check("http", **hc))

    assert serve(lambda: origin, body) == reason


def test_http_fails_on_refused_port() -> None:
    with refused_port() as port:
        assert probe(backend(port), check("http")) == "connect refused"


def test_http_skips_interim_responses_and_reads_at_most_64k() -> None:
    origin = Http1Origin()
    origin.interim = True

    async def body(srv: Server) -> list[str | None]:
        b = backend(srv.port)
        out = [await run_probe(b, check("http", expected_status="200"))]
        origin.interim = False
        origin.body = b"x" * (64 * 1024) + b"needle"  # past the first 64 KiB
        out.append(await run_probe(b, check("http", body_contains="needle")))
        origin.body = b"x" * (64 * 1024 - 6) + b"needle"  # the last bytes of them
        out.append(await run_probe(b, check("http", body_contains="needle")))
        return out

    assert serve(lambda: origin, body) == [None, "body mismatch", None]


def test_https_verifies_with_the_backends_ca(
    server_tls: Callable[[list[str]], ssl.SSLContext], ca_path: str
) -> None:
    origin = Http1Origin(server_tls(["http/1.1"]))

    async def body(srv: Server) -> list[str | None]:
        hc = check("https", body_contains="good")
        return [
            await run_probe(backend(srv.port, tls=True, tls_ca_path=ca_path), hc),
            await run_probe(
                backend(srv.port, tls=True, tls_ca_path=ca_path, tls_verify_hostname="localhost"),
                hc,
            ),
            # not our CA (system store): refused
            await run_probe(backend(srv.port, tls=True), hc),
            # wrong name
            await run_probe(
                backend(srv.port, tls=True, tls_ca_path=ca_path, tls_verify_hostname="other.test"),
                hc,
            ),
            # verification off accepts any certificate
            await run_probe(backend(srv.port, tls=True, tls_verify_peer=False), hc),
        ]

    ok, ok_name, untrusted, wrong_name, unverified = serve(lambda: origin, body)
    assert ok is None and ok_name is None and unverified is None
    assert untrusted is not None and untrusted.startswith("tls verify failed")
    assert wrong_name is not None and wrong_name.startswith("tls verify failed")


# -- h2 ----------------------------------------------------------------------------------------


def test_h2_cleartext_passes_and_sends_get() -> None:
    origin = H2Origin()

    async def body(srv: Server) -> str | None:
        return await run_probe(
            backend(srv.port, protocol="h2"), check("h2", path="/hc", body_contains="good")
        )

    assert serve(lambda: origin, body) is None
    req = origin.requests[0]
    assert req[b":method"] == b"GET" and req[b":path"] == b"/hc"
    assert req[b":scheme"] == b"http"
    assert req[b":authority"] == f"127.0.0.1:{origin.port}".encode()


@pytest.mark.parametrize(
    ("setup", "hc", "reason"),
    [
        (lambda o: setattr(o, "status", 503), {}, "status 503"),
        (lambda o: None, {"body_contains": "nope"}, "body mismatch"),
        (lambda o: setattr(o, "hang", True), {"timeout_ms": 150}, "timeout"),
    ],
    ids=["503", "body-mismatch", "timeout"],
)
def test_h2_fails(setup: Callable[[H2Origin], None], hc: dict[str, Any], reason: str) -> None:
    origin = H2Origin()
    setup(origin)

    async def body(srv: Server) -> str | None:
        return await run_probe(backend(srv.port, protocol="h2"), check("h2", **hc))

    assert serve(lambda: origin, body) == reason


def test_h2_fails_on_refused_port() -> None:
    with refused_port() as port:
        assert probe(backend(port, protocol="h2"), check("h2")) == "connect refused"


def test_h2_over_tls_needs_alpn_h2(
    server_tls: Callable[[list[str]], ssl.SSLContext], ca_path: str
) -> None:
    async def run(alpn: list[str]) -> str | None:
        async with H2Origin(server_tls(alpn)) as srv:
            b = backend(srv.port, protocol="h2", tls=True, tls_ca_path=ca_path)
            return await run_probe(b, check("h2", body_contains="good"))

    assert asyncio.run(run(["h2"])) is None
    # a server without h2 selects nothing of what we offer
    assert asyncio.run(run(["http/1.1"])) == "alpn none, not h2"


# -- grpc --------------------------------------------------------------------------------------


def test_h3_passes_and_checks_status_and_body(tls_files: dict[str, str]) -> None:
    """HTTP/3 GET against the test HTTP/3 origin (aioquic, its own process),
    verified with the backend's CA."""
    with h3_origin(tls_files) as port:
        b = backend(port, tls_ca_path=tls_files["ca"], tls_verify_hostname="localhost")
        assert probe(b, check("h3", timeout_ms=3000)) is None
        assert probe(b, check("h3", timeout_ms=3000, body_contains="hello")) is None
        assert probe(b, check("h3", timeout_ms=3000, body_contains="nope")) == "body mismatch"
        assert probe(b, check("h3", path="/status/503", timeout_ms=3000)) == "status 503"
        # a certificate the backend's CA did not sign: the handshake fails
        other = trustme.CA()
        with contextlib.ExitStack() as stack:
            ca_file = stack.enter_context(other.cert_pem.tempfile())
            untrusted = backend(port, tls_ca_path=ca_file, tls_verify_hostname="localhost")
            reason = probe(untrusted, check("h3", timeout_ms=3000))
        assert reason is not None and reason.startswith("quic handshake failed ("), reason
        assert "issuer" in reason, reason


def test_h3_fails_when_nothing_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, silent: the handshake never completes
        b = backend(int(s.getsockname()[1]), tls_verify_peer=False)
        assert probe(b, check("h3", timeout_ms=300)) == "timeout"


def test_grpc_message_encoding() -> None:
    assert grpc_health_request("") == b"\x00\x00\x00\x00\x00"
    assert grpc_health_request("svc") == b"\x00\x00\x00\x00\x05\x0a\x03svc"
    assert grpc_health_request("s" * 200)[5:8] == b"\x0a\xc8\x01"  # two-byte varint length
    req = health_pb2.HealthCheckRequest()
    req.ParseFromString(grpc_health_request("a.B")[5:])
    assert req.service == "a.B"
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    raw = serving.SerializeToString()
    assert grpc_serving_status(b"\x00" + len(raw).to_bytes(4, "big") + raw) == 1
    assert grpc_serving_status(b"\x00\x00\x00\x00\x00") == 0  # UNKNOWN is left out


def test_grpc_passes_when_serving(grpc_health: tuple[int, Any]) -> None:
    port, _ = grpc_health
    b = backend(port, protocol="h2")
    assert probe(b, check("grpc")) is None
    assert probe(b, check("grpc", grpc_service="svc.Up")) is None


def test_grpc_fails_when_not_serving_or_unknown(grpc_health: tuple[int, Any]) -> None:
    port, _ = grpc_health
    b = backend(port, protocol="h2")
    assert probe(b, check("grpc", grpc_service="svc.Down")) == "NOT_SERVING"
    assert probe(b, check("grpc", grpc_service="svc.Missing")) == "grpc-status 5"  # NOT_FOUND


def test_grpc_fails_on_refused_port_timeout_and_plain_http2() -> None:
    with refused_port() as port:
        assert probe(backend(port, protocol="h2"), check("grpc")) == "connect refused"
    hung = H2Origin()
    hung.hang = True

    async def timeout(srv: Server) -> str | None:
        return await run_probe(backend(srv.port, protocol="h2"), check("grpc", timeout_ms=150))

    assert serve(lambda: hung, timeout) == "timeout"
    sent = hung.requests[0]
    assert sent[b":method"] == b"POST"
    assert sent[b":path"] == b"/grpc.health.v1.Health/Check"
    assert sent[b"content-type"] == b"application/grpc"
    assert sent[b"te"] == b"trailers"

    async def no_grpc(srv: Server) -> str | None:  # an HTTP/2 server that is no gRPC server
        return await run_probe(backend(srv.port, protocol="h2"), check("grpc"))

    assert serve(H2Origin, no_grpc) == "no grpc-status"


def test_probes_run_on_uvloop(
    server_tls: Callable[[list[str]], ssl.SSLContext],
    ca_path: str,
    grpc_health: tuple[int, Any],
) -> None:
    """The supervisor's loop is uvloop when installed: TLS (ALPN read back),
    HTTP/2 and gRPC probes work there too."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[str | None]:
        out: list[str | None] = []
        async with H2Origin(server_tls(["h2"])) as srv:
            b = backend(srv.port, protocol="h2", tls=True, tls_ca_path=ca_path)
            out.append(await run_probe(b, check("h2", body_contains="good")))
        async with Http1Origin(server_tls(["http/1.1"])) as srv:
            b = backend(srv.port, tls=True, tls_ca_path=ca_path)
            out.append(await run_probe(b, check("https", body_contains="good")))
        out.append(await run_probe(backend(grpc_health[0], protocol="h2"), check("grpc")))
        with refused_port() as port:
            out.append(await run_probe(backend(port), check("http")))
        return out

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [None, None, None, "connect refused"]


# -- the checker ---------------------------------------------------------------------------------


def cluster(name: str, *backends: BackendConfig, hc: HealthCheckConfig | None) -> ClusterConfig:
    return ClusterConfig(name=name, backends=backends, health_check=hc)


async def wait_for(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def metric(name: str, *labels: str) -> float:
    return float(REGISTRY.families[name].labels(*labels).value)


def test_targets_only_for_clusters_with_checks() -> None:
    hc = check("tcp")
    b4, b6 = backend(1), backend(2, host="::1")
    checker = HealthChecker(
        [cluster("a", b4, b6, b4, hc=hc), cluster("b", b4, hc=None)], lambda *a: None
    )
    assert [(t.cluster, t.backend) for t in checker.targets] == [
        ("a", "127.0.0.1:1"),
        ("a", "[::1]:2"),
    ]
    assert backend_name(b6) == "[::1]:2"


def test_fall_and_rise_thresholds_and_transitions_only() -> None:
    """Scripted statuses; fall = 3, rise = 2: two failures do not flip, the
    third does; one pass after DOWN does not flip back, the second does."""
    origin = Http1Origin()
    ok, bad = 200, 503
    origin.script = [ok, bad, bad, ok, bad, bad, bad, bad, ok, bad, ok, ok, ok]
    #  check number:  1    2    3   4    5    6    7   8   9   10  11  12  13
    # DOWN at 7 (third failure in a row), UP at 12 (second pass in a row)
    calls: list[tuple[str, str, bool, int]] = []

    async def body(srv: Server) -> None:
        b = backend(srv.port)
        checker = HealthChecker(
            [cluster("pool", b, hc=check("http", rise=2, fall=3))],
            lambda c, n, up: calls.append((c, n, up, checker.targets[0].checks)),
        )
        name = backend_name(b)
        checker.start()
        try:
            assert metric("health_check_up", "pool", name) == 1  # optimistic at start
            await wait_for(lambda: checker.targets[0].checks >= 7)
            assert metric("health_check_up", "pool", name) == 0
            await wait_for(lambda: checker.targets[0].checks >= 14)
        finally:
            await checker.stop()
        assert checker.verdicts() == {("pool", name): True}
        assert metric("health_check_up", "pool", name) == 1
        assert metric("health_checks_total", "pool", name, "fail") == 7
        assert metric("health_checks_total", "pool", name, "pass") >= 7

    serve(lambda: origin, body)
    name = f"127.0.0.1:{origin.port}"
    assert calls == [("pool", name, False, 7), ("pool", name, True, 12)]


def test_transition_is_logged_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    downs: list[bool] = []
    with refused_port() as port:

        async def main() -> int:
            checker = HealthChecker(
                [cluster("logged", backend(port), hc=check("tcp", fall=2))],
                lambda c, n, up: downs.append(up),
            )
            checker.start()
            try:
                await wait_for(lambda: checker.targets[0].checks >= 4)
            finally:
                await checker.stop()
            return checker.targets[0].checks

        with caplog.at_level("WARNING", logger="expressgateway.health"):
            asyncio.run(main())
    assert downs == [False]  # once, however many failures follow
    [rec] = [r for r in caplog.records if r.name == "expressgateway.health"]
    assert rec.levelname == "WARNING"
    assert rec.getMessage() == "backend health check down"
    assert rec.__dict__["cluster"] == "logged"
    assert rec.__dict__["backend"] == f"127.0.0.1:{port}"
    assert rec.__dict__["reason"] == "connect refused"


def test_a_failing_on_change_does_not_stop_the_checks() -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("channel gone")

    with refused_port() as port:

        async def main() -> int:
            checker = HealthChecker([cluster("x", backend(port), hc=check("tcp", fall=1))], boom)
            checker.start()
            try:
                await wait_for(lambda: checker.targets[0].checks >= 3)
            finally:
                await checker.stop()
            return checker.targets[0].checks

        assert asyncio.run(main()) >= 3


def test_jitter_keeps_intervals_within_interval_plus_jitter() -> None:
    """interval 100 ms, jitter 50 ms: the gaps between checks (seen as the
    server's accept times) stay in [100, 150] ms (plus scheduling slack) and
    do vary; the first check comes within the jitter."""

    async def body(srv: Server) -> None:
        checker = HealthChecker(
            [cluster("j", backend(srv.port), hc=check("tcp", interval_ms=100, jitter_ms=50))],
            lambda *a: None,
        )
        started = asyncio.get_running_loop().time()
        checker.start()
        try:
            await wait_for(lambda: len(srv.accepts) >= 9)
        finally:
            await checker.stop()
        assert srv.accepts[0] - started <= 0.05 + 0.03
        gaps = [b - a for a, b in zip(srv.accepts, srv.accepts[1:], strict=False)]
        assert all(0.1 - 0.002 <= g <= 0.15 + 0.03 for g in gaps), gaps
        assert max(gaps) - min(gaps) > 0.005, gaps

    serve(Server, body)


def test_jitter_draws_are_bounded() -> None:
    """The delays the checker asks for, with a recording random source."""
    draws: list[tuple[float, float]] = []

    class Recording(random.Random):
        def uniform(self, a: float, b: float) -> float:
            draws.append((a, b))
            return b

    async def main() -> None:
        with refused_port() as port:
            hc = check("tcp", interval_ms=40, jitter_ms=80, fall=100)
            checker = HealthChecker(
                [cluster("r", backend(port), hc=hc)], lambda *a: None, rng=Recording()
            )
            checker.start()
            try:
                await wait_for(lambda: checker.targets[0].checks >= 2)
            finally:
                await checker.stop()

    asyncio.run(main())
    # first: within min(jitter, interval); after each check: jitter on top of the interval
    assert draws[0] == (0, 0.04)
    assert draws[1:] and all(d == (0, 0.08) for d in draws[1:])


def test_stop_ends_the_checks() -> None:
    async def body(srv: Server) -> None:
        checker = HealthChecker([cluster("s", backend(srv.port), hc=check("tcp"))], lambda *a: None)
        checker.start()
        await wait_for(lambda: len(srv.accepts) >= 2)
        await checker.stop()
        seen = len(srv.accepts)
        await asyncio.sleep(0.2)
        assert len(srv.accepts) == seen
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health:")]

    serve(Server, body)
