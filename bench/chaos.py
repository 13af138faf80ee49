"""Chaos run: handovers through the real service while everything around it fails.

Real parts on loopback: a Redis server (AOF on), `flex-handover api`, two
`flex-handover worker` processes, and the Flex simulator (in this process)
answering POST /v1/Interactions with a seeded fault mix: 5xx, 429 with and
without Retry-After, hangs past the attempt timeout, connection resets, and
"ambiguous" faults where the Interaction IS created but the answer is lost
(a 500, a reset or a hang after creating it). Meanwhile a worker is killed with
SIGKILL a few times (a replacement starts at once) and Redis is killed and
restarted once. Tool calls that get a 503 or no answer while Redis is down are
sent again, as a caller would.

It prints acknowledged, succeeded, failed, lost (must be 0), duplicate
Interactions (must be 0), ambiguous attempts and lookups, and time from
acknowledgement to Interaction (p50/p99). Exit code 1 if anything was lost
or doubled.

    python bench/chaos.py                          # 2,000 handovers, 3 kills
    python bench/chaos.py --handovers 200 --kills 1 --rate 50   # a quick look

With `--sentinel`, Redis is a primary, a replica and three Sentinels
(standins/redis_sentinel.py) and the Redis event is a failover instead of a
restart: the primary is SIGKILLed `--failovers` times, `--failover-every`
seconds apart, Sentinel promotes the replica, and the killed node comes back as
the new primary's replica (the next failover waits until it has resynced, unless
`--no-resync-wait`). `--min-replicas N` sets HANDOVER_MIN_REPLICAS: with 0
the run counts what asynchronous replication lost (acknowledged handovers whose
record the new primary never had), with 1 it must be 0.

    python bench/chaos.py --sentinel --min-replicas 0 --rate 400 --handovers 4000 --failovers 3
    python bench/chaos.py --sentinel --min-replicas 1 --rate 400 --handovers 4000 --failovers 3

Timings are shortened so that a killed worker's handovers come back in
about 49 s (see Settings.recovery_seconds) instead of the default 92 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    flex_handover_command,
    percentile,
    service_env,
    start_process,
    stop_processes,
    tool_headers,
    wait_listening,
)
from redis.exceptions import RedisError

from shared import redis_keys
from shared.redis_client import create_redis
from shared.settings import Settings
from standins.flex_simulator import Fault, FlexSimulator
from standins.redis_sentinel import LocalSentinelCluster
from standins.redis_server import LocalRedisServer, free_port

FINAL_STATES = {"succeeded", "failed"}
SERVICE_TIMINGS = {
    "HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "1",
    "HANDOVER_RETRY_BUDGET_SECONDS": "3",
    "HANDOVER_BACKOFF_INITIAL_SECONDS": "0.05",
    "HANDOVER_BACKOFF_MAX_SECONDS": "0.5",
    "HANDOVER_REQUEUE_DELAY_SECONDS": "0.5",
    "HANDOVER_LOOKUP_GRACE_SECONDS": "1",
    "HANDOVER_LOOKUP_INTERVAL_SECONDS": "0.25",
    "HANDOVER_MAX_AGE_SECONDS": "900",
    "WORKER_CONCURRENCY": "50",
    "WORKER_POLL_DELAY_SECONDS": "0.02",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "2",
}


@dataclass(frozen=True)
class FaultMix:
    """Shares of POST /v1/Interactions requests that fail, by kind."""

    server_error: float = 0.20
    throttled: float = 0.10
    hang: float = 0.02
    reset: float = 0.02
    ambiguous: float = 0.01
    hang_seconds: float = 3.0  # past the 1 s attempt timeout

    def draw(self, rng: random.Random) -> Fault | None:
        roll = rng.random()
        for share, make in (
            (self.server_error, lambda: Fault(rng.choice((500, 503)))),
            (self.throttled, lambda: Fault(429, code=20429, retry_after=rng.choice((None, 1)))),
            (self.hang, lambda: Fault(500, hang=self.hang_seconds)),
            (self.reset, lambda: Fault(reset=True)),
            (self.ambiguous, lambda: self._ambiguous(rng)),
        ):
            if roll < share:
                return make()
            roll -= share
        return None

    def _ambiguous(self, rng: random.Random) -> Fault:
        kind = rng.choice(("error", "reset", "hang"))
        if kind == "reset":
            return Fault(reset=True, after_create=True)
        if kind == "hang":
            return Fault(500, hang=self.hang_seconds, after_create=True)
        return Fault(500, after_create=True)


class ChaosFlex(FlexSimulator):
    """The simulator with a fault drawn for every create it has no queued fault for."""

    def __init__(self, mix: FaultMix, seed: int, **options):
        super().__init__(**options)
        self.mix = mix
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()

    def _take_fault(self, route: str) -> Fault | None:
        queued = super()._take_fault(route)
        if queued is not None or route != "interactions":
            return queued
        fault = self.mix.draw(self.rng)
        if fault is not None:
            self.injected["ambiguous" if fault.after_create else fault.kind] += 1
        return fault


@dataclass
class Calls:
    """What the load generator saw."""

    acknowledged: dict[str, float] = field(default_factory=dict)  # handover id -> ack time
    refused_then_resent: int = 0
    errors: Counter[int] = field(default_factory=Counter)


async def send_calls(url: str, count: int, rate: float, concurrency: int, calls: Calls) -> None:
    """One new conversation per call, paced at `rate` per second; a 503 or a
    dropped connection is resent (the caller's retry), anything else counted."""
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def call(number: int) -> None:
            async with semaphore:
                for _ in range(120):
                    try:
                        async with http.post(
                            url, json={"reason": "chaos"}, headers=tool_headers(number)
                        ) as response:
                            body = await response.json(content_type=None)
                            status = response.status
                    except (aiohttp.ClientError, TimeoutError):
                        status = 0
                    if status in (200, 202):
                        calls.acknowledged.setdefault(body["handover_id"], time.time())
                        return
                    if status not in (0, 503):
                        calls.errors[status] += 1
                        return
                    calls.refused_then_resent += 1
                    await asyncio.sleep(0.5)
                calls.errors[status] += 1

        started = time.monotonic()
        tasks = []
        for number in range(count):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(number)))
        await asyncio.gather(*tasks)


