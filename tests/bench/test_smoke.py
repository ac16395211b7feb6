"""The benchmark harness cannot rot: one short real round of H1 -> H1 1 KiB.

Runs `bench/run.py --smoke` (nginx as the proxy, plus our gateway when it starts)
against a real nginx origin with wrk. CI installs nginx-light and wrk via apt; a
missing tool is a failure, not a skip.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None or Path("/usr/sbin", tool).exists()


def test_smoke_round_produces_numbers(tmp_path: Path) -> None:
    for tool in ("nginx", "wrk", "taskset", "openssl"):
        assert _have(tool), f"{tool} is missing: apt-get install -y nginx-light wrk"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["meta"]["smoke"] is True
    assert results["meta"]["mode"] == "pinned"
    scenarios = {s["name"]: s for s in results["scenarios"]}
    assert list(scenarios) == ["h1_1k"]
    nginx = scenarios["h1_1k"]["results"]["nginx"]
    assert nginx["status"] == "ok", nginx
    rate = nginx["median"]["rate"]
    assert isinstance(rate, float) and rate > 0
    assert nginx["median"]["cpu_us_per_unit"] > 0
    assert nginx["median"]["peak_rss_mib"] > 0
    ours = scenarios["h1_1k"]["results"]["expressgateway"]
    assert ours["status"] in ("ok", "n/a", "error")
    if ours["status"] != "ok":
        assert ours["reason"], "an n/a row must say why"

    table = (tmp_path / "latest.md").read_text()
    assert "| proxy | req/s |" in table
    assert "| nginx |" in table
    assert "| expressgateway |" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latest.png").stat().st_size > 0
