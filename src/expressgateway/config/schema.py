"""The declarative schema: every config key is a dataclass field with metadata.

A field declared with :func:`setting` carries its doc text, default, range,
reload class and optional feature tag. The loader (``build.py``) validates
against this metadata, ``docs.py`` renders ``docs/configuration.md`` from it,
and :func:`iter_settings` exposes it to anything else (e.g. the reload diff).

Reload classes (from the original's SIGHUP contract):

* ``"swappable"``: a SIGHUP applies the change to new connections;
* ``"restart"``: a SIGHUP logs the change as restart-required and ignores it.

A field with ``reload=None`` inherits the class of the section that holds it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from expressgateway.config.checks import Check

__all__ = [
    "FileRule",
    "Range",
    "Reload",
    "Setting",
    "SettingInfo",
    "SettingSpec",
    "feature_uses",
    "iter_settings",
    "section_specs",
    "setting",
]

Reload = Literal["swappable", "restart"]

_META_KEY = "expressgateway.setting"


@dataclass(frozen=True, slots=True)
class Range:
    """An inclusive integer range; ``or_zero`` also admits 0 as an off switch."""

    min: int
    max: int
    or_zero: bool = False

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        return (self.or_zero and value == 0) or self.min <= value <= self.max

    def __str__(self) -> str:
        text = f"{_num(self.min)}..={_num(self.max)}"
        return f"0 or {text}" if self.or_zero else text


@dataclass(frozen=True, slots=True)
class FileRule:
    """A path setting: resolved against the config file's directory, then stat-ed.

    ``must_exist``: a missing file is a problem. ``private``: if the file exists
    its mode must grant nothing to group or other (0600 or stricter).
    """

    must_exist: bool = True
    private: bool = False


@dataclass(frozen=True, slots=True)
class Setting:
    """Metadata of one config key (or one derived, non-key field)."""

    doc: str
    reload: Reload | None = None
    range: Range | None = None
    check: Check | None = None
    file: FileRule | None = None
    #: a feature tag reported by ``Config.features_in_use()`` when the key is written
    feature: str | None = None
    #: feature tags keyed by value (``{"h2": "h2_backend"}``), whether written or defaulted
    feature_by_value: tuple[tuple[object, str], ...] = ()
    #: how the default reads in the docs, when the literal default says too little
    default_doc: str | None = None
    #: True for keys the original did not have
    new: bool = False
    min_items: int | None = None
    unique: bool = False
    #: not a TOML key: computed from another field (``(source_field, fn)``) or given by the loader
    derived: bool = False
    derive: tuple[str, Callable[[Any], Any]] | None = None
    #: when the key is absent, compute it from another field (``(source_field, fn)``)
    derive_default: tuple[str, Callable[[Any], Any]] | None = None


def setting(
    doc: str,
    *,
    default: Any = dataclasses.MISSING,
    factory: Callable[[], Any] | None = None,
    reload: Reload | None = None,
    range: Range | None = None,
    check: Check | None = None,
    file: FileRule | None = None,
    feature: str | None = None,
    feature_by_value: Mapping[object, str] | None = None,
    default_doc: str | None = None,
    new: bool = False,
    min_items: int | None = None,
    unique: bool = False,
    derived: bool = False,
    derive: tuple[str, Callable[[Any], Any]] | None = None,
    derive_default: tuple[str, Callable[[Any], Any]] | None = None,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """Declare a config field: a ``dataclasses.field`` carrying a :class:`Setting`."""
    meta = Setting(
        doc=doc,
        reload=reload,
        range=range,
        check=check,
        file=file,
        feature=feature,
        feature_by_value=tuple((feature_by_value or {}).items()),
        default_doc=default_doc,
        new=new,
        min_items=min_items,
        unique=unique,
        derived=derived or derive is not None,
        derive=derive,
        derive_default=derive_default,
    )
    metadata = {_META_KEY: meta}
    if factory is not None:
        return dataclasses.field(
            default_factory=factory, metadata=metadata, repr=repr, compare=compare
        )
    return dataclasses.field(default=default, metadata=metadata, repr=repr, compare=compare)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """A field of a config section with its resolved type and metadata."""

    name: str
    type: Any
    meta: Setting
    field: dataclasses.Field[Any]

    @property
    def has_default(self) -> bool:
        return (
            self.field.default is not dataclasses.MISSING
            or self.field.default_factory is not dataclasses.MISSING
        )

    def default(self) -> Any:
        """The default value (calls the factory); only if ``has_default``."""
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default

    @property
    def required(self) -> bool:
        return not self.has_default and self.meta.derive_default is None

    @property
    def section(self) -> type[Any] | None:
        """The section class this field holds (directly, optionally or as an array)."""
        inner = unwrap_optional(self.type)
        if typing.get_origin(inner) is tuple:
            inner = typing.get_args(inner)[0]
        return inner if isinstance(inner, type) and dataclasses.is_dataclass(inner) else None

    @property
    def is_array(self) -> bool:
        return typing.get_origin(unwrap_optional(self.type)) is tuple


_SPECS: dict[type[Any], tuple[SettingSpec, ...]] = {}


def section_specs(cls: type[Any]) -> tuple[SettingSpec, ...]:
    """The fields of a section class, in declaration order, with resolved types."""
    cached = _SPECS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls, include_extras=False)
    specs = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META_KEY)
        if not isinstance(meta, Setting):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        specs.append(SettingSpec(name=f.name, type=hints[f.name], meta=meta, field=f))
    _SPECS[cls] = result = tuple(specs)
    return result


def unwrap_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One key as the docs and the reload diff see it."""

    #: key path with ``[]`` for arrays: ``listeners[].backends[].weight``
    path: str
    #: the TOML table heading of the section: ``[[listeners.backends]]``
    section: str
    spec: SettingSpec
    #: effective reload class (inherited from enclosing sections when not set)
    reload: Reload


