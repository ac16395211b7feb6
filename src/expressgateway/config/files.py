"""Checks on files a config refers to: resolve, stat, never read.

Whether a certificate parses or matches its key is the TLS layer's business;
here we only catch what an operator most often gets wrong: a wrong path, a
directory, an unreadable file, or a private key readable by others.
"""

from __future__ import annotations

import os
import stat

from expressgateway.config.schema import FileRule

__all__ = ["check", "resolve"]


def resolve(base_dir: str, path: str) -> str:
    """``path`` made absolute against ``base_dir`` (the config file's directory)."""
    return os.path.normpath(os.path.join(base_dir, path))


def check(resolved: str, rule: FileRule, *, written: str) -> list[tuple[str, str | None]]:
    """Problems with the file at ``resolved`` as (reason, suggestion) pairs."""
    where = "" if written == resolved else f" (resolved to {resolved})"
    try:
        st = os.stat(resolved)
    except FileNotFoundError:
        if rule.must_exist:
            return [(f"file not found{where}", None)]
        return []
    except OSError as exc:
        return [(f"cannot stat file{where}: {exc.strerror}", None)]
    if not stat.S_ISREG(st.st_mode):
        return [(f"not a regular file{where}", None)]
    if not os.access(resolved, os.R_OK):
        return [(f"file is not readable{where}", None)]
    mode = stat.S_IMODE(st.st_mode)
    if rule.private and mode & 0o077:
        return [
            (
                f"mode {mode:04o}, must be 0600 or stricter",
                f"chmod 600 {resolved}",
            )
        ]
    return []
