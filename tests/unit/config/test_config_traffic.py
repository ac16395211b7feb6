"""Clusters and routes (issue #6): what loads, and what each rule refuses."""

from __future__ import annotations

from expressgateway.config import parse_config
from tests.unit.config.helpers import problems

CLUSTER = """
[[clusters]]
name = "api"
policy = "maglev"
hash_key = "header:X-User"

[[clusters.backends]]
address = "127.0.0.1:3001"
protocol = "h1"
weight = 3

[[clusters.backends]]
address = "127.0.0.1:3002"
protocol = "h1"

[clusters.health_check]
kind = "http"
path = "/healthz"
expected_status = "200"

[clusters.outlier]
consecutive_5xx = 3

[clusters.retry]
retry_on = ["connect_failure", "status"]
retry_statuses = [503]

[clusters.circuit_breaker]
max_requests = 100
"""


def http_listener(extra: str = "", protocol: str = "h1") -> str:
    return f'[[listeners]]\naddress = "127.0.0.1:8080"\nprotocol = "{protocol}"\n{extra}'


ROUTES = """
[[listeners.routes]]
name = "api"
cluster = "api"
hosts = ["api.example.com", "*.api.example.com"]
path_prefix = "/v1/"
prefix_rewrite = "/"
methods = ["get", "POST"]
headers = ["X-Env: canary", "authorization"]
request_headers_add = ["X-Route: api"]
request_headers_remove = ["Cookie"]
timeout_ms = 5000
"""


def test_a_cluster_with_routes_loads_with_normalised_values() -> None:
    cfg = parse_config(http_listener('cluster = "api"\n' + ROUTES) + CLUSTER)
    (cluster,) = cfg.clusters
    assert (cluster.policy, cluster.hash_key) == ("maglev", "header:x-user")
    assert [b.weight for b in cluster.backends] == [3, 1]
    assert cluster.health_check is not None and cluster.health_check.expected_status == "200-200"
    assert cluster.retry.retry_statuses == (503,)
    (route,) = cfg.listeners[0].routes
    assert route.methods == ("GET", "POST")
    assert route.headers == ("x-env: canary", "authorization")
    assert route.hosts == ("api.example.com", "*.api.example.com")
    assert route.request_headers_add == ("x-route: api",)
    assert route.request_headers_remove == ("cookie",)


def test_unknown_cluster_names_are_refused() -> None:
    text = http_listener('cluster = "nope"\n[[listeners.routes]]\ncluster = "gone"\n') + CLUSTER
    assert problems(text) == [
        'listeners[0].cluster = "nope": no [[clusters]] entry has this name',
        'listeners[0].routes[0].cluster = "gone": no [[clusters]] entry has this name',
    ]


def test_cluster_and_inline_backends_are_exclusive() -> None:
    text = http_listener(
        'cluster = "api"\n[[listeners.backends]]\naddress = "127.0.0.1:1"\nprotocol = "h1"\n'
    )
    assert problems(text + CLUSTER) == [
        'listeners[0].cluster = "api": a listener takes cluster or inline backends, not both'
    ]


def test_duplicate_cluster_names_are_refused() -> None:
    assert problems(http_listener('cluster = "api"\n') + CLUSTER + CLUSTER) == [
        'clusters[1].name = "api": already used by clusters[0]'
    ]


def test_route_path_forms_are_exclusive_and_rewrite_needs_a_prefix() -> None:
    text = http_listener(
        '[[listeners.routes]]\ncluster = "api"\npath_exact = "/a"\npath_regex = "^/b"\n'
        'prefix_rewrite = "/c"\n'
    )
    assert problems(text + CLUSTER) == [
        "listeners[0].routes[0]: only one of path_exact, path_regex",
        'listeners[0].routes[0].prefix_rewrite = "/c": needs path_prefix',
    ]


def test_routes_are_refused_on_l4_listeners() -> None:
    text = http_listener('[[listeners.routes]]\ncluster = "api"\n', protocol="tcp")
    assert problems(text + CLUSTER.replace('protocol = "h1"', 'protocol = "tcp"')) == [
        "listeners[0].routes: not allowed on a 'tcp' listener"
    ]


def test_bad_values_name_the_key_and_the_form() -> None:
    text = http_listener(
        '[[listeners.routes]]\ncluster = "api"\npath_regex = "(unclosed"\n'
        'headers = ["bad name: 1"]\nhosts = ["exa mple.com"]\n'
    )
    got = problems(text + CLUSTER)
    assert any(p.startswith("listeners[0].routes[0].path_regex") for p in got), got
    assert any(p.startswith("listeners[0].routes[0].headers[0]") for p in got), got
    assert any(p.startswith("listeners[0].routes[0].hosts[0]") for p in got), got


def test_hash_key_needs_a_hashing_policy() -> None:
    text = CLUSTER.replace('policy = "maglev"', 'policy = "least_request"')
    assert problems(http_listener('cluster = "api"\n') + text) == [
        'clusters[0].hash_key = "header:x-user": only used by ring_hash and maglev '
        "(policy is 'least_request')"
    ]


def test_cookie_affinity_needs_an_http_listener() -> None:
    text = CLUSTER.replace('protocol = "h1"', 'protocol = "tcp"').replace(
        'policy = "maglev"\nhash_key = "header:X-User"', 'policy = "round_robin"'
    )
    text += '[clusters.affinity]\nmode = "cookie"\n'
    got = problems(http_listener('cluster = "api"\n', protocol="tcp") + text)
    assert got == [
        'clusters[0].affinity.mode = "cookie": cookie affinity needs an HTTP listener; '
        "listeners[0] is 'tcp' (use mode = \"source_ip\" for L4 listeners)"
    ]


def test_cluster_backends_must_fit_the_listener_protocol() -> None:
    text = http_listener('cluster = "api"\n', protocol="tcp") + CLUSTER
    got = problems(text)
    assert (
        "clusters[0].backends[0].protocol = \"h1\": a 'tcp' listener relays raw bytes: only tcp backends"
        in got
    )
