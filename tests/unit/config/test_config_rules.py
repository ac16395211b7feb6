"""Cross-field rules (SEED-INVENTORY 8.3 plus the rules for new keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from expressgateway.config import parse_config
from tests.unit.config.helpers import H1, problems


def listener(protocol: str, address: str = "127.0.0.1:8080", extra: str = "") -> str:
    return f'[[listeners]]\naddress = "{address}"\nprotocol = "{protocol}"\n{extra}'


def backend(protocol: str = "tcp", extra: str = "", address: str = "127.0.0.1:3000") -> str:
    return f'[[listeners.backends]]\naddress = "{address}"\nprotocol = "{protocol}"\n{extra}'


def tls_block(d: Path) -> str:
    return f'[listeners.tls]\ncert_path = "{d / "cert.pem"}"\nkey_path = "{d / "key.pem"}"\n'


def quic_block(d: Path, extra: str = "") -> str:
    return (
        f'[listeners.quic]\ncert_path = "{d / "quic.crt"}"\nkey_path = "{d / "quic.key"}"\n'
        f'retry_secret_path = "{d / "retry.key"}"\n{extra}'
    )


RAW_PROXY = '[listeners.quic.raw_proxy]\nbackend_addr = "127.0.0.1:4433"\nsni = "origin"\n'

# ------------------------------------------------------------- something to serve


def test_config_without_listeners_or_passthrough_is_rejected() -> None:
    assert problems("") == [
        "listeners: no listeners and no [passthrough]: nothing to serve (add a [[listeners]] block)"
    ]


def test_failed_listener_does_not_also_report_nothing_to_serve() -> None:
    assert problems('[[listeners]]\nprotocol = "h1"\n') == [
        "listeners[0].address: missing required key"
    ]


# -------------------------------------------------------------------- tls / quic


@pytest.mark.parametrize("protocol", ["tls", "h1s"])
def test_tls_block_is_required_for_tls_protocols(protocol: str) -> None:
    assert problems(listener(protocol)) == [
        f"listeners[0].tls: required: protocol '{protocol}' terminates TLS "
        "(add a [listeners.tls] block with cert_path and key_path)"
    ]


@pytest.mark.parametrize("protocol", ["tcp", "h1", "udp"])
def test_tls_block_is_rejected_on_other_protocols(tls_dir: Path, protocol: str) -> None:
    (line,) = problems(listener(protocol, extra=tls_block(tls_dir)))
    assert line.startswith(f"listeners[0].tls = {{...}}: not allowed on a '{protocol}' listener")


def test_tls_block_is_accepted_on_tls_listener(tls_dir: Path) -> None:
    cfg = parse_config(listener("tls", extra=tls_block(tls_dir) + backend()))
    assert cfg.listeners[0].tls is not None


def test_quic_block_is_required_for_quic() -> None:
    (line,) = problems(listener("quic"))
    assert line.startswith("listeners[0].quic: required: protocol 'quic' needs QUIC settings")


def test_quic_block_is_rejected_on_other_protocols(tls_dir: Path) -> None:
    assert problems(listener("h1", extra=quic_block(tls_dir))) == [
        "listeners[0].quic = {...}: not allowed on a 'h1' listener"
    ]


def test_invalid_tls_block_is_not_also_reported_as_missing(tls_dir: Path) -> None:
    text = listener("h1s", extra='[listeners.tls]\ncert_path = "x"\n')
    lines = problems(text, source=str(tls_dir / "gw.toml"))
    assert "listeners[0].tls.key_path: missing required key" in lines
    assert not any("required: protocol" in line for line in lines)


# ---------------------------------------------------------- websocket / grpc / udp


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_websocket_is_rejected_outside_http_listeners(protocol: str) -> None:
    (line,) = problems(listener(protocol, extra="[listeners.websocket]\n"))
    assert line.startswith(
        f"listeners[0].websocket = {{...}}: not allowed on a '{protocol}' listener"
    )


def test_websocket_is_accepted_on_h1_and_quic(tls_dir: Path) -> None:
    parse_config(listener("h1", extra="[listeners.websocket]\n"))
    cfg = parse_config(listener("quic", extra=quic_block(tls_dir) + "[listeners.websocket]\n"))
    assert cfg.listeners[0].websocket is not None


@pytest.mark.parametrize("protocol", ["h1", "tcp"])
def test_grpc_is_rejected_outside_h1s_and_quic(protocol: str) -> None:
    assert problems(listener(protocol, extra="[listeners.grpc]\n")) == [
        f"listeners[0].grpc = {{...}}: not allowed on a '{protocol}' listener "
        "(gRPC needs HTTP/2 or HTTP/3: only h1s and quic listeners)"
    ]


def test_grpc_is_accepted_on_quic(tls_dir: Path) -> None:
    cfg = parse_config(listener("quic", extra=quic_block(tls_dir) + "[listeners.grpc]\n"))
    assert cfg.listeners[0].grpc is not None


def test_udp_block_is_only_allowed_on_udp_listeners() -> None:
    assert problems(listener("h1", extra="[listeners.udp]\nmax_flows = 10\n")) == [
        "listeners[0].udp = {...}: only allowed on udp listeners, not 'h1'"
    ]
    cfg = parse_config(listener("udp", extra="[listeners.udp]\nmax_flows = 10\n"))
    assert cfg.listeners[0].udp.max_flows == 10


# --------------------------------------------------------------------- raw_proxy


def test_raw_proxy_and_backends_are_mutually_exclusive(tls_dir: Path) -> None:
    text = listener("quic", extra=quic_block(tls_dir, RAW_PROXY) + backend("h1"))
    (line,) = problems(text)
    assert line.startswith("listeners[0].backends: not allowed with [listeners.quic.raw_proxy]")


def test_raw_proxy_without_backends_is_accepted(tls_dir: Path) -> None:
    cfg = parse_config(listener("quic", extra=quic_block(tls_dir, RAW_PROXY)))
    quic = cfg.listeners[0].quic
    assert quic is not None and quic.raw_proxy is not None
    assert quic.raw_proxy.backend_addr == "127.0.0.1:4433"


# -------------------------------------------------------------- backend protocols


@pytest.mark.parametrize("listener_protocol", ["tcp", "tls"])
@pytest.mark.parametrize("backend_protocol", ["h1", "h2", "h3", "udp"])
def test_l4_listeners_take_only_tcp_backends(
    tls_dir: Path, listener_protocol: str, backend_protocol: str
) -> None:
    extra = (tls_block(tls_dir) if listener_protocol == "tls" else "") + backend(
        backend_protocol, 'tls_ca_path = "/etc/hostname"\n' if backend_protocol == "h3" else ""
    )
    lines = problems(listener(listener_protocol, extra=extra))
    assert (
        f"listeners[0].backends[0].protocol = \"{backend_protocol}\": a '{listener_protocol}' "
        "listener relays raw bytes: only tcp backends"
    ) in lines


@pytest.mark.parametrize("backend_protocol", ["udp", "tcp"])
def test_udp_listener_takes_udp_or_same_transport_backends(backend_protocol: str) -> None:
    cfg = parse_config(listener("udp", extra=backend(backend_protocol)))
    assert cfg.listeners[0].backends[0].protocol == backend_protocol


@pytest.mark.parametrize("backend_protocol", ["h1", "h2"])
def test_udp_listener_rejects_http_backends(backend_protocol: str) -> None:
    (line,) = problems(listener("udp", extra=backend(backend_protocol)))
    assert line.startswith(
        f'listeners[0].backends[0].protocol = "{backend_protocol}": a udp listener relays datagrams'
    )


def test_udp_backend_needs_a_udp_listener() -> None:
    assert problems(listener("h1", extra=backend("udp"))) == [
        'listeners[0].backends[0].protocol = "udp": udp backends need a udp listener'
    ]


def test_http_listener_may_mix_backend_protocols() -> None:
    text = listener("h1", extra=backend("h1") + backend("h2") + backend("tcp"))
    assert [b.protocol for b in parse_config(text).listeners[0].backends] == ["h1", "h2", "tcp"]


def test_quic_listener_cannot_mix_backend_families(tls_dir: Path) -> None:
    text = listener("quic", extra=quic_block(tls_dir) + backend("h1") + backend("h2"))
    assert problems(text) == [
        "listeners[0].backends: a quic listener cannot mix backend families: h1, h2"
    ]


def test_quic_listener_treats_tcp_and_h1_as_one_family(tls_dir: Path) -> None:
    text = listener("quic", extra=quic_block(tls_dir) + backend("h1") + backend("tcp"))
    assert len(parse_config(text).listeners[0].backends) == 2


def test_backendless_listeners_are_allowed(tls_dir: Path) -> None:
    cfg = parse_config(listener("h1") + listener("quic", "127.0.0.1:9443", quic_block(tls_dir)))
    assert [len(lst.backends) for lst in cfg.listeners] == [0, 0]


# ------------------------------------------------------------------- backend TLS


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tls_ca_path", '"/etc/hostname"'),
        ("tls_verify_hostname", '"origin"'),
        ("tls_verify_peer", "true"),
    ],
)
def test_backend_tls_keys_need_h3_or_tls_true(key: str, value: str) -> None:
    (line,) = problems(listener("h1", extra=backend("h2", f"{key} = {value}\n")))
    assert line == (
        f"listeners[0].backends[0].{key} = {value}: only valid on h3 backends or with "
        "tls = true (protocol is 'h2') (set tls = true to connect to this backend over TLS)"
    )


@pytest.mark.parametrize("protocol", ["tcp", "h1", "h2"])
def test_backend_tls_keys_are_accepted_with_tls_true(protocol: str) -> None:
    extra = 'tls = true\ntls_verify_hostname = "origin.example"\ntls_verify_peer = false\n'
    (be,) = parse_config(listener("h1", extra=backend(protocol, extra))).listeners[0].backends
    assert (be.tls, be.tls_verify_hostname, be.tls_verify_peer) == (True, "origin.example", False)


def test_tls_to_an_h1_backend_does_not_require_a_ca() -> None:
    (be,) = parse_config(listener("h1", extra=backend("h1", "tls = true\n"))).listeners[0].backends
    assert be.tls is True and be.tls_ca_path is None


def test_tls_on_a_udp_backend_is_rejected() -> None:
    assert problems(listener("udp", extra=backend("udp", "tls = true\n"))) == [
        "listeners[0].backends[0].tls = true: TLS is not available for udp backends"
    ]


def test_h3_backend_verifying_its_peer_needs_a_ca() -> None:
    assert problems(listener("h1", extra=backend("h3"))) == [
        "listeners[0].backends[0].tls_ca_path: required for an h3 backend when "
        "tls_verify_peer = true (set tls_ca_path, or tls_verify_peer = false "
        "(accepts any certificate))"
    ]


def test_h3_backend_without_verification_needs_no_ca() -> None:
    text = listener("h1", extra=backend("h3", "tls_verify_peer = false\n"))
    assert parse_config(text).listeners[0].backends[0].tls_verify_peer is False


def test_h3_backends_of_one_listener_share_verification(tls_dir: Path) -> None:
    ca = f'tls_ca_path = "{tls_dir / "ca.pem"}"\n'
    text = listener("h1", extra=backend("h3", ca) + backend("h3", "tls_verify_peer = false\n"))
    assert problems(text) == [
        "listeners[0].backends[1]: h3 backends of one listener must share tls_verify_peer "
        "and tls_ca_path"
    ]


# ------------------------------------------------------------------------- drain


def test_runtime_jitter_above_drain_timeout_is_rejected() -> None:
    text = H1 + "[runtime]\ndrain_timeout_ms = 1000\ndrain_jitter_ms = 1001\n"
    assert problems(text) == [
        "runtime.drain_jitter_ms = 1001: exceeds runtime.drain_timeout_ms (1000)"
    ]


def test_listener_jitter_above_its_drain_timeout_is_rejected() -> None:
    text = listener("h1", extra="drain_timeout_ms = 500\ndrain_jitter_ms = 600\n")
    assert problems(text) == [
        "listeners[0].drain_jitter_ms = 600: exceeds the listener's effective drain timeout "
        "(500 ms)"
    ]


def test_listener_jitter_is_checked_against_the_inherited_drain_timeout() -> None:
    text = listener("h1", extra="drain_jitter_ms = 20000\n")
    (line,) = problems(text)
    assert line.startswith("listeners[0].drain_jitter_ms = 20000: exceeds")
    assert "(10000 ms)" in line


def test_inherited_runtime_jitter_above_listener_drain_timeout_is_rejected() -> None:
    text = "[runtime]\ndrain_jitter_ms = 2000\n" + listener("h1", extra="drain_timeout_ms = 1000\n")
    assert problems(text) == [
        "listeners[0].drain_timeout_ms = 1000: is below the inherited runtime.drain_jitter_ms "
        "(2000 ms) (set drain_jitter_ms on this listener too)"
    ]


def test_short_listener_drain_with_derived_jitter_is_accepted() -> None:
    cfg = parse_config(listener("h1", extra="drain_timeout_ms = 100\n"))
    assert cfg.effective_drain(cfg.listeners[0]) == (100, 25)


def test_jitter_equal_to_drain_timeout_is_accepted() -> None:
    cfg = parse_config(listener("h1", extra="drain_timeout_ms = 500\ndrain_jitter_ms = 500\n"))
    assert cfg.effective_drain(cfg.listeners[0]) == (500, 500)


# --------------------------------------------------------------------------- xdp


def test_xdp_enabled_requires_an_interface() -> None:
    assert problems(H1 + "[runtime]\nxdp_enabled = true\n") == [
        "runtime.xdp_interface: required when xdp_enabled = true "
        '(name the network interface, e.g. xdp_interface = "eth0")'
    ]


def test_xdp_enabled_with_interface_is_accepted() -> None:
    cfg = parse_config(H1 + '[runtime]\nxdp_enabled = true\nxdp_interface = "eth0"\n')
    assert cfg.runtime.xdp_interface == "eth0"


# ------------------------------------------------------------------ duplicate binds


def test_duplicate_listener_address_is_rejected() -> None:
    text = listener("h1", "0.0.0.0:80") + listener("tcp", "0.0.0.0:80")
    assert problems(text) == [
        'listeners[1].address = "0.0.0.0:80": TCP address already used by listeners[0]'
    ]


def test_equivalent_ipv6_spellings_are_duplicates() -> None:
    text = listener("h1", "[::1]:80", 'name = "a"\n') + listener("h1", "[0:0::1]:80")
    (line,) = problems(text)
    assert line.startswith('listeners[1].address = "[0:0::1]:80": TCP address already used')


def test_tcp_and_udp_listeners_may_share_a_port(tls_dir: Path) -> None:
    text = listener("h1s", "0.0.0.0:443", tls_block(tls_dir)) + listener(
        "quic", "0.0.0.0:443", quic_block(tls_dir)
    )
    assert [lst.name for lst in parse_config(text).listeners] == [
        "0.0.0.0:443",
        "0.0.0.0:443/udp",
    ]


def test_port_zero_listeners_never_collide() -> None:
    text = listener("h1", "127.0.0.1:0", 'name = "a"\n') + listener(
        "h1", "127.0.0.1:0", 'name = "b"\n'
    )
    assert len(parse_config(text).listeners) == 2


def test_metrics_bind_may_not_reuse_a_listener_address() -> None:
    text = '[observability]\nmetrics_bind = "127.0.0.1:8080"\n' + H1
    assert problems(text) == [
        'observability.metrics_bind = "127.0.0.1:8080": TCP address already used by listeners[0]'
    ]


def test_passthrough_may_not_reuse_a_quic_listener_address(tls_dir: Path) -> None:
    text = (
        '[passthrough]\nbind_addr = "0.0.0.0:443"\nbackends = ["10.0.0.1:443"]\n'
        f'retry_secret_path = "{tls_dir / "pt.key"}"\n'
        + listener("quic", "0.0.0.0:443", quic_block(tls_dir))
    )
    assert problems(text) == [
        'passthrough.bind_addr = "0.0.0.0:443": UDP address already used by listeners[0]'
    ]


# ------------------------------------------------------------------------- names


def test_duplicate_listener_names_are_rejected() -> None:
    text = listener("h1", "127.0.0.1:80", 'name = "web"\n') + listener(
        "h1", "127.0.0.1:81", 'name = "web"\n'
    )
    assert problems(text) == [
        'listeners[1].name = "web": duplicate listener name (also listeners[0]) '
        "(give each listener its own name)"
    ]


def test_explicit_name_colliding_with_a_default_name_is_rejected() -> None:
    text = listener("h1", "127.0.0.1:80") + listener(
        "h1", "127.0.0.1:81", 'name = "127.0.0.1:80"\n'
    )
    (line,) = problems(text)
    assert line.startswith('listeners[1].name = "127.0.0.1:80": duplicate listener name')


# ------------------------------------------------------------------------- admin


def test_non_loopback_admin_needs_override_and_token() -> None:
    assert problems(H1 + '[observability]\nmetrics_bind = "0.0.0.0:9090"\n') == [
        'observability.metrics_bind = "0.0.0.0:9090": non-loopback admin address needs '
        "admin.allow_non_loopback = true and admin.api_token_hash "
        "(bind 127.0.0.1, or set both keys in [admin])"
    ]


def test_non_loopback_admin_with_override_but_no_token_is_rejected() -> None:
    text = (
        H1 + '[observability]\nmetrics_bind = "0.0.0.0:9090"\n[admin]\nallow_non_loopback = true\n'
    )
    (line,) = problems(text)
    assert "needs admin.api_token_hash" in line


def test_non_loopback_admin_with_token_but_no_override_is_rejected() -> None:
    text = (
        H1 + '[observability]\nmetrics_bind = "10.0.0.1:9090"\n'
        f'[admin]\napi_token_hash = "{"0" * 64}"\n'
    )
    (line,) = problems(text)
    assert "needs admin.allow_non_loopback = true (" in line


def test_non_loopback_admin_with_override_and_token_is_accepted() -> None:
    text = (
        H1 + '[observability]\nmetrics_bind = "0.0.0.0:9090"\n'
        f'[admin]\nallow_non_loopback = true\napi_token_hash = "{"0" * 64}"\n'
    )
    assert parse_config(text).observability.metrics_bind == "0.0.0.0:9090"


@pytest.mark.parametrize("bind", ["127.0.0.1:9090", "127.1.2.3:9090", "[::1]:9090"])
def test_loopback_admin_needs_nothing_else(bind: str) -> None:
    cfg = parse_config(H1 + f'[observability]\nmetrics_bind = "{bind}"\n')
    assert cfg.observability.metrics_bind == bind


# -------------------------------------------------------------------------- pool


def test_pool_per_peer_cap_may_not_exceed_total() -> None:
    assert problems(H1 + "[pool]\nper_peer_max = 300\n") == [
        "pool.per_peer_max = 300: exceeds pool.total_max (256)"
    ]


def test_port_zero_listeners_need_distinct_names() -> None:
    text = listener("h1", "127.0.0.1:0") + listener("h1", "127.0.0.1:0")
    (line,) = problems(text)
    assert line.startswith('listeners[1].name = "127.0.0.1:0": duplicate listener name')
