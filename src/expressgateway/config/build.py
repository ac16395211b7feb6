"""Build section dataclasses from decoded TOML, collecting every problem.

The builder never stops early: a key that fails its check is replaced by
:data:`INVALID` and building continues, so one pass reports all unknown keys,
wrong types and out-of-range values. Cross-field rules then run on the
partial snapshot (skipping anything :data:`INVALID`). A snapshot containing
:data:`INVALID` never leaves the loader: any problem raises ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from expressgateway.config import files
from expressgateway.config.checks import CheckFailed
from expressgateway.config.errors import Problem, toml_type_name
from expressgateway.config.model import Config
from expressgateway.config.schema import (
    Setting,
    iter_settings,
    section_specs,
    unwrap_optional,
)

__all__ = ["INVALID", "BuildContext", "build_section", "is_valid", "join"]


class _Invalid:
    """Placeholder for a value that failed validation."""

    _instance: _Invalid | None = None

    def __new__(cls) -> _Invalid:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<invalid>"


#: Stands in for a value that failed validation (typed Any so it fits any field).
INVALID: Final[Any] = _Invalid()


def is_valid(*values: object) -> bool:
    """True when none of ``values`` is :data:`INVALID`."""
    return all(v is not INVALID for v in values)


def join(path: str, name: str) -> str:
    """Key path of ``name`` inside ``path``."""
    return f"{path}.{name}" if path else name


@dataclass(slots=True)
class BuildContext:
    """State of one load: where relative paths resolve, what went wrong, what was written."""

    base_dir: str
    problems: list[Problem] = field(default_factory=list)
    explicit: set[str] = field(default_factory=set)

    def problem(self, key: str, value: object, reason: str, suggestion: str | None = None) -> Any:
        """Record a problem; returns :data:`INVALID` for convenient ``return``."""
        self.problems.append(Problem(key, value, reason, suggestion))
        return INVALID


def build_section(
    cls: type[Any],
    raw: object,
    path: str,
    ctx: BuildContext,
    extra: Mapping[str, object] | None = None,
) -> Any:
    """Build ``cls`` from a decoded TOML table; :data:`INVALID` if ``raw`` is not a table.

    ``extra`` supplies derived fields that have no ``derive`` function (source, text).
    """
    if not isinstance(raw, dict):
        return _type_problem(ctx, path or "<root>", raw, "table")
    specs = section_specs(cls)
    keys = {s.name: s for s in specs if not s.meta.derived}
    for key, value in raw.items():
        if key not in keys:
            ctx.problem(join(path, key), value, "unknown key", _suggest_key(cls, key))
    kwargs: dict[str, Any] = {}
    for spec in specs:
        if spec.meta.derived:
            continue
        key_path = join(path, spec.name)
        if spec.name in raw:
            ctx.explicit.add(key_path)
            kwargs[spec.name] = _convert(spec.type, raw[spec.name], key_path, spec.meta, ctx)
        elif spec.meta.derive_default is not None:
            continue  # computed below, once its source field is known
        elif spec.has_default:
            kwargs[spec.name] = spec.default()
        else:
            kwargs[spec.name] = ctx.problem(key_path, None, "missing required key")
    for spec in specs:
        derive = spec.meta.derive
        if derive is None and spec.meta.derive_default is not None and spec.name not in raw:
            derive = spec.meta.derive_default
        if derive is not None:
            source, fn = derive
            src = kwargs[source]
            kwargs[spec.name] = fn(src) if is_valid(src) else INVALID
        elif spec.meta.derived:
            kwargs[spec.name] = (extra or {}).get(spec.name, spec.default())
    return cls(**kwargs)


def _convert(tp: Any, value: object, path: str, meta: Setting, ctx: BuildContext) -> Any:
    tp = unwrap_optional(tp)
    if dataclasses.is_dataclass(tp):
        assert isinstance(tp, type)
        return build_section(tp, value, path, ctx)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return _convert_array(typing.get_args(tp)[0], value, path, meta, ctx)
    if tp is bool:
        if not isinstance(value, bool):
            return _type_problem(ctx, path, value, "boolean")
        return value
    if tp is int:
        return _convert_int(value, path, meta, ctx)
    if tp is str or origin is Literal:
        return _convert_str(tp, value, path, meta, ctx)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def _convert_array(elem: Any, value: object, path: str, meta: Setting, ctx: BuildContext) -> Any:
    is_table = dataclasses.is_dataclass(elem)
    if not isinstance(value, list):
        if is_table and isinstance(value, dict):
            heading = re.sub(r"\[\d+\]", "", path)
            return ctx.problem(
                path, value, "expected array of tables, got table", f"write [[{heading}]]"
            )
        return _type_problem(ctx, path, value, "array of tables" if is_table else "array")
    if meta.min_items is not None and len(value) < meta.min_items:
        return ctx.problem(path, value, f"needs at least {meta.min_items} item(s)")
    items = tuple(_convert(elem, v, f"{path}[{i}]", meta, ctx) for i, v in enumerate(value))
    if meta.unique:
        seen: set[object] = set()
        for i, item in enumerate(items):
            if is_valid(item) and item in seen:
                return ctx.problem(f"{path}[{i}]", item, "duplicate item")
            seen.add(item)
    return items


def _convert_int(value: object, path: str, meta: Setting, ctx: BuildContext) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        hint = None
        if isinstance(value, str) and value.strip().lstrip("-").replace("_", "").isdigit():
            hint = f"drop the quotes: {value.strip()}"
        return _type_problem(ctx, path, value, "integer", hint)
    if meta.range is not None and value not in meta.range:
        return ctx.problem(path, value, f"out of range (allowed {meta.range})")
    return value


def _convert_str(tp: Any, value: object, path: str, meta: Setting, ctx: BuildContext) -> Any:
    if not isinstance(value, str):
        hint = None
        if isinstance(value, (bool, int, float)) and typing.get_origin(tp) is Literal:
            hint = f'quote it: "{value}"'
        return _type_problem(ctx, path, value, "string", hint)
    result = value
    if meta.check is not None:
        try:
            result = meta.check(value)
        except CheckFailed as exc:
            return ctx.problem(path, value, exc.reason, exc.suggestion)
    if typing.get_origin(tp) is Literal:
        choices = [str(c) for c in typing.get_args(tp)]
        if result not in choices:
            close = difflib.get_close_matches(result, choices, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else None
            return ctx.problem(path, value, "expected one of " + ", ".join(choices), hint)
    if meta.file is not None:
        resolved = files.resolve(ctx.base_dir, result)
        for reason, suggestion in files.check(resolved, meta.file, written=value):
            ctx.problem(path, value, reason, suggestion)
            result = INVALID
        if is_valid(result):
            result = resolved
    return result


def _type_problem(
    ctx: BuildContext, path: str, value: object, expected: str, hint: str | None = None
) -> Any:
    return ctx.problem(path, value, f"expected {expected}, got {toml_type_name(value)}", hint)


def _suggest_key(cls: type[Any], key: str) -> str | None:
    names = [s.name for s in section_specs(cls) if not s.meta.derived]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    homes = _key_homes().get(key)
    if homes:
        return f"'{key}' belongs in {' or '.join(homes)}"
    return None


@functools.cache
def _key_homes() -> dict[str, tuple[str, ...]]:
    """Key name -> section headings where it is valid, for misplaced-key hints."""
    homes: dict[str, list[str]] = {}
    for info in iter_settings(Config):
        homes.setdefault(info.spec.name, []).append(info.section or "the top level")
    return {k: tuple(dict.fromkeys(v)) for k, v in homes.items()}
