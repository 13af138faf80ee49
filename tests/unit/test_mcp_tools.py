"""api.mcp_tools: the tool list from the targets, its schemas, and the results a
call answers, all without I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import mcp.types as types
import pytest
from mcp.shared.tool_name_validation import validate_tool_name

from api import mcp_tools, openapi, tool_schema
from api.availability import OPEN, Availability
from api.errors import BadRequest, RateLimited
from api.parsing import KNOWN_FIELDS
from shared.settings import DEFAULT_TARGET, Settings

WORKFLOW_SID = "WW" + "c3" * 16
HANDOVER_ID = "ho_" + "ab" * 16


def targets(default: bool = True, **named: dict) -> Settings:
    env = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "HANDOVER_TARGETS": json.dumps({n: {"workflow_sid": WORKFLOW_SID} for n in named}),
    }
    if default:
        env["FLEX_WORKFLOW_SID"] = WORKFLOW_SID
    return Settings.from_env(env, role="operator")


def ack(agents: Availability = OPEN) -> dict:
    """The tool endpoint's answer for a stored handover (`api.handover`)."""
    return {
        "handover_id": HANDOVER_ID,
        "status": "queued",
        "status_url": f"/handovers/{HANDOVER_ID}",
        "handed_over": True,
        **agents.ack_fields("I'm transferring you to a human agent now."),
    }


CLOSED = Availability(
    agents_available=False, opens_at=datetime(2026, 3, 30, 6, tzinfo=UTC), declines=True
)


def test_one_tool_per_target_the_default_first_named_after_it():
    settings = targets(**{"billing": {}, "vip-desk": {}})
    assert [tool.name for tool in mcp_tools.tools(settings.targets)] == [
        "hand_over_to_human",
        "hand_over_to_human_billing",
        "hand_over_to_human_vip-desk",
    ]
    assert mcp_tools.tool_targets(settings.targets) == {
        "hand_over_to_human": DEFAULT_TARGET,
        "hand_over_to_human_billing": "billing",
        "hand_over_to_human_vip-desk": "vip-desk",
    }


def test_without_a_default_target_only_the_named_tools_are_listed():
    settings = targets(default=False, billing={})
    assert [tool.name for tool in mcp_tools.tools(settings.targets)] == [
        "hand_over_to_human_billing"
    ]


def test_every_tool_name_is_a_valid_mcp_tool_name_even_for_the_longest_target():
    longest = "a" + "-_0" * 21  # 64 characters: the longest target name settings allow
    settings = targets(**{longest: {}, "b": {}})
    for tool in mcp_tools.tools(settings.targets):
        assert validate_tool_name(tool.name).is_valid, tool.name


def test_each_tool_describes_its_target_and_is_a_valid_mcp_tool():
    default, billing = mcp_tools.tools(targets(billing={}).targets)
    assert "'billing'" in billing.description and "'billing'" not in default.description
    assert billing.title == "Hand over to a human (billing)"
    for tool in (default, billing):
        wire = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert types.Tool.model_validate(wire) == tool
        assert wire["annotations"] == {
            "readOnlyHint": False,
            "destructiveHint": False,
            "idempotentHint": True,  # a repeat call returns the same handover
            "openWorldHint": True,
        }


def test_the_input_schema_is_the_schema_endpoints_one_with_the_endpoints_limits():
    """One schema for MCP tools and the schema endpoint (api.tool_schema): they cannot drift."""
    settings = targets(billing={})
    for tool in mcp_tools.tools(settings.targets):
        assert tool.input_schema == tool_schema.input_schema()
    schema = tool_schema.input_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["conversation_sid", "identity"]
    assert schema["additionalProperties"] is True  # other fields are kept, as the endpoint does
    properties = schema["properties"]
    assert set(properties) == {"conversation_sid", "identity", *KNOWN_FIELDS}
    for name, limit in KNOWN_FIELDS.items():
        assert properties[name]["maxLength"] == limit, name
        assert properties[name]["description"], name
    assert "number" in properties["priority"]["type"]  # a number stays a number


@pytest.mark.parametrize(
    ("arguments", "valid"),
    [
        ({"conversation_sid": "CH" + "aB" * 16, "identity": "whatsapp:+14155550123"}, True),
        ({"conversation_sid": "CH" + "ab" * 16, "identity": "x:y", "priority": 3, "o": 1}, True),
        ({"conversation_sid": "CH" + "ab" * 16, "identity": "x:y", "reason": "r" * 1001}, False),
        ({"conversation_sid": "CH123", "identity": "x:y"}, False),
        ({"identity": "whatsapp:+14155550123"}, False),
    ],
)
def test_the_input_schema_admits_what_the_endpoint_takes(arguments, valid):
    validator = jsonschema.Draft202012Validator(tool_schema.input_schema())
    assert validator.is_valid(arguments) is valid


def test_a_stored_handover_is_the_message_to_relay_and_the_handover_id():
    result = mcp_tools.answer_result(ack())
    assert result.is_error is False
    assert result.structured_content == ack()  # the tool endpoint's answer, field for field
    [text] = result.content
    assert text.text == (
        "I'm transferring you to a human agent now.\n\n"
        f"Handover id: {HANDOVER_ID} (status: queued)."
    )


def test_outside_hours_the_text_says_when_agents_are_back():
    queued = mcp_tools.answer_result(ack(CLOSED))
    assert queued.structured_content["agents_available"] is False
    assert queued.structured_content["opens_at"] == "2026-03-30T06:00:00+00:00"
    assert "Monday 30 March 2026 at 06:00" in queued.content[0].text
    declined = mcp_tools.answer_result(CLOSED.declined_answer())
    assert declined.is_error is False  # an answer, not a refusal: nothing was stored
    assert declined.structured_content["handed_over"] is False
    assert declined.content[0].text == CLOSED.declined_answer()["message"]  # no id to add


@pytest.mark.parametrize(
    "answer",
    [ack(), ack(CLOSED), CLOSED.declined_answer(), Availability(False).declined_answer()],
)
def test_every_answer_matches_the_output_schema(answer):
    jsonschema.Draft202012Validator.check_schema(mcp_tools.OUTPUT_SCHEMA)
    result = mcp_tools.answer_result(answer)
    jsonschema.validate(result.structured_content, mcp_tools.OUTPUT_SCHEMA)


def test_the_output_schema_names_the_fields_the_tool_endpoint_documents():
    documented = {
        *openapi.SCHEMAS["HandoverAck"]["properties"],
        *openapi.SCHEMAS["HandoverDeclined"]["properties"],
    }
    assert set(mcp_tools.OUTPUT_SCHEMA["properties"]) == documented


@pytest.mark.parametrize(
    "refusal",
    [
        BadRequest("invalid_conversation_sid", "conversation_sid does not name a Conversation."),
        RateLimited("conversation", 60, 7),
    ],
)
def test_a_refusal_is_a_tool_error_with_the_endpoints_message(refusal):
    result = mcp_tools.refusal_result(refusal)
    assert result.is_error is True
    assert [block.text for block in result.content] == [refusal.message]
    assert result.structured_content is None  # the output schema describes answers only
