"""Goodput under a Flex API rate limit, with FLEX_API_MAX_RPS on and off.

Real parts on loopback: a Redis server, --workers `flex-handover worker`
processes (each at --concurrency) and the Flex simulator (in this process)
accepting --rate creates per second (a sliding 1 s window) and answering 429
(20429) above it, with `Retry-After` if --retry-after is given. A backlog of
--handovers (default 20 x rate) is stored the way the API stores them, then
drained twice, in the same run:

- limit on: `FLEX_API_MAX_RPS` = --max-rps (default: the simulator's rate), the
  workers share one Redis token bucket;
- limit off: `FLEX_API_MAX_RPS=0`, the workers rely on 429 + backoff alone
  (production retry settings unless --env overrides them).

For each it prints goodput (accepted creates per second, first to last), its
ratio to the rate, the 429s the simulator answered, succeeded, failed, lost
(acknowledged but not final at the end: must be 0) and duplicate Interactions
(must be 0). Exit code 1 if anything was lost or doubled.

    python bench/rate_limit.py                              # 3 workers, 50/s, 1,000 handovers
    python bench/rate_limit.py --rate 20 --handovers 200 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import redis.asyncio as aioredis
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    flex_handover_command,
    lost_of,
    print_mode,
    service_env,
    start_process,
    stop_processes,
)
from redis.exceptions import RedisError

from shared import redis_keys
from shared.connections import Enqueuer
from shared.model import HandoverRequest, Identity
from shared.settings import Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer

FINAL_STATES = {"succeeded", "failed"}


@dataclass
class Drain:
    label: str
    handovers: int
    states: Counter[str]
    created: int
    duplicates: int
    throttled: int
    requests: int
    goodput: float
    seconds: float


async def enqueue(enqueuer: Enqueuer, first: int, count: int) -> list[str]:
    identity = Identity("whatsapp", "+15555550100")
    handover_ids: list[str] = []
    for start in range(first, first + count, 200):
        results = await asyncio.gather(*(
            enqueuer.enqueue(HandoverRequest(f"CH{n:032x}", identity, "default"))
            for n in range(start, min(first + count, start + 200))
        ))  # fmt: skip
        handover_ids.extend(result.handover_id for result in results)
    return handover_ids


async def states_of(client: aioredis.Redis, handover_ids: list[str]) -> dict[str, str]:
    states: dict[str, str] = {}
    for start in range(0, len(handover_ids), 500):
        batch = handover_ids[start : start + 500]
        async with client.pipeline(transaction=False) as pipe:
            for handover_id in batch:
                pipe.hget(redis_keys.handover_key(handover_id), "state")
            for handover_id, state in zip(batch, await pipe.execute(), strict=True):
                states[handover_id] = state or "missing"
    return states


async def wait_until_final(
    client: aioredis.Redis, handover_ids: list[str], timeout: float
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = await states_of(client, handover_ids)
        except RedisError:
            states = {}
        pending = [h for h in handover_ids if states.get(h) not in FINAL_STATES]
        if (states and not pending) or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.5)


async def drain(
    label: str,
    env: dict[str, str],
    args: argparse.Namespace,
    flex: FlexSimulator,
    client: aioredis.Redis,
    offset: int,
) -> Drain:
    """Store the backlog, start the workers, wait for every handover to end."""
    await client.flushall()
    flex.reset()
    enqueuer = Enqueuer(client, Settings.from_env(env, role="worker"))
    handover_ids = await enqueue(enqueuer, offset, args.handovers)
    command = flex_handover_command()
    workers = [await start_process(command, "worker", env=env) for _ in range(args.workers)]
    started = time.monotonic()
    try:
        states = await wait_until_final(client, handover_ids, args.drain_timeout)
    finally:
        await stop_processes(workers)
    seconds = time.monotonic() - started
    per_handover = Counter(
        i["routing"]["properties"]["attributes"].get("handoverId") for i in flex.interactions
    )
    accepted = sorted(i["received_at"] for i in flex.interactions)
    span = accepted[-1] - accepted[0] if len(accepted) > 1 else 0.0
    return Drain(
        label=label,
        handovers=len(handover_ids),
        states=Counter(states.get(h, "missing") for h in handover_ids),
        created=len(accepted),
        duplicates=sum(n - 1 for n in per_handover.values() if n > 1),
        throttled=flex.throttled(),
        requests=len(flex.requests),
        goodput=(len(accepted) - 1) / span if span > 0 else 0.0,
        seconds=seconds,
    )


def report(args: argparse.Namespace, results: list[Drain]) -> bool:
    retry_after = (
        "no Retry-After" if args.retry_after is None else f"Retry-After {args.retry_after:g}"
    )
    print(
        f"rate limit bench: {args.workers} workers x concurrency {args.concurrency}, Flex "
        f"accepts {args.rate:g} creates/s (429 above, {retry_after}), Flex latency "
        f"{args.flex_latency * 1000:.0f} ms, {args.handovers} handovers, {os.cpu_count()} CPUs"
    )
    ok = True
    for result in results:
        lost = lost_of(result.handovers, result.states)
        ok = ok and lost == 0 and result.duplicates == 0
        rows = [
            ("goodput (creates/s)", f"{result.goodput:.1f}"),
            ("goodput / rate", f"{result.goodput / args.rate:.2f}"),
            ("429s seen", result.throttled),
            ("POST /v1/Interactions requests", result.requests),
            ("succeeded", result.states["succeeded"]),
            ("failed", result.states["failed"]),
            ("lost (not final)", lost),
            ("duplicate Interactions", result.duplicates),
            ("drain time (s)", f"{result.seconds:.1f}"),
        ]
        print_mode(result.label, rows, 36)
    if len(results) == 2 and results[1].goodput > 0:
        on, off = results
        print(
            f"limit on vs off: goodput x{on.goodput / off.goodput:.2f}, "
            f"429s {on.throttled} vs {off.throttled}, "
            f"drain {on.seconds:.1f} s vs {off.seconds:.1f} s"
        )
    return ok


def worker_env(
    redis_url: str, simulator_url: str, args: argparse.Namespace, max_rps: float
) -> dict[str, str]:
    overrides = dict(item.split("=", 1) for item in args.env)
    return service_env(
        redis_url,
        simulator_url,
        WORKER_CONCURRENCY=str(args.concurrency),
        WORKER_POLL_DELAY_SECONDS="0.02",
        FLEX_API_MAX_RPS=f"{max_rps:g}",
        **overrides,
    )


async def main(args: argparse.Namespace) -> int:
    redis = LocalRedisServer()
    redis.start()
    flex = FlexSimulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency=args.flex_latency,
        rate_limit_rps=args.rate, rate_limit_retry_after=args.retry_after,
    )  # fmt: skip
    simulator_url = await flex.start()
    client = aioredis.Redis.from_url(redis.url, decode_responses=True, socket_timeout=10)
    results = []
    try:
        modes = [
            (f"on   FLEX_API_MAX_RPS={args.max_rps:g}", args.max_rps),
            ("off  FLEX_API_MAX_RPS=0 (429 + backoff alone)", 0.0),
        ]
        for number, (label, max_rps) in enumerate(modes[: 1 if args.skip_off else 2]):
            env = worker_env(redis.url, simulator_url, args, max_rps)
            offset = number * args.handovers
            results.append(await drain(label, env, args, flex, client, offset))
    finally:
        await client.aclose()
        await flex.stop()
        redis.close()
    return 0 if report(args, results) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0,
                        help="creates/s the simulator accepts")  # fmt: skip
    parser.add_argument("--max-rps", type=float, default=None,
                        help="FLEX_API_MAX_RPS when on (default: --rate)")  # fmt: skip
    parser.add_argument("--handovers", type=int, default=None, help="default 20 x rate")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50, help="per worker")
    parser.add_argument("--flex-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--retry-after", type=float, default=None,
                        help="seconds in the simulator's 429s (default: none)")  # fmt: skip
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds per mode")
    parser.add_argument("--skip-off", action="store_true", help="only the limit-on run")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="worker environment override, e.g. "
                        "HANDOVER_REQUEUE_DELAY_SECONDS=5 (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.max_rps is None:
        args.max_rps = args.rate
    if args.handovers is None:
        args.handovers = int(20 * args.rate)
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
