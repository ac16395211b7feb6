"""HTTP routes end to end (``[[listeners.routes]]``), on each HTTP front:

====== =================================== =======================================
front  listener                            client
====== =================================== =======================================
h1     ``h1`` (HTTP/1.1)                   raw socket, responses parsed by llhttp
h2     ``h1s`` (TLS, ALPN h2)              httpx with http2 (SNI = the host asked)
h3     ``quic`` (HTTP/3, Retry)            aioquic client (SNI = the host asked)
====== =================================== =======================================

Every route goes to its own cluster, and every cluster to its own named
backend (one process listening on many ports, each port answering with its
name and the request head it saw), so the answer says which route matched:
host exact and ``*.`` wildcard, path exact / prefix / regex, method, header
present / equal, first match wins, the listener's default pool when nothing
matches and 404 when there is none, ``prefix_rewrite`` and header add /
remove as the backend saw them, and a per-route ``timeout_ms`` answering
504 long before the listener's own timeouts would.

The TLS fronts carry a certificate for every host name the tests ask for,
so the gateway's SNI/Host check (421) never gets in the way of host routing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support.gateway import Gateway, free_port, gateway, wait_port
from tests.support.h1 import ResponseReader, connect, h1_config
from tests.support.h3 import H3Client

pytestmark = pytest.mark.timeout(120)

# -- named backends ------------------------------------------------------------------------

#: An HTTP/1.1 backend (keep-alive, content-length and chunked request
#: bodies) listening on every ``PORT=NAME`` given; each port answers as NAME:
#: JSON of its name, the request head it saw and the request body size,
#: with ``x-backend: NAME``. ``/slow/MS`` waits MS ms first, ``/status/N``
#: answers N. Controls (not counted): ``/health`` and ``/healthz`` answer
#: the status set with ``/set-health/N`` (body ``ok`` below 400, else
#: ``failing``), ``/set-delay/MS`` makes every counted request
#: wait MS ms and ``/set-status/N`` answer N, ``/count`` is the number of requests counted so far.
NAMED_HTTP = r"""
import asyncio, json, sys

HEALTH = {}
DELAY = {}
STATUS = {}
COUNT = {}


