"""Key-level validation: unknown keys, types, ranges, choices, required keys."""

from __future__ import annotations

import pytest

from expressgateway.config import parse_config
from tests.unit.config.helpers import H1, problems

# ------------------------------------------------------------------ unknown keys


def test_misspelled_backend_key_is_reported_with_path_and_suggestion() -> None:
    text = H1 + '[[listeners.backends]]\naddress = "127.0.0.1:3001"\nwieght = 3\n'
    assert problems(text) == [
        "listeners[0].backends[1].wieght = 3: unknown key (did you mean 'weight'?)"
    ]


def test_misspelled_top_level_table_is_reported() -> None:
    assert problems(H1 + "[runtim]\nworkers = 2\n") == [
        "runtim = {...}: unknown key (did you mean 'runtime'?)"
    ]


def test_single_bracket_listeners_table_asks_for_array_of_tables() -> None:
    text = '[listeners]\naddress = "127.0.0.1:80"\nprotocol = "h1"\n'
    assert problems(text) == [
        "listeners = {...}: expected array of tables, got table (write [[listeners]])"
    ]


def test_key_in_the_wrong_section_names_its_home() -> None:
    text = H1.replace('protocol = "h1"', 'protocol = "h1"\nmax_keepalive_requests = 5')
    assert problems(text) == [
        "listeners[0].max_keepalive_requests = 5: unknown key "
        "('max_keepalive_requests' belongs in [runtime])"
    ]


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    assert problems(H1 + "[security]\nzzz = 1\n") == ["security.zzz = 1: unknown key"]


def test_derived_fields_are_not_config_keys() -> None:
    text = H1.replace('protocol = "h1"', 'protocol = "h1"\nport = 8080')
    assert problems(text)[0].startswith("listeners[0].port = 8080: unknown key")


def test_unknown_key_in_nested_block_is_reported() -> None:
    text = H1 + "[listeners.http]\nheader_timeout = 5\n"
    assert problems(text) == [
        "listeners[0].http.header_timeout = 5: unknown key (did you mean 'header_timeout_ms'?)"
    ]


# ------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            '[runtime]\ndrain_timeout_ms = "5000"\n',
            'runtime.drain_timeout_ms = "5000": expected integer, got string '
            "(drop the quotes: 5000)",
        ),
        (
            "[runtime]\ndrain_timeout_ms = true\n",
            "runtime.drain_timeout_ms = true: expected integer, got boolean",
        ),
        (
            "[runtime]\ndrain_timeout_ms = 5000.0\n",
            "runtime.drain_timeout_ms = 5000.0: expected integer, got float",
        ),
        ("[security]\nstrict_te = 1\n", "security.strict_te = 1: expected boolean, got integer"),
        (
            '[security]\nstrict_te = "true"\n',
            'security.strict_te = "true": expected boolean, got string',
        ),
        ('runtime = "fast"\n', 'runtime = "fast": expected table, got string'),
        (
            "[observability]\nmetrics_bind = 9090\n",
            "observability.metrics_bind = 9090: expected string, got integer",
        ),
        (
            "[observability]\nlog_level = 1979-05-27\n",
            "observability.log_level = 1979-05-27: expected string, got datetime",
        ),
    ],
)
def test_wrong_type_names_the_expected_type(snippet: str, expected: str) -> None:
    assert problems(snippet + H1) == [expected]


def test_unquoted_choice_suggests_quoting() -> None:
    text = H1 + "[runtime]\nheader_underscore_policy = 1\n"
    assert problems(text) == [
        'runtime.header_underscore_policy = 1: expected string, got integer (quote it: "1")'
    ]


def test_single_bracket_backends_table_asks_for_array_of_tables() -> None:
    text = '[[listeners]]\naddress = "127.0.0.1:80"\nprotocol = "h1"\n[listeners.backends]\n'
    assert problems(text) == [
        "listeners[0].backends = {...}: expected array of tables, got table "
        "(write [[listeners.backends]])"
    ]


