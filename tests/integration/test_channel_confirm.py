"""After a 200 the worker reads the new Interaction's channel before it calls
the handover succeeded; a failed channel is a new attempt, an unreadable one is
left unconfirmed rather than sent twice.

Real parts: the API, an arq worker, Redis and the Flex simulator read by the real
twilio client. The simulator plans each Interaction's channel (`next_channels`)
and fails channel reads on demand (`fail_next(route="channels")`); each case
counts the Interactions it made, the channel reads, and reads the status record.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from shared import redis_keys
from shared.model import HandoverRequest, Identity
from shared.settings import Target
from standins.flex_simulator import Fault
from tests.support.service import FAST_LOOKUP
from tests.support.values import CONVERSATION_SID, WORKFLOW_SID, WORKSPACE_SID
from worker.errors import FlexError
from worker.flex_client import ChannelState
from worker.interaction import build_interaction


@pytest.fixture
def start_service(start_service):
    async def start(**overrides: Any):
        return await start_service(**{**FAST_LOOKUP, **overrides})

    return start


def task_attributes(simulator, interaction: dict[str, Any]) -> dict[str, Any]:
    [task] = [t for t in simulator.tasks if t["interaction_sid"] == interaction["sid"]]
    return task["attributes"]


async def test_an_active_channel_confirms_the_handover(start_service, simulator):
    service = await start_service()

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    [interaction] = simulator.interactions
    assert record["state"] == "succeeded", record
    assert record["interaction_sid"] == interaction["sid"]
    assert (record["channel_status"], record["channel_failures"], record["channel_error"]) == (
        "active",
        0,
        None,
    )
    assert simulator.channel_reads(interaction["sid"]) == 1
    path = f"/v1/Interactions/{interaction['sid']}/Channels/{interaction['channel_sid']}"
    assert ("GET", path) in simulator.paths
    assert task_attributes(simulator, interaction)["handoverAttempt"].startswith("at_")


async def test_a_channel_set_up_then_failed_makes_a_new_attempt(start_service, simulator, redis):
    service = await start_service()
    simulator.next_channels(["setup", "failed"], error_code=19025, error_message="no route")

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    failed, delivered = simulator.interactions
    assert record["state"] == "succeeded", record
    assert (record["interaction_sid"], record["channel_sid"]) == (
        delivered["sid"],
        delivered["channel_sid"],
    )
    assert record["attempts"] == 2 and record["found_by_lookup"] is False
    assert record["channel_status"] == "active"
    assert record["channel_failures"] == 1
    assert record["channel_error"] == {
        "code": 19025,
        "message": "no route",
        "interaction_sid": failed["sid"],
    }
    assert record["error"] is None
    assert simulator.channel_reads(failed["sid"]) == 2  # setup, then failed
    # Each attempt's task carries an id of its own.
    ids = {task_attributes(simulator, i)["handoverAttempt"] for i in (failed, delivered)}
    assert len(ids) == 2
    assert await redis.hget(redis_keys.handover_key(handover_id), "in_flight_since") is None


async def test_a_channel_that_fails_every_time_fails_the_handover_at_max_age(
    start_service, simulator
):
    service = await start_service(
        HANDOVER_MAX_AGE_SECONDS="2",
        HANDOVER_RETRY_BUDGET_SECONDS="0.5",
        HANDOVER_BACKOFF_INITIAL_SECONDS="0.2",
        HANDOVER_BACKOFF_MAX_SECONDS="0.2",
        HANDOVER_REQUEUE_DELAY_SECONDS="0.2",
    )
    simulator.next_channels(["failed"], count=100, error_code=19026, error_message="bad channel")

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id, timeout=20)

    assert record["state"] == "failed", record
    assert record["attempts"] == len(simulator.interactions) >= 2
    assert record["channel_status"] == "failed"
    assert record["channel_failures"] == record["attempts"]
    assert record["error"]["code"] == 19026
    assert "bad channel" in record["error"]["message"]


async def test_an_unreadable_channel_is_unconfirmed_not_sent_twice(start_service, simulator):
    service = await start_service()
    simulator.fail_next(503, route="channels", count=100)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id, timeout=25)

    [interaction] = simulator.interactions
    assert len(simulator.requests) == 1
    assert record["state"] == "succeeded", record
    assert record["interaction_sid"] == interaction["sid"]
    assert record["channel_status"] == "unconfirmed"
    assert record["channel_failures"] == 0
    # Read on the schedule (0.2 s doubling, within 10 s), then left alone.
    assert 100 - simulator.pending_faults("channels") == 5


async def test_the_lookup_is_not_fooled_by_the_failed_attempts_task(
    start_service, simulator, caplog
):
    """Attempt 1's channel fails (its task exists, with the handover's id);
    attempt 2 gets a 500 that created nothing. The lookup for attempt 2 must not
    take attempt 1's task for proof (nor for a duplicate): attempt 3 is sent."""
    caplog.set_level(logging.INFO, logger="flex_handover")
    service = await start_service()
    simulator.next_channels(["failed"])
    creates = 0
    take_fault = simulator._take_fault

    def second_create_is_a_500(route: str) -> Fault | None:
        nonlocal creates
        if route == "interactions":
            creates += 1
            if creates == 2:
                return Fault(500)
        return take_fault(route)

    simulator._take_fault = second_create_is_a_500  # the queue cannot say "the second"

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    failed, delivered = simulator.interactions
    assert [request["status"] for request in simulator.requests] == [200, 500, 200]
    assert record["state"] == "succeeded", record
    assert record["interaction_sid"] == delivered["sid"]
    assert record["found_by_lookup"] is False
    assert (record["attempts"], record["ambiguous_attempts"], record["lookups"]) == (3, 1, 1)
    assert record["channel_error"]["interaction_sid"] == failed["sid"]
    # The failed channel was read once, when it failed: the lookup did not send
    # the run back to it (a lookup by handover id alone would find its task).
    assert record["channel_failures"] == 1
    assert simulator.channel_reads(failed["sid"]) == 1
    assert "duplicate" not in caplog.text
    lookups = [p for m, p in simulator.paths if "/Tasks" in p]
    assert lookups and all("handoverAttempt" in p for p in lookups)
    attempts = [json.dumps(task_attributes(simulator, i)) for i in (failed, delivered)]
    assert all(handover_id in text for text in attempts)


