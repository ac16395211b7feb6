"""HTTP/3 through the gateway with independent HTTP/3 stacks on the other
side of it: libcurl (ngtcp2 + nghttp3, via curl_cffi) and ngtcp2's own
example client ``gtlsclient`` in front; ngtcp2's example server
``gtlsserver`` as an HTTP/3 origin behind an ``h1`` and a ``quic``
listener; Alt-Svc discovery from an ``h1s`` listener to the ``quic``
listener on the same port number; gRPC over the HTTP/3 front to a real
grpcio server (``h2`` backend) and to the aioquic HTTP/3 origin."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from curl_cffi import CurlHttpVersion
from grpc_health.v1 import health_pb2

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import h1_listener
from tests.support.h3 import H3Client, H3Response, curl_h3, h3_request
from tests.support.h3origin import h3_origin
from tests.support.h3raw import free_port_pair, h3_config, quic_listener
from tests.support.processes import origin

MiB = 1 << 20
GTLSCLIENT = shutil.which("gtlsclient") or "/usr/bin/gtlsclient"
GTLSSERVER = shutil.which("gtlsserver") or "/usr/sbin/gtlsserver"
CURL_H3 = int(CurlHttpVersion.V3)  # libcurl's CURLINFO_HTTP_VERSION for HTTP/3


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str]) -> Iterator[tuple[int, Gateway]]:
    """The Python origin behind a ``quic`` listener: (UDP port, gateway)."""
    with origin() as backend:
        admin, port = free_port(), free_port(udp=True)
        cfg = h3_config(admin, quic_listener(port, [backend], tls_files))
        with gateway(cfg, admin_port=admin) as gw:
            yield port, gw


# -- libcurl (ngtcp2 + nghttp3) ----------------------------------------------------------------


def test_curl_cffi_get_over_http3(rig: tuple[int, Gateway], tls_files: dict[str, str]) -> None:
    port, gw = rig
    before = gw.metric("http_requests_total", listener="h3", version="h3")
    resp = curl_h3(f"https://localhost:{port}/", ca=tls_files["ca"])
    assert resp.error is None
    assert int(resp.http_version) == CURL_H3
    assert resp.status == 200
    assert resp.body == b"hello from origin"
    assert ("via", "1.1 expressgateway") in resp.headers
    assert gw.metric("http_requests_total", listener="h3", version="h3") == before + 1


def test_curl_cffi_post_body_is_echoed_over_http3(
    rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    port, _ = rig
    body = os.urandom(3 * MiB)
    resp = curl_h3(f"https://localhost:{port}/echo", "POST", ca=tls_files["ca"], data=body)
    assert resp.error is None
    assert int(resp.http_version) == CURL_H3
    assert resp.status == 200
    assert resp.body == body


def test_curl_cffi_large_download_over_http3(
    rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    port, _ = rig
    n = 32 * MiB
    resp = curl_h3(f"https://localhost:{port}/size/{n}", ca=tls_files["ca"], timeout=60)
    assert resp.error is None
    assert int(resp.http_version) == CURL_H3
    assert resp.status == 200
    assert dict(resp.headers)["content-length"] == str(n)
    assert len(resp.body) == n
    assert resp.body == b"x" * n


# -- ngtcp2's example client -----------------------------------------------------------------


def gtlsclient(
    port: int, paths: list[str], download: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """ngtcp2's ``gtlsclient`` (GnuTLS) to 127.0.0.1:``port`` with SNI
    localhost; response heads on stderr, bodies saved under ``download``."""
    urls = [f"https://localhost:{port}{p}" for p in paths]
    return subprocess.run(
        [
            GTLSCLIENT,
            "--sni=localhost",
            "--exit-on-all-streams-close",
            "--no-quic-dump",
            "--no-http-dump",
            "--timeout=10s",
            f"--download={download}",
            *args,
            "127.0.0.1",
            str(port),
            *urls,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def statuses(stderr: str) -> list[int]:
    """The ``:status`` of every response head gtlsclient printed."""
    return [int(s) for s in re.findall(r"\[:status: (\d+)\]", stderr)]


def test_ngtcp2_client_fetches_two_urls_on_one_connection(
    rig: tuple[int, Gateway], tls_files: dict[str, str], tmp_path: Path
) -> None:
    port, gw = rig
    connections = gw.metric("quic_connections_total", listener="h3")
    out = gtlsclient(port, ["/", f"/size/{MiB}"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert statuses(out.stderr) == [200, 200]
    assert (tmp_path / "index.html").read_bytes() == b"hello from origin"
    assert (tmp_path / str(MiB)).read_bytes() == b"x" * MiB
    assert gw.metric("quic_connections_total", listener="h3") == connections + 1


def test_ngtcp2_client_uploads_a_body(
    rig: tuple[int, Gateway], tls_files: dict[str, str], tmp_path: Path
) -> None:
    port, _ = rig
    payload = os.urandom(2 * MiB)
    (tmp_path / "payload").write_bytes(payload)
    got = tmp_path / "got"
    got.mkdir()
    out = gtlsclient(port, ["/sink"], got, "-m", "POST", f"--data={tmp_path / 'payload'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert statuses(out.stderr) == [200]
    answer = json.loads((got / "sink").read_bytes())
    assert answer == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


# -- ngtcp2's example server as the origin -----------------------------------------------------


@pytest.fixture(scope="module")
def ngtcp2_origin(
    tls_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path]]:
    """``gtlsserver`` serving a directory over HTTP/3: (UDP port, docroot)."""
    www = tmp_path_factory.mktemp("www")
    (www / "hello.txt").write_bytes(b"hello from ngtcp2\n")
    (www / "big.bin").write_bytes(os.urandom(3 * MiB))
    port = free_port(udp=True)
    server_files = [tls_files["key"], tls_files["cert"]]
    proc = subprocess.Popen(
        [GTLSSERVER, "-q", "-d", str(www), "127.0.0.1", str(port), *server_files],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # up once it answers HTTP/3 itself
            assert proc.poll() is None, f"gtlsserver exited with {proc.returncode}"
            direct = h3_request(port, "GET", "/hello.txt", ca=tls_files["ca"], timeout=1)
            if direct.status == 200:
                break
            assert time.monotonic() < deadline, f"gtlsserver does not answer: {direct.error}"
        yield port, www
    finally:
        proc.terminate()
        proc.wait(5)


def h3_backend(tls_files: dict[str, str], hostname: str = "localhost") -> str:
    return f'tls_ca_path = "{tls_files["ca"]}"\ntls_verify_hostname = "{hostname}"\n'


def test_ngtcp2_server_as_h3_origin_behind_h1_and_quic_listeners(
    ngtcp2_origin: tuple[int, Path], tls_files: dict[str, str]
) -> None:
    origin_port, www = ngtcp2_origin
    admin, port, qport = free_port(), free_port(), free_port(udp=True)
    backend = (
        f'\n[[listeners.backends]]\naddress = "127.0.0.1:{origin_port}"\n'
        f'protocol = "h3"\n{h3_backend(tls_files)}'
    )
    cfg = h3_config(
        admin,
        h1_listener(port, [], name="web", extra=backend),
        quic_listener(
            qport,
            [origin_port],
            tls_files,
            name="h3",
            backend_protocol="h3",
            backend_extra=h3_backend(tls_files),
        ),
    )
    big = (www / "big.bin").read_bytes()
    with gateway(cfg, admin_port=admin) as gw:
        # HTTP/1.1 -> HTTP/3
        with httpx.Client(timeout=20) as client:
            small = client.get(f"http://127.0.0.1:{port}/hello.txt")
            large = client.get(f"http://127.0.0.1:{port}/big.bin")
            missing = client.get(f"http://127.0.0.1:{port}/no-such-file")
        assert small.status_code == 200
        assert small.content == b"hello from ngtcp2\n"
        assert small.headers["server"] == "nghttp3/ngtcp2 server"  # it really answered
        assert large.status_code == 200
        assert large.content == big
        assert missing.status_code == 404
        # HTTP/3 -> HTTP/3
        with H3Client(qport, ca=tls_files["ca"], timeout=20) as client3:
            r_small = client3.request("GET", "/hello.txt")
            r_large = client3.request("GET", "/big.bin")
        assert r_small.complete and r_small.status == 200
        assert r_small.body == b"hello from ngtcp2\n"
        assert r_large.complete and r_large.status == 200
        assert r_large.body == big
        assert gw.metric("h3_upstream_connections_total") >= 1
        assert gw.metric("backend_requests_total", listener="h3", status_class="2xx") == 2


def test_h3_backend_certificate_name_is_verified(
    ngtcp2_origin: tuple[int, Path], tls_files: dict[str, str]
) -> None:
    """The origin's certificate does not name ``wrong.example``: no request
    reaches it, the client gets 502."""
    origin_port, _ = ngtcp2_origin
    admin, port = free_port(), free_port()
    backend = (
        f'\n[[listeners.backends]]\naddress = "127.0.0.1:{origin_port}"\n'
        f'protocol = "h3"\n{h3_backend(tls_files, "wrong.example")}'
    )
    with gateway(h3_config(admin, h1_listener(port, [], extra=backend)), admin_port=admin) as gw:
        resp = httpx.get(f"http://127.0.0.1:{port}/hello.txt", timeout=20)
        logs = gw.logs()
    assert resp.status_code == 502
    assert b"hello from ngtcp2" not in resp.content
    assert "hostname 'wrong.example' doesn't match" in logs


# -- Alt-Svc: from TCP to HTTP/3 on the advertised port ----------------------------------------


def test_alt_svc_advertised_over_tcp_leads_to_the_same_resource_over_http3(
    tls_files: dict[str, str],
) -> None:
    with origin() as backend:
        admin, port = free_port(), free_port_pair()
        tls_block = f"""
