"""Configuration: one TOML file, validated whole into an immutable snapshot.

>>> cfg = load_config("gateway.toml")      # doctest: +SKIP
>>> cfg.listeners[0].http.header_timeout_ms  # doctest: +SKIP
10000

Every problem in a file is reported at once in one :class:`ConfigError`.
The schema (keys, defaults, ranges, reload classes) lives in ``model.py``;
``docs/configuration.md`` is generated from it by ``docs.py``.
"""

from expressgateway.config.errors import ConfigError, Problem
from expressgateway.config.load import load_config, parse_config
from expressgateway.config.model import (
    AdminConfig,
    AltSvcConfig,
    BackendConfig,
    Config,
    GrpcConfig,
    H2SecurityConfig,
    HttpConfig,
    ListenerConfig,
    ObservabilityConfig,
    PassthroughConfig,
    PoolConfig,
    QuicConfig,
    RawProxyConfig,
    RuntimeConfig,
    RuntimeTlsConfig,
    SecurityConfig,
    TlsConfig,
    UdpConfig,
    WatchdogConfig,
    WebSocketConfig,
)

__all__ = [
    "AdminConfig",
    "AltSvcConfig",
    "BackendConfig",
    "Config",
    "ConfigError",
    "GrpcConfig",
    "H2SecurityConfig",
    "HttpConfig",
    "ListenerConfig",
    "ObservabilityConfig",
    "PassthroughConfig",
    "PoolConfig",
    "Problem",
    "QuicConfig",
    "RawProxyConfig",
    "RuntimeConfig",
    "RuntimeTlsConfig",
    "SecurityConfig",
    "TlsConfig",
    "UdpConfig",
    "WatchdogConfig",
    "WebSocketConfig",
    "load_config",
    "parse_config",
]
