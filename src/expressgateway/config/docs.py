"""Render ``docs/configuration.md`` from the schema.

Regenerate with::

    python -m expressgateway.config.docs > docs/configuration.md

A unit test fails when the committed file and :func:`render_markdown` differ.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import typing
from typing import Any, Literal

from expressgateway.config.model import Config
from expressgateway.config.rules import RULES
from expressgateway.config.schema import SettingInfo, SettingSpec, iter_settings, unwrap_optional

__all__ = ["EXAMPLE", "render_markdown"]

#: The example in the docs; a unit test checks that it loads.
EXAMPLE = """\
# An HTTP/1.1 front with two backends, an L4 TCP relay, and a loopback admin endpoint.
[[listeners]]
name = "web"
address = "0.0.0.0:8080"
protocol = "h1"

[listeners.http]
header_timeout_ms = 10000
max_request_body_bytes = 10485760

[[listeners.backends]]
address = "127.0.0.1:3000"

[[listeners.backends]]
address = "app.internal:3001"
protocol = "h2"
weight = 2

[[listeners]]
name = "postgres"
address = "[::]:5433"
protocol = "tcp"

[[listeners.backends]]
address = "10.0.0.5:5432"

[runtime]
drain_timeout_ms = 30000

[observability]
metrics_bind = "127.0.0.1:9090"

[pool]
per_peer_max = 16
"""

_INTRO = """\
# Configuration reference

<!-- Generated from src/expressgateway/config/model.py by
     `python -m expressgateway.config.docs > docs/configuration.md`. Do not edit. -->

ExpressGateway reads one TOML file: `expressgateway gateway.toml`. The schema keeps
the key names, defaults and ranges of the original (Rust) ExpressGateway, so a
config written for it loads unchanged; keys marked **new** are ours.

Loading is strict and reports everything at once:

- unknown or misspelled keys are rejected at every level, with a suggestion when
  a known key is close;
- wrong types are rejected (`"3"` is not an integer, `true` is not `1`);
- every problem in the file is listed in one error, one line each, with the full
  key path, for example
  `listeners[0].backends[1].wieght = 3: unknown key (did you mean 'weight'?)`.

Relative file paths resolve against the directory of the config file; the loaded
snapshot keeps absolute paths. Referenced certificates and keys must exist and be
readable when the config loads, and private keys must have mode 0600 or stricter.
Addresses are `host:port`; IPv6 literals go in brackets (`[::1]:8080`).
"""

_RELOAD = """\
## Reload classes

On SIGHUP the file is read and validated again; a bad file keeps the running
config. Each key has a reload class:

- **swappable**: applied on reload; connections accepted afterwards use the new
  value, existing ones keep the snapshot they started with;
- **restart**: a change is logged as restart-required and not applied.

A listener is identified by its name (which defaults to its address), so
adding, removing or renaming a listener needs a restart.
"""

_FEATURES = """\
## Feature tags

Some keys belong to features that may not be active in this build yet. At boot
the gateway logs, once, each configured feature that is not active. The tags:
"""


_DIFFERENCES = """\
## Differences from the original

Every original key keeps its name, type and default. Where we differ:

- **Ranges where the original had none.** `[listeners.h2_security]`, `weight`,
  `max_age`, the WebSocket and gRPC limits, `ticket_rotation_*`,
  `dgram_queue_cap`, `max_relay_streams`, `flow_idle_timeout_ms` and the
  upper bounds of "> 0" timeouts now have documented ranges, chosen wide
  enough for any sane value.
- **Backend TLS.** The original rejected `tls_*` keys on anything but `h3`
  backends because it had no TLS for HTTP/1.1 or HTTP/2 upstreams. The new
  `tls = true` adds it, and the `tls_*` keys are accepted with it.
- **Checks moved from boot to load.** The admin exposure rule, the
  `api_token_hash` format, the Mode B `backend_addr` format and the shared
  verification of `h3` backends were checked when the original started; here
  they fail the load, so `expressgateway check` finds them too.
- **Files are checked at load**: certificates and keys must exist, and private
  keys must be 0600 or stricter (the original's release builds also refused
  wider modes, at boot).
- **New keys** (marked **new** above): listener `name`, the `udp` listener
  protocol with `[listeners.udp]`, backend `tls`, TLS `alpn` and
  `session_tickets`, the HTTP size limits and forwarding-header switches,
  `workers`, `tcp_backlog`, `accept_backoff_max_ms`, `[pool]` (documented
  but never parsed by the original), `access_log`, `log_format` and
  `log_level`.
