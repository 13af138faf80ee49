"""Tool call → Redis → arq worker → Flex Interaction → status, with real parts."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from shared import redis_keys
from tests.support.values import (
    BILLING_WORKFLOW_SID,
    CONVERSATION_SID,
    WORKFLOW_SID,
    WORKSPACE_SID,
    new_conversation_sid,
    session_header,
)

IDENTITY_CASES = [
    # X-Identity, channel type, from/customerAddress
    ("whatsapp:+14155550123", "whatsapp", "whatsapp:+14155550123"),
    ("phone:+14155550124", "sms", "+14155550124"),
    ("user_id:+14155550125", "sms", "+14155550125"),
    ("+14155550126", "sms", "+14155550126"),  # a bare number, as the README says
    ("user_id:FX" + "0a" * 16, "web", "FX" + "0a" * 16),
    ("flex_participant:FX" + "1c" * 16, "web", "FX" + "1c" * 16),
    ("email:jane@example.com", "chat", "jane@example.com"),
    ("user_id:customer-42", "chat", "customer-42"),
]


@pytest.mark.parametrize(("identity", "channel_type", "address"), IDENTITY_CASES)
async def test_tool_call_becomes_one_interaction(
    service, simulator, identity, channel_type, address
):
    if channel_type == "web":
        simulator.add_user(address, "Jane Web")
    status, body, _ = await service.call_tool(
        session_id=session_header(), identity=identity, json={"reason": "refund"}
    )
    assert status == 202, body
    assert body["status"] == "queued"
    assert body["message"] == "I'm transferring you to a human agent now."
    assert body["status_url"] == f"/handovers/{body['handover_id']}"

    record = await service.wait_final(body["handover_id"])

    assert record["state"] == "succeeded", record
    assert len(simulator.interactions) == 1
    interaction = simulator.interactions[0]
    assert record["interaction_sid"] == interaction["sid"]
    assert record["channel_sid"] == interaction["channel_sid"]
    assert record["attempts"] == 1
    assert interaction["channel"] == {
        "type": channel_type,
        "initiated_by": "customer",
        "properties": {"media_channel_sid": CONVERSATION_SID},
    }
    properties = interaction["routing"]["properties"]
    assert properties["workspace_sid"] == WORKSPACE_SID
    assert properties["workflow_sid"] == WORKFLOW_SID
    assert properties["task_channel_unique_name"] == "chat"
    attributes = properties["attributes"]
    assert attributes["from"] == address
    assert attributes["customerAddress"] == address
    assert attributes["conversationSid"] == CONVERSATION_SID
    assert attributes["handoverId"] == body["handover_id"]
    assert attributes["reason"] == "refund"
    expected_name = "Jane Web" if channel_type == "web" else address
    assert attributes["customerName"] == expected_name


async def test_named_target_routes_to_its_workflow(service, simulator):
    status, body, _ = await service.call_tool(
        path="/tools/flex-handover/billing", session_id=session_header()
    )
    assert status == 202, body
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded"
    assert record["target"] == "billing"
    properties = simulator.interactions[0]["routing"]["properties"]
    assert properties["workflow_sid"] == BILLING_WORKFLOW_SID
    assert properties["priority"] == 5
    assert properties["attributes"]["department"] == "billing"
    assert properties["attributes"]["handoverTarget"] == "billing"


async def test_form_encoded_tool_input_and_unknown_fields_reach_the_task(service, simulator):
    status, body, _ = await service.call_tool(
        session_id=f"conversations__IS{'1' * 32}/{CONVERSATION_SID}",
        data={"reason": "billing dispute", "summary": "double charge", "order_id": "A-17"},
    )
    assert status == 202, body
    await service.wait_final(body["handover_id"])
    attributes = simulator.interactions[0]["routing"]["properties"]["attributes"]
    assert attributes["reason"] == "billing dispute"
    assert attributes["summary"] == "double charge"
    assert attributes["handoverInput"] == {"order_id": "A-17"}


async def test_plain_json_caller_without_assistant_headers(service, simulator):
    status, body, _ = await service.call_tool(
        identity=None,
        json={
            "conversation_sid": CONVERSATION_SID,
            "identity": "whatsapp:+14155550199",
            "customer_name": "Ana",
        },
    )
    assert status == 202, body
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded"
    attributes = simulator.interactions[0]["routing"]["properties"]["attributes"]
    assert attributes["from"] == "whatsapp:+14155550199"
    assert attributes["customerName"] == "Ana"
    assert "conversation_sid" not in attributes.get("handoverInput", {})


async def test_headers_win_over_body(service, simulator):
    other = new_conversation_sid(7)
    status, body, _ = await service.call_tool(
        session_id=session_header(),
        identity="phone:+14155550100",
        json={"conversation_sid": other, "identity": "whatsapp:+14155550111"},
    )
    assert status == 202, body
    await service.wait_final(body["handover_id"])
    interaction = simulator.interactions[0]
    assert interaction["channel"]["properties"]["media_channel_sid"] == CONVERSATION_SID
    assert interaction["routing"]["properties"]["attributes"]["from"] == "+14155550100"


async def test_webchat_name_lookup_failure_does_not_stop_the_handover(service, simulator):
    flex_user = "FX" + "7b" * 16
    _status, body, _ = await service.call_tool(
        session_id=session_header(), identity=f"user_id:{flex_user}"
    )
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded"
    attributes = simulator.interactions[0]["routing"]["properties"]["attributes"]
    assert attributes["customerName"] == flex_user


async def test_status_record_is_complete_masked_and_expires(service, redis):
    _status, body, _ = await service.call_tool(
        session_id=session_header(), identity="whatsapp:+14155550123"
    )
    record = await service.wait_final(body["handover_id"])
    for field in (
        "handover_id",
        "conversation_sid",
        "target",
        "state",
        "attempts",
        "interaction_sid",
        "channel_sid",
        "created_at",
        "updated_at",
    ):
        assert record[field] is not None, field
    assert record["conversation_sid"] == CONVERSATION_SID
    assert "+14155550123" not in str(record)
    ttl = await redis.ttl(redis_keys.handover_key(body["handover_id"]))
    assert 0 < ttl <= 7 * 24 * 3600
    stored = await redis.hgetall(redis_keys.handover_key(body["handover_id"]))
    assert not any("test-auth-token" in value for value in stored.values())


async def test_second_call_for_a_live_handover_returns_the_same_one(start_service, simulator):
    service = await start_service(worker=False)
    first_status, first, _ = await service.call_tool(session_id=session_header())
    second_status, second, _ = await service.call_tool(session_id=session_header())
    assert (first_status, second_status) == (202, 200)
    assert second["handover_id"] == first["handover_id"]
    assert second["status"] == "queued"
    await service.start_worker()
    await service.wait_final(first["handover_id"])
    third_status, third, _ = await service.call_tool(session_id=session_header())
    assert third_status == 200
    assert third["handover_id"] == first["handover_id"]
    assert third["status"] == "succeeded"
    assert len(simulator.interactions) == 1


async def test_concurrent_duplicate_calls_create_one_interaction(service, simulator):
    results = await asyncio.gather(
        *(service.call_tool(session_id=session_header()) for _ in range(30))
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 29 + [202]
    handover_ids = {body["handover_id"] for _, body, _ in results}
    assert len(handover_ids) == 1
    await service.wait_final(handover_ids.pop())
    await asyncio.sleep(0.2)  # give a wrongly created second job time to show up
    assert len(simulator.interactions) == 1


async def test_other_conversations_are_not_deduplicated(service, simulator):
    results = await asyncio.gather(
        *(service.call_tool(session_id=session_header(new_conversation_sid(n))) for n in range(10))
    )
    assert [status for status, _, _ in results] == [202] * 10
    for _, body, _ in results:
        assert (await service.wait_final(body["handover_id"]))["state"] == "succeeded"
    assert len(simulator.interactions) == 10


async def test_new_handover_after_dedup_window(start_service, simulator):
    service = await start_service(HANDOVER_DEDUP_SECONDS=0)
    _, first, _ = await service.call_tool(session_id=session_header())
    await service.wait_final(first["handover_id"])
    status, second, _ = await service.call_tool(session_id=session_header())
    assert status == 202
    assert second["handover_id"] != first["handover_id"]
    await service.wait_final(second["handover_id"])
    assert len(simulator.interactions) == 2


async def test_a_call_after_the_agents_task_ended_is_a_new_handover(service, simulator):
    """Within the de-duplication window, once the agent's task ended (a signed
    TaskRouter event to /webhooks/taskrouter), the customer asking again for a
    person gets a new handover and a second Interaction; before the end, a repeat
    call is the same handover."""
    _, first, _ = await service.call_tool(session_id=session_header())
    assert (await service.wait_final(first["handover_id"]))["state"] == "succeeded"
    status, repeat, _ = await service.call_tool(session_id=session_header())
    assert (status, repeat["handover_id"], repeat["status"]) == (
        200,
        first["handover_id"],
        "succeeded",
    )

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{simulator.base_url}/__sim/tasks/latest/events",
            json={"event_type": "task.completed", "url": f"{service.url}/webhooks/taskrouter"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        [delivery] = (await response.json())["deliveries"]
    assert json.loads(delivery["body"])["outcome"] == "recorded", delivery
    assert (await service.status(first["handover_id"]))["ended_by"] == "task.completed"

    status, second, _ = await service.call_tool(session_id=session_header())

    assert status == 202, second
    assert second["handover_id"] != first["handover_id"]
    assert (await service.wait_final(second["handover_id"]))["state"] == "succeeded"
    assert len(simulator.interactions) == 2
    status, again, _ = await service.call_tool(session_id=session_header())
    assert (status, again["handover_id"]) == (200, second["handover_id"])


async def test_new_handover_after_a_failed_one(service, simulator):
    simulator.fail_next(400, code=20001, message="Invalid channel")
    _, first, _ = await service.call_tool(session_id=session_header())
    assert (await service.wait_final(first["handover_id"]))["state"] == "failed"
    status, second, _ = await service.call_tool(session_id=session_header())
    assert status == 202
    assert second["handover_id"] != first["handover_id"]
    assert (await service.wait_final(second["handover_id"]))["state"] == "succeeded"