def serve(name):
    async def handle(reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = []
                length = 0
                chunked = close = False
                for line in lines[1:]:
                    if not line:
                        continue
                    n, _, v = line.partition(":")
                    n, v = n.strip().lower(), v.strip()
                    headers.append([n, v])
                    if n == "content-length":
                        length = int(v)
                    elif n == "transfer-encoding" and "chunked" in v.lower():
                        chunked = True
                    elif n == "connection" and v.lower() == "close":
                        close = True
                size = 0
                if chunked:
                    while True:
                        n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        if n == 0:
                            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                                pass
                            break
                        size += len(await reader.readexactly(n + 2)) - 2
                elif length:
                    size = len(await reader.readexactly(length))
                path = target.split("?")[0]
                parts = path.strip("/").split("/")
                status = 200
                if parts[0] == "set-health":
                    HEALTH[name] = int(parts[1])
                elif parts[0] == "set-delay":
                    DELAY[name] = int(parts[1])
                elif parts[0] == "set-status":
                    STATUS[name] = int(parts[1])
                elif path in ("/health", "/healthz"):
                    status = HEALTH.get(name, 200)
                elif path != "/count":
                    COUNT[name] = COUNT.get(name, 0) + 1
                    status = STATUS.get(name, 200)
                    if DELAY.get(name):
                        await asyncio.sleep(DELAY[name] / 1000)
                    if parts[0] == "slow":
                        await asyncio.sleep(int(parts[1]) / 1000)
                    elif parts[0] == "status":
                        status = int(parts[1])
                body = json.dumps({
                    "name": name, "count": COUNT.get(name, 0), "method": method,
                    "path": target, "body": size, "headers": headers,
                }).encode()
                if path in ("/health", "/healthz"):
                    body = b"ok\n" if status < 400 else b"failing\n"
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nx-backend: %s\r\n"
                    b"content-length: %d\r\n\r\n%s" % (status, name.encode(), len(body), body)
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    return handle


async def main():
    servers = []
    for arg in sys.argv[1:]:
        port, _, name = arg.partition("=")
        servers.append(
            await asyncio.start_server(serve(name), "127.0.0.1", int(port), reuse_address=True)
        )
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
"""


@contextlib.contextmanager
def named_backends(*names: str) -> Iterator[dict[str, int]]:
    """One backend process answering as each of ``names`` on its own port."""
    ports = {n: free_port() for n in names}
    proc = subprocess.Popen(
        [sys.executable, "-c", NAMED_HTTP, *(f"{p}={n}" for n, p in ports.items())]
    )
    try:
        for p in ports.values():
            wait_port(p)
        yield ports
    finally:
        proc.terminate()
        proc.wait(5)


class Backend:
    """One named backend in its own process, which a test may kill (the
    port then refuses connections) and start again on the same port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Backend:
        self.proc = subprocess.Popen([sys.executable, "-c", NAMED_HTTP, f"{self.port}={self.name}"])
        wait_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def count(self) -> int:
        """Requests this process served (not /health, /count, /set-health)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r = ResponseReader().read(s)
        return int(json.loads(r.body)["count"])

    def _control(self, path: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert ResponseReader().read(s).status == 200

    def set_health(self, status: int) -> None:
        """What ``/health`` answers from now on."""
        self._control(f"/set-health/{status}")

    def set_status(self, status: int) -> None:
        """Every request this backend serves from now on is answered ``status``."""
        self._control(f"/set-status/{status}")

    def set_delay(self, ms: int) -> None:
        """Every request this backend serves from now on waits ``ms`` first."""
        self._control(f"/set-delay/{ms}")


@contextlib.contextmanager
def backends(*names: str) -> Iterator[list[Backend]]:
    """Named backends, one process each, killed afterwards."""
    out = [Backend(n) for n in names]
    try:
        for b in out:
            b.start()
        yield out
    finally:
        for b in out:
            b.kill()


# -- the rig ---------------------------------------------------------------------------------

HOSTS = ("api.example.com", "foo.example.com", "a.b.example.com", "example.com", "other.test")
FRONTS = ("h1", "h2", "h3")
FRONT_PROTOCOL = {"h1": "h1", "h2": "h1s", "h3": "quic"}
ROUTE_TIMEOUT_MS = 300
SLOW_MS = 2500

#: the routes of every main listener, in order (first match wins)
ROUTES = f"""
[[listeners.routes]]
name = "api"
cluster = "api"
hosts = ["api.example.com"]

[[listeners.routes]]
name = "wild"
cluster = "wild"
hosts = ["*.example.com"]

[[listeners.routes]]
name = "exact"
cluster = "exact"
path_exact = "/exact"

[[listeners.routes]]
name = "regex"
cluster = "regex"
path_regex = "/items/[0-9]+"

[[listeners.routes]]
name = "first"
cluster = "first"
path_prefix = "/first/"

[[listeners.routes]]
name = "second"
cluster = "second"
path_exact = "/first/only"

[[listeners.routes]]
name = "method"
cluster = "method"
methods = ["DELETE", "PATCH"]

[[listeners.routes]]
name = "canary"
cluster = "canary"
headers = ["x-canary"]

[[listeners.routes]]
name = "gold"
cluster = "gold"
headers = ["x-tier: gold"]

[[listeners.routes]]
name = "rewrite"
cluster = "rewrite"
path_prefix = "/api/"
prefix_rewrite = "/v2/"
request_headers_add = ["x-added: yes", "x-route: rewrite"]
request_headers_remove = ["x-secret"]

[[listeners.routes]]
name = "timed"
cluster = "timed"
headers = ["x-timed"]
timeout_ms = {ROUTE_TIMEOUT_MS}

[[listeners.routes]]
name = "static"
cluster = "static"
path_prefix = "/static/"
"""

CLUSTERS = (
    "api",
    "wild",
    "exact",
    "regex",
    "first",
    "second",
    "method",
    "canary",
    "gold",
    "rewrite",
    "timed",
    "static",
    "default",
)


@dataclass
class Rig:
    gw: Gateway
    ca: str
    #: per front: the listener with a default pool, and one without
    main: dict[str, int] = field(default_factory=dict)
    bare: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def routes_tls(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A certificate for localhost and every host name the tests route on."""
    d = tmp_path_factory.mktemp("routes-tls")
    cert = ca.issue_cert("localhost", "127.0.0.1", *HOSTS)
    cert_path, key_path, ca_path = d / "cert.pem", d / "key.pem", d / "ca.pem"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_path))
    os.chmod(key_path, 0o600)
    ca.cert_pem.write_to_path(str(ca_path))
    return {"cert": str(cert_path), "key": str(key_path), "ca": str(ca_path), "dir": str(d)}


