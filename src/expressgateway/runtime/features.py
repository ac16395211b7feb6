"""Which optional features this build serves. Modules that implement a
feature add its name on import; the supervisor logs, once at boot, every
configured feature that is not active yet."""

from __future__ import annotations

ACTIVE: set[str] = set()


def activate(*names: str) -> None:
    ACTIVE.update(names)
