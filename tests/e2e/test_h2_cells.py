"""HTTP/2 on either side of the proxy, cell by cell, with real clients:

========== ============================ ==========================================
cell       client -> gateway            gateway -> backend
========== ============================ ==========================================
h2tls-h1   HTTP/2 over TLS (ALPN h2)    HTTP/1.1 (Python origin)
h2c-h1     HTTP/2 prior knowledge       HTTP/1.1 (Python origin)
h1-h2c     HTTP/1.1                     HTTP/2 prior knowledge (nginx)
h2c-h2c    HTTP/2 prior knowledge       HTTP/2 prior knowledge (nginx)
h2tls-h2tls HTTP/2 over TLS (ALPN h2)   HTTP/2 over TLS, CA-verified (nginx)
========== ============================ ==========================================

Each cell serves GET, HEAD, a 10 MiB upload (with and without a declared
length, hashed by the Python origin: behind nginx through its unbuffered
proxy), a 50 MiB download, trailers, and h2load's many concurrent streams.
curl, nghttp, h2load and httpx all take a turn. One gateway serves every
cell (one listener each) for the whole module.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import h1_config, seen_headers
from tests.support.h2 import (
    MiB,
    curl,
    curl_tls,
    h2_listener,
    h2load,
    nghttp,
    nginx_h2_origin,
    tls_backend,
)
from tests.support.processes import origin

BIG = 50 * MiB
UPLOAD = 10 * MiB


@dataclass(frozen=True)
class Cell:
    name: str
    front: str  # "h2tls", "h2c" or "h1"
    back: str  # "h1", "h2c" or "h2tls"

    @property
    def nginx(self) -> bool:
        return self.back != "h1"

    def path(self, route: str) -> str:
        """A Python-origin route as this cell's backend spells it."""
        return f"/origin{route}" if self.nginx else route

    @property
    def hello(self) -> tuple[str, bytes]:
        return ("/hello", b"hello from nginx\n") if self.nginx else ("/", b"hello from origin")


CELLS = [
    Cell("h2tls-h1", "h2tls", "h1"),
    Cell("h2c-h1", "h2c", "h1"),
    Cell("h1-h2c", "h1", "h2c"),
    Cell("h2c-h2c", "h2c", "h2c"),
    Cell("h2tls-h2tls", "h2tls", "h2tls"),
]
H2_FRONT = [c for c in CELLS if c.front != "h1"]


@dataclass
class Rig:
    gw: Gateway
    ports: dict[str, int]
    ca: str
    big_file: bytes
    upload: Path

    def url(self, cell: Cell, path: str) -> str:
        port = self.ports[cell.name]
        if cell.front == "h2tls":
            return f"https://localhost:{port}{path}"
        return f"http://127.0.0.1:{port}{path}"

    def curl_args(self, cell: Cell, path: str) -> list[str]:
        """curl options and URL that speak this cell's front protocol."""
        if cell.front == "h2tls":
            return ["--http2", *curl_tls(self.ca, self.ports[cell.name]), self.url(cell, path)]
        if cell.front == "h2c":
            return ["--http2-prior-knowledge", self.url(cell, path)]
        return ["--http1.1", self.url(cell, path)]

    def big(self, cell: Cell) -> tuple[str, bytes]:
        """A 50 MiB download: nginx's static file, or the origin's /size/N."""
        if cell.nginx:
            return "/big.bin", self.big_file
        return f"/size/{BIG}", b"x" * BIG

    @property
    def version(self) -> dict[str, str]:
        return {"h2tls": "2", "h2c": "2", "h1": "1.1"}


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    big_file = os.urandom(BIG)
    upload = tmp_path_factory.mktemp("h2-upload") / "upload.bin"
    upload.write_bytes(os.urandom(UPLOAD))
    files = {"big.bin": big_file}
    with (
        origin() as op,
        nginx_h2_origin(op, files) as h2c,
        nginx_h2_origin(op, files, tls_files=tls_files) as h2tls,
    ):
        admin = free_port()
        ports = {c.name: free_port() for c in CELLS}
        backends = {"h1": op, "h2c": h2c, "h2tls": h2tls}
        listeners = []
        for c in CELLS:
            listeners.append(
                h2_listener(
                    ports[c.name],
                    [backends[c.back]],
                    name=c.name,
                    protocol="h1s" if c.front == "h2tls" else "h1",
                    tls_files=tls_files if c.front == "h2tls" else None,
                    backend_protocol="h1" if c.back == "h1" else "h2",
                    backend_extra=tls_backend(tls_files["ca"]) if c.back == "h2tls" else "",
                )
            )
        with gateway(h1_config(admin, *listeners), admin_port=admin) as gw:
            yield Rig(gw, ports, tls_files["ca"], big_file, upload)


