"""PNG chart: one panel per scenario, the headline figure per proxy (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEADLINE_LABEL = {
    "rate": "{rate}",
    "rss_per_conn_kib": "RSS per connection (KiB, lower is better)",
    "rss_growth_mib": "RSS growth (MiB, lower is better)",
}
RATE_LABEL = {"req": "req/s", "msg": "msg/s", "MiB": "MiB/s", "conn": "conn/s"}


def write_png(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scenarios = results["scenarios"]
    cols = 3 if len(scenarios) > 2 else len(scenarios)
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, sc in zip(axes.flat, scenarios, strict=False):
        _panel(ax, sc)
    for ax in list(axes.flat)[len(scenarios) :]:
        ax.axis("off")
    fig.suptitle(f"expressgateway vs peers — {results['meta']['cpu_budget']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _panel(ax: Any, sc: dict[str, Any]) -> None:
    key = sc["headline"]
    names, values, colors = [], [], []
    for proxy, res in sc["results"].items():
        med = res.get("median") or {}
        names.append(proxy.replace("expressgateway", "ours"))
        values.append(med.get(key) or 0.0)
        colors.append("tab:red" if proxy.startswith("expressgateway") else "tab:blue")
    bars = ax.bar(range(len(names)), values, color=colors)
    for bar, value, proxy in zip(bars, values, sc["results"], strict=True):
        ax.annotate(
            _label(sc, proxy, value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=6,
        )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
    ax.set_title(sc["title"], fontsize=8)
    ax.margins(y=0.18)
    label = HEADLINE_LABEL.get(key, key).format(rate=RATE_LABEL.get(sc["unit"], "/s"))
    ax.set_ylabel(label, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def _label(sc: dict[str, Any], proxy: str, value: float) -> str:
    med = sc["results"][proxy].get("median")
    if not med:
        return "n/a"
    text = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    cpu = med.get("cpu_us_per_unit")
    if sc["headline"] == "rate" and cpu is not None:
        text += f"\n{cpu:,.0f} µs/{sc['unit']}"
    return text
