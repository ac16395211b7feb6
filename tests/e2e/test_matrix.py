"""The nine protocol cells, HTTP/1.1, HTTP/2 and HTTP/3 on each side of the
gateway, with the same cases in every cell:

========= ============================================ =================================
side      what speaks it                                how the test reaches it
========= ============================================ =================================
front h1  ``h1`` listener (TCP)                        raw sockets parsed by llhttp, httpx
front h2  ``h1s`` listener, TLS ALPN h2                RawH2 (frame level), httpx http2
front h3  ``quic`` listener (Retry on every connect)   aioquic client (tests/support/h3.py),
                                                       curl_cffi (libcurl+ngtcp2+nghttp3)
back h1   the Python origin (tests/support/origin.py)
back h2   nginx, h2c prior knowledge, proxying unbuffered to the Python origin
          (its own ``add_trailer`` fields on /trailers); nginx 1.22 cannot pass a
          103 on, so the 1xx case of the h2 backs talks to the same routes served
          over h2c by tests/support/h3origin.py --h2c (the h2 library)
back h3   tests/support/h3origin.py (aioquic), CA-verified
========= ============================================ =================================

Cases: GET, HEAD, a streamed 10 MiB upload hashed by the origin, a response
without content-length, trailers (an HTTP/1.1 client asks with ``TE:
trailers``), 103 before the final response, a 16 KiB request header, a
body the origin cuts short (never presented as complete: HTTP/1.1 closes
the connection, HTTP/2 and HTTP/3 reset the stream), a 64 MiB download
read slowly with bounded gateway memory, a backend that is down (502) and
one that is late with its head (504).

One gateway serves the module: per cell a main listener, one whose backend
is down, and one with a short head timeout (plus the three h2c listeners
for 1xx), 30 listeners in all.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import httpx
import pytest
from hyperframe.frame import DataFrame, RstStreamFrame

from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import ResponseReader, RssSampler, h1_config, seen_headers
from tests.support.h2 import CANCEL, NO_ERROR, RawH2
from tests.support.h3 import H3_NO_ERROR, H3Client, curl_h3
from tests.support.h3origin import h2c_origin, h3_origin
from tests.support.processes import origin, run_nginx

MiB = 1024 * 1024
UPLOAD = 10 * MiB
DOWNLOAD = 64 * MiB
RSS_BUDGET = 32 * MiB
#: the slow reader's pace after its first stall
READ_RATE = 32 * MiB
BIG_HEADER = "b" * 16384
HEAD_TIMEOUT_MS = 300
SLOW_HEAD_MS = 3000

FRONTS = ("h1", "h2", "h3")
BACKS = ("h1", "h2", "h3")


@dataclass(frozen=True)
class Cell:
    front: str
    back: str

    @property
    def name(self) -> str:
        return f"{self.front}-{self.back}"


CELLS = [Cell(f, b) for f in FRONTS for b in BACKS]


def cells(which: list[Cell] = CELLS) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("cell", which, ids=[c.name for c in which])


# -- the rig ----------------------------------------------------------------------------------

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    large_client_header_buffers 4 64k;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_request_buffering off;
    proxy_buffering off;
    server {{
        listen 127.0.0.1:{port} http2;
        location = /trailers {{
            add_trailer x-checksum abc123;
            add_trailer grpc-status 0;
            proxy_pass http://127.0.0.1:{origin};
        }}
        location / {{ proxy_pass http://127.0.0.1:{origin}; }}
    }}
}}
"""

FRONT_PROTOCOL = {"h1": "h1", "h2": "h1s", "h3": "quic"}


def listener(
    name: str,
    port: int,
    front: str,
    back: str,
    backend: str,
    *,
    tls_files: dict[str, str],
    quic_dir: Path,
    http: str = "",
) -> str:
    text = (
        f'\n[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n'
        f'protocol = "{FRONT_PROTOCOL[front]}"\n'
    )
    if http:
        text += f"\n[listeners.http]\n{http}\n"
    if front == "h2":
        text += (
            f'\n[listeners.tls]\ncert_path = "{tls_files["cert"]}"\n'
            f'key_path = "{tls_files["key"]}"\n'
        )
    elif front == "h3":
        text += (
            f'\n[listeners.quic]\ncert_path = "{tls_files["cert"]}"\n'
            f'key_path = "{tls_files["key"]}"\n'
            f'retry_secret_path = "{quic_dir / (name + ".key")}"\n'
        )
    text += f'\n[[listeners.backends]]\naddress = "{backend}"\nprotocol = "{back}"\n'
    if back == "h3":
        text += f'tls_ca_path = "{tls_files["ca"]}"\ntls_verify_hostname = "localhost"\n'
    return text


