"""arq delivers at least once; the customer is handed over once.

A job can run again after its worker was killed (SIGKILL: when arq's
in-progress key expires; SIGTERM: at once), and two runs of one handover can
overlap. The conversation's delivery claim keeps overlapping runs off Twilio,
and an attempt left in flight is looked up before anything is sent again.
Real parts: the API, arq workers, Redis and the Flex simulator.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from arq.constants import expires_extra_ms
from arq.worker import Retry

from shared import redis_keys
from shared.arq_jobs import job_serializer
from shared.store import HandoverStore
from tests.support.service import FAST_LOOKUP
from tests.support.values import CONVERSATION_SID, session_header
from worker.claim import DeliveryClaims
from worker.context import HandoverContext
from worker.flex_client import CreatedInteraction, FlexClient
from worker.handover import deliver_handover
from worker.interaction import build_interaction


@pytest.fixture
def start_service(start_service):
    async def start(**overrides: Any):
        return await start_service(**{**FAST_LOOKUP, **overrides})

    return start


@pytest.fixture
async def job_context(redis):
    """Runs `deliver_handover` the way the worker does, without arq around it."""
    contexts: list[HandoverContext] = []

    def make(settings) -> dict[str, Any]:
        context = HandoverContext(
            settings=settings,
            store=HandoverStore(redis, settings.status_ttl_seconds),
            flex=FlexClient(settings),
        )
        contexts.append(context)
        return {"handover": context}

    yield make
    for context in contexts:
        await context.flex.close()


def counts(record: dict[str, Any]) -> tuple[int, int, int]:
    return record["attempts"], record["ambiguous_attempts"], record["lookups"]


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- a run that died mid-attempt --------------------------------------------------------


async def killed_mid_attempt(
    service, redis, *, reached_twilio: bool
) -> tuple[str, CreatedInteraction | None]:
    """A handover whose run counted an attempt, marked it in flight and died
    (SIGKILL) before recording any answer; its claim has since expired."""
    handover_id = await service.hand_over()
    store = HandoverStore(redis, service.settings.status_ttl_seconds)
    claims = DeliveryClaims(redis, service.settings.claim_ttl_seconds)
    _, claim = await claims.begin(store, handover_id, CONVERSATION_SID)
    assert claim is not None
    await store.start_attempt(handover_id)
    await redis.delete(claim.key)  # expired by the time the job runs again
    created = None
    if reached_twilio:
        record = await store.get(handover_id)
        flex = FlexClient(service.settings)
        try:
            target = service.settings.targets[record.request.target]
            payload = build_interaction(
                handover_id, record.request, target, service.settings.flex_workspace_sid
            )
            created = await flex.create_interaction(payload)
        finally:
            await flex.close()
    return handover_id, created


async def test_rerun_after_a_kill_finds_the_interaction_and_sends_nothing(
    start_service, simulator, redis
):
    service = await start_service(worker=False)
    handover_id, created = await killed_mid_attempt(service, redis, reached_twilio=True)

    await service.start_worker()  # arq runs the job again
    record = await service.wait_final(handover_id)

    assert record["state"] == "succeeded", record
    assert record["interaction_sid"] == created.interaction_sid
    assert len(simulator.interactions) == 1
    assert len(simulator.requests) == 1  # only the lost run's
    # The lost attempt counts as ambiguous; one lookup settled it.
    assert counts(record) == (1, 1, 1)
    assert await redis.hget(redis_keys.handover_key(handover_id), "found_by_lookup") == "1"


async def test_rerun_after_a_kill_before_twilio_got_the_request_sends_once(
    start_service, simulator, redis
):
    service = await start_service(worker=False)
    handover_id, _ = await killed_mid_attempt(service, redis, reached_twilio=False)

    await service.start_worker()
    record = await service.wait_final(handover_id)

    assert record["state"] == "succeeded", record
    assert len(simulator.interactions) == 1
    assert counts(record) == (2, 1, 1)


async def test_job_cancelled_mid_request_then_rerun_makes_one_interaction(
    start_service, simulator, redis
):
    """SIGTERM: arq cancels the running job and re-queues it at once. The claim
    is released on the way out, so the re-run does not wait for its TTL."""
    service = await start_service(HANDOVER_ATTEMPT_TIMEOUT_SECONDS="5")
    simulator.fail_next(500, after_create=True, hang=30)

    handover_id = await service.hand_over()
    await wait_until(lambda: len(simulator.interactions) == 1)
    await service.stop_worker()
    stopped = await service.status(handover_id)
    assert stopped["state"] == "running"
    assert await redis.exists(redis_keys.claim_key(CONVERSATION_SID)) == 0

    await service.start_worker()
    record = await service.wait_final(handover_id)

    assert record["state"] == "succeeded", record
    assert len(simulator.interactions) == 1
    assert len(simulator.requests) == 1
    assert record["interaction_sid"] == simulator.interactions[0]["sid"]
    assert counts(record) == (1, 1, 1)


async def test_a_dead_runs_claim_holds_the_conversation_until_its_ttl(
    start_service, simulator, redis, job_context
):
    """SIGKILL skips the release: the claim's TTL (shorter than arq's wait before
    re-running the job) frees the conversation."""
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    ctx = job_context(service.settings)
    await redis.set(redis_keys.claim_key(CONVERSATION_SID), f"{handover_id}:dead-run", px=300)

    with pytest.raises(Retry):
        await deliver_handover(ctx, handover_id)
    assert simulator.requests == []
    assert (await service.status(handover_id))["state"] == "queued"  # the holder's to write

    await wait_until_claim_expires(redis)
    assert await deliver_handover(ctx, handover_id) == "succeeded"
    assert len(simulator.interactions) == 1


async def wait_until_claim_expires(redis) -> None:
    deadline = time.monotonic() + 5
    while await redis.exists(redis_keys.claim_key(CONVERSATION_SID)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


# --- overlapping runs --------------------------------------------------------------------


async def test_a_second_run_while_the_first_is_sending_hands_the_job_back(
    start_service, simulator, job_context
):
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    ctx = job_context(service.settings)
    simulator.latency = 0.3

    first = asyncio.create_task(deliver_handover(ctx, handover_id))
    await wait_until(lambda: len(simulator.requests) == 1)
    with pytest.raises(Retry):
        await deliver_handover(ctx, handover_id)
    assert await first == "succeeded"
    # The deferred duplicate, when arq runs it again, finds the work done.
    assert await deliver_handover(ctx, handover_id) == "succeeded"

    assert len(simulator.requests) == 1
    assert counts(await service.status(handover_id)) == (1, 0, 0)


async def test_many_concurrent_runs_of_one_job_make_one_interaction(
    start_service, simulator, job_context
):
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    ctx = job_context(service.settings)
    simulator.latency = 0.2

    outcomes = await asyncio.gather(
        *(deliver_handover(ctx, handover_id) for _ in range(10)), return_exceptions=True
    )

    assert all(outcome == "succeeded" or isinstance(outcome, Retry) for outcome in outcomes)
    assert outcomes.count("succeeded") >= 1
    assert len(simulator.interactions) == 1
    assert len(simulator.requests) == 1


def old_job(handover_id: str, enqueue_ms: int) -> bytes:
    """A job record as versions before `shared.arq_jobs.handover_job` wrote it."""
    return job_serializer(
        {"t": 1, "f": redis_keys.HANDOVER_FUNCTION, "a": [handover_id], "k": {}, "et": enqueue_ms}
    )


async def test_two_workers_running_the_same_handover_make_one_interaction(
    start_service, simulator, redis
):
    """A duplicate delivery under another arq job id (a redelivery racing the
    original), picked up by a second worker while the first is sending. The
    duplicate is an older version's job, without the conversation: its run
    must claim the same conversation as the original's."""
    service = await start_service(worker=False)
    other = await start_service(worker=False)
    handover_id = await service.hand_over()
    enqueue_ms = int(time.time() * 1000)
    duplicate = "dup-" + handover_id
    await redis.psetex(
        redis_keys.arq_job_key(duplicate), expires_extra_ms, old_job(handover_id, enqueue_ms)
    )
    await redis.zadd(redis_keys.QUEUE_NAME, {redis_keys.handover_job_id(duplicate): enqueue_ms})
    simulator.latency = 0.3

    await asyncio.gather(service.start_worker(), other.start_worker())
    record = await service.wait_final(handover_id)

    assert record["state"] == "succeeded", record
    assert len(simulator.interactions) == 1
    assert len(simulator.requests) == 1
    assert record["attempts"] == 1


