"""Urgent first under Twilio's cap: a backlog drained at FLEX_API_MAX_RPS, with
urgent handovers arriving during the drain, head start on and off.

Real parts on loopback: a Redis server, --workers `flex-handover worker`
processes (each at --concurrency) and the Flex simulator (in this process)
accepting --rate creates per second (429 above, a sliding 1 s window, as
Twilio's documented ~20/s per endpoint per account). A backlog of --handovers
normal handovers (the default target, no priority) is stored the way the API
stores them; the workers start; then --urgent handovers to a target with a
`priority` are stored one by one, evenly spread over the middle half of the
drain. Drained twice in the same run:

- head start on: HANDOVER_PRIORITY_HEAD_START_SECONDS as in production (120 s);
- baseline: HANDOVER_PRIORITY_HEAD_START_SECONDS=0, first come, first served.

For each it prints the urgent handovers' ack -> Interaction latency (the ack is
when the enqueue returned, the Interaction when the simulator accepted its
create; p50, p99, max), the normal ones' for comparison, the drain rate (all
accepted creates per second, first to last, and its ratio to --rate), 429s,
lost (acknowledged but not final: must be 0) and duplicate Interactions (must
be 0). Exit code 1 if anything was lost or doubled.

    python bench/priority.py                       # 2,000 + 50 at 20/s, 2 workers x 50
    python bench/priority.py --handovers 200 --urgent 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    WORKFLOW_SID,
    flex_handover_command,
    lost_of,
    percentile,
    print_mode,
    service_env,
    start_process,
    stop_processes,
)
from rate_limit import wait_until_final

from shared.connections import Enqueuer
from shared.model import HandoverRequest, Identity
from shared.settings import DEFAULT_TARGET, Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer

URGENT_TARGET = "urgent"


@dataclass
class Drain:
    label: str
    urgent_latency: list[float]
    normal_latency: list[float]
    states: Counter[str]
    handovers: int
    created: int
    duplicates: int
    throttled: int
    drain_rate: float


async def store(enqueuer: Enqueuer, first: int, count: int, target: str) -> dict[str, float]:
    """Handover id -> when its enqueue returned (the ack), epoch seconds."""
    identity = Identity("whatsapp", "+15555550100")
    acked: dict[str, float] = {}
    for start in range(first, first + count, 200):
        results = await asyncio.gather(*(
            enqueuer.enqueue(HandoverRequest(f"CH{n:032x}", identity, target))
            for n in range(start, min(first + count, start + 200))
        ))  # fmt: skip
        now = time.time()
        acked.update((result.handover_id, now) for result in results)
    return acked


async def drain(
    label: str, env: dict[str, str], args: argparse.Namespace, flex: FlexSimulator,
    client: aioredis.Redis, offset: int,
) -> Drain:  # fmt: skip
    await client.flushall()
    flex.reset()
    enqueuer = Enqueuer(client, Settings.from_env(env, role="worker"))
    normal = await store(enqueuer, offset, args.handovers, DEFAULT_TARGET)
    command = flex_handover_command()
    workers = [await start_process(command, "worker", env=env) for _ in range(args.workers)]
    urgent: dict[str, float] = {}
    try:
        expected = args.handovers / args.rate
        await asyncio.sleep(expected / 4)
        gap = expected / 2 / max(1, args.urgent)
        for n in range(args.urgent):
            urgent.update(await store(enqueuer, offset + args.handovers + n, 1, URGENT_TARGET))
            await asyncio.sleep(gap)
        states = await wait_until_final(client, [*normal, *urgent], args.drain_timeout)
    finally:
        await stop_processes(workers)
    accepted: dict[str, list[float]] = {}
    for interaction in flex.interactions:
        handover_id = interaction["routing"]["properties"]["attributes"].get("handoverId")
        accepted.setdefault(handover_id, []).append(interaction["received_at"])
    times = sorted(t for created in accepted.values() for t in created)
    span = times[-1] - times[0] if len(times) > 1 else 0.0

    def latencies(acks: dict[str, float]) -> list[float]:
        return [min(accepted[h]) - acked for h, acked in acks.items() if h in accepted]

    return Drain(
        label=label,
        urgent_latency=latencies(urgent),
        normal_latency=latencies(normal),
        states=Counter(states.get(h, "missing") for h in [*normal, *urgent]),
        handovers=len(normal) + len(urgent),
        created=len(times),
        duplicates=sum(len(created) - 1 for created in accepted.values()),
        throttled=flex.throttled(),
        drain_rate=(len(times) - 1) / span if span > 0 else 0.0,
    )


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    return (
        f"p50 {percentile(values, 0.5):6.2f}  p99 {percentile(values, 0.99):6.2f}  "
        f"max {max(values):6.2f}"
    )


def report(args: argparse.Namespace, results: list[Drain]) -> bool:
    print(
        f"priority bench: {args.handovers} normal handovers queued, {args.urgent} urgent "
        f"arriving during the drain; {args.workers} workers x concurrency {args.concurrency}, "
        f"FLEX_API_MAX_RPS={args.max_rps:g}, Flex accepts {args.rate:g} creates/s (429 above), "
        f"Flex latency {args.flex_latency * 1000:.0f} ms, {os.cpu_count()} CPUs"
    )
    ok = True
    for result in results:
        lost = lost_of(result.handovers, result.states)
        ok = ok and lost == 0 and result.duplicates == 0
        rows = [
            ("urgent ack -> Interaction (s)", summary(result.urgent_latency)),
            ("normal ack -> Interaction (s)", summary(result.normal_latency)),
            ("drain rate (creates/s)", f"{result.drain_rate:.1f}"),
            ("drain rate / cap", f"{result.drain_rate / args.rate:.3f}"),
            ("drain rate / FLEX_API_MAX_RPS", f"{result.drain_rate / args.max_rps:.3f}"),
            ("429s seen", str(result.throttled)),
            ("succeeded", str(result.states["succeeded"])),
            ("failed", str(result.states["failed"])),
            ("lost (not final)", str(lost)),
            ("duplicate Interactions", str(result.duplicates)),
        ]
        print_mode(result.label, rows, 32)
    if len(results) == 2 and results[0].urgent_latency and results[1].urgent_latency:
        on, off = results
        on_p99 = percentile(on.urgent_latency, 0.99)
        off_p99 = percentile(off.urgent_latency, 0.99)
        print(
            f"head start vs none: urgent p99 {on_p99:.2f} s vs {off_p99:.2f} s "
            f"(x{on_p99 / off_p99:.3f}), drain rate x{on.drain_rate / off.drain_rate:.3f}"
        )
    return ok


def worker_env(
    redis_url: str, simulator_url: str, args: argparse.Namespace, head_start: str | None
) -> dict[str, str]:
    targets = {URGENT_TARGET: {"workflow_sid": WORKFLOW_SID, "priority": 10}}
    overrides = {"HANDOVER_PRIORITY_HEAD_START_SECONDS": head_start} if head_start else {}
    return service_env(
        redis_url,
        simulator_url,
        WORKER_CONCURRENCY=str(args.concurrency),
        FLEX_API_MAX_RPS=f"{args.max_rps:g}",
        HANDOVER_TARGETS=json.dumps(targets),
        **overrides,
    )


async def main(args: argparse.Namespace) -> int:
    redis = LocalRedisServer()
    redis.start()
    flex = FlexSimulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency=args.flex_latency,
        rate_limit_rps=args.rate,
    )  # fmt: skip
    simulator_url = await flex.start()
    client = aioredis.Redis.from_url(redis.url, decode_responses=True, socket_timeout=10)
    results = []
    try:
        modes = [
            ("on       head start as in production", None),
            ("baseline HANDOVER_PRIORITY_HEAD_START_SECONDS=0", "0"),
        ]
        for number, (label, head_start) in enumerate(modes):
            env = worker_env(redis.url, simulator_url, args, head_start)
            offset = number * (args.handovers + args.urgent)
            results.append(await drain(label, env, args, flex, client, offset))
    finally:
        await client.aclose()
        await flex.stop()
        redis.close()
    return 0 if report(args, results) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handovers", type=int, default=2000, help="normal, queued first")
    parser.add_argument("--urgent", type=int, default=50, help="arriving during the drain")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="creates/s the simulator accepts")  # fmt: skip
    parser.add_argument("--max-rps", type=float, default=None,
                        help="FLEX_API_MAX_RPS (default: --rate)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=50, help="per worker")
    parser.add_argument("--flex-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds per mode")
    args = parser.parse_args(argv)
    if args.max_rps is None:
        args.max_rps = args.rate
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
