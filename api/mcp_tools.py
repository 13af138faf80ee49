"""The MCP tools: one per handover target, their schemas, and what a call answers.

Pure (no I/O, no aiohttp), built from the settings and from the tool endpoint's
own answer (`api.handover`), so an MCP client is told what an AI Assistant is
told. `api.mcp_server` serves them.

- The names, descriptions and input schema are `api.tool_schema`'s, the ones the
  schema endpoint gives any agent framework: `hand_over_to_human` is the `default`
  target's tool, `hand_over_to_human_<target>` each named target's (target names
  are already `[a-z0-9_-]`, within MCP's tool-name alphabet); `conversation_sid`
  and `identity` are required (an MCP call has no `X-Session-Id` header to carry
  them).
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
from api.tool_schema import EXAMPLE_INPUT, input_schema, tool_description, tool_name
from shared.model import Status
from shared.settings import DEFAULT_TARGET, Target

EXAMPLE_CONVERSATION_SID = str(EXAMPLE_INPUT["conversation_sid"])

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


def tool_targets(targets: Iterable[str]) -> dict[str, str]:
    """Tool name → target name."""
    return {tool_name(target): target for target in targets}


def tool(target: Target) -> types.Tool:
    named = target.name != DEFAULT_TARGET
    return types.Tool(
        name=tool_name(target.name),
        title="Hand over to a human" + (f" ({target.name})" if named else ""),
        description=tool_description(target.name)
        + " Calling it again for the same conversation returns the same handover.",
        input_schema=input_schema(),
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
