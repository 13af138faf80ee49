"""arq's own cost per job: a backlog of no-op jobs drained by one worker, in process.

What the queue layer costs before the handover does anything: picking the job
up, arq's start and finish pipelines, its task and timeout wrappers. Run for
arq's stock `Worker` and for the service's `HandoverWorker` (worker.arq_worker), both
against a real Redis, jobs stored as the API stores them (JSON: the handover id and its conversation).
Prints jobs/s and worker-process CPU milliseconds per job (Redis server excluded).

    python bench/arq_noop.py
    python bench/arq_noop.py --jobs 5000 --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from arq.connections import RedisSettings, create_pool
from arq.constants import expires_extra_ms
from arq.worker import Worker, func
from harness import ROOT  # noqa: F401 - puts the project on sys.path

from shared import redis_keys
from shared.arq_jobs import handover_job, job_deserializer, job_serializer
from standins.redis_server import LocalRedisServer
from worker.arq_worker import HandoverWorker

CONVERSATION_SID = "CH" + "0" * 32


async def noop(ctx: dict[str, Any], handover_id: str, conversation_sid: str) -> None:
    return None


async def drain(
    url: str, worker_class: type[Worker], jobs: int, concurrency: int
) -> tuple[float, float]:
    pool = await create_pool(RedisSettings.from_dsn(url))
    await pool.flushall()
    now_ms = int(time.time() * 1000) - jobs  # all ready at once, in order
    for start in range(0, jobs, 1000):
        async with pool.pipeline(transaction=False) as pipe:
            for n in range(start, min(jobs, start + 1000)):
                job_id = f"ho_{n:032x}"
                pipe.psetex(redis_keys.arq_job_key(job_id), expires_extra_ms,
                            handover_job(job_id, CONVERSATION_SID, now_ms))  # fmt: skip
                pipe.zadd(redis_keys.QUEUE_NAME, {redis_keys.handover_job_id(job_id): now_ms + n})
            await pipe.execute()
    worker = worker_class(
        functions=[func(noop, name=redis_keys.HANDOVER_FUNCTION, keep_result=0)],
        queue_name=redis_keys.QUEUE_NAME,
        redis_pool=pool,
        max_jobs=concurrency,
        keep_result=0,
        poll_delay=0.05,
        queue_read_limit=max(concurrency, 100),
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        handle_signals=False,
    )
    run = asyncio.create_task(worker.async_run())
    cpu, started = time.process_time(), time.perf_counter()
    while worker.jobs_complete < jobs:  # noqa: ASYNC110 - arq counts jobs; no event to wait on
        await asyncio.sleep(0.01)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    run.cancel()
    await asyncio.gather(run, *worker.tasks.values(), return_exceptions=True)
    await pool.aclose()
    return jobs / elapsed, cpu * 1000 / jobs


async def main(args: argparse.Namespace) -> int:
    redis = LocalRedisServer()
    redis.start()
    try:
        print(f"arq no-op jobs: {args.jobs} per run, concurrency {args.concurrency}")
        print(f"{'worker':>15} {'jobs/s':>8} {'cpu ms/job':>10}")
        for _ in range(args.repeat):
            for worker_class in (Worker, HandoverWorker):
                rate, cpu_ms = await drain(redis.url, worker_class, args.jobs, args.concurrency)
                print(f"{worker_class.__name__:>15} {rate:>8.0f} {cpu_ms:>10.3f}")
    finally:
        redis.close()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
