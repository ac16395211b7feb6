"""The interleaved loop: for each round, each scenario, each proxy in turn (A B C A B C ...)."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .certs import make_cert
from .loadgen import LoadError
from .origin import origin
from .procs import Managed, stop, wait_port_free
from .proxies import build
from .proxies.base import Context, Front, Proxy, ProxyStartError, last_lines
from .proxies.gateway import ExpressGateway, export_source
from .scenarios import Env, Measurement, Scenario, by_name
from .settings import ADMIN_PORT_OFFSET, HOST, RunOptions, proxy_port


@dataclass
class Outcome:
    scenario: str
    proxy: str
    round: int
    status: str  # "ok" | "n/a" | "error"
    reason: str = ""
    measurement: Measurement | None = None


@dataclass
class RunRecord:
    options: RunOptions
    scenarios: list[Scenario]
    proxies: list[Proxy]
    outcomes: list[Outcome] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    loadavg: list[tuple[float, float, float]] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_STARTS = itertools.count()

REQUIRED_TOOLS = ("nginx", "wrk", "h2load", "taskset", "openssl")


def check_prerequisites(scenarios: list[Scenario]) -> None:
    missing = [
        t for t in REQUIRED_TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()
    ]
    if missing:
        raise SystemExit(
            f"missing tools: {', '.join(missing)} (run `bash bench/run.sh --install-only` or "
            "apt-get install -y nginx-light wrk nghttp2-client util-linux openssl)"
        )


def prepare(options: RunOptions) -> RunRecord:
    catalogue = by_name()
    scenarios = [catalogue[name] for name in options.scenarios]
    proxies = build(options.proxies, natural=options.mode.name == "natural")
    check_prerequisites(scenarios)
    return RunRecord(options, scenarios, proxies)


def execute(record: RunRecord) -> None:
    """Fill record.outcomes; what was measured stays in the record if this raises."""
    options, scenarios, proxies = record.options, record.scenarios, record.proxies
    if options.mode.load_cpus is not None:
        os.sched_setaffinity(0, set(options.mode.load_cpus))
    sticky: dict[tuple[str, str], str] = {}  # (proxy, scenario) -> why it cannot run
    with tempfile.TemporaryDirectory(prefix="eg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        gateways = [p for p in proxies if isinstance(p, ExpressGateway)]
        if gateways:
            src_dir, description = export_source(options.gateway_src, tmp)
            for gateway in gateways:
                gateway.use_source(src_dir, description)
        record.versions = {p.name: p.version() for p in proxies}
        unavailable = {p.name: p.available() for p in proxies}
        certs = make_cert(tmp / "certs")
        with origin(tmp, options.mode) as docroot:
            env = Env(
                duration=options.duration,
                warmup=options.warmup,
                mode=options.mode,
                work_dir=tmp,
                docroot=docroot,
                certs=certs,
                smoke=options.smoke,
                probe_deadline=8.0 if options.smoke else 20.0,
            )
            for rnd in range(1, options.rounds + 1):
                record.loadavg.append(os.getloadavg())
                for scenario in scenarios:
                    for proxy in proxies:
                        outcome = run_one(scenario, proxy, rnd, env, unavailable, sticky)
                        record.outcomes.append(outcome)
                        log(_describe(outcome))
    record.loadavg.append(os.getloadavg())
    record.finished = time.time()


def run_one(
    scenario: Scenario,
    proxy: Proxy,
    rnd: int,
    env: Env,
    unavailable: dict[str, str | None],
    sticky: dict[tuple[str, str], str],
) -> Outcome:
    base = Outcome(scenario.name, proxy.name, rnd, "n/a")
    reason = unavailable.get(proxy.name) or proxy.unsupported(scenario.kind)
    reason = reason or sticky.get((proxy.name, scenario.name))
    if reason:
        base.reason = reason
        return base
    front = replace(scenario.front(), port=proxy_port(next(_STARTS)))
    run_dir = Path(
        tempfile.mkdtemp(prefix=f"{proxy.name}-{scenario.name}-r{rnd}-", dir=env.work_dir)
    )
    ctx = Context(run_dir=run_dir, certs=env.certs, mode=env.mode, start_timeout=env.probe_deadline)
    for port in (front.port, front.port + ADMIN_PORT_OFFSET):
        wait_port_free(HOST, port)
    try:
        managed = start_with_retry(proxy, front, ctx)
    except ProxyStartError as exc:
        sticky[(proxy.name, scenario.name)] = str(exc)
        base.reason = str(exc)
        return base
    try:
        return probe_and_measure(scenario, proxy.name, rnd, managed, front, env, sticky)
    finally:
        stop(managed)
        shutil.rmtree(run_dir, ignore_errors=True)


def probe_and_measure(
    scenario: Scenario,
    proxy_name: str,
    rnd: int,
    managed: Managed,
    front: Front,
    env: Env,
    sticky: dict[tuple[str, str], str],
) -> Outcome:
    """One real request through the proxy, then the measured load; never raises."""

    def outcome(status: str, reason: str = "", m: Measurement | None = None) -> Outcome:
        return Outcome(scenario.name, proxy_name, rnd, status, reason, m)

    try:
        scenario.probe(front, env)
    except Exception as exc:  # ProbeError, or anything a client library raised
        reason = f"{exc} {last_lines(managed.log_tail(), 1, 160)}".strip()
        sticky[(proxy_name, scenario.name)] = reason
        return outcome("n/a", reason)
    if not managed.alive():
        return outcome("error", f"proxy exited after the probe: {last_lines(managed.log_tail())}")
    try:
        measurement = scenario.run(front, managed.pid, env)
    except LoadError as exc:
        return outcome("error", str(exc))
    except Exception as exc:  # keep the other proxies' numbers; report this one
        return outcome("error", f"{type(exc).__name__}: {exc}")
    if not managed.alive():
        return outcome("error", f"proxy exited: {last_lines(managed.log_tail())}")
    return outcome("ok", m=measurement)


def start_with_retry(proxy: Proxy, front: Front, ctx: Context, attempts: int = 3) -> Managed:
    """Start the proxy; retry when the port is still held by the previous one."""
    for attempt in range(1, attempts + 1):
        try:
            return proxy.start(front, ctx)
        except ProxyStartError as exc:
            if "in use" not in str(exc).lower() or attempt == attempts:
                raise
            log(f"{proxy.name}: port busy, retrying ({exc})")
            time.sleep(2.0)
            wait_port_free(HOST, front.port)
    raise AssertionError("unreachable")


def _describe(outcome: Outcome) -> str:
    head = f"round {outcome.round} {outcome.scenario:<11} {outcome.proxy:<18}"
    m = outcome.measurement
    if outcome.status != "ok" or m is None:
        return f"{head} {outcome.status}: {outcome.reason[:200]}"
    parts = [f"{m.rate:,.0f}/s" if m.rate is not None else "rate ?"]
    if m.cpu_us_per_unit is not None:
        parts.append(f"{m.cpu_us_per_unit:.1f} cpu-us/unit")
    if m.p99_ms is not None:
        parts.append(f"p99 {m.p99_ms:.2f} ms")
    if m.peak_rss_mib is not None:
        parts.append(f"rss {m.peak_rss_mib:.1f} MiB")
    parts.extend(f"{k} {v:.2f}" for k, v in m.extra.items())
    parts.append(f"errors {m.errors}")
    return f"{head} " + ", ".join(parts)
