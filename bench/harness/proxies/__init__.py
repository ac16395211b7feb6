"""The proxies under test, by name."""

from __future__ import annotations

from .base import Proxy
from .caddy import Caddy, CaddyStatic
from .gateway import ExpressGateway
from .haproxy import HAProxy
from .mitmproxy import Mitmproxy
from .nginx import Nginx
from .traefik import Traefik

DEFAULT_ORDER = ["haproxy", "nginx", "caddy", "traefik", "mitmproxy", "expressgateway"]
# Not in the default run: caddy answering HTTP/3 itself, the load client's ceiling.
EXTRA = ["caddy-static", "expressgateway-1w"]


def build(names: list[str], natural: bool) -> list[Proxy]:
    """Proxies in the requested order; natural mode also runs our gateway with 1 worker."""
    factories: dict[str, type[Proxy]] = {
        "haproxy": HAProxy,
        "nginx": Nginx,
        "caddy": Caddy,
        "traefik": Traefik,
        "mitmproxy": Mitmproxy,
        "expressgateway": ExpressGateway,
        "caddy-static": CaddyStatic,
    }
    out: list[Proxy] = []
    for name in names:
        if name == "expressgateway-1w":
            out.append(ExpressGateway(fixed_workers=1))
            continue
        if name not in factories:
            raise SystemExit(f"unknown proxy {name!r}; known: {', '.join(factories)}")
        out.append(factories[name]())
        if name == "expressgateway" and natural and "expressgateway-1w" not in names:
            out.append(ExpressGateway(fixed_workers=1))
    return out
