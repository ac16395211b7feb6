"""The shipped ``examples/traffic-*.toml`` are real: ``check`` accepts each
(given real certificate files where it names some), and each boots, pointed
at this machine, and does what its header comment says, checked with a few
requests against named backends (``NAMED_HTTP`` in test_traffic_routes)."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_traffic_routes import Backend, backends
from tests.support.gateway import free_port, gateway
from tests.support.l4 import named_echo, poll, recv_line

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = [
    "traffic-routes.toml",
    "traffic-weighted.toml",
    "traffic-affinity.toml",
    "traffic-health.toml",
]
CERT, KEY = "/etc/expressgateway/cert.pem", "/etc/expressgateway/key.pem"
COOKIE = re.compile(r"^eg_affinity=([0-9a-f]{16}); Path=/; HttpOnly$")


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "expressgateway", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def with_files(text: str, tls_files: dict[str, str]) -> str:
    """The example with its /etc/expressgateway paths replaced by real files."""
    return text.replace(f'"{CERT}"', f'"{tls_files["cert"]}"').replace(
        f'"{KEY}"', f'"{tls_files["key"]}"'
    )


def localize(
    text: str, backends: dict[str, int], *, workers: int = 1
) -> tuple[str, dict[str, int], int]:
    """Point the example at this machine: every listener at a free loopback
    port, every backend address written in it at the port ``backends``
    gives for it, the admin endpoint at a free port; ``workers`` workers and
    no readiness settle. Comments and all other keys stay as written.
    Returns (text, {listener name: port}, admin port)."""
    doc = tomllib.loads(text)
    written = {b["address"] for c in doc["clusters"] for b in c["backends"]}
    assert written == set(backends), (written, set(backends))
    ports: dict[str, int] = {}
    for lst in doc["listeners"]:
        assert lst["address"].startswith("0.0.0.0:")
        ports[lst["name"]] = free_port()
        text = text.replace(
            f'address = "{lst["address"]}"', f'address = "127.0.0.1:{ports[lst["name"]]}"'
        )
    for old, new in backends.items():
        assert text.count(f'address = "{old}"') == 1, old
        text = text.replace(f'address = "{old}"', f'address = "127.0.0.1:{new}"')
    admin = free_port()
    text = text.replace(f'"{doc["observability"]["metrics_bind"]}"', f'"127.0.0.1:{admin}"')
    text = re.sub(r"(?m)^workers = \d+", f"workers = {workers}", text)
    text = re.sub(r"(?m)^readiness_settle_ms = \d+", "readiness_settle_ms = 0", text)
    return text, ports, admin


def get(port: int, path: str = "/", **kw: object) -> httpx.Response:
    with httpx.Client(timeout=10) as client:
        return client.request(kw.pop("method", "GET"), f"http://127.0.0.1:{port}{path}", **kw)  # type: ignore[arg-type]


# -- check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in NAMES if n != "traffic-affinity.toml"])
def test_example_passes_check_as_shipped(name: str) -> None:
    out = check(EXAMPLES / name)
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout


def test_affinity_example_names_its_missing_certificate_files() -> None:
    out = check(EXAMPLES / "traffic-affinity.toml")
    assert out.returncode == 2
    assert f'listeners[0].tls.cert_path = "{CERT}": file not found' in out.stderr
    assert f'listeners[0].tls.key_path = "{KEY}": file not found' in out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_example_passes_check_with_real_files(
    name: str, tls_files: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(with_files((EXAMPLES / name).read_text(), tls_files))
    out = check(path)
    assert out.returncode == 0, out.stderr


def test_every_traffic_example_is_tested_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("traffic-*.toml")) == sorted(NAMES)


# -- boot and do what the comment says -----------------------------------------------------------


def test_routes_example_routes_rewrites_and_falls_back(tmp_path: Path) -> None:
    names = ["web1", "web2", "api", "static", "canary"]
    with backends(*names) as bs:
        addrs = {f"127.0.0.1:{3001 + i}": b.port for i, b in enumerate(bs)}
        text, ports, admin = localize((EXAMPLES / "traffic-routes.toml").read_text(), addrs)
        (tmp_path / "gw.toml").write_text(text)
        assert check(tmp_path / "gw.toml").returncode == 0
        port = ports["web"]
        with gateway(text, admin_port=admin):
            default = {get(port).headers["x-backend"] for _ in range(2)}
            api = get(port, "/users", headers={"host": "api.example.com", "x-debug": "1"})
            sub = get(port, "/users", headers={"host": "eu.api.example.com:8080"})
            static = get(port, "/static/app.js?v=3")
            admin_write = get(port, "/admin/cache/42", method="DELETE")
            admin_read = get(port, "/admin/cache/42")
            canary = get(port, "/", headers={"x-canary": "1"})
    assert default == {"web1", "web2"}  # no route: the listener's round-robin pool
    assert api.headers["x-backend"] == "api"
    seen = dict((n, v) for n, v in api.json()["headers"])
    assert seen["x-gateway-route"] == "api" and "x-debug" not in seen
    assert sub.headers["x-backend"] == "api"
    assert static.headers["x-backend"] == "static"
    assert static.json()["path"] == "/assets/app.js?v=3"
    assert admin_write.headers["x-backend"] == "api"
    assert admin_read.headers["x-backend"] in ("web1", "web2")
    assert canary.headers["x-backend"] == "canary"


def test_weighted_example_sends_one_in_ten_to_the_canary_and_balances_reports() -> None:
    with backends("v1a", "v1b", "v2", "r1", "r2") as bs:
        ports_of = [3001, 3002, 3003, 3011, 3012]
        addrs = {f"127.0.0.1:{p}": b.port for p, b in zip(ports_of, bs, strict=True)}
        text, ports, admin = localize((EXAMPLES / "traffic-weighted.toml").read_text(), addrs)
        with gateway(text, admin_port=admin):
            with httpx.Client(timeout=10) as client:
                app = [
                    client.get(f"http://127.0.0.1:{ports['app']}/").headers["x-backend"]
                    for _ in range(20)
                ]
            reports = Counter(
                get(ports["reports"], "/report").headers["x-backend"] for _ in range(10)
            )
    assert Counter(app) == {"v1a": 10, "v1b": 8, "v2": 2}
    # smooth: the canary's turns are ten requests apart
    first = app.index("v2")
    assert app[first + 10] == "v2"
    assert set(reports) == {"r1", "r2"}


def test_affinity_example_sticks_by_cookie_header_and_source_ip(tls_files: dict[str, str]) -> None:
    with (
        backends("shop1", "shop2", "shop3", "api1", "api2", "api3") as bs,
        named_echo("db1") as db1,
        named_echo("db2") as db2,
    ):
        ports_of = [3001, 3002, 3003, 3011, 3012, 3013]
        addrs = {f"127.0.0.1:{p}": b.port for p, b in zip(ports_of, bs, strict=True)}
        addrs |= {"127.0.0.1:5433": db1, "127.0.0.1:5434": db2}
        text, ports, admin = localize(
            with_files((EXAMPLES / "traffic-affinity.toml").read_text(), tls_files),
            addrs,
            workers=2,
        )
        ctx = ssl.create_default_context(cafile=tls_files["ca"])
        shop = f"https://localhost:{ports['shop']}"
        with gateway(text, admin_port=admin):
            with httpx.Client(verify=ctx, http2=True, timeout=10) as client:
                first = client.get(f"{shop}/")
            cookie = COOKIE.match(first.headers["set-cookie"])
            assert cookie, first.headers
            sticky = []
            for _ in range(6):  # new connections: both workers
                with httpx.Client(verify=ctx, http2=True, timeout=10) as client:
                    r = client.get(
                        f"{shop}/cart", headers={"cookie": f"eg_affinity={cookie.group(1)}"}
                    )
                sticky.append(
                    (
                        r.status_code,
                        r.http_version,
                        r.headers.get("x-backend"),
                        r.headers.get("set-cookie"),
                    )
                )
            users = {
                u: {
                    get(ports["api"], "/profile", headers={"x-user-id": u}).headers["x-backend"]
                    for _ in range(4)
                }
                for u in ("42", "43", "44", "45")
            }

            def db_name() -> bytes:
                with socket.create_connection(("127.0.0.1", ports["db"]), timeout=5) as s:
                    return recv_line(s)

            dbs = {db_name() for _ in range(8)}
    assert first.status_code == 200 and first.http_version == "HTTP/2"
    assert sticky == [(200, "HTTP/2", first.headers["x-backend"], None)] * 6
    assert all(len(seen) == 1 for seen in users.values()), users
    assert len(dbs) == 1, dbs


def test_health_example_checks_backends_and_retries_around_a_dead_one() -> None:
    with backends("a", "b", "c") as (a, b, c):
        addrs = {"127.0.0.1:3001": a.port, "127.0.0.1:3002": b.port, "127.0.0.1:3003": c.port}
        text, ports, admin = localize((EXAMPLES / "traffic-health.toml").read_text(), addrs)
        port = ports["web"]

        def check_up(x: Backend) -> float:
            return gw.metric("health_check_up", cluster="app", backend=x.address)

        with gateway(text, admin_port=admin) as gw:
            # the first checks pass (GET /healthz answers "ok")
            for x in (a, b, c):
                assert poll(
                    lambda x=x: (
                        gw.metric(
                            "health_checks_total", cluster="app", backend=x.address, result="pass"
                        )
                        >= 1
                    ),
                    timeout=5,
                ), gw.metrics()
            # least_request draws two at random: 12 picks missed one backend
            # 2% of the time; 40 miss one with probability 3 x (2/3)^40 < 1e-6
            assert {get(port).headers["x-backend"] for _ in range(40)} == {"a", "b", "c"}
            # a backend failing its check 3 times (2 s apart) is taken out
            b.set_health(503)
            started = time.monotonic()
            assert poll(lambda: check_up(b) == 0, timeout=12), gw.metrics()
            took = time.monotonic() - started
            assert poll(
                lambda: gw.metric("backend_up", cluster="app", backend=b.address) == 0, timeout=2
            )
            without_b = [get(port) for _ in range(12)]
            # a dead backend costs the clients nothing: connect failures go elsewhere
            # (and once c is ejected too, fewer than half are healthy: panic mode
            # uses all three, and retries still answer for c)
            c.kill()
            after_kill = [get(port) for _ in range(12)]
            retried = gw.metric("upstream_retries_total", listener="web")
    assert 3.5 <= took <= 12, took
    assert [r.status_code for r in without_b] == [200] * 12
    assert {r.headers["x-backend"] for r in without_b} == {"a", "c"}
    assert [r.status_code for r in after_kill] == [200] * 12
    assert {r.headers["x-backend"] for r in after_kill} <= {"a", "b"}
    assert retried >= 1
