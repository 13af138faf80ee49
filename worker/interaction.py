"""Builds the Interactions API payload from a handover: pure, no I/O.

The channel mapping follows Twilio's own AI Assistant handover sample (see
the facts file); the task attributes are where a Flex agent sees why the
customer was handed over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from shared import sids
from shared.model import HandoverRequest, Identity
from shared.settings import Target

EXTRA_INPUT_ATTRIBUTE = "handoverInput"
HANDOVER_ID_ATTRIBUTE = "handoverId"
"""Flex copies routing attributes onto the task: this one lets `worker.task_lookup`
find the task of an attempt whose answer was lost."""
HANDOVER_ATTEMPT_ATTRIBUTE = "handoverAttempt"
"""The attempt's own id, beside the handover's: one handover can leave more than
one Interaction (a channel that failed, then a new attempt), and the lookup
must find the task of the attempt in flight, not an earlier one's."""
_KNOWN_INPUT_ATTRIBUTES = {
    "reason": "reason",
    "summary": "summary",
    "priority": "priority",
    "language": "language",
}


@dataclass(frozen=True)
class Customer:
    """Who the agent is talking to, as Flex wants it in the channel and task."""

    channel_type: str
    address: str
    name: str


@dataclass(frozen=True)
class InteractionPayload:
    channel: dict[str, Any]
    routing: dict[str, Any]


def needs_friendly_name(identity: Identity) -> bool:
    """Flex webchat users arrive as FX… ids; their name comes from Conversations
    (only for an FX SID: the value becomes a URL path)."""
    return sids.is_sid(identity.value, sids.FLEX_USER)


def customer_for(identity: Identity, friendly_name: str | None = None) -> Customer:
    """Channel type and address from the identity, as Twilio's sample maps them."""
    if identity.trait == "whatsapp":
        address = f"whatsapp:{identity.value}"
        return Customer("whatsapp", address, address)
    if identity.value.startswith("+"):
        return Customer("sms", identity.value, identity.value)
    if needs_friendly_name(identity):
        return Customer("web", identity.value, friendly_name or identity.value)
    return Customer("chat", identity.value, identity.value)


def build_attributes(
    handover_id: str, request: HandoverRequest, customer: Customer, target: Target
) -> dict[str, Any]:
    """Task attributes: the target's own, then the tool input, then ours (which win)."""
    attributes: dict[str, Any] = dict(target.attributes)
    for field, attribute in _KNOWN_INPUT_ATTRIBUTES.items():
        if field in request.tool_input:
            attributes[attribute] = request.tool_input[field]
    if request.extra_input:
        attributes[EXTRA_INPUT_ATTRIBUTE] = dict(request.extra_input)
    attributes.update(
        {
            "from": customer.address,
            "customerName": request.tool_input.get("customer_name") or customer.name,
            "customerAddress": customer.address,
            "conversationSid": request.conversation_sid,
            "channelType": customer.channel_type,
            HANDOVER_ID_ATTRIBUTE: handover_id,
            "handoverTarget": target.name,
        }
    )
    return attributes


def build_interaction(
    handover_id: str,
    request: HandoverRequest,
    target: Target,
    workspace_sid: str,
    friendly_name: str | None = None,
) -> InteractionPayload:
    """The `Channel` and `Routing` objects for `POST /v1/Interactions`."""
    customer = customer_for(request.identity, friendly_name)
    channel = {
        "type": customer.channel_type,
        "initiated_by": "customer",
        "properties": {"media_channel_sid": request.conversation_sid},
    }
    properties: dict[str, Any] = {
        "workspace_sid": workspace_sid,
        "workflow_sid": target.workflow_sid,
        "task_channel_unique_name": target.task_channel,
        "attributes": build_attributes(handover_id, request, customer, target),
    }
    if target.priority is not None:
        properties["priority"] = target.priority
    return InteractionPayload(channel, {"properties": properties})


def with_attempt(payload: InteractionPayload, attempt_id: str) -> InteractionPayload:
    """`payload` whose task attributes also carry `handoverAttempt: attempt_id`
    (each request gets its own, after the payload was built once per run)."""
    properties = dict(payload.routing.get("properties", {}))
    attributes = dict(properties.get("attributes", {}))
    attributes[HANDOVER_ATTEMPT_ATTRIBUTE] = attempt_id
    properties["attributes"] = attributes
    return replace(payload, routing={**payload.routing, "properties": properties})
