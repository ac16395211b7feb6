"""Route matching and request edits (proxy/router.py), from parsed configs."""

from __future__ import annotations

from expressgateway.config import parse_config
from expressgateway.core.events import RequestHead
from expressgateway.proxy.router import Router
from expressgateway.upstream.cluster import Clusters

CLUSTERS = "".join(
    f'\n[[clusters]]\nname = "{name}"\n[[clusters.backends]]\n'
    f'address = "127.0.0.1:{port}"\nprotocol = "h1"\n'
    for name, port in (("api", 3001), ("web", 3002), ("admin", 3003))
)


def router(routes: str, default: str = 'cluster = "web"\n') -> Router:
    cfg = parse_config(
        f'[[listeners]]\nname = "l"\naddress = "127.0.0.1:8080"\nprotocol = "h1"\n{default}'
        f"{routes}{CLUSTERS}"
    )
    return Router(cfg.listeners[0], Clusters(cfg))


def head(
    path: bytes = b"/", authority: bytes = b"example.com", method: bytes = b"GET", headers=()
) -> RequestHead:
    return RequestHead(method, b"http", authority, path, list(headers), True)


def target(r: Router, h: RequestHead) -> str | None:
    route = r.match(h)
    return None if route is None else route.cluster.name


ROUTES = """
[[listeners.routes]]
name = "admin"
cluster = "admin"
path_exact = "/admin"
methods = ["POST"]

[[listeners.routes]]
cluster = "api"
hosts = ["api.example.com", "*.svc.example.com"]
path_prefix = "/v1/"
prefix_rewrite = "/"
request_headers_add = ["x-route: api"]
request_headers_remove = ["cookie"]

[[listeners.routes]]
cluster = "admin"
path_regex = "/reports/[0-9]+"
headers = ["x-team: finance", "authorization"]
"""


def test_first_match_wins_then_the_default_pool() -> None:
    r = router(ROUTES)
    assert target(r, head(b"/admin", method=b"POST")) == "admin"
    assert target(r, head(b"/admin")) == "web"  # method does not match
    assert target(r, head(b"/v1/users", b"api.example.com")) == "api"
    assert target(r, head(b"/v1/users", b"api.example.com:8443")) == "api"  # port ignored
    assert target(r, head(b"/v1/users", b"x.svc.example.com")) == "api"  # wildcard
    assert target(r, head(b"/v1/users", b"svc.example.com")) == "web"  # not the apex
    assert target(r, head(b"/v2/users", b"api.example.com")) == "web"


def test_regex_is_a_full_match_on_the_path_without_query_and_headers_must_all_hold() -> None:
    r = router(ROUTES)
    both = [(b"x-team", b"finance"), (b"authorization", b"Bearer t")]
    assert target(r, head(b"/reports/42?x=1", headers=both)) == "admin"
    assert target(r, head(b"/reports/42x", headers=both)) == "web"
    assert target(r, head(b"/reports/42", headers=both[:1])) == "web"
    assert target(r, head(b"/reports/42", headers=[(b"x-team", b"sales"), both[1]])) == "web"


def test_no_match_and_no_default_pool_is_none() -> None:
    r = router(ROUTES, default="")
    assert r.match(head(b"/elsewhere")) is None


def test_prefix_rewrite_and_header_edits_make_a_new_head() -> None:
    r = router(ROUTES)
    original = head(b"/v1/users?id=3", b"api.example.com", headers=[(b"cookie", b"a=b")])
    route = r.match(original)
    assert route is not None
    out = route.apply(original)
    assert out.path == b"/users?id=3"
    assert out.headers == [(b"x-route", b"api")]
    assert original.path == b"/v1/users?id=3" and original.headers == [(b"cookie", b"a=b")]
