"""Cross-field rules: what no single key can check on its own.

Each rule is a function registered with :func:`rule`, whose text appears in
the generated docs. Rules run on a possibly partial snapshot (the builder
keeps going after problems), so each skips values that are :data:`INVALID`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from expressgateway.config.build import BuildContext, is_valid
from expressgateway.config.checks import HostPort, is_loopback, split_host_port
from expressgateway.config.errors import Problem
from expressgateway.config.model import BackendConfig, ClusterConfig, Config, ListenerConfig

__all__ = ["RULES", "Rule", "run_rules"]

RuleFn = Callable[[Config, BuildContext], Iterator[Problem]]

_TLS_PROTOCOLS = ("tls", "h1s")
_WEBSOCKET_PROTOCOLS = ("h1", "h1s", "quic")
_L4_PROTOCOLS = ("tcp", "tls")
_BACKEND_TLS_KEYS = ("tls_ca_path", "tls_verify_hostname", "tls_verify_peer")


@dataclass(frozen=True, slots=True)
class Rule:
    """A cross-field rule; ``doc`` is one sentence for the generated docs."""

    doc: str
    fn: RuleFn


RULES: list[Rule] = []


def rule(doc: str) -> Callable[[RuleFn], RuleFn]:
    """Register a rule function with its documentation."""

    def register(fn: RuleFn) -> RuleFn:
        RULES.append(Rule(doc, fn))
        return fn

    return register


def run_rules(cfg: Config, ctx: BuildContext) -> None:
    """Run every rule, adding its problems to ``ctx``."""
    for r in RULES:
        ctx.problems.extend(r.fn(cfg, ctx))


def _listeners(cfg: Config) -> Iterator[tuple[str, ListenerConfig]]:
    if not is_valid(cfg.listeners):
        return
    for i, listener in enumerate(cfg.listeners):
        if is_valid(listener):
            yield f"listeners[{i}]", listener


def _backends(cfg: Config) -> Iterator[tuple[str, ListenerConfig, str, BackendConfig]]:
    """Every backend a listener may send to: its own, and those of the
    clusters it names (as default pool or in routes)."""
    clusters = _clusters_by_name(cfg)
    for lpath, listener in _listeners(cfg):
        if is_valid(listener.backends):
            for j, backend in enumerate(listener.backends):
                if is_valid(backend):
                    yield lpath, listener, f"{lpath}.backends[{j}]", backend
        for cpath, cluster in _clusters_of(listener, clusters):
            for j, backend in enumerate(cluster.backends):
                if is_valid(backend):
                    yield lpath, listener, f"{cpath}.backends[{j}]", backend


def _clusters(cfg: Config) -> Iterator[tuple[str, ClusterConfig]]:
    if not is_valid(cfg.clusters):
        return
    for i, cluster in enumerate(cfg.clusters):
        if is_valid(cluster) and is_valid(cluster.backends):
            yield f"clusters[{i}]", cluster


def _clusters_by_name(cfg: Config) -> dict[str, tuple[str, ClusterConfig]]:
    out: dict[str, tuple[str, ClusterConfig]] = {}
    for path, cluster in _clusters(cfg):
        if is_valid(cluster.name):
            out.setdefault(cluster.name, (path, cluster))
    return out


def _clusters_of(
    listener: ListenerConfig, clusters: dict[str, tuple[str, ClusterConfig]]
) -> list[tuple[str, ClusterConfig]]:
    names = []
    if is_valid(listener.cluster) and listener.cluster is not None:
        names.append(listener.cluster)
    if is_valid(listener.routes):
        names.extend(r.cluster for r in listener.routes if is_valid(r) and is_valid(r.cluster))
    return [clusters[n] for n in dict.fromkeys(names) if n in clusters]


@rule("At least one `[[listeners]]` or a `[passthrough]` block is required.")
def _something_to_serve(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    if cfg.listeners == () and cfg.passthrough is None:
        yield Problem(
            "listeners",
            None,
            "no listeners and no [passthrough]: nothing to serve",
            "add a [[listeners]] block",
        )


@rule(
    "`[listeners.tls]` is required on `tls` and `h1s` listeners and rejected on others; "
    "`[listeners.quic]` is required on `quic` listeners and rejected on others."
)
def _tls_and_quic_blocks(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    for path, lst in _listeners(cfg):
        if not is_valid(lst.protocol):
            continue
        wants_tls = lst.protocol in _TLS_PROTOCOLS
        if wants_tls and lst.tls is None:
            yield Problem(
                f"{path}.tls",
                None,
                f"required: protocol '{lst.protocol}' terminates TLS",
                "add a [listeners.tls] block with cert_path and key_path",
            )
        if not wants_tls and lst.tls is not None:
            yield Problem(
                f"{path}.tls",
                {},
                f"not allowed on a '{lst.protocol}' listener",
                "only tls and h1s listeners terminate TCP TLS",
            )
        if lst.protocol == "quic" and lst.quic is None:
            yield Problem(
                f"{path}.quic",
                None,
                "required: protocol 'quic' needs QUIC settings",
                "add a [listeners.quic] block with cert_path, key_path, retry_secret_path",
            )
        if lst.protocol != "quic" and lst.quic is not None:
            yield Problem(f"{path}.quic", {}, f"not allowed on a '{lst.protocol}' listener")


@rule(
    "`[listeners.websocket]` is only allowed on `h1`, `h1s` and `quic` listeners; "
    "`[listeners.grpc]` only on `h1s` and `quic` (gRPC needs HTTP/2 or HTTP/3); "
    "`[listeners.udp]` only on "
    "`udp` listeners."
)
def _protocol_blocks(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    for path, lst in _listeners(cfg):
        if not is_valid(lst.protocol):
            continue
        if lst.websocket is not None and lst.protocol not in _WEBSOCKET_PROTOCOLS:
            yield Problem(
                f"{path}.websocket",
                {},
                f"not allowed on a '{lst.protocol}' listener",
                "WebSocket is proxied by h1, h1s and quic listeners",
            )
        if lst.grpc is not None and lst.protocol not in ("h1s", "quic"):
            yield Problem(
                f"{path}.grpc",
                {},
                f"not allowed on a '{lst.protocol}' listener",
                "gRPC needs HTTP/2 or HTTP/3: only h1s and quic listeners",
            )
        if f"{path}.udp" in ctx.explicit and lst.protocol != "udp":
            yield Problem(f"{path}.udp", {}, f"only allowed on udp listeners, not '{lst.protocol}'")


@rule("`[listeners.quic.raw_proxy]` (Mode B) and `[[listeners.backends]]` are mutually exclusive.")
def _raw_proxy_excludes_backends(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    for path, lst in _listeners(cfg):
        quic = lst.quic
        if quic is None or not is_valid(quic) or quic.raw_proxy is None:
            continue
        if is_valid(lst.backends) and lst.backends:
            yield Problem(
                f"{path}.backends",
                None,
                "not allowed with [listeners.quic.raw_proxy]: Mode B relays to raw_proxy.backend_addr",
                "remove the backends or the raw_proxy block",
            )


@rule(
    "Backend protocols must fit the listener: `tcp`/`tls` listeners take only `tcp` "
    "backends; `udp` listeners take `udp` or `tcp` (meaning the listener's own "
    "transport, UDP); HTTP listeners (`h1`, `h1s`, `quic`) take `tcp`, `h1`, `h2`, `h3`."
)
def _backend_protocols(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    for _, lst, path, be in _backends(cfg):
        if not is_valid(lst.protocol, be.protocol):
            continue
        if lst.protocol in _L4_PROTOCOLS and be.protocol != "tcp":
            yield Problem(
                f"{path}.protocol",
                be.protocol,
                f"a '{lst.protocol}' listener relays raw bytes: only tcp backends",
            )
        elif lst.protocol == "udp" and be.protocol not in ("udp", "tcp"):
            yield Problem(
                f"{path}.protocol",
                be.protocol,
                "a udp listener relays datagrams: only udp backends "
                "(or tcp, meaning the listener's transport)",
            )
        elif lst.protocol not in _L4_PROTOCOLS and lst.protocol != "udp" and be.protocol == "udp":
            yield Problem(f"{path}.protocol", be.protocol, "udp backends need a udp listener")


@rule("A `quic` listener serves one backend family: `tcp`/`h1`, `h2` or `h3`, not a mix.")
def _quic_one_family(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    for path, lst in _listeners(cfg):
        if lst.protocol != "quic" or not is_valid(lst.backends):
            continue
        families = {
            "h1" if b.protocol == "tcp" else b.protocol
            for b in lst.backends
            if is_valid(b) and is_valid(b.protocol)
        }
        if len(families) > 1:
            yield Problem(
                f"{path}.backends",
                None,
                "a quic listener cannot mix backend families: " + ", ".join(sorted(families)),
            )


@rule(
    "`tls_ca_path`, `tls_verify_hostname` and `tls_verify_peer` are only allowed on "
    "`h3` backends and on `tcp`/`h1`/`h2` backends with `tls = true`; `tls = true` is "
    "not allowed on `udp` backends."
)
def _backend_tls_keys(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    seen: set[str] = set()
    every = [(path, be) for _, _, path, be in _backends(cfg)]
    every += [
        (f"{cpath}.backends[{j}]", be)
        for cpath, cluster in _clusters(cfg)
        for j, be in enumerate(cluster.backends)
        if is_valid(be)
    ]
    for path, be in every:
        if path in seen:
            continue
        seen.add(path)
        if not is_valid(be.protocol, be.tls):
            continue
        if be.protocol == "udp" and be.tls:
            yield Problem(f"{path}.tls", True, "TLS is not available for udp backends")
            continue
        if be.protocol == "h3" or be.tls:
            continue
        for key in _BACKEND_TLS_KEYS:
            if f"{path}.{key}" in ctx.explicit:
                yield Problem(
                    f"{path}.{key}",
                    getattr(be, key),
                    f"only valid on h3 backends or with tls = true (protocol is '{be.protocol}')",
                    "set tls = true to connect to this backend over TLS",
                )


@rule(
    "An `h3` backend that verifies its peer (`tls_verify_peer = true`, the default) "
    "needs `tls_ca_path`; all `h3` backends of a listener share `tls_verify_peer` and "
    "`tls_ca_path` (one QUIC client configuration per listener)."
)
def _h3_verification(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    for lpath, lst in _listeners(cfg):
        if not is_valid(lst.backends):
            continue
        first: tuple[bool, str | None] | None = None
        for j, be in enumerate(lst.backends):
            if not is_valid(be) or be.protocol != "h3":
                continue
            if not is_valid(be.tls_verify_peer, be.tls_ca_path):
                continue
            path = f"{lpath}.backends[{j}]"
            if be.tls_verify_peer and be.tls_ca_path is None:
                yield Problem(
                    f"{path}.tls_ca_path",
                    None,
                    "required for an h3 backend when tls_verify_peer = true",
                    "set tls_ca_path, or tls_verify_peer = false (accepts any certificate)",
                )
            pair = (be.tls_verify_peer, be.tls_ca_path)
            if first is None:
                first = pair
            elif pair != first:
                yield Problem(
                    path,
                    None,
                    "h3 backends of one listener must share tls_verify_peer and tls_ca_path",
                )


@rule(
    "Drain jitter may not exceed the drain timeout: `runtime.drain_jitter_ms` <= "
    "`runtime.drain_timeout_ms`, and each listener's effective jitter (its own, else "
    "the runtime's, else a quarter of its drain timeout) <= its effective drain timeout."
)
def _drain_jitter(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    rt = cfg.runtime
    if not is_valid(rt) or not is_valid(rt.drain_timeout_ms, rt.drain_jitter_ms):
        return
    if rt.drain_jitter_ms is not None and rt.drain_jitter_ms > rt.drain_timeout_ms:
        yield Problem(
            "runtime.drain_jitter_ms",
            rt.drain_jitter_ms,
            f"exceeds runtime.drain_timeout_ms ({rt.drain_timeout_ms})",
        )
        return
    for path, lst in _listeners(cfg):
        if not is_valid(lst.drain_timeout_ms, lst.drain_jitter_ms):
            continue
        timeout, jitter = cfg.effective_drain(lst)
        if jitter <= timeout:
            continue
        if lst.drain_jitter_ms is not None:
            yield Problem(
                f"{path}.drain_jitter_ms",
                jitter,
                f"exceeds the listener's effective drain timeout ({timeout} ms)",
            )
        else:
            yield Problem(
                f"{path}.drain_timeout_ms",
                timeout,
                f"is below the inherited runtime.drain_jitter_ms ({jitter} ms)",
                "set drain_jitter_ms on this listener too",
            )


@rule("`runtime.xdp_enabled = true` requires `runtime.xdp_interface`.")
def _xdp_interface(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    rt = cfg.runtime
    if is_valid(rt) and rt.xdp_enabled is True and rt.xdp_interface is None:
        yield Problem(
            "runtime.xdp_interface",
            None,
            "required when xdp_enabled = true",
            'name the network interface, e.g. xdp_interface = "eth0"',
        )


@rule(
    "No two listeners (and neither `[passthrough].bind_addr` nor "
    "`observability.metrics_bind`) may bind the same host, port and transport; port 0 "
    "is exempt. TCP and UDP may share a port (e.g. `h1s` and `quic` on 443)."
)
def _duplicate_binds(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    seen: dict[tuple[str, int, str], str] = {}
    binds: list[tuple[str, str, str]] = []  # (key path, address, transport)
    for path, lst in _listeners(cfg):
        if is_valid(lst.address, lst.protocol):
            binds.append((f"{path}.address", lst.address, lst.transport))
    pt = cfg.passthrough
    if pt is not None and is_valid(pt) and is_valid(pt.bind_addr):
        binds.append(("passthrough.bind_addr", pt.bind_addr, "udp"))
    obs = cfg.observability
    if is_valid(obs) and obs.metrics_bind is not None and is_valid(obs.metrics_bind):
        binds.append(("observability.metrics_bind", obs.metrics_bind, "tcp"))
    for key, address, transport in binds:
        hp: HostPort = split_host_port(address, min_port=0)
        if hp.port == 0:
            continue
        ident = (*hp.key(), transport)
        if ident in seen:
            yield Problem(
                key, address, f"{transport.upper()} address already used by {seen[ident]}"
            )
        else:
            seen[ident] = key.rsplit(".", 1)[0]


@rule("Listener names are unique (a name is a metric label and the reload identity).")
def _duplicate_names(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for path, lst in _listeners(cfg):
        if not is_valid(lst.name):
            continue
        if lst.name in seen:
            both_defaulted = not {f"{path}.name", f"{seen[lst.name]}.name"} & ctx.explicit
            if both_defaulted and lst.port != 0:
                continue  # same address: reported by the duplicate-bind rule

            yield Problem(
                f"{path}.name",
                lst.name,
                f"duplicate listener name (also {seen[lst.name]})",
                "give each listener its own name",
            )
        else:
            seen[lst.name] = path


@rule(
    "A non-loopback `observability.metrics_bind` needs `admin.allow_non_loopback = true` "
    "and `admin.api_token_hash` (the original refused to boot; we refuse to load)."
)
def _admin_exposure(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    obs, admin = cfg.observability, cfg.admin
    if not is_valid(obs, admin) or obs.metrics_bind is None or not is_valid(obs.metrics_bind):
        return
    if not is_valid(admin.allow_non_loopback, admin.api_token_hash):
        return
    if is_loopback(split_host_port(obs.metrics_bind, min_port=0).host):
        return
    missing = []
    if admin.allow_non_loopback is not True:
        missing.append("admin.allow_non_loopback = true")
    if admin.api_token_hash is None:
        missing.append("admin.api_token_hash")
    if missing:
        yield Problem(
            "observability.metrics_bind",
            obs.metrics_bind,
            "non-loopback admin address needs " + " and ".join(missing),
            "bind 127.0.0.1, or set both keys in [admin]",
        )


@rule("`pool.per_peer_max` <= `pool.total_max`.")
def _pool_caps(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    pool = cfg.pool
    if not is_valid(pool) or not is_valid(pool.per_peer_max, pool.total_max):
        return
    if pool.per_peer_max > pool.total_max:
        yield Problem(
            "pool.per_peer_max",
            pool.per_peer_max,
            f"exceeds pool.total_max ({pool.total_max})",
        )


@rule(
    "Clusters: names are unique; a listener's `cluster` and every route's `cluster` "
    "name a `[[clusters]]` entry; a listener has `cluster` or inline `backends`, not "
    "both; routes only on `h1`, `h1s` and `quic`; a route has at most one of "
    "`path_exact`, `path_prefix`, `path_regex`, and `prefix_rewrite` only with "
    "`path_prefix`; `hash_key` only with `ring_hash` or `maglev`; header affinity "
    "needs `header_name`; cookie affinity only for HTTP listeners; an `h3` backend "
    "of a cluster that verifies its peer needs `tls_ca_path`."
)
def _clusters_and_routes(cfg: Config, ctx: BuildContext) -> Iterator[Problem]:
    names: dict[str, str] = {}
    for path, cluster in _clusters(cfg):
        if not is_valid(cluster.name):
            continue
        if cluster.name in names:
            yield Problem(f"{path}.name", cluster.name, f"already used by {names[cluster.name]}")
        else:
            names[cluster.name] = path
        if (
            cluster.hash_key is not None
            and is_valid(cluster.policy, cluster.hash_key)
            and cluster.policy not in ("ring_hash", "maglev")
        ):
            yield Problem(
                f"{path}.hash_key",
                cluster.hash_key,
                f"only used by ring_hash and maglev (policy is '{cluster.policy}')",
            )
        aff = cluster.affinity
        if aff is not None and is_valid(aff) and aff.mode == "header" and aff.header_name is None:
            yield Problem(f"{path}.affinity.header_name", None, 'required with mode = "header"')
        for j, be in enumerate(cluster.backends):
            if (
                is_valid(be)
                and be.protocol == "h3"
                and is_valid(be.tls_verify_peer, be.tls_ca_path)
                and be.tls_verify_peer
                and be.tls_ca_path is None
            ):
                yield Problem(
                    f"{path}.backends[{j}].tls_ca_path",
                    None,
                    "required for an h3 backend when tls_verify_peer = true",
                )
    clusters = _clusters_by_name(cfg)
    for lpath, lst in _listeners(cfg):
        if lst.cluster is not None and is_valid(lst.cluster):
            if lst.cluster not in names:
                yield Problem(
                    f"{lpath}.cluster", lst.cluster, "no [[clusters]] entry has this name"
                )
            if is_valid(lst.backends) and lst.backends:
                yield Problem(
                    f"{lpath}.cluster",
                    lst.cluster,
                    "a listener takes cluster or inline backends, not both",
                )
        if not is_valid(lst.routes, lst.protocol):
            continue
        http = lst.protocol in ("h1", "h1s", "quic")
        if lst.routes and not http:
            yield Problem(f"{lpath}.routes", None, f"not allowed on a '{lst.protocol}' listener")
            continue
        for k, route in enumerate(lst.routes):
            rpath = f"{lpath}.routes[{k}]"
            if not is_valid(route):
                continue
            if route.cluster not in names:
                yield Problem(
                    f"{rpath}.cluster", route.cluster, "no [[clusters]] entry has this name"
                )
            forms = [f for f in ("path_exact", "path_prefix", "path_regex") if getattr(route, f)]
            if len(forms) > 1:
                yield Problem(rpath, None, "only one of " + ", ".join(forms))
            if route.prefix_rewrite is not None and route.path_prefix is None:
                yield Problem(f"{rpath}.prefix_rewrite", route.prefix_rewrite, "needs path_prefix")
        if not http:
            for cpath, cluster in _clusters_of(lst, clusters):
                aff = cluster.affinity
                if aff is not None and is_valid(aff) and aff.mode == "cookie":
                    yield Problem(
                        f"{cpath}.affinity.mode",
                        "cookie",
                        f"cookie affinity needs an HTTP listener; {lpath} is '{lst.protocol}'",
                        'use mode = "source_ip" for L4 listeners',
                    )
