"""A tiny run of each benchmark so the scripts don't rot (not a speed test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ack_latency_bench_runs_and_reports_both_receivers():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ack_latency.py"),
         "--requests", "10", "--rounds", "1", "--concurrency", "2", "--flex-latency", "0.01"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = {
        line.split("  ")[0].strip(): line.split()
        for line in lines
        if line.startswith(("inline", "flex-handover "))
    }
    assert set(rows) == {"inline (Twilio sample)", "flex-handover"}
    assert rows["flex-handover"][1] == "10"  # calls
    assert rows["flex-handover"][-1] == "0"  # errors
    assert "faster than inline" in lines[-1]


def run_bench(script: str, *args: str, timeout: float = 180) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def figures(lines: list[str]) -> dict[str, str]:
    """`name    value` rows of a bench report."""
    rows = {}
    for line in lines:
        name, _, value = line.rpartition("  ")
        if name.strip():
            rows[name.strip()] = value.strip()
    return rows


def test_chaos_bench_runs_and_counts_nothing_lost_or_doubled():
    lines = run_bench(
        "chaos.py", "--handovers", "30", "--rate", "60", "--kills", "0", "--redis-restarts", "0",
        "--ambiguous", "0.2", "--5xx", "0.1",
    )  # fmt: skip
    rows = figures(lines)
    assert rows["acknowledged"] == "30"
    assert rows["succeeded"] == "30"
    assert rows["lost (acknowledged, not final)"] == "0"
    assert rows["duplicate Interactions"] == "0"
    assert int(rows["TaskRouter lookups"]) > 0


LOAD_RECEIVERS = [
    "bare aiohttp",
    "bare aiohttp, uvloop",
    "naive arq",
    "flex-handover",
    "flex-handover, metrics off",
]


def test_load_bench_runs_all_five_receivers():
    lines = run_bench(
        "load.py", "--generator", "python", "--rounds", "1", "--seconds", "0.5",
        "--connections", "4",
    )  # fmt: skip
    rows = [line.split() for line in lines if line.split()[:1] == ["4"]]
    receivers = [row for row in rows if row[1] not in ("ratios:", "cpu")]
    names = [" ".join(row[1:-7]) for row in receivers]
    assert names == LOAD_RECEIVERS
    assert all(row[-1] == "0" for row in receivers)  # errors
    assert all(float(row[-3]) > 0 for row in receivers)  # cpu ms per request
    assert all(float(row[-2]) >= float(row[-3]) for row in receivers)  # with Redis's
    assert any("ratios: c/a" in line and "c/a'" in line and "c/d" in line for line in lines)
    assert any("cpu per request, c over a" in line and "c over a'" in line for line in lines)


def test_worker_throughput_bench_reports_its_bound_and_baseline():
    lines = run_bench(
        "worker_throughput.py", "--concurrency", "5", "--seconds", "0.5",
        "--flex-latency", "0.05", "--paced-rate", "10",
    )  # fmt: skip
    row = next(line.split() for line in lines if line.split()[:1] == ["5"])
    assert float(row[2]) > 0 and float(row[3]) == 100  # handovers/s, bound 5 / 0.05 s
    assert float(row[7]) > 0 and float(row[8]) > 0  # the naive arq worker's: per s, cpu ms
    assert float(row[15]) > 0 and float(row[16]) > 0  # the same making four requests
    assert any("of naive arq" in line and "same four requests" in line for line in lines)
    assert any(line.startswith("ack -> Interaction") for line in lines)


def test_worker_throughput_bench_times_the_workers_collector():
    lines = run_bench(
        "worker_throughput.py", "--concurrency", "5", "--seconds", "0.5",
        "--flex-latency", "0.05", "--paced-rate", "10", "--gc", "--gc-young-threshold", "700",
    )  # fmt: skip
    line = next(line for line in lines if line.startswith("collector at concurrency 5:"))
    share = float(line.split()[4].rstrip("%"))
    assert 0 < share < 100 and "young threshold 700" in line


def test_cost_bench_reports_memory_bytes_and_a_drained_backlog(tmp_path):
    import json

    results = tmp_path / "cost.json"
    lines = run_bench(
        "cost.py", "--requests", "2000", "--chunks", "4", "--generator", "python",
        "--warmup-seconds", "0.5", "--connections", "8", "--records", "200",
        "--backlog", "500", "--json", str(results),
    )  # fmt: skip
    rows = figures(lines)
    assert int(rows["tool calls stored"]) >= 2000
    assert rows["tool calls refused (non-2xx, socket errors)"] == "0"
    assert float(rows["api RSS after (MiB)"]) > 0
    # a status record holds a 400-character summary: well over 400 bytes, and
    # MEMORY USAGE of each kind of key is reported
    assert float(rows["bytes per queued handover (used_memory)"]) > 400
    assert float(rows["MEMORY USAGE arq job"]) > 0
    assert rows["handovers succeeded"] == "200"
    assert rows["arq jobs / queue entries left"] == "0 / 0"
    assert rows["succeeded"] == "500"
    assert rows["lost"] == "0"
    assert rows["duplicate Interactions"] == "0"
    assert lines[-1] == "all checks passed"
    document = json.loads(results.read_text())
    assert {"machine", "memory", "bytes", "backlog"} <= set(document)
    assert document["memory"]["samples"][0]["requests"] == 0
    assert document["backlog"]["lost"] == 0 and document["backlog"]["ok"] is True


def test_load_bench_writes_its_medians_as_json(tmp_path):
    import json

    results = tmp_path / "load.json"
    run_bench(
        "load.py", "--generator", "python", "--rounds", "1", "--seconds", "0.2",
        "--connections", "2", "--json", str(results),
    )  # fmt: skip
    document = json.loads(results.read_text())
    assert document["bench"] == "load"
    receivers = [row["receiver"] for row in document["results"]]
    assert receivers == LOAD_RECEIVERS
    assert all(row["connections"] == 2 and row["requests_per_second"] > 0
               and row["p99_ms"] > 0 for row in document["results"])  # fmt: skip
    assert document["ratios"][0]["connections"] == 2
    assert document["ratios"][0]["c/a'"] > 0


def test_chart_draws_throughput_and_p99_from_load_json(tmp_path):
    import json

    import pytest

    pytest.importorskip("matplotlib")  # the `bench` extra, not part of CI
    rows = [
        {"connections": c, "receiver": name, "requests_per_second": rate * c / (c + 8),
         "p50_ms": c / rate * 500, "p99_ms": c / rate * 2000, "max_ms": c / rate * 4000,
         "errors": 0, "rounds": 3}
        for c in (16, 64, 256)
        for name, rate in (("bare aiohttp", 9000.0), ("naive arq", 2000.0),
                           ("flex-handover", 1800.0))
    ]  # fmt: skip
    results = tmp_path / "load.json"
    results.write_text(json.dumps({"bench": "load", "generator": "wrk", "rounds": 3,
                                   "seconds": 10, "cpus": 2, "results": rows}))  # fmt: skip
    chart = tmp_path / "load.png"
    lines = run_bench("chart.py", str(results), "--out", str(chart), timeout=60)
    assert lines == [f"wrote {chart}: 3 receivers, 9 points"]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_limit_bench_runs_both_modes_and_loses_nothing():
    lines = run_bench(
        "rate_limit.py", "--rate", "20", "--handovers", "30", "--workers", "2",
        "--concurrency", "5", "--env", "HANDOVER_REQUEUE_DELAY_SECONDS=0.5",
        "--env", "HANDOVER_BACKOFF_MAX_SECONDS=1",
    )  # fmt: skip
    rows = figures(lines)
    for mode in ("on", "off"):
        assert rows[f"{mode} succeeded"] == "30"
        assert rows[f"{mode} lost (not final)"] == "0"
        assert rows[f"{mode} duplicate Interactions"] == "0"
        assert float(rows[f"{mode} goodput (creates/s)"]) > 0
    assert any(line.startswith("limit on vs off") for line in lines)


def test_priority_bench_runs_with_and_without_a_head_start_and_loses_nothing():
    lines = run_bench(
        "priority.py", "--handovers", "30", "--urgent", "3", "--rate", "20",
        "--workers", "1", "--concurrency", "5",
    )  # fmt: skip
    rows = figures(lines)
    for mode in ("on", "baseline"):
        assert rows[f"{mode} succeeded"] == "33"
        assert rows[f"{mode} lost (not final)"] == "0"
        assert rows[f"{mode} duplicate Interactions"] == "0"
        assert float(rows[f"{mode} drain rate (creates/s)"]) > 0
    assert any(line.startswith("head start vs none: urgent p99") for line in lines)


WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:37749/tools/flex-handover
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    77.71ms    3.87ms  96.11ms   92.50%
    Req/Sec     3.30k   113.42     3.59k    78.00%
  Latency Distribution
     50%   78.18ms
     75%   79.06ms
     90%   80.25ms
     99%  185.57ms
  32797 requests in 10.02s, 7.48MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   3272.26
Transfer/sec:    763.74KB
"""


