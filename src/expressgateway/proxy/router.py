"""Routes of an HTTP listener: which cluster a request goes to, and what is
changed on the way (path prefix rewrite, header add/remove, timeout, retry).

Routes are tried in order and the first whose every condition holds wins;
then the listener's default pool (its ``cluster``, or its inline backends).
Matching reads the request head only: host (the authority without port,
exact or ``*.`` wildcard), path (exact, prefix, or full regex match on the
part before ``?``), method, and headers (present, or equal to a value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from expressgateway.config import ListenerConfig
from expressgateway.config.model import RouteConfig
from expressgateway.config.traffic import RetryConfig
from expressgateway.core.events import Headers, RequestHead
from expressgateway.upstream.cluster import Cluster, Clusters


def _authority_host(authority: bytes) -> bytes:
    if authority.startswith(b"["):
        end = authority.find(b"]")
        return authority[: end + 1].lower() if end > 0 else authority.lower()
    return authority.rsplit(b":", 1)[0].lower() if b":" in authority else authority.lower()


@dataclass(slots=True)
class Route:
    name: str
    cluster: Cluster
    retry: RetryConfig
    hosts: frozenset[bytes] = frozenset()
    wildcards: tuple[bytes, ...] = ()
    path_exact: bytes | None = None
    path_prefix: bytes | None = None
    path_regex: re.Pattern[bytes] | None = None
    methods: frozenset[bytes] = frozenset()
    headers: tuple[tuple[bytes, bytes | None], ...] = ()
    prefix_rewrite: bytes | None = None
    add: tuple[tuple[bytes, bytes], ...] = ()
    remove: frozenset[bytes] = frozenset()
    timeout: float | None = None
    #: the request needs changing (rewrite or header operations)
    edits: bool = False

    @classmethod
    def build(cls, name: str, rc: RouteConfig, cluster: Cluster) -> Route:
        hosts = [h.encode() for h in rc.hosts]
        route = cls(
            name=name,
            cluster=cluster,
            retry=rc.retry or cluster.retry,
            hosts=frozenset(h for h in hosts if not h.startswith(b"*.")),
            wildcards=tuple(h[1:] for h in hosts if h.startswith(b"*.")),
            path_exact=rc.path_exact.encode() if rc.path_exact else None,
            path_prefix=rc.path_prefix.encode() if rc.path_prefix else None,
            path_regex=re.compile(rc.path_regex.encode()) if rc.path_regex else None,
            methods=frozenset(m.encode() for m in rc.methods),
            headers=tuple(_header_match(h) for h in rc.headers),
            prefix_rewrite=rc.prefix_rewrite.encode() if rc.prefix_rewrite is not None else None,
            add=tuple(_header_line(h) for h in rc.request_headers_add),
            remove=frozenset(h.encode() for h in rc.request_headers_remove),
            timeout=rc.timeout_ms / 1000 if rc.timeout_ms else None,
        )
        route.edits = bool(route.prefix_rewrite is not None or route.add or route.remove)
        return route

    def matches(self, head: RequestHead) -> bool:
        if self.methods and head.method not in self.methods:
            return False
        if self.hosts or self.wildcards:
            host = _authority_host(head.authority)
            if host not in self.hosts and not any(
                host.endswith(w) and len(host) > len(w) for w in self.wildcards
            ):
                return False
        if self.path_exact is not None or self.path_prefix is not None or self.path_regex:
            path = head.path.split(b"?", 1)[0]
            if self.path_exact is not None and path != self.path_exact:
                return False
            if self.path_prefix is not None and not path.startswith(self.path_prefix):
                return False
            if self.path_regex is not None and self.path_regex.fullmatch(path) is None:
                return False
        for name, value in self.headers:
            if not any(n == name and (value is None or v == value) for n, v in head.headers):
                return False
        return True

    def apply(self, head: RequestHead) -> RequestHead:
        """The request as this route forwards it (a new head when edited)."""
        if not self.edits:
            return head
        path = head.path
        prefix = self.path_prefix
        if self.prefix_rewrite is not None and prefix is not None and path.startswith(prefix):
            path = self.prefix_rewrite + path[len(prefix) :]
        headers: Headers = head.headers
        if self.remove:
            headers = [h for h in headers if h[0] not in self.remove]
        if self.add:
            headers = [*headers, *self.add]
        return RequestHead(
            head.method,
            head.scheme,
            head.authority,
            path,
            headers,
            head.end_stream,
            head.protocol,
            head.content_length,
        )


def _header_match(text: str) -> tuple[bytes, bytes | None]:
    name, sep, value = text.partition(":")
    return name.strip().encode(), value.strip().encode() if sep else None


def _header_line(text: str) -> tuple[bytes, bytes]:
    name, _, value = text.partition(":")
    return name.strip().encode(), value.strip().encode()


class Router:
    """Routes of one listener plus its default pool."""

    def __init__(self, lc: ListenerConfig, clusters: Clusters) -> None:
        self.routes: list[Route] = []
        for i, rc in enumerate(lc.routes):
            cluster = clusters.by_name.get(rc.cluster)
            if cluster is not None:
                self.routes.append(Route.build(rc.name or f"route{i}", rc, cluster))
        default = clusters.for_listener(lc)
        self.default = (
            Route(name="default", cluster=default, retry=default.retry) if default else None
        )

    def match(self, head: RequestHead) -> Route | None:
        for route in self.routes:
            if route.matches(head):
                return route
        return self.default
