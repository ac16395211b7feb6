"""``expressgateway``: run, check or demo the gateway.

expressgateway CONFIG.toml         run the gateway with this config
expressgateway check CONFIG.toml   validate the config (binds nothing)
expressgateway demo                run the built-in demo on 127.0.0.1:8080
expressgateway --version
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from importlib import resources

from expressgateway import __version__
from expressgateway.config import Config, ConfigError, load_config, parse_config
from expressgateway.observability.logging import setup_logging
from expressgateway.runtime import loop as loops
from expressgateway.runtime.preflight import preflight

log = logging.getLogger("expressgateway")

EXIT_CONFIG = 2
EXIT_BOOT = 1

HELP = """\
ExpressGateway: an L4 + L7 load balancer and reverse proxy.

usage:
  expressgateway CONFIG.toml          run the gateway with CONFIG.toml
  expressgateway check CONFIG.toml    validate CONFIG.toml and exit (0 = valid);
                                      binds no port, starts nothing
  expressgateway demo                 run a built-in demo: a gateway on
                                      127.0.0.1:8080 in front of an embedded
                                      demo origin (try: curl -i http://127.0.0.1:8080/)
  expressgateway --version            print the version
  expressgateway --help               this text

environment:
  LB_LOG_FORMAT   json (default) | text | plain
  LB_LOG_LEVEL    debug | info (default) | warning | error   (RUST_LOG also read)
  EG_LOOP         uvloop (default when installed) | asyncio

signals: SIGTERM drains gracefully, SIGINT stops without the readiness settle.
docs: docs/configuration.md, docs/operations.md
"""


def _load(path: str, *, boot: bool = False) -> Config | None:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"expressgateway: invalid configuration {path}:", file=sys.stderr)
        for line in str(exc).splitlines():
            print(f"  {line}", file=sys.stderr)
        return None
    problems = preflight(cfg, mint=boot)
    if problems:
        print(f"expressgateway: invalid configuration {path}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return None
    return cfg


def cmd_check(path: str) -> int:
    cfg = _load(path)
    if cfg is None:
        return EXIT_CONFIG
    print(
        f"configuration OK: {path} ({len(cfg.listeners)} listener"
        f"{'s' if len(cfg.listeners) != 1 else ''})"
    )
    return 0


def serve(cfg: Config, *, demo_origin: tuple[str, int] | None = None) -> int:
    from expressgateway.runtime.supervisor import BootError, Supervisor

    setup_logging(cfg.observability.log_format, cfg.observability.log_level)
    sup = Supervisor(cfg)
    try:
        sup.bind()
    except BootError as exc:
        log.error("boot failed: %s", exc)
        print(f"expressgateway: {exc}", file=sys.stderr)
        return EXIT_BOOT

    async def main() -> int:
        origin = None
        if demo_origin is not None:
            from expressgateway.demo.origin import start_demo_origin

            origin = await start_demo_origin(*demo_origin)
            log.info("demo origin started", extra={"address": f"{demo_origin[0]}:{demo_origin[1]}"})
        try:
            return await sup.run()
        finally:
            if origin is not None:
                origin.close()

    return loops.run(main())


def cmd_demo() -> int:
    # The demo is for people at a terminal: readable logs unless asked otherwise.
    os.environ.setdefault("LB_LOG_FORMAT", "text")
    text = resources.files("expressgateway.demo").joinpath("demo.toml").read_text()
    try:
        cfg = parse_config(text, source="<built-in demo>")
    except ConfigError as exc:  # a bug in the shipped demo, never the user's fault
        print(f"expressgateway: built-in demo config is invalid: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        "ExpressGateway demo: gateway on http://127.0.0.1:8080/ -> demo origin on 127.0.0.1:8081;"
        " metrics on http://127.0.0.1:9090/metrics. Ctrl-C to stop.",
        file=sys.stderr,
    )
    return serve(cfg, demo_origin=("127.0.0.1", 8081))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0 if args else EXIT_CONFIG
    if args[0] in ("-V", "--version", "version"):
        print(f"expressgateway {__version__}")
        return 0
    if args[0] == "check":
        parser = argparse.ArgumentParser(prog="expressgateway check")
        parser.add_argument("config")
        return cmd_check(parser.parse_args(args[1:]).config)
    if args[0] == "demo":
        argparse.ArgumentParser(prog="expressgateway demo").parse_args(args[1:])
        return cmd_demo()
    parser = argparse.ArgumentParser(prog="expressgateway", usage=HELP)
    parser.add_argument("config")
    cfg = _load(parser.parse_args(args).config, boot=True)
    if cfg is None:
        return EXIT_CONFIG
    try:
        return serve(cfg)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    raise SystemExit(main())
