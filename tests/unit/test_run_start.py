"""The job's Redis steps folded into scripts: `begin_run` (take the claim, read
the record, mark it running) and the final write that releases the claim.

Against the suite's real Redis (the `redis` fixture): these are Lua scripts.
"""

from __future__ import annotations

import time

import pytest

from shared import redis_keys
from shared.model import (
    HandoverError,
    HandoverRequest,
    Identity,
    Status,
    new_handover_id,
    new_handover_record,
)
from shared.store import (
    CLAIM_BUSY,
    CLAIM_HELD,
    FINAL,
    MISSING,
    OTHER_CONVERSATION,
    ClaimRelease,
    HandoverStore,
)
from tests.support.values import CONVERSATION_SID
from worker.claim import DeliveryClaims, claim_value

CLAIM = redis_keys.claim_key(CONVERSATION_SID)


@pytest.fixture
def store(redis) -> HandoverStore:
    return HandoverStore(redis, status_ttl_seconds=3600)


@pytest.fixture
def claims(redis) -> DeliveryClaims:
    return DeliveryClaims(redis, ttl_seconds=30)


@pytest.fixture
async def handover_id(redis) -> str:
    handover_id = new_handover_id()
    request = HandoverRequest(CONVERSATION_SID, Identity.parse("whatsapp:+14155550123"), "default")
    record = new_handover_record(handover_id, request, time.time())
    await redis.hset(
        redis_keys.handover_key(handover_id), mapping={**record, "next_attempt_at": "1.5"}
    )
    return handover_id


async def test_begin_takes_the_claim_and_marks_the_record_running(
    store, claims, redis, handover_id
):
    start, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert start.outcome == CLAIM_HELD
    assert claim is not None and claim.key == CLAIM
    assert claim.value.startswith(handover_id + ":")
    assert await redis.get(CLAIM) == claim.value
    assert 29_000 < await redis.pttl(CLAIM) <= 30_000
    assert start.record.handover_id == handover_id
    assert start.record.state is Status.RUNNING
    assert start.record.next_attempt_at is None
    assert await redis.hget(redis_keys.handover_key(handover_id), "state") == "running"


async def test_begin_while_another_run_holds_the_claim_writes_nothing(
    store, claims, redis, handover_id
):
    await redis.set(CLAIM, claim_value("ho_other", "run"), px=30_000)
    start, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert (start.outcome, claim) == (CLAIM_BUSY, None)
    assert start.holder == claim_value("ho_other", "run")
    assert await redis.hget(redis_keys.handover_key(handover_id), "state") == "queued"
    assert await redis.get(CLAIM) == claim_value("ho_other", "run")


async def test_begin_on_a_final_or_missing_record_takes_no_claim(store, claims, redis, handover_id):
    await redis.hset(redis_keys.handover_key(handover_id), "state", "succeeded")
    start, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert (start.outcome, start.state, claim) == (FINAL, Status.SUCCEEDED, None)
    start, claim = await claims.begin(store, new_handover_id(), CONVERSATION_SID)
    assert (start.outcome, claim) == (MISSING, None)
    assert await redis.exists(CLAIM) == 0


async def test_begin_run_for_another_conversations_claim_takes_nothing(store, redis, handover_id):
    """The job's conversation names the claim; the script checks it is the record's."""
    other = redis_keys.claim_key("CH" + "0" * 32)
    start = await store.begin_run(handover_id, "CH" + "0" * 32, other, "run", 30_000)
    assert (start.outcome, start.conversation_sid) == (OTHER_CONVERSATION, CONVERSATION_SID)
    assert await redis.exists(other, CLAIM) == 0
    assert await redis.hget(redis_keys.handover_key(handover_id), "state") == "queued"


async def test_begin_reads_a_bytes_client(redis_server, handover_id):
    """The worker's Redis (arq's pool) answers bytes."""
    from redis.asyncio import Redis

    raw = Redis.from_url(redis_server.url)
    try:
        start, claim = await DeliveryClaims(raw, 5).begin(HandoverStore(raw, 3600), handover_id)
        assert start.outcome == CLAIM_HELD and start.record.handover_id == handover_id
        assert await HandoverStore(raw, 3600).mark_succeeded(
            handover_id, "KD1", None, release=claim
        )
        assert claim.released is True
    finally:
        await raw.aclose()


async def test_a_final_write_releases_the_runs_own_claim(store, claims, redis, handover_id):
    _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert await store.mark_succeeded(handover_id, "KD" + "1" * 32, None, release=claim)
    assert claim.released is True
    assert await redis.exists(CLAIM) == 0
    assert await redis.hget(redis_keys.handover_key(handover_id), "state") == "succeeded"


async def test_a_final_write_leaves_a_claim_another_run_took_since(store, redis, handover_id):
    await redis.set(CLAIM, claim_value(handover_id, "newer-run"))
    mine = ClaimRelease(CLAIM, claim_value(handover_id, "expired-run"))
    assert await store.mark_failed(handover_id, HandoverError("no"), release=mine)
    assert mine.released is False
    assert await redis.get(CLAIM) == claim_value(handover_id, "newer-run")
    assert await redis.hget(redis_keys.handover_key(handover_id), "state") == "failed"


async def test_a_final_write_on_an_expired_record_still_releases_the_claim(store, claims, redis):
    await redis.set(CLAIM, "ho_gone:run")
    claim = ClaimRelease(CLAIM, "ho_gone:run")
    assert not await store.mark_succeeded("ho_gone", "KD1", None, release=claim)
    assert claim.released is True
    assert await redis.exists(CLAIM) == 0


async def test_releasing_releases_unless_a_final_write_did(store, claims, redis, handover_id):
    _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    with pytest.raises(RuntimeError):
        async with claims.releasing(claim, handover_id):
            raise RuntimeError("a retry, an error")
    assert claim.released is True and await redis.exists(CLAIM) == 0

    _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    async with claims.releasing(claim, handover_id):
        await store.mark_succeeded(handover_id, "KD1", None, release=claim)
        await redis.set(CLAIM, "ho_next:run")  # the next holder, after our release
    assert await redis.get(CLAIM) == "ho_next:run"
