"""Any decoded TOML document either loads or raises ConfigError; nothing else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expressgateway.config import Config, ConfigError
from expressgateway.config.load import config_from_dict
from expressgateway.config.model import Config as Root
from expressgateway.config.schema import iter_settings

_KEYS = sorted({info.spec.name for info in iter_settings(Root)} | {"wieght", "x"})

_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 100, 443, 8080, 65_535, 65_536, 10_000, 300_000]),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "",
            "tcp",
            "tls",
            "h1",
            "h1s",
            "quic",
            "udp",
            "h2",
            "h3",
            "127.0.0.1:8080",
            "0.0.0.0:443",
            "[::1]:0",
            "::1:80",
            "host.example:3000",
            "/nonexistent",
            "a" * 64,
            "json",
            "auto",
        ]
    ),
    st.text(max_size=8),
)


def _tables(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(_KEYS), children, max_size=6)


_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=3), _tables(children)),
    max_leaves=25,
)

_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "listeners": st.lists(_tables(_VALUES), max_size=3),
        "runtime": _tables(_VALUES),
        "observability": _tables(_VALUES),
        "admin": _tables(_VALUES),
        "pool": _tables(_VALUES),
        "passthrough": _tables(_VALUES),
    },
)


_ADDRESSES = st.sampled_from(["127.0.0.1:8080", "127.0.0.1:8080", "[::1]:0", "0.0.0.0:443", "bad"])
_PROTOCOLS = st.sampled_from(["tcp", "tls", "h1", "h1s", "quic", "udp", "h2", "x"])
_SMALL_INTS = st.sampled_from([0, 1, 50, 100, 1000, 20_000, 400_000])

_BACKEND = st.fixed_dictionaries(
    {"address": _ADDRESSES},
    optional={
        "protocol": st.sampled_from(["tcp", "h1", "h2", "h3", "udp", "h9"]),
        "tls": st.booleans(),
        "tls_verify_peer": st.booleans(),
        "tls_ca_path": st.sampled_from(["/etc/hostname", "/nonexistent"]),
        "tls_verify_hostname": st.sampled_from(["origin", ""]),
        "weight": _SMALL_INTS,
    },
)

_LISTENER = st.fixed_dictionaries(
    {"address": _ADDRESSES, "protocol": _PROTOCOLS},
    optional={
        "name": st.sampled_from(["a", "b", "127.0.0.1:8080", "bad name"]),
        "tls": st.fixed_dictionaries({"cert_path": st.just("/etc/hostname")}),
        "quic": st.fixed_dictionaries(
            {"cert_path": st.just("/etc/hostname"), "key_path": st.just("/etc/hostname")},
            optional={
                "retry_secret_path": st.just("/nonexistent/r"),
                "raw_proxy": _tables(_VALUES),
            },
        ),
        "websocket": _tables(_VALUES),
        "grpc": _tables(_VALUES),
        "udp": _tables(_VALUES),
        "alt_svc": _tables(_VALUES),
        "drain_timeout_ms": _SMALL_INTS,
        "drain_jitter_ms": _SMALL_INTS,
        "backends": st.lists(_BACKEND, max_size=3),
    },
)

_STRUCTURED = st.fixed_dictionaries(
    {"listeners": st.lists(_LISTENER, max_size=3)},
    optional={
        "runtime": st.fixed_dictionaries(
            {},
            optional={
                "drain_timeout_ms": _SMALL_INTS,
                "drain_jitter_ms": _SMALL_INTS,
                "xdp_enabled": st.booleans(),
            },
        ),
        "observability": st.fixed_dictionaries(
            {"metrics_bind": st.sampled_from(["127.0.0.1:8080", "0.0.0.0:9090", "x"])}
        ),
        "admin": st.fixed_dictionaries(
            {},
            optional={"allow_non_loopback": st.booleans(), "api_token_hash": st.just("0" * 64)},
        ),
        "pool": st.fixed_dictionaries({"per_peer_max": _SMALL_INTS}),
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DOCUMENTS)
def test_any_document_loads_or_raises_config_error(raw: dict[str, Any]) -> None:
    _load_or_config_error(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STRUCTURED)
def test_any_listener_combination_loads_or_raises_config_error(raw: dict[str, Any]) -> None:
    _load_or_config_error(raw)


def _load_or_config_error(raw: dict[str, Any]) -> None:
    try:
        cfg = config_from_dict(raw)
    except ConfigError as err:
        assert err.problems
        assert all(str(p) for p in err.problems)
    else:
        assert isinstance(cfg, Config)
        assert "<invalid>" not in repr(cfg)
