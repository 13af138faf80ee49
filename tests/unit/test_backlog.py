"""HANDOVER_MAX_PENDING inside the enqueue script: a cap on live handovers.

Against the suite's real Redis (the `redis` fixture): the script is the thing
under test. The backlog is the arq queue's ZCARD, so "a handover stops being
live" is simulated as arq does it: the job leaves the queue (ZREM) when its
run ends, whatever the outcome. No worker, no API.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import redis_keys
from shared.connections import BACKLOG_RETRY_AFTER_SECONDS, Enqueuer
from shared.model import HandoverError, HandoverRequest, Identity, Status
from shared.settings import Settings
from shared.store import HandoverStore
from tests.support.values import new_conversation_sid

NO_RATE_LIMITS = {"rate_limit_per_conversation": 0, "rate_limit_per_identity": 0}


def request(conversation: int) -> HandoverRequest:
    return HandoverRequest(
        new_conversation_sid(conversation), Identity.parse("whatsapp:+14155550123"), "default"
    )


async def everything(redis) -> dict[str, str]:
    """Every key with its type and content: to show a refusal wrote nothing."""
    state = {}
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        if kind == "hash":
            state[key] = str(sorted((await redis.hgetall(key)).items()))
        elif kind == "zset":
            state[key] = str(await redis.zrange(key, 0, -1, withscores=True))
        else:
            state[key] = f"{kind}:{await redis.dump(key)!r}"
    return state


async def finish(redis, store: HandoverStore, handover_id: str, state: Status) -> None:
    """A run ends as the worker and arq end it: the final write, then arq's ZREM."""
    if state is Status.SUCCEEDED:
        await store.mark_succeeded(handover_id, "KD" + "1" * 32, None)
    else:
        await store.mark_failed(handover_id, HandoverError("Twilio answered 400", 400))
    await redis.zrem(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(handover_id))


async def test_past_the_cap_a_new_handover_is_refused_and_nothing_is_stored(redis):
    enqueuer = Enqueuer(redis, Settings(max_pending=3, **NO_RATE_LIMITS))
    stored = [await enqueuer.enqueue(request(n)) for n in range(3)]
    assert all(result.created for result in stored)
    before = await everything(redis)

    refused = await enqueuer.enqueue(request(99))

    assert refused.backlog_full and not refused.created
    assert refused.handover_id == "" and refused.state is None
    assert refused.retry_after_seconds == BACKLOG_RETRY_AFTER_SECONDS
    assert await everything(redis) == before


async def test_a_repeat_call_gets_its_live_handover_back_even_when_full(redis):
    enqueuer = Enqueuer(redis, Settings(max_pending=2, **NO_RATE_LIMITS))
    first = await enqueuer.enqueue(request(1))
    await enqueuer.enqueue(request(2))

    again = await enqueuer.enqueue(request(1))

    assert not again.backlog_full and not again.created
    assert (again.handover_id, again.state) == (first.handover_id, Status.QUEUED)


async def test_room_frees_as_runs_end_whatever_their_outcome(redis):
    settings = Settings(max_pending=2, **NO_RATE_LIMITS)
    enqueuer, store = Enqueuer(redis, settings), HandoverStore(redis, settings.status_ttl_seconds)
    ok = await enqueuer.enqueue(request(1))
    doomed = await enqueuer.enqueue(request(2))
    assert (await enqueuer.enqueue(request(3))).backlog_full

    await finish(redis, store, ok.handover_id, Status.SUCCEEDED)
    assert (await enqueuer.enqueue(request(3))).created
    assert (await enqueuer.enqueue(request(4))).backlog_full
    await finish(redis, store, doomed.handover_id, Status.FAILED)
    assert (await enqueuer.enqueue(request(4))).created


async def test_zero_turns_the_cap_off(redis):
    enqueuer = Enqueuer(redis, Settings(max_pending=0, **NO_RATE_LIMITS))
    results = await asyncio.gather(*(enqueuer.enqueue(request(n)) for n in range(300)))
    assert all(result.created for result in results)
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 300


async def test_concurrent_calls_never_overshoot_the_cap(redis):
    """One script run per call, atomically: 200 calls at once (batched into
    pipelines) store exactly the cap, no more."""
    enqueuer = Enqueuer(redis, Settings(max_pending=37, **NO_RATE_LIMITS))
    results = await asyncio.gather(*(enqueuer.enqueue(request(n)) for n in range(200)))
    assert sum(result.created for result in results) == 37
    assert sum(result.backlog_full for result in results) == 163
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 37


# A call for conversation c, or the end (succeeded / failed) of the i-th live run.
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.integers(0, 7)),
        st.tuples(st.sampled_from(["succeed", "fail"]), st.integers(0, 10)),
    ),
    max_size=40,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cap=st.integers(1, 4), operations=OPERATIONS)
async def test_the_cap_holds_for_any_sequence_of_calls_and_outcomes(redis, cap, operations):
    """A model of the rule: a conversation with a live handover gets it back; a
    new one is stored while fewer than `cap` are live, else refused with
    nothing written. Live = queued and not yet ended, so a count that drifted
    (up or down) after any mix of outcomes would break the model."""
    await redis.flushall()
    settings = Settings(max_pending=cap, dedup_seconds=0, **NO_RATE_LIMITS)
    enqueuer, store = Enqueuer(redis, settings), HandoverStore(redis, settings.status_ttl_seconds)
    live: dict[int, str] = {}  # conversation → its live handover, oldest first
    for operation, n in operations:
        if operation == "call":
            before = await everything(redis)
            result = await enqueuer.enqueue(request(n))
            if n in live:
                assert (result.created, result.handover_id) == (False, live[n])
            elif len(live) >= cap:
                assert result.backlog_full
                assert await everything(redis) == before
            else:
                assert result.created
                live[n] = result.handover_id
        elif live:
            conversation = list(live)[n % len(live)]
            state = Status.SUCCEEDED if operation == "succeed" else Status.FAILED
            await finish(redis, store, live.pop(conversation), state)
        assert await redis.zcard(redis_keys.QUEUE_NAME) == len(live)