async def test_a_job_from_before_jobs_carried_the_conversation_is_delivered_once(
    start_service, simulator, redis
):
    """An older version's job names the handover only: the run reads the
    conversation from the record first."""
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    await redis.psetex(
        redis_keys.arq_job_key(handover_id),
        expires_extra_ms,
        old_job(handover_id, int(time.time() * 1000)),
    )

    await service.start_worker()
    record = await service.wait_final(handover_id)

    assert record["state"] == "succeeded", record
    assert len(simulator.interactions) == 1
    assert len(simulator.requests) == 1


async def test_fifty_simultaneous_tool_calls_with_two_workers_make_one_interaction(
    start_service, simulator
):
    first = await start_service()
    second = await start_service()
    simulator.latency = 0.1

    results = await asyncio.gather(
        *((first if n % 2 else second).call_tool(session_id=session_header()) for n in range(50))
    )

    ids = {body["handover_id"] for _, body, _ in results}
    assert len(ids) == 1
    assert sorted(status for status, _, _ in results) == [200] * 49 + [202]
    record = await first.wait_final(ids.pop())
    assert record["state"] == "succeeded", record
    assert len(simulator.interactions) == 1
    assert len(simulator.requests) == 1


async def test_a_budget_that_runs_out_while_the_outcome_is_written_sends_nothing_again(
    start_service, simulator, monkeypatch
):
    """The success is written, but its reply is slow and the run budget strikes
    meanwhile: the outcome stands, and no second Interaction follows."""
    from shared.settings import Settings

    monkeypatch.setattr(Settings, "run_budget_seconds", property(lambda self: 1.5))
    original = HandoverStore.mark_succeeded
    replies = 0

    async def slow_reply(self, *args: Any, **kwargs: Any) -> bool:
        nonlocal replies
        replies += 1
        written = await original(self, *args, **kwargs)
        if replies == 1:
            await asyncio.sleep(3)  # the write is applied; its answer is late
        return written

    monkeypatch.setattr(HandoverStore, "mark_succeeded", slow_reply)
    service = await start_service(**FAST_LOOKUP)

    record = await service.wait_final(await service.hand_over(), timeout=20)
    await asyncio.sleep(1.0)  # what a wrongly requeued job would do, it would do now

    record = await service.status(record["handover_id"])
    assert record["state"] == "succeeded" and record["attempts"] == 1, record
    assert len(simulator.interactions) == 1 and len(simulator.requests) == 1
    assert record["aftercare"] == "done"
