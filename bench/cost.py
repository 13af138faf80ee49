"""Cost as work grows: receiver memory under a sustained run, Redis bytes per
handover, and a large backlog drained with nothing lost.

Three parts (`--parts`, default all), each on its own Redis server on loopback:

  memory   `flex-handover api` takes --requests tool calls (wrk with
           bench/wrk_tool_call.lua, every call a new conversation; the Python
           generator when wrk is missing or with --generator python) in
           --chunks chunks. Its RSS (/proc/PID/status VmRSS) is read after a
           warm-up and after every chunk: before, after, max, and the slope of a
           least-squares line through the samples (KiB per 100k requests, over
           all chunks and over the second half). Redis is FLUSHALLed after every
           chunk (and runs without AOF) so a million records don't swamp the
           machine: the receiver's memory is what is measured, not Redis's.
           Rate limits are off (harness.service_env); no worker runs.
  bytes    --records handovers stored through shared.connections.Enqueuer (in
           this process) on an empty Redis, each a new conversation and a new
           customer, with a realistic tool input (reason, a --summary-chars
           summary, name, language) and the default rate limits on (so both
           rate counters are written). Prints INFO used_memory delta / N (bytes
           per queued handover: status record + arq job + queue entry +
           conversation pointer + rate counters, key overhead included) and
           MEMORY USAGE of each key kind. Then one worker drains them against the
           Flex simulator, and the same per handover after success (arq's job
           and queue entry gone; pointer and rate counters still live), then
           per status record alone (pointers and counters deleted).
  backlog  --backlog handovers stored (Enqueuer, rate limits off), then
           --workers `flex-handover worker` processes (concurrency --concurrency
           each, simulator latency 0) drain them: time to drain, handovers/s,
           every record `succeeded` with exactly one Interaction (lost 0,
           duplicates 0), Redis used_memory at peak and after.

    python bench/cost.py                                   # 1M requests, 10k records, 100k backlog
    python bench/cost.py --parts bytes backlog --json bench/results/cost.json
    python bench/cost.py --requests 20000 --records 1000 --backlog 5000   # a quick look

Exit code 1 if a tool call was refused or a handover was lost or doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    flex_handover_command,
    service_env,
    start_process,
    stop_processes,
    wait_listening,
)
from load import Run, run_python, run_wrk
from worker_throughput import cpu_seconds

from shared import redis_keys
from shared.connections import Enqueuer
from shared.model import HandoverRequest, Identity
from shared.redis_keys import RATE_CONVERSATION_PREFIX, RATE_IDENTITY_PREFIX
from shared.settings import Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer, find_server_binary, free_port

PARTS = ("memory", "bytes", "backlog")
NO_FLEX = "http://127.0.0.1:9"  # the memory part runs no worker
KEY_KINDS = {
    "status record": redis_keys.HANDOVER_KEY_PREFIX,
    "arq job": redis_keys.ARQ_JOB_PREFIX,
    "conversation pointer": redis_keys.CONVERSATION_KEY_PREFIX,
    "rate counter (conversation)": RATE_CONVERSATION_PREFIX,
    "rate counter (identity)": RATE_IDENTITY_PREFIX,
}


def row(name: str, value: object) -> None:
    """`name  value`: the shape tests/test_bench_smoke.py reads."""
    print(f"{name:<46}  {value}")


# --- the machine ---


def machine() -> dict[str, object]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        server = subprocess.run(
            [find_server_binary(), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except Exception as exc:  # noqa: BLE001 - a description, not a check
        server = f"unknown ({exc})"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "redis_server": server,
        "wrk": shutil.which("wrk") is not None,
    }


# --- part 1: receiver memory ---


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB (Linux /proc)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def slope_per_100k(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of RSS (KiB) against requests sent, per 100k requests."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx * 100_000


async def receiver_memory(args: argparse.Namespace) -> tuple[dict, bool]:
    generator = args.generator or ("wrk" if shutil.which("wrk") else "python")
    redis = LocalRedisServer()
    redis.start()
    client = aioredis.Redis.from_url(redis.url)
    port = free_port()
    api = await start_process(flex_handover_command(), "api", "--port", str(port),
                              env=service_env(redis.url, NO_FLEX))  # fmt: skip
    url = f"http://127.0.0.1:{port}/tools/flex-handover"

    async def send(seconds: float, round_no: int) -> tuple[Run, int]:
        """One chunk of load; the handovers it stored (Redis is then emptied)."""
        if generator == "wrk":
            run = await run_wrk(url, args.connections, seconds, args.threads, round_no)
        else:
            run = await run_python(url, args.connections, seconds, round_no)
        await asyncio.sleep(0.05)  # the last calls in flight when the generator stopped
        stored = await client.zcard(redis_keys.QUEUE_NAME)
        await client.flushall()
        return run, stored

    def whole(seconds: float) -> float:
        """wrk takes whole seconds only."""
        return max(1, round(seconds)) if generator == "wrk" else max(0.05, seconds)

    try:
        await client.config_set("appendonly", "no")
        await wait_listening(port)
        warmup_seconds = whole(args.warmup_seconds)
        warm, warm_stored = await send(warmup_seconds, 1)
        rss_before, _ = rss_kib(api.pid)
        rate = warm_stored / warmup_seconds if warm_stored else 1000.0
        print(f"receiver memory: {args.requests} tool calls in {args.chunks} chunks, generator "
              f"{generator}, {args.connections} connections; warm-up {warm_stored} calls "
              f"({warm.requests_per_second:.0f}/s), RSS {rss_before / 1024:.1f} MiB")  # fmt: skip
        samples = [(0, rss_before)]
        sent, errors, round_no = 0, warm.errors, 1
        per_chunk = args.requests / args.chunks
        started = time.monotonic()
        while sent < args.requests:
            round_no += 1
            seconds = whole(min(per_chunk, args.requests - sent) / rate)
            run, stored = await send(seconds, round_no)
            sent += stored
            errors += run.errors
            if stored:
                rate = stored / seconds
            rss, _ = rss_kib(api.pid)
            samples.append((sent, rss))
            print(f"  chunk {round_no - 1:>3}: {stored:>8} calls in {seconds:.3g} s, total "
                  f"{sent:>9}, RSS {rss / 1024:8.1f} MiB")  # fmt: skip
        elapsed = time.monotonic() - started
        rss_after, rss_peak = rss_kib(api.pid)
    finally:
        await client.aclose()
        await stop_processes([api])
        redis.close()
    second_half = samples[len(samples) // 2 :]
    figures = {
        "generator": generator,
        "connections": args.connections,
        "requests": sent,
        "seconds": elapsed,
        "requests_per_second": sent / elapsed if elapsed else 0.0,
        "errors": errors,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_max_sampled_kib": max(rss for _, rss in samples),
        "rss_peak_vmhwm_kib": rss_peak,
        "rss_after_over_before": rss_after / rss_before,
        "slope_kib_per_100k": slope_per_100k(samples),
        "slope_second_half_kib_per_100k": slope_per_100k(second_half),
        "samples": [{"requests": x, "rss_kib": y} for x, y in samples],
    }
    row("tool calls stored", sent)
    row("tool calls refused (non-2xx, socket errors)", errors)
    row("calls/s over the run", f"{figures['requests_per_second']:.0f}")
    row("api RSS before (MiB)", f"{rss_before / 1024:.1f}")
    row("api RSS after (MiB)", f"{rss_after / 1024:.1f}")
    row("api RSS after / before", f"{figures['rss_after_over_before']:.3f}")
    row("api RSS max sampled (MiB)", f"{figures['rss_max_sampled_kib'] / 1024:.1f}")
    row("api RSS peak, VmHWM (MiB)", f"{rss_peak / 1024:.1f}")
    row("RSS slope, all chunks (KiB/100k calls)", f"{figures['slope_kib_per_100k']:.1f}")
    row("RSS slope, second half (KiB/100k calls)",
        f"{figures['slope_second_half_kib_per_100k']:.1f}")  # fmt: skip
    return figures, errors == 0


# --- part 2: Redis bytes per handover ---


def tool_input(n: int, summary_chars: int) -> dict[str, str]:
    """What an AI agent sends: a reason, a summary of the conversation so far."""
    summary = (
        f"Customer {n} wrote about order #{700000 + n}: the parcel was marked delivered but "
        "never arrived; they checked with neighbours and the building's front desk. They "
        "asked twice for a refund and are now upset. The agent confirmed the address and "
        "tracking number and could not resolve it within policy. "
    )
    while len(summary) < summary_chars:
        summary += summary
    return {
        "reason": "Customer asks for a refund on an undelivered order; needs a human agent.",
        "summary": summary[:summary_chars],
        "customer_name": f"Customer {n}",
        "language": "en-US",
    }


def request_for(n: int, summary_chars: int, own_identity: bool) -> HandoverRequest:
    phone = f"+1555{n % 10_000_000:07d}" if own_identity else "+15555550100"
    return HandoverRequest(f"CH{n:032x}", Identity("whatsapp", phone), "default",
                           tool_input(n, summary_chars))  # fmt: skip


async def store_handovers(enqueuer: Enqueuer, count: int, summary_chars: int,
                          own_identity: bool, first: int = 0) -> list[str]:  # fmt: skip
    handover_ids: list[str] = []
    for start in range(first, first + count, 200):
        results = await asyncio.gather(*(
            enqueuer.enqueue(request_for(n, summary_chars, own_identity))
            for n in range(start, min(first + count, start + 200))
        ))  # fmt: skip
        for result in results:
            if not result.created:
                raise RuntimeError(f"not stored: {result}")
            handover_ids.append(result.handover_id)
    return handover_ids


async def used_memory(client: aioredis.Redis) -> int:
    return int((await client.info("memory"))["used_memory"])


async def settled_memory(client: aioredis.Redis) -> int:
    """used_memory once UNLINKed keys are freed (lazy free runs in a thread)."""
    for _ in range(50):
        info = await client.info("memory")
        if not int(info.get("lazyfree_pending_objects", 0)):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.1)
    return await used_memory(client)


async def scan_count(client: aioredis.Redis, prefix: str) -> int:
    return sum([1 async for _ in client.scan_iter(match=prefix + "*", count=1000)])


async def unlink_prefix(client: aioredis.Redis, prefix: str) -> None:
    batch = []
    async for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)


async def average_usage(client: aioredis.Redis, key_names: list[str]) -> float | None:
    async with client.pipeline(transaction=False) as pipe:
        for name in key_names:
            pipe.memory_usage(name, samples=0)
        sizes = [size for size in await pipe.execute() if size is not None]
    return sum(sizes) / len(sizes) if sizes else None


async def key_sizes(client: aioredis.Redis, requests: list[HandoverRequest],
                    handover_ids: list[str]) -> dict[str, float | None]:  # fmt: skip
    """MEMORY USAGE (SAMPLES 0) of each key kind, averaged over up to 100 handovers."""
    pairs = list(zip(handover_ids, requests, strict=True))[:100]
    names = {
        "status record": [redis_keys.handover_key(h) for h, _ in pairs],
        "arq job": [redis_keys.arq_job_key(h) for h, _ in pairs],
        "conversation pointer": [redis_keys.conversation_key(r.conversation_sid) for _, r in pairs],
        "rate counter (conversation)": [
            RATE_CONVERSATION_PREFIX + r.conversation_sid for _, r in pairs
        ],
    }
    sizes: dict[str, float | None] = {kind: await average_usage(client, found)
                                      for kind, found in names.items()}  # fmt: skip
    identity_keys = [key async for key in client.scan_iter(match=RATE_IDENTITY_PREFIX + "*",
                                                            count=1000)][:100]  # fmt: skip
    sizes["rate counter (identity)"] = await average_usage(client, identity_keys)
    queue = await client.memory_usage(redis_keys.QUEUE_NAME, samples=0)
    sizes["queue entry (zset / N)"] = queue / len(handover_ids) if queue else None
    recent = await client.memory_usage(redis_keys.RECENT_INDEX, samples=0)
    sizes["recent index entry (zset / N)"] = recent / len(handover_ids) if recent else None
    return sizes


async def wait_succeeded(client: aioredis.Redis, flex: FlexSimulator, handover_ids: list[str],
                         timeout: float) -> dict[str, dict]:  # fmt: skip
    """Wait for an Interaction per handover, then for every record to be final."""
    deadline = time.monotonic() + timeout
    while len(flex.interactions) < len(handover_ids) and time.monotonic() < deadline:  # noqa: ASYNC110 - the simulator keeps a list; no event to wait on
        await asyncio.sleep(0.2)
    while True:
        records = await read_records(client, handover_ids)
        pending = sum(r.get("state") not in ("succeeded", "failed") for r in records.values())
        if not pending or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.2)


async def read_records(client: aioredis.Redis, handover_ids: list[str]) -> dict[str, dict]:
    records: dict[str, dict] = {}
    for start in range(0, len(handover_ids), 1000):
        batch = handover_ids[start : start + 1000]
        async with client.pipeline(transaction=False) as pipe:
            for handover_id in batch:
                pipe.hmget(redis_keys.handover_key(handover_id), "state", "interaction_sid")
            for handover_id, (state, sid) in zip(batch, await pipe.execute(), strict=True):
                records[handover_id] = {"state": state, "interaction_sid": sid}
    return records


Part = Callable[[LocalRedisServer, aioredis.Redis, FlexSimulator], Awaitable[tuple[dict, bool]]]


async def with_simulator(work: Part) -> tuple[dict, bool]:
    redis = LocalRedisServer()
    redis.start()
    flex = FlexSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, latency=0.0)
    await flex.start()
    client = aioredis.Redis.from_url(redis.url, decode_responses=True, socket_timeout=30)
    try:
        return await work(redis, client, flex)
    finally:
        await client.aclose()
        await flex.stop()
        redis.close()


async def redis_bytes(args: argparse.Namespace) -> tuple[dict, bool]:
    async def work(redis: LocalRedisServer, client: aioredis.Redis,
                   flex: FlexSimulator) -> tuple[dict, bool]:  # fmt: skip
        defaults = Settings()
        env = service_env(
            redis.url, flex.base_url or "", WORKER_CONCURRENCY=str(args.concurrency),
            HANDOVER_RATE_LIMIT_PER_CONVERSATION=str(defaults.rate_limit_per_conversation),
            HANDOVER_RATE_LIMIT_PER_IDENTITY=str(defaults.rate_limit_per_identity),
        )  # fmt: skip
        enqueuer = Enqueuer(client, Settings.from_env(env, role="api"))
        n = args.records
        # The Lua script's cache and the client's connection count in used_memory:
        # load them first, then start from an empty keyspace.
        await client.config_set("appendonly", "no")
        await store_handovers(enqueuer, 1, args.summary_chars, True, first=10**9)
        await client.flushall()
        await asyncio.sleep(0.2)
        empty = await used_memory(client)
        requests = [request_for(i, args.summary_chars, True) for i in range(n)]
        handover_ids = await store_handovers(enqueuer, n, args.summary_chars, True)
        queued = await used_memory(client)
        sizes_queued = await key_sizes(client, requests, handover_ids)
        keys_queued = await client.dbsize()

        worker = await start_process(flex_handover_command(), "worker", env=env)
        try:
            records = await wait_succeeded(client, flex, handover_ids, 60 + n / 50)
        finally:
            await stop_processes([worker])
        succeeded = sum(r["state"] == "succeeded" for r in records.values())
        await asyncio.sleep(0.2)
        # A worker leaves some memory in Redis that is in no key (connection
        # and script state, a few hundred KB whatever N is), so what each
        # handover costs after success is measured by deleting its keys.
        after = await used_memory(client)
        left = {kind: await scan_count(client, prefix) for kind, prefix in KEY_KINDS.items()}
        left["queue"] = await client.zcard(redis_keys.QUEUE_NAME)
        left["all keys"] = await client.dbsize()
        record_after = await average_usage(
            client, [redis_keys.handover_key(h) for h in handover_ids[:100]]
        )
        for prefix in (redis_keys.CONVERSATION_KEY_PREFIX, redis_keys.RATE_KEY_PREFIX,
                       redis_keys.OUTCOMES_PREFIX):  # fmt: skip
            await unlink_prefix(client, prefix)
        await client.unlink(redis_keys.RECENT_INDEX)  # the operator's index, a key of its own
        records_only = await settled_memory(client)
        records_only_keys = await client.dbsize()
        await unlink_prefix(client, redis_keys.HANDOVER_KEY_PREFIX)
        no_records = await settled_memory(client)
        keys_at_end = await client.dbsize()

        figures = {
            "records": n,
            "summary_chars": args.summary_chars,
            "tool_input_json_bytes": len(
                json.dumps(tool_input(0, args.summary_chars), separators=(",", ":"))
            ),
            "used_memory_empty": empty,
            "bytes_per_queued_handover": (queued - empty) / n,
            "keys_per_queued_handover": keys_queued / n,
            "memory_usage_queued": sizes_queued,
            "succeeded": succeeded,
            "bytes_per_handover_after_success": (after - no_records) / n,
            "keys_left_after_success": left,
            "bytes_per_status_record": (records_only - no_records) / n,
            "status_records_left": records_only_keys,
            "keys_at_end": keys_at_end,
            "non_key_bytes_after_worker": no_records - empty,
            "memory_usage_status_record_after_success": record_after,
        }
        print(f"Redis bytes: {n} handovers, tool input {figures['tool_input_json_bytes']} bytes "
              f"of JSON (summary {args.summary_chars} chars), a new conversation and customer "
              "each, default rate limits on, AOF off")  # fmt: skip
        row(
            "bytes per queued handover (used_memory)", f"{figures['bytes_per_queued_handover']:.0f}"
        )
        row("keys per queued handover", f"{figures['keys_per_queued_handover']:.2f}")
        for kind, size in sizes_queued.items():
            row(f"  MEMORY USAGE {kind}", "-" if size is None else f"{size:.0f}")
        row("handovers succeeded", succeeded)
        row(
            "bytes per handover after success", f"{figures['bytes_per_handover_after_success']:.0f}"
        )
        row("  arq jobs / queue entries left", f"{left['arq job']} / {left['queue']}")
        row("bytes per status record (used_memory)", f"{figures['bytes_per_status_record']:.0f}")
        row("  MEMORY USAGE status record, succeeded",
            "-" if record_after is None else f"{record_after:.0f}")  # fmt: skip
        row("Redis memory in no key after the worker (KiB)",
            f"{figures['non_key_bytes_after_worker'] / 1024:.0f}")  # fmt: skip
        ok = succeeded == n and left["arq job"] == 0 and left["queue"] == 0 and keys_at_end == 0
        return figures, ok

    return await with_simulator(work)


# --- part 3: a backlog drained ---


async def backlog(args: argparse.Namespace) -> tuple[dict, bool]:
    async def work(redis: LocalRedisServer, client: aioredis.Redis,
                   flex: FlexSimulator) -> tuple[dict, bool]:  # fmt: skip
        env = service_env(redis.url, flex.base_url or "", WORKER_CONCURRENCY=str(args.concurrency))
        enqueuer = Enqueuer(client, Settings.from_env(env, role="api"))
        empty = await used_memory(client)
        started = time.monotonic()
        handover_ids = await store_handovers(enqueuer, args.backlog, args.summary_chars, False)
        enqueue_seconds = time.monotonic() - started
        stored = await used_memory(client)
        peak = stored

        async def sample_memory() -> None:
            nonlocal peak
            while True:
                peak = max(peak, await used_memory(client))
                await asyncio.sleep(0.5)

        workers = [await start_process(flex_handover_command(), "worker", env=env)
                   for _ in range(args.workers)]  # fmt: skip
        started, own_cpu = time.monotonic(), time.process_time()
        sampler = asyncio.create_task(sample_memory())
        try:
            records = await wait_succeeded(client, flex, handover_ids, 120 + args.backlog / 50)
            drained = time.monotonic() - started
            own_cpu = time.process_time() - own_cpu
            workers_cpu = sum(cpu_seconds(worker.pid) for worker in workers)
        finally:
            sampler.cancel()
            await stop_processes(workers)
        info = await client.info("memory")
        by_handover: dict[str, list[str]] = {}
        for interaction in flex.interactions:
            handover_id = interaction["routing"]["properties"]["attributes"].get("handoverId")
            by_handover.setdefault(handover_id, []).append(interaction["sid"])
        states = Counter(r["state"] or "missing" for r in records.values())
        duplicates = sum(len(sids) - 1 for sids in by_handover.values())
        unrecorded = sum(
            r["state"] == "succeeded" and r["interaction_sid"] not in by_handover.get(h, [])
            for h, r in records.items()
        )
        received = sorted(i["received_at"] for i in flex.interactions)
        steady = (len(received) - 1) / (received[-1] - received[0]) if len(received) > 1 else 0.0
        figures = {
            "backlog": args.backlog,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "enqueue_seconds": enqueue_seconds,
            "enqueued_per_second": args.backlog / enqueue_seconds,
            "drain_seconds": drained,
            "handovers_per_second": args.backlog / drained,
            "first_to_last_interaction_per_second": steady,
            "states": dict(states),
            "lost": args.backlog - states["succeeded"] - states["failed"],
            "failed": states["failed"],
            "duplicates": duplicates,
            "succeeded_without_that_interaction": unrecorded,
            "interactions": len(flex.interactions),
            "queue_left": await client.zcard(redis_keys.QUEUE_NAME),
            "used_memory_empty": empty,
            "used_memory_stored": stored,
            "used_memory_peak_sampled": peak,
            "used_memory_peak_info": int(info["used_memory_peak"]),
            "used_memory_after": int(info["used_memory"]),
            "workers_cpu_seconds": workers_cpu,
            "simulator_process_cpu_seconds": own_cpu,
        }
        print(f"backlog: {args.backlog} handovers stored, then {args.workers} workers x "
              f"concurrency {args.concurrency} drain them, Flex latency 0, AOF on")  # fmt: skip
        row("stored in (s)", f"{enqueue_seconds:.1f}")
        row("drained in (s), workers started -> all final", f"{drained:.1f}")
        row("handovers/s (backlog / drain time)", f"{figures['handovers_per_second']:.0f}")
        row("handovers/s (first to last Interaction)", f"{steady:.0f}")
        row("succeeded", states["succeeded"])
        row("failed", states["failed"])
        row("lost", figures["lost"])
        row("duplicate Interactions", duplicates)
        row("succeeded without that Interaction", unrecorded)
        row("queue entries left", figures["queue_left"])
        row("CPU s: workers / this process (simulator)", f"{workers_cpu:.1f} / {own_cpu:.1f}")
        row("Redis used_memory empty (MiB)", f"{empty / 2**20:.1f}")
        row("Redis used_memory stored (MiB)", f"{stored / 2**20:.1f}")
        row("Redis used_memory peak, sampled (MiB)", f"{peak / 2**20:.1f}")
        row("Redis used_memory after (MiB)", f"{figures['used_memory_after'] / 2**20:.1f}")
        ok = (figures["lost"] == 0 and duplicates == 0 and unrecorded == 0
              and states["succeeded"] == args.backlog and figures["queue_left"] == 0)  # fmt: skip
        return figures, ok

    return await with_simulator(work)


async def main(args: argparse.Namespace) -> int:
    flex_handover_command()
    results: dict[str, object] = {"bench": "cost", "machine": machine()}
    described = results["machine"]
    print(f"machine: {described['cpus']} CPUs ({described['cpu_model']}), Python "
          f"{described['python']}, {described['redis_server']}")  # fmt: skip
    ok = True
    for part, run in (("memory", receiver_memory), ("bytes", redis_bytes), ("backlog", backlog)):
        if part in args.parts:
            figures, part_ok = await run(args)
            results[part] = {**figures, "ok": part_ok}
            ok = ok and part_ok
            print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")  # noqa: ASYNC240 - once, after every run
    print("all checks passed" if ok else "CHECKS FAILED")
    return 0 if ok else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    memory = parser.add_argument_group("memory")
    memory.add_argument("--requests", type=int, default=1_000_000, help="tool calls")
    memory.add_argument("--chunks", type=int, default=20, help="RSS samples")
    memory.add_argument("--connections", type=int, default=64)
    memory.add_argument("--threads", type=int, default=1, help="wrk threads")
    memory.add_argument("--generator", choices=("wrk", "python"))
    memory.add_argument("--warmup-seconds", type=float, default=5.0)
    sizes = parser.add_argument_group("bytes and backlog")
    sizes.add_argument("--records", type=int, default=10_000, help="handovers for the bytes part")
    sizes.add_argument("--summary-chars", type=int, default=400)
    sizes.add_argument("--backlog", type=int, default=100_000)
    sizes.add_argument("--workers", type=int, default=2, help="worker processes (backlog)")
    sizes.add_argument("--concurrency", type=int, default=500, help="per worker")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
