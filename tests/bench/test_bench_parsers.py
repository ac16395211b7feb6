"""Parsers of the load generators' output and the report's medians (no processes)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.loadgen import parse_h2load, parse_wrk
from harness.report import summarize
from harness.runner import Outcome
from harness.scenarios import Measurement

WRK = """Running 2s test @ http://127.0.0.1:28080/1k
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   620.17us  202.54us   9.06ms   92.26%
    Req/Sec    80.38k     2.42k   83.56k    85.00%
  Latency Distribution
     50%  578.00us
     75%  631.00us
     90%  730.00us
     99%    1.54ms
  160063 requests in 2.00s, 186.22MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 10
Requests/sec:  80021.22
Transfer/sec:     93.09MB
"""

H2LOAD = """finished in 3.00s, 35998.00 req/s, 40.12MB/s
requests: 107994 total, 108494 started, 107994 done, 107990 succeeded, 4 failed, 0 errored, 0 timeout
status codes: 107990 2xx, 0 3xx, 4 4xx, 0 5xx
traffic: 120.36MB (126207562) total, 1.37MB (1439380) headers (space savings 93.38%)
"""


def test_parse_wrk() -> None:
    res = parse_wrk(WRK)
    assert res.requests == 160063 - 10
    assert res.duration == 2.0
    assert res.p50_ms == 0.578
    assert res.p99_ms == 1.54
    assert res.errors == 3 + 10
    assert abs(res.bytes_total - 186.22 * 1024 * 1024) < 1


def test_parse_h2load_with_log(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("".join(f"1700000000000000\t200\t{us}\n" for us in range(1000, 2000)))
    res = parse_h2load(H2LOAD, log)
    assert res.requests == 107990
    assert res.errors == 4 + 4
    assert res.duration == 3.0
    assert res.p50_ms == 1.5
    assert res.p99_ms == 1.99


def test_summary_is_median_over_ok_rounds() -> None:
    outcomes = [
        Outcome("h1_1k", "nginx", 1, "ok", measurement=Measurement(rate=10.0, errors=1)),
        Outcome("h1_1k", "nginx", 2, "error", "wrk did not finish in time"),
        Outcome("h1_1k", "nginx", 3, "ok", measurement=Measurement(rate=30.0)),
        Outcome("h1_1k", "nginx", 4, "ok", measurement=Measurement(rate=20.0)),
    ]
    summary = summarize(outcomes)
    assert summary["status"] == "ok"
    assert summary["median"]["rate"] == 20.0
    assert summary["median"]["errors"] == 1
    assert "round 2" in summary["reason"]


def test_summary_na_keeps_reason() -> None:
    summary = summarize([Outcome("h3_h1", "nginx", 1, "n/a", "nginx 1.22 has no HTTP/3")])
    assert summary["status"] == "n/a"
    assert summary["median"] is None
    assert "HTTP/3" in summary["reason"]
