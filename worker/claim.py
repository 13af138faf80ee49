"""One run at a time may call Twilio for a conversation.

arq delivers a job at least once: a SIGKILLed worker's job runs again when its
in-progress key expires, SIGTERM re-queues running jobs at once, and an
operator can replay. Two runs that both reach `POST /v1/Interactions` would
hand the customer over twice, so a run first takes the conversation's claim
(`SET NX PX`). Its value names the handover and a random run token, so a run
only ever releases its own claim, even after the claim expired and another
run took it. The TTL (`Settings.claim_ttl_seconds`) outlives any run, and runs
out before arq re-runs a killed worker's job, so a dead holder never blocks
the conversation for good.

On the job's path the claim costs no round trip of its own: `begin` takes it
in the script that reads the record and marks it running
(`HandoverStore.begin_run`), and the final write (`mark_succeeded`,
`mark_failed`) releases it in the same script; `releasing` releases it only
when no final write did (a retry, an error, a cancellation).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared import redis_keys
from shared.store import CLAIM_HELD, ClaimRelease, RunStart

if TYPE_CHECKING:
    from shared.store import HandoverStore

logger = logging.getLogger(f"flex_handover.{__name__}")

# KEYS: the claim. ARGV: the value the run set. Deletes only the run's own claim.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def claim_value(handover_id: str, run_token: str) -> str:
    return f"{handover_id}:{run_token}"


class DeliveryClaims:
    def __init__(self, redis: aioredis.Redis, ttl_seconds: float):
        self._redis = redis
        self._ttl_ms = int(ttl_seconds * 1000)
        self._release = redis.register_script(_RELEASE_SCRIPT)
        self.unreleased: list[ClaimRelease] = []
        """Claims a run could not release because Redis was gone: the worker
        process releases them once it reaches Redis again (worker.main)."""

    async def take(self, conversation_sid: str, handover_id: str) -> str | None:
        """The claim's value if this run now holds it; None while another run does."""
        value = claim_value(handover_id, secrets.token_hex(8))
        taken = await self._redis.set(
            redis_keys.claim_key(conversation_sid), value, nx=True, px=self._ttl_ms
        )
        return value if taken else None

    async def release(self, conversation_sid: str, value: str) -> bool:
        """Compare-and-delete: False when the claim had expired (and maybe been retaken)."""
        return bool(await self._release(keys=[redis_keys.claim_key(conversation_sid)], args=[value]))

    async def holder(self, conversation_sid: str) -> str | None:
        """The handover id holding the claim, for a log line."""
        value = await self._redis.get(redis_keys.claim_key(conversation_sid))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        return text.rpartition(":")[0] or None

    async def begin(
        self, store: HandoverStore, handover_id: str
    ) -> tuple[RunStart, ClaimRelease | None]:
        """Read the record and, unless it is missing or final, take the claim and
        mark the record running: one round trip. The claim is returned when held;
        release it with a final write or `releasing`."""
        value = claim_value(handover_id, secrets.token_hex(8))
        start = await store.begin_run(handover_id, redis_keys.CLAIM_KEY_PREFIX, value, self._ttl_ms)
        if start.outcome != CLAIM_HELD or start.record is None:
            return start, None
        return start, ClaimRelease(redis_keys.claim_key(start.record.request.conversation_sid), value)

    @asynccontextmanager
    async def hold(self, conversation_sid: str, handover_id: str) -> AsyncIterator[bool]:
        """Yields whether this run holds the claim; releases it on the way out,
        cancelled or not."""
        value = await self.take(conversation_sid, handover_id)
        if value is None:
            yield False
            return
        async with self.releasing(ClaimRelease(redis_keys.claim_key(conversation_sid), value), handover_id):
            yield True

    @asynccontextmanager
    async def releasing(self, claim: ClaimRelease, handover_id: str) -> AsyncIterator[None]:
        """Release a held claim on the way out, cancelled or not, unless a final
        write already released it."""
        try:
            yield
        finally:
            if claim.released is None:
                # Shielded: a second cancellation must not leave the claim to its TTL.
                await asyncio.shield(self._release_quietly(claim, handover_id))
            elif not claim.released:
                logger.warning("handover %s: its delivery claim had expired", handover_id)

    async def _release_quietly(self, claim: ClaimRelease, handover_id: str) -> None:
        """A failed release must not replace the run's own outcome: the TTL ends the claim."""
        try:
            claim.released = bool(await self._release(keys=[claim.key], args=[claim.value]))
            if not claim.released:
                logger.warning("handover %s: its delivery claim had expired", handover_id)
        except RedisError as exc:
            self.unreleased.append(claim)
            logger.warning(
                "handover %s: could not release the delivery claim (released on reconnect, "
                "or it expires by itself): %s",
                handover_id,
                exc,
            )


async def release_claims(redis: aioredis.Redis, claims: list[ClaimRelease]) -> None:
    """Compare-and-delete claims that runs of this process took through an
    earlier connection (see `worker.reconnect`)."""
    release = redis.register_script(_RELEASE_SCRIPT)
    for claim in claims:
        claim.released = bool(await release(keys=[claim.key], args=[claim.value]))
