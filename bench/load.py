"""Tool-endpoint throughput at high concurrency: flex-handover vs what else a user would run.

Three receivers on loopback, each its own process, measured alternately round
by round so that all see the same machine noise:

  (a) bare aiohttp: reads the request, answers 202 (the framework's limit here),
      on asyncio's own loop, and (a') the same on uvloop, the loop flex-handover
      runs on (shared/event_loop.py): c/a' is the share of the same loop's limit
  (b) naive arq: awaits arq's `enqueue_job` per call (3 Redis round trips)
  (c) flex-handover's tool endpoint: authenticated, parsed, de-duplicated,
      rate-limited and stored in Redis (status record + arq job) before the 202
  (d) the same with HANDOVER_METRICS=false: what counting each call and timing
      its answer (`api.metrics`) costs is c against d, in the same run

Load generator: wrk (Debian package `wrk`) with bench/wrk_tool_call.lua, every
request a new conversation; with `--generator python` (or no wrk installed) an
aiohttp client in this process, which is itself CPU-bound and reads lower.
Redis runs on the same machine and is flushed between runs. It prints
requests/s, p50/p99/max latency and CPU per request (the receiver's
processes, and with the Redis server's, from /proc) per receiver, the ratios c/a and c/b, and c/d (metrics on
against off: throughput, and CPU per request, also as the median of each round's
own ratio, the steadier figure on a noisy machine).

    python bench/load.py                                 # 64 connections, 3 rounds x 10 s
    python bench/load.py --connections 16 64 256          # a sweep
    python bench/load.py --connections 16 64 256 --json bench/results/load.json
                                   # also the medians as JSON, for bench/chart.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from harness import (
    BENCH_TOOL_TOKEN,
    ROOT,
    flex_handover_command,
    percentile,
    service_env,
    start_process,
    stop_processes,
    tool_headers,
    wait_listening,
)

from standins.redis_server import LocalRedisServer, free_port

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (Linux /proc): an
    `api --processes N` parent and its N children."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


RECEIVERS = (
    "bare aiohttp",
    "bare aiohttp, uvloop",
    "naive arq",
    "flex-handover",
    "flex-handover, metrics off",
)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Run:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    requests: int = 0
    cpu_ms_per_request: float = 0.0
    redis_cpu_ms_per_request: float = 0.0
    """The Redis server's CPU in the same run, per request."""

    @property
    def total_cpu_ms_per_request(self) -> float:
        return self.cpu_ms_per_request + self.redis_cpu_ms_per_request


@dataclass
class Runs:
    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Run:
    """wrk --latency output → one Run."""
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output)
    # Anchored: the "+/- Stdev" column can end in "50%" too.
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", output)
    total = re.search(r"(\d+) requests in", output)
    if not (latency and p50 and p99 and rate and total):
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    try:
        run = _parsed_run(latency, p50, p99, rate, non_2xx, socket_errors)
        run.requests = int(total.group(1))
        return run
    except AttributeError:
        raise RuntimeError(f"unexpected wrk output:\n{output}") from None


def _parsed_run(latency, p50, p99, rate, non_2xx, socket_errors) -> Run:
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Run(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)),
               _ms(latency.group(3)), errors)  # fmt: skip


async def run_wrk(url: str, connections: int, seconds: float, threads: int, round_no: int) -> Run:
    process = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
        "-s", str(ROOT / "bench" / "wrk_tool_call.lua"), url, "--", BENCH_TOOL_TOKEN,
        str(round_no), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(output.decode())
    return parse_wrk(output.decode())