"""


def render_markdown() -> str:
    """The whole ``docs/configuration.md``."""
    infos = list(iter_settings(Config))
    parts = [_INTRO, "## Example\n\n```toml\n" + EXAMPLE + "```\n", _RELOAD]
    parts.append(_render_features(infos))
    parts.append("## Sections\n")
    for heading, cls, members in _sections(infos):
        parts.append(_render_section(heading, cls, members))
    parts.append(_render_rules())
    parts.append(_DIFFERENCES)
    return "\n".join(parts)


def _sections(infos: list[SettingInfo]) -> list[tuple[str, type[Any], list[SettingInfo]]]:
    """Group keys by section, in schema order, with the class each section is."""
    classes: dict[str, type[Any]] = {"": Config}
    for info in infos:
        sub = info.spec.section
        if sub is not None:
            name = f"{info.section.strip('[]')}.{info.spec.name}".lstrip(".")
            classes[f"[[{name}]]" if info.spec.is_array else f"[{name}]"] = sub
    grouped: dict[str, list[SettingInfo]] = {}
    for info in infos:
        grouped.setdefault(info.section, []).append(info)
    return [(h, classes[h], grouped[h]) for h in grouped]


def _render_section(heading: str, cls: type[Any], members: list[SettingInfo]) -> str:
    title = f"`{heading}`" if heading else "Top level"
    lines = [f"### {title}", "", _doc(cls), ""]
    lines.append("| Key | Type | Default | Allowed | Reload | Description |")
    lines.append("|---|---|---|---|---|---|")
    for info in members:
        spec = info.spec
        desc = spec.meta.doc
        if spec.meta.new:
            desc = "**new** " + desc
        if spec.meta.feature:
            desc += f" Feature: `{spec.meta.feature}`."
        for value, feature in spec.meta.feature_by_value:
            desc += f" Feature `{feature}` when `{_literal(value)}`."
        cells = [
            f"`{spec.name}`",
            _type_label(spec),
            _default_label(spec),
            _allowed_label(spec),
            info.reload,
            desc,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _render_features(infos: list[SettingInfo]) -> str:
    uses: dict[str, list[str]] = {}
    for info in infos:
        meta = info.spec.meta
        if meta.feature:
            uses.setdefault(meta.feature, []).append(f"`{info.path}` present")
        for value, feature in meta.feature_by_value:
            uses.setdefault(feature, []).append(f"`{info.path} = {_literal(value)}`")
    lines = [_FEATURES]
    for feature in sorted(uses):
        lines.append(f"- `{feature}`: " + ", ".join(uses[feature]))
    return "\n".join(lines) + "\n"


def _render_rules() -> str:
    lines = ["## Cross-field rules", "", "Checked after every key is valid on its own:", ""]
    lines.extend(f"- {r.doc}" for r in RULES)
    return "\n".join(lines) + "\n"


def _doc(cls: type[Any]) -> str:
    return " ".join(inspect.cleandoc(cls.__doc__ or "").split())


def _type_label(spec: SettingSpec) -> str:
    tp = unwrap_optional(spec.type)
    if spec.section is not None:
        return "array of tables" if spec.is_array else "table"
    if typing.get_origin(tp) is tuple:
        base, detail = _scalar_label(typing.get_args(tp)[0], spec)
        return f"array of {base}s" + (f" ({detail})" if detail else "")
    base, detail = _scalar_label(tp, spec)
    return base + (f" ({detail})" if detail else "")


def _scalar_label(tp: Any, spec: SettingSpec) -> tuple[str, str | None]:
    if tp is bool:
        return "boolean", None
    if tp is int:
        return "integer", None
    if spec.meta.file is not None:
        return "string", "file path"
    if spec.meta.check is not None and typing.get_origin(tp) is not Literal:
        return "string", spec.meta.check.label
    return "string", None


def _default_label(spec: SettingSpec) -> str:
    if spec.meta.default_doc is not None:
        return spec.meta.default_doc
    if spec.required:
        return "**required**"
    value = spec.default()
    if value is None:
        return "absent" if spec.section is not None else "unset"
    if dataclasses.is_dataclass(value):
        return "all defaults"
    return f"`{_literal(value)}`"


def _allowed_label(spec: SettingSpec) -> str:
    tp = unwrap_optional(spec.type)
    if typing.get_origin(tp) is tuple:
        elem = typing.get_args(tp)[0]
        extra = []
        if spec.meta.min_items:
            extra.append(f"at least {spec.meta.min_items}")
        if spec.meta.unique:
            extra.append("no duplicates")
        if typing.get_origin(elem) is Literal:
            extra.insert(0, "items from " + _choices(elem))
        return "; ".join(extra)
    if typing.get_origin(tp) is Literal:
        return _choices(tp)
    if spec.meta.range is not None:
        return str(spec.meta.range)
    return ""


def _choices(tp: Any) -> str:
    return ", ".join(f"`{c}`" for c in typing.get_args(tp))


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
