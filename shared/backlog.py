"""How far behind the workers are: the arq queue's depth and its oldest waiting handover.

Read from the queue itself (a sorted set scored by the ms time a job may run), so
there is nothing to keep up and nothing that can drift: `depth` is its `ZCARD`
(live handovers, queued, running or retrying, and hand-back jobs: what
HANDOVER_MAX_PENDING caps), and the oldest waiting handover is the first due entry
(score <= now) that is a handover job (not a hand-back) and has no arq in-progress
key (not running). Its age counts from when it could first run: its enqueue, or the
end of its last deferral. Bounded work: at most BACKLOG_SCAN due entries are looked
at, in pages of BACKLOG_PAGE (one round trip each, usually one), and running jobs
are at the head of the queue (a worker takes the lowest scores first), so the first
waiting one is found within the first few pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import redis_keys

BACKLOG_PAGE = 200
BACKLOG_SCAN = 2_000


@dataclass(frozen=True)
class Backlog:
    depth: int
    oldest_waiting_seconds: float | None
    """None when no handover is waiting (none among the first BACKLOG_SCAN due entries)."""


async def read_backlog(redis: aioredis.Redis, now: float) -> Backlog:
    """The queue's depth and how long its oldest waiting handover has waited at `now`."""
    now_ms = int(now * 1000)
    depth = 0
    oldest: float | None = None
    for offset in range(0, BACKLOG_SCAN, BACKLOG_PAGE):
        async with redis.pipeline(transaction=False) as pipe:
            if offset == 0:
                pipe.zcard(redis_keys.QUEUE_NAME)
            pipe.zrangebyscore(
                redis_keys.QUEUE_NAME, "-inf", now_ms, start=offset, num=BACKLOG_PAGE,
                withscores=True,
            )  # fmt: skip
            replies = await pipe.execute()
        if offset == 0:
            depth = int(replies[0])
        due = [(_text(member), float(score)) for member, score in replies[-1]]
        jobs = [(job, score) for job, score in due if not job.startswith(_HAND_BACK)]
        if jobs:
            async with redis.pipeline(transaction=False) as pipe:
                for job, _ in jobs:
                    pipe.exists(redis_keys.arq_in_progress_key(job))
                running = await pipe.execute()
            waiting = [score for (_, score), busy in zip(jobs, running, strict=True) if not busy]
            if waiting:
                oldest = max(0.0, now - waiting[0] / 1000)
                break
        if len(due) < BACKLOG_PAGE:
            break
    return Backlog(depth, oldest)


_HAND_BACK = redis_keys.HAND_BACK_JOB_PREFIX


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
