"""Hot reload (SIGHUP and POST /reload) and certificate rotation (SIGUSR1),
against a live gateway with real backends and clients."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import trustme

from tests.e2e.test_traffic_routes import backends
from tests.support.gateway import Gateway, free_port, gateway
from tests.support.h1 import ResponseReader, h1_config


def served_by(port: int, path: str = "/") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".encode())
        resp = ResponseReader().read(s, timeout=5)
    assert resp.status == 200, resp
    return dict(resp.headers)["x-backend"]


def listener(port: int, cluster: str, extra: str = "") -> str:
    return (
        f'\n[[listeners]]\nname = "web"\naddress = "127.0.0.1:{port}"\nprotocol = "h1"\n'
        f'cluster = "{cluster}"\n{extra}'
    )


def clusters(a: str, b: str) -> str:
    return (
        f'\n[[clusters]]\nname = "a"\n[[clusters.backends]]\naddress = "{a}"\nprotocol = "h1"\n'
        f'\n[[clusters]]\nname = "b"\n[[clusters.backends]]\naddress = "{b}"\nprotocol = "h1"\n'
    )


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def post_reload(admin: int) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rewrite(gw: Gateway, text: str) -> None:
    gw.config_path.write_text(text)


def test_sighup_swaps_the_pool_in_every_worker_and_a_bad_file_keeps_the_running_one() -> None:
    port, admin = free_port(), free_port()
    with backends("alpha", "beta") as (a, b):
        body = clusters(a.address, b.address)
        with gateway(
            h1_config(admin, listener(port, "a"), workers=2, tail=body), admin_port=admin
        ) as gw:
            assert {served_by(port) for _ in range(6)} == {"alpha"}
            rewrite(gw, h1_config(admin, listener(port, "b"), workers=2, tail=body))
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: all(served_by(port) == "beta" for _ in range(6)))
            assert gw.metric("config_reloads_total", result="applied") == 1

            # a broken file: every problem logged with its key, nothing changes
            rewrite(gw, h1_config(admin, listener(port, "nope"), workers=2, tail=body))
            gw.proc.send_signal(signal.SIGHUP)
            assert wait_for(
                lambda: gw.metric("config_reload_failures_total", reason="invalid") == 1
            )
            assert {served_by(port) for _ in range(6)} == {"beta"}
            rejected = [
                json.loads(line)["msg"]
                for line in gw.logs().splitlines()
                if line.startswith("{") and "reload rejected:" in line
            ]
            assert any('listeners[0].cluster = "nope"' in m for m in rejected), rejected


def test_a_reload_drops_the_metric_series_of_removed_backends() -> None:
    """Series labelled with a backend, cluster or route the new config no
    longer has leave /metrics (in the workers and the supervisor); the kept
    ones go on counting from where they were."""
    port, admin = free_port(), free_port()
    with backends("alpha", "beta") as (a, b):
        two = clusters(a.address, b.address)
        with gateway(
            h1_config(admin, listener(port, "b"), workers=2, tail=two), admin_port=admin
        ) as gw:
            for _ in range(4):
                assert served_by(port) == "beta"
            assert gw.metric("backend_requests_total", backend=b.address) == 4
            assert gw.metric("backend_request_duration_seconds_count", cluster="b") == 4
            # cluster "b" goes away; the listener moves to "a"
            one = (
                f'\n[[clusters]]\nname = "a"\n[[clusters.backends]]\n'
                f'address = "{a.address}"\nprotocol = "h1"\n'
            )
            rewrite(gw, h1_config(admin, listener(port, "a"), workers=2, tail=one))
            status, _ = post_reload(admin)
            assert status == 200
            assert wait_for(lambda: served_by(port) == "alpha")
            text = gw.metrics()
            assert f'backend="{b.address}"' not in text
            assert 'cluster="b"' not in text
            assert gw.metric("backend_requests_total", backend=a.address) >= 1


def test_post_reload_answers_what_happened_and_refuses_restart_only_changes() -> None:
    port, admin, other = free_port(), free_port(), free_port()
    with backends("alpha", "beta") as (a, b):
        body = clusters(a.address, b.address)
        with gateway(h1_config(admin, listener(port, "a"), tail=body), admin_port=admin) as gw:
            rewrite(gw, h1_config(admin, listener(other, "b"), tail=body))  # a new address
            status, outcome = post_reload(admin)
            assert status == 409
            assert outcome["result"] == "rejected" and outcome["reason"] == "restart_required"
            assert any("listeners[0].address" in str(p) for p in outcome["problems"])  # type: ignore[union-attr]
            assert served_by(port) == "alpha"
            assert gw.metric("config_reload_restart_required_total") >= 1

            rewrite(gw, h1_config(admin, listener(port, "b"), tail=body))
            status, outcome = post_reload(admin)
            assert (status, outcome["result"]) == (200, "applied")
            assert served_by(port) == "beta"


def test_reloads_under_load_fail_no_request() -> None:
    """Requests stream in while the pool flips 100 times: every one is answered 200."""
    port, admin = free_port(), free_port()
    with backends("alpha", "beta") as (a, b):
        body = clusters(a.address, b.address)
        texts = [h1_config(admin, listener(port, c), workers=2, tail=body) for c in ("a", "b")]
        with gateway(texts[0], admin_port=admin) as gw:
            stop = threading.Event()
            failures: list[str] = []
            seen: set[str] = set()

            def load() -> None:
                while not stop.is_set():
                    try:
                        seen.add(served_by(port))
                    except Exception as exc:
                        failures.append(repr(exc))

            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                for i in range(100):
                    rewrite(gw, texts[(i + 1) % 2])
                    status, outcome = post_reload(admin)
                    assert status == 200, outcome
                    time.sleep(0.05)
            finally:
                stop.set()
                for t in threads:
                    t.join(10)
            assert failures == []
            assert seen == {"alpha", "beta"}
            assert gw.metric("config_reloads_total", result="applied") == 100


def _issue(ca: trustme.CA, d: Path, name: str) -> tuple[str, str]:
    cert = ca.issue_cert("localhost", "127.0.0.1", common_name=name)
    c, k = d / f"{name}.crt", d / f"{name}.key"
    c.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(k))
    k.chmod(0o600)
    return str(c), str(k)


def _peer_cn(port: int, ca_path: str) -> str:
    ctx = ssl.create_default_context(cafile=ca_path)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return dict(x[0] for x in cert["subject"])["commonName"]  # type: ignore[arg-type,index]


def test_sigusr1_rotates_the_certificate_and_a_bad_pair_keeps_the_old(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert, key = _issue(ca, tmp_path, "first")
    port, admin = free_port(), free_port()
    with backends("alpha") as (a,):
        text = h1_config(
            admin,
            f'\n[[listeners]]\nname = "tls"\naddress = "127.0.0.1:{port}"\nprotocol = "h1s"\n'
            f'[listeners.tls]\ncert_path = "{cert}"\nkey_path = "{key}"\n'
            f'[[listeners.backends]]\naddress = "{a.address}"\nprotocol = "h1"\n',
            workers=2,
        )
        with gateway(text, admin_port=admin) as gw:
            assert _peer_cn(port, str(ca_path)) == "first"
            new_cert, new_key = _issue(ca, tmp_path, "second")
            Path(cert).write_bytes(Path(new_cert).read_bytes())
            Path(key).write_bytes(Path(new_key).read_bytes())
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGUSR1)
            assert wait_for(lambda: all(_peer_cn(port, str(ca_path)) == "second" for _ in range(6)))
            assert gw.metric("tls_certificate_reloads_total", result="ok") == 2  # per worker

            Path(key).write_text("not a key\n")
            gw.proc.send_signal(signal.SIGUSR1)
            assert wait_for(
                lambda: gw.metric("tls_certificate_reloads_total", result="failed") == 2
            )
            assert all(_peer_cn(port, str(ca_path)) == "second" for _ in range(6))


def _get_json(admin: int, path: str, token: str | None = None) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def test_admin_config_is_redacted_and_backends_show_health_and_load() -> None:
    token = "s3cret-token"
    digest = hashlib.sha256(token.encode()).hexdigest()
    port, admin = free_port(), free_port()
    with backends("alpha", "beta") as (a, b):
        tail = clusters(a.address, b.address) + (
            f'\n[admin]\napi_token_hash = "{digest}"\n'
            "\n[[clusters]]\n"
            'name = "both"\npolicy = "least_request"\n'
            f'[[clusters.backends]]\naddress = "{a.address}"\nprotocol = "h1"\nweight = 3\n'
            f'[[clusters.backends]]\naddress = "{b.address}"\nprotocol = "h1"\n'
            "[clusters.outlier]\nconsecutive_connect_failures = 1\n"
        )
        text = h1_config(admin, listener(port, "both"), workers=2, tail=tail)
        with gateway(text, admin_port=admin):
            assert _get_json(admin, "/config")[0] == 403
            assert _get_json(admin, "/backends")[0] == 403
            status, cfg = _get_json(admin, "/config", token)
            assert status == 200
            assert isinstance(cfg, dict)
            assert cfg["config"]["admin"]["api_token_hash"] == "<redacted>"
            assert digest not in json.dumps(cfg)
            assert cfg["config"]["listeners"][0]["cluster"] == "both"

            b.kill()  # one connect failure ejects it (outlier), in the worker that saw it

            def ejected() -> bool:
                served_by(port)  # connect failures are retried on alpha
                _, rep = _get_json(admin, "/backends", token)
                both = next(c for c in rep["clusters"] if c["name"] == "both")  # type: ignore[index]
                return any(w["ejections"] for x in both["backends"] for w in x["workers"])

            assert wait_for(ejected, timeout=15)
            status, report = _get_json(admin, "/backends", token)
            assert status == 200 and isinstance(report, dict)
            assert report["workers"] == 2
            both = next(c for c in report["clusters"] if c["name"] == "both")
            assert both["policy"] == "LeastRequest"
            by_name = {x["name"]: x for x in both["backends"]}
            assert by_name[a.address]["weight"] == 3
            assert by_name[a.address]["healthy_in_workers"] == 2
            assert by_name[b.address]["healthy_in_workers"] < 2
            assert any(w["ejections"] for w in by_name[b.address]["workers"])


def _cn_for(port: int, ca_path: str, sni: str) -> str:
    ctx = ssl.create_default_context(cafile=ca_path)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    return dict(x[0] for x in cert["subject"])["commonName"]  # type: ignore[arg-type,index]


def test_certificates_are_chosen_by_sni_and_reload_on_sigusr1(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_path = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_path)

    def issue(cn: str, *names: str) -> tuple[str, str]:
        cert = ca.issue_cert(*names, common_name=cn)
        c, k = tmp_path / f"{cn}.crt", tmp_path / f"{cn}.key"
        c.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(k))
        k.chmod(0o600)
        return str(c), str(k)

    main = issue("main", "localhost")
    api = issue("api", "api.test", "x.api.test")
    port, admin = free_port(), free_port()
    with backends("alpha") as (a,):
        text = h1_config(
            admin,
            f'\n[[listeners]]\nname = "tls"\naddress = "127.0.0.1:{port}"\nprotocol = "tls"\n'
            f'[listeners.tls]\ncert_path = "{main[0]}"\nkey_path = "{main[1]}"\n'
            f"[[listeners.tls.certificates]]\n"
            f'server_names = ["api.test", "*.api.test"]\n'
            f'cert_path = "{api[0]}"\nkey_path = "{api[1]}"\n'
            f'[[listeners.backends]]\naddress = "{a.address}"\n',
        )
        with gateway(text, admin_port=admin) as gw:
            assert _cn_for(port, ca_path, "localhost") == "main"
            assert _cn_for(port, ca_path, "api.test") == "api"
            assert _cn_for(port, ca_path, "x.api.test") == "api"
            renewed = issue("api2", "api.test", "x.api.test")
            Path(api[0]).write_bytes(Path(renewed[0]).read_bytes())
            Path(api[1]).write_bytes(Path(renewed[1]).read_bytes())
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGUSR1)
            assert wait_for(lambda: _cn_for(port, ca_path, "api.test") == "api2")
            assert _cn_for(port, ca_path, "localhost") == "main"
