"""What `GET /handovers/summary` answers: live counts, the last hour's outcomes, the backlog.

Cheap at scrape time, whatever the number of handovers: one script run
(shared/lua/summary.lua) and the backlog's read (`shared.backlog`), no record read
and no walk of the keyspace. The definitions:

- `queued`: handover jobs due to run now (queue score <= now) that no worker holds
  (no arq in-progress key); `running`: those a worker holds; `retrying`: those due
  later (arq deferred them: a retry's wait, a busy conversation). From the arq queue,
  hand-back jobs apart, so they never drift from what the workers will do. A record
  whose run died says `running` until a worker takes its job again; here it is
  `queued` as soon as its in-progress key has expired.
- `succeeded_last_hour`, `failed_last_hour`: outcomes written in the 60 minutes of
  `throughput` (this one so far and the 59 before it), counted by the write that
  made the handover final (shared/lua/update.lua; a voice handoff's record,
  shared/lua/voice_handoff.lua). A replayed handover that fails again counts again.
- `throughput`: those counts per minute, oldest first, the last the current minute.
- `oldest_waiting_seconds`: `shared.backlog`'s: how long the job at the head of
  the queue has been due (0 when it is not due yet); None when the queue is empty.
- `targets`: the configured target names (what `GET /handovers?target=` takes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from shared import lua_scripts, redis_keys
from shared.backlog import read_backlog

SUMMARY_SCRIPT = lua_scripts.script("shared", "summary.lua")
THROUGHPUT_BUCKETS = 60
SUMMARY_SCAN = 2_000
"""Queue entries the script looks at in each part (due, later): bounds its time."""


@dataclass(frozen=True)
class Bucket:
    start: int
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Summary:
    queued: int
    running: int
    retrying: int
    oldest_waiting_seconds: float | None
    buckets: tuple[Bucket, ...]
    targets: tuple[str, ...]
    generated_at: float

    def to_public(self) -> dict[str, Any]:
        return {
            "counts": {
                "queued": self.queued,
                "running": self.running,
                "retrying": self.retrying,
                "succeeded_last_hour": sum(bucket.succeeded for bucket in self.buckets),
                "failed_last_hour": sum(bucket.failed for bucket in self.buckets),
            },
            "oldest_waiting_seconds": self.oldest_waiting_seconds,
            "throughput": {
                "bucket_seconds": redis_keys.OUTCOME_BUCKET_SECONDS,
                "buckets": [
                    {"start": b.start, "succeeded": b.succeeded, "failed": b.failed}
                    for b in self.buckets
                ],
            },
            "targets": list(self.targets),
            "generated_at": self.generated_at,
        }


def bucket_starts(now: float) -> list[int]:
    """The THROUGHPUT_BUCKETS minutes that end with the one `now` is in, oldest first."""
    current = redis_keys.outcome_bucket(now)
    step = redis_keys.OUTCOME_BUCKET_SECONDS
    return [current - step * back for back in range(THROUGHPUT_BUCKETS - 1, -1, -1)]


class SummaryReader:
    """Reads the summary; the script is registered once, here."""

    def __init__(self, redis: aioredis.Redis, targets: tuple[str, ...]):
        self._redis = redis
        self._targets = targets
        self._script = redis.register_script(SUMMARY_SCRIPT)

    async def read(self, now: float) -> Summary:
        starts = bucket_starts(now)
        keys = [redis_keys.QUEUE_NAME, *(redis_keys.outcome_bucket_key(s) for s in starts)]
        reply, backlog = await asyncio.gather(
            self._script(keys=keys, args=[int(now * 1000), SUMMARY_SCAN]),
            read_backlog(self._redis, now),
        )
        counts = [int(value) for value in reply]
        buckets = tuple(
            Bucket(start, counts[3 + 2 * i], counts[4 + 2 * i]) for i, start in enumerate(starts)
        )
        return Summary(
            queued=counts[0],
            running=counts[1],
            retrying=counts[2],
            oldest_waiting_seconds=backlog.oldest_waiting_seconds,
            buckets=buckets,
            targets=self._targets,
            generated_at=now,
        )
