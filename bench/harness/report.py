"""Medians over rounds, then the Markdown table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .runner import Outcome, RunRecord

NUMERIC = ("rate", "mib_s", "p50_ms", "p99_ms", "cpu_us_per_unit", "peak_rss_mib")
GATEWAY = "expressgateway"
UNIT_RATE = {"req": "req/s", "msg": "msg/s", "MiB": "MiB/s", "conn": "conn/s"}


def _median(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None and v == v]
    return statistics.median(clean) if clean else None


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Median of each figure over the rounds that succeeded."""
    ok = [o.measurement for o in outcomes if o.status == "ok" and o.measurement is not None]
    if not ok:
        first = outcomes[0] if outcomes else None
        return {
            "status": first.status if first else "n/a",
            "reason": first.reason if first else "not run",
            "median": None,
            "rounds": [],
        }
    median: dict[str, Any] = {k: _median([getattr(m, k) for m in ok]) for k in NUMERIC}
    extra_keys = sorted({k for m in ok for k in m.extra})
    for key in extra_keys:
        median[key] = _median([m.extra.get(key) for m in ok])  # type: ignore[misc]
    median["errors"] = sum(m.errors for m in ok)
    failed = [o for o in outcomes if o.status != "ok"]
    return {
        "status": "ok",
        "reason": "; ".join(sorted({f"round {o.round}: {o.reason[:150]}" for o in failed})),
        "median": median,
        "rounds_ok": len(ok),
        "rounds": [asdict(m) for m in ok],
    }


def build_results(record: RunRecord) -> dict[str, Any]:
    scenarios = []
    for sc in record.scenarios:
        per_proxy = {
            p.name: summarize(
                [o for o in record.outcomes if o.scenario == sc.name and o.proxy == p.name]
            )
            for p in record.proxies
        }
        scenarios.append(
            {
                "name": sc.name,
                "title": sc.title,
                "unit": sc.unit,
                "reference": sc.reference,
                "headline": sc.headline,
                "results": per_proxy,
            }
        )
    opts = record.options
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(record.started)),
            "elapsed_s": round(record.finished - record.started, 1),
            "mode": opts.mode.name,
            "cpu_budget": opts.mode.describe(),
            "rounds": opts.rounds,
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "smoke": opts.smoke,
            "machine": _machine(),
            "loadavg_1m_per_round": [round(la[0], 2) for la in record.loadavg],
            "versions": record.versions,
            "proxies": [p.name for p in record.proxies],
        },
        "scenarios": scenarios,
        "targets": targets(scenarios),
    }


