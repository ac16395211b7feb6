"""A config written for the original ExpressGateway loads unchanged."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from expressgateway.config import Config
from expressgateway.config.model import Config as ConfigRoot
from expressgateway.config.schema import iter_settings

#: Every key of the original schema (SEED-INVENTORY 8.2), each written once.
ORIGINAL_EVERY_KEY = """
[[listeners]]
address = "0.0.0.0:8443"
protocol = "h1s"
drain_timeout_ms = 20000
drain_jitter_ms = 1000

[listeners.tls]
cert_path = "cert.pem"
key_path = "key.pem"
ticket_rotation_interval_seconds = 86400
ticket_rotation_overlap_seconds = 86400

[listeners.alt_svc]
h3_port = 8443
max_age = 3600

[listeners.http]
header_timeout_ms = 10000
body_timeout_ms = 30000
total_timeout_ms = 60000
head_timeout_ms = 60000

[listeners.h2_security]
max_pending_accept_reset_streams = 100
max_local_error_reset_streams = 100
max_concurrent_streams = 256
max_header_list_size = 65536
max_send_buf_size = 65536
keep_alive_interval_ms = 30000
keep_alive_timeout_ms = 30000
initial_stream_window_size = 65535
initial_connection_window_size = 1048576

[listeners.websocket]
enabled = true
idle_timeout_seconds = 60
max_message_size_bytes = 16777216
ping_rate_limit_per_window = 50
ping_rate_limit_window_seconds = 10
read_frame_timeout_seconds = 30
h2_extended_connect = false
h3_extended_connect = false

[listeners.grpc]
enabled = true
max_deadline_seconds = 300
health_synthesized = true

[[listeners.backends]]
address = "127.0.0.1:3000"
protocol = "h1"
weight = 1

[[listeners.backends]]
address = "127.0.0.1:3001"
protocol = "h2"

[[listeners.backends]]
address = "localhost:4433"
protocol = "h3"
tls_ca_path = "ca.pem"
tls_verify_hostname = "localhost"
tls_verify_peer = true

[[listeners]]
address = "0.0.0.0:8443"
protocol = "quic"

[listeners.quic]
cert_path = "quic.crt"
key_path = "quic.key"
retry_secret_path = "retry.key"
max_idle_timeout_ms = 30000
max_recv_udp_payload_size = 1350

[[listeners.backends]]
address = "127.0.0.1:3000"
protocol = "h1"

[[listeners]]
address = "[::]:9443"
protocol = "quic"

[listeners.quic]
cert_path = "quic.crt"
key_path = "quic.key"
retry_secret_path = "retry.key"

[listeners.quic.raw_proxy]
backend_addr = "127.0.0.1:4433"
sni = "backend.example"
backend_ca_path = "ca.pem"
dgram_queue_cap = 1024
max_relay_streams = 256

[[listeners]]
address = "0.0.0.0:8080"
protocol = "tcp"

[[listeners.backends]]
address = "127.0.0.1:3000"
weight = 1

[[listeners.backends]]
address = "127.0.0.1:3001"
protocol = "tcp"

[[listeners]]
address = "0.0.0.0:8081"
protocol = "tls"

[listeners.tls]
cert_path = "cert.pem"
key_path = "key.pem"

[[listeners.backends]]
address = "127.0.0.1:3000"

[runtime]
xdp_enabled = false
xdp_interface = "eth0"
xdp_mode = "auto"
drain_timeout_ms = 10000
readiness_settle_ms = 11000
drain_jitter_ms = 2500
handshake_timeout_ms = 5000
max_inflight_connections = 65536
connect_timeout_ms = 5000
per_ip_connection_cap = 1024
header_underscore_policy = "reject"
max_keepalive_requests = 100
max_requests_per_h3_connection = 1000
xdp_new_flow_cap_per_sec_per_cpu = 125000

[runtime.tls]
tls13_only = false

[runtime.watchdog]
header_deadline_ms = 5000
body_progress_min_bps = 64
sweep_interval_ms = 1000

[observability]
metrics_bind = "127.0.0.1:9090"

[admin]
api_token_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
allow_non_loopback = false

