"""shared.store: how an attempt in flight is written, settled and counted.

Against the suite's real Redis (the `redis` fixture): the update is a Lua script.
"""

from __future__ import annotations

import time

import pytest

from shared import redis_keys
from shared.model import (
    ChannelFailure,
    HandoverError,
    HandoverRequest,
    Identity,
    Status,
    new_handover_id,
    new_handover_record,
)
from shared.store import HandoverStore
from tests.support.values import CONVERSATION_SID

TIMEOUT = HandoverError("Twilio did not answer within 2s")
REFUSED = HandoverError("Twilio answered 429: slow down", 429, 20429)


@pytest.fixture
def store(redis) -> HandoverStore:
    return HandoverStore(redis, status_ttl_seconds=3600)


@pytest.fixture
async def handover_id(redis) -> str:
    handover_id = new_handover_id()
    request = HandoverRequest(CONVERSATION_SID, Identity.parse("whatsapp:+14155550123"), "default")
    await redis.hset(
        redis_keys.handover_key(handover_id),
        mapping=new_handover_record(handover_id, request, time.time()),
    )
    return handover_id


async def test_start_attempt_counts_and_marks_in_flight_in_one_write(store, handover_id):
    await store.mark_retrying(handover_id, REFUSED, time.time() + 5)
    before = time.time()
    since = await store.start_attempt(handover_id)
    record = await store.get(handover_id)
    assert before <= since <= time.time()
    assert (record.attempts, record.in_flight_since, record.state) == (1, since, Status.RUNNING)
    # No error beside an attempt in flight: if the run dies now, the next run knows.
    assert (record.error, record.next_attempt_at) == (None, None)
    await store.start_attempt(handover_id)
    assert (await store.get(handover_id)).attempts == 2


async def test_an_unanswered_attempt_stays_in_flight_and_counts_as_ambiguous(store, handover_id):
    since = await store.start_attempt(handover_id)
    await store.end_attempt(handover_id, TIMEOUT, ambiguous=True)
    record = await store.get(handover_id)
    assert (record.in_flight_since, record.ambiguous_attempts, record.error) == (since, 1, TIMEOUT)


async def test_a_definite_refusal_takes_the_attempt_out_of_flight(store, handover_id):
    await store.start_attempt(handover_id)
    await store.end_attempt(handover_id, REFUSED, ambiguous=False)
    record = await store.get(handover_id)
    assert (record.in_flight_since, record.ambiguous_attempts, record.error) == (None, 0, REFUSED)


async def test_lookups_are_counted_and_no_task_settles_the_attempt(store, handover_id):
    await store.start_attempt(handover_id)
    await store.end_attempt(handover_id, TIMEOUT, ambiguous=True)
    await store.count_lookup(handover_id)
    await store.count_lookup(handover_id)
    await store.settle_in_flight(handover_id)
    record = await store.get(handover_id)
    assert (record.lookups, record.in_flight_since, record.ambiguous_attempts) == (2, None, 1)


@pytest.mark.parametrize("found_by_lookup", [False, True])
async def test_success_clears_the_attempt_in_flight(store, handover_id, found_by_lookup):
    await store.start_attempt(handover_id)
    await store.end_attempt(handover_id, TIMEOUT, ambiguous=True)
    await store.mark_succeeded(handover_id, "KD" + "1" * 32, None, found_by_lookup=found_by_lookup)
    record = await store.get(handover_id)
    assert record.state is Status.SUCCEEDED
    assert (record.in_flight_since, record.error) == (None, None)
    assert record.found_by_lookup is found_by_lookup
    assert (record.interaction_sid, record.channel_sid) == ("KD" + "1" * 32, None)


async def test_failure_keeps_an_unsettled_attempt_visible(store, handover_id):
    """A handover given up with its last attempt unanswered says so."""
    since = await store.start_attempt(handover_id)
    await store.end_attempt(handover_id, TIMEOUT, ambiguous=True)
    await store.mark_failed(handover_id, TIMEOUT)
    record = await store.get(handover_id)
    assert (record.state, record.in_flight_since) == (Status.FAILED, since)


