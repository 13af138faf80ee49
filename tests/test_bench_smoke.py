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