class Workers:
    """Worker processes; `kill_one` SIGKILLs one and starts its replacement."""

    def __init__(self, command: str, env: dict[str, str]):
        self.command, self.env = command, env
        self.processes: list[asyncio.subprocess.Process] = []
        self.rng = random.Random(7)

    async def start(self, count: int) -> None:
        for _ in range(count):
            self.processes.append(await start_process(self.command, "worker", env=self.env))

    async def kill_one(self) -> None:
        running = [p for p in self.processes if p.returncode is None]
        victim = self.rng.choice(running)
        victim.kill()
        await victim.wait()
        self.processes.remove(victim)
        await self.start(1)


async def chaos(
    workers: Workers, redis: LocalRedisServer | LocalSentinelCluster, args: argparse.Namespace
) -> list[str]:
    """Kill workers every --kill-every seconds; restart Redis at --redis-restart-at."""
    events: list[tuple[float, str]] = [
        (args.kill_every * (n + 1), "kill") for n in range(args.kills)
    ]
    if isinstance(redis, LocalSentinelCluster):
        events += [
            (args.redis_restart_at + n * args.failover_every, "failover")
            for n in range(args.failovers)
        ]
    elif args.redis_restarts:
        events.append((args.redis_restart_at, "redis"))
    log, started = [], time.monotonic()
    for at, what in sorted(events):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        if what == "kill":
            await workers.kill_one()
            log.append(f"{time.monotonic() - started:6.1f}s  SIGKILL a worker, replacement started")
        elif isinstance(redis, LocalSentinelCluster):
            log.append(await failover(redis, started, not args.no_resync_wait))
        else:
            await asyncio.to_thread(redis.kill)
            await asyncio.sleep(args.redis_down)
            await asyncio.to_thread(redis.start)
            log.append(
                f"{time.monotonic() - started:6.1f}s  Redis SIGKILLed, restarted after "
                f"{args.redis_down:g}s (AOF)"
            )
    return log


