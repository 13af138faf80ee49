"""How long the queue is and how long its head has waited: one cheap Redis read.

The backlog is the arq queue itself (see `shared.connections`): a sorted set of
job ids scored by when each job is due, in milliseconds. ZCARD is its depth and
the lowest score is the job due first, so the oldest wait is `now` minus that
score. Both come from one pipelined round trip (ZCARD, ZRANGE 0 0 WITHSCORES), O(1)
and O(log N) in Redis whatever the backlog: cheap enough for every scrape.

What the figures include, as arq keeps them: a running job stays in the queue
(scored by when it was due) until its run ends, and a job handed back for a later
run is re-scored to when it is due again, so a retry waiting out its delay is not
"waiting". Hand-back jobs share the queue and are counted with the handovers.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """One round trip; `now` in epoch seconds. Redis errors propagate."""
    pipeline = redis.pipeline(transaction=False)
    pipeline.zcard(queue)
    pipeline.zrange(queue, 0, 0, withscores=True)
    depth, head = await pipeline.execute()
    return backlog_of(int(depth), head, now)


def backlog_of(depth: int, head: list[tuple[object, float]], now: float) -> Backlog:
    """The `Backlog` of a ZCARD and a `ZRANGE 0 0 WITHSCORES` answer (pure)."""
    if not head:
        return Backlog(depth, None)
    due_at = float(head[0][1]) / 1000
    return Backlog(depth, max(0.0, now - due_at))