async def run_python(url: str, connections: int, seconds: float, round_no: int) -> Run:
    """The fallback generator: `connections` clients looping for `seconds`."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + seconds
    numbers = iter(range(round_no << 40, (round_no + 1) << 40))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as http:

        async def client() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                async with http.post(
                    url, json={"reason": "load test"}, headers=tool_headers(next(numbers))
                ) as response:
                    await response.read()
                    errors += response.status not in (200, 202)
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.monotonic() - started
    return Run(len(latencies) / elapsed, statistics.median(latencies),
               percentile(latencies, 0.99), max(latencies), errors, len(latencies))  # fmt: skip


async def main(args: argparse.Namespace) -> int:
    generator = args.generator or ("wrk" if shutil.which("wrk") else "python")
    command = flex_handover_command()
    redis = LocalRedisServer()
    redis.start()
    ports = dict(zip(RECEIVERS, (free_port() for _ in RECEIVERS), strict=True))
    env = service_env(redis.url, "http://127.0.0.1:9", **{"WORKER_CONCURRENCY": "1"})
    receiver = str(ROOT / "bench" / "receivers.py")
    processes = [
        await start_process(sys.executable, receiver, "bare", "--port", str(ports["bare aiohttp"]), env=env),
        await start_process(sys.executable, receiver, "bare", "--uvloop",
                            "--port", str(ports["bare aiohttp, uvloop"]), env=env),
        await start_process(sys.executable, receiver, "arq", "--port", str(ports["naive arq"]), env=env),
        await start_process(command, "api", "--port", str(ports["flex-handover"]),
                            "--processes", str(args.api_processes), env=env),
        await start_process(command, "api", "--port", str(ports["flex-handover, metrics off"]),
                            "--processes", str(args.api_processes),
                            env={**env, "HANDOVER_METRICS": "false"}),
    ]  # fmt: skip
    pids = dict(zip(RECEIVERS, (process.pid for process in processes), strict=True))
    redis_pid = redis.process.pid if redis.process else 0
    client = aioredis.Redis.from_url(redis.url)
    results: dict[int, dict[str, Runs]] = {}
    try:
        for port in ports.values():
            await wait_listening(port)
        round_no = 0
        for connections in args.connections:
            results[connections] = {name: Runs() for name in RECEIVERS}
            for round_index in range(args.rounds + 1):  # the first warms up, dropped
                # Every other round in reverse order: no receiver always runs first.
                order = list(ports.items())[:: -1 if round_index % 2 else 1]
                for name, port in order:
                    round_no += 1
                    await client.flushall()
                    url = f"http://127.0.0.1:{port}/tools/flex-handover"
                    cpu = tree_cpu_seconds(pids[name])
                    redis_cpu = tree_cpu_seconds(redis_pid)
                    if generator == "wrk":
                        run = await run_wrk(url, connections, args.seconds, args.threads, round_no)
                    else:
                        run = await run_python(url, connections, args.seconds, round_no)
                    cpu = tree_cpu_seconds(pids[name]) - cpu
                    redis_cpu = tree_cpu_seconds(redis_pid) - redis_cpu
                    run.cpu_ms_per_request = cpu * 1000 / max(1, run.requests)
                    run.redis_cpu_ms_per_request = redis_cpu * 1000 / max(1, run.requests)
                    if round_no > len(RECEIVERS):
                        results[connections][name].runs.append(run)
        print_report(results, args, generator)
        if args.json:
            write_json(args.json, results, args, generator)
        failed = any(runs.errors for by_name in results.values() for runs in by_name.values())
        return 1 if failed else 0
    finally:
        await client.aclose()
        await stop_processes(processes)
        redis.close()


def print_report(
    results: dict[int, dict[str, Runs]], args: argparse.Namespace, generator: str
) -> None:
    print(
        f"tool endpoint under load: {args.rounds} alternating rounds x {args.seconds:g} s, "
        f"generator {generator}, {os.cpu_count()} CPUs, Redis on this machine (medians of rounds); "
        f"flex-handover in {args.api_processes} process(es), the baselines in one"
    )
    print(
        f"{'conns':>5} {'receiver':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'cpu ms/req':>10} {'+redis':>8} {'errors':>6}"
    )
    for connections, by_name in results.items():
        for name, runs in by_name.items():
            print(
                f"{connections:>5} {name:<26} {runs.median('requests_per_second'):>9.0f} "
                f"{runs.median('p50_ms'):>8.2f} {runs.median('p99_ms'):>8.2f} "
                f"{runs.median('max_ms'):>8.2f} {runs.median('cpu_ms_per_request'):>10.4f} "
                f"{runs.median('total_cpu_ms_per_request'):>8.4f} {runs.errors:>6}"
            )
        bare, bare_uvloop, arq, ours, off = (by_name[name] for name in RECEIVERS)
        rate, cpu = "requests_per_second", "cpu_ms_per_request"
        print(
            f"{connections:>5} ratios: c/a {ours.median(rate) / bare.median(rate):.2f}, "
            f"c/a' {ours.median(rate) / bare_uvloop.median(rate):.2f}, "
            f"c/b {ours.median(rate) / arq.median(rate):.2f}, "
            f"c/d {ours.median(rate) / off.median(rate):.3f} "
            f"(cpu/req {_ratio(ours.median(cpu), off.median(cpu)):.3f}; "
            f"paired by round {paired_ratio(ours, off, cpu):.3f})"
        )
        total = "total_cpu_ms_per_request"
        print(
            f"{connections:>5} cpu per request, c over a: receiver alone "
            f"x{_ratio(ours.median(cpu), bare.median(cpu)):.2f} (paired "
            f"{paired_ratio(ours, bare, cpu):.2f}), receiver + Redis "
            f"x{_ratio(ours.median(total), bare.median(total)):.2f} (paired "
            f"{paired_ratio(ours, bare, total):.2f}); c over a' receiver + Redis "
            f"x{_ratio(ours.median(total), bare_uvloop.median(total)):.2f} (paired "
            f"{paired_ratio(ours, bare_uvloop, total):.2f})"
        )


def paired_ratio(ours: Runs, theirs: Runs, figure: str) -> float:
    """The median of each round's own ratio: c and d run back to back in a round,
    so a ratio within a round cancels the noise that moves both, which the ratio of
    two medians taken over different rounds does not."""
    return statistics.median(
        _ratio(getattr(mine, figure), getattr(other, figure))
        for mine, other in zip(ours.runs, theirs.runs, strict=True)
    )


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("nan")


def write_json(path: str, results: dict[int, dict[str, Runs]], args: argparse.Namespace,
               generator: str) -> None:  # fmt: skip
    """The medians printed above, one row per connection count and receiver."""
    rows = [
        {
            "connections": connections,
            "receiver": name,
            **{
                figure: runs.median(figure)
                for figure in (
                    "requests_per_second",
                    "p50_ms",
                    "p99_ms",
                    "max_ms",
                    "cpu_ms_per_request",
                    "total_cpu_ms_per_request",
                )
            },
            "errors": runs.errors,
            "rounds": len(runs.runs),
        }
        for connections, by_name in results.items()
        for name, runs in by_name.items()
    ]
    document = {
        "bench": "load",
        "generator": generator,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "threads": args.threads,
        "api_processes": args.api_processes,
        "cpus": os.cpu_count(),
        "receivers": list(RECEIVERS),
        "results": rows,
        "ratios": [
            {
                "connections": connections,
                "c/a": ours / by_name["bare aiohttp"].median("requests_per_second"),
                "c/a'": ours / by_name["bare aiohttp, uvloop"].median("requests_per_second"),
                "c/b": ours / by_name["naive arq"].median("requests_per_second"),
                "c/d": ours / by_name["flex-handover, metrics off"].median("requests_per_second"),
                "c/a cpu per request with Redis, paired": paired_ratio(
                    by_name["flex-handover"],
                    by_name["bare aiohttp"],
                    "total_cpu_ms_per_request",
                ),
                "c/d cpu per request, paired": paired_ratio(
                    by_name["flex-handover"],
                    by_name["flex-handover, metrics off"],
                    "cpu_ms_per_request",
                ),
            }
            for connections, by_name in results.items()
            for ours in [by_name["flex-handover"].median("requests_per_second")]
        ],
    }
    with open(path, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="flex-handover api --processes (the baselines run in one)")  # fmt: skip
    parser.add_argument("--generator", choices=("wrk", "python"))
    parser.add_argument("--json", metavar="PATH", help="also write the medians as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