async def test_writes_never_resurrect_an_expired_record(store, redis):
    missing = new_handover_id()
    await store.start_attempt(missing)
    assert not await store.end_attempt(missing, TIMEOUT, ambiguous=True)
    assert not await store.count_lookup(missing)
    assert not await store.settle_in_flight(missing)
    assert not await store.mark_succeeded(missing, "KD" + "1" * 32, None)
    assert await redis.exists(redis_keys.handover_key(missing)) == 0


async def test_an_attempt_carries_its_id_until_it_ends(store, handover_id):
    await store.start_attempt(handover_id, "at-1")
    assert (await store.get(handover_id)).in_flight_attempt == "at-1"
    await store.end_attempt(handover_id, TIMEOUT, ambiguous=True)
    assert (await store.get(handover_id)).in_flight_attempt == "at-1"
    await store.settle_in_flight(handover_id)
    record = await store.get(handover_id)
    assert (record.in_flight_since, record.in_flight_attempt) == (None, None)


async def test_a_failed_channel_ends_the_attempt_and_is_kept_after_success(store, handover_id):
    failure = ChannelFailure(19025, "Channel validation error", "KD" + "1" * 32)
    await store.start_attempt(handover_id, "at-1")
    await store.channel_failed(
        handover_id, HandoverError("the channel failed", code=19025), failure
    )
    record = await store.get(handover_id)
    assert (record.in_flight_since, record.in_flight_attempt) == (None, None)
    assert (record.channel_status, record.channel_error, record.channel_failures) == (
        "failed",
        failure,
        1,
    )
    await store.start_attempt(handover_id, "at-2")
    assert (await store.get(handover_id)).channel_status is None
    await store.mark_succeeded(
        handover_id, "KD" + "2" * 32, "UO" + "2" * 32, channel_status="active"
    )
    public = (await store.get(handover_id)).to_public()
    assert public["channel_status"] == "active"
    assert public["channel_failures"] == 1
    assert public["channel_error"] == failure.to_dict()
    assert public["error"] is None


@pytest.mark.parametrize("final", ["succeeded", "failed"])
async def test_a_final_record_takes_no_more_delivery_writes(store, handover_id, redis, final):
    """A run that overran its budget while its final write was on its way (or any
    late write) cannot make a finished handover live again."""
    if final == "succeeded":
        await store.mark_succeeded(handover_id, "KD" + "1" * 32, "UO" + "2" * 32)
    else:
        await store.mark_failed(handover_id, REFUSED)
    key = redis_keys.handover_key(handover_id)
    before = await redis.hgetall(key)

    assert await store.mark_retrying(handover_id, TIMEOUT, time.time() + 5) is False
    assert await store.start_attempt(handover_id, "at_1") is None
    assert await store.end_attempt(handover_id, TIMEOUT, ambiguous=True) is False
    assert await store.count_lookup(handover_id) is False
    assert await store.mark_failed(handover_id, TIMEOUT) is None
    assert await store.mark_succeeded(handover_id, "KD" + "3" * 32, None) is None
    assert await redis.hgetall(key) == before
    # The steps after the outcome still write.
    assert await store.finish_aftercare(handover_id, {"aftercare": "done"}) is True
    assert (await redis.hgetall(key))["aftercare"] == "done"


async def test_a_missing_record_starts_no_attempt(store):
    assert await store.start_attempt(new_handover_id(), "at_1") is None


@pytest.mark.parametrize("final", ["succeeded", "failed"])
async def test_a_final_write_answers_the_record_as_it_left_it(store, handover_id, final):
    """The Conversation steps start from the final write's answer, with no read of
    their own: it must be the record as stored, the outcome's fields included."""
    await store.start_attempt(handover_id, "at_1")
    if final == "succeeded":
        finished = await store.mark_succeeded(
            handover_id, "KD" + "1" * 32, "UO" + "2" * 32, attempt_id="at_1", aftercare=True
        )
    else:
        finished = await store.mark_failed(handover_id, REFUSED, aftercare=True)
    assert finished is not None
    assert finished == await store.get(handover_id)
    assert finished.state is Status(final) and finished.aftercare == "pending"
    assert finished.attempts == 1
