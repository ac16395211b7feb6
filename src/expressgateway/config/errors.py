"""What a bad configuration looks like to the operator: a list of problems.

Validation never stops at the first mistake. Every problem found in one pass
(unknown keys, wrong types, out-of-range values, missing files, cross-field
rules) is collected and raised together as one :class:`ConfigError`, whose
``str()`` is one line per problem::

    listeners[0].backends[1].wieght = 3: unknown key (did you mean 'weight'?)
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConfigError", "Problem", "render_value", "toml_type_name"]

_MAX_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a configuration.

    ``key`` is the full key path (``listeners[0].tls.key_path``), or the
    config source for file-level problems (unreadable file, TOML syntax).
    ``value`` is the offending value as written; ``None`` means there is no
    value to show (a missing key, a file-level problem), since TOML has no
    null. ``suggestion`` is a short hint shown in parentheses.
    """

    key: str
    value: object
    reason: str
    suggestion: str | None = None

    def __str__(self) -> str:
        head = self.key if self.value is None else f"{self.key} = {render_value(self.value)}"
        tail = f" ({self.suggestion})" if self.suggestion else ""
        return f"{head}: {self.reason}{tail}"


class ConfigError(Exception):
    """A configuration was rejected; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem], source: str = "<string>") -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[Problem], str]]:
        # keeps problems intact across processes (workers report to the supervisor)
        return (ConfigError, (self.problems, self.source))


def toml_type_name(value: object) -> str:
    """The TOML name of a decoded value's type (``bool`` is not an integer here)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return "datetime"
    return type(value).__name__


def render_value(value: object) -> str:
    """Render a decoded TOML value the way it would be written in the file."""
    text = _render(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    return str(value)
