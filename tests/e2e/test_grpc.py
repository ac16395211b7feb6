"""gRPC through the gateway with a real grpcio client and server: the four
call shapes, deadlines, status mapping, the local health check, a large
streamed call with bounded gateway memory, and 415 on an HTTP/1.1 front."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.gateway import Gateway, base_config, free_port, gateway

REPO = Path(__file__).resolve().parents[2]
BIG = 200 << 20
OPTIONS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]


def _ident(x: bytes) -> bytes:
    return x


def _server(port: int) -> grpc.Server:
    def unary(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        return req

    def slow(req: bytes, ctx: grpc.ServicerContext) -> bytes:
        time.sleep(3)
        return req

    def sstream(req: bytes, ctx: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(5):
            yield req + b"-%d" % i

    def cstream(it: Iterator[bytes], ctx: grpc.ServicerContext) -> bytes:
        return b"".join(it)

    def bidi(it: Iterator[bytes], ctx: grpc.ServicerContext) -> Iterator[bytes]:
        yield from it

    def count(it: Iterator[bytes], ctx: grpc.ServicerContext) -> bytes:
        return b"%d" % sum(len(m) for m in it)

    handlers = grpc.method_handlers_generic_handler(
        "echo.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _ident, _ident),
            "Slow": grpc.unary_unary_rpc_method_handler(slow, _ident, _ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(sstream, _ident, _ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(cstream, _ident, _ident),
            "Count": grpc.stream_unary_rpc_method_handler(count, _ident, _ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, _ident, _ident),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(8), options=OPTIONS)
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def _config(
    admin: int, port: int, backend: int, tls_files: dict[str, str], deadline: int = 300
) -> str:
    return (
        base_config(admin)
        + f"""
[[listeners]]
name = "grpc"
address = "127.0.0.1:{port}"
protocol = "h1s"
[listeners.tls]
cert_path = "{tls_files["cert"]}"
key_path = "{tls_files["key"]}"
[listeners.http]
max_request_body_bytes = 268435456
[listeners.grpc]
max_deadline_seconds = {deadline}
[[listeners.backends]]
address = "127.0.0.1:{backend}"
protocol = "h2"
"""
    )


@pytest.fixture()
def rig(tls_files: dict[str, str]) -> Iterator[tuple[grpc.Channel, Gateway]]:
    backend, admin, port = free_port(), free_port(), free_port()
    server = _server(backend)
    try:
        with gateway(_config(admin, port, backend, tls_files), admin_port=admin) as gw:
            creds = grpc.ssl_channel_credentials(Path(tls_files["ca"]).read_bytes())
            with grpc.secure_channel(f"localhost:{port}", creds, options=OPTIONS) as ch:
                yield ch, gw
    finally:
        server.stop(0)


def test_grpc_unary_call_through_the_gateway(rig: tuple[grpc.Channel, Gateway]) -> None:
    ch, _ = rig
    assert ch.unary_unary("/echo.Echo/Unary", _ident, _ident)(b"hello", timeout=10) == b"hello"


def test_grpc_streaming_call_shapes(rig: tuple[grpc.Channel, Gateway]) -> None:
    ch, _ = rig
    sstream = ch.unary_stream("/echo.Echo/ServerStream", _ident, _ident)
    assert list(sstream(b"x", timeout=10)) == [b"x-0", b"x-1", b"x-2", b"x-3", b"x-4"]
    cstream = ch.stream_unary("/echo.Echo/ClientStream", _ident, _ident)
    assert cstream(iter([b"a", b"b", b"c"]), timeout=10) == b"abc"
    bidi = ch.stream_stream("/echo.Echo/Bidi", _ident, _ident)
    assert list(bidi(iter([b"1", b"2", b"3"]), timeout=10)) == [b"1", b"2", b"3"]


def test_grpc_unknown_method_maps_to_unimplemented(rig: tuple[grpc.Channel, Gateway]) -> None:
    ch, _ = rig
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary("/echo.Echo/Missing", _ident, _ident)(b"x", timeout=10)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_grpc_health_check_is_answered_by_the_gateway(rig: tuple[grpc.Channel, Gateway]) -> None:
    ch, _ = rig
    stub = health_pb2_grpc.HealthStub(ch)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="some.Service"), timeout=10)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_grpc_deadline_is_clamped_and_enforced_by_the_gateway(tls_files: dict[str, str]) -> None:
    """A 60 s client deadline clamped to 1 s: the gateway ends the call with
    DEADLINE_EXCEEDED long before the client's own deadline."""
    backend, admin, port = free_port(), free_port(), free_port()
    server = _server(backend)
    try:
        with gateway(_config(admin, port, backend, tls_files, deadline=1), admin_port=admin):
            creds = grpc.ssl_channel_credentials(Path(tls_files["ca"]).read_bytes())
            with grpc.secure_channel(f"localhost:{port}", creds, options=OPTIONS) as ch:
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    ch.unary_unary("/echo.Echo/Slow", _ident, _ident)(b"x", timeout=60)
                assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                assert time.monotonic() - started < 2.9  # the backend takes 3 s
    finally:
        server.stop(0)


def test_grpc_100_mb_client_stream_with_bounded_gateway_memory(
    rig: tuple[grpc.Channel, Gateway],
) -> None:
    ch, gw = rig
    before = gw.rss()
    chunk = b"m" * (1 << 20)
    count = ch.stream_unary("/echo.Echo/Count", _ident, _ident)
    assert count(iter([chunk] * 100), timeout=120) == b"%d" % (100 << 20)
    assert gw.rss() - before < 48 << 20


def test_grpc_on_an_http1_front_is_415(tls_files: dict[str, str]) -> None:
    import httpx

    backend, admin, port = free_port(), free_port(), free_port()
    with gateway(_config(admin, port, backend, tls_files), admin_port=admin):
        import ssl

        ctx = ssl.create_default_context(cafile=tls_files["ca"])
        with httpx.Client(verify=ctx) as client:
            resp = client.post(
                f"https://localhost:{port}/echo.Echo/Unary",
                content=b"\x00\x00\x00\x00\x01x",
                headers={"content-type": "application/grpc"},
            )
    assert resp.http_version == "HTTP/1.1"
    assert resp.status_code == 415


def test_grpc_example_config_checks_and_serves_calls(
    tls_files: dict[str, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    backend, admin, port = free_port(), free_port(), free_port()
    text = (REPO / "examples" / "h1s-grpc.toml").read_text()
    text = text.replace("/etc/expressgateway/cert.pem", tls_files["cert"])
    text = text.replace("/etc/expressgateway/key.pem", tls_files["key"])
    text = text.replace("0.0.0.0:8443", f"127.0.0.1:{port}")
    text = text.replace("127.0.0.1:50051", f"127.0.0.1:{backend}")
    text = text.replace("127.0.0.1:9090", f"127.0.0.1:{admin}")
    cfg = tmp_path / "h1s-grpc.toml"
    cfg.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "expressgateway", "check", str(cfg)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    server = _server(backend)
    try:
        with gateway(text, admin_port=admin):
            creds = grpc.ssl_channel_credentials(Path(tls_files["ca"]).read_bytes())
            with grpc.secure_channel(f"localhost:{port}", creds, options=OPTIONS) as ch:
                unary = ch.unary_unary("/echo.Echo/Unary", _ident, _ident)
                assert unary(b"from the example", timeout=10) == b"from the example"
    finally:
        server.stop(0)