@dataclass
class Rig:
    gw: Gateway
    ca: str
    #: per cell name: the main listener, the one with a dead backend, the
    #: one with a short head timeout
    main: dict[str, int]
    down: dict[str, int]
    late: dict[str, int]
    #: per front: a listener whose h2 backend can send 1xx (h2c Python origin)
    hints_h2: dict[str, int]
    upload: bytes


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    quic_dir = tmp_path_factory.mktemp("quic")
    with (
        origin() as op,
        run_nginx(lambda tmp, port: NGINX_CONF.format(dir=tmp, port=port, origin=op)) as ng,
        h2c_origin() as h2py,
        h3_origin(tls_files) as h3o,
    ):
        live = {"h1": f"127.0.0.1:{op}", "h2": f"127.0.0.1:{ng}", "h3": f"127.0.0.1:{h3o}"}
        dead = {
            "h1": f"127.0.0.1:{free_port()}",
            "h2": f"127.0.0.1:{free_port()}",
            "h3": f"127.0.0.1:{free_port(udp=True)}",
        }

        def port_for(front: str) -> int:
            return free_port(udp=front == "h3")

        main = {c.name: port_for(c.front) for c in CELLS}
        down = {c.name: port_for(c.front) for c in CELLS}
        late = {c.name: port_for(c.front) for c in CELLS}
        hints_h2 = {f: port_for(f) for f in FRONTS}

        def add(name: str, port: int, cell: Cell, backend: str, http: str = "") -> str:
            return listener(
                name,
                port,
                cell.front,
                cell.back,
                backend,
                tls_files=tls_files,
                quic_dir=quic_dir,
                http=http,
            )

        # a body timeout of 3 s also makes the worker's sweeper tick every 300 ms
        late_http = f"head_timeout_ms = {HEAD_TIMEOUT_MS}\nbody_timeout_ms = 3000"
        listeners = []
        for c in CELLS:
            listeners += [
                add(c.name, main[c.name], c, live[c.back]),
                add(f"{c.name}-down", down[c.name], c, dead[c.back]),
                add(f"{c.name}-late", late[c.name], c, live[c.back], late_http),
            ]
        for f in FRONTS:
            listeners.append(add(f"{f}-h2py", hints_h2[f], Cell(f, "h2"), f"127.0.0.1:{h2py}"))
        admin = free_port()
        config = h1_config(admin, *listeners, runtime="connect_timeout_ms = 2000")
        with gateway(config, admin_port=admin) as gw:
            yield Rig(gw, tls_files["ca"], main, down, late, hints_h2, os.urandom(UPLOAD))


# -- what a client saw, whatever its protocol ---------------------------------------------------


@dataclass
class Got:
    status: int | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    #: 1xx responses before the final one: (status, headers)
    informational: list[tuple[int, list[tuple[str, str]]]] = field(default_factory=list)
    #: the message ended as its framing says (h1: llhttp's message complete;
    #: h2: END_STREAM; h3: FIN), with no reset
    ended: bool = False
    #: h2/h3: the stream was reset with this code
    reset: int | None = None
    #: h1: the connection closed before the message was complete
    closed_early: bool = False
    error: str | None = None

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return ", ".join(values) if values else None

    def __str__(self) -> str:
        body = self.body if len(self.body) < 200 else self.body[:200] + b"..."
        return (
            f"status={self.status} headers={self.headers} body[{len(self.body)}]={body!r} "
            f"trailers={self.trailers} 1xx={self.informational} ended={self.ended} "
            f"reset={self.reset} closed_early={self.closed_early} error={self.error}"
        )


def h1_exchange(port: int, method: str, path: str, headers: Iterable[tuple[str, str]] = ()) -> Got:
    """One request on a new TCP connection; the response as llhttp parsed it."""
    lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
    raw = f"{method} {path} HTTP/1.1\r\nHost: gateway.test\r\n{lines}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        reader = ResponseReader(method.encode())
        try:
            resp = reader.read(s, timeout=10)
        except (ConnectionError, TimeoutError) as exc:
            return Got(None, error=repr(exc), closed_early=isinstance(exc, ConnectionError))
    return Got(
        resp.status,
        resp.headers,
        resp.body,
        resp.trailers,
        [(r.status, r.headers) for r in reader.informational],
        ended=resp.complete,
        closed_early=not resp.complete,
    )


