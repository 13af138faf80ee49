"""The MCP tools: one per handover target, their schemas, and what a call answers.

Pure (no I/O, no aiohttp), built from the settings and from the tool endpoint's
own answer (`api.handover`), so an MCP client is told what an AI Assistant is
told. `api.mcp_server` serves them.

- `hand_over_to_human` is the `default` target's tool, `hand_over_to_human_<target>`
  each named target's (target names are already `[a-z0-9_-]`, within MCP's tool-name
  alphabet).
- The input schema is the tool input the endpoint takes as a plain JSON body:
  `conversation_sid` and `identity` are required (an MCP call has no `X-Session-Id`
  header to carry them), the known fields have the endpoint's limits, and any other
  field is kept, as the endpoint keeps it.
- A result's text is the message the model relays plus the handover id, and its
  `structuredContent` is the endpoint's JSON answer, field for field (the output
  schema says which). A refusal the model can act on (bad input, a rate limit, the
  backlog, Redis unavailable) is a tool error (`isError`) carrying the endpoint's
  message: MCP asks for input errors to reach the model this way, so it can fix the
  call or tell the customer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import mcp.types as types

from api.errors import ApiError
from api.parsing import KNOWN_FIELDS
from shared import sids
from shared.model import Status
from shared.settings import DEFAULT_TARGET, Target

TOOL_NAME = "hand_over_to_human"
"""The default target's tool; a named target's is `hand_over_to_human_<target>`."""

FIELD_DESCRIPTIONS: dict[str, str] = {
    "reason": "Why the customer needs a person, in a sentence; the agent sees it.",
    "summary": "What has happened in the conversation so far, so the agent need not ask again.",
    "customer_name": "The customer's name, if they gave it.",
    "priority": "How urgent, as your Flex workflow reads the task attribute `priority`: "
    "text such as 'high', or a number.",
    "language": "The customer's language as a BCP 47 tag, e.g. 'en-US'.",
}

EXAMPLE_CONVERSATION_SID = sids.CONVERSATION + "0" * 32

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Any other field is kept and reaches the Flex task's attributes "
    "(under `handoverInput`).",
    "properties": {
        "conversation_sid": {
            "type": "string",
            "description": "The Twilio Conversation to hand over: its SID, "
            f"{sids.describe(sids.CONVERSATION)}.",
            "pattern": f"^{sids.CONVERSATION}[0-9a-fA-F]{{32}}$",
            "examples": [EXAMPLE_CONVERSATION_SID],
        },
        "identity": {
            "type": "string",
            "minLength": 1,
            "description": "The customer as 'kind:value': 'whatsapp:+14155550123', "
            "'phone:+14155550123' (or the bare E.164 number), 'email:ana@example.com', or a "
            "Flex webchat user 'user_id:FX…'.",
            "examples": ["whatsapp:+14155550123"],
        },
        **{
            name: (
                {"type": ["string", "number"], "maxLength": limit}
                if name == "priority"
                else {"type": "string", "maxLength": limit}
            )
            | {"description": FIELD_DESCRIPTIONS[name]}
            for name, limit in KNOWN_FIELDS.items()
        },
    },
    "required": ["conversation_sid", "identity"],
    "additionalProperties": True,
}

OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The tool endpoint's answer (POST /tools/flex-handover), as it is.",
    "properties": {
        "handed_over": {
            "type": "boolean",
            "description": "false only outside the hours of a target that declines: "
            "nothing was stored.",
        },
        "message": {"type": "string", "description": "What to tell the customer."},
        "agents_available": {"type": "boolean"},
        "opens_at": {
            "type": ["string", "null"],
            "description": "When agents are back (ISO 8601), outside business hours.",
        },
        "handover_id": {"type": "string"},
        "status": {"type": "string", "enum": [status.value for status in Status]},
        "status_url": {"type": "string"},
    },
    "required": ["handed_over", "message", "agents_available"],
}


def tool_name(target: str) -> str:
    return TOOL_NAME if target == DEFAULT_TARGET else f"{TOOL_NAME}_{target}"


def tool_targets(targets: Iterable[str]) -> dict[str, str]:
    """Tool name → target name."""
    return {tool_name(target): target for target in targets}


def tool(target: Target) -> types.Tool:
    named = target.name != DEFAULT_TARGET
    where = f" through the '{target.name}' handover target" if named else ""
    return types.Tool(
        name=tool_name(target.name),
        title="Hand over to a human" + (f" ({target.name})" if named else ""),
        description=(
            f"Hand this conversation to a human agent in Twilio Flex{where}. Use it when the "
            "customer asks for a person or you cannot help them, then tell the customer what "
            "the result says (it says so when no agent is available right now). Calling it "
            "again for the same conversation returns the same handover."
        ),
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        annotations=types.ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    )


def tools(targets: Mapping[str, Target]) -> list[types.Tool]:
    """The default target's tool first, then the named ones as configured."""
    ordered = sorted(targets.values(), key=lambda target: target.name != DEFAULT_TARGET)
    return [tool(target) for target in ordered]


def answer_result(answer: Mapping[str, Any]) -> types.CallToolResult:
    """The tool endpoint's answer as a tool result: the message to relay and the id."""
    text = str(answer["message"])
    if answer.get("handover_id"):
        text += f"\n\nHandover id: {answer['handover_id']} (status: {answer['status']})."
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=dict(answer),
        is_error=False,
    )


def refusal_result(refusal: ApiError) -> types.CallToolResult:
    """A refusal as a tool error: the endpoint's message, which says what to fix or
    when to try again. No structured content: the output schema describes answers."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=refusal.message)],
        is_error=True,
    )
