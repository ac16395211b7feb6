"""What a reload may change: the difference between two configs, classified
by the schema's reload classes.

Every setting is ``swappable`` (applied in every worker without dropping a
connection) or ``restart`` (a listener's address or protocol, the worker
count, process-wide settings: they need a new process). A reload whose
new file changes anything of the second kind is refused as a whole, with
each such key named: nothing is half applied, and nothing is ignored
silently.
"""

from __future__ import annotations

from typing import Any

from expressgateway.config import Config
from expressgateway.config.schema import section_specs
from expressgateway.observability.metrics import REGISTRY, Registry


def restart_required(old: Config, new: Config) -> list[str]:
    """Key paths whose change needs a restart (empty: the reload may go on)."""
    found: list[str] = []
    if [lc.name for lc in old.listeners] != [lc.name for lc in new.listeners]:
        found.append("listeners (added, removed or reordered)")
        return found
    _walk(old, new, "", "restart", found)
    return found


def _walk(old: Any, new: Any, path: str, inherited: str, found: list[str]) -> None:
    for spec in section_specs(type(old)):
        if spec.meta.derived and spec.name not in ("host", "port"):
            continue
        reload = spec.meta.reload or inherited
        key = f"{path}.{spec.name}" if path else spec.name
        a, b = getattr(old, spec.name), getattr(new, spec.name)
        if a == b:
            continue
        if spec.section is None or a is None or b is None:
            if reload == "restart":
                found.append(key)
            continue
        if spec.is_array:
            if reload == "swappable":
                continue  # a swappable array (backends, routes, clusters) swaps whole
            if len(a) != len(b):
                found.append(key)
                continue
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                _walk(x, y, f"{key}[{i}]", reload, found)
        else:
            _walk(a, b, key, reload, found)


def prune_series(cfg: Config, registry: Registry = REGISTRY) -> int:
    """After a reload: drop the metric series of backends, clusters and
    routes the new config no longer has (they would otherwise be exported,
    frozen, forever). A host-named backend keeps the series of the
    addresses it resolves to (``host/addr:port``). Returns how many went."""
    from expressgateway.upstream.cluster import endpoint_of

    backends = [b for c in cfg.clusters for b in c.backends]
    backends += [b for lc in cfg.listeners for b in lc.backends]
    origins = {endpoint_of(b).origin for b in backends}

    def backend_kept(value: str) -> bool:
        if value in origins or not value:
            return True
        host, slash, rest = value.partition("/")
        return bool(slash) and f"{host}:{rest.rpartition(':')[2]}" in origins

    clusters = {c.name for c in cfg.clusters} | {lc.name for lc in cfg.listeners}
    routes = {""} | {r.name for lc in cfg.listeners for r in lc.routes if r.name}
    dropped = registry.forget("backend", backend_kept)
    dropped += registry.forget("cluster", clusters.__contains__)
    dropped += registry.forget("route", routes.__contains__)
    return dropped


#: keys whose values are secrets (shown as "<redacted>" by /config)
SECRET_KEYS = frozenset({"api_token_hash"})


def redacted(cfg: Config) -> dict[str, Any]:
    """The configuration as JSON-able data, without its secrets or raw text."""
    return _plain(cfg)  # type: ignore[no-any-return]


def _plain(obj: Any) -> Any:
    if isinstance(obj, tuple | list):
        return [_plain(x) for x in obj]
    if isinstance(obj, frozenset):
        return None
    specs = section_specs(type(obj)) if hasattr(type(obj), "__dataclass_fields__") else None
    if specs is None:
        return obj
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.meta.derived:
            continue
        value = getattr(obj, spec.name)
        if spec.name in SECRET_KEYS and value is not None:
            out[spec.name] = "<redacted>"
        else:
            out[spec.name] = _plain(value)
    return out
