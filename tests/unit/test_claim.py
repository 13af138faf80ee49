"""worker.claim: one run per conversation may call Twilio.

Against the suite's real Redis (the `redis` fixture): fakeredis needs the
optional Lua runtime for scripts, and the compare-and-delete script is the
thing under test.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared import redis_keys
from shared.settings import Settings
from tests.support.values import CONVERSATION_SID
from worker.claim import DeliveryClaims, claim_value

HANDOVER = "ho_" + "1" * 32
OTHER = "ho_" + "2" * 32
KEY = redis_keys.claim_key(CONVERSATION_SID)


@pytest.fixture
def claims(redis) -> DeliveryClaims:
    return DeliveryClaims(redis, ttl_seconds=30)


async def test_take_sets_handover_and_run_token_with_the_ttl(claims, redis):
    value = await claims.take(CONVERSATION_SID, HANDOVER)
    assert value is not None and value.startswith(HANDOVER + ":")
    assert await redis.get(KEY) == value
    assert 29_000 < await redis.pttl(KEY) <= 30_000
    assert await claims.holder(CONVERSATION_SID) == HANDOVER


async def test_second_take_is_refused_while_held_even_for_the_same_handover(claims):
    first = await claims.take(CONVERSATION_SID, HANDOVER)
    assert await claims.take(CONVERSATION_SID, HANDOVER) is None
    assert await claims.take(CONVERSATION_SID, OTHER) is None
    assert await claims.release(CONVERSATION_SID, first)
    assert await claims.take(CONVERSATION_SID, OTHER) is not None


async def test_each_run_gets_its_own_token(claims):
    first = await claims.take(CONVERSATION_SID, HANDOVER)
    await claims.release(CONVERSATION_SID, first)
    second = await claims.take(CONVERSATION_SID, HANDOVER)
    assert first != second


async def test_release_deletes_only_the_runs_own_claim(claims, redis):
    """A run whose claim expired and was retaken must not free the new holder's."""
    stale = claim_value(HANDOVER, "expired-run")
    current = await claims.take(CONVERSATION_SID, HANDOVER)
    assert await claims.release(CONVERSATION_SID, stale) is False
    assert await redis.get(KEY) == current
    assert await claims.release(CONVERSATION_SID, current) is True
    assert await redis.get(KEY) is None
    assert await claims.release(CONVERSATION_SID, current) is False


async def test_claim_expires_by_itself(redis):
    claims = DeliveryClaims(redis, ttl_seconds=0.05)
    assert await claims.take(CONVERSATION_SID, HANDOVER) is not None
    await asyncio.sleep(0.1)
    assert await claims.take(CONVERSATION_SID, OTHER) is not None


async def test_claims_are_per_conversation(claims):
    assert await claims.take(CONVERSATION_SID, HANDOVER) is not None
    assert await claims.take("CH" + "0" * 32, OTHER) is not None


async def test_hold_yields_whether_held_and_releases(claims, redis):
    async with claims.hold(CONVERSATION_SID, HANDOVER) as held:
        assert held is True
        async with claims.hold(CONVERSATION_SID, OTHER) as second:
            assert second is False
        assert await claims.holder(CONVERSATION_SID) == HANDOVER  # the loser freed nothing
    assert await redis.get(KEY) is None


async def test_hold_releases_on_error(claims, redis):
    with pytest.raises(RuntimeError):
        async with claims.hold(CONVERSATION_SID, HANDOVER):
            raise RuntimeError("boom")
    assert await redis.get(KEY) is None


async def test_hold_releases_when_the_job_is_cancelled(claims, redis):
    """arq cancels running jobs on SIGTERM and re-queues them at once: the
    re-run must find the conversation free."""
    entered = asyncio.Event()

    async def job() -> None:
        async with claims.hold(CONVERSATION_SID, HANDOVER):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(job())
    await entered.wait()
    assert await redis.get(KEY) is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.get(KEY) is None


async def test_holder_reads_a_bytes_client(redis_server):
    """The worker's Redis (arq's pool) answers bytes."""
    raw = Redis.from_url(redis_server.url)
    try:
        await raw.delete(KEY)
        claims = DeliveryClaims(raw, ttl_seconds=5)
        value = await claims.take(CONVERSATION_SID, HANDOVER)
        assert await claims.holder(CONVERSATION_SID) == HANDOVER
        assert await claims.release(CONVERSATION_SID, value)
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(retry_budget_seconds=120, lookup_grace_seconds=30, attempt_timeout_seconds=1),
    ],
)
def test_the_claim_outlives_a_run_and_expires_before_arq_reruns_a_killed_job(settings):
    assert settings.run_budget_seconds < settings.claim_ttl_seconds < settings.recovery_seconds