def h2_exchange(
    port: int, ca: str, method: str, path: str, headers: Iterable[tuple[str, str]] = ()
) -> Got:
    """One request on a new TLS connection (ALPN h2), seen frame by frame.
    RawH2 never opens its receive windows: responses stay under 64 KiB."""
    with RawH2(port, ca=ca) as c:
        c.start()
        sid = c.request(path, method=method, extra=list(headers))
        ex = c.response(sid, timeout=10)
    got = Got(None, reset=ex.reset, ended=ex.ended and ex.reset is None, body=bytes(ex.data))
    for block in ex.headers:
        fields = [(n, v) for n, v in block if not n.startswith(":")]
        status = dict(block).get(":status")
        if status is None:
            got.trailers = fields
        elif status.startswith("1"):
            got.informational.append((int(status), fields))
        else:
            got.status, got.headers = int(status), fields
    if not (ex.ended or ex.reset is not None):
        got.error = "timeout or connection closed" + (" (GOAWAY)" if c.goaway else "")
    return got


def h3_exchange(
    port: int, ca: str, method: str, path: str, headers: Iterable[tuple[str, str]] = ()
) -> Got:
    """One request on a new QUIC connection (aioquic client)."""
    with H3Client(port, ca=ca) as client:
        r = client.request(method, path, headers=headers, timeout=10)
    return Got(
        r.status,
        r.headers,
        r.body,
        r.trailers,
        r.informational,
        ended=r.ended and r.reset_code is None,
        reset=r.reset_code,
        error=r.error,
    )


def exchange(
    rig: Rig, front: str, port: int, method: str, path: str, *headers: tuple[str, str]
) -> Got:
    if front == "h1":
        return h1_exchange(port, method, path, headers)
    if front == "h2":
        return h2_exchange(port, rig.ca, method, path, headers)
    return h3_exchange(port, rig.ca, method, path, headers)


def httpx_client(front: str, ca: str, timeout: float = 30) -> httpx.Client:
    if front == "h2":
        ctx = ssl.create_default_context(cafile=ca)
        return httpx.Client(http1=False, http2=True, verify=ctx, timeout=timeout)
    return httpx.Client(timeout=timeout)


def url(front: str, port: int, path: str) -> str:
    if front == "h1":
        return f"http://127.0.0.1:{port}{path}"
    return f"https://localhost:{port}{path}"


def pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# -- GET, HEAD -------------------------------------------------------------------------------


@cells()
def test_get(rig: Rig, cell: Cell) -> None:
    port = rig.main[cell.name]
    if cell.front == "h3":
        with H3Client(port, ca=rig.ca) as client:  # three requests on one connection
            got = [client.request("GET", "/") for _ in range(3)]
        for r in got:
            assert (r.status, r.body, r.complete) == (200, b"hello from origin", True), r
        curl = curl_h3(url("h3", port, "/"), ca=rig.ca)
        assert curl.error is None, curl.error
        assert (curl.status, curl.body, curl.http_version) == (200, b"hello from origin", 30)
        return
    with httpx_client(cell.front, rig.ca) as client:
        resp = client.get(url(cell.front, port, "/"))
    assert resp.http_version == ("HTTP/2" if cell.front == "h2" else "HTTP/1.1")
    assert (resp.status_code, resp.content) == (200, b"hello from origin")


@cells()
def test_head_has_the_length_and_no_body(rig: Rig, cell: Cell) -> None:
    got = exchange(rig, cell.front, rig.main[cell.name], "HEAD", "/size/1000")
    assert got.status == 200, got
    assert got.header("content-length") == "1000", got
    assert got.body == b"" and got.ended, got


# -- bodies -------------------------------------------------------------------------------------


@cells()
def test_streamed_10_mib_upload_reaches_the_origin_intact(rig: Rig, cell: Cell) -> None:
    """The body is sent as it is produced, without a declared length
    (HTTP/1.1: chunked)."""
    port = rig.main[cell.name]
    expected = {"bytes": UPLOAD, "sha256": hashlib.sha256(rig.upload).hexdigest()}
    if cell.front == "h3":
        with H3Client(port, ca=rig.ca, timeout=60) as client:
            r = client.request("POST", "/sink", body=pieces(rig.upload))
        assert r.complete and r.status == 200, r
        assert json.loads(r.body) == expected
        curl = curl_h3(url("h3", port, "/sink"), "POST", data=pieces(rig.upload), ca=rig.ca)
        assert curl.error is None, curl.error
        assert curl.status == 200 and curl.http_version == 30
        assert json.loads(curl.body) == expected
        return
    with httpx_client(cell.front, rig.ca) as client:
        resp = client.post(url(cell.front, port, "/sink"), content=pieces(rig.upload))
    assert resp.status_code == 200, resp.content
    assert json.loads(resp.content) == expected


