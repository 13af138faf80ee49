"""The handover as a tool an agent framework registers: its input's JSON Schema,
its name and description per target, and the route that answers each target.

The one place for every caller that lists the tool: the schema endpoint
(`api.schema_endpoint`, OpenAI-style function definitions) and the MCP server
use these functions, so a target's tool has one name and one input schema
whoever asks. Pure: no aiohttp, no settings object, only target names in.

The schema (JSON Schema draft 2020-12) is built from `api.parsing`'s constants
and describes a plain JSON body. What it accepts, the endpoint accepts
(tests/unit/test_tool_schema.py checks both on a set of cases), except what
JSON Schema cannot say: nesting deeper than `api.parsing.MAX_NESTING` levels
and a body over HANDOVER_MAX_BODY_BYTES. The endpoint is more lenient than the
schema in a few ways a model should not rely on: a number as a text field
(taken as its text), spaces around a value (trimmed before its length is
measured), an upper-case identity kind, and non-ASCII identity values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from api.parsing import KNOWN_FIELDS, ROUTING_FIELDS
from shared import sids
from shared.settings import DEFAULT_TARGET

TOOL_NAME = "hand_over_to_human"
"""The default target's tool; a named target's is `hand_over_to_human_<target>`."""
TOOL_PATH = "/tools/flex-handover"
SCHEMA_PATH = f"{TOOL_PATH}/schema"
OPENAI_MAX_NAME = 64
"""OpenAI's limit on a function name: targets of up to 45 characters fit."""

_E164 = r"\+[1-9][0-9]{6,14}"
_PRINTABLE = "[!-~]([ -~]{0,254}[!-~])?"  # printable ASCII, 1-256 characters, no outer spaces
_EMAIL_PART = "[!-?A-~]"  # printable ASCII but space and '@'
# The identities whose kind has rules of its own (api.parsing.parse_identity) ...
_CHECKED_IDENTITY = (
    rf"^({_E164}|(whatsapp|phone):{_E164}|email:{_EMAIL_PART}{{1,128}}@{_EMAIL_PART}{{1,127}}"
    rf"|(flex_participant|user_id):{sids.FLEX_USER}[0-9a-fA-F]{{32}})$"
)
# ... and any other kind, which those kinds' names must not slip through.
_OTHER_IDENTITY = rf"^[a-z][a-z0-9_]{{0,31}}:{_PRINTABLE}$"
_CHECKED_KINDS = rf"^(whatsapp:|phone:|email:|flex_participant:|user_id:{sids.FLEX_USER})"

EXAMPLE_INPUT: dict[str, Any] = {
    "conversation_sid": "CH" + "0123456789abcdef" * 2,
    "identity": "whatsapp:+14155550123",
    "reason": "The customer wants a refund above what the assistant may grant.",
    "summary": "Order 1234 arrived damaged; the customer sent photos and asks for a refund.",
    "customer_name": "Ada Lovelace",
    "language": "en-US",
}

_DESCRIPTIONS: dict[str, str] = {
    "conversation_sid": "The Twilio Conversation the customer is in: its SID, CH and 32 "
    "hexadecimal digits.",
    "identity": "Who the customer is, as kind:value: whatsapp:+14155550123, "
    "phone:+14155550123 (or the bare number), email:ada@example.com, "
    "user_id:<author>, or a Flex webchat user as user_id:FX… or flex_participant:FX….",
    "reason": "Why the customer needs a person, in a sentence: shown to the agent.",
    "summary": "What happened so far, for the agent who takes over.",
    "customer_name": "The customer's name, if known.",
    "priority": "A priority for the agent's task, as text or a number.",
    "language": "The customer's language, e.g. en-US.",
}


def tool_name(target: str) -> str:
    """`hand_over_to_human` for the default target, `hand_over_to_human_<target>`
    for a named one. A target name is `[a-z0-9][a-z0-9_-]{0,63}`, so every name
    is a valid MCP tool name, and an OpenAI function name up to 45 characters of
    target (`OPENAI_MAX_NAME`)."""
    return TOOL_NAME if target == DEFAULT_TARGET else f"{TOOL_NAME}_{target}"


def target_of_tool(name: str, targets: Iterable[str]) -> str | None:
    """The configured target whose tool is `name`, or None."""
    for target in targets:
        if tool_name(target) == name:
            return target
    return None


def tool_path(target: str) -> str:
    """The route that hands over to `target`: `POST /tools/flex-handover` for the
    default target, `POST /tools/flex-handover/<target>` for a named one."""
    return TOOL_PATH if target == DEFAULT_TARGET else f"{TOOL_PATH}/{target}"


def tool_description(target: str) -> str:
    """What the model reads to decide when to call the tool, and what to do with
    its answer."""
    where = (
        "a human agent in Twilio Flex"
        if target == DEFAULT_TARGET
        else f"a human agent in Twilio Flex, for '{target}'"
    )
    return (
        f"Hand this conversation over to {where}. Use it when the customer asks for a "
        "person, or when you cannot help them. It answers at once, before an agent "
        "picks the conversation up: tell the customer what its `message` says (it "
        "says when agents are back if none works now)."
    )


def _text(name: str) -> dict[str, Any]:
    return {
        "type": ["string", "null"],
        "maxLength": KNOWN_FIELDS[name],
        "description": _DESCRIPTIONS[name],
    }


def _build_input_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        "conversation_sid": {
            "type": "string",
            "pattern": sids.pattern(sids.CONVERSATION),
            "description": _DESCRIPTIONS["conversation_sid"],
        },
        "identity": {
            "type": "string",
            "anyOf": [
                {"pattern": _CHECKED_IDENTITY},
                {"pattern": _OTHER_IDENTITY, "not": {"pattern": _CHECKED_KINDS}},
            ],
            "description": _DESCRIPTIONS["identity"],
        },
    }
    for name in KNOWN_FIELDS:
        properties[name] = _text(name)
    properties["priority"] = {**properties["priority"], "type": ["string", "number", "null"]}
    return {
        "type": "object",
        "description": "A handover to a human agent. Any field beyond these is kept and "
        "shown to the agent with the task.",
        "properties": properties,
        "required": list(ROUTING_FIELDS),
        "additionalProperties": True,
        "examples": [EXAMPLE_INPUT],
    }


_INPUT_SCHEMA = _build_input_schema()


def input_schema() -> dict[str, Any]:
    """The tool input's JSON Schema, the same for every target (a copy: callers may
    change theirs)."""
    return copy.deepcopy(_INPUT_SCHEMA)


def function_definition(target: str) -> dict[str, Any]:
    """An OpenAI-style tool: `{"type": "function", "function": {name, description,
    parameters}}`, registered as is by OpenAI's API and the frameworks that take
    its format."""
    return {
        "type": "function",
        "function": {
            "name": tool_name(target),
            "description": tool_description(target),
            "parameters": input_schema(),
        },
    }


def schema_document(targets: Iterable[str]) -> dict[str, Any]:
    """The answer of `GET /tools/flex-handover/schema`: the input schema, one
    function definition per target (default first), and which route answers
    each tool. Names of targets only: nothing from their settings."""
    ordered = sorted(targets, key=lambda target: target != DEFAULT_TARGET)
    return {
        "input_schema": input_schema(),
        "tools": [function_definition(target) for target in ordered],
        "routes": {
            tool_name(target): {"target": target, "method": "POST", "path": tool_path(target)}
            for target in ordered
        },
    }
