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
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split("  ")[0].strip(): line.split() for line in lines if line.startswith(("inline", "flex-handover "))}
    assert set(rows) == {"inline (Twilio sample)", "flex-handover"}
    assert rows["flex-handover"][1] == "10"  # calls
    assert rows["flex-handover"][-1] == "0"  # errors
    assert "faster than inline" in lines[-1]


def run_bench(script: str, *args: str, timeout: float = 180) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True, text=True, timeout=timeout,
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


def test_load_bench_runs_all_three_receivers():
    lines = run_bench(
        "load.py", "--generator", "python", "--rounds", "1", "--seconds", "0.5",
        "--connections", "4",
    )  # fmt: skip
    rows = [line.split() for line in lines if line.split()[:1] == ["4"]]
    names = [" ".join(row[1:-5]) for row in rows if row[1] != "ratios:"]
    assert names == ["bare aiohttp", "naive arq", "flex-handover"]
    assert all(row[-1] == "0" for row in rows if row[1] != "ratios:")  # errors
    assert any("ratios: c/a" in line for line in lines)


def test_worker_throughput_bench_reports_its_bound_and_baseline():
    lines = run_bench(
        "worker_throughput.py", "--concurrency", "5", "--seconds", "0.5",
        "--flex-latency", "0.05", "--paced-rate", "10",
    )  # fmt: skip
    row = next(line.split() for line in lines if line.split()[:1] == ["5"])
    assert float(row[2]) > 0 and float(row[3]) == 100  # handovers/s, bound 5 / 0.05 s
    assert any(line.startswith("ack -> Interaction") for line in lines)