def ok(out: subprocess.CompletedProcess[bytes]) -> bytes:
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


def cells(which: list[Cell]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("cell", which, ids=[c.name for c in which])


# -- GET / HEAD -------------------------------------------------------------------------------


@cells(CELLS)
def test_get_answers_with_the_backend_body(rig: Rig, cell: Cell) -> None:
    path, body = cell.hello
    out = ok(curl("-w", "\n%{http_code} %{http_version}", *rig.curl_args(cell, path)))
    got, _, status = out.rpartition(b"\n")
    assert status.decode() == f"200 {rig.version[cell.front]}"
    assert got == body


@cells([c for c in CELLS if c.nginx])
def test_h2_backend_is_really_spoken_to_in_http2(rig: Rig, cell: Cell) -> None:
    """nginx reports the protocol and scheme of the gateway's connection."""
    out = ok(curl(*rig.curl_args(cell, "/proto")))
    scheme = "https" if cell.back == "h2tls" else "http"
    assert out.split()[:2] == [b"HTTP/2.0", scheme.encode()]


@cells([c for c in CELLS if not c.nginx])
def test_h1_origin_sees_forwarding_headers_of_an_h2_request(rig: Rig, cell: Cell) -> None:
    out = ok(curl(*rig.curl_args(cell, "/headers")))
    seen = seen_headers(out)
    proto = "https" if cell.front == "h2tls" else "http"
    assert seen["x-forwarded-proto"] == [proto]
    assert "host" in seen
    assert json.loads(out)["method"] == "GET"


@cells(CELLS)
def test_head_has_content_length_and_no_body(rig: Rig, cell: Cell) -> None:
    out = ok(
        curl("-I", "-w", "size=%{size_download}", *rig.curl_args(cell, cell.path("/size/1000")))
    )
    head, _, tail = out.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0].split()[1] == "200"
    assert "content-length: 1000" in lines
    assert tail == b"size=0"


# -- bodies -------------------------------------------------------------------------------------


@cells(CELLS)
@pytest.mark.parametrize("framing", ["content-length", "streamed"])
def test_10_mib_upload_reaches_the_origin_intact(rig: Rig, cell: Cell, framing: str) -> None:
    """``content-length``: curl declares the length; ``streamed``: read from
    a pipe, so HTTP/1.1 sends it chunked and HTTP/2 just sends DATA frames
    until END_STREAM."""
    data = rig.upload.read_bytes()
    args = rig.curl_args(cell, cell.path("/sink"))
    if framing == "content-length":
        out = curl("--data-binary", f"@{rig.upload}", *args)
    else:
        out = subprocess.run(
            ["curl", "-sS", "-T", "-", *args], input=data, capture_output=True, timeout=60
        )
    assert json.loads(ok(out)) == {"bytes": UPLOAD, "sha256": hashlib.sha256(data).hexdigest()}


@cells(CELLS)
def test_50_mib_download_arrives_whole(rig: Rig, cell: Cell) -> None:
    path, expected = rig.big(cell)
    out = ok(curl(*rig.curl_args(cell, path)))
    assert len(out) == len(expected)
    assert hashlib.sha256(out).digest() == hashlib.sha256(expected).digest()


@cells(H2_FRONT)
def test_trailers_reach_an_h2_client(rig: Rig, cell: Cell) -> None:
    """The origin's chunked trailers (nginx: its ``add_trailer`` fields)
    arrive as a trailing HEADERS frame, after the body."""
    out = curl("-v", *rig.curl_args(cell, "/trailers"))
    assert ok(out) == b"hello"
    log = out.stderr.decode()
    assert "< x-checksum: abc123" in log
    assert "< grpc-status: 0" in log
    assert log.index("< x-checksum") > log.index("< HTTP/2 200")