async def failover(cluster: LocalSentinelCluster, started: float, wait_for_sync: bool) -> str:
    """SIGKILL the primary, wait for Sentinel to promote the replica, then start the
    killed node again (Sentinel makes it the new primary's replica) and, unless
    told not to, wait until it has resynced: a failover before that promotes a
    replica that lacks everything written since it came back."""
    old = cluster.primary_port() or 0
    killed_at = time.monotonic()
    node = await asyncio.to_thread(cluster.kill_primary)
    new = await asyncio.to_thread(cluster.wait_promoted, old)
    promoted_in = time.monotonic() - killed_at
    await asyncio.to_thread(node.start)
    if not wait_for_sync:
        return (
            f"{killed_at - started:6.1f}s  primary :{old} SIGKILLed, :{new} promoted "
            f"after {promoted_in:.1f}s, :{old} started again (not waited for)"
        )
    await asyncio.to_thread(cluster.wait_in_sync, node)
    return (
        f"{killed_at - started:6.1f}s  primary :{old} SIGKILLed, :{new} promoted "
        f"after {promoted_in:.1f}s, :{old} a replica in sync "
        f"{time.monotonic() - killed_at:.1f}s after the kill"
    )


async def read_records(client: aioredis.Redis, handover_ids: list[str]) -> dict[str, dict]:
    """Status records, read through a Redis restart."""
    records: dict[str, dict] = {}
    for start in range(0, len(handover_ids), 500):
        batch = handover_ids[start : start + 500]
        while True:
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for handover_id in batch:
                        pipe.hgetall(redis_keys.handover_key(handover_id))
                    for handover_id, record in zip(batch, await pipe.execute(), strict=True):
                        records[handover_id] = record
                break
            except (RedisError, OSError):
                await asyncio.sleep(0.5)
    return records


async def wait_until_final(
    client: aioredis.Redis, handover_ids: list[str], timeout: float
) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = await read_records(client, handover_ids)
        # A missing record (lost in a failover) never ends: lost, not waited for.
        pending = [i for i, r in records.items() if r and r.get("state") not in FINAL_STATES]
        if not pending or time.monotonic() > deadline:
            return records
        await asyncio.sleep(1.0)


def report(
    args: argparse.Namespace,
    calls: Calls,
    records: dict[str, dict],
    flex: ChaosFlex,
    events: list[str],
    elapsed: float,
) -> bool:
    states = Counter(r.get("state", "missing") for r in records.values())
    by_handover: dict[str, list[dict]] = {}
    for interaction in flex.interactions:
        handover_id = interaction["routing"]["properties"]["attributes"].get("handoverId")
        by_handover.setdefault(handover_id, []).append(interaction)
    duplicates = sum(len(found) - 1 for found in by_handover.values() if len(found) > 1)
    lost = len(calls.acknowledged) - states["succeeded"] - states["failed"]
    missing = sum(1 for record in records.values() if not record)
    unrecorded = sum(
        1
        for handover_id, record in records.items()
        if record.get("state") == "succeeded"
        and record.get("interaction_sid")
        not in {i["sid"] for i in by_handover.get(handover_id, [])}
    )
    to_interaction = [
        (min(i["received_at"] for i in by_handover[h]) - float(r["created_at"])) * 1000
        for h, r in records.items()
        if h in by_handover and r.get("created_at")
    ]
    ambiguous = sum(int(r.get("ambiguous_attempts") or 0) for r in records.values())
    lookups = sum(int(r.get("lookups") or 0) for r in records.values())
    attempts = sum(int(r.get("attempts") or 0) for r in records.values())
    mix = args.mix
    if args.sentinel:
        print(
            f"Redis: a primary, a replica, 3 Sentinels; {args.failovers} failover(s); "
            f"HANDOVER_MIN_REPLICAS={args.min_replicas}"
        )
    print(
        f"chaos run: {args.handovers} handovers at {args.rate:g}/s, 2 workers x "
        f"concurrency {SERVICE_TIMINGS['WORKER_CONCURRENCY']}, Flex latency "
        f"{args.flex_latency * 1000:.0f} ms, seed {args.seed}"
    )
    print(
        f"fault mix on POST /v1/Interactions: {mix.server_error:.0%} 5xx, {mix.throttled:.0%} 429, "
        f"{mix.hang:.0%} hangs, {mix.reset:.0%} resets, {mix.ambiguous:.0%} ambiguous"
    )
    for line in events:
        print(f"  {line}")
    rows = [
        ("acknowledged", len(calls.acknowledged)),
        ("calls resent after a 503 / no answer", calls.refused_then_resent),
        ("calls refused otherwise", sum(calls.errors.values())),
        ("succeeded", states["succeeded"]),
        ("failed", states["failed"]),
        ("lost (acknowledged, not final)", lost),
        ("  of which no record at all", missing),
        ("duplicate Interactions", duplicates),
        ("succeeded without that Interaction", unrecorded),
        ("POST /v1/Interactions requests", len(flex.requests)),
        ("attempts recorded", attempts),
        ("faults injected", sum(flex.injected.values())),
        ("ambiguous faults injected", flex.injected["ambiguous"]),
        ("ambiguous attempts recorded", ambiguous),
        ("TaskRouter lookups", lookups),
    ]
    for name, value in rows:
        print(f"{name:<40} {value:>8}")
    if to_interaction:
        print(
            f"{'ack -> Interaction p50 / p99 (ms)':<40} "
            f"{statistics.median(to_interaction):>8.0f} / {percentile(to_interaction, 0.99):.0f}"
        )
    print(f"{'wall time (s)':<40} {elapsed:>8.1f}")
    if calls.errors:
        print(f"refusals by status: {dict(calls.errors)}")
    return lost == 0 and duplicates == 0 and unrecorded == 0 and not calls.errors