async def test_a_found_task_is_confirmed_too(start_service, simulator):
    """An unanswered attempt whose task turns up is only delivered if its channel is."""
    service = await start_service()
    simulator.next_channels(["failed"])
    simulator.fail_next(500, after_create=True)

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    failed, delivered = simulator.interactions
    assert record["state"] == "succeeded", record
    assert record["interaction_sid"] == delivered["sid"]
    assert record["channel_error"]["interaction_sid"] == failed["sid"]
    assert (record["attempts"], record["lookups"], record["channel_status"]) == (2, 1, "active")


# --- the worker's FlexClient reading a channel (the real twilio client) ---------------


async def created_interaction(flex, simulator) -> tuple[str, str]:
    payload = build_interaction(
        "ho_" + "c" * 32,
        HandoverRequest(CONVERSATION_SID, Identity.parse("whatsapp:+14155550123"), "default"),
        Target("default", WORKFLOW_SID),
        WORKSPACE_SID,
    )
    created = await flex.create_interaction(payload)
    return created.interaction_sid, created.channel_sid


async def test_fetch_channel_reads_status_and_error(flex, simulator):
    simulator.next_channels(["failed"], error_code=19025, error_message="no route")
    kd, uo = await created_interaction(flex, simulator)
    assert await flex.fetch_channel(kd, uo) == ChannelState("failed", 19025, "no route")


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 503},
        {"status": 200, "body": "<html>proxy</html>"},
        {"status": 200, "body": "null"},
        {"status": 200, "body": '{"status": 5}'},
        {"status": 200, "body": "{}"},
        {"reset": True},
    ],
    ids=["503", "html", "null", "status-not-text", "no-status", "reset"],
)
async def test_an_unreadable_channel_is_a_retryable_error_never_failed(flex, simulator, fault):
    kd, uo = await created_interaction(flex, simulator)
    # Two: aiohttp sends an idempotent GET again, once, on a dropped connection.
    simulator.fail_next(route="channels", count=2, **fault)
    with pytest.raises(FlexError) as caught:
        await flex.fetch_channel(kd, uo)
    assert caught.value.retryable and not caught.value.ambiguous
    assert caught.value.message.startswith("reading the channel failed")


async def test_at_max_age_a_found_task_whose_channel_failed_fails_the_handover_once(
    start_service, simulator
):
    """The last run's in-flight attempt turns out to have made an Interaction, but
    its channel failed: at max age that is the end (failed, nothing sent again),
    and the customer hears the truth."""
    target = {"workflow_sid": WORKFLOW_SID, "fallback_message": "Sorry, no agent right now."}
    service = await start_service(
        HANDOVER_TARGETS=json.dumps({"default": target}),
        HANDOVER_MAX_AGE_SECONDS="2",
        HANDOVER_RETRY_BUDGET_SECONDS="0",
        HANDOVER_REQUEUE_DELAY_SECONDS="10",
    )
    simulator.next_channels(["failed"], error_code=19025, error_message="no route")
    simulator.fail_next(500, after_create=True)  # created, but the worker hears a 500

    record = await service.wait_final(await service.hand_over(), timeout=20)

    assert len(simulator.interactions) == 1 and len(simulator.requests) == 1
    assert record["state"] == "failed", record
    assert (record["channel_status"], record["channel_failures"]) == ("failed", 1)
    assert record["lookups"] >= 1
    assert "no route" in record["error"]["message"]
    [message] = simulator.conversation(CONVERSATION_SID)["messages"]
    assert record["fallback_message_sid"] == message["sid"]
