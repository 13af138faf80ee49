"""What HANDOVER_MIN_REPLICAS costs the ack path: the tool endpoint with `WAIT 1`
against the same endpoint without it, in one run.

A Redis primary with one replica on this machine (loopback replication: the
cheapest a WAIT can be; a replica in another zone adds its round trip to every
acknowledgement), two `flex-handover api` processes, one with
HANDOVER_MIN_REPLICAS=1, measured alternately round by round (every other round
in reverse order). Load from wrk (bench/wrk_tool_call.lua, every request a new
conversation), or the aiohttp client with `--generator python`. It prints
requests/s, p50/p99 latency, and CPU per request of the API process and of the
primary Redis (from /proc), and the ratios: with WAIT over without, as ratios of
the medians and as the median of each round's own ratio.

    python bench/replica_wait.py                        # 64 connections, 5 rounds x 8 s
    python bench/replica_wait.py --connections 16 64 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys

import redis.asyncio as aioredis
from harness import (
    flex_handover_command,
    service_env,
    start_process,
    stop_processes,
    wait_listening,
)
from load import Run, Runs, paired_ratio, run_python, run_wrk, tree_cpu_seconds

from standins.redis_server import LocalRedisServer, free_port

RECEIVERS = ("no WAIT", "WAIT 1")


async def replica_in_sync(primary: aioredis.Redis) -> bool:
    info = await primary.info("replication")
    return info.get("connected_slaves") == 1 and info["slave0"]["state"] == "online"


async def main(args: argparse.Namespace) -> int:
    generator = args.generator or ("wrk" if shutil.which("wrk") else "python")
    primary = LocalRedisServer()
    primary.start()
    replica = LocalRedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    assert primary.process is not None
    redis_pid = primary.process.pid
    client = aioredis.Redis.from_url(primary.url)
    command = flex_handover_command()
    env = service_env(primary.url, "http://127.0.0.1:9", WORKER_CONCURRENCY="1")
    ports = {name: free_port() for name in RECEIVERS}
    processes = [
        await start_process(command, "api", "--port", str(ports["no WAIT"]), env=env),
        await start_process(command, "api", "--port", str(ports["WAIT 1"]),
                            env={**env, "HANDOVER_MIN_REPLICAS": "1"}),
    ]  # fmt: skip
    pids = dict(zip(RECEIVERS, (p.pid for p in processes), strict=True))
    results = {c: {name: Runs() for name in RECEIVERS} for c in args.connections}
    redis_cpu = {c: {name: [] for name in RECEIVERS} for c in args.connections}
    try:
        for port in ports.values():
            await wait_listening(port)
        for _ in range(400):  # polling Redis: nothing to wait on but its answer
            if await replica_in_sync(client):
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("the replica did not sync within 20 s")
        round_no = 0
        for connections in args.connections:
            for round_index in range(args.rounds + 1):  # the first warms up, dropped
                order = list(ports.items())[:: -1 if round_index % 2 else 1]
                for name, port in order:
                    round_no += 1
                    await client.flushall()
                    url = f"http://127.0.0.1:{port}/tools/flex-handover"
                    api_cpu, db_cpu = tree_cpu_seconds(pids[name]), tree_cpu_seconds(redis_pid)
                    run: Run
                    if generator == "wrk":
                        run = await run_wrk(url, connections, args.seconds, 1, round_no)
                    else:
                        run = await run_python(url, connections, args.seconds, round_no)
                    requests = max(1, run.requests)
                    run.cpu_ms_per_request = (
                        (tree_cpu_seconds(pids[name]) - api_cpu) * 1e3 / requests
                    )
                    if round_index:
                        results[connections][name].runs.append(run)
                        redis_cpu[connections][name].append(
                            (tree_cpu_seconds(redis_pid) - db_cpu) * 1e3 / requests
                        )
        report(results, redis_cpu, args, generator)
        failed = any(runs.errors for by in results.values() for runs in by.values())
        return 1 if failed else 0
    finally:
        await client.aclose()
        await stop_processes(processes)
        replica.close()
        primary.close()


def report(results, redis_cpu, args: argparse.Namespace, generator: str) -> None:
    print(
        f"ack path with and without HANDOVER_MIN_REPLICAS=1: a primary and one replica on "
        f"loopback, {args.rounds} alternating rounds x {args.seconds:g} s, generator "
        f"{generator}, {os.cpu_count()} CPUs (medians of rounds)"
    )
    print(
        f"{'conns':>5} {'receiver':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'api cpu ms/req':>14} {'redis cpu ms/req':>16} {'errors':>6}"
    )
    for connections, by_name in results.items():
        for name, runs in by_name.items():
            print(
                f"{connections:>5} {name:<9} {runs.median('requests_per_second'):>9.0f} "
                f"{runs.median('p50_ms'):>8.2f} {runs.median('p99_ms'):>8.2f} "
                f"{runs.median('cpu_ms_per_request'):>14.4f} "
                f"{statistics.median(redis_cpu[connections][name]):>16.4f} {runs.errors:>6}"
            )
        wait, plain = by_name["WAIT 1"], by_name["no WAIT"]
        rate = "requests_per_second"
        print(
            f"{connections:>5} WAIT/no WAIT: req/s {wait.median(rate) / plain.median(rate):.3f} "
            f"(paired {paired_ratio(wait, plain, rate):.3f}), p99 "
            f"{wait.median('p99_ms') / plain.median('p99_ms'):.2f}, api cpu/req "
            f"{paired_ratio(wait, plain, 'cpu_ms_per_request'):.3f} (paired)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="per run")
    parser.add_argument("--generator", choices=("wrk", "python"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