def test_wrk_output_is_read_by_its_rows_not_by_a_stray_percentage():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from load import parse_wrk
    finally:
        sys.path.remove(str(ROOT / "bench"))
    run = parse_wrk(WRK_OUTPUT)  # "92.50%" in the Stdev column is not the p50 row
    assert (run.requests_per_second, run.p50_ms, run.p99_ms, run.max_ms, run.errors) == (
        3272.26,
        78.18,
        185.57,
        96.11,
        3,
    )


def test_journey_bench_shows_every_request_and_the_hand_back():
    lines = run_bench("journey.py", "--runs", "1")
    text = "\n".join(lines)
    for request in (
        "POST /v1/Interactions",
        "/Channels/UO",
        "(X-Twilio-Webhook-Enabled: false)",
        "DELETE /v1/Conversations/CH",
        "task.completed → POST /webhooks/taskrouter",
    ):
        assert request in text, text
    rows = figures(lines)
    assert rows["handed back"] == "1/1"
    assert float(rows["ack → Conversation marked"].split()[0]) > 0


def test_replica_wait_bench_compares_wait_against_none():
    lines = run_bench(
        "replica_wait.py", "--generator", "python", "--rounds", "1", "--seconds", "0.4",
        "--connections", "4",
    )  # fmt: skip
    rows = [line.split() for line in lines if line.split()[:1] == ["4"]]
    assert any(row[1:3] == ["no", "WAIT"] for row in rows), lines
    assert any(row[1:3] == ["WAIT", "1"] for row in rows), lines
    measured = [row for row in rows if row[1] != "WAIT/no"]
    assert all(row[-1] == "0" for row in measured)  # errors
    assert all(float(row[-2]) > 0 and float(row[-3]) > 0 for row in measured)  # cpu per request
    assert any(line.split()[1:2] == ["WAIT/no"] and "paired" in line for line in lines)