@cells()
def test_response_without_content_length_arrives_whole(rig: Rig, cell: Cell) -> None:
    """/chunked/N has no content-length at the origin (HTTP/1.1: chunked);
    an HTTP/1.1 client gets it chunked and the connection stays usable."""
    got = exchange(rig, cell.front, rig.main[cell.name], "GET", "/chunked/50000")
    assert (got.status, got.body, got.ended) == (200, b"x" * 50000, True), got
    assert got.header("content-length") in (None, "50000"), got
    if cell.front == "h1":
        assert got.header("transfer-encoding") == "chunked", got


@cells()
def test_trailers_reach_the_client(rig: Rig, cell: Cell) -> None:
    """The origin's trailers (nginx: its own add_trailer fields) follow the
    body; an HTTP/1.1 client asks for them with TE: trailers."""
    te = [("te", "trailers")] if cell.front == "h1" else []
    got = exchange(rig, cell.front, rig.main[cell.name], "GET", "/trailers", *te)
    assert (got.status, got.body, got.ended) == (200, b"hello", True), got
    assert ("x-checksum", "abc123") in got.trailers, got
    assert ("grpc-status", "0") in got.trailers, got


@cells()
def test_103_early_hints_come_before_the_response(rig: Rig, cell: Cell) -> None:
    port = rig.hints_h2[cell.front] if cell.back == "h2" else rig.main[cell.name]
    got = exchange(rig, cell.front, port, "GET", "/early-hints")
    assert [status for status, _ in got.informational] == [103], got
    assert ("link", "</style.css>; rel=preload") in got.informational[0][1], got
    assert (got.status, got.body, got.ended) == (200, b"after hints", True), got


@cells()
def test_16_kib_request_header_reaches_the_origin(rig: Rig, cell: Cell) -> None:
    got = exchange(rig, cell.front, rig.main[cell.name], "GET", "/headers", ("x-big", BIG_HEADER))
    assert got.status == 200 and got.ended, got
    assert seen_headers(got.body)["x-big"] == [BIG_HEADER]


@cells()
def test_body_cut_short_by_the_origin_is_never_presented_as_complete(rig: Rig, cell: Cell) -> None:
    """/truncate: content-length 100, 50 bytes, then the origin aborts (TCP
    reset; h3: RESET_STREAM). The head went out already, so the client must
    see the abort: HTTP/1.1 by the connection closing before the 100 bytes,
    HTTP/2 and HTTP/3 by a stream reset with an error code."""
    got = exchange(rig, cell.front, rig.main[cell.name], "GET", "/truncate")
    assert got.status == 200, got
    assert len(got.body) < 100, got
    assert not got.ended, got
    if cell.front == "h1":
        assert got.closed_early, got
    else:
        no_error = NO_ERROR if cell.front == "h2" else H3_NO_ERROR
        assert got.reset is not None and got.reset != no_error, got


@cells()
def test_client_aborting_mid_upload_leaves_the_gateway_serving(rig: Rig, cell: Cell) -> None:
    """The client gives up 1 MiB into a 10 MiB upload: HTTP/1.1 closes the
    connection, HTTP/2 sends RST_STREAM (CANCEL), HTTP/3 RESET_STREAM and
    STOP_SENDING (H3_REQUEST_CANCELLED). HTTP/2 and HTTP/3 then use the same
    connection for a GET; HTTP/1.1 a new one."""
    port = rig.main[cell.name]
    part = rig.upload[:MiB]
    if cell.front == "h1":
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /sink HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: %d\r\n\r\n" % UPLOAD
            )
            s.sendall(part)
        got = h1_exchange(port, "GET", "/")
    elif cell.front == "h2":
        with RawH2(port, ca=rig.ca) as c:
            c.start()
            sid = c.new_stream()
            head = c.request_headers("/sink", "POST")
            # the gateway's initial stream window (65 535) holds 3 x 16 KiB
            data = b"".join(
                DataFrame(sid, data=part[i : i + 16384]).serialize()
                for i in range(0, 3 * 16384, 16384)
            )
            c.send(c.headers_frame(sid, head, end_stream=False) + data)
            c.send(RstStreamFrame(sid, error_code=CANCEL).serialize())
            sid2 = c.request("/")
            ex = c.response(sid2, timeout=10)
            assert c.goaway is None, c.goaway
        assert (ex.status, bytes(ex.data), ex.ended) == (200, b"hello from origin", True)
        return
    else:
        with H3Client(port, ca=rig.ca) as client:
            stream = client.open("POST", "/sink", end=False)
            assert stream.send(part), stream.response
            stream.reset()
            r = client.request("GET", "/")
        got = Got(r.status, r.headers, r.body, ended=r.complete, error=r.error)
    assert (got.status, got.body, got.ended) == (200, b"hello from origin", True), got