def front_listener(
    name: str, port: int, front: str, tls: dict[str, str], *, default: bool, routes: str
) -> str:
    text = (
        f'\n[[listeners]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\n'
        f'protocol = "{FRONT_PROTOCOL[front]}"\n'
    )
    if default:
        text += 'cluster = "default"\n'
    # a 2 s header timeout makes the worker's sweeper look every 200 ms
    text += "\n[listeners.http]\nheader_timeout_ms = 2000\n"
    if front == "h2":
        text += f'\n[listeners.tls]\ncert_path = "{tls["cert"]}"\nkey_path = "{tls["key"]}"\n'
    elif front == "h3":
        text += (
            f'\n[listeners.quic]\ncert_path = "{tls["cert"]}"\nkey_path = "{tls["key"]}"\n'
            f'retry_secret_path = "{Path(tls["dir"]) / (name + ".key")}"\n'
        )
    return text + routes


def clusters(ports: dict[str, int]) -> str:
    return "".join(
        f'\n[[clusters]]\nname = "{name}"\n\n[[clusters.backends]]\n'
        f'address = "127.0.0.1:{ports[name]}"\nprotocol = "h1"\n'
        for name in CLUSTERS
    )


@pytest.fixture(scope="module")
def rig(routes_tls: dict[str, str]) -> Iterator[Rig]:
    with named_backends(*CLUSTERS) as ports:
        r = Rig(gw=None, ca=routes_tls["ca"])  # type: ignore[arg-type]
        listeners = []
        for front in FRONTS:
            udp = front == "h3"
            r.main[front], r.bare[front] = free_port(udp=udp), free_port(udp=udp)
            listeners.append(
                front_listener(
                    f"{front}-main", r.main[front], front, routes_tls, default=True, routes=ROUTES
                )
            )
            # no default pool: one route only
            listeners.append(
                front_listener(
                    f"{front}-bare",
                    r.bare[front],
                    front,
                    routes_tls,
                    default=False,
                    routes='\n[[listeners.routes]]\ncluster = "exact"\npath_exact = "/exact"\n',
                )
            )
        admin = free_port()
        with gateway(h1_config(admin, *listeners, tail=clusters(ports)), admin_port=admin) as gw:
            r.gw = gw
            yield r


# -- one exchange, whatever the front ------------------------------------------------------------


@dataclass
class Answer:
    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float
    version: str = ""
    error: str | None = None

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        return ", ".join(values) if values else None

    @property
    def backend(self) -> str | None:
        """The name of the backend that answered (None: the gateway did)."""
        return self.header("x-backend")

    @property
    def seen(self) -> dict[str, object]:
        """What the backend saw (its JSON answer)."""
        result: dict[str, object] = json.loads(self.body)
        return result

    def seen_headers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.seen["headers"]:  # type: ignore[attr-defined]
            out.setdefault(name, []).append(value)
        return out

    def __str__(self) -> str:
        return (
            f"status={self.status} version={self.version} headers={self.headers} "
            f"body={self.body[:300]!r} error={self.error} in {self.seconds:.2f}s"
        )


def send(
    rig: Rig,
    front: str,
    path: str,
    *,
    method: str = "GET",
    host: str = "localhost",
    headers: tuple[tuple[str, str], ...] = (),
    bare: bool = False,
) -> Answer:
    """One request on a new connection to ``front``'s main (or bare)
    listener, for ``host`` (Host / :authority, and SNI on TLS)."""
    port = (rig.bare if bare else rig.main)[front]
    started = time.monotonic()
    if front == "h1":
        lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
        raw = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n".encode()
        with connect(port) as s:
            s.sendall(raw)
            r = ResponseReader(method.encode()).read(s, timeout=10)
        return Answer(r.status, r.headers, r.body, time.monotonic() - started, "HTTP/1.1")
    if front == "h2":
        ctx = ssl.create_default_context(cafile=rig.ca)
        with httpx.Client(http1=False, http2=True, verify=ctx, timeout=10) as client:
            resp = client.request(
                method,
                f"https://127.0.0.1:{port}{path}",
                headers=[("host", f"{host}:{port}"), *headers],
                extensions={"sni_hostname": host},
            )
        return Answer(
            resp.status_code,
            [(k.lower(), v) for k, v in resp.headers.multi_items()],
            resp.content,
            time.monotonic() - started,
            resp.http_version,
        )
    with H3Client(port, ca=rig.ca, server_name=host) as client:
        h3 = client.request(method, path, headers=headers, timeout=10)
    return Answer(
        h3.status,
        h3.headers,
        h3.body,
        time.monotonic() - started,
        "HTTP/3" if h3.complete else "",
        h3.error or (f"reset {h3.reset_code}" if h3.reset_code is not None else None),
    )


