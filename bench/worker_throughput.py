"""Worker throughput against a slow Flex API, next to its bound and the client's own cost.

For each worker concurrency (default 10, 100, 500): a backlog of handovers is
stored the way the API stores them (shared.connections.Enqueuer), then one
`flex-handover worker` process drains it against the Flex simulator (in this
process) answering POST /v1/Interactions after --flex-latency seconds.

It prints handovers/s and their ratio to the bound min(concurrency / latency,
FLEX_API_MAX_RPS when set), the worker's CPU milliseconds per handover (alone,
and with the Redis server's), the same for the naive arq worker a user would
write (bench/naive_worker.py: stock arq, one bounded create and one status key,
same backlog, same simulator) and for that worker making the service's four
requests per handover (`--same-requests`: the create, the channel read, the
Conversation's fetch and update; ours over it is the guarantees' price alone),
and for a bare loop of twilio `create_async`
calls at the same concurrency (bench/create_loop.py: the client library's own cost, with as
many connections as coroutines, as the worker has one per job slot), measured
in the same run; then time from acknowledgement to Interaction created (p50/p99)
for a paced run at half the bound, where it should be the Flex latency plus a
little. bench/arq_noop.py gives arq's own share of the CPU per handover.

With `--gc` our worker runs through bench/gc_timer.py and the collector's
share of its CPU is printed too (`--gc-young-threshold 700`: with Python's own
young-generation threshold instead of the worker's, to compare).

    python bench/worker_throughput.py
    python bench/worker_throughput.py --concurrency 100 --seconds 3
    python bench/worker_throughput.py --concurrency 100 500 --seconds 3 --gc
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    ROOT,
    flex_handover_command,
    percentile,
    service_env,
    start_process,
    stop_processes,
)

from shared.connections import Enqueuer
from shared.model import HandoverRequest, Identity
from shared.settings import Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Drained:
    per_second: float
    cpu_ms: float
    """The worker process's CPU per handover."""
    redis_cpu_ms: float
    """The Redis server's CPU per handover, in the same span."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def enqueue(enqueuer: Enqueuer, first: int, count: int) -> None:
    identity = Identity("whatsapp", "+15555550100")
    for start in range(first, first + count, 200):
        await asyncio.gather(*(
            enqueuer.enqueue(HandoverRequest(f"CH{n:032x}", identity, "default"))
            for n in range(start, min(first + count, start + 200))
        ))  # fmt: skip


async def wait_created(flex: FlexSimulator, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(flex.interactions) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(flex.interactions)} of {count} created in {timeout:g}s")
        await asyncio.sleep(0.05)


async def drain(command: list[str], env: dict[str, str], flex: FlexSimulator,
                enqueuer: Enqueuer, count: int, offset: int, redis_pid: int) -> Drained:  # fmt: skip
    """A backlog of `count`, one worker process running `command`."""
    await enqueue(enqueuer, offset, count)
    already = len(flex.interactions)
    worker = await start_process(*command, env=env)
    try:
        await wait_created(flex, already + 1, 30)  # started: imports and connections done
        cpu_started, started = cpu_seconds(worker.pid), time.perf_counter()
        redis_started = cpu_seconds(redis_pid)
        first = len(flex.interactions)
        await wait_created(flex, already + count, 120 + count / 10)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(worker.pid) - cpu_started
        redis_cpu = cpu_seconds(redis_pid) - redis_started
    finally:
        await stop_processes([worker])
    done = already + count - first
    return Drained(done / elapsed, cpu * 1000 / done, redis_cpu * 1000 / done)


async def bare_loop(simulator_url: str, count: int, concurrency: int) -> tuple[float, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "create_loop.py"), "--url", simulator_url,
        "--count", str(count), "--concurrency", str(concurrency),
        "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, _ = await process.communicate()
    created, seconds, cpu_ms = re.search(
        r"created (\d+) in ([\d.]+) s, cpu ([\d.]+) ms", output.decode()
    ).groups()
    return int(created) / float(seconds), float(cpu_ms) / int(created)


async def time_to_interaction(env: dict[str, str], flex: FlexSimulator, enqueuer: Enqueuer,
                              rate: float, seconds: float, offset: int) -> list[float]:  # fmt: skip
    """Handovers stored at `rate` per second while a worker runs: ack → created, ms."""
    worker = await start_process(flex_handover_command(), "worker", env=env)
    acked: dict[str, float] = {}
    try:
        # Worker start-up (imports, connections): wait for a first handover
        # rather than a fixed time, so a slow start does not count as latency.
        identity = Identity("whatsapp", "+15555550100")
        already = len(flex.interactions)
        await enqueuer.enqueue(HandoverRequest(f"CH{offset:032x}", identity, "default"))
        await wait_created(flex, already + 1, 30)
        offset += 1
        count = int(rate * seconds)
        started = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            result = await enqueuer.enqueue(
                HandoverRequest(f"CH{offset + n:032x}", identity, "default")
            )
            acked[result.handover_id] = time.time()
        # len() only while waiting: this process is also the simulator, and
        # reading every Interaction each tick stalled it once thousands were kept.
        with contextlib.suppress(RuntimeError):  # those created are still reported
            await wait_created(flex, already + 1 + count, 60)
        created = {
            i["routing"]["properties"]["attributes"].get("handoverId"): i["received_at"]
            for i in flex.interactions
        }
    finally:
        await stop_processes([worker])
    # The simulator records an Interaction when it creates it, after its latency
    # (just before it answers): that is the moment measured.
    return [(created[h] - at) * 1000 for h, at in acked.items() if h in created]


async def main(args: argparse.Namespace) -> int:
    redis = LocalRedisServer()
    redis.start()
    flex = FlexSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency=args.flex_latency)
    simulator_url = await flex.start()
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    rows = []
    collector: list[tuple[int, list[str]]] = []
    try:
        offset = 0
        for concurrency in args.concurrency:
            env = service_env(redis.url, simulator_url, WORKER_CONCURRENCY=str(concurrency),
                              WORKER_POLL_DELAY_SECONDS=str(args.poll_delay),
                              LOG_LEVEL=args.log_level)  # fmt: skip
            settings = Settings.from_env(env, role="worker")
            enqueuer = Enqueuer(client, settings)
            bound = concurrency / args.flex_latency
            max_rps = getattr(settings, "flex_api_max_rps", None)
            if max_rps:
                bound = min(bound, max_rps)
            count = max(concurrency * 2, int(bound * args.seconds))
            redis_pid = redis.process.pid if redis.process else 0
            ours = await drain(our_worker(args, concurrency), env, flex, enqueuer,
                               count, offset, redis_pid)  # fmt: skip
            if args.gc:
                collector.append((concurrency, gc_report(concurrency).read_text().split()))
            offset += count
            await client.flushall()
            naive_command = [sys.executable, str(ROOT / "bench" / "naive_worker.py"),
                             "--redis-url", redis.url, "--flex-url", simulator_url,
                             "--concurrency", str(concurrency),
                             "--poll-delay", str(args.poll_delay)]  # fmt: skip
            naive = await drain(naive_command, env, flex, enqueuer, count, offset, redis_pid)
            offset += count
            await client.flushall()
            same = await drain([*naive_command, "--same-requests"], env, flex, enqueuer, count,
                               offset, redis_pid)  # fmt: skip
            offset += count
            await client.flushall()
            bare_rate, bare_cpu_ms = await bare_loop(simulator_url, count, concurrency)
            rows.append((concurrency, count, bound, ours, naive, bare_rate, bare_cpu_ms, same))
        concurrency = args.concurrency[-1]
        env = service_env(redis.url, simulator_url, WORKER_CONCURRENCY=str(concurrency),
                          WORKER_POLL_DELAY_SECONDS=str(args.poll_delay),
                          LOG_LEVEL=args.log_level)  # fmt: skip
        paced_rate = min(args.paced_rate, concurrency / args.flex_latency / 2)
        latencies = await time_to_interaction(
            env,
            flex,
            Enqueuer(client, Settings.from_env(env, role="worker")),
            paced_rate,
            args.seconds,
            offset,
        )
    finally:
        await client.aclose()
        await flex.stop()
        redis.close()
    print(
        f"worker throughput: Flex API latency {args.flex_latency * 1000:.0f} ms, one worker "
        f"process, poll delay {args.poll_delay * 1000:.0f} ms, {os.cpu_count()} CPUs"
    )
    print(f"{'conc':>5} {'handovers':>9} {'per s':>8} {'bound':>8} {'ratio':>6} "
          f"{'cpu ms':>7} {'+redis':>7} {'naive/s':>8} {'naive ms':>8} {'+redis':>7} "
          f"{'bare/s':>8} {'bare ms':>8} {'x naive':>7} {'x bare':>6} {'same4/s':>8} "
          f"{'same4 ms':>8} {'x same4':>7}")  # fmt: skip
    for concurrency, count, bound, ours, naive, bare_rate, bare_cpu_ms, same in rows:
        print(
            f"{concurrency:>5} {count:>9} {ours.per_second:>8.1f} {bound:>8.0f} "
            f"{ours.per_second / bound:>6.2f} {ours.cpu_ms:>7.2f} "
            f"{ours.cpu_ms + ours.redis_cpu_ms:>7.2f} {naive.per_second:>8.1f} "
            f"{naive.cpu_ms:>8.2f} {naive.cpu_ms + naive.redis_cpu_ms:>7.2f} "
            f"{bare_rate:>8.1f} {bare_cpu_ms:>8.2f} {ours.cpu_ms / naive.cpu_ms:>7.2f} "
            f"{ours.cpu_ms / bare_cpu_ms:>6.2f} {same.per_second:>8.1f} {same.cpu_ms:>8.2f} "
            f"{ours.cpu_ms / same.cpu_ms:>7.2f}"
        )
    print(
        "ratios: cpu ms per handover of the worker process (+redis: with the Redis "
        "server's); x naive / x bare: ours over the naive arq worker's and the bare loop's; "
        "same4: the naive worker making the same four requests per handover"
    )
    for concurrency, _, _, ours, naive, _, _, same in rows:
        print(
            f"  concurrency {concurrency}: handovers/s x{ours.per_second / naive.per_second:.2f} "
            f"of naive arq, cpu/handover x{ours.cpu_ms / naive.cpu_ms:.2f} (worker), "
            f"x{(ours.cpu_ms + ours.redis_cpu_ms) / (naive.cpu_ms + naive.redis_cpu_ms):.2f} "
            f"(worker + redis); against the same four requests: handovers/s "
            f"x{ours.per_second / same.per_second:.2f}, cpu/handover x{ours.cpu_ms / same.cpu_ms:.2f} "
            f"(worker), x{(ours.cpu_ms + ours.redis_cpu_ms) / (same.cpu_ms + same.redis_cpu_ms):.2f} "
            "(worker + redis)"
        )
    for concurrency, figures in collector:
        found = dict(zip(figures[::2], figures[1::2], strict=True))
        print(
            f"collector at concurrency {concurrency}: {float(found['share']):.1%} of the "
            f"worker's CPU ({found['collections']} collections, {found['gc_seconds']} s of "
            f"{found['cpu_seconds']} s; young threshold {args.gc_young_threshold or 'as set'})"
        )
    if latencies:
        print(
            f"ack -> Interaction at {paced_rate:g}/s: p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {percentile(latencies, 0.99):.0f} ms (Flex latency "
            f"{args.flex_latency * 1000:.0f} ms)"
        )
    return 0


def gc_report(concurrency: int) -> Path:
    return Path(tempfile.gettempdir()) / f"flex-handover-gc-{os.getpid()}-{concurrency}.txt"


def our_worker(args: argparse.Namespace, concurrency: int) -> list[str]:
    """`flex-handover worker`, or with `--gc` the same through bench/gc_timer.py."""
    if not args.gc:
        return [flex_handover_command(), "worker"]
    threshold = (["--young-threshold", str(args.gc_young_threshold)]
                 if args.gc_young_threshold else [])  # fmt: skip
    return [sys.executable, str(ROOT / "bench" / "gc_timer.py"), *threshold,
            str(gc_report(concurrency)), "worker"]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--flex-latency", type=float, default=0.2, help="seconds")
    parser.add_argument("--seconds", type=float, default=5.0, help="work per concurrency")
    parser.add_argument("--poll-delay", type=float, default=0.05, help="WORKER_POLL_DELAY_SECONDS")
    parser.add_argument("--paced-rate", type=float, default=100.0, help="handovers/s")
    parser.add_argument("--log-level", default="WARNING",
                        help="the worker's LOG_LEVEL (INFO: a line per handover, to /dev/null)")  # fmt: skip
    parser.add_argument(
        "--gc",
        action="store_true",
        help="also the collector's share of our worker's CPU (bench/gc_timer.py)",
    )
    parser.add_argument(
        "--gc-young-threshold",
        type=int,
        help="with --gc: keep the young generation's threshold at this",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
