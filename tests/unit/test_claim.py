"""worker.claim: one run per conversation may call Twilio.

Through the claim's live API: `begin` takes it (with the record, in one script),
`releasing` and a final write release it, `ClaimReleaser` compare-and-deletes.
Against the suite's real Redis (the `redis` fixture): fakeredis needs the
optional Lua runtime for scripts, and the scripts are the thing under test.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from shared import redis_keys
from shared.model import HandoverRequest, Identity, new_handover_id, new_handover_record
from shared.redis_client import create_redis
from shared.settings import Settings
from shared.store import CLAIM_BUSY, CLAIM_HELD, MISSING, ClaimRelease, HandoverStore
from tests.support.values import CONVERSATION_SID, new_conversation_sid
from worker.claim import ClaimReleaser, DeliveryClaims, claim_value, release_claims

KEY = redis_keys.claim_key(CONVERSATION_SID)


@pytest.fixture
def claims(redis) -> DeliveryClaims:
    return DeliveryClaims(redis, ttl_seconds=30)


@pytest.fixture
def store(redis) -> HandoverStore:
    return HandoverStore(redis, status_ttl_seconds=3600)


async def new_handover(redis, conversation_sid: str = CONVERSATION_SID) -> str:
    """A queued handover's status record, as the enqueue script writes it."""
    handover_id = new_handover_id()
    request = HandoverRequest(conversation_sid, Identity.parse("whatsapp:+14155550123"), "default")
    record = new_handover_record(handover_id, request, time.time())
    await redis.hset(redis_keys.handover_key(handover_id), mapping=record)
    return handover_id


async def test_begin_sets_handover_and_run_token_with_the_ttl(claims, store, redis):
    handover_id = await new_handover(redis)
    start, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert start.outcome == CLAIM_HELD
    assert claim == ClaimRelease(KEY, claim.value)
    assert claim.value.startswith(handover_id + ":")
    assert await redis.get(KEY) == claim.value
    assert 29_000 < await redis.pttl(KEY) <= 30_000


async def test_a_second_run_is_refused_while_held_even_for_the_same_handover(claims, store, redis):
    first, other = await new_handover(redis), await new_handover(redis)
    _, claim = await claims.begin(store, first, CONVERSATION_SID)
    for handover_id in (first, other):
        start, refused = await claims.begin(store, handover_id, CONVERSATION_SID)
        assert (start.outcome, refused, start.holder) == (CLAIM_BUSY, None, claim.value)
    assert await ClaimReleaser(redis).release(claim)
    start, taken = await claims.begin(store, other, CONVERSATION_SID)
    assert start.outcome == CLAIM_HELD and taken is not None


async def test_each_run_gets_its_own_token(claims, store, redis):
    handover_id = await new_handover(redis)
    _, first = await claims.begin(store, handover_id, CONVERSATION_SID)
    await ClaimReleaser(redis).release(first)
    _, second = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert first.value != second.value


async def test_release_deletes_only_the_runs_own_claim(claims, store, redis):
    """A run whose claim expired and was retaken must not free the new holder's."""
    handover_id = await new_handover(redis)
    releaser = ClaimReleaser(redis)
    stale = ClaimRelease(KEY, claim_value(handover_id, "expired-run"))
    _, current = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert await releaser.release(stale) is False and stale.released is False
    assert await redis.get(KEY) == current.value
    assert await releaser.release(current) is True and current.released is True
    assert await redis.get(KEY) is None
    assert await releaser.release(current) is False


async def test_claim_expires_by_itself(store, redis):
    claims = DeliveryClaims(redis, ttl_seconds=0.05)
    first, other = await new_handover(redis), await new_handover(redis)
    assert (await claims.begin(store, first, CONVERSATION_SID))[1] is not None
    await asyncio.sleep(0.1)
    assert (await claims.begin(store, other, CONVERSATION_SID))[1] is not None


async def test_claims_are_per_conversation(claims, store, redis):
    first = await new_handover(redis)
    elsewhere = await new_handover(redis, new_conversation_sid(1))
    assert (await claims.begin(store, first, CONVERSATION_SID))[1] is not None
    _, claim = await claims.begin(store, elsewhere, new_conversation_sid(1))
    assert claim is not None and claim.key == redis_keys.claim_key(new_conversation_sid(1))


async def test_a_job_without_its_conversation_reads_it_from_the_record(claims, store, redis):
    """A job enqueued by an older version carries the handover id only."""
    handover_id = await new_handover(redis)
    start, claim = await claims.begin(store, handover_id)
    assert start.outcome == CLAIM_HELD and claim.key == KEY
    start, claim = await claims.begin(store, new_handover_id())
    assert (start.outcome, claim) == (MISSING, None)


async def test_a_job_naming_another_conversation_claims_the_records(claims, store, redis):
    """The record's conversation is the one a second Interaction would be for: the
    script refuses the job's claim, and `begin` takes the record's instead."""
    handover_id = await new_handover(redis)
    wrong = redis_keys.claim_key(new_conversation_sid(2))
    start, claim = await claims.begin(store, handover_id, new_conversation_sid(2))
    assert start.outcome == CLAIM_HELD and claim.key == KEY
    assert await redis.exists(wrong) == 0


async def test_releasing_yields_and_releases_and_a_refused_run_frees_nothing(claims, store, redis):
    first, other = await new_handover(redis), await new_handover(redis)
    _, claim = await claims.begin(store, first, CONVERSATION_SID)
    async with claims.releasing(claim, first):
        _, refused = await claims.begin(store, other, CONVERSATION_SID)
        assert refused is None
        assert await redis.get(KEY) == claim.value  # the loser freed nothing
    assert claim.released is True and await redis.get(KEY) is None


async def test_releasing_releases_on_error(claims, store, redis):
    handover_id = await new_handover(redis)
    _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    with pytest.raises(RuntimeError):
        async with claims.releasing(claim, handover_id):
            raise RuntimeError("boom")
    assert await redis.get(KEY) is None


async def test_releasing_releases_when_the_job_is_cancelled(claims, store, redis):
    """arq cancels running jobs on SIGTERM and re-queues them at once: the
    re-run must find the conversation free."""
    handover_id = await new_handover(redis)
    entered = asyncio.Event()

    async def job() -> None:
        _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
        async with claims.releasing(claim, handover_id):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(job())
    await entered.wait()
    assert await redis.get(KEY) is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await redis.get(KEY) is None


async def test_a_release_redis_refused_is_kept_for_the_reconnect(claims, store, redis):
    handover_id = await new_handover(redis)
    _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    unreachable = create_redis("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    gone = DeliveryClaims(unreachable, ttl_seconds=30)
    try:
        async with gone.releasing(claim, handover_id):
            pass
    finally:
        await unreachable.aclose()
    assert gone.unreleased == [claim] and claim.released is None
    await release_claims(redis, gone.unreleased)
    assert claim.released is True and await redis.get(KEY) is None


async def test_begin_and_release_with_a_bytes_client(redis_server, redis):
    """The worker's Redis (arq's pool) answers bytes."""
    handover_id = await new_handover(redis)
    raw = Redis.from_url(redis_server.url)
    try:
        claims = DeliveryClaims(raw, ttl_seconds=5)
        start, claim = await claims.begin(HandoverStore(raw, 3600), handover_id)
        assert start.outcome == CLAIM_HELD and claim.key == KEY
        assert await ClaimReleaser(raw).release(claim)
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