def _machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _fig(scenarios: list[dict[str, Any]], name: str, proxy: str, key: str) -> float | None:
    for sc in scenarios:
        if sc["name"] == name:
            med = sc["results"].get(proxy, {}).get("median")
            return med.get(key) if med else None
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The figures the performance targets are judged on (values only, no thresholds)."""
    g = GATEWAY
    rows = [
        (
            "H1->H1 1 KiB: CPU-us/req, ours / haproxy",
            _ratio(
                _fig(scenarios, "h1_1k", g, "cpu_us_per_unit"),
                _fig(scenarios, "h1_1k", "haproxy", "cpu_us_per_unit"),
            ),
            "x",
        ),
        (
            "H1->H1 1 KiB: req/s, ours / mitmproxy",
            _ratio(
                _fig(scenarios, "h1_1k", g, "rate"), _fig(scenarios, "h1_1k", "mitmproxy", "rate")
            ),
            "x",
        ),
        (
            "H2(TLS)->H1: CPU-us/req, ours / haproxy",
            _ratio(
                _fig(scenarios, "h2tls_h1", g, "cpu_us_per_unit"),
                _fig(scenarios, "h2tls_h1", "haproxy", "cpu_us_per_unit"),
            ),
            "x",
        ),
        (
            "H3->H1: req/s, ours / caddy",
            _ratio(_fig(scenarios, "h3_h1", g, "rate"), _fig(scenarios, "h3_h1", "caddy", "rate")),
            "x",
        ),
        (
            "H3->H1: CPU-us/req, ours / caddy",
            _ratio(
                _fig(scenarios, "h3_h1", g, "cpu_us_per_unit"),
                _fig(scenarios, "h3_h1", "caddy", "cpu_us_per_unit"),
            ),
            "x",
        ),
        (
            "H3->H2 (h2c): req/s, ours / caddy",
            _ratio(_fig(scenarios, "h3_h2", g, "rate"), _fig(scenarios, "h3_h2", "caddy", "rate")),
            "x",
        ),
        (
            "L4 TCP bulk: MiB/s, ours / haproxy",
            _ratio(
                _fig(scenarios, "tcp_bulk", g, "rate"),
                _fig(scenarios, "tcp_bulk", "haproxy", "rate"),
            ),
            "x",
        ),
        (
            "10k idle connections: RSS per connection (ours)",
            _fig(scenarios, "idle_10k", g, "rss_per_conn_kib"),
            "KiB",
        ),
        (
            "1 GiB upload: RSS growth (ours)",
            _fig(scenarios, "upload_1g", g, "rss_growth_mib"),
            "MiB",
        ),
        (
            "H1->H1 1 KiB: req/s, all workers / 1 worker (natural mode)",
            _ratio(
                _fig(scenarios, "h1_1k", g, "rate"), _fig(scenarios, "h1_1k", f"{g}-1w", "rate")
            ),
            "x",
        ),
        (
            # proxy-bound: the load generator and origin need a small share of a
            # core here, so on a 2-core machine this is the scaling figure that
            # is not capped by the client
            "H2(TLS)->H1: req/s, all workers / 1 worker (natural mode, proxy-bound)",
            _ratio(
                _fig(scenarios, "h2tls_h1", g, "rate"),
                _fig(scenarios, "h2tls_h1", f"{g}-1w", "rate"),
            ),
            "x",
        ),
    ]
    return [{"target": t, "value": v, "unit": u} for t, v, u in rows]


# ---------------------------------------------------------------- Markdown


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _x(value: float | None, ref: float | None) -> str:
    r = _ratio(value, ref)
    return f"{r:.2f}x" if r is not None else "-"


def _columns(sc: dict[str, Any]) -> list[tuple[str, str, int, bool]]:
    """(header, key, digits, ratio-to-reference) per column."""
    rate = UNIT_RATE.get(sc["unit"], "/s")
    unit = sc["unit"]
    if sc["headline"] == "rss_per_conn_kib":
        return [
            ("open conns", "open", 0, False),
            ("RSS/conn KiB", "rss_per_conn_kib", 2, True),
            ("RSS growth MiB", "rss_growth_mib", 1, False),
            (f"CPU-µs/{unit}", "cpu_us_per_unit", 1, False),
            ("peak RSS MiB", "peak_rss_mib", 1, False),
        ]
    if sc["headline"] == "rss_growth_mib":
        return [
            ("MiB/s", "rate", 0, True),
            ("RSS growth MiB", "rss_growth_mib", 2, False),
            (f"CPU-µs/{unit}", "cpu_us_per_unit", 1, False),
            ("peak RSS MiB", "peak_rss_mib", 1, False),
        ]
    cols = [
        (rate, "rate", 0, True),
        ("p50 ms", "p50_ms", 2, False),
        ("p99 ms", "p99_ms", 2, False),
        (f"CPU-µs/{unit}", "cpu_us_per_unit", 1, True),
    ]
    if unit == "req" and sc["name"] == "h1_1m":
        cols.insert(1, ("MiB/s", "mib_s", 0, False))
    if any("client_cpu_us_per_unit" in (r.get("median") or {}) for r in sc["results"].values()):
        # The HTTP/3 clients report their own cost: client-bound or proxy-bound?
        cols.append((f"client CPU-µs/{unit}", "client_cpu_us_per_unit", 1, False))
    cols.append(("peak RSS MiB", "peak_rss_mib", 1, False))
    return cols


def _note(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit].replace("|", "/")


def scenario_table(sc: dict[str, Any]) -> list[str]:
    ref_name = sc["reference"]
    ref = (sc["results"].get(ref_name) or {}).get("median") or {}
    cols = _columns(sc)
    header = ["proxy"]
    for title, _key, _d, with_ratio in cols:
        header.append(title)
        if with_ratio:
            header.append(f"vs {ref_name}")
    header += ["errors", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for proxy, res in sc["results"].items():
        med = res.get("median")
        if not med:
            cells = ["n/a"] + [""] * (len(header) - 3) + [_note(res.get("reason", ""), 200)]
            lines.append(f"| {proxy} | " + " | ".join(cells) + " |")
            continue
        row = [proxy]
        for _title, key, digits, with_ratio in cols:
            row.append(_num(med.get(key), digits))
            if with_ratio:
                row.append(_x(med.get(key), ref.get(key)))
        row.append(str(med.get("errors", 0)))
        row.append(_note(res.get("reason", ""), 160))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"# Benchmark: expressgateway vs peers ({meta['mode']} mode)",
        "",
        f"- Date: {meta['date']} (took {meta['elapsed_s']} s)",
        f"- CPU budget: {meta['cpu_budget']}",
        f"- Rounds: {meta['rounds']} x {meta['duration_s']} s per scenario and proxy, interleaved "
        f"(A B C A B C …), warm-up {meta['warmup_s']} s; every figure is the median over rounds"
        + (" — SMOKE RUN, numbers are not meaningful" if meta["smoke"] else ""),
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"Linux {meta['machine']['kernel']}; 1-min load average at each round's start "
        f"and at the end: {meta['loadavg_1m_per_round']} (about 2 = only this benchmark; "
        "more means other work shared the cores and throughput figures are noisier)",
        "- CPU-µs per unit = utime + stime of the proxy's whole process tree over the measured "
        "window ÷ units completed in it; peak RSS = sum over the tree, sampled every 100 ms",
        "- Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()),
        "",
    ]
    for sc in results["scenarios"]:
        out += [f"## {sc['title']}", "", *scenario_table(sc), ""]
    out += ["## Target figures (ours)", "", "| figure | value |", "|---|---|"]
    for row in results["targets"]:
        value = row["value"]
        text = (
            "n/a"
            if value is None
            else f"{value:.2f}{'x' if row['unit'] == 'x' else ' ' + row['unit']}"
        )
        out.append(f"| {row['target']} | {text} |")
    out.append("")
    return "\n".join(out)


def write(results: dict[str, Any], out_dir: Path, stem: str = "latest") -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    paths["md"].write_text(markdown(results))
    return paths