def iter_settings(root: type[Any]) -> Iterator[SettingInfo]:
    """Every TOML key under ``root`` (depth first, declaration order)."""
    yield from _iter(root, "", "", "restart")


def _iter(cls: type[Any], path: str, heading: str, inherited: Reload) -> Iterator[SettingInfo]:
    for spec in section_specs(cls):
        if spec.meta.derived:
            continue
        reload = spec.meta.reload or inherited
        key = f"{path}.{spec.name}" if path else spec.name
        yield SettingInfo(path=key, section=heading, spec=spec, reload=reload)
        sub = spec.section
        if sub is not None:
            sub_heading_name = f"{_strip_brackets(heading)}.{spec.name}".lstrip(".")
            sub_heading = f"[[{sub_heading_name}]]" if spec.is_array else f"[{sub_heading_name}]"
            yield from _iter(sub, key + ("[]" if spec.is_array else ""), sub_heading, reload)


def _strip_brackets(heading: str) -> str:
    return heading.strip("[]")


def feature_uses(obj: Any, explicit: frozenset[str], path: str = "") -> list[tuple[str, str]]:
    """(feature, key path) for every feature-tagged key in use under ``obj``.

    A key tagged with ``feature`` counts when it is written in the file
    (``explicit`` holds the written key paths); one tagged by value counts
    whenever its value (written or default) maps to a feature.
    """
    found: list[tuple[str, str]] = []
    for spec in section_specs(type(obj)):
        if spec.meta.derived:
            continue
        key = f"{path}.{spec.name}" if path else spec.name
        value = getattr(obj, spec.name)
        if spec.meta.feature is not None and key in explicit:
            found.append((spec.meta.feature, key))
        for match, feature in spec.meta.feature_by_value:
            if value == match and type(value) is type(match):
                found.append((feature, key))
        if spec.section is None or value is None:
            continue
        if spec.is_array:
            for i, item in enumerate(value):
                found.extend(feature_uses(item, explicit, f"{key}[{i}]"))
        else:
            found.extend(feature_uses(value, explicit, key))
    return found


def _num(n: int) -> str:
    """An integer, with ``_`` thousands separators (valid TOML) from 10_000 up."""
    return f"{n:_}" if abs(n) >= 10_000 else str(n)
