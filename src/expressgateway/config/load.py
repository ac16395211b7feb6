"""Entry points: read a TOML file or text into a validated :class:`Config`."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Any

from expressgateway.config.build import BuildContext, build_section, is_valid
from expressgateway.config.errors import ConfigError, Problem
from expressgateway.config.model import Config, ListenerConfig
from expressgateway.config.rules import run_rules

__all__ = ["config_from_dict", "load_config", "parse_config"]

_TOML_POSITION = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate the config file at ``path``.

    Raises :class:`ConfigError` listing every problem, including an
    unreadable file or a TOML syntax error (with line and column).
    """
    source = os.path.abspath(os.fspath(path))
    try:
        with open(source, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(
            [Problem(source, None, f"cannot read config file: {exc.strerror or exc}")], source
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(source, None, f"not UTF-8 (invalid byte at offset {exc.start})")], source
        ) from None
    return parse_config(text, source=source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML ``text``.

    ``source`` names where the text came from. When it is a file path,
    relative paths inside the config resolve against that file's directory;
    otherwise (``"<string>"``, anything starting with ``<``) against the
    current directory. Referenced files are stat-ed, never read.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(source, None, _toml_reason(exc))], source) from None
    return config_from_dict(raw, source=source, text=text)


def config_from_dict(raw: dict[str, Any], *, source: str = "<string>", text: str = "") -> Config:
    """Validate an already-decoded TOML document (what ``tomllib.loads`` returns)."""
    is_path = not source.startswith("<")
    base_dir = os.path.dirname(os.path.abspath(source)) if is_path else os.getcwd()
    ctx = BuildContext(base_dir=base_dir)
    cfg = build_section(Config, raw, "", ctx, extra={"source": source, "text": text})
    cfg = _with_default_names(cfg, ctx)
    run_rules(cfg, ctx)
    if ctx.problems:
        raise ConfigError(ctx.problems, source)
    return dataclasses.replace(cfg, explicit_keys=frozenset(ctx.explicit))


def _toml_reason(exc: tomllib.TOMLDecodeError) -> str:
    match = _TOML_POSITION.match(str(exc))
    if match is None:
        return f"invalid TOML: {exc}"
    msg = match["msg"]
    return f"invalid TOML at line {match['line']}, column {match['col']}: {msg}"


def _with_default_names(cfg: Config, ctx: BuildContext) -> Config:
    """Disambiguate defaulted names of a TCP and a UDP listener sharing an address.

    A listener's name defaults to its address. ``h1s`` and ``quic`` on the same
    port is a normal pairing (Alt-Svc), so a UDP listener whose defaulted name
    collides with another listener's name becomes ``<address>/udp``.
    """
    if not is_valid(cfg.listeners):
        return cfg
    listeners = list(cfg.listeners)
    names = [lst.name for lst in listeners if is_valid(lst) and is_valid(lst.name)]
    changed = False
    for i, lst in enumerate(listeners):
        if not is_valid(lst) or not is_valid(lst.name, lst.protocol):
            continue
        if f"listeners[{i}].name" in ctx.explicit:
            continue
        if lst.transport == "udp" and names.count(lst.name) > 1:
            listeners[i] = _renamed(lst, f"{lst.name}/udp")
            changed = True
    return dataclasses.replace(cfg, listeners=tuple(listeners)) if changed else cfg


def _renamed(lst: ListenerConfig, name: str) -> ListenerConfig:
    return dataclasses.replace(lst, name=name)
