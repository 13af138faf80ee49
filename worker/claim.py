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
(`HandoverStore.begin_run`; the job names the conversation, so the claim's key
is known before the record is read), and the final write (`mark_succeeded`,
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

from shared import lua_scripts, redis_keys
from shared.store import (
    AFTERCARE_HELD,
    CLAIM_HELD,
    MISSING,
    OTHER_CONVERSATION,
    ClaimRelease,
    RunStart,
)

if TYPE_CHECKING:
    from shared.store import HandoverStore

logger = logging.getLogger(f"flex_handover.{__name__}")

RELEASE_SCRIPT = lua_scripts.script("worker", "release_claim.lua")


def claim_value(handover_id: str, run_token: str) -> str:
    return f"{handover_id}:{run_token}"


class DeliveryClaims:
    def __init__(self, redis: aioredis.Redis, ttl_seconds: float):
        self._ttl_ms = int(ttl_seconds * 1000)
        self._releaser = ClaimReleaser(redis)
        self.unreleased: list[ClaimRelease] = []
        """Claims a run could not release because Redis was gone: the worker
        process releases them once it reaches Redis again (worker.main)."""

    async def begin(
        self, store: HandoverStore, handover_id: str, conversation_sid: str | None = None
    ) -> tuple[RunStart, ClaimRelease | None]:
        """Read the record and, unless it is missing or final, take the claim of
        `conversation_sid` (the job's) and mark the record running: one round trip.
        A final record whose Conversation steps are due takes the claim as it is.
        A job from before jobs carried the conversation first reads it from the
        record. The claim is returned when held; release it with a final write or
        `releasing`."""
        if conversation_sid is None:
            conversation_sid = await store.conversation_of(handover_id)
            if conversation_sid is None:
                return RunStart(MISSING), None
        value = claim_value(handover_id, secrets.token_hex(8))
        key = redis_keys.claim_key(conversation_sid)
        start = await store.begin_run(handover_id, conversation_sid, key, value, self._ttl_ms)
        if start.outcome == OTHER_CONVERSATION and start.conversation_sid is not None:
            # The record is the truth (nothing changes its conversation): claim that one.
            logger.warning(
                "handover %s: its job names conversation %s, its record %s; using the record's",
                handover_id,
                conversation_sid,
                start.conversation_sid,
            )
            key = redis_keys.claim_key(start.conversation_sid)
            start = await store.begin_run(
                handover_id, start.conversation_sid, key, value, self._ttl_ms
            )
        if start.outcome not in (CLAIM_HELD, AFTERCARE_HELD) or start.record is None:
            return start, None
        return start, ClaimRelease(key, value)

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
            if not await self._releaser.release(claim):
                logger.warning("handover %s: its delivery claim had expired", handover_id)
        except RedisError as exc:
            self.unreleased.append(claim)
            logger.warning(
                "handover %s: could not release the delivery claim (released on reconnect, "
                "or it expires by itself): %s",
                handover_id,
                exc,
            )


class ClaimReleaser:
    """Compare-and-delete of delivery claims (worker/lua/release_claim.lua), through
    one client: a run's own on its way out, or what runs of this process took
    through an earlier connection (see `worker.reconnect`)."""

    def __init__(self, redis: aioredis.Redis):
        self._script = redis.register_script(RELEASE_SCRIPT)

    async def release(self, claim: ClaimRelease) -> bool:
        """Release `claim` if it still is its run's; sets and returns `claim.released`."""
        claim.released = bool(await self._script(keys=[claim.key], args=[claim.value]))
        return claim.released


async def release_claims(redis: aioredis.Redis, claims: list[ClaimRelease]) -> None:
    """Release claims that runs of this process took through an earlier connection."""
    releaser = ClaimReleaser(redis)
    for claim in claims:
        await releaser.release(claim)
