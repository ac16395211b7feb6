"""The metrics catalog (docs/metrics.md) against the code and a real scrape.

One gateway (two workers) serves every kind of listener: ``h1`` with routes
to named clusters (one with an active health check and outlier detection,
one whose only backend is dead, one a WebSocket echo), ``h1s`` (HTTP/2 by
ALPN), ``quic`` (HTTP/3), ``tcp`` and ``udp``. A little traffic of each kind
goes through, including a 404 (no route) and a 502 (dead backend); then
``/metrics`` is scraped. The catalog is parsed from docs/metrics.md itself,
so the doc, the code and this test cannot drift apart:

- the families the code registers are exactly the documented ones, with the
  documented type and label names;
- every documented family is in the scrape, with its ``# TYPE``;
- the families this traffic must move have moved, with the right labels;
- the label budget holds: label values come from the config or fixed
  vocabularies (never a request path, a Host or a client address), and no
  family has more series than the per-family cap.
"""

from __future__ import annotations

import ipaddress
import json
import re
import signal
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
from websockets.sync.client import connect as ws_connect

from expressgateway.observability.metrics import MAX_SERIES_PER_FAMILY, Registry, render
from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import ResponseReader, websocket_echo
from tests.support.h3 import H3Client
from tests.support.l4 import UdpEcho, poll, recv_exactly
from tests.support.processes import origin, tcp_echo

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "metrics.md"
#: a path and a Host no label may ever carry
SECRET_PATH = "/secret-path-123"
SECRET_HOST = "tenant-9f3a.example"
#: every path the traffic below uses
PATHS = ("/", "/status/503", SECRET_PATH, "/broken", "/ws")
KINDS = ("counter", "gauge", "histogram")
#: labels whose values name things in the config
CONFIG_LABELS = ("listener", "cluster", "route", "backend", "host")
SLUG = re.compile(r"[a-z0-9_]+")
WORKERS = 2

# -- the catalog, read from the doc ------------------------------------------------------------


@dataclass(frozen=True)
class Documented:
    name: str
    kind: str
    labels: tuple[str, ...]
    section: str


