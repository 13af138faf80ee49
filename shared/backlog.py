"""How long the queue is and how long its head has waited: one cheap Redis read.

The backlog is the arq queue itself (see `shared.connections`): a sorted set of
job ids scored by when each job is due, in milliseconds. ZCARD is its depth and
the lowest score is the job due first, so the oldest wait is `now` minus that
score. Both come from one pipelined round trip (ZCARD, ZRANGE 0 0 WITHSCORES), O(1)
and O(log N) in Redis whatever the backlog, then one HGET of the head handover's
`created_at`: cheap enough for every scrape. A priority's head start
(`shared.queue_order`) scores a job as if it had arrived earlier; its wait counts
from when it arrived. The head is the job due first, not always the one that
has waited longest: behind an urgent handover, a normal one may have waited up
to the head start longer (HANDOVER_PRIORITY_HEAD_START_SECONDS), and the figure
is the head's wait. Finding the longest wait exactly would mean reading every
job's record.

What the figures include, as arq keeps them: a running job stays in the queue
(scored by when it was due) until its run ends, and a job handed back for a later
run is re-scored to when it is due again, so a retry waiting out its delay is not
"waiting". Hand-back jobs share the queue and are counted with the handovers.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from shared import redis_keys


@dataclass(frozen=True)
class Backlog:
    """The queue's depth, and how long its longest-due job has been due
    (None: the queue is empty; 0 when the first job is not due yet)."""

    depth: int
    oldest_waiting_seconds: float | None


async def read_backlog(
    redis: aioredis.Redis, now: float, queue: str = redis_keys.QUEUE_NAME
) -> Backlog:
    """`now` in epoch seconds. Redis errors propagate."""
    pipeline = redis.pipeline(transaction=False)
    pipeline.zcard(queue)
    pipeline.zrange(queue, 0, 0, withscores=True)
    depth, head = await pipeline.execute()
    created_at = None
    handover_id = head_handover_id(head)
    if handover_id is not None:
        created_at = await cast(  # redis-py types the asyncio client's commands as sync-or-async
            Awaitable[str | bytes | None],
            redis.hget(redis_keys.handover_key(handover_id), "created_at"),
        )
    return backlog_of(int(depth), head, now, float(created_at) if created_at else None)


def head_handover_id(head: list[tuple[object, float]]) -> str | None:
    """The handover id of a handover's delivery job at the head (not a hand-back's)."""
    if not head:
        return None
    job_id = head[0][0].decode() if isinstance(head[0][0], bytes) else str(head[0][0])
    if job_id.startswith(redis_keys.HAND_BACK_JOB_PREFIX):
        return None
    if not job_id.startswith(redis_keys.HANDOVER_JOB_PREFIX):
        return None
    return job_id.removeprefix(redis_keys.HANDOVER_JOB_PREFIX)


def backlog_of(
    depth: int, head: list[tuple[object, float]], now: float, created_at: float | None = None
) -> Backlog:
    """The `Backlog` of a ZCARD and a `ZRANGE 0 0 WITHSCORES` answer (pure), and
    the head handover's `created_at`: a priority's head start
    (`shared.queue_order`) scores a job before it arrived, and it has not
    waited for that part."""
    if not head:
        return Backlog(depth, None)
    due_at = float(head[0][1]) / 1000
    if created_at is not None:
        due_at = max(due_at, created_at)
    return Backlog(depth, max(0.0, now - due_at))