def routed(rig: Rig, front: str, path: str, **kw: object) -> str | None:
    """The backend a request ended up at (asserting a 200 from a backend)."""
    a = send(rig, front, path, **kw)  # type: ignore[arg-type]
    assert a.status == 200 and a.error is None, f"{path} {kw}: {a}"
    assert a.version == {"h1": "HTTP/1.1", "h2": "HTTP/2", "h3": "HTTP/3"}[front], str(a)
    return a.backend


fronts = pytest.mark.parametrize("front", FRONTS)


# -- matching ------------------------------------------------------------------------------------


@fronts
def test_host_exact_and_wildcard(rig: Rig, front: str) -> None:
    assert routed(rig, front, "/", host="api.example.com") == "api"
    assert routed(rig, front, "/", host="foo.example.com") == "wild"
    assert routed(rig, front, "/", host="a.b.example.com") == "wild"
    # "*.example.com" is subdomains only
    assert routed(rig, front, "/", host="example.com") == "default"
    assert routed(rig, front, "/", host="other.test") == "default"


def test_requests_are_counted_under_the_route_that_took_them(rig: Rig) -> None:
    before = rig.gw.metric("http_requests_total", listener="h1-main", route="gold")
    assert routed(rig, "h1", "/", headers=(("x-tier", "gold"),)) == "gold"
    assert rig.gw.metric("http_requests_total", listener="h1-main", route="gold") == before + 1


def test_host_match_ignores_port_and_case_on_h1(rig: Rig) -> None:
    assert routed(rig, "h1", "/", host="api.example.com:8080") == "api"
    assert routed(rig, "h1", "/", host="API.Example.COM") == "api"
    assert routed(rig, "h1", "/", host="Foo.EXAMPLE.com:443") == "wild"


@fronts
def test_path_exact_prefix_and_regex(rig: Rig, front: str) -> None:
    # exact: the path before '?', and nothing longer
    assert routed(rig, front, "/exact") == "exact"
    assert routed(rig, front, "/exact?q=1") == "exact"
    assert routed(rig, front, "/exact/") == "default"
    assert routed(rig, front, "/exactly") == "default"
    # regex: a full match of the path
    assert routed(rig, front, "/items/42") == "regex"
    assert routed(rig, front, "/items/42?page=2") == "regex"
    assert routed(rig, front, "/items/abc") == "default"
    assert routed(rig, front, "/items/42/parts") == "default"
    # prefix
    assert routed(rig, front, "/static/app.js") == "static"
    assert routed(rig, front, "/static/") == "static"
    assert routed(rig, front, "/staticky") == "default"
    assert routed(rig, front, "/") == "default"


@fronts
def test_method_and_header_matches(rig: Rig, front: str) -> None:
    assert routed(rig, front, "/anything", method="DELETE") == "method"
    assert routed(rig, front, "/anything", method="PATCH") == "method"
    assert routed(rig, front, "/anything", method="GET") == "default"
    # present, whatever the value
    assert routed(rig, front, "/anything", headers=(("x-canary", "1"),)) == "canary"
    assert routed(rig, front, "/anything", headers=(("x-canary", ""),)) == "canary"
    # equal to a value
    assert routed(rig, front, "/anything", headers=(("x-tier", "gold"),)) == "gold"
    assert routed(rig, front, "/anything", headers=(("x-tier", "silver"),)) == "default"


@fronts
def test_first_match_wins(rig: Rig, front: str) -> None:
    # the host route comes before the path, method and header routes
    assert routed(rig, front, "/exact", host="api.example.com") == "api"
    assert routed(rig, front, "/items/1", host="foo.example.com", method="DELETE") == "wild"
    # /first/only matches "first" (prefix) and "second" (exact): first listed wins
    assert routed(rig, front, "/first/only") == "first"
    # path before method, method before header
    assert routed(rig, front, "/exact", method="DELETE") == "exact"
    assert routed(rig, front, "/x", method="DELETE", headers=(("x-canary", "1"),)) == "method"


@fronts
def test_no_match_and_no_default_pool_is_404(rig: Rig, front: str) -> None:
    assert routed(rig, front, "/exact", bare=True) == "exact"
    a = send(rig, front, "/elsewhere", bare=True)
    assert a.status == 404 and a.backend is None, str(a)
    assert rig.gw.metric("http_requests_total", listener=f"{front}-bare", status_class="4xx") >= 1