def test_backends_must_be_an_array_of_tables() -> None:
    text = '[[listeners]]\naddress = "127.0.0.1:80"\nprotocol = "h1"\nbackends = "x"\n'
    assert problems(text) == ['listeners[0].backends = "x": expected array of tables, got string']


def test_passthrough_backends_must_be_strings() -> None:
    text = '[passthrough]\nbind_addr = "0.0.0.0:4433"\nbackends = [1]\nretry_secret_path = "r"\n'
    assert problems(text) == ["passthrough.backends[0] = 1: expected string, got integer"]


# ------------------------------------------------------------------------ ranges


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[runtime]\ndrain_timeout_ms = 99\n", "(allowed 100..=300_000)"),
        ("[runtime]\ndrain_timeout_ms = 300001\n", "(allowed 100..=300_000)"),
        ("[runtime]\nxdp_new_flow_cap_per_sec_per_cpu = 500\n", "(allowed 0 or 1000..=10_000_000)"),
        ("[runtime]\nworkers = 257\n", "(allowed 0..=256)"),
        ("[pool]\nper_peer_max = 0\n", "(allowed 1..=10_000)"),
        ("[listeners.http]\nmax_header_bytes = 1023\n", "(allowed 1024..=1_048_576)"),
        ("[listeners.http]\nheader_timeout_ms = 0\n", "(allowed 1..=3_600_000)"),
        ("[listeners.http]\nmax_headers = 10001\n", "(allowed 1..=10_000)"),
        ("[listeners.udp]\nmax_datagram_size = 65508\n", "(allowed 512..=65_507)"),
    ],
)
def test_out_of_range_value_states_the_allowed_range(snippet: str, expected: str) -> None:
    text = H1.replace('protocol = "h1"', 'protocol = "udp"') if "udp" in snippet else H1
    (line,) = problems(text + snippet)
    assert line.endswith(": out of range " + expected), line


@pytest.mark.parametrize("weight", [0, 10_001, -1])
def test_backend_weight_is_bounded(weight: int) -> None:
    text = H1 + f"weight = {weight}\n"
    assert problems(text) == [
        f"listeners[0].backends[0].weight = {weight}: out of range (allowed 1..=10_000)"
    ]


@pytest.mark.parametrize("weight", [1, 10_000])
def test_backend_weight_bounds_are_inclusive(weight: int) -> None:
    cfg = parse_config(H1 + f"weight = {weight}\n")
    assert cfg.listeners[0].backends[0].weight == weight


def test_zero_is_the_off_switch_where_documented() -> None:
    cfg = parse_config(
        H1
        + "[runtime]\nmax_keepalive_requests = 0\nmax_requests_per_h3_connection = 0\n"
        + "xdp_new_flow_cap_per_sec_per_cpu = 0\n"
    )
    assert cfg.runtime.max_keepalive_requests == 0
    assert cfg.runtime.xdp_new_flow_cap_per_sec_per_cpu == 0


# ----------------------------------------------------------------------- choices


def test_bad_choice_lists_choices_and_suggests_the_closest() -> None:
    text = H1.replace('protocol = "h1"', 'protocol = "h1ss"', 1)
    assert problems(text) == [
        'listeners[0].protocol = "h1ss": expected one of tcp, tls, h1, h1s, quic, udp '
        "(did you mean 'h1s'?)"
    ]


@pytest.mark.parametrize("protocol", ["http", "h2", "h3"])
def test_backend_protocols_are_rejected_as_listener_protocols(protocol: str) -> None:
    text = H1.replace('protocol = "h1"', f'protocol = "{protocol}"', 1)
    (line,) = problems(text)
    assert line.startswith(
        f"listeners[0].protocol = \"{protocol}\": '{protocol}' is a backend protocol, "
        "not a listener protocol"
    )


def test_unknown_backend_protocol_is_rejected() -> None:
    (line,) = problems(H1 + 'protocol = "h4"\n')
    assert line.startswith('listeners[0].backends[0].protocol = "h4": expected one of tcp, h1')


