"""Runs `flex-handover <command>` in this process and times its garbage collector.

    python bench/gc_timer.py OUT worker                     # as the worker runs
    python bench/gc_timer.py --young-threshold 700 OUT worker   # Python's own threshold

At exit (a SIGTERM's clean stop included) it writes one line to OUT: the
collections, the seconds spent in them, the process's CPU seconds and the
collector's share of them. Why a wrapper: the collector's time is only seen from
inside the process (`gc.callbacks`); `bench/worker_throughput.py --gc` runs the
worker through this. `--young-threshold` keeps the young generation's threshold
at N whatever the worker sets (worker/main.py, GC_YOUNG_THRESHOLD), to measure
the difference in the same session.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--young-threshold", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    spent = {"collections": 0, "seconds": 0.0, "started": 0.0}

    def timed(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            spent["started"] = time.perf_counter()
        else:
            spent["collections"] += 1
            spent["seconds"] += time.perf_counter() - spent["started"]

    def report() -> None:
        cpu = time.process_time()
        Path(args.out).write_text(
            f"collections {spent['collections']} gc_seconds {spent['seconds']:.3f} "
            f"cpu_seconds {cpu:.3f} share {spent['seconds'] / cpu if cpu else 0:.4f}\n"
        )

    gc.callbacks.append(timed)
    if args.young_threshold is not None:
        gc.set_threshold(args.young_threshold, *gc.get_threshold()[1:])
        gc.set_threshold = lambda *_: None  # what the worker sets is ignored
    atexit.register(report)
    from commands.cli import main as cli

    return cli(args.command)


if __name__ == "__main__":
    sys.exit(main())
