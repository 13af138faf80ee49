"""A PNG of bench/load.py's results: throughput and p99 latency against connections.

Reads one or more JSON files written by `bench/load.py --json PATH` (a sweep
split over several runs is merged; a connection count found twice keeps the
last file's figures) and draws two panels, requests/s and p99 ms against
connections (log scale), one line per receiver: bare aiohttp, naive arq,
flex-handover.

Needs matplotlib: `pip install -e '.[bench]'`.

    python bench/load.py --connections 16 64 256 --json bench/results/load.json
    python bench/chart.py bench/results/load.json --out bench/results/load.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RECEIVERS = ("bare aiohttp", "naive arq", "flex-handover")
STYLES = {"bare aiohttp": ("tab:gray", "s"), "naive arq": ("tab:blue", "^"),
          "flex-handover": ("tab:red", "o")}  # fmt: skip


def load_results(paths: list[str]) -> tuple[dict[str, dict[int, dict]], list[dict]]:
    """Rows by receiver and connection count, and each file's run description."""
    by_receiver: dict[str, dict[int, dict]] = {}
    runs = []
    for path in paths:
        document = json.loads(Path(path).read_text())
        if document.get("bench") != "load" or "results" not in document:
            raise SystemExit(f"{path}: not the output of bench/load.py --json")
        runs.append({k: v for k, v in document.items() if k not in ("results", "ratios")})
        for row in document["results"]:
            by_receiver.setdefault(row["receiver"], {})[int(row["connections"])] = row
    return by_receiver, runs


def subtitle(runs: list[dict]) -> str:
    first = runs[0]
    generators = sorted({run.get("generator", "?") for run in runs})
    return (
        f"generator {'/'.join(generators)}, medians of {first.get('rounds', '?')} rounds x "
        f"{first.get('seconds', '?')} s, {first.get('cpus', '?')} CPUs, Redis on the same machine"
    )


def draw(by_receiver: dict[str, dict[int, dict]], runs: list[dict], out: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in RECEIVERS if n in by_receiver] + sorted(set(by_receiver) - set(RECEIVERS))
    figure, (throughput, p99) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for name in names:
        rows = by_receiver[name]
        connections = sorted(rows)
        color, marker = STYLES.get(name, (None, "x"))
        for axes, key in ((throughput, "requests_per_second"), (p99, "p99_ms")):
            axes.plot(connections, [rows[c][key] for c in connections], label=name,
                      color=color, marker=marker)  # fmt: skip
    all_connections = sorted({c for rows in by_receiver.values() for c in rows})
    for axes, label in ((throughput, "requests/s"), (p99, "p99 latency (ms)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(all_connections, [str(c) for c in all_connections])
        axes.minorticks_off()
        axes.set_xlabel("connections")
        axes.set_ylabel(label)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    throughput.set_title("throughput")
    p99.set_title("p99 latency")
    throughput.legend()
    figure.suptitle(f"{title}\n{subtitle(runs)}", fontsize=10)
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", help="files written by bench/load.py --json")
    parser.add_argument("--out", default="bench/results/load.png", help="PNG to write")
    parser.add_argument("--title", default="tool endpoint under load (bench/load.py)")
    args = parser.parse_args(argv)
    by_receiver, runs = load_results(args.json)
    if not by_receiver:
        raise SystemExit("no results in " + ", ".join(args.json))
    draw(by_receiver, runs, args.out, args.title)
    points = sum(len(rows) for rows in by_receiver.values())
    print(f"wrote {args.out}: {len(by_receiver)} receivers, {points} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
