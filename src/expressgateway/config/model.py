"""The configuration snapshot: frozen, slotted dataclasses, one per TOML section.

Field declarations are the schema (see ``schema.py``): the loader validates
against them and ``docs/configuration.md`` is generated from them. Key names
and defaults follow the original ExpressGateway so that its configs load
unchanged; keys marked ``new=True`` are ours.

Class docstrings are the section descriptions in the generated docs.
"""

# setting() returns a dataclasses.field (ruff cannot see through the wrapper).
# ruff: noqa: RUF009

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from expressgateway.config import checks
from expressgateway.config.checks import split_host_port
from expressgateway.config.schema import FileRule, Range, feature_uses, setting
from expressgateway.config.traffic import (
    HASH_KEY,
    HEADER_LINE,
    HEADER_MATCH,
    HEADER_NAME,
    HOST_PATTERN,
    METHOD,
    PATH,
    REGEX,
    AffinityConfig,
    CircuitBreakerConfig,
    HealthCheckConfig,
    OutlierConfig,
    Policy,
    RetryConfig,
)

__all__ = [
    "AdminConfig",
    "AltSvcConfig",
    "BackendConfig",
    "BackendProtocol",
    "ClusterConfig",
    "Config",
    "GrpcConfig",
    "H2SecurityConfig",
    "HttpConfig",
    "ListenerConfig",
    "ListenerProtocol",
    "ObservabilityConfig",
    "PassthroughConfig",
    "PoolConfig",
    "QuicConfig",
    "RawProxyConfig",
    "RouteConfig",
    "RuntimeConfig",
    "RuntimeTlsConfig",
    "SecurityConfig",
    "SniCertificateConfig",
    "TlsConfig",
    "UdpConfig",
    "WatchdogConfig",
    "WebSocketConfig",
]

ListenerProtocol = Literal["tcp", "tls", "h1", "h1s", "quic", "udp"]
BackendProtocol = Literal["tcp", "h1", "h2", "h3", "udp"]
AlpnProtocol = Literal["h2", "http/1.1"]
XdpMode = Literal["auto", "native", "skb", "hw"]
UnderscorePolicy = Literal["reject", "drop", "allow"]
LogFormat = Literal["json", "text", "plain"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]

_MS_HOUR = 3_600_000
_SECONDS_YEAR = 31_536_000
_TIB = 1 << 40


def _host(address: str) -> str:
    return split_host_port(address, min_port=0).host


def _port(address: str) -> int:
    return split_host_port(address, min_port=0).port


def _same(value: str) -> str:
    return value


def _listener_protocol(value: str) -> str:
    if value in ("http", "h2", "h3"):
        raise checks.CheckFailed(
            f"'{value}' is a backend protocol, not a listener protocol",
            "listen with h1 for HTTP/1.1, h1s for HTTP/2 over TLS, quic for HTTP/3",
        )
    return value


_LISTENER_PROTOCOL = checks.Check("listener protocol", _listener_protocol)