def test_trailers_of_an_h2_backend_reach_an_h1_client_as_chunked_trailers(rig: Rig) -> None:
    cell = CELLS[2]
    assert cell.name == "h1-h2c"
    out = curl("-v", "--raw", "-H", "TE: trailers", *rig.curl_args(cell, "/trailers"))
    body = ok(out)
    assert body.endswith(b"0\r\nx-checksum: abc123\r\ngrpc-status: 0\r\n\r\n"), body


# -- many streams, many clients ---------------------------------------------------------------------


@cells(CELLS)
def test_h2load_many_concurrent_streams_all_succeed(rig: Rig, cell: Cell) -> None:
    path, _ = cell.hello
    url = rig.url(cell, path).replace("localhost", "127.0.0.1")
    if cell.front == "h1":
        result = h2load(url, "--h1", "-c10", "-n2000")
    else:
        result = h2load(url, "-c2", "-m50", "-n2000")
        assert result.protocol == ("h2" if cell.front == "h2tls" else "h2c")
    assert (result.done, result.succeeded, result.status_2xx) == (2000, 2000, 2000), result.output


@cells(H2_FRONT)
def test_httpx_multiplexes_requests_on_one_connection(rig: Rig, cell: Cell) -> None:
    path, body = cell.hello
    if cell.front == "h2tls":
        client = httpx.Client(http2=True, verify=ssl.create_default_context(cafile=rig.ca))
    else:
        client = httpx.Client(http1=False, http2=True)
    with client:
        for _ in range(20):
            resp = client.get(rig.url(cell, path))
            assert resp.status_code == 200
            assert resp.http_version == "HTTP/2"
            assert resp.content == body
        resp = client.post(rig.url(cell, cell.path("/echo")), content=b"ping" * 1000)
        assert resp.content == b"ping" * 1000


@cells(H2_FRONT)
def test_nghttp_sees_status_body_and_trailers(rig: Rig, cell: Cell) -> None:
    url = rig.url(cell, "/trailers").replace("localhost", "127.0.0.1")
    out = nghttp("-v", url)
    text = ok(out).decode(errors="replace")
    assert ":status: 200" in text
    assert "x-checksum: abc123" in text
    assert "recv HEADERS frame" in text
    assert "GOAWAY" not in text.split("recv HEADERS frame")[0]


def test_metrics_count_h2_requests_and_streams(rig: Rig) -> None:
    before = rig.gw.metric("h2_streams_total", listener="h2c-h1")
    ok(curl(*rig.curl_args(CELLS[1], "/")))
    assert rig.gw.metric("h2_streams_total", listener="h2c-h1") == before + 1
    assert rig.gw.metric("http_requests_total", listener="h2c-h1", version="h2") >= 1


def test_h2_tls_backend_certificate_is_verified(tls_files: dict[str, str], tmp_path: Path) -> None:
    """A backend certificate from another CA, or for another name, is a 502
    before any request goes out; ``tls_verify_peer = false`` (tests only)
    accepts it."""
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    ca = tls_files["ca"]
    backends = {
        "other-ca": f'tls = true\ntls_ca_path = "{other_ca}"\n',
        "other-name": f'tls = true\ntls_ca_path = "{ca}"\ntls_verify_hostname = "other.test"\n',
        "no-verify": "tls = true\ntls_verify_peer = false\n",
    }
    with origin() as op, nginx_h2_origin(op, tls_files=tls_files) as ng:
        admin = free_port()
        ports = {name: free_port() for name in backends}
        listeners = [
            h2_listener(ports[n], [ng], name=n, backend_protocol="h2", backend_extra=extra)
            for n, extra in backends.items()
        ]
        with gateway(h1_config(admin, *listeners), admin_port=admin):
            got = {
                n: curl("--http2-prior-knowledge", f"http://127.0.0.1:{p}/hello").stdout
                for n, p in ports.items()
            }
    assert got["no-verify"] == b"hello from nginx\n"
    for name in ("other-ca", "other-name"):
        assert json.loads(got[name])["status"] == 502, got[name]