# -- a slow reader ---------------------------------------------------------------------------------


class Pace:
    """Hold a reader to ``READ_RATE``, after a stall of ``stall`` seconds at
    the start (the origin is ahead from the first byte) and one of 0.3 s
    halfway."""

    def __init__(self, total: int, stall: float) -> None:
        self.total = total
        self.stall = stall
        self.start = 0.0
        self.stalled_half = False

    def begin(self) -> None:
        time.sleep(self.stall)
        self.start = time.monotonic()

    def __call__(self, done: int) -> None:
        if not self.stalled_half and done >= self.total // 2:
            self.stalled_half = True
            time.sleep(0.3)
            self.start += 0.3
        ahead = done / READ_RATE - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


class _Count:
    """httptools callbacks that count body bytes."""

    def __init__(self) -> None:
        self.body = 0
        self.headers_done = False
        self.complete = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


def slow_download(rig: Rig, cell: Cell, size: int) -> tuple[int | None, int, bool]:
    """GET /size/``size`` read at ``Pace``: (status, body bytes, ended cleanly)."""
    port = rig.main[cell.name]
    path = f"/size/{size}"
    # the HTTP/3 origin (aioquic) writes at ~25 MB/s, slower than READ_RATE:
    # a longer first stall lets it get 32 MiB ahead of the reader, so a
    # gateway that buffered instead of holding it back would be caught
    pace = Pace(size, stall=2.0 if cell.back == "h3" else 0.5)
    if cell.front == "h1":
        count = _Count()
        parser = httptools.HttpResponseParser(count)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect
        with s:
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n".encode())
            began = False
            while not count.complete:
                data = s.recv(64 * 1024)
                if not data:
                    break
                parser.feed_data(data)
                if count.headers_done and not began:
                    began = True
                    pace.begin()
                pace(count.body)
            return parser.get_status_code(), count.body, count.complete
    if cell.front == "h2":
        with (
            httpx_client("h2", rig.ca, timeout=10) as client,
            client.stream("GET", url("h2", port, path)) as resp,
        ):
            pace.begin()
            n = 0
            for chunk in resp.iter_raw():
                n += len(chunk)
                pace(n)
            return resp.status_code, n, True  # httpx raises on a reset or short body
    with H3Client(port, ca=rig.ca, window=256 * 1024) as client:
        stream = client.open("GET", path)
        head = stream.head()
        pace.begin()
        n = 0
        while piece := stream.read(256 * 1024):
            n += len(piece)
            pace(n)
        r = stream.response
        return head.status, n, r.ended and r.reset_code is None and r.error is None


@cells()
def test_slow_reader_gets_64_mib_with_bounded_gateway_memory(rig: Rig, cell: Cell) -> None:
    """The client reads slower than the origin writes (and stalls twice): the
    gateway holds the origin back instead of buffering the difference."""
    with RssSampler(rig.gw.rss) as rss:
        status, n, ended = slow_download(rig, cell, DOWNLOAD)
    print(f"{cell.name}: gateway RSS grew {rss.growth / MiB:.1f} MiB")
    assert (status, n, ended) == (200, DOWNLOAD, True)
    assert rss.growth < RSS_BUDGET, f"gateway RSS grew {rss.growth / MiB:.1f} MiB"


# -- failures ------------------------------------------------------------------------------------


@cells()
def test_backend_down_is_502(rig: Rig, cell: Cell) -> None:
    got = exchange(rig, cell.front, rig.down[cell.name], "GET", "/")
    assert got.status == 502 and got.ended, got


@cells()
def test_backend_late_with_its_head_is_504(rig: Rig, cell: Cell) -> None:
    """head_timeout_ms = 300 and an origin that answers after 3 s: 504 well
    before the origin would have answered."""
    began = time.monotonic()
    got = exchange(rig, cell.front, rig.late[cell.name], "GET", f"/slow-head/{SLOW_HEAD_MS}")
    elapsed = time.monotonic() - began
    assert got.status == 504 and got.ended, got
    assert elapsed < SLOW_HEAD_MS / 1000 - 0.5, f"504 after {elapsed:.2f}s"
