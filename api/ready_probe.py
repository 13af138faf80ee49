"""Whether Redis takes writes, for /readyz: a PING also answers while Redis
refuses every write (out of memory, a read-only replica, a failed disk write).

The probe writes a few bytes (PX) at most once per READY_PROBE_REUSE_SECONDS per
process: /readyz needs no credentials, so a flood of probes costs Redis one
small write a second, not one each.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import redis_keys
from shared.connections import write_refusal

READY_PROBE_TTL_MS = 10_000
READY_PROBE_REUSE_SECONDS = 1.0


class ReadyProbe:
    """Whether Redis takes writes. Concurrent and repeated callers share one
    probe's answer for READY_PROBE_REUSE_SECONDS."""

    def __init__(self, redis: aioredis.Redis):
        self._redis = redis
        self._lock = asyncio.Lock()
        self._checked_at = -float("inf")
        self._problem: str | None = None

    async def problem(self) -> str | None:
        """None when ready, else why not (for the operator)."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= READY_PROBE_REUSE_SECONDS:
                self._problem = await self._probe()
                self._checked_at = time.monotonic()
            return self._problem

    async def _probe(self) -> str | None:
        try:
            await self._redis.set(redis_keys.READY_PROBE_KEY, "1", px=READY_PROBE_TTL_MS)
        except (RedisError, OSError) as exc:
            refusal = write_refusal(exc)
            if refusal:
                return f"Redis refuses writes ({refusal}): handovers cannot be stored."
            return "Redis cannot be reached: handovers cannot be stored."
        return None
