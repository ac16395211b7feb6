"""Command line: `python bench/run.py [--mode pinned|natural] [--rounds N] ...`."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from . import chart, report
from .procs import stop_all
from .proxies import DEFAULT_ORDER, EXTRA
from .runner import RunRecord, execute, log, prepare
from .scenarios import by_name
from .settings import RESULTS_DIR, RunOptions, make_mode

SMOKE_SCENARIOS = ["h1_1k"]
SMOKE_PROXIES = ["nginx", "expressgateway"]


def parse_args(argv: list[str] | None = None) -> RunOptions:
    names = list(by_name())
    ap = argparse.ArgumentParser(prog="bench/run.py", description=__doc__)
    ap.add_argument(
        "--mode",
        choices=["pinned", "natural"],
        default="pinned",
        help="pinned: proxy on core 0 with 1 worker, load+origin on core 1 (default); "
        "natural: all cores, natural worker counts",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run")
    ap.add_argument(
        "--scenarios", default=",".join(names), help=f"comma list of: {','.join(names)}"
    )
    ap.add_argument(
        "--proxies",
        default=",".join(DEFAULT_ORDER),
        help=f"comma list of: {','.join(DEFAULT_ORDER + EXTRA)} (caddy-static: caddy "
        "answering the HTTP/3 scenarios itself, the load client's ceiling)",
    )
    ap.add_argument(
        "--gateway-src",
        default="HEAD",
        help="git revision of our gateway to measure (its src/ is exported to a temp dir), "
        "or 'worktree' for the files on disk, uncommitted changes included (default HEAD)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    ap.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only re-render Markdown and PNG from a results JSON of an earlier run",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="one short round of h1_1k with nginx and ours (used by the test)",
    )
    args = ap.parse_args(argv)
    if args.render is not None:
        raise SystemExit(render_only(args.render, args.out))
    scenarios = _split(args.scenarios)
    proxies = _split(args.proxies)
    rounds, duration, warmup = args.rounds, args.duration, args.warmup
    if args.smoke:
        if args.scenarios == ap.get_default("scenarios"):
            scenarios = SMOKE_SCENARIOS
        if args.proxies == ap.get_default("proxies"):
            proxies = SMOKE_PROXIES
        rounds, duration, warmup = 1, min(duration, 2.0), min(warmup, 1.0)
    unknown = [s for s in scenarios if s not in names]
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(unknown)}")
    if rounds < 1 or duration <= 0:
        ap.error("--rounds must be >= 1 and --duration > 0")
    return RunOptions(
        mode=make_mode(args.mode),
        rounds=rounds,
        duration=duration,
        warmup=warmup,
        scenarios=scenarios,
        proxies=proxies,
        out_dir=args.out,
        smoke=args.smoke,
        gateway_src=args.gateway_src,
    )


def render_only(source: Path, out_dir: Path) -> int:
    results = json.loads(source.read_text())
    paths = report.write(results, out_dir)
    chart.write_png(results, out_dir / "latest.png")
    print(paths["md"].read_text())
    return 0


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    log(options.mode.describe())
    record = prepare(options)
    try:
        execute(record)
    finally:
        stop_all()
        if not record.finished:
            record.finished = time.time()
            if record.outcomes:
                log("interrupted: writing the partial results")
                _write(record, options)
    return _write(record, options)


def _write(record: RunRecord, options: RunOptions) -> int:
    results = report.build_results(record)
    paths = report.write(results, options.out_dir)
    png = chart.write_png(results, options.out_dir / "latest.png")
    print(paths["md"].read_text())
    log(
        f"wrote {paths['md']}, {paths['json']}"
        + (f", {png}" if png else " (no matplotlib: no PNG)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