@pytest.mark.parametrize(
    ("key", "value"),
    [("log_format", "yaml"), ("log_level", "verbose")],
)
def test_observability_log_choices_are_checked(key: str, value: str) -> None:
    (line,) = problems(H1 + f'[observability]\n{key} = "{value}"\n')
    assert line.startswith(f'observability.{key} = "{value}": expected one of')


def test_log_settings_accept_documented_values() -> None:
    cfg = parse_config(H1 + '[observability]\nlog_format = "json"\nlog_level = "debug"\n')
    assert (cfg.observability.log_format, cfg.observability.log_level) == ("json", "debug")


# ---------------------------------------------------------------- required keys


def test_missing_required_listener_keys_are_reported() -> None:
    assert problems("[[listeners]]\n") == [
        "listeners[0].address: missing required key",
        "listeners[0].protocol: missing required key",
    ]


def test_missing_required_backend_address_is_reported() -> None:
    text = H1 + '[[listeners.backends]]\nprotocol = "h1"\n'
    assert problems(text) == ["listeners[0].backends[1].address: missing required key"]


def test_missing_alt_svc_port_is_reported() -> None:
    assert problems(H1 + "[listeners.alt_svc]\nmax_age = 60\n") == [
        "listeners[0].alt_svc.h3_port: missing required key"
    ]


def test_passthrough_needs_at_least_one_backend() -> None:
    text = '[passthrough]\nbind_addr = "0.0.0.0:4433"\nbackends = []\nretry_secret_path = "r"\n'
    assert problems(text) == ["passthrough.backends = []: needs at least 1 item(s)"]


def test_raw_proxy_requires_backend_addr_and_sni(tmp_path: object) -> None:
    text = """
[[listeners]]
address = "127.0.0.1:443"
protocol = "quic"
[listeners.quic]
cert_path = "/nonexistent/c"
key_path = "/nonexistent/k"
retry_secret_path = "/nonexistent/r"
[listeners.quic.raw_proxy]
"""
    lines = problems(text)
    assert "listeners[0].quic.raw_proxy.backend_addr: missing required key" in lines
    assert "listeners[0].quic.raw_proxy.sni: missing required key" in lines


# ---------------------------------------------------------------- string checks


@pytest.mark.parametrize("value", ["", "abc", "g" * 64, "a" * 63])
def test_api_token_hash_must_be_64_hex(value: str) -> None:
    (line,) = problems(H1 + f'[admin]\napi_token_hash = "{value}"\n')
    assert "must be exactly 64 hex characters" in line


def test_api_token_hash_is_stored_lower_case() -> None:
    cfg = parse_config(H1 + f'[admin]\napi_token_hash = "{"AB" * 32}"\n')
    assert cfg.admin.api_token_hash == "ab" * 32


def test_empty_metrics_bind_is_rejected() -> None:
    (line,) = problems(H1 + '[observability]\nmetrics_bind = ""\n')
    assert line.startswith('observability.metrics_bind = "": must not be empty')


def test_empty_xdp_interface_is_rejected() -> None:
    (line,) = problems(H1 + '[runtime]\nxdp_interface = "  "\n')
    assert line == 'runtime.xdp_interface = "  ": must not be empty'


@pytest.mark.parametrize(
    ("alpn", "reason"),
    [
        ('["h3"]', 'alpn[0] = "h3": expected one of h2, http/1.1'),
        ('["h2", "h2"]', 'alpn[1] = "h2": duplicate item'),
        ("[]", "alpn = []: needs at least 1 item(s)"),
    ],
)
def test_tls_alpn_is_checked(alpn: str, reason: str) -> None:
    text = f"""
[[listeners]]
address = "127.0.0.1:8443"
protocol = "h1s"
[listeners.tls]
cert_path = "/nonexistent/c"
key_path = "/nonexistent/k"
alpn = {alpn}
"""
    lines = problems(text)
    assert any(line.startswith("listeners[0].tls." + reason) for line in lines), lines


def test_tls_verify_hostname_must_be_a_host_name() -> None:
    text = H1 + 'protocol = "h2"\ntls = true\ntls_verify_hostname = "not a host"\n'
    (line,) = problems(text)
    assert "is not a valid host name" in line