[security]
strict_te = false

[passthrough]
bind_addr = "0.0.0.0:4443"
backends = ["127.0.0.1:5000", "[::1]:5001"]
retry_secret_path = "passthrough-retry.key"
max_quic_connections = 100000
min_client_dcid_len = 8
per_flow_backlog = 32
strict_source_binding = false
audit_throttle_window_secs = 60
max_dcid_len_routed = 20
mint_retry = true
flow_idle_timeout_ms = 60000
"""

#: The original's shipped config/default.toml (without its stale comments).
ORIGINAL_DEFAULT_TOML = """
[[listeners]]
address = "0.0.0.0:8080"
protocol = "tcp"

[[listeners.backends]]
address = "127.0.0.1:3000"
weight = 1

[[listeners.backends]]
address = "127.0.0.1:3001"
weight = 1
"""


def _original_key_paths() -> set[str]:
    """Every key path of the schema that the original had (not marked new)."""
    infos = list(iter_settings(ConfigRoot))
    new = [i.path for i in infos if i.spec.meta.new]

    def is_new(path: str) -> bool:
        return any(path == n or path.startswith((n + ".", n + "[]")) for n in new)

    return {i.path for i in infos if not is_new(i.path)}


def test_config_with_every_original_key_loads(tls_dir: Path, load: Callable[[str], Config]) -> None:
    cfg = load(ORIGINAL_EVERY_KEY)
    assert len(cfg.listeners) == 5
    assert cfg.passthrough is not None
    assert cfg.passthrough.backends == ("127.0.0.1:5000", "[::1]:5001")
    assert cfg.listeners[2].quic is not None
    assert cfg.listeners[2].quic.raw_proxy is not None
    assert cfg.listeners[2].quic.raw_proxy.sni == "backend.example"


def test_every_original_key_is_exercised_by_the_compat_config(
    tls_dir: Path, load: Callable[[str], Config]
) -> None:
    """Guards the compat test itself: adding an original key to the schema
    without adding it above fails here."""
    cfg = load(ORIGINAL_EVERY_KEY)
    written = {re.sub(r"\[\d+\]", "[]", k) for k in cfg.explicit_keys}
    assert _original_key_paths() - written == set()


def test_original_default_toml_loads(load: Callable[[str], Config]) -> None:
    cfg = load(ORIGINAL_DEFAULT_TOML)
    (listener,) = cfg.listeners
    assert listener.protocol == "tcp"
    assert [b.address for b in listener.backends] == ["127.0.0.1:3000", "127.0.0.1:3001"]
    assert all(b.protocol == "tcp" and b.weight == 1 for b in listener.backends)


def test_original_values_keep_their_meaning(tls_dir: Path, load: Callable[[str], Config]) -> None:
    cfg = load(ORIGINAL_EVERY_KEY)
    h1s = cfg.listeners[0]
    assert h1s.tls is not None
    assert h1s.tls.cert_path == str(tls_dir / "cert.pem")
    assert h1s.alt_svc is not None and h1s.alt_svc.h3_port == 8443
    assert h1s.h2_security.max_concurrent_streams == 256
    assert h1s.websocket is not None and h1s.websocket.max_message_size_bytes == 16_777_216
    assert h1s.grpc is not None and h1s.grpc.max_deadline_seconds == 300
    assert [b.protocol for b in h1s.backends] == ["h1", "h2", "h3"]
    assert cfg.runtime.drain_jitter_ms == 2500
    assert cfg.runtime.watchdog.body_progress_min_bps == 64
    assert cfg.admin.api_token_hash is not None


def test_original_passthrough_only_config_loads(
    tmp_path: Path, load: Callable[[str], Config]
) -> None:
    cfg = load(
        """
[passthrough]
bind_addr = "0.0.0.0:4433"
backends = ["10.0.0.1:4433"]
retry_secret_path = "retry.key"
"""
    )
    assert cfg.listeners == ()
    assert cfg.passthrough is not None
    assert cfg.passthrough.retry_secret_path == str(tmp_path / "retry.key")
    assert cfg.passthrough.mint_retry is True
