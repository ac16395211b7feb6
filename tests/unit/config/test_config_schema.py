"""The schema metadata: docs, reload classes, feature tags, generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from expressgateway.config import Config, parse_config
from expressgateway.config.docs import EXAMPLE, render_markdown
from expressgateway.config.schema import iter_settings
from tests.unit.config.helpers import H1

DOCS = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def _reload(path: str) -> str:
    for info in iter_settings(Config):
        if info.path == path:
            return info.reload
    raise KeyError(path)


def test_docs_file_matches_the_schema() -> None:
    expected = render_markdown()
    actual = DOCS.read_text() if DOCS.exists() else ""
    assert actual == expected, (
        "docs/configuration.md is out of date; regenerate it with "
        "`python -m expressgateway.config.docs > docs/configuration.md`"
    )


def test_docs_example_loads() -> None:
    cfg = parse_config(EXAMPLE)
    assert [lst.name for lst in cfg.listeners] == ["web", "postgres"]


def test_every_key_is_documented() -> None:
    for info in iter_settings(Config):
        assert len(info.spec.meta.doc) > 10, info.path


def test_rendered_docs_list_every_key() -> None:
    text = render_markdown()
    for info in iter_settings(Config):
        assert f"| `{info.spec.name}` |" in text, info.path


@pytest.mark.parametrize(
    "path",
    [
        "listeners[].backends",
        "listeners[].backends[].weight",
        "listeners[].http",
        "listeners[].http.header_timeout_ms",
        "listeners[].h2_security.max_concurrent_streams",
        "listeners[].websocket.idle_timeout_seconds",
        "listeners[].alt_svc.max_age",
        "listeners[].grpc.max_deadline_seconds",
        "runtime.max_keepalive_requests",
        "pool.per_peer_max",
        "observability.access_log",
        # certificates swap on reload (issue #7), unlike the original
        "listeners[].tls.cert_path",
        "listeners[].tls.key_path",
        "listeners[].tls.certificates[].cert_path",
        "listeners[].quic.cert_path",
        "clusters",
        "listeners[].routes",
    ],
)
def test_swappable_keys_follow_the_reload_contract(path: str) -> None:
    assert _reload(path) == "swappable"


@pytest.mark.parametrize(
    "path",
    [
        "listeners",
        "listeners[].address",
        "listeners[].protocol",
        "listeners[].name",
        "listeners[].tls.certificates",
        "listeners[].tls.certificates[].server_names",
        "listeners[].quic.max_idle_timeout_ms",
        "listeners[].drain_timeout_ms",
        "listeners[].drain_jitter_ms",
        "runtime.drain_timeout_ms",
        "runtime.workers",
        "runtime.watchdog.sweep_interval_ms",
        "observability.metrics_bind",
        "admin.api_token_hash",
        "security.strict_te",
        "passthrough.backends",
    ],
)
def test_restart_keys_follow_the_reload_contract(path: str) -> None:
    assert _reload(path) == "restart"


def test_no_features_in_a_plain_config() -> None:
    assert parse_config(H1).features_in_use() == []


def test_features_in_use_reports_each_tagged_key(tmp_path: Path) -> None:
    for name in ("c", "k", "ca"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o600)
    text = f"""
[[listeners]]
address = "127.0.0.1:8443"
protocol = "h1s"
[listeners.tls]
cert_path = "c"
key_path = "k"
[listeners.h2_security]
[listeners.grpc]
[listeners.websocket]
[listeners.alt_svc]
h3_port = 8443
[[listeners.backends]]
address = "127.0.0.1:1"
protocol = "h2"
[[listeners.backends]]
address = "127.0.0.1:2"
protocol = "h3"
tls_ca_path = "ca"

[[listeners]]
address = "127.0.0.1:8443"
protocol = "quic"
[listeners.quic]
cert_path = "c"
key_path = "k"
retry_secret_path = "r"
[listeners.quic.raw_proxy]
backend_addr = "127.0.0.1:9"
sni = "x"

[runtime]
xdp_enabled = true
xdp_interface = "lo"
[runtime.watchdog]

[passthrough]
bind_addr = "127.0.0.1:4433"
backends = ["127.0.0.1:4434"]
retry_secret_path = "{tmp_path / "pr"}"
"""
    cfg = parse_config(text, source=str(tmp_path / "gw.toml"))
    assert sorted(cfg.features_in_use()) == sorted(
        [
            ("alt_svc", "listeners[0].alt_svc"),
            ("h2_security", "listeners[0].h2_security"),
            ("websocket", "listeners[0].websocket"),
            ("grpc", "listeners[0].grpc"),
            ("h2_backend", "listeners[0].backends[0].protocol"),
            ("h3_backend", "listeners[0].backends[1].protocol"),
            ("quic", "listeners[1].quic"),
            ("quic_raw_proxy", "listeners[1].quic.raw_proxy"),
            ("xdp", "runtime.xdp_enabled"),
            ("watchdog", "runtime.watchdog"),
            ("passthrough", "passthrough"),
        ]
    )


def test_xdp_written_as_false_is_not_a_feature_in_use() -> None:
    cfg = parse_config(H1 + "[runtime]\nxdp_enabled = false\n")
    assert cfg.features_in_use() == []
