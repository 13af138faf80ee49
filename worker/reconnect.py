"""What a worker leaves behind when it loses Redis, cleared once Redis is back.

When Redis goes away mid-run, or refuses writes (`shared.connections.write_refusal`),
the supervisor (`worker.main`) cancels the running jobs. arq would re-queue them
and the runs would release their delivery claims, but both need Redis writes,
so the in-progress keys and the claims survive (in the AOF, across a Redis
restart) and hold those handovers for `recovery_seconds`. This process knows it
no longer runs them: once Redis takes writes again it deletes those in-progress
keys (the jobs are still in the queue, since arq removes a job only when it
finishes) and releases those claims, so the handovers run again at once. The
in-flight record still makes the next run look an unanswered attempt up before
it sends again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from arq.worker import Worker
from redis.exceptions import RedisError

from shared import redis_keys
from shared.connections import redis_error_text
from shared.store import ClaimRelease
from worker.claim import release_claims

logger = logging.getLogger(f"flex_handover.{__name__}")


@dataclass
class Leftovers:
    job_ids: list[str] = field(default_factory=list)
    claims: list[ClaimRelease] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.job_ids or self.claims)

    def collect(self, worker: Worker, cancelled_job_ids: list[str]) -> None:
        """After `worker` was stopped: its cancelled jobs and unreleased claims."""
        self.job_ids += cancelled_job_ids
        context = worker.ctx.get("handover")
        if context is not None:
            self.claims += context.claims.unreleased
            context.claims.unreleased.clear()

    async def clear(self, redis: aioredis.Redis) -> bool:
        """Delete the in-progress keys and release the claims, through the new
        worker's connection; False if Redis went away again (kept for later)."""
        try:
            if self.job_ids:
                await redis.delete(
                    *(redis_keys.arq_in_progress_key(job_id) for job_id in self.job_ids)
                )
            await release_claims(redis, self.claims)
        except (RedisError, OSError) as exc:
            logger.warning(
                "could not yet free the handovers cut off while Redis was unavailable: %s",
                redis_error_text(exc),
            )
            return False
        logger.info(
            "reconnected: %d handover(s) cut off while Redis was unavailable can run again "
            "(%d claim(s) released)",
            len(self.job_ids),
            len(self.claims),
        )
        self.job_ids, self.claims = [], []
        return True
