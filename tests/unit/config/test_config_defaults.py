"""Defaults: every section exists with the original's defaults unless it is opt-in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from expressgateway.config import (
    AdminConfig,
    Config,
    H2SecurityConfig,
    HttpConfig,
    ObservabilityConfig,
    PoolConfig,
    RuntimeConfig,
    RuntimeTlsConfig,
    SecurityConfig,
    UdpConfig,
    WatchdogConfig,
    load_config,
    parse_config,
)
from expressgateway.config.schema import section_specs
from tests.unit.config.helpers import H1


def test_minimal_listener_gets_default_blocks() -> None:
    (lst,) = parse_config(H1).listeners
    assert lst.http == HttpConfig()
    assert lst.h2_security == H2SecurityConfig()
    assert lst.udp == UdpConfig()
    assert lst.tls is None
    assert lst.quic is None
    assert lst.alt_svc is None
    assert lst.websocket is None
    assert lst.grpc is None
    assert lst.drain_timeout_ms is None
    assert lst.drain_jitter_ms is None


def test_top_level_sections_default_when_absent() -> None:
    cfg = parse_config(H1)
    assert cfg.runtime == RuntimeConfig()
    assert cfg.runtime.tls == RuntimeTlsConfig(tls13_only=False)
    assert cfg.runtime.watchdog == WatchdogConfig()
    assert cfg.observability == ObservabilityConfig()
    assert cfg.admin == AdminConfig()
    assert cfg.security == SecurityConfig()
    assert cfg.pool == PoolConfig()
    assert cfg.passthrough is None


def test_http_defaults_match_the_original_and_new_limits() -> None:
    http = HttpConfig()
    assert (http.header_timeout_ms, http.body_timeout_ms) == (10_000, 30_000)
    assert (http.total_timeout_ms, http.head_timeout_ms) == (60_000, 60_000)
    assert http.max_request_body_bytes == http.max_response_body_bytes == 64 * 1024 * 1024
    assert (http.max_header_bytes, http.max_headers) == (65_536, 256)
    assert http.via is True and http.x_forwarded is True


def test_runtime_defaults_match_the_original() -> None:
    rt = RuntimeConfig()
    assert rt.xdp_enabled is False and rt.xdp_interface is None and rt.xdp_mode == "auto"
    assert (rt.drain_timeout_ms, rt.readiness_settle_ms, rt.drain_jitter_ms) == (
        10_000,
        11_000,
        None,
    )
    assert (rt.handshake_timeout_ms, rt.connect_timeout_ms) == (5000, 5000)
    assert (rt.max_inflight_connections, rt.per_ip_connection_cap) == (65_536, 1024)
    assert rt.header_underscore_policy == "reject"
    assert (rt.max_keepalive_requests, rt.max_requests_per_h3_connection) == (100, 1000)
    assert rt.xdp_new_flow_cap_per_sec_per_cpu == 125_000
    assert (rt.workers, rt.tcp_backlog, rt.accept_backoff_max_ms) == (0, 50_000, 1000)
    assert rt.watchdog == WatchdogConfig(
        header_deadline_ms=5000, body_progress_min_bps=64, sweep_interval_ms=1000
    )


def test_h2_security_defaults_are_the_original_edge_defaults() -> None:
    h2 = H2SecurityConfig()
    assert h2.max_pending_accept_reset_streams == h2.max_local_error_reset_streams == 100
    assert h2.max_concurrent_streams == 256
    assert h2.max_header_list_size == h2.max_send_buf_size == 65_536
    assert h2.keep_alive_interval_ms == h2.keep_alive_timeout_ms == 30_000
    assert h2.initial_stream_window_size == 65_535
    assert h2.initial_connection_window_size == 1_048_576


def test_pool_and_udp_defaults() -> None:
    assert PoolConfig() == PoolConfig(
        per_peer_max=8, total_max=256, idle_timeout_ms=60_000, max_age_ms=300_000
    )
    assert UdpConfig() == UdpConfig(
        idle_timeout_ms=60_000, max_flows=65_536, max_datagram_size=65_507
    )


def test_backend_defaults() -> None:
    (backend,) = parse_config(H1).listeners[0].backends
    assert backend.protocol == "tcp"
    assert backend.weight == 1
    assert backend.tls is False
    assert backend.tls_ca_path is None and backend.tls_verify_hostname is None
    assert backend.tls_verify_peer is True


def test_websocket_block_present_enables_with_defaults() -> None:
    (lst,) = parse_config(H1 + "[listeners.websocket]\n").listeners
    assert lst.websocket is not None
    assert lst.websocket.enabled is True
    assert lst.websocket.idle_timeout_seconds == 60
    assert lst.websocket.ping_rate_limit_per_window == 50
    assert lst.websocket.h2_extended_connect is False


def test_grpc_block_present_enables_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    (tmp_path / "k.pem").chmod(0o600)
    text = f"""
[[listeners]]
address = "127.0.0.1:8443"
protocol = "h1s"
[listeners.tls]
cert_path = "{tmp_path / "c.pem"}"
key_path = "{tmp_path / "k.pem"}"
[listeners.grpc]
"""
    (lst,) = parse_config(text).listeners
    assert lst.grpc is not None
    assert (lst.grpc.enabled, lst.grpc.max_deadline_seconds, lst.grpc.health_synthesized) == (
        True,
        300,
        True,
    )


def test_effective_drain_jitter_defaults_to_a_quarter_of_drain_timeout() -> None:
    assert RuntimeConfig(drain_timeout_ms=10_000).effective_drain_jitter_ms == 2500
    assert RuntimeConfig(drain_timeout_ms=10_000, drain_jitter_ms=7).effective_drain_jitter_ms == 7


def test_listener_drain_inherits_from_runtime() -> None:
    cfg = parse_config(H1 + "[runtime]\ndrain_timeout_ms = 8000\n")
    assert cfg.effective_drain(cfg.listeners[0]) == (8000, 2000)
    text = H1.replace('protocol = "h1"', 'protocol = "h1"\ndrain_timeout_ms = 400')
    cfg = parse_config(text)
    assert cfg.effective_drain(cfg.listeners[0]) == (400, 100)


def test_config_is_frozen() -> None:
    cfg = parse_config(H1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.listeners[0].port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.runtime = RuntimeConfig()  # type: ignore[misc]


def test_every_config_class_is_slotted() -> None:
    seen: set[type] = set()
    todo: list[type] = [Config]
    while todo:
        cls = todo.pop()
        seen.add(cls)
        assert "__slots__" in cls.__dict__, cls.__name__
        todo.extend(s.section for s in section_specs(cls) if s.section and s.section not in seen)
    assert len(seen) == 28  # 20 + clusters, routes, their 5 sub-tables, SNI certificates


def test_config_keeps_source_and_raw_text(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(H1)
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert cfg.text == H1
    assert parse_config(H1).source == "<string>"


def test_load_config_records_absolute_source_for_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gw.toml").write_text(H1)
    monkeypatch.chdir(tmp_path)
    assert load_config("gw.toml").source == str(tmp_path / "gw.toml")
