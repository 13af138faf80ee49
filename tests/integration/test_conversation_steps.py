"""After the outcome, the Conversation: marked (and the bot silenced) after a
success, told the truth after a failure, handed back when the agent's task ends.

Real parts: the API and an arq worker (in this process), Redis, and the Flex
simulator playing Conversations and TaskRouter, read and written by the real
twilio client; TaskRouter's events are signed and sent by the simulator. Each
case reads the Conversation as the simulator holds it and the status record.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from shared import redis_keys
from shared.model import HandoverError
from shared.settings import Settings
from shared.store import HandoverStore
from tests.support.outcomes import FAST_RECOVERY, SLACK_SECONDS
from tests.support.processes import call_tool, clean_env, wait_until
from tests.support.service import FAST_LOOKUP, service_env
from tests.support.values import CONVERSATION_SID, WORKFLOW_SID

BOT_URL = "https://bot.example.com/hooks/messages?key=bot-secret"
CRM_URL = "https://crm.example.com/conversations"
FALLBACK = "We could not reach an agent right now; we will reply here as soon as one is free."


def default_target(**options: Any) -> dict[str, str]:
    """HANDOVER_TARGETS giving the default target (the one `hand_over` uses) options."""
    return {"HANDOVER_TARGETS": json.dumps({"default": {"workflow_sid": WORKFLOW_SID, **options}})}


@pytest.fixture
def start_service(start_service):
    async def start(**overrides: Any):
        return await start_service(**{**FAST_LOOKUP, **overrides})

    return start


def seed_bot(simulator, attributes: dict[str, Any] | str | None = None) -> None:
    if attributes is None:
        attributes = {"crm": {"id": 7, "tier": "gold"}, "language": "de"}
    simulator.seed_conversation(
        CONVERSATION_SID,
        attributes=attributes if isinstance(attributes, str) else json.dumps(attributes),
        webhooks=[
            {"url": BOT_URL, "method": "post", "filters": ["onMessageAdded"]},
            {"url": CRM_URL, "filters": ["onConversationUpdated"]},
        ],
    )


def conversation_requests(simulator, method: str, suffix: str = "") -> list[dict[str, Any]]:
    path = f"/v1/Conversations/{CONVERSATION_SID}{suffix}"
    return [r for r in simulator.api_requests if r["method"] == method and r["path"] == path]


async def send_task_event(simulator, service, task_sid: str, event_type: str, **options: Any):
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{simulator.base_url}/__sim/tasks/{task_sid}/events",
            json={"event_type": event_type, "url": f"{service.url}/webhooks/taskrouter", **options},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def wait_handed_back(service, handover_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        record = await service.status(handover_id)
        if record["handed_back"] is not None:
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.02)


# --- marked after a success -------------------------------------------------------


async def test_a_success_marks_the_conversation_and_keeps_every_attribute(start_service, simulator):
    seed_bot(simulator)
    service = await start_service()

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    assert record["state"] == "succeeded", record
    assert (record["aftercare"], record["conversation_marked"]) == ("done", True), record
    assert record["aftercare_error"] is None
    conversation = simulator.conversation(CONVERSATION_SID)
    attributes = json.loads(conversation["attributes"])
    mark = attributes.pop("flexHandover")
    assert attributes == {"crm": {"id": 7, "tier": "gold"}, "language": "de"}
    assert mark["handoverId"] == handover_id
    assert mark["state"] == "handed_over"
    assert mark["interactionSid"] == record["interaction_sid"]
    assert mark["target"] == "default"
    assert mark["at"].endswith("+00:00")
    # Our write does not wake the bot, and happened once.
    [update] = conversation_requests(simulator, "POST")
    assert update["webhook_enabled"] == "false"
    # No silence_webhooks on this target: both webhooks stay.
    assert [w["url"] for w in conversation["webhooks"]] == [BOT_URL, CRM_URL]
    assert len(simulator.interactions) == 1


@pytest.mark.parametrize("attributes", ['"a note the bot wrote"', "[1, 2]"])
async def test_attributes_that_are_not_an_object_are_never_overwritten(
    start_service, simulator, attributes
):
    seed_bot(simulator, attributes)
    service = await start_service()

    record = await service.wait_final(await service.hand_over())

    assert record["state"] == "succeeded"
    assert record["conversation_marked"] is False
    assert "not a JSON object" in record["aftercare_error"]
    assert simulator.conversation(CONVERSATION_SID)["attributes"] == attributes
    assert conversation_requests(simulator, "POST") == []


async def test_marking_that_keeps_failing_never_fails_or_resends_the_handover(
    start_service, simulator, caplog
):
    seed_bot(simulator)
    simulator.fail_next(503, route="conversations", count=10)
    service = await start_service()

    record = await service.wait_final(await service.hand_over())

    assert record["state"] == "succeeded" and record["error"] is None, record
    assert (record["aftercare"], record["conversation_marked"]) == ("done", False)
    assert "marking the Conversation" in record["aftercare_error"]
    assert "503" in record["aftercare_error"]
    assert len(conversation_requests(simulator, "GET")) == 3  # tried three times, no more
    assert len(simulator.interactions) == 1 and len(simulator.requests) == 1
    assert "flexHandover" not in simulator.conversation(CONVERSATION_SID)["attributes"]
    assert "the Conversation was not fully updated" in caplog.text


async def test_a_marking_failure_that_passes_is_retried_to_success(start_service, simulator):
    seed_bot(simulator)
    simulator.fail_next(503, route="conversations", count=1)
    service = await start_service()

    record = await service.wait_final(await service.hand_over())

    assert (record["conversation_marked"], record["aftercare_error"]) == (True, None)
    assert "flexHandover" in json.loads(simulator.conversation(CONVERSATION_SID)["attributes"])


# --- the bot silenced, then handed back -------------------------------------------


async def test_the_bot_is_silenced_then_handed_back_when_the_agents_task_ends(
    start_service, simulator
):
    seed_bot(simulator)
    service = await start_service(
        **default_target(silence_webhooks=["https://bot.example.com/"], return_to_bot=True)
    )

    handover_id = await service.hand_over()
    record = await service.wait_final(handover_id)

    conversation = simulator.conversation(CONVERSATION_SID)
    assert [w["url"] for w in conversation["webhooks"]] == [CRM_URL]
    [removed] = record["removed_webhooks"]
    # The status endpoint shows where it pointed, not its query (a token).
    assert removed["url"] == "https://bot.example.com/hooks/messages"
    assert "bot-secret" not in json.dumps(record)

    [task] = simulator.tasks
    sent = await send_task_event(simulator, service, task["sid"], "task.completed", repeat=2)
    outcomes = [json.loads(d["body"])["outcome"] for d in sent["deliveries"]]
    assert outcomes == ["recorded", "duplicate"]
    ended = await wait_handed_back(service, handover_id)

    assert (ended["handed_back"], ended["restored_webhooks"], ended["ended_by"]) == (
        True,
        1,
        "task.completed",
    )
    conversation = simulator.conversation(CONVERSATION_SID)
    mark = json.loads(conversation["attributes"])["flexHandover"]
    assert (mark["handoverId"], mark["state"], mark["endedBy"]) == (
        handover_id,
        "ended",
        "task.completed",
    )
    assert json.loads(conversation["attributes"])["crm"] == {"id": 7, "tier": "gold"}
    restored = [w for w in conversation["webhooks"] if w["url"] == BOT_URL]
    assert len(restored) == 1
    assert (restored[0]["method"], restored[0]["filters"]) == ("post", ["onMessageAdded"])

    # A later, reordered event (the task deleted after it completed) changes nothing.
    again = await send_task_event(simulator, service, task["sid"], "task.deleted")
    assert json.loads(again["deliveries"][0]["body"])["outcome"] == "duplicate"
    assert len(conversation_requests(simulator, "POST", "/Webhooks")) == 1


async def test_without_return_to_bot_the_webhooks_stay_removed(start_service, simulator):
    seed_bot(simulator)
    service = await start_service(**default_target(silence_webhooks=["https://bot.example.com/"]))
    handover_id = await service.hand_over()
    await service.wait_final(handover_id)
    [task] = simulator.tasks

    await send_task_event(simulator, service, task["sid"], "task.canceled")
    ended = await wait_handed_back(service, handover_id)

    assert (ended["handed_back"], ended["restored_webhooks"]) == (True, 0)
    conversation = simulator.conversation(CONVERSATION_SID)
    assert [w["url"] for w in conversation["webhooks"]] == [CRM_URL]
    assert json.loads(conversation["attributes"])["flexHandover"]["state"] == "ended"


# --- the truth after a failure ----------------------------------------------------


async def test_a_failed_handover_posts_the_fallback_message_once(start_service, simulator):
    seed_bot(simulator)
    simulator.fail_next(400, code=20001, message="Invalid channel")
    service = await start_service(
        **default_target(fallback_message=FALLBACK, fallback_author="Support")
    )

    record = await service.wait_final(await service.hand_over())

    assert record["state"] == "failed"
    [message] = simulator.conversation(CONVERSATION_SID)["messages"]
    assert (message["body"], message["author"]) == (FALLBACK, "Support")
    assert json.loads(message["attributes"]) == {
        "flexHandover": {"fallbackFor": record["handover_id"]}
    }
    assert message["webhook_enabled"] == "false"
    assert record["fallback_message_sid"] == message["sid"]
    assert (record["aftercare"], record["aftercare_error"]) == ("done", None)
    # Nothing was marked: the bot keeps answering a customer nobody took.
    assert "flexHandover" not in simulator.conversation(CONVERSATION_SID)["attributes"]


@pytest.mark.parametrize("lost_answer", [{"status": 503}, {"reset": True}])
async def test_a_fallback_post_whose_answer_is_lost_is_looked_up_not_sent_again(
    start_service, simulator, lost_answer
):
    """The message is created, but the worker hears a 503 or a reset: the next
    try finds the marker among the newest messages."""
    simulator.fail_next(400, code=20001, message="Invalid channel")
    simulator.fail_next(200, route="messages", after_create=True)  # the first lookup: as it is
    simulator.fail_next(route="messages", after_create=True, **lost_answer)  # the post
    service = await start_service(**default_target(fallback_message=FALLBACK))

    record = await service.wait_final(await service.hand_over())

    messages = simulator.conversation(CONVERSATION_SID)["messages"]
    assert len(messages) == 1, messages
    assert record["fallback_message_sid"] == messages[0]["sid"]
    assert record["aftercare_error"] is None


async def test_a_success_posts_no_fallback(start_service, simulator):
    service = await start_service(**default_target(fallback_message=FALLBACK))
    record = await service.wait_final(await service.hand_over())
    assert record["state"] == "succeeded"
    assert record["fallback_message_sid"] is None
    assert simulator.conversation(CONVERSATION_SID)["messages"] == []
    assert conversation_requests(simulator, "GET", "/Messages") == []


# --- across a SIGKILL (real processes) --------------------------------------------


async def test_the_fallback_is_posted_once_across_a_sigkilled_worker(
    processes, simulator, redis_server, redis
):
    """The worker is killed after Twilio created the fallback message and before
    its answer came: the job's next run (arq re-runs it once its in-progress key
    expires) finds the record failed with its steps due, looks the message up and
    posts nothing more."""
    env = clean_env(
        **service_env(
            redis_server.url,
            simulator.base_url,
            **FAST_RECOVERY,
            **default_target(fallback_message=FALLBACK),
        )
    )
    settings = Settings.from_env(env, role="worker")
    _, api_url = await processes.start_api(env)
    doomed = await processes.start_worker(env)
    simulator.fail_next(400, code=20001, message="Invalid channel")
    simulator.fail_next(200, route="messages", after_create=True)  # the lookup, as it is
    simulator.fail_next(route="messages", after_create=True, hang=30.0)  # posted, unanswered
    status, body, _ = await call_tool(api_url, CONVERSATION_SID)
    assert status == 202, body
    handover_id = body["handover_id"]

    await wait_until(
        lambda: simulator.conversation(CONVERSATION_SID)["messages"], 10, "the fallback posted"
    )
    doomed.kill()
    killed_at = time.monotonic()
    key = redis_keys.handover_key(handover_id)
    assert await redis.hget(key, "aftercare") == "pending"
    rescuer = await processes.start_worker(env)

    await wait_until(
        lambda: _done(redis, key), settings.recovery_seconds + SLACK_SECONDS, "steps done"
    )
    assert time.monotonic() - killed_at < settings.recovery_seconds + SLACK_SECONDS
    [message] = simulator.conversation(CONVERSATION_SID)["messages"]
    record = await redis.hgetall(key)
    assert record["state"] == "failed"
    assert record["fallback_message_sid"] == message["sid"]
    assert "aftercare_error" not in record
    assert len(conversation_requests(simulator, "POST", "/Messages")) == 1
    assert await redis.exists(redis_keys.claim_key(CONVERSATION_SID)) == 0
    assert await rescuer.terminate() == 0


async def _done(redis, key: str) -> bool:
    return await redis.hget(key, "aftercare") == "done"


# --- ends that come before the outcome ----------------------------------------------


async def wait_tasks(simulator, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(simulator.tasks) < count:
        assert time.monotonic() < deadline, simulator.tasks
        await asyncio.sleep(0.01)
    return simulator.tasks


async def test_the_failing_attempts_task_ending_early_does_not_give_the_bot_back(
    start_service, simulator
):
    """Attempt 1's channel sits in setup, then fails; Flex cancels its task while
    the worker still reads the channel. Attempt 2 reaches the agent: the early
    cancel was not its task's, so the bot stays silenced until the agent's own
    task ends."""
    seed_bot(simulator)
    simulator.next_channels(["setup", "setup", "failed"], error_code=19025)
    service = await start_service(
        **default_target(silence_webhooks=["https://bot.example.com/"], return_to_bot=True)
    )
    handover_id = await service.hand_over()
    [first_task] = await wait_tasks(simulator, 1)
    sent = await send_task_event(simulator, service, first_task["sid"], "task.canceled")
    assert "before the outcome" in json.loads(sent["deliveries"][0]["body"])["reason"]

    record = await service.wait_final(handover_id, timeout=30)
    assert (record["state"], record["attempts"]) == ("succeeded", 2), record
    # The hand-back job judged the early end and let it be.
    await asyncio.sleep(0.5)
    record = await service.status(handover_id)
    assert (record["ended_at"], record["handed_back"]) == (None, None), record
    conversation = simulator.conversation(CONVERSATION_SID)
    assert json.loads(conversation["attributes"])["flexHandover"]["state"] == "handed_over"
    assert [w["url"] for w in conversation["webhooks"]] == [CRM_URL]

    agents_task = simulator.tasks[1]
    assert agents_task["interaction_sid"] == record["interaction_sid"]
    await send_task_event(simulator, service, agents_task["sid"], "task.completed")
    ended = await wait_handed_back(service, handover_id)
    assert (ended["ended_by"], ended["handed_back"], ended["restored_webhooks"]) == (
        "task.completed",
        True,
        1,
    )


async def test_the_agents_task_ending_before_the_outcome_is_written_still_hands_back(
    start_service, simulator
):
    """The task that reached the agent ends while the worker still reads its
    channel: the end is kept, and once the handover succeeds it ends it."""
    seed_bot(simulator)
    simulator.next_channels(["setup", "setup", "active"])
    service = await start_service(
        **default_target(silence_webhooks=["https://bot.example.com/"], return_to_bot=True)
    )
    handover_id = await service.hand_over()
    [task] = await wait_tasks(simulator, 1)
    await send_task_event(simulator, service, task["sid"], "task.canceled")

    ended = await wait_handed_back(service, handover_id)

    assert (ended["state"], ended["attempts"]) == ("succeeded", 1)
    assert (ended["ended_by"], ended["handed_back"], ended["restored_webhooks"]) == (
        "task.canceled",
        True,
        1,
    )
    conversation = simulator.conversation(CONVERSATION_SID)
    assert json.loads(conversation["attributes"])["flexHandover"]["state"] == "ended"
    assert sorted(w["url"] for w in conversation["webhooks"]) == sorted([BOT_URL, CRM_URL])


async def test_a_newer_handovers_mark_is_left_alone_by_an_older_hand_back(
    start_service, simulator, redis
):
    seed_bot(simulator)
    service = await start_service(
        **default_target(silence_webhooks=["https://bot.example.com/"], return_to_bot=True)
    )
    handover_id = await service.hand_over()
    await service.wait_final(handover_id)
    [task] = simulator.tasks
    # Meanwhile a newer handover of the conversation marked it (as another deployment might).
    attributes = json.loads(simulator.conversation(CONVERSATION_SID)["attributes"])
    attributes["flexHandover"]["handoverId"] = "ho_" + "f" * 32
    conversation = simulator.conversation(CONVERSATION_SID)
    simulator.seed_conversation(
        CONVERSATION_SID,
        attributes=json.dumps(attributes),
        webhooks=[{"url": w["url"], "filters": w["filters"]} for w in conversation["webhooks"]],
    )

    await send_task_event(simulator, service, task["sid"], "task.completed")
    ended = await wait_handed_back(service, handover_id)

    assert ended["handed_back"] is False
    assert "newer handover" in ended["aftercare_error"]
    after = simulator.conversation(CONVERSATION_SID)
    assert json.loads(after["attributes"]) == attributes  # untouched
    assert [w["url"] for w in after["webhooks"]] == [CRM_URL]  # the bot stays silenced


async def test_a_late_fallback_is_not_posted_over_a_newer_handover(start_service, simulator, redis):
    """Handover A failed and its run died before the fallback; the customer asked
    again and B was handed over. A's job comes back: "no agent" would be untrue."""
    service = await start_service(worker=False, **default_target(fallback_message=FALLBACK))
    first = await service.hand_over()
    store = HandoverStore(redis, 3600)
    await store.mark_failed(first, HandoverError("gave up"), aftercare=True)  # killed here
    second = await service.hand_over()
    assert second != first
    # A's job comes back after B's (its in-progress key had to expire).
    await redis.zadd(
        redis_keys.QUEUE_NAME, {redis_keys.handover_job_id(first): int((time.time() + 1) * 1000)}
    )
    await service.start_worker()

    assert (await service.wait_final(second))["state"] == "succeeded"
    late = await service.wait_final(first)

    assert late["fallback_message_sid"] is None
    assert f"the conversation has {second}" in late["aftercare_error"]
    assert simulator.conversation(CONVERSATION_SID)["messages"] == []
