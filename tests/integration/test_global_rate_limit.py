"""FLEX_API_MAX_RPS: every worker together stays under the Flex API's rate.

Real parts: the API, two arq workers sharing one Redis bucket, and the Flex
simulator answering 429 (20429) to creates above its rate.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from arq.worker import Retry

from shared import redis_keys
from shared.store import HandoverStore
from tests.support.values import new_conversation_sid, session_header
from worker.context import HandoverContext
from worker.flex_client import FlexClient
from worker.handover import deliver_handover

RATE = 20  # creates per second, the simulator's limit
WORKERS_RATE = 18  # the workers' (FLEX_API_MAX_RPS): 90 % of it, as production should run,
# so that requests bunched by a busy machine's scheduling still fit the simulator's window
NO_API_LIMITS = {"HANDOVER_RATE_LIMIT_PER_IDENTITY": 0, "HANDOVER_RATE_LIMIT_PER_CONVERSATION": 0}


async def hand_over(service, n: int) -> str:
    status, body, _ = await service.call_tool(session_id=session_header(new_conversation_sid(n)))
    assert status == 202, body
    return body["handover_id"]


async def test_two_workers_share_the_rate_and_lose_nothing(start_service, simulator, redis):
    simulator.set_rate_limit(RATE)
    env: dict[str, Any] = {
        **NO_API_LIMITS,
        "FLEX_API_MAX_RPS": WORKERS_RATE,
        "WORKER_CONCURRENCY": 20,
    }
    first = await start_service(**env)
    await start_service(**env)  # a second worker on the same Redis
    count = 2 * RATE

    handover_ids = await asyncio.gather(*(hand_over(first, n) for n in range(count)))
    records = await asyncio.gather(*(first.wait_final(h, timeout=30) for h in handover_ids))

    assert Counter(r["state"] for r in records) == {"succeeded": count}
    created = Counter(
        i["routing"]["properties"]["attributes"]["handoverId"] for i in simulator.interactions
    )
    assert created == dict.fromkeys(handover_ids, 1)  # each once, none lost or doubled
    # Only the start-up burst and late arrivals meet the simulator's limit; each 429
    # leaves a gap that covers the next second, so about one a second at worst.
    assert simulator.throttled() <= 5, [r["outcome"] for r in simulator.requests]
    assert await redis.exists(redis_keys.FLEX_API_RATE_KEY)


async def test_off_keeps_no_bucket(start_service, simulator, redis):
    service = await start_service(**NO_API_LIMITS)
    record = await service.wait_final(await hand_over(service, 1))
    assert record["state"] == "succeeded"
    assert not await redis.exists(redis_keys.FLEX_API_RATE_KEY)


async def test_a_wait_past_the_run_budget_hands_the_job_back_unharmed(
    start_service, simulator, redis
):
    """The next slot is further away than the run can wait: the job goes back to
    arq for that long, with no attempt counted and no error recorded."""
    service = await start_service(worker=False, FLEX_API_MAX_RPS=1, **NO_API_LIMITS)
    settings = service.settings
    handover_id = await hand_over(service, 1)
    seconds, micros = await redis.time()
    queued_for = settings.run_budget_seconds + 10
    await redis.set(redis_keys.FLEX_API_RATE_KEY, int((seconds + queued_for) * 1e6 + micros))
    context = HandoverContext(
        settings=settings,
        store=HandoverStore(redis, settings.status_ttl_seconds),
        flex=FlexClient(settings),
    )
    try:
        with pytest.raises(Retry) as caught:
            await deliver_handover({"handover": context}, handover_id)
        assert queued_for - 1 < caught.value.defer_score / 1000 <= queued_for + 1
        record = await service.status(handover_id)
        assert record["state"] in ("queued", "running")
        assert (record["attempts"], record["error"]) == (0, None)
        assert simulator.requests == []
        assert not await redis.exists(redis_keys.claim_key(new_conversation_sid(1)))

        await redis.delete(redis_keys.FLEX_API_RATE_KEY)  # its slot has come
        assert await deliver_handover({"handover": context}, handover_id) == "succeeded"
        assert (await service.status(handover_id))["attempts"] == 1
    finally:
        await context.flex.close()
