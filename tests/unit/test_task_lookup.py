"""worker.task_lookup: reading TaskRouter's answer, and polling over the grace window.

The pure parts run without I/O; the polling runs against a scripted stand-in
for `FlexClient.list_task_attributes` and a fake clock; the one Twilio query
runs against the Flex simulator with the real twilio client.
"""

from __future__ import annotations

import json

import pytest

from shared.model import HandoverRequest, Identity
from shared.settings import Settings, Target
from standins.flex_simulator import ASSIGNMENT_STATUSES as SPEC_ASSIGNMENT_STATUSES
from tests.support.values import CONVERSATION_SID, WORKFLOW_SID, WORKSPACE_SID
from worker.errors import FlexError
from worker.flex_client import CreatedInteraction
from worker.interaction import build_interaction
from worker.task_lookup import (
    ASSIGNMENT_STATUSES,
    find_interaction,
    interaction_from_tasks,
    lookup_window_end,
    task_expression,
)

HANDOVER = "ho_" + "a" * 32
KD = "KD" + "1" * 32
UO = "UO" + "2" * 32


def task(handover_id: str = HANDOVER, **extra) -> str:
    attributes = {"handoverId": handover_id, "conversationSid": "CH" + "3" * 32}
    attributes.update(extra)
    return json.dumps(attributes)


# --- pure pieces -------------------------------------------------------------------


def test_task_expression_quotes_the_handover_id():
    assert task_expression(HANDOVER) == f'handoverId == "{HANDOVER}"'


def test_every_assignment_status_is_asked_for():
    assert sorted(ASSIGNMENT_STATUSES) == sorted(SPEC_ASSIGNMENT_STATUSES)


@pytest.mark.parametrize(
    "in_flight_since, now, expected",
    [
        (100.0, 100.5, 102.5),  # a 5xx came back at once: a full window from now
        (100.0, 110.0, 112.0),  # answer lost at the attempt timeout: from now
        (100.0, 400.0, 112.0),  # a run killed long ago: the window has closed
    ],
)
def test_lookup_window_end(in_flight_since, now, expected):
    assert lookup_window_end(in_flight_since, now, attempt_timeout=10.0, grace=2.0) == expected


def test_interaction_from_tasks_reads_flex_attributes():
    found, count = interaction_from_tasks(
        [task(flexInteractionSid=KD, flexInteractionChannelSid=UO)], HANDOVER
    )
    assert found == CreatedInteraction(KD, UO, found_by_lookup=True)
    assert count == 1


def test_interaction_from_tasks_without_flex_sids_still_proves_creation():
    found, _ = interaction_from_tasks(
        [task(flexInteractionSid="", flexInteractionChannelSid=7)], HANDOVER
    )
    assert found == CreatedInteraction(None, None, found_by_lookup=True)


@pytest.mark.parametrize(
    "attributes",
    [[], [task("ho_" + "b" * 32)], ["not json"], ["[1, 2]"], [json.dumps({"handoverId": 1})]],
    ids=["none", "another-handover", "not-json", "not-an-object", "wrong-type"],
)
def test_interaction_from_tasks_finds_nothing(attributes):
    assert interaction_from_tasks(attributes, HANDOVER) == (None, 0)


def test_interaction_from_tasks_keeps_the_first_of_duplicates():
    first = task(flexInteractionSid=KD, flexInteractionChannelSid=UO)
    second = task(flexInteractionSid="KD" + "9" * 32)
    found, count = interaction_from_tasks(["garbage", first, task("ho_other"), second], HANDOVER)
    assert found.interaction_sid == KD
    assert count == 2


# --- polling -------------------------------------------------------------------------