async def main(args: argparse.Namespace) -> int:
    command = flex_handover_command()
    redis: LocalRedisServer | LocalSentinelCluster
    if args.sentinel:
        redis = LocalSentinelCluster()
        await asyncio.to_thread(redis.start)
        redis_env = {**redis.env(), "HANDOVER_MIN_REPLICAS": str(args.min_replicas)}
    else:
        redis = LocalRedisServer()
        redis.start()
        redis_env = {"REDIS_URL": redis.url}
    flex = ChaosFlex(
        args.mix, args.seed, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
        latency=args.flex_latency, task_visible_after=args.task_delay,
    )  # fmt: skip
    simulator_url = await flex.start()
    api_port = free_port()
    env = {**service_env(redis_env["REDIS_URL"], simulator_url, **SERVICE_TIMINGS), **redis_env}
    settings = Settings.from_env(env, role="worker")
    workers = Workers(command, env)
    processes: list[asyncio.subprocess.Process] = []
    client = create_redis(settings.redis)
    try:
        processes.append(await start_process(command, "api", "--port", str(api_port), env=env))
        await wait_listening(api_port)
        await workers.start(2)
        print(f"a killed worker's handovers come back within {settings.recovery_seconds:g}s")
        started = time.monotonic()
        calls = Calls()
        url = f"http://127.0.0.1:{api_port}/tools/flex-handover"
        events, _ = await asyncio.gather(
            chaos(workers, redis, args),
            send_calls(url, args.handovers, args.rate, args.concurrency, calls),
        )
        records = await wait_until_final(client, list(calls.acknowledged), args.drain_timeout)
        elapsed = time.monotonic() - started
        return 0 if report(args, calls, records, flex, events, elapsed) else 1
    finally:
        await client.aclose()
        await stop_processes(processes + workers.processes)
        await flex.stop()
        redis.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handovers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="tool calls per second")
    parser.add_argument("--concurrency", type=int, default=32, help="connections")
    parser.add_argument("--flex-latency", type=float, default=0.05, help="seconds")
    parser.add_argument("--task-delay", type=float, default=0.1,
                        help="seconds before a created task shows in TaskRouter")  # fmt: skip
    parser.add_argument("--kills", type=int, default=3, help="worker SIGKILLs")
    parser.add_argument("--kill-every", type=float, default=6.0, help="seconds between kills")
    parser.add_argument("--redis-restarts", type=int, choices=(0, 1), default=1)
    parser.add_argument("--redis-restart-at", type=float, default=9.0, help="seconds in")
    parser.add_argument("--redis-down", type=float, default=2.0, help="seconds")
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="a primary, a replica and 3 Sentinels; failovers, not restarts",
    )
    parser.add_argument("--failovers", type=int, default=1, help="with --sentinel")
    parser.add_argument("--failover-every", type=float, default=8.0, help="seconds")
    parser.add_argument(
        "--no-resync-wait",
        action="store_true",
        help="fail over again before the last killed node has resynced",
    )
    parser.add_argument("--min-replicas", type=int, default=0,
                        help="HANDOVER_MIN_REPLICAS, with --sentinel")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    for name, default in (("5xx", 0.20), ("429", 0.10), ("hangs", 0.02), ("resets", 0.02),
                          ("ambiguous", 0.01)):  # fmt: skip
        parser.add_argument(f"--{name}", type=float, default=default, help="share of creates")
    args = parser.parse_args(argv)
    args.mix = FaultMix(
        server_error=getattr(args, "5xx"), throttled=getattr(args, "429"), hang=args.hangs,
        reset=args.resets, ambiguous=args.ambiguous,
    )  # fmt: skip
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