def doc_sections() -> Iterator[tuple[str, list[list[str]]]]:
    """(heading, table rows as cell lists) for every ``##`` section."""
    section: str = ""
    rows: list[list[str]] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            yield section, rows
            section, rows = line[3:].strip(), []
        elif line.startswith("| ") and not line.startswith("|--"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    yield section, rows


def catalog() -> dict[str, Documented]:
    """Every family row of the doc: ``| `name` | type | `label`, ... | ...``,
    outside the "Not yet" section (nothing there is built)."""
    families: dict[str, Documented] = {}
    for section, rows in doc_sections():
        if section.lower().startswith("not yet"):
            continue
        for cells in rows:
            m = re.fullmatch(r"`([a-z0-9_]+)`", cells[0])
            if m is None or len(cells) < 3 or cells[1] not in KINDS:
                continue
            assert m.group(1) not in families, f"{m.group(1)} documented twice"
            labels = tuple(re.findall(r"`([a-z_]+)`", cells[2]))
            families[m.group(1)] = Documented(m.group(1), cells[1], labels, section)
    return families


def budget_labels() -> set[str]:
    """Label names the doc's "Label budget" table accounts for."""
    for section, rows in doc_sections():
        if section == "Label budget":
            return {name for cells in rows for name in re.findall(r"`([a-z_]+)`", cells[0])}
    raise AssertionError("docs/metrics.md has no Label budget section")


# -- the scrape, parsed -------------------------------------------------------------------------

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    name: str
    kind: str = "untyped"
    #: (sample name, labels) -> value; histogram samples keep their suffix
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def series(self) -> set[Labels]:
        """Distinct label sets (``le`` left out: one histogram series is one set)."""
        return {tuple(kv for kv in labels if kv[0] != "le") for _, labels in self.samples}

    def total(self, suffix: str = "", **want: str) -> float:
        """Sum of the samples of ``name + suffix`` whose labels include ``want``."""
        out = 0.0
        for (sample, labels), value in self.samples.items():
            d = dict(labels)
            if sample == self.name + suffix and all(d.get(k) == v for k, v in want.items()):
                out += value
        return out


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[str, Family]:
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families.setdefault(name, Family(name)).kind = kind
            continue
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, rest = key.partition("{")
        base = sample
        for suffix in ("_bucket", "_sum", "_count"):
            if sample.endswith(suffix) and sample[: -len(suffix)] in families:
                base = sample[: -len(suffix)]
        assert base in families, f"sample without a # TYPE line: {line}"
        families[base].samples[(sample, tuple(_LABEL.findall(rest)))] = float(value)
    return families


# -- the rig ------------------------------------------------------------------------------------


def config(
    admin: int, ports: dict[str, int], backends: dict[str, int], tls: dict[str, str], quic: Path
) -> str:
    return f"""
[runtime]
workers = {WORKERS}
readiness_settle_ms = 0
drain_timeout_ms = 1000
connect_timeout_ms = 2000

[observability]
metrics_bind = "127.0.0.1:{admin}"

[[listeners]]
name = "web"
address = "127.0.0.1:{ports["web"]}"
protocol = "h1"

[listeners.websocket]

[[listeners.routes]]
name = "home"
cluster = "app"
path_exact = "/"

[[listeners.routes]]
name = "status"
cluster = "app"
path_prefix = "/status/"

[[listeners.routes]]
name = "broken"
cluster = "gone"
path_prefix = "/broken"

[[listeners.routes]]
name = "chat"
cluster = "ws"
path_prefix = "/ws"

[[listeners]]
name = "secure"
address = "127.0.0.1:{ports["secure"]}"
protocol = "h1s"
cluster = "app"

[listeners.tls]
cert_path = "{tls["cert"]}"
key_path = "{tls["key"]}"

[[listeners]]
name = "quic"
address = "127.0.0.1:{ports["quic"]}"
protocol = "quic"
cluster = "app"

[listeners.quic]
cert_path = "{tls["cert"]}"
key_path = "{tls["key"]}"
retry_secret_path = "{quic / "retry.key"}"

[[listeners]]
name = "tcp-in"
address = "127.0.0.1:{ports["tcp"]}"
protocol = "tcp"

[[listeners.backends]]
address = "127.0.0.1:{backends["echo"]}"

[[listeners]]
name = "udp-in"
address = "127.0.0.1:{ports["udp"]}"
protocol = "udp"

[[listeners.backends]]
address = "127.0.0.1:{backends["udp"]}"
protocol = "udp"

[[clusters]]
name = "app"

[[clusters.backends]]
address = "127.0.0.1:{backends["origin"]}"
protocol = "h1"

[clusters.health_check]
kind = "http"
path = "/"
interval_ms = 200
jitter_ms = 0
timeout_ms = 500

[clusters.outlier]
consecutive_5xx = 5

[[clusters]]
name = "gone"

[[clusters.backends]]
address = "127.0.0.1:{backends["dead"]}"
protocol = "h1"

[[clusters]]
name = "ws"

[[clusters.backends]]
address = "127.0.0.1:{backends["ws"]}"
protocol = "h1"
"""


@dataclass
class Rig:
    gw: Gateway
    ports: dict[str, int]
    backends: dict[str, int]
    ca: str
    #: what each exchange of the traffic got (a status, or None when it failed)
    got: dict[str, int | None] = field(default_factory=dict)
    scrape: str = ""

    def backend(self, which: str) -> str:
        return f"127.0.0.1:{self.backends[which]}"


def h1(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {SECRET_HOST}\r\n\r\n".encode())
        return ResponseReader(b"GET").read(s, timeout=10).status


def drive(rig: Rig) -> None:
    """A little traffic of every kind."""
    p, got = rig.ports, rig.got
    got["h1 /"] = h1(p["web"], "/")
    got["h1 /status/503"] = h1(p["web"], "/status/503")
    got["h1 no route"] = h1(p["web"], SECRET_PATH)
    got["h1 dead backend"] = h1(p["web"], "/broken")
    ctx = ssl.create_default_context(cafile=rig.ca)
    with httpx.Client(http1=False, http2=True, verify=ctx, timeout=10) as client:
        r = client.get(f"https://localhost:{p['secure']}/")
        got["h2 /"] = r.status_code if r.http_version == "HTTP/2" else None
        got["h2 secret"] = client.get(f"https://localhost:{p['secure']}{SECRET_PATH}").status_code
    with H3Client(p["quic"], ca=rig.ca) as client:
        got["h3 /"] = client.request("GET", "/", timeout=10).status
        got["h3 secret"] = client.request("GET", SECRET_PATH, timeout=10).status
    with ws_connect(f"ws://127.0.0.1:{p['web']}/ws", open_timeout=5, compression=None) as ws:
        ws.send("through the gateway")
        got["ws echo"] = 101 if ws.recv(timeout=5) == "through the gateway" else None
    with socket.create_connection(("127.0.0.1", p["tcp"]), timeout=10) as s:
        s.sendall(b"hello tcp")
        got["tcp echo"] = 200 if recv_exactly(s, 9) == b"hello tcp" else None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(b"hello udp", ("127.0.0.1", p["udp"]))
        data, _ = u.recvfrom(65535)
        got["udp echo"] = 200 if data.endswith(b"|hello udp") else None


def reload(gw: Gateway) -> None:
    """Rotate the certificates (SIGUSR1), then reload the unchanged file (SIGHUP)."""
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGUSR1)
    certs = {"listener": "quic", "result": "ok"}
    assert poll(lambda: gw.metric("tls_certificate_reloads_total", **certs) == WORKERS, 5)
    gw.proc.send_signal(signal.SIGHUP)  # an applied reload rotates them again
    assert poll(lambda: gw.metric("config_reloads_total", result="applied") == 1, 5)
    assert poll(lambda: gw.metric("tls_certificate_reloads_total", **certs) == 2 * WORKERS, 5)


def settled(gw: Gateway) -> bool:
    """Every client is gone and the active check has passed at least once."""
    fams = parse(gw.metrics())
    open_now = sum(
        fams[name].total()
        for name in ("http_requests_inflight", "accept_inflight", "quic_connections_open")
    )
    checked = fams["health_checks_total"].total(result="pass") > 0
    return open_now == 0 and checked


@pytest.fixture(scope="module")
def rig(tls_files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    quic_dir = tmp_path_factory.mktemp("quic")
    ports = {
        "web": free_port(),
        "secure": free_port(),
        "quic": free_port(udp=True),
        "tcp": free_port(),
        "udp": free_port(udp=True),
    }
    with origin() as op, tcp_echo() as echo, websocket_echo() as ws, UdpEcho() as udp:
        backends = {"origin": op, "echo": echo, "ws": ws, "udp": udp.port, "dead": free_port()}
        admin = free_port()
        with gateway(config(admin, ports, backends, tls_files, quic_dir), admin_port=admin) as gw:
            r = Rig(gw, ports, backends, tls_files["ca"])
            drive(r)
            reload(gw)
            poll(lambda: settled(gw), timeout=5)
            r.scrape = gw.metrics()
            yield r


@pytest.fixture(scope="module")
def scrape(rig: Rig) -> dict[str, Family]:
    return parse(rig.scrape)


# -- the catalog against the code ---------------------------------------------------------------

REGISTERED = """
import importlib, json, pkgutil
import expressgateway
from expressgateway.observability.metrics import REGISTRY
for m in pkgutil.walk_packages(expressgateway.__path__, "expressgateway."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
print(json.dumps({n: [f.kind, list(f.labelnames)] for n, f in REGISTRY.families.items()}))
"""


def test_the_doc_lists_exactly_the_families_the_code_registers() -> None:
    # every module imported (in a child process): lazily loaded families too
    out = subprocess.run(
        [sys.executable, "-c", REGISTERED], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    code = {name: (kind, tuple(labels)) for name, (kind, labels) in json.loads(out.stdout).items()}
    doc = {d.name: (d.kind, d.labels) for d in catalog().values()}
    assert sorted(set(code) - set(doc)) == [], "registered in the code, not in docs/metrics.md"
    assert sorted(set(doc) - set(code)) == [], "in docs/metrics.md, not registered in the code"
    wrong = {n: {"code": code[n], "doc": doc[n]} for n in code if code[n] != doc[n]}
    assert wrong == {}, "type or label names differ"


def test_the_doc_states_the_series_cap_the_code_enforces() -> None:
    assert f"`MAX_SERIES_PER_FAMILY` = {MAX_SERIES_PER_FAMILY} " in DOC.read_text()


def test_every_label_name_is_in_the_label_budget() -> None:
    used = {label for d in catalog().values() for label in d.labels}
    assert used - budget_labels() == set()


# -- the catalog against the scrape -------------------------------------------------------------


def test_the_traffic_got_its_answers(rig: Rig) -> None:
    assert rig.got == {
        "h1 /": 200,
        "h1 /status/503": 503,
        "h1 no route": 404,
        "h1 dead backend": 502,
        "h2 /": 200,
        "h2 secret": 404,  # the listener's default pool: the origin's own 404
        "h3 /": 200,
        "h3 secret": 404,
        "ws echo": 101,
        "tcp echo": 200,
        "udp echo": 200,
    }


def test_every_documented_family_is_scraped_with_its_type(scrape: dict[str, Family]) -> None:
    missing = [name for name in catalog() if name not in scrape]
    assert missing == []
    wrong = {n: (d.kind, scrape[n].kind) for n, d in catalog().items() if scrape[n].kind != d.kind}
    assert wrong == {}
    for name, fam in scrape.items():
        doc = catalog().get(name)
        assert doc is not None, f"{name} is scraped but not documented"
        for labels in fam.series():
            assert tuple(k for k, _ in labels) == doc.labels, (name, labels)


def test_the_traffic_moved_the_families(rig: Rig, scrape: dict[str, Family]) -> None:
    origin_, dead = rig.backend("origin"), rig.backend("dead")

    def moved(name: str, suffix: str = "", **labels: str) -> float:
        value = scrape[name].total(suffix, **labels)
        assert value > 0, f"{name}{suffix}{labels} did not move"
        return value

    # HTTP requests, per listener, route, version and status class
    moved("http_requests_total", listener="web", route="home", version="h1", status_class="2xx")
    moved("http_requests_total", listener="web", route="status", status_class="5xx")
    moved("http_requests_total", listener="web", route="", status_class="4xx")  # no route
    moved("http_requests_total", listener="web", route="broken", status_class="5xx")
    moved("http_requests_total", listener="web", route="chat", status_class="1xx")
    moved("http_requests_total", listener="secure", version="h2", status_class="2xx")
    moved("http_requests_total", listener="quic", version="h3", status_class="2xx")
    moved("http_request_duration_seconds", "_count", listener="web", route="home", version="h1")
    moved("http_request_duration_seconds", "_count", listener="secure", version="h2")
    moved("http_request_duration_seconds", "_count", listener="quic", version="h3")
    assert scrape["http_request_duration_seconds"].total(
        "_bucket", listener="web", route="home", le="+Inf"
    ) == scrape["http_request_duration_seconds"].total("_count", listener="web", route="home")
    moved("http_request_errors_total", listener="web", reason="no_route")
    moved("http_request_errors_total", listener="web", reason="connect_refused")
    # upstream and backends
    moved("backend_requests_total", listener="web", backend=origin_, status_class="2xx")
    moved("backend_requests_total", listener="web", backend=origin_, status_class="5xx")
    moved("backend_requests_total", listener="web", backend=dead, status_class="5xx")
    moved("backend_requests_total", listener="quic", backend=origin_, status_class="2xx")
    moved("backend_request_duration_seconds", "_count", cluster="app", backend=origin_)
    moved("backend_request_duration_seconds", "_count", cluster="gone", backend=dead)
    moved("upstream_errors_total", listener="web", backend=dead, reason="connect_refused")
    moved("upstream_retries_total", listener="web", reason="connect_refused")
    moved("pool_connections_total")
    # health: the supervisor's active check, and every worker's view
    moved("health_checks_total", cluster="app", backend=origin_, result="pass")
    assert scrape["health_check_up"].total(cluster="app", backend=origin_) == 1
    assert scrape["backend_up"].total(cluster="app", backend=origin_) == WORKERS
    assert scrape["backend_up"].total(cluster="tcp-in") == WORKERS  # an inline pool
    # connections and protocols
    for listener in ("web", "secure", "tcp-in"):
        moved("connections_total", listener=listener)
    moved("tls_handshakes_total", listener="secure", resumed="false")
    moved("h2_streams_total", listener="secure")
    assert moved("h3_streams_total", listener="quic") >= 2
    moved("quic_connections_total", listener="quic")
    moved("quic_retries_total", listener="quic")
    moved("websocket_connections_total", listener="web")
    moved("websocket_frames_total", listener="web", direction="client_to_backend")
    moved("websocket_frames_total", listener="web", direction="backend_to_client")
    # L4
    assert moved("bytes_client_to_backend", listener="tcp-in") == 9
    assert moved("bytes_backend_to_client", listener="tcp-in") == 9
    moved("udp_flows_total", listener="udp-in")
    for direction in ("client_to_backend", "backend_to_client"):
        moved("udp_datagrams_total", listener="udp-in", direction=direction)
        moved("udp_bytes_total", listener="udp-in", direction=direction)
    # reload and certificates: every worker rotates its TLS and QUIC listeners, on
    # SIGUSR1 and again on the reload
    for listener in ("secure", "quic"):
        certs = moved("tls_certificate_reloads_total", listener=listener, result="ok")
        assert certs == 2 * WORKERS
    assert scrape["config_reloads_total"].total(result="applied") == 1
    assert scrape["config_reload_failures_total"].total() == 0
    # workers and process
    assert scrape["workers"].total() == WORKERS
    assert scrape["worker_restarts_total"].total() == 0
    assert abs(scrape["process_start_time_seconds"].total() - time.time()) < 300
    # what is open went back to zero once the clients left
    for name in ("http_requests_inflight", "websocket_connections", "quic_connections_open"):
        assert scrape[name].total() == 0, name


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    return True


def test_labels_stay_within_the_budget(rig: Rig, scrape: dict[str, Family]) -> None:
    listeners = {"web", "secure", "quic", "tcp-in", "udp-in"}
    allowed = {
        "listener": listeners,
        # named clusters, and the inline pools named after their listener
        "cluster": {"app", "gone", "ws"} | listeners,
        "route": {"home", "status", "broken", "chat", ""},
        "backend": {rig.backend(b) for b in rig.backends},
        "host": set(),  # every backend is an IP literal: nothing to resolve
    }
    names = budget_labels()
    for fam in scrape.values():
        assert len(fam.series()) <= MAX_SERIES_PER_FAMILY, fam.name
        for labels in fam.series():
            for label, value in labels:
                where = f"{fam.name}{{{label}={value!r}}}"
                assert label in names, f"{where}: label not in the budget"
                assert value not in PATHS and "secret-path" not in value, where
                assert SECRET_HOST not in value and "__overflow__" not in value, where
                assert not is_ip(value), f"{where}: a bare address (a client's)"
                if label in CONFIG_LABELS:
                    assert value in allowed[label], f"{where}: not from the config"
                else:
                    assert SLUG.fullmatch(value), f"{where}: not a slug"
    assert {v for f in scrape.values() for s in f.series() for k, v in s if k == "version"} == {
        "h1",
        "h2",
        "h3",
    }


def test_past_the_series_cap_new_label_sets_fold_into_one_overflow_series() -> None:
    reg = Registry()
    fam = reg.counter("demo_total", "A family fed more label sets than the cap.", ("path",))
    for i in range(MAX_SERIES_PER_FAMILY + 500):
        fam.labels(f"/item/{i}").inc()
    fam.labels("/item/0").inc()  # an existing series keeps counting
    assert len(fam.children) == MAX_SERIES_PER_FAMILY + 1
    assert fam.labels("/item/0").value == 2
    assert fam.children[("__overflow__",)].value == 500
    text = render({"demo_total": reg.snapshot()["demo_total"]})
    assert text.count("\ndemo_total{") == MAX_SERIES_PER_FAMILY + 1