class Clock:
    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedTaskRouter:
    """Answers each query with the next item: a list of attributes, or an error to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.queries: list[tuple] = []

    async def list_task_attributes(self, workspace_sid, expression, statuses):
        self.queries.append((workspace_sid, expression, tuple(statuses)))
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, BaseException):
            raise answer
        return answer


def lookup_settings(**overrides) -> Settings:
    values = {
        "flex_workspace_sid": WORKSPACE_SID,
        "attempt_timeout_seconds": 2.0,
        "lookup_grace_seconds": 1.0,
        "lookup_interval_seconds": 0.25,
    }
    values.update(overrides)
    return Settings(**values)


async def test_polls_until_the_task_appears():
    clock = Clock()
    router = ScriptedTaskRouter([], [], [task(flexInteractionSid=KD)])
    found = await find_interaction(
        router, lookup_settings(), HANDOVER, clock.now, clock=clock, sleep=clock.sleep
    )
    assert found.interaction_sid == KD
    assert clock.sleeps == [0.25, 0.25]
    assert router.queries[0] == (WORKSPACE_SID, task_expression(HANDOVER), ASSIGNMENT_STATUSES)


async def test_no_task_once_the_window_has_passed():
    clock = Clock()
    router = ScriptedTaskRouter()
    found = await find_interaction(
        router, lookup_settings(), HANDOVER, clock.now - 0.1, clock=clock, sleep=clock.sleep
    )
    assert found is None
    assert sum(clock.sleeps) == pytest.approx(1.0)
    assert clock.sleeps[-1] <= 0.25
    assert len(router.queries) == len(clock.sleeps) + 1


async def test_an_attempt_from_long_ago_needs_one_query():
    clock = Clock()
    router = ScriptedTaskRouter()
    found = await find_interaction(
        router, lookup_settings(), HANDOVER, clock.now - 300, clock=clock, sleep=clock.sleep
    )
    assert found is None
    assert (len(router.queries), clock.sleeps) == (1, [])


async def test_a_failed_query_is_an_error_not_a_missing_task():
    clock = Clock()
    error = FlexError("TaskRouter lookup failed: Twilio answered 500", status=500, retryable=True)
    router = ScriptedTaskRouter([], error, [task()])
    with pytest.raises(FlexError) as caught:
        await find_interaction(
            router, lookup_settings(), HANDOVER, clock.now, clock=clock, sleep=clock.sleep
        )
    assert caught.value is error
    assert len(router.queries) == 2


# --- the real client against the simulator ----------------------------------------


async def test_list_task_attributes_failure_is_a_retryable_lookup_error(flex, simulator):
    simulator.fail_next(503, route="tasks", code=20503, message="Service Unavailable")
    with pytest.raises(FlexError) as caught:
        await flex.list_task_attributes(WORKSPACE_SID, task_expression(HANDOVER), ["pending"])
    error = caught.value
    assert error.message == "TaskRouter lookup failed: Twilio answered 503: Service Unavailable"
    assert (error.status, error.code, error.retryable, error.ambiguous) == (503, 20503, True, False)


async def test_list_task_attributes_client_error_is_retryable_too(flex, simulator):
    """A 4xx on a lookup (a key without TaskRouter access) proves nothing either way."""
    simulator.fail_next(403, route="tasks", retry_after="7")
    with pytest.raises(FlexError) as caught:
        await flex.list_task_attributes(WORKSPACE_SID, task_expression(HANDOVER), ["pending"])
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (
        403,
        True,
        7.0,
    )


@pytest.mark.parametrize("status", ["pending", "completed", "canceled"])
async def test_a_task_in_any_status_is_found(flex, simulator, status):
    request = HandoverRequest(CONVERSATION_SID, Identity.parse("whatsapp:+14155550100"), "default")
    payload = build_interaction(HANDOVER, request, Target("default", WORKFLOW_SID), WORKSPACE_SID)
    created = await flex.create_interaction(payload)
    other = build_interaction(
        "ho_" + "b" * 32, request, Target("default", WORKFLOW_SID), WORKSPACE_SID
    )
    await flex.create_interaction(other)
    simulator.tasks[0]["assignment_status"] = status

    attributes = await flex.list_task_attributes(
        WORKSPACE_SID, task_expression(HANDOVER), ASSIGNMENT_STATUSES
    )

    found, count = interaction_from_tasks(attributes, HANDOVER)
    assert found == CreatedInteraction(created.interaction_sid, created.channel_sid, True)
    assert count == 1


# --- one attempt's task, not another's ----------------------------------------------


def test_the_expression_names_the_attempt_when_it_has_an_id():
    assert task_expression(HANDOVER, "at_0123") == 'handoverAttempt == "at_0123"'
    assert task_expression(HANDOVER, None) == f'handoverId == "{HANDOVER}"'


def test_another_attempts_task_is_no_proof_for_this_one():
    """After a channel failed, its task carries the same handover id: it says
    nothing about the attempt now in flight, and is no duplicate either."""
    failed_attempt = task(handoverAttempt="at_1", flexInteractionSid=KD)
    this_attempt = task(handoverAttempt="at_2", flexInteractionSid="KD" + "9" * 32)
    assert interaction_from_tasks([failed_attempt], HANDOVER, "at_2") == (None, 0)
    found, count = interaction_from_tasks([failed_attempt, this_attempt], HANDOVER, "at_2")
    assert (found.interaction_sid, count) == ("KD" + "9" * 32, 1)
    # Without an attempt id (an attempt made before they had one): any task of ours.
    assert interaction_from_tasks([failed_attempt], HANDOVER)[1] == 1
    # The attempt id alone is not enough: the handover id is checked too.
    other = task("ho_" + "b" * 32, handoverAttempt="at_2")
    assert interaction_from_tasks([other], HANDOVER, "at_2") == (None, 0)
