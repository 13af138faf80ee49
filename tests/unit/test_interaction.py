"""worker.interaction: the Channel and Routing objects sent to the Interactions API."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from shared.model import HandoverRequest, Identity
from shared.settings import Target
from tests.support.values import CONVERSATION_SID, WORKFLOW_SID, WORKSPACE_SID
from worker.interaction import (
    EXTRA_INPUT_ATTRIBUTE,
    HANDOVER_ATTEMPT_ATTRIBUTE,
    Customer,
    InteractionPayload,
    build_interaction,
    customer_for,
    needs_friendly_name,
    with_attempt,
)

FLEX_USER_SID = "FX" + "ab" * 16
HANDOVER_ID = "ho_" + "9" * 32
# The attributes we always set, for the default request (a WhatsApp customer).
WHATSAPP_CORE_ATTRIBUTES = {
    "from": "whatsapp:+14155550123",
    "customerName": "whatsapp:+14155550123",
    "customerAddress": "whatsapp:+14155550123",
    "conversationSid": CONVERSATION_SID,
    "channelType": "whatsapp",
    "handoverId": HANDOVER_ID,
    "handoverTarget": "billing",
}


def make_request(identity: str = "whatsapp:+14155550123", **tool_input) -> HandoverRequest:
    extra = tool_input.pop("extra", {})
    return HandoverRequest(CONVERSATION_SID, Identity.parse(identity), "billing", tool_input, extra)


def make_target(**overrides) -> Target:
    fields = {"name": "billing", "workflow_sid": WORKFLOW_SID, "task_channel": "chat"}
    fields.update(overrides)
    return Target(**fields)


def build(request: HandoverRequest | None = None, target: Target | None = None, name=None):
    return build_interaction(
        HANDOVER_ID, request or make_request(), target or make_target(), WORKSPACE_SID, name
    )


# --------------------------------------------------------------------------
# customer_for
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "identity, friendly_name, expected",
    [
        (
            "whatsapp:+14155550123",
            "Ada",
            Customer("whatsapp", "whatsapp:+14155550123", "whatsapp:+14155550123"),
        ),
        ("phone:+14155550123", None, Customer("sms", "+14155550123", "+14155550123")),
        ("user_id:+447911123456", None, Customer("sms", "+447911123456", "+447911123456")),
        (f"user_id:{FLEX_USER_SID}", "Ada L.", Customer("web", FLEX_USER_SID, "Ada L.")),
        (f"flex_participant:{FLEX_USER_SID}", "Ada", Customer("web", FLEX_USER_SID, "Ada")),
        (f"flex_participant:{FLEX_USER_SID}", None, Customer("web", FLEX_USER_SID, FLEX_USER_SID)),
        (f"user_id:{FLEX_USER_SID}", "", Customer("web", FLEX_USER_SID, FLEX_USER_SID)),
        ("email:ada@example.com", "Ada", Customer("chat", "ada@example.com", "ada@example.com")),
        ("user_id:customer-42", None, Customer("chat", "customer-42", "customer-42")),
    ],
)
def test_customer_for(identity, friendly_name, expected):
    assert customer_for(Identity.parse(identity), friendly_name) == expected


@pytest.mark.parametrize(
    "identity, needed",
    [
        (f"user_id:{FLEX_USER_SID}", True),
        (f"flex_participant:{FLEX_USER_SID}", True),
        ("whatsapp:+14155550123", False),
        ("email:fx@example.com", False),
    ],
)
def test_needs_friendly_name_only_for_flex_users(identity, needed):
    assert needs_friendly_name(Identity.parse(identity)) is needed


# --------------------------------------------------------------------------
# build_interaction
# --------------------------------------------------------------------------


def test_build_interaction_channel_and_routing():
    payload = build()
    assert isinstance(payload, InteractionPayload)
    assert payload.channel == {
        "type": "whatsapp",
        "initiated_by": "customer",
        "properties": {"media_channel_sid": CONVERSATION_SID},
    }
    assert payload.routing == {
        "properties": {
            "workspace_sid": WORKSPACE_SID,
            "workflow_sid": WORKFLOW_SID,
            "task_channel_unique_name": "chat",
            "attributes": WHATSAPP_CORE_ATTRIBUTES,
        }
    }


@pytest.mark.parametrize("priority", [0, 7])
def test_build_interaction_priority_when_the_target_has_one(priority):
    properties = build(target=make_target(priority=priority)).routing["properties"]
    assert properties["priority"] == priority


def test_build_interaction_no_priority_when_the_target_has_none():
    assert "priority" not in build().routing["properties"]


def test_build_interaction_uses_the_targets_task_channel_and_workflow():
    other_workflow = "WW" + "33" * 16
    target = make_target(name="voice-team", workflow_sid=other_workflow, task_channel="sms")
    properties = build(target=target).routing["properties"]
    assert properties["task_channel_unique_name"] == "sms"
    assert properties["workflow_sid"] == other_workflow
    assert properties["attributes"]["handoverTarget"] == "voice-team"


@pytest.mark.parametrize(
    "identity, friendly_name, channel_type, address, name",
    [
        ("phone:+14155550123", None, "sms", "+14155550123", "+14155550123"),
        (f"user_id:{FLEX_USER_SID}", "Ada", "web", FLEX_USER_SID, "Ada"),
        ("email:ada@example.com", None, "chat", "ada@example.com", "ada@example.com"),
    ],
)
def test_build_interaction_per_channel(identity, friendly_name, channel_type, address, name):
    payload = build(make_request(identity), name=friendly_name)
    attributes = payload.routing["properties"]["attributes"]
    assert payload.channel["type"] == channel_type
    assert (attributes["channelType"], attributes["from"], attributes["customerAddress"]) == (
        channel_type,
        address,
        address,
    )
    assert attributes["customerName"] == name


def test_build_interaction_maps_known_tool_input_and_keeps_the_rest():
    request = make_request(
        reason="wants a refund",
        summary="Order 123 arrived broken.",
        priority="high",
        language="en-GB",
        extra={"order": {"id": 123}, "reason_code": "R7"},
    )
    attributes = build(request).routing["properties"]["attributes"]
    assert attributes["reason"] == "wants a refund"
    assert attributes["summary"] == "Order 123 arrived broken."
    assert attributes["priority"] == "high"
    assert attributes["language"] == "en-GB"
    assert attributes[EXTRA_INPUT_ATTRIBUTE] == {"order": {"id": 123}, "reason_code": "R7"}
    assert "order" not in attributes and "reason_code" not in attributes
    # The task attribute, not TaskRouter's numeric priority: the target has none.
    assert "priority" not in build(request).routing["properties"]


def test_build_interaction_without_extra_input_has_no_handover_input():
    attributes = build(make_request(reason="x")).routing["properties"]["attributes"]
    assert EXTRA_INPUT_ATTRIBUTE not in attributes
    assert set(attributes) == {*WHATSAPP_CORE_ATTRIBUTES, "reason"}


def test_build_interaction_customer_name_input_wins_over_friendly_name():
    request = make_request(f"user_id:{FLEX_USER_SID}", customer_name="Ada L.")
    attributes = build(request, name="ada-from-conversations").routing["properties"]["attributes"]
    assert attributes["customerName"] == "Ada L."
    assert "customer_name" not in attributes


def test_build_interaction_target_attributes_are_included_but_cannot_override_ours():
    target_attributes = {name: "from target" for name in WHATSAPP_CORE_ATTRIBUTES}
    target_attributes.update({"department": "billing", "skills": ["refunds"], "reason": "t"})
    target = make_target(attributes=MappingProxyType(target_attributes))
    attributes = build(make_request(reason="customer"), target).routing["properties"]["attributes"]
    assert attributes["department"] == "billing"
    assert attributes["skills"] == ["refunds"]
    assert attributes["reason"] == "customer"
    assert {name: attributes[name] for name in WHATSAPP_CORE_ATTRIBUTES} == (
        WHATSAPP_CORE_ATTRIBUTES
    )
    # The target's mapping is not changed by building a payload from it.
    assert target.attributes["from"] == "from target"


def test_build_interaction_extra_input_cannot_override_core_attributes():
    request = make_request(extra={"handoverId": "forged", "from": "forged"})
    attributes = build(request).routing["properties"]["attributes"]
    assert attributes["handoverId"] == HANDOVER_ID
    assert attributes["from"] == "whatsapp:+14155550123"
    assert attributes[EXTRA_INPUT_ATTRIBUTE] == {"handoverId": "forged", "from": "forged"}


def test_each_attempt_adds_its_own_id_to_the_task_attributes():
    payload = build_interaction(HANDOVER_ID, make_request(), make_target(), WORKSPACE_SID)
    first, second = with_attempt(payload, "at_1"), with_attempt(payload, "at_2")
    attributes = first.routing["properties"]["attributes"]
    assert attributes[HANDOVER_ATTEMPT_ATTRIBUTE] == "at_1"
    assert second.routing["properties"]["attributes"][HANDOVER_ATTEMPT_ATTRIBUTE] == "at_2"
    assert HANDOVER_ATTEMPT_ATTRIBUTE not in payload.routing["properties"]["attributes"]
    assert {k: v for k, v in attributes.items() if k != HANDOVER_ATTEMPT_ATTRIBUTE} == (
        payload.routing["properties"]["attributes"]
    )