# -- what a route changes ------------------------------------------------------------------------


@fronts
def test_prefix_rewrite_and_header_edits_reach_the_backend(rig: Rig, front: str) -> None:
    a = send(
        rig,
        front,
        "/api/users/7?expand=1",
        headers=(("x-secret", "hunter2"), ("x-keep", "kept"), ("x-added", "from-client")),
    )
    assert a.status == 200 and a.backend == "rewrite", str(a)
    assert a.seen["path"] == "/v2/users/7?expand=1"
    seen = a.seen_headers()
    assert "x-secret" not in seen
    assert seen["x-keep"] == ["kept"]
    assert "yes" in seen["x-added"]
    assert seen["x-route"] == ["rewrite"]
    # only the matched prefix is replaced
    b = send(rig, front, "/api/api/")
    assert b.backend == "rewrite" and b.seen["path"] == "/v2/api/", str(b)
    # another route's request is forwarded untouched
    c = send(rig, front, "/static/x", headers=(("x-secret", "s"),))
    assert c.backend == "static" and c.seen["path"] == "/static/x", str(c)
    assert c.seen_headers()["x-secret"] == ["s"]
    assert "x-added" not in c.seen_headers()


@fronts
def test_route_timeout_answers_504_before_the_listener_would(rig: Rig, front: str) -> None:
    timed = send(rig, front, f"/slow/{SLOW_MS}", headers=(("x-timed", "1"),))
    assert timed.status == 504, str(timed)
    assert timed.seconds < 1.5, str(timed)
    # the same slow request on the default pool is within the listener's timeouts
    untimed = send(rig, front, f"/slow/{SLOW_MS}")
    assert untimed.status == 200 and untimed.backend == "default", str(untimed)
    assert untimed.seconds >= SLOW_MS / 1000


def test_route_timeout_does_not_outlive_its_request_on_h1_keepalive(rig: Rig) -> None:
    """A route's timeout bounds that request, not the rest of the connection."""
    with connect(rig.main["h1"]) as s:
        reader = ResponseReader()
        s.sendall(b"GET /slow/10 HTTP/1.1\r\nHost: localhost\r\nx-timed: 1\r\n\r\n")
        first = reader.read(s)
        assert first.status == 200 and first.header("x-backend") == "timed"
        time.sleep(ROUTE_TIMEOUT_MS / 1000 + 0.4)
        s.sendall(b"GET /slow/800 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        second = reader.read(s)
    assert second.status == 200 and second.header("x-backend") == "default"


def test_a_route_timeout_only_shortens_the_listeners_total_timeout() -> None:
    """``timeout_ms`` bounds a request on its route when it is shorter than
    the listener's ``total_timeout_ms``; it cannot lengthen it."""
    admin, port = free_port(), free_port()
    listener = f"""
[[listeners]]
name = "web"
address = "127.0.0.1:{port}"
protocol = "h1"
cluster = "default"

[listeners.http]
header_timeout_ms = 2000
total_timeout_ms = 1000
head_timeout_ms = 10000

[[listeners.routes]]
name = "reports"
cluster = "reports"
path_prefix = "/reports/"
timeout_ms = 5000

[[listeners.routes]]
name = "quick"
cluster = "reports"
path_prefix = "/quick/"
timeout_ms = 300
"""
    with backends("default", "reports") as (default, reports):
        reports.set_delay(2000)  # every report takes 2 s
        default.set_delay(2000)
        tail = "".join(
            f'\n[[clusters]]\nname = "{b.name}"\n\n[[clusters.backends]]\n'
            f'address = "{b.address}"\nprotocol = "h1"\n'
            for b in (default, reports)
        )
        with gateway(h1_config(admin, listener, tail=tail), admin_port=admin):
            results = {}
            for path in ("/plain", "/reports/monthly", "/quick/daily"):
                started = time.monotonic()
                with connect(port) as s:
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
                    r = ResponseReader().read(s)
                results[path] = (r.status, r.header("x-backend"), time.monotonic() - started)
    # the listener's 1 s total bounds the default pool, and the longer route
    for path in ("/plain", "/reports/monthly"):
        assert results[path][:2] == (504, None), results
        assert 0.9 <= results[path][2] < 1.8, results
    # the shorter route's own bound
    assert results["/quick/daily"][:2] == (504, None), results
    assert results["/quick/daily"][2] < 0.9, results
