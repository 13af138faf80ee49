"""shared.connections.Enqueuer: the enqueue script reads the conversation's latest
handover only through KEYS, so a conversation that has one takes a second call.

Against the suite's real Redis (the `redis` fixture): the script is the thing under
test. No worker, no API.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from shared import redis_keys
from shared.connections import MAX_ENQUEUE_CALLS, READ_AGAIN, ConversationContended, Enqueuer
from shared.model import HandoverError, HandoverRequest, Identity, Status, new_handover_record
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


async def test_a_repeat_call_reads_the_live_handover_through_keys(enqueuer, script_calls, redis):
    first = await enqueuer.enqueue(REQUEST)
    script_calls.clear()

    again = await enqueuer.enqueue(REQUEST)

    assert (again.handover_id, again.created, again.state) == (
        first.handover_id,
        False,
        Status.QUEUED,
    )
    (keys, args), (keys_again, args_again) = script_calls
    assert args[-1] == "" and len(keys) == 6
    assert args_again[-1] == first.handover_id
    assert keys_again[-1] == redis_keys.handover_key(first.handover_id)
    assert await redis.get(RATE_KEY) == "1"  # a repeat is not counted


async def test_a_handover_after_a_failed_one_is_stored_on_the_second_run(enqueuer, redis):
    first = await enqueuer.enqueue(REQUEST)
    await HandoverStore(redis, 3600).mark_failed(first.handover_id, HandoverError("no"))

    second = await enqueuer.enqueue(REQUEST)

    assert second.created and second.handover_id != first.handover_id
    assert await redis.get(redis_keys.conversation_key(CONVERSATION_SID)) == second.handover_id
    assert await redis.get(RATE_KEY) == "2"


async def test_a_pointer_that_moved_since_it_was_read_stores_nothing(enqueuer, redis):
    """Told the conversation has no handover (or another one) while it has one, the
    script answers the one it has and writes nothing."""
    first = await enqueuer.enqueue(REQUEST)
    before = {key: await redis.dump(key) for key in await redis.keys("*")}
    record = new_handover_record("ho_" + "9" * 32, REQUEST, time.time())
    keys = [
        redis_keys.conversation_key(CONVERSATION_SID),
        redis_keys.handover_key("ho_" + "9" * 32),
        redis_keys.arq_job_key("ho_" + "9" * 32),
        redis_keys.QUEUE_NAME,
        RATE_KEY,
        redis_keys.rate_identity_key(str(REQUEST.identity)),
    ]
    args = ["ho_" + "9" * 32, b"job", 1, repr(time.time()), json.dumps(record)]
    stale = "ho_" + "8" * 32
    for told, extra_keys in (("", []), (stale, [redis_keys.handover_key(stale)])):
        reply = await enqueuer._script(keys=[*keys, *extra_keys], args=[*args, told])
        assert reply == [READ_AGAIN, first.handover_id, ""]
    assert {key: await redis.dump(key) for key in await redis.keys("*")} == before


async def test_simultaneous_calls_for_one_conversation_store_one_handover(enqueuer, redis):
    results = await asyncio.gather(*(enqueuer.enqueue(REQUEST) for _ in range(30)))
    assert sum(result.created for result in results) == 1
    assert len({result.handover_id for result in results}) == 1
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 1
    assert await redis.get(RATE_KEY) == "1"


async def test_a_pointer_that_moves_on_every_call_ends_in_a_clear_error(enqueuer, redis):
    """Bounded: a conversation whose latest handover changes between each read and
    its check gets ConversationContended (the API answers 503), not a loop."""
    calls = 0

    async def always_moved(keys, args):
        nonlocal calls
        calls += 1
        return [READ_AGAIN, f"ho_{calls:032x}", ""]

    enqueuer._script = always_moved
    with pytest.raises(ConversationContended):
        await enqueuer.enqueue(REQUEST)
    assert calls == MAX_ENQUEUE_CALLS
    assert await redis.keys("*") == []
