"""An attempt whose answer never came: the worker asks TaskRouter before it sends again.

Real parts: the API, an arq worker, Redis and the Flex simulator, whose
`after_create` faults create the Interaction (and its task) and then lose the
answer. Each case counts the Interactions the simulator made and reads the
status record's attempts, ambiguous attempts and lookups.
"""

from __future__ import annotations

from typing import Any

import pytest

from shared import redis_keys
from tests.support.service import FAST_LOOKUP


@pytest.fixture
def start_service(start_service):
    async def start(**overrides: Any):
        return await start_service(**{**FAST_LOOKUP, **overrides})

    return start


async def found_by_lookup(redis, handover_id: str) -> bool:
    return await redis.hget(redis_keys.handover_key(handover_id), "found_by_lookup") == "1"


def counts(record: dict[str, Any]) -> tuple[int, int, int]:
    return record["attempts"], record["ambiguous_attempts"], record["lookups"]


def assert_is_the_one_interaction(record: dict[str, Any], simulator) -> None:
    [interaction] = simulator.interactions
    assert record["state"] == "succeeded", record
    assert record["interaction_sid"] == interaction["sid"]
    assert record["channel_sid"] == interaction["channel_sid"]
    assert record["error"] is None


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 503, "code": 20503},
        {"reset": True},
    ],
    ids=["500", "503", "reset"],
)
async def test_created_but_answer_lost_is_found_by_lookup(start_service, simulator, redis, fault):
    service = await start_service()
    simulator.fail_next(after_create=True, **fault)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    assert_is_the_one_interaction(record, simulator)
    assert len(simulator.requests) == 1  # no second POST
    assert counts(record) == (1, 1, 1)
    assert await found_by_lookup(redis, handover_id)


async def test_created_but_hung_past_the_attempt_timeout_is_found(start_service, simulator, redis):
    service = await start_service(HANDOVER_ATTEMPT_TIMEOUT_SECONDS="0.3")
    simulator.fail_next(after_create=True, hang=5)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id, timeout=10)

    assert_is_the_one_interaction(record, simulator)
    assert len(simulator.requests) == 1
    assert counts(record) == (1, 1, 1)
    assert await found_by_lookup(redis, handover_id)


async def test_a_task_that_appears_late_within_the_grace_window_is_found(
    start_service, simulator, redis
):
    service = await start_service(HANDOVER_LOOKUP_GRACE_SECONDS="2")
    simulator.task_visible_after = 0.4
    simulator.fail_next(500, after_create=True)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    assert_is_the_one_interaction(record, simulator)
    assert len(simulator.requests) == 1
    assert counts(record) == (1, 1, 1)  # one lookup, polled until the task showed up
    assert await found_by_lookup(redis, handover_id)


async def test_a_server_error_that_created_nothing_is_sent_again(start_service, simulator, redis):
    service = await start_service()
    simulator.fail_next(500)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    assert_is_the_one_interaction(record, simulator)
    assert [request["status"] for request in simulator.requests] == [500, 200]
    assert counts(record) == (2, 1, 1)
    assert not await found_by_lookup(redis, handover_id)


async def test_a_failing_lookup_is_retried_not_read_as_no_task(start_service, simulator, redis):
    service = await start_service()
    simulator.fail_next(500, after_create=True)
    simulator.fail_next(500, route="tasks", count=2)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    assert_is_the_one_interaction(record, simulator)
    assert len(simulator.requests) == 1
    assert counts(record) == (1, 1, 3)  # two failed lookups, then the one that found it
    assert simulator.pending_faults("tasks") == 0
    assert await found_by_lookup(redis, handover_id)


async def test_a_lookup_failing_until_max_age_fails_with_that_reason(start_service, simulator):
    service = await start_service(
        HANDOVER_MAX_AGE_SECONDS="1",
        HANDOVER_RETRY_BUDGET_SECONDS="0.2",
        HANDOVER_REQUEUE_DELAY_SECONDS="0.2",
    )
    simulator.fail_next(500, after_create=True)
    simulator.fail_next(503, route="tasks", count=10_000, message="TaskRouter down")

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    assert record["state"] == "failed"
    assert (
        "TaskRouter lookup failed: Twilio answered 503: TaskRouter down"
        in record["error"]["message"]
    )
    assert "whether attempt 1 created an Interaction is unknown" in record["error"]["message"]
    # Never sent again while the first attempt's outcome was unknown.
    assert len(simulator.requests) == 1
    assert record["attempts"] == 1 and record["ambiguous_attempts"] == 1
    assert record["lookups"] >= 2


async def test_an_unanswered_attempt_at_max_age_is_looked_up_before_failing(
    start_service, simulator, redis
):
    """The last attempt times out as the handover's max age runs out: a final
    lookup finds its Interaction, so the handover ends succeeded, not failed."""
    service = await start_service(
        HANDOVER_MAX_AGE_SECONDS="1",
        HANDOVER_ATTEMPT_TIMEOUT_SECONDS="1.2",
        HANDOVER_RETRY_BUDGET_SECONDS="0",
    )
    simulator.fail_next(after_create=True, hang=5)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id, timeout=10)

    assert_is_the_one_interaction(record, simulator)
    assert len(simulator.requests) == 1
    assert counts(record) == (1, 1, 1)
    assert await found_by_lookup(redis, handover_id)


async def test_a_task_later_than_the_grace_window_makes_a_duplicate(start_service, simulator):
    """The residual risk the README names: TaskRouter slower than the grace window."""
    service = await start_service(HANDOVER_LOOKUP_GRACE_SECONDS="0.1")
    simulator.task_visible_after = 1.0
    simulator.fail_next(500, after_create=True)

    record = await service.wait_final(await service.hand_over())

    assert record["state"] == "succeeded"
    assert len(simulator.interactions) == 2
    assert counts(record) == (2, 1, 1)
