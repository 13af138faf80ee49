"""shared.connections.Enqueuer: every outcome of a tool call is one run of the
enqueue script, the conversation's first handover and a repeat call alike.

Against the suite's real Redis (the `redis` fixture): the script is the thing under
test. No worker, no API.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from shared import redis_keys
from shared.connections import Enqueuer
from shared.model import HandoverError, HandoverRequest, Identity, Status
from shared.settings import Settings
from shared.store import HandoverStore
from tests.support.values import CONVERSATION_SID

SETTINGS = Settings()
REQUEST = HandoverRequest(CONVERSATION_SID, Identity.parse("whatsapp:+14155550123"), "default")
RATE_KEY = redis_keys.rate_conversation_key(CONVERSATION_SID)


@pytest.fixture
def enqueuer(redis) -> Enqueuer:
    return Enqueuer(redis, SETTINGS)


@pytest.fixture
def script_calls(enqueuer) -> list[tuple[list[str], list]]:
    """Every run of the enqueue script: its keys and arguments."""
    calls: list[tuple[list[str], list]] = []
    run = enqueuer._script

    async def recorded(keys, args):
        calls.append((list(keys), list(args)))
        return await run(keys=keys, args=args)

    enqueuer._script = recorded
    return calls


async def test_a_conversations_first_handover_is_one_script_run(enqueuer, script_calls, redis):
    result = await enqueuer.enqueue(REQUEST)
    assert result.created and result.state is Status.QUEUED
    assert len(script_calls) == 1
    job = json.loads(await redis.get(redis_keys.arq_job_key(result.handover_id)))
    assert job["a"] == [result.handover_id, CONVERSATION_SID]


async def test_a_repeat_call_is_one_script_run_and_not_counted(enqueuer, script_calls, redis):
    first = await enqueuer.enqueue(REQUEST)
    script_calls.clear()

    again = await enqueuer.enqueue(REQUEST)

    assert (again.handover_id, again.created, again.state) == (
        first.handover_id,
        False,
        Status.QUEUED,
    )
    assert len(script_calls) == 1
    assert await redis.get(RATE_KEY) == "1"  # a repeat is not counted


async def test_a_handover_after_a_failed_one_is_stored_in_one_run(enqueuer, script_calls, redis):
    first = await enqueuer.enqueue(REQUEST)
    await HandoverStore(redis, 3600).mark_failed(first.handover_id, HandoverError("no"))
    script_calls.clear()

    second = await enqueuer.enqueue(REQUEST)

    assert second.created and second.handover_id != first.handover_id
    assert len(script_calls) == 1
    assert await redis.get(redis_keys.conversation_key(CONVERSATION_SID)) == second.handover_id
    assert await redis.get(RATE_KEY) == "2"


async def test_simultaneous_calls_for_one_conversation_store_one_handover(enqueuer, redis):
    results = await asyncio.gather(*(enqueuer.enqueue(REQUEST) for _ in range(30)))
    assert sum(result.created for result in results) == 1
    assert len({result.handover_id for result in results}) == 1
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 1
    assert await redis.get(RATE_KEY) == "1"


async def test_a_declined_call_stores_and_counts_nothing(enqueuer, script_calls, redis):
    """A target outside its hours that declines: one script run, no key written."""
    result = await enqueuer.enqueue(REQUEST, store_new=False)

    assert result.declined and not result.created
    assert (result.handover_id, result.state) == ("", None)
    assert len(script_calls) == 1
    assert await redis.keys("*") == []


async def test_a_declined_call_still_answers_the_live_handover(enqueuer, redis):
    """Stored while the target was open, asked again once it closed: the model
    hears about the handover on its way, not "nobody was transferred"."""
    first = await enqueuer.enqueue(REQUEST)

    again = await enqueuer.enqueue(REQUEST, store_new=False)

    assert not again.declined
    assert (again.handover_id, again.created, again.state) == (
        first.handover_id,
        False,
        Status.QUEUED,
    )
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 1


async def test_a_declined_call_after_a_failed_handover_stores_nothing_new(enqueuer, redis):
    first = await enqueuer.enqueue(REQUEST)
    await HandoverStore(redis, 3600).mark_failed(first.handover_id, HandoverError("no"))
    keys_before = sorted(await redis.keys("*"))

    again = await enqueuer.enqueue(REQUEST, store_new=False)

    assert again.declined
    assert sorted(await redis.keys("*")) == keys_before
    assert await redis.get(RATE_KEY) == "1"


async def succeed(redis, handover_id: str) -> HandoverStore:
    store = HandoverStore(redis, 3600)
    assert await store.mark_succeeded(handover_id, "KDsucceeded", "UOsucceeded")
    return store


async def test_a_repeat_call_after_a_success_is_the_same_handover(enqueuer, script_calls, redis):
    first = await enqueuer.enqueue(REQUEST)
    await succeed(redis, first.handover_id)
    script_calls.clear()

    again = await enqueuer.enqueue(REQUEST)

    assert (again.handover_id, again.created, again.state) == (
        first.handover_id,
        False,
        Status.SUCCEEDED,
    )
    assert len(script_calls) == 1
    assert await redis.get(RATE_KEY) == "1"


async def test_a_call_after_the_agents_task_ended_is_a_new_handover(enqueuer, script_calls, redis):
    """The agent gave the customer back (`ended_at`, from /webhooks/taskrouter):
    asking again for a person is a new request, well within the de-duplication
    window, stored in the same one script run."""
    first = await enqueuer.enqueue(REQUEST)
    store = await succeed(redis, first.handover_id)
    await store.record_end(first.handover_id, "task.completed", "WTended", None)
    script_calls.clear()

    second = await enqueuer.enqueue(REQUEST)

    assert second.created and second.state is Status.QUEUED
    assert second.handover_id != first.handover_id
    assert len(script_calls) == 1
    assert await redis.get(redis_keys.conversation_key(CONVERSATION_SID)) == second.handover_id
    assert await redis.get(RATE_KEY) == "2"
    assert (
        await redis.zscore(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(second.handover_id))
        is not None
    )
    # The next repeat call is de-duplicated against the new one.
    assert (await enqueuer.enqueue(REQUEST)).handover_id == second.handover_id


async def test_an_ended_task_does_not_end_a_live_handover(enqueuer, redis):
    """An end event may come before the worker wrote the outcome: while the handover
    is live, a repeat call is still that handover."""
    first = await enqueuer.enqueue(REQUEST)
    await HandoverStore(redis, 3600).record_end(first.handover_id, "task.canceled", "WTx", None)

    again = await enqueuer.enqueue(REQUEST)

    assert (again.handover_id, again.created) == (first.handover_id, False)


async def test_a_declined_call_after_the_task_ended_stores_nothing(enqueuer, redis):
    """Outside the target's hours, a handover whose task ended is no reason to say
    "transferring you": the call is declined."""
    first = await enqueuer.enqueue(REQUEST)
    store = await succeed(redis, first.handover_id)
    await store.record_end(first.handover_id, "task.completed", "WTended", None)
    keys_before = sorted(await redis.keys("*"))

    again = await enqueuer.enqueue(REQUEST, store_new=False)

    assert again.declined and not again.created
    assert sorted(await redis.keys("*")) == keys_before
    assert await redis.get(RATE_KEY) == "1"


async def test_concurrent_calls_share_a_script_run_each_answered_as_if_alone(redis):
    """Calls waiting together go to Redis as one run of the looped script, in
    order: new conversations stored, a repeat within the batch answered with the
    handover stored just before it, a call over its conversation's limit refused."""
    enqueuer = Enqueuer(redis, Settings(rate_limit_per_conversation=1))
    first = await enqueuer.enqueue(REQUEST)  # alone: the rest wait for it and go together
    await HandoverStore(redis, 3600).mark_failed(first.handover_id, HandoverError("no"))
    others = [
        HandoverRequest(f"CH{n:032x}", Identity.parse(f"whatsapp:+1415555{n:04d}"), "default")
        for n in range(20)
    ]
    await redis.config_resetstat()
    results = await asyncio.gather(
        *(enqueuer.enqueue(request) for request in others),
        enqueuer.enqueue(others[0]),
        enqueuer.enqueue(REQUEST),  # over the limit of one new handover per window
    )
    stats = await redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] <= 2
    stored, repeat, limited = results[:20], results[20], results[21]
    assert all(result.created for result in stored)
    assert len({result.handover_id for result in stored}) == 20
    assert (repeat.created, repeat.handover_id) == (False, stored[0].handover_id)
    assert limited.limited_by == "conversation" and not limited.created
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 21