# --------------------------------------------------------------------- listeners


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    """One upstream of a listener (`[[listeners.backends]]`). Backends of a
    listener form one pool."""

    address: str = setting(
        "Backend `host:port`; a host name is re-resolved every `dns_refresh_ms` of its "
        "cluster (30 s for inline backends) and each address is an endpoint. IPv6 "
        "literals in brackets: `[::1]:3000`.",
        check=checks.HOST_PORT,
    )
    host: str = setting("Host part of `address` (no brackets).", derive=("address", _host))
    port: int = setting("Port part of `address`.", derive=("address", _port))
    protocol: BackendProtocol = setting(
        "Protocol spoken to the backend. `tcp` and `h1` both mean HTTP/1.1 behind an "
        "HTTP listener and raw bytes behind a `tcp`/`tls` listener; `h2` is HTTP/2 "
        "(cleartext prior knowledge, or TLS with ALPN when `tls = true`); `h3` is "
        "HTTP/3 over QUIC (always TLS). `udp` (new) is only valid on `udp` listeners, "
        'where `tcp` means "same transport as the listener", i.e. also UDP.',
        default="tcp",
        feature_by_value={"h2": "h2_backend", "h3": "h3_backend"},
    )
    weight: int = setting(
        "Relative share of traffic for weighted policies. The original accepted any "
        "u32 (and ignored it); 10 000 bounds the weighted round-robin schedule and "
        "still gives 0.01 % granularity.",
        default=1,
        range=Range(1, 10_000),
    )
    tls: bool = setting(
        "Connect to this `tcp`/`h1`/`h2` backend over TLS (ALPN `h2` or `http/1.1`). "
        "`h3` backends always use TLS. Not valid on `udp` backends.",
        default=False,
        new=True,
    )
    tls_ca_path: str | None = setting(
        "PEM bundle of CAs that verify the backend certificate. Only on `h3` backends "
        "or with `tls = true`. Required for `h3` when `tls_verify_peer = true`; for TLS "
        "to `h1`/`h2` backends the system trust store is used when unset.",
        default=None,
        file=FileRule(),
        check=checks.NONEMPTY,
    )
    tls_verify_hostname: str | None = setting(
        "Name sent as SNI and checked against the backend certificate. Only on `h3` "
        "backends or with `tls = true`.",
        default=None,
        default_doc="host of `address`",
        check=checks.HOSTNAME,
    )
    tls_verify_peer: bool = setting(
        "Verify the backend certificate. Only on `h3` backends or with `tls = true`. "
        "`false` accepts any certificate (man-in-the-middle foot-gun; tests only).",
        default=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SniCertificateConfig:
    """An extra certificate of a TLS listener (`[[listeners.tls.certificates]]`,
    new), served to clients whose SNI matches `server_names`; the listener's
    own `cert_path`/`key_path` serve everyone else."""

    server_names: tuple[str, ...] = setting(
        "Names this certificate is for: exact, or `*.example.com` for any subdomain.",
        min_items=1,
        check=HOST_PATTERN,
    )
    cert_path: str = setting(
        "PEM certificate chain (leaf first).",
        file=FileRule(),
        check=checks.NONEMPTY,
        reload="swappable",
    )
    key_path: str = setting(
        "PEM private key, mode 0600 or stricter.",
        file=FileRule(private=True),
        check=checks.NONEMPTY,
        reload="swappable",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    """TLS termination for `tls` and `h1s` listeners (required there, rejected
    elsewhere). TLS 1.2 and 1.3; SIGUSR1 re-reads the certificate and key."""

    cert_path: str = setting(
        "PEM certificate chain (leaf first). Relative paths resolve against the "
        "config file's directory. Must exist and be readable.",
        file=FileRule(),
        check=checks.NONEMPTY,
        reload="swappable",
    )
    key_path: str = setting(
        "PEM private key (PKCS#8 or SEC1). Must exist, be readable, and have mode "
        "0600 or stricter (no group or other bits).",
        file=FileRule(private=True),
        check=checks.NONEMPTY,
        reload="swappable",
    )
    session_tickets: bool = setting(
        "Resume TLS sessions with session tickets (RFC 5077; RFC 8446 §4.6.1), sealed "
        "with keys the supervisor shares with every worker: a ticket from one worker "
        "resumes on any. `false`: no tickets and no session cache, so every handshake "
        "is a full one.",
        default=True,
        reload="swappable",
        new=True,
    )
    ticket_rotation_interval_seconds: int = setting(
        "How often the session-ticket key rotates: the supervisor mints a new random key "
        "and every worker seals new tickets with it. Keys are never written to disk; a "
        "restart (SIGUSR2) starts with new ones. The original only required > 0; capped "
        "here at one year.",
        default=86_400,
        range=Range(1, _SECONDS_YEAR),
        reload="swappable",
    )
    ticket_rotation_overlap_seconds: int = setting(
        "How long a key still opens tickets after a rotation retired it (a client that "
        "presents such a ticket resumes and gets a fresh one); 0 drops it at once. At "
        "most 32 retired keys are kept, whatever the overlap. Capped here at one year "
        "(the original did not validate it).",
        default=86_400,
        range=Range(0, _SECONDS_YEAR),
        reload="swappable",
    )
    certificates: tuple[SniCertificateConfig, ...] = setting(
        "More certificates, chosen by the client's SNI. Their files reload like the "
        "listener's own; adding or removing entries needs a restart.",
        default=(),
        new=True,
    )
    alpn: tuple[AlpnProtocol, ...] | None = setting(
        "ALPN protocols offered, in preference order, from `h2` and `http/1.1`. Unset: "
        'the protocol default (`h1s`: `["h2", "http/1.1"]`; `tls`: none).',
        default=None,
        default_doc="protocol default",
        new=True,
        min_items=1,
        unique=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RawProxyConfig:
    """QUIC Mode B (`[listeners.quic.raw_proxy]`): terminate the client's QUIC
    connection and re-originate a verified one to a single backend, relaying
    streams and datagrams. Mutually exclusive with `[[listeners.backends]]`."""

    backend_addr: str = setting("Backend `ip:port` (an IP literal).", check=checks.SOCKET_ADDR)
    sni: str = setting(
        "Server name sent to, and verified against, the backend.", check=checks.HOSTNAME
    )
    backend_ca_path: str | None = setting(
        "PEM CA bundle that verifies the backend; unset = system roots. Verification "
        "cannot be turned off.",
        default=None,
        default_doc="system roots",
        file=FileRule(),
        check=checks.NONEMPTY,
    )
    dgram_queue_cap: int = setting(
        "Datagrams queued per direction before the newest is dropped. Range chosen "
        "here (the original did not validate it).",
        default=1024,
        range=Range(1, 1_048_576),
    )
    max_relay_streams: int = setting(
        "Streams relayed concurrently per connection. Range chosen here (the "
        "original did not validate it).",
        default=256,
        range=Range(1, 100_000),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class QuicConfig:
    """QUIC for `quic` listeners (required there, rejected elsewhere): HTTP/3
    termination by default, Mode B when `raw_proxy` is present."""

    cert_path: str = setting(
        "PEM certificate chain. Must exist and be readable.",
        file=FileRule(),
        check=checks.NONEMPTY,
        reload="swappable",
    )
    key_path: str = setting(
        "PEM private key. Must exist and be readable.",
        file=FileRule(),
        check=checks.NONEMPTY,
        reload="swappable",
    )
    retry_secret_path: str = setting(
        "32-byte HMAC key for stateless Retry tokens. Created with mode 0600 when "
        "absent; an existing file must be 0600 or stricter.",
        file=FileRule(must_exist=False, private=True),
        check=checks.NONEMPTY,
    )
    max_idle_timeout_ms: int = setting(
        "QUIC idle timeout. The original only required > 0; capped here at one hour.",
        default=30_000,
        range=Range(1, _MS_HOUR),
    )
    max_recv_udp_payload_size: int = setting(
        "Largest UDP payload accepted (RFC 9000 §18.2: 1200..=65527).",
        default=1350,
        range=Range(1200, 65_527),
    )
    max_connections: int = setting(
        "QUIC connections open at once per worker; a new client over it gets "
        "CONNECTION_REFUSED (counted).",
        default=100_000,
        range=Range(1, 10_000_000),
        new=True,
    )
    per_ip_connection_cap: int = setting(
        "QUIC connections open at once from one client IP per worker; over it the "
        "Initial gets CONNECTION_REFUSED (counted).",
        default=1024,
        range=Range(1, 2_000_000),
        new=True,
    )
    early_data: bool = setting(
        "Accept 0-RTT early data. Only safe methods (GET, HEAD, OPTIONS) are served "
        "from early data; others get 425 Too Early, and a replayed session ticket is "
        "refused 0-RTT.",
        default=False,
        new=True,
    )
    raw_proxy: RawProxyConfig | None = setting(
        "Mode B: terminate and re-originate (see below).",
        default=None,
        feature="quic_raw_proxy",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AltSvcConfig:
    """Advertise HTTP/3 (`Alt-Svc: h3=":<h3_port>"; ma=<max_age>`) on every
    response of an `h1`/`h1s` listener."""

    h3_port: int = setting("UDP port of the HTTP/3 listener to advertise.", range=Range(1, 65_535))
    max_age: int = setting(
        "`ma` parameter, seconds. The original accepted any u32; capped here at one year.",
        default=3600,
        range=Range(0, _SECONDS_YEAR),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """HTTP timeouts and limits of an `h1`/`h1s` listener (the block may be
    omitted: every key has a default)."""

    header_timeout_ms: int = setting(
        "Time to receive a request head (slowloris defense).",
        default=10_000,
        range=Range(1, _MS_HOUR),
    )
    body_timeout_ms: int = setting(
        "Longest pause without body progress, re-armed on every chunk (slow POST defense).",
        default=30_000,
        range=Range(1, _MS_HOUR),
    )
    total_timeout_ms: int = setting(
        "Wall-clock bound of a whole connection, keep-alive included.",
        default=60_000,
        range=Range(1, _MS_HOUR),
    )
    head_timeout_ms: int = setting(
        "After the upload completes, time to wait for the response head (then 504).",
        default=60_000,
        range=Range(1, _MS_HOUR),
    )
    max_request_body_bytes: int = setting(
        "Request body cap; larger bodies get 413. Bodies are streamed, so the cap "
        "bounds transfer size, not memory.",
        default=67_108_864,
        range=Range(0, _TIB),
        new=True,
    )
    max_response_body_bytes: int = setting(
        "Response body cap; a response past it is aborted.",
        default=67_108_864,
        range=Range(0, _TIB),
        new=True,
    )
    max_header_bytes: int = setting(
        "Largest request head (request line and headers); larger gets 431.",
        default=65_536,
        range=Range(1024, 1_048_576),
        new=True,
    )
    max_headers: int = setting(
        "Most header fields in a request or response head.",
        default=256,
        range=Range(1, 10_000),
        new=True,
    )
    via: bool = setting(
        "Append `Via: 1.1 expressgateway` to forwarded requests and responses.",
        default=True,
        new=True,
    )
    x_forwarded: bool = setting(
        "Add `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.",
        default=True,
        new=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class H2SecurityConfig:
    """HTTP/2 server limits of an `h1s` listener (the original's edge defaults).
    The original did not validate these; the ranges here are ours."""

    max_pending_accept_reset_streams: int = setting(
        "Streams reset by the client before being accepted, before GOAWAY "
        "ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).",
        default=100,
        range=Range(1, 100_000),
    )
    max_local_error_reset_streams: int = setting(
        "Streams the server reset because of client errors, before GOAWAY.",
        default=100,
        range=Range(1, 100_000),
    )
    max_concurrent_streams: int = setting(
        "SETTINGS_MAX_CONCURRENT_STREAMS advertised.", default=256, range=Range(1, 100_000)
    )
    max_header_list_size: int = setting(
        "Largest decoded header list (HPACK bomb cap).",
        default=65_536,
        range=Range(1024, 16_777_216),
    )
    max_send_buf_size: int = setting(
        "Send buffer per stream (bounds memory pinned by a zero-window peer).",
        default=65_536,
        range=Range(1024, 16_777_216),
    )
    keep_alive_interval_ms: int = setting(
        "PING interval on an idle connection; 0 disables keep-alive PINGs.",
        default=30_000,
        range=Range(100, _MS_HOUR, or_zero=True),
    )
    keep_alive_timeout_ms: int = setting(
        "Close the connection when a keep-alive PING is not acknowledged in time.",
        default=30_000,
        range=Range(100, _MS_HOUR),
    )
    initial_stream_window_size: int = setting(
        "Initial flow-control window per stream (RFC 9113 §6.9.2: up to 2^31-1).",
        default=65_535,
        range=Range(1, 2_147_483_647),
    )
    initial_connection_window_size: int = setting(
        "Connection flow-control window (at least the RFC 9113 initial 65 535).",
        default=1_048_576,
        range=Range(65_535, 2_147_483_647),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketConfig:
    """WebSocket proxying on `h1`, `h1s` and `quic` listeners. The block's
    presence enables WebSocket (absent: upgrades are not proxied)."""

    enabled: bool = setting("Proxy WebSocket upgrades.", default=True)
    idle_timeout_seconds: int = setting(
        "Both directions idle this long: Close 1001 to both peers.",
        default=60,
        range=Range(1, 86_400),
    )
    max_message_size_bytes: int = setting(
        "Largest message (and frame). The original only required > 0; capped here at 256 MiB.",
        default=16_777_216,
        range=Range(1, 268_435_456),
    )
    ping_rate_limit_per_window: int = setting(
        "Client PINGs allowed per window before Close 1008.",
        default=50,
        range=Range(1, 1_000_000),
    )
    ping_rate_limit_window_seconds: int = setting(
        "Length of the PING rate window.", default=10, range=Range(1, 3600)
    )
    read_frame_timeout_seconds: int = setting(
        "Per-direction wait for the rest of a started frame before Close 1008.",
        default=30,
        range=Range(1, 3600),
    )
    h2_extended_connect: bool = setting(
        "Accept WebSocket over HTTP/2 extended CONNECT (RFC 8441) on `h1s`.", default=False
    )
    h3_extended_connect: bool = setting(
        "Accept WebSocket over HTTP/3 extended CONNECT (RFC 9220) on `quic`.", default=False
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcConfig:
    """gRPC handling on an `h1s` or `quic` listener (gRPC needs HTTP/2 or
    HTTP/3; rejected on other listener protocols). Presence of the block
    enables it."""

    enabled: bool = setting("Apply gRPC handling to `application/grpc` requests.", default=True)
    max_deadline_seconds: int = setting(
        "Clamp for `grpc-timeout`. The original only required > 0; capped here at one week.",
        default=300,
        range=Range(1, 604_800),
    )
    health_synthesized: bool = setting(
        "Answer `/grpc.health.v1.Health/Check` locally (SERVING for the empty service).",
        default=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpConfig:
    """Datagram forwarding of a `udp` listener (only allowed there). A flow is
    one client address; each flow gets its own upstream socket."""

    idle_timeout_ms: int = setting(
        "A flow without datagrams in either direction this long is forgotten.",
        default=60_000,
        range=Range(100, _MS_HOUR),
    )
    max_flows: int = setting(
        'Most concurrent flows; at the cap, datagrams that would open a new flow are dropped and counted (`udp_drops_total{reason="flow_table_full"}`).',
        default=65_536,
        range=Range(1, 2_000_000),
    )
    max_datagram_size: int = setting(
        "Largest datagram relayed (65 507 = largest UDP/IPv4 payload); larger are dropped.",
        default=65_507,
        range=Range(512, 65_507),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """A named pool (`[[clusters]]`, new): backends, how one is picked, and
    how the gateway keeps traffic off bad ones. Listeners use it with
    `cluster = "NAME"` or through routes."""

    name: str = setting("Cluster name (unique; a metric label).", check=checks.LISTENER_NAME)
    policy: Policy = setting(
        "Balancing policy (docs/traffic.md describes each). Weights are honoured by "
        "the weighted policies, least_request, p2c, ewma, ring_hash and maglev.",
        default="round_robin",
    )
    hash_key: str | None = setting(
        "What `ring_hash` and `maglev` hash; unset: the client address.",
        default=None,
        check=HASH_KEY,
    )
    panic_threshold_percent: int = setting(
        "Below this share of healthy backends, traffic goes to all of them.",
        default=50,
        range=Range(0, 100, or_zero=True),
    )
    dns_refresh_ms: int = setting(
        "How often host names of backends are resolved again (every address is an "
        "endpoint; a failed lookup keeps the last answer).",
        default=30_000,
        range=Range(1000, 86_400_000),
    )
    backends: tuple[BackendConfig, ...] = setting(
        "The cluster's backends (same keys as `[[listeners.backends]]`).",
        min_items=1,
    )
    affinity: AffinityConfig | None = setting("Session affinity.", default=None)
    health_check: HealthCheckConfig | None = setting("Active health checks.", default=None)
    outlier: OutlierConfig | None = setting("Passive health: outlier ejection.", default=None)
    retry: RetryConfig = setting("Retry policy of the cluster.", factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = setting(
        "Connection and request limits.", factory=CircuitBreakerConfig
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteConfig:
    """A route of an HTTP listener (`[[listeners.routes]]`, new): requests
    that match go to `cluster`. Routes are tried in order, the first match
    wins; no match goes to the listener's default pool (`cluster` or inline
    backends), else 404. Every condition given must hold."""

    name: str | None = setting(
        "Route name (a metric label); unset: `route<N>`.",
        default=None,
        check=checks.LISTENER_NAME,
    )
    cluster: str = setting("Cluster the matching requests go to.", check=checks.NONEMPTY)
    hosts: tuple[str, ...] = setting(
        "Host (authority without port) equal to one of these; `*.example.com` matches "
        "any subdomain (not example.com itself).",
        default=(),
        check=HOST_PATTERN,
    )
    path_exact: str | None = setting("Path (before `?`) equal to this.", default=None, check=PATH)
    path_prefix: str | None = setting("Path starting with this.", default=None, check=PATH)
    path_regex: str | None = setting(
        "Path (before `?`) fully matching this regular expression.", default=None, check=REGEX
    )
    methods: tuple[str, ...] = setting("Method is one of these.", default=(), check=METHOD)
    headers: tuple[str, ...] = setting(
        '`"name"`: the header is present; `"name: value"`: some field of that name equals value.',
        default=(),
        check=HEADER_MATCH,
    )
    prefix_rewrite: str | None = setting(
        "Replace the matched `path_prefix` with this before forwarding.",
        default=None,
        check=PATH,
    )
    request_headers_add: tuple[str, ...] = setting(
        '`"name: value"` fields added to the forwarded request.', default=(), check=HEADER_LINE
    )
    request_headers_remove: tuple[str, ...] = setting(
        "Fields removed from the forwarded request.", default=(), check=HEADER_NAME
    )
    timeout_ms: int | None = setting(
        "Total time for a request on this route, when shorter than the listener's "
        "`total_timeout_ms` (it cannot lengthen it).",
        default=None,
        range=Range(10, 86_400_000),
    )
    retry: RetryConfig | None = setting(
        "Retries for this route; unset: the cluster's.", default=None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    """A listening socket (`[[listeners]]`) and its backend pool."""

    name: str = setting(
        "Listener name, used in logs and metric labels. Must be unique.",
        derive_default=("address", _same),
        default_doc="`address` (`<address>/udp` for a UDP listener sharing its address "
        "with a TCP one)",
        check=checks.LISTENER_NAME,
        new=True,
    )
    address: str = setting(
        "Where to listen, `host:port`; IPv6 literals in brackets (`[::]:443`). Port 0 "
        "picks a free port.",
        check=checks.LISTEN_ADDR,
    )
    host: str = setting("Host part of `address` (no brackets).", derive=("address", _host))
    port: int = setting("Port part of `address`.", derive=("address", _port))
    protocol: ListenerProtocol = setting(
        "`tcp` (L4 byte relay), `tls` (TLS termination, then raw bytes), `h1` "
        "(HTTP/1.1), `h1s` (TLS with ALPN: HTTP/2 or HTTP/1.1), `quic` (HTTP/3, or Mode "
        "B with `raw_proxy`), `udp` (new: datagram relay). `http`, `h2` and `h3` are "
        "backend protocols and rejected here.",
        check=_LISTENER_PROTOCOL,
    )
    tls: TlsConfig | None = setting("TLS termination; required for `tls`/`h1s`.", default=None)
    quic: QuicConfig | None = setting(
        "QUIC settings; required for `quic`.", default=None, feature="quic"
    )
    alt_svc: AltSvcConfig | None = setting(
        "Advertise an HTTP/3 endpoint.", default=None, reload="swappable", feature="alt_svc"
    )
    http: HttpConfig = setting("HTTP timeouts and limits.", factory=HttpConfig, reload="swappable")
    h2_security: H2SecurityConfig = setting(
        "HTTP/2 limits.", factory=H2SecurityConfig, reload="swappable", feature="h2_security"
    )
    websocket: WebSocketConfig | None = setting(
        "WebSocket proxying (presence enables).",
        default=None,
        reload="swappable",
        feature="websocket",
    )
    grpc: GrpcConfig | None = setting(
        "gRPC handling (presence enables); `h1s` and `quic` only.",
        default=None,
        reload="swappable",
        feature="grpc",
    )
    udp: UdpConfig = setting("Datagram relay limits; `udp` only.", factory=UdpConfig, new=True)
    drain_timeout_ms: int | None = setting(
        "Drain budget for this listener's connections on shutdown; unset inherits "
        "`runtime.drain_timeout_ms`.",
        default=None,
        default_doc="`runtime.drain_timeout_ms`",
        range=Range(100, 300_000),
    )
    drain_jitter_ms: int | None = setting(
        "Extra random grace per connection, at most the effective drain timeout; "
        "unset inherits `runtime.drain_jitter_ms`, else drain timeout / 4.",
        default=None,
        default_doc="inherited",
        range=Range(0, 300_000),
    )
    backends: tuple[BackendConfig, ...] = setting(
        "The backend pool (round robin, no health checks; use `cluster` for more). A "
        "listener without backends, cluster or routes answers 503 (HTTP) or closes "
        "connections (L4).",
        default=(),
        reload="swappable",
    )
    cluster: str | None = setting(
        "Default pool by name (`[[clusters]]`), instead of inline `backends`.",
        default=None,
        reload="swappable",
        check=checks.NONEMPTY,
        new=True,
    )
    routes: tuple[RouteConfig, ...] = setting(
        "Routes (`h1`, `h1s`, `quic` only), tried in order before the default pool.",
        default=(),
        reload="swappable",
        new=True,
    )

    @property
    def transport(self) -> Literal["tcp", "udp"]:
        """The socket type this listener binds."""
        return "udp" if self.protocol in ("quic", "udp") else "tcp"


# ----------------------------------------------------------------------- runtime


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeTlsConfig:
    """Process-wide TLS policy."""

    tls13_only: bool = setting(
        "Offer only TLS 1.3 on TCP TLS listeners (the original parsed but never applied it).",
        default=False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchdogConfig:
    """Slow-connection watchdog (observability: it logs, it does not close)."""

    header_deadline_ms: int = setting(
        "Head deadline reported by the watchdog (the enforced one is "
        "`listeners.http.header_timeout_ms`).",
        default=5000,
        range=Range(100, 60_000),
    )
    body_progress_min_bps: int = setting(
        "Body progress floor, bytes per second; 0 disables the check.",
        default=64,
        range=Range(0, 10_000_000),
    )
    sweep_interval_ms: int = setting(
        "How often the watchdog table is swept.", default=1000, range=Range(100, 60_000)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    """Process-wide settings (`[runtime]`); the block may be omitted."""

    xdp_enabled: bool = setting(
        "Attach the XDP/eBPF fast path.", default=False, feature_by_value={True: "xdp"}
    )
    xdp_interface: str | None = setting(
        "Interface for XDP; required when `xdp_enabled`.", default=None, check=checks.NONEMPTY
    )
    xdp_mode: XdpMode = setting(
        "`auto` (driver, falling back to generic), `native`, `skb` or `hw`.", default="auto"
    )
    drain_timeout_ms: int = setting(
        "How long in-flight connections get to finish on SIGTERM.",
        default=10_000,
        range=Range(100, 300_000),
    )
    readiness_settle_ms: int = setting(
        "After `/readyz` turns 503 on SIGTERM, wait this long before closing listeners "
        "(load balancers need a probe period to notice).",
        default=11_000,
        range=Range(0, 30_000),
    )
    drain_jitter_ms: int | None = setting(
        "Random spread added before connections are told to close, at most `drain_timeout_ms`.",
        default=None,
        default_doc="`drain_timeout_ms` / 4",
        range=Range(0, 300_000),
    )
    handshake_timeout_ms: int = setting(
        "TLS handshake budget.", default=5000, range=Range(100, 60_000)
    )
    max_inflight_connections: int = setting(
        "Concurrent connections per TCP listener; over it `h1` answers 503, others close.",
        default=65_536,
        range=Range(100, 2_000_000),
    )
    connect_timeout_ms: int = setting(
        "Upstream connect budget.", default=5000, range=Range(100, 60_000)
    )
    per_ip_connection_cap: int = setting(
        "Concurrent connections from one client IP (TCP listeners); over it the "
        "connection is closed without a response.",
        default=1024,
        range=Range(1, 2_000_000),
    )
    header_underscore_policy: UnderscorePolicy = setting(
        "Request header names containing `_`: `reject` (400), `drop` or `allow`. "
        "`security.strict_te = true` forces `reject`.",
        default="reject",
    )
    max_keepalive_requests: int = setting(
        "Requests per HTTP/1.1 connection before `Connection: close`; 0 = unlimited.",
        default=100,
        range=Range(1, 10_000_000, or_zero=True),
        reload="swappable",
    )
    max_requests_per_h3_connection: int = setting(
        "Requests per HTTP/3 connection before GOAWAY; 0 = unlimited (lets one "
        "connection grow without bound).",
        default=1000,
        range=Range(1, 10_000_000, or_zero=True),
    )
    xdp_new_flow_cap_per_sec_per_cpu: int = setting(
        "XDP new-flow cap per CPU per second (SYN-flood defense); 0 disables.",
        default=125_000,
        range=Range(1000, 10_000_000, or_zero=True),
    )
    workers: int = setting(
        "Worker processes, each with its own event loop and SO_REUSEPORT sockets; 0 = one per CPU.",
        default=0,
        default_doc="`0` (CPU count)",
        range=Range(0, 256),
        new=True,
    )
    tcp_backlog: int = setting(
        "listen() backlog of TCP listeners (the kernel caps it at somaxconn).",
        default=50_000,
        range=Range(1, 1_000_000),
        new=True,
    )
    accept_backoff_max_ms: int = setting(
        "Cap of the exponential backoff after accept() errors (EMFILE, resets).",
        default=1000,
        range=Range(10, 60_000),
        new=True,
    )
    tls: RuntimeTlsConfig = setting("TLS policy.", factory=RuntimeTlsConfig)
    watchdog: WatchdogConfig = setting(
        "Slow-connection watchdog.", factory=WatchdogConfig, feature="watchdog"
    )

    @property
    def effective_drain_jitter_ms(self) -> int:
        """``drain_jitter_ms``, or ``drain_timeout_ms // 4`` when unset."""
        if self.drain_jitter_ms is not None:
            return self.drain_jitter_ms
        return self.drain_timeout_ms // 4


# ----------------------------------------------------------- top-level sections


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilityConfig:
    """Admin endpoint and logging."""

    metrics_bind: str | None = setting(
        "`ip:port` of the admin listener (`/metrics`, `/livez`, `/healthz`, `/readyz`, "
        "`/startupz`); unset = no admin listener. A non-loopback address needs "
        "`admin.allow_non_loopback` and `admin.api_token_hash`.",
        default=None,
        check=checks.BIND_ADDR,
    )
    access_log: bool = setting(
        "Log one line per request.", default=False, reload="swappable", new=True
    )
    log_format: LogFormat | None = setting(
        "`json`, `text` or `plain`; the `LB_LOG_FORMAT` environment variable overrides it.",
        default=None,
        default_doc="`json`",
        new=True,
    )
    log_level: LogLevel | None = setting(
        "`debug`, `info`, `warning`, `error` or `critical`.",
        default=None,
        default_doc="`info`",
        new=True,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminConfig:
    """Admin endpoint access control."""

    api_token_hash: str | None = setting(
        "SHA-256 (64 hex characters) of the bearer token that `/metrics` requires; "
        "probes stay anonymous.",
        default=None,
        check=checks.HEX64,
    )
    allow_non_loopback: bool = setting(
        "Allow `observability.metrics_bind` on a non-loopback address (also needs "
        "`api_token_hash`).",
        default=False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityConfig:
    """Request-smuggling policy."""

    strict_te: bool = setting(
        "Reject any `Transfer-Encoding` other than exactly `chunked` (and force "
        '`header_underscore_policy = "reject"`).',
        default=False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    """Idle upstream connection pools (new: the original documented these
    values but never parsed them)."""

    per_peer_max: int = setting(
        "Idle connections kept per backend.", default=8, range=Range(1, 10_000)
    )
    total_max: int = setting(
        "Idle connections kept in total; at least `per_peer_max`.",
        default=256,
        range=Range(1, 1_000_000),
    )
    idle_timeout_ms: int = setting(
        "An idle connection older than this is closed instead of reused.",
        default=60_000,
        range=Range(1000, _MS_HOUR),
    )
    max_age_ms: int = setting(
        "A connection older than this is not reused.",
        default=300_000,
        range=Range(1000, 86_400_000),
    )
    park_max: int = setting(
        "**new** Client connections per worker that may keep their upstream HTTP/1.1 "
        "connection between their requests (so a keep-alive client reuses the same "
        "upstream socket without a pool lookup); beyond this, an upstream connection goes "
        "back to the shared idle pool when its exchange ends. Bounds the upstream sockets "
        "held by idle clients. Gauge `pool_parked_connections`.",
        default=1024,
        range=Range(0, 1_000_000),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PassthroughConfig:
    """QUIC Mode A: route QUIC by connection ID without decrypting
    (`[passthrough]`). May be the only datapath."""

    bind_addr: str = setting("UDP `ip:port` to listen on.", check=checks.BIND_ADDR)
    backends: tuple[str, ...] = setting(
        "Backend `ip:port` list (IP literals, no host names); Maglev over the client "
        "connection ID picks one per flow.",
        check=checks.SOCKET_ADDR,
        min_items=1,
    )
    retry_secret_path: str = setting(
        "32-byte HMAC key for Retry tokens; created 0600 when absent, an existing file "
        "must be 0600 or stricter.",
        file=FileRule(must_exist=False, private=True),
        check=checks.NONEMPTY,
    )
    max_quic_connections: int = setting(
        "Flow table cap (the routing table holds twice as many CIDs; LRU eviction).",
        default=100_000,
        range=Range(1, 2_000_000),
    )
    min_client_dcid_len: int = setting(
        "Initials with a shorter destination CID are dropped (prefix-collision defense).",
        default=8,
        range=Range(8, 20),
    )
    per_flow_backlog: int = setting(
        "Datagrams queued per flow before the newest is dropped.",
        default=32,
        range=Range(1, 8192),
    )
    strict_source_binding: bool = setting(
        "Drop short-header packets from an address other than the flow's (no NAT rebinding).",
        default=False,
    )
    audit_throttle_window_secs: int = setting(
        "At most one strict-binding audit log line per window. The original only "
        "required > 0; capped here at one day.",
        default=60,
        range=Range(1, 86_400),
    )
    max_dcid_len_routed: int = setting(
        "Short-header DCID length tried first on lookup.", default=20, range=Range(1, 20)
    )
    mint_retry: bool = setting(
        "Answer token-less Initials with a stateless Retry (Initial-flood defense).",
        default=True,
    )
    flow_idle_timeout_ms: int = setting(
        "Forget a flow idle this long; 0 = only LRU eviction. Capped here at one day "
        "(the original did not validate it).",
        default=60_000,
        range=Range(0, 86_400_000),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration: an immutable snapshot of one TOML file."""

    listeners: tuple[ListenerConfig, ...] = setting(
        "Listeners; at least one, unless `[passthrough]` is present. Adding or "
        "removing one needs a restart.",
        default=(),
        reload="restart",
    )
    runtime: RuntimeConfig = setting(
        "Process-wide settings.", factory=RuntimeConfig, reload="restart"
    )
    observability: ObservabilityConfig = setting(
        "Admin endpoint and logs.", factory=ObservabilityConfig, reload="restart"
    )
    admin: AdminConfig = setting("Admin access control.", factory=AdminConfig, reload="restart")
    security: SecurityConfig = setting(
        "Smuggling policy.", factory=SecurityConfig, reload="restart"
    )
    pool: PoolConfig = setting(
        "Upstream connection pools.", factory=PoolConfig, reload="swappable", new=True
    )
    clusters: tuple[ClusterConfig, ...] = setting(
        "Named pools used by listeners (`cluster`) and routes.",
        default=(),
        reload="swappable",
        new=True,
    )
    passthrough: PassthroughConfig | None = setting(
        "QUIC Mode A passthrough.", default=None, reload="restart", feature="passthrough"
    )
    source: str = setting(
        "Where the config came from (absolute file path, or `<string>`).",
        default="<string>",
        derived=True,
    )
    text: str = setting("The raw TOML.", default="", derived=True, repr=False)
    explicit_keys: frozenset[str] = setting(
        "Key paths written in the file (the rest took defaults).",
        default=frozenset(),
        derived=True,
        repr=False,
        compare=False,
    )

    def features_in_use(self) -> list[tuple[str, str]]:
        """(feature, key path) of every feature-tagged key this config uses.

        Feature names: quic, quic_raw_proxy, passthrough, xdp, h2_security,
        h2_backend, h3_backend, grpc, websocket, alt_svc, watchdog.
        """
        return feature_uses(self, self.explicit_keys)

    def effective_drain(self, listener: ListenerConfig) -> tuple[int, int]:
        """(drain timeout, drain jitter) in ms for ``listener``, after inheriting
        from ``[runtime]``."""
        timeout = listener.drain_timeout_ms
        if timeout is None:
            timeout = self.runtime.drain_timeout_ms
        jitter = listener.drain_jitter_ms
        if jitter is None:
            jitter = self.runtime.drain_jitter_ms
        if jitter is None:
            jitter = timeout // 4
        return timeout, jitter