[listeners.tls]
cert_path = "{tls_files["cert"]}"
key_path = "{tls_files["key"]}"

[listeners.alt_svc]
h3_port = {port}
max_age = 3600
"""
        cfg = h3_config(
            admin,
            h1_listener(port, [backend], name="https", protocol="h1s", extra=tls_block),
            quic_listener(port, [backend], tls_files, name="h3"),
        )
        with gateway(cfg, admin_port=admin):
            ctx = ssl.create_default_context(cafile=tls_files["ca"])
            with httpx.Client(verify=ctx, http2=True) as client:
                over_tcp = client.get(f"https://localhost:{port}/headers")
            assert over_tcp.status_code == 200
            alt_svc = over_tcp.headers["alt-svc"]
            assert alt_svc == f'h3=":{port}"; ma=3600'
            m = re.fullmatch(r'h3=":(\d+)"; ma=(\d+)', alt_svc)
            assert m is not None
            h3_port = int(m.group(1))
            # the advertised endpoint, same authority, over UDP
            over_h3 = h3_request(h3_port, "GET", "/headers", ca=tls_files["ca"])
            via_curl = curl_h3(f"https://localhost:{h3_port}/", ca=tls_files["ca"])
            via_tcp_root = httpx.get(f"https://localhost:{port}/", verify=ctx)
    assert over_h3.complete and over_h3.status == 200
    seen_tcp = json.loads(over_tcp.content)
    seen_h3 = json.loads(over_h3.body)
    assert seen_h3["path"] == seen_tcp["path"] == "/headers"
    assert dict(seen_h3["headers"])["x-forwarded-proto"] == "https"
    assert via_curl.error is None and int(via_curl.http_version) == CURL_H3
    assert via_curl.body == via_tcp_root.content == b"hello from origin"


# -- gRPC over the HTTP/3 front ------------------------------------------------------------------

GRPC_HEAD = [("content-type", "application/grpc"), ("te", "trailers")]


def _ident(x: bytes) -> bytes:
    return x


def grpc_frame(message: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed)."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_messages(body: bytes) -> list[bytes]:
    out = []
    while body:
        assert body[0] == 0, "compressed message"
        n = int.from_bytes(body[1:5], "big")
        out.append(body[5 : 5 + n])
        body = body[5 + n :]
    return out


def grpc_status(resp: H3Response) -> int | None:
    """``grpc-status`` from the trailers, or the head of a trailers-only response."""
    for name, value in [*resp.trailers, *resp.headers]:
        if name == "grpc-status":
            return int(value)
    return None


@pytest.fixture(scope="module")
def grpc_backend() -> Iterator[int]:
    """A grpcio server (HTTP/2 cleartext) with echo.Echo/{Unary,Slow,Remaining}."""

    def unary(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        return req

    def slow(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        time.sleep(3)
        return req

    def remaining(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        left = ctx.time_remaining()
        return b"none" if left is None else b"%.3f" % left

    handlers = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _ident, _ident),
            "Slow": grpc.unary_unary_rpc_method_handler(slow, _ident, _ident),
            "Remaining": grpc.unary_unary_rpc_method_handler(remaining, _ident, _ident),
        },
    )
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def grpc_rig(grpc_backend: int, tls_files: dict[str, str]) -> Iterator[tuple[int, Gateway]]:
    admin, port = free_port(), free_port(udp=True)
    cfg = h3_config(
        admin,
        quic_listener(
            port,
            [grpc_backend],
            tls_files,
            name="grpc3",
            backend_protocol="h2",
            extra="\n[listeners.grpc]\nmax_deadline_seconds = 1\n",
        ),
    )
    with gateway(cfg, admin_port=admin) as gw:
        yield port, gw


def test_grpc_unary_call_over_http3_to_a_grpcio_server(
    grpc_rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    port, _ = grpc_rig
    with H3Client(port, ca=tls_files["ca"]) as client:
        resp = client.request(
            "POST", "/echo.Echo/Unary", headers=GRPC_HEAD, body=grpc_frame(b"hello over h3")
        )
        missing = client.request(
            "POST", "/echo.Echo/Missing", headers=GRPC_HEAD, body=grpc_frame(b"x")
        )
    assert resp.complete and resp.status == 200
    assert resp.header("content-type") == "application/grpc"
    assert grpc_messages(resp.body) == [b"hello over h3"]
    assert ("grpc-status", "0") in resp.trailers
    assert missing.complete and missing.status == 200
    assert grpc_status(missing) == 12  # UNIMPLEMENTED, from grpcio itself


def test_grpc_deadline_over_http3_is_clamped(
    grpc_rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    """``grpc-timeout: 60S`` with ``max_deadline_seconds = 1``: the backend
    sees at most 1 s left, and a 3 s method ends with DEADLINE_EXCEEDED
    after about 1 s."""
    port, _ = grpc_rig
    long_deadline = [*GRPC_HEAD, ("grpc-timeout", "60S")]
    with H3Client(port, ca=tls_files["ca"]) as client:
        seen = client.request(
            "POST", "/echo.Echo/Remaining", headers=long_deadline, body=grpc_frame(b"x")
        )
        started = time.monotonic()
        slow = client.request(
            "POST", "/echo.Echo/Slow", headers=long_deadline, body=grpc_frame(b"x"), timeout=10
        )
        took = time.monotonic() - started
    assert seen.complete and grpc_status(seen) == 0
    (left,) = grpc_messages(seen.body)
    assert 0 < float(left) <= 1.0
    assert slow.complete and slow.status == 200
    assert grpc_status(slow) == 4  # DEADLINE_EXCEEDED
    assert took < 2.9  # the method takes 3 s


def test_grpc_health_check_over_http3_is_answered_by_the_gateway(
    grpc_rig: tuple[int, Gateway], tls_files: dict[str, str]
) -> None:
    """The grpcio backend has no health service (it would answer
    UNIMPLEMENTED): SERVING comes from the gateway."""
    port, _ = grpc_rig
    empty = health_pb2.HealthCheckRequest(service="").SerializeToString()
    named = health_pb2.HealthCheckRequest(service="some.Service").SerializeToString()
    with H3Client(port, ca=tls_files["ca"]) as client:
        ok = client.request(
            "POST", "/grpc.health.v1.Health/Check", headers=GRPC_HEAD, body=grpc_frame(empty)
        )
        unknown = client.request(
            "POST", "/grpc.health.v1.Health/Check", headers=GRPC_HEAD, body=grpc_frame(named)
        )
    assert ok.complete and ok.status == 200
    assert grpc_status(ok) == 0
    (message,) = grpc_messages(ok.body)
    reply = health_pb2.HealthCheckResponse.FromString(message)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert unknown.complete and grpc_status(unknown) == 5  # NOT_FOUND


def test_grpc_handling_over_http3_to_an_http3_origin(tls_files: dict[str, str]) -> None:
    """gRPC semantics across two HTTP/3 hops. There is no gRPC-over-HTTP/3
    server to run here, so the aioquic origin stands in: it shows what the
    gateway forwards (the clamped ``grpc-timeout``), its trailers come back,
    a call it does not answer in time ends with DEADLINE_EXCEEDED from the
    gateway, and the health check never reaches it."""
    with h3_origin(tls_files) as backend:
        admin, port = free_port(), free_port(udp=True)
        cfg = h3_config(
            admin,
            quic_listener(
                port,
                [backend],
                tls_files,
                name="grpc33",
                backend_protocol="h3",
                backend_extra=h3_backend(tls_files),
                extra="\n[listeners.grpc]\nmax_deadline_seconds = 1\n",
            ),
        )
        long_deadline = [*GRPC_HEAD, ("grpc-timeout", "60S")]
        with gateway(cfg, admin_port=admin), H3Client(port, ca=tls_files["ca"]) as client:
            seen = client.request("POST", "/headers", headers=long_deadline, body=grpc_frame(b"x"))
            trailers = client.request("POST", "/trailers", headers=GRPC_HEAD, body=grpc_frame(b""))
            started = time.monotonic()
            slow = client.request(
                "POST", "/slow-head/3000", headers=long_deadline, body=grpc_frame(b"x")
            )
            took = time.monotonic() - started
            health = client.request(
                "POST", "/grpc.health.v1.Health/Check", headers=GRPC_HEAD, body=grpc_frame(b"")
            )
            stats = client.request("GET", "/stats")
    assert seen.complete and seen.status == 200
    forwarded = dict((n, v) for n, v in json.loads(seen.body)["headers"])
    assert forwarded["grpc-timeout"] == "1000m"
    assert forwarded["content-type"] == "application/grpc"
    assert trailers.complete and ("grpc-status", "0") in trailers.trailers
    assert slow.complete and slow.status == 200
    assert grpc_status(slow) == 4
    assert took < 2.9
    assert health.complete and grpc_status(health) == 0
    assert "/grpc.health.v1.Health/Check" not in json.loads(stats.body)["paths"]
