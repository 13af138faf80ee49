"""The OpenAPI 3.1 document of the service's own HTTP API, served at `/openapi.json`.

Hand-written as Python data so it can say what a generator could not (which
header wins over the body, when a repeat call answers 200), and kept true by
tests/test_openapi.py: every registered route is documented, every documented
operation is registered, and a fuzzer checks live responses against it.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from api.mcp_server import MAX_BATCH, SUPPORTED_VERSIONS
from api.mcp_tools import EXAMPLE_CONVERSATION_SID
from api.parsing import IDENTITY_HEADER, KNOWN_FIELDS, SESSION_HEADER
from api.taskrouter_events import END_EVENTS, MAX_TASK_ATTRIBUTES_CHARS
from api.tool_schema import SCHEMA_PATH, TOOL_NAME
from api.voice_twiml import MAX_HANDOFF_DATA_BYTES
from shared.model import Status
from shared.settings import DEFAULT_TARGET

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
TWIML = "text/xml"
Schema = dict[str, Any]

HANDOVER_ID_PATTERN = "^ho_[0-9a-f]{32}$"
CONVERSATION_SID_PATTERN = "^CH[0-9a-fA-F]{32}$"
TARGET_NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
TOOL_NAME_PATTERN = "^hand_over_to_human(_[a-z0-9][a-z0-9_-]{0,63})?$"
# The shapes that can pass; the last one also admits values the special traits
# refuse (`whatsapp:bob` answers 400), which a pattern cannot exclude.
IDENTITY_PATTERN = (
    r"^((whatsapp|phone):\+[1-9][0-9]{6,14}|\+[1-9][0-9]{6,14}|email:[^@\s]+@[^@\s]+"
    r"|flex_participant:FX[0-9a-fA-F]{32}|[a-z][a-z0-9_]{0,31}:[!-~]{1,256})$"
)

TOOL_SECURITY: list[dict[str, list[str]]] = [
    {"toolBearer": []},
    {"toolQueryToken": []},
    {"twilioSignature": []},
]
ADMIN_SECURITY: list[dict[str, list[str]]] = [{"adminBearer": []}, {"uiSession": []}]
MCP_SECURITY: list[dict[str, list[str]]] = [{"toolBearer": []}]
VOICE_SECURITY: list[dict[str, list[str]]] = [
    {"twilioSignature": []},
    {"toolBearer": []},
    {"toolQueryToken": []},
]
OPEN: list[dict[str, list[str]]] = []  # no credentials


# --- small helpers, so each refusal is written once ------------------------------------


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def nullable(schema: Schema) -> Schema:
    """OpenAPI 3.1 spells `nullable` as a JSON Schema type union."""
    return {**schema, "type": [schema["type"], "null"]}


def json_body(schema: Schema, description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def refusals(*statuses: int) -> dict[str, Any]:
    """`{"400": {"$ref": …/BadRequest}, …}` from the shared responses."""
    return {str(status): ref("responses", ERROR_RESPONSES[status][0]) for status in statuses}


def error_response(
    description: str, *, retry_after: bool = False, challenge: bool = False
) -> dict[str, Any]:
    headers = {}
    if retry_after:
        headers["Retry-After"] = ref("headers", "RetryAfter")
    if challenge:
        headers["WWW-Authenticate"] = ref("headers", "WWWAuthenticate")
    response = json_body(ref("schemas", "Error"), description)
    if headers:
        response["headers"] = headers
    return response


# status → (component name, the shared response)
ERROR_RESPONSES: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("BadRequest", error_response("The request is malformed; `message` says what to fix.")),
    401: (
        "Unauthorized",
        error_response("No credentials were sent.", challenge=True),
    ),
    403: (
        "Forbidden",
        error_response(
            "The credentials are wrong, or this kind of endpoint has no credentials "
            "configured (for example no HANDOVER_ADMIN_TOKENS)."
        ),
    ),
    404: ("NotFound", error_response("No such handover, target or path.")),
    405: ("MethodNotAllowed", error_response("The path exists but not with this method.")),
    413: ("BodyTooLarge", error_response("The body is larger than HANDOVER_MAX_BODY_BYTES.")),
    415: (
        "UnsupportedMediaType",
        error_response("The body is neither JSON nor form-encoded (nor empty)."),
    ),
    429: (
        "RateLimited",
        error_response(
            "Too many new handovers for this conversation or customer within the rate "
            "window; nothing was stored. Retry after `Retry-After` seconds.",
            retry_after=True,
        ),
    ),
    503: (
        "Unavailable",
        error_response(
            "Nothing was stored: Redis cannot be reached or refuses writes (`unavailable`), "
            "or HANDOVER_MAX_PENDING handovers are already waiting for a worker "
            "(`backlog_full`). Retry after `Retry-After` seconds.",
            retry_after=True,
        ),
    ),
}


# --- schemas --------------------------------------------------------------------------

TIMESTAMP = {"type": "string", "format": "date-time"}
COUNT = {"type": "integer", "minimum": 0}
STATES = [status.value for status in Status]

# `HandoverRecord.to_public()`, field by field.
HANDOVER_PROPERTIES: dict[str, Schema] = {
    "handover_id": {"type": "string", "pattern": HANDOVER_ID_PATTERN},
    "kind": {
        "type": "string",
        "enum": ["conversation", "voice"],
        "description": "`conversation`: a Conversation handed over through an Interaction "
        "the worker creates; `voice`: a live call's ConversationRelay handoff, enqueued by "
        "Twilio from the TwiML `/voice/handoff` answered (`succeeded` at once, no job).",
    },
    "conversation_sid": nullable(
        {
            "type": "string",
            "pattern": CONVERSATION_SID_PATTERN,
            "description": "null for a voice handoff.",
        }
    ),
    "call_sid": nullable(
        {
            "type": "string",
            "pattern": "^CA[0-9a-f]{32}$",
            "description": "The call of a voice handoff; null otherwise (and for a voice "
            "handoff whose request had no CallSid).",
        }
    ),
    "identity": {"type": "string", "examples": ["whatsapp:+14*******23"]},
    "target": {"type": "string"},
    "state": ref("schemas", "HandoverState"),
    "attempts": COUNT,
    "ambiguous_attempts": COUNT,
    "lookups": COUNT,
    "replays": COUNT,
    "found_by_lookup": {
        "type": "boolean",
        "description": "The Interaction was found through TaskRouter after an attempt whose "
        "answer was lost, rather than created by an answered request.",
    },
    "interaction_sid": nullable({"type": "string", "pattern": "^KD[0-9a-fA-F]{32}$"}),
    "channel_sid": nullable({"type": "string", "pattern": "^UO[0-9a-fA-F]{32}$"}),
    "channel_status": nullable(
        {
            "type": "string",
            "examples": ["active", "unconfirmed", "failed"],
            "description": "What reading the Interaction's channel after the create showed: "
            "Twilio's status (`active`, or `closed`/`inactive`/`pause`/`transfer` for a "
            "channel someone else has moved on), `unconfirmed` when no read answered within "
            "10 s (delivered, not sent again), `failed` while a new attempt waits or when "
            "the handover failed with it; null before the first channel is read.",
        }
    ),
    "channel_failures": {
        **COUNT,
        "description": "Interactions created for this handover whose channel then failed "
        "(each followed by a new attempt).",
    },
    "channel_error": {"oneOf": [{"type": "null"}, ref("schemas", "ChannelError")]},
    "error": {"oneOf": [{"type": "null"}, ref("schemas", "HandoverError")]},
    "next_attempt_at": nullable(TIMESTAMP),
    "created_at": TIMESTAMP,
    "updated_at": TIMESTAMP,
    "finished_at": nullable(TIMESTAMP),
    "replayed_at": nullable(TIMESTAMP),
    "aftercare": {
        "type": ["string", "null"],
        "enum": ["pending", "done", None],
        "description": "The Conversation steps after the outcome: marking it and silencing "
        "the bot after a success, the fallback message after a failure.",
    },
    "conversation_marked": {
        "type": ["boolean", "null"],
        "description": "Whether `flexHandover` was merged into the Conversation's attributes.",
    },
    "removed_webhooks": {
        "type": "array",
        "description": "The bot's webhooks removed from the Conversation (URL: scheme, "
        "host, port and path only).",
        "items": {
            "type": "object",
            "properties": {
                "sid": {"type": ["string", "null"]},
                "target": {"type": ["string", "null"]},
                "url": {"type": ["string", "null"]},
            },
        },
    },
    "fallback_message_sid": {"type": ["string", "null"]},
    "aftercare_error": {
        "type": ["string", "null"],
        "description": "Why a Conversation step did not happen; the outcome stands.",
    },
    "ended_at": nullable(TIMESTAMP),
    "ended_by": {
        "type": ["string", "null"],
        "enum": ["task.completed", "task.canceled", "task.deleted", None],
    },
    "handed_back": {
        "type": ["boolean", "null"],
        "description": "Whether the Conversation was told the agent's task ended.",
    },
    "restored_webhooks": {
        "type": "integer",
        "minimum": 0,
        "description": "How many removed webhooks the hand-back put back.",
    },
    "problem": {
        "type": ["string", "null"],
        "description": "What was wrong with a voice handoff's request that was answered "
        "anyway: no CallSid, HandoffData that is not JSON or over the bound, an unknown "
        "target (handed to another).",
    },
}

# What a tool call's answer says about the target's agents (api.availability).
AVAILABILITY_PROPERTIES: dict[str, Schema] = {
    "agents_available": {
        "type": "boolean",
        "description": "false outside the target's business hours (`hours` in "
        "HANDOVER_TARGETS); always true for a target without them.",
    },
    "opens_at": nullable(
        {
            **TIMESTAMP,
            "examples": ["2026-03-30T08:00:00+02:00"],
            "description": "Only when `agents_available` is false: the next opening "
            "instant, ISO 8601 with the offset of the target's time zone; null when its "
            "hours never open.",
        }
    ),
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "Every refusal, aiohttp's own 404/405/413 included.",
        "required": ["error", "message"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "description": "Machine-readable code.", "minLength": 1},
            "message": {"type": "string", "description": "For a person (or the model)."},
        },
    },
    "HandoverState": {"type": "string", "enum": STATES},
    "HandoverAck": {
        "type": "object",
        "required": [
            "handover_id",
            "status",
            "status_url",
            "handed_over",
            "message",
            "agents_available",
        ],
        "additionalProperties": False,
        "properties": {
            "handover_id": {"type": "string", "pattern": HANDOVER_ID_PATTERN},
            "status": ref("schemas", "HandoverState"),
            "status_url": {
                "type": "string",
                "pattern": "^/handovers/ho_[0-9a-f]{32}$",
                "description": "Relative to this service; needs an admin token.",
            },
            "handed_over": {
                "const": True,
                "description": "This call's handover is stored (or the conversation's "
                "live one answered) and goes to Flex.",
            },
            "message": {
                "type": "string",
                "description": "What the AI agent may tell the customer: HANDOVER_MESSAGE "
                "while agents work; outside the target's business hours its "
                "`closed_message`, or a default saying when agents are back.",
            },
            **AVAILABILITY_PROPERTIES,
        },
    },
    "HandoverDeclined": {
        "type": "object",
        "description": "Outside the business hours of a target with `outside_hours: "
        '"decline"`, and the conversation has no live handover: nothing was stored, '
        "no job, no Interaction. Not an error: the model relays `message`.",
        "required": ["handed_over", "agents_available", "opens_at", "message"],
        "additionalProperties": False,
        "properties": {
            "handed_over": {"const": False},
            "agents_available": {"const": False},
            "opens_at": AVAILABILITY_PROPERTIES["opens_at"],
            "message": {
                "type": "string",
                "description": "The target's `closed_message`, or a default saying that "
                "nobody was transferred and when agents are back.",
            },
        },
    },
    "HandoverError": {
        "type": "object",
        "required": ["status", "code", "message"],
        "additionalProperties": False,
        "properties": {
            "status": nullable({"type": "integer", "description": "Twilio's HTTP status."}),
            "code": nullable({"type": "integer", "description": "Twilio's error code."}),
            "message": {"type": "string", "description": "Phone numbers and e-mails masked."},
        },
    },
    "ChannelError": {
        "type": "object",
        "description": "The last channel that failed: Twilio's `error_code` and "
        "`error_message` for it, and its Interaction. Kept after a later attempt succeeded.",
        "required": ["code", "message", "interaction_sid"],
        "additionalProperties": False,
        "properties": {
            "code": nullable({"type": "integer", "description": "The channel's error_code."}),
            "message": {"type": "string", "description": "Phone numbers and e-mails masked."},
            "interaction_sid": nullable({"type": "string", "pattern": "^KD[0-9a-fA-F]{32}$"}),
        },
    },
    "Handover": {
        "type": "object",
        "description": "A handover's status record; the identity is masked.",
        "required": list(HANDOVER_PROPERTIES),  # every field, null when unknown
        "additionalProperties": False,
        "properties": HANDOVER_PROPERTIES,
    },
    "HandoverPage": {
        "type": "object",
        "required": ["handovers", "next"],
        "additionalProperties": False,
        "properties": {
            "handovers": {"type": "array", "items": ref("schemas", "Handover")},
            "next": nullable(
                {
                    "type": "string",
                    "description": "Pass as `before` for the next, older page; null when "
                    "there is none. A filtered page looks at 2,000 index entries at most, "
                    "so it may be short, or empty, and still have a `next`.",
                }
            ),
        },
    },
    "HandoverCounts": {
        "type": "object",
        "required": [
            "queued",
            "running",
            "retrying",
            "succeeded_last_hour",
            "failed_last_hour",
        ],
        "additionalProperties": False,
        "properties": {
            "queued": {
                "type": "integer",
                "minimum": 0,
                "description": "Handover jobs due now that no worker holds (the arq queue).",
            },
            "running": {
                "type": "integer",
                "minimum": 0,
                "description": "Handover jobs a worker holds (arq's in-progress key).",
            },
            "retrying": {
                "type": "integer",
                "minimum": 0,
                "description": "Handover jobs due later: waiting for their next attempt.",
            },
            "succeeded_last_hour": {
                "type": "integer",
                "minimum": 0,
                "description": "Outcomes written in the 60 minutes of `throughput`.",
            },
            "failed_last_hour": {"type": "integer", "minimum": 0},
        },
    },
    "ThroughputBucket": {
        "type": "object",
        "required": ["start", "succeeded", "failed"],
        "additionalProperties": False,
        "properties": {
            "start": {"type": "integer", "description": "The minute's start, Unix seconds."},
            "succeeded": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
        },
    },
    "HandoverSummary": {
        "type": "object",
        "required": [
            "counts",
            "oldest_waiting_seconds",
            "throughput",
            "targets",
            "generated_at",
        ],
        "additionalProperties": False,
        "properties": {
            "counts": ref("schemas", "HandoverCounts"),
            "oldest_waiting_seconds": nullable(
                {
                    "type": "number",
                    "minimum": 0,
                    "description": "How long the job at the head of the queue has been "
                    "due (0: not due yet); null when the queue is empty.",
                }
            ),
            "throughput": {
                "type": "object",
                "required": ["bucket_seconds", "buckets"],
                "additionalProperties": False,
                "properties": {
                    "bucket_seconds": {"const": 60},
                    "buckets": {
                        "type": "array",
                        "minItems": 60,
                        "maxItems": 60,
                        "description": "Oldest first; the last is the current minute.",
                        "items": ref("schemas", "ThroughputBucket"),
                    },
                },
            },
            "targets": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The configured targets' names (for `target=`).",
            },
            "generated_at": {"type": "number", "description": "Unix seconds."},
        },
    },
    "ToolInput": {
        "type": "object",
        "description": (
            f"The tool's input. Known fields are checked; any other field is kept and "
            f"passed to Flex as sent. `conversation_sid` and `identity` are for callers "
            f"that are not a Twilio AI Assistant: the {SESSION_HEADER} and "
            f"{IDENTITY_HEADER} headers win over them."
        ),
        "additionalProperties": True,
        "properties": {
            **{
                name: {
                    "type": ["string", "number", "null"],
                    "maxLength": limit,
                    "description": 'Text; a number is taken as its text (`42` → `"42"`).',
                }
                for name, limit in KNOWN_FIELDS.items()
            },
            "priority": {
                "type": ["string", "number", "null"],
                "maxLength": KNOWN_FIELDS["priority"],
                "description": "Text, or a number that stays a number.",
            },
            "conversation_sid": {"type": "string", "pattern": CONVERSATION_SID_PATTERN},
            "identity": {"type": "string", "examples": ["whatsapp:+14155550123"]},
        },
    },
    "ToolInputForm": {
        "type": "object",
        "description": "The same fields, form-encoded (all values are text).",
        "additionalProperties": {"type": "string"},
        "properties": {
            **{
                name: {"type": "string", "maxLength": limit} for name, limit in KNOWN_FIELDS.items()
            },
            "conversation_sid": {"type": "string", "pattern": CONVERSATION_SID_PATTERN},
            "identity": {"type": "string"},
        },
    },
    "ToolFunction": {
        "type": "object",
        "description": "An OpenAI-style function definition, to register as is.",
        "required": ["type", "function"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name", "description", "parameters"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "pattern": TOOL_NAME_PATTERN},
                    "description": {"type": "string"},
                    "parameters": {
                        "type": "object",
                        "description": "The same JSON Schema as `input_schema`.",
                    },
                },
            },
        },
    },
    "ToolSchemaDocument": {
        "type": "object",
        "required": ["input_schema", "tools", "routes"],
        "additionalProperties": False,
        "properties": {
            "input_schema": {
                "type": "object",
                "description": "The tool input as a JSON body, as JSON Schema (draft "
                "2020-12): `conversation_sid` and `identity` required, with an example.",
            },
            "tools": {
                "type": "array",
                "description": f"One per target, the default target's (`{TOOL_NAME}`) first.",
                "items": ref("schemas", "ToolFunction"),
            },
            "routes": {
                "type": "object",
                "description": "Tool name → the route that answers it.",
                "additionalProperties": {
                    "type": "object",
                    "required": ["target", "method", "path"],
                    "additionalProperties": False,
                    "properties": {
                        "target": {"type": "string", "pattern": TARGET_NAME_PATTERN},
                        "method": {"const": "POST"},
                        "path": {
                            "type": "string",
                            "pattern": "^/tools/flex-handover(/[a-z0-9_-]+)?$",
                        },
                    },
                },
            },
        },
    },
    "TaskRouterEvent": {
        "type": "object",
        "description": "A TaskRouter workspace event, as Twilio sends it to the workspace's "
        "Event Callback URL; the fields read here (Twilio sends more, all kept out of the "
        "record).",
        "additionalProperties": {"type": "string"},
        "properties": {
            "EventType": {"type": "string", "examples": sorted(END_EVENTS)},
            "TaskSid": {"type": "string", "pattern": "^WT[0-9a-fA-F]{32}$"},
            "TaskAttributes": {
                "type": "string",
                "maxLength": MAX_TASK_ATTRIBUTES_CHARS,
                "description": "The task's attributes, a JSON object as a string: "
                "`handoverId` names the handover, `handoverAttempt` its attempt.",
            },
        },
    },
    "TaskRouterEventAnswer": {
        "type": "object",
        "required": ["handover_id", "outcome", "reason"],
        "additionalProperties": False,
        "properties": {
            "handover_id": nullable({"type": "string", "pattern": HANDOVER_ID_PATTERN}),
            "outcome": {
                "type": "string",
                "enum": ["recorded", "duplicate", "ignored"],
                "description": "`recorded`: the handover's end written and the hand-back "
                "queued; `duplicate`: it had ended already (nothing changed); `ignored`: "
                "not the end of a task, not a handover's task, or an unknown handover.",
            },
            "reason": {"type": "string"},
        },
    },
    "VoiceAction": {
        "type": "object",
        "description": "Twilio's `<Connect action>` request when a ConversationRelay session "
        "ends, form-encoded: the call's parameters (Twilio sends more than these, all "
        "ignored), the session's, and `HandoffData`.",
        "additionalProperties": {"type": "string"},
        "properties": {
            "CallSid": {"type": "string", "pattern": "^CA[0-9a-fA-F]{32}$"},
            "AccountSid": {"type": "string"},
            "From": {"type": "string", "description": "The caller; masked in the record."},
            "To": {"type": "string"},
            "CallStatus": {"type": "string"},
            "SessionId": {"type": "string"},
            "SessionStatus": {"type": "string", "description": "Logged only."},
            "SessionDuration": {"type": "string"},
            "ErrorCode": {"type": "string", "description": "Logged only."},
            "HandoffData": {
                "type": "string",
                "description": "The agent's `end` message's `handoffData`, verbatim. Absent "
                "or blank: the session ended without a handoff (goodbye TwiML). A JSON "
                f"object's fields go into the task, within {MAX_HANDOFF_DATA_BYTES} bytes; "
                "anything else goes in as text (`handoffDataText`).",
            },
        },
    },
    "JsonRpcRequest": {
        "type": "object",
        "description": "A JSON-RPC 2.0 request: `initialize`, `ping`, `tools/list`, "
        "`tools/call`; without `id` it is a notification (answered 202).",
        "required": ["jsonrpc", "method"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer"]},
            "method": {"type": "string", "examples": ["initialize", "tools/list", "tools/call"]},
            "params": {"type": "object"},
        },
    },
    "JsonRpcResult": {
        "type": "object",
        "required": ["jsonrpc", "id", "result"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer"]},
            "result": {
                "type": "object",
                "description": "A `tools/call` result has `content` (the text to relay and "
                "the handover id), `structuredContent` (the tool endpoint's answer) and "
                "`isError` (true for a refusal the model can act on: bad input, a rate "
                "limit, the backlog, Redis unavailable).",
            },
        },
    },
    "JsonRpcError": {
        "type": "object",
        "required": ["jsonrpc", "id", "error"],
        "properties": {
            "jsonrpc": {"const": "2.0"},
            "id": {"type": ["string", "integer", "null"]},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "integer",
                        "examples": [-32700, -32600, -32601, -32602, -32603, -32022],
                    },
                    "message": {"type": "string"},
                    "data": {},
                },
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {"status": {"type": "string"}},
    },
    "UiSession": {
        "type": "object",
        "required": ["signed_in", "open", "csrf_token", "expires_at"],
        "additionalProperties": False,
        "properties": {
            "signed_in": {"type": "boolean"},
            "open": {
                "type": "boolean",
                "description": "HANDOVER_ALLOW_UNAUTHENTICATED with no admin token: the "
                "operator endpoints are open, no sign-in is needed.",
            },
            "csrf_token": {
                "type": ["string", "null"],
                "description": "Send it as `X-CSRF-Token` with every request the session "
                "cookie signs in that is not a GET.",
            },
            "expires_at": {**TIMESTAMP, "type": ["string", "null"]},
        },
    },
    "UiSignIn": {
        "type": "object",
        "required": ["token"],
        "properties": {"token": {"type": "string", "description": "An admin token."}},
    },
}


# --- parameters and operations ----------------------------------------------------------

PARAMETERS: dict[str, dict[str, Any]] = {
    "CsrfToken": {
        "name": "X-CSRF-Token",
        "in": "header",
        "required": False,
        "description": "The session's CSRF token (`GET /ui/session`); required with a live "
        "session.",
        "schema": {"type": "string"},
    },
    "SessionId": {
        "name": SESSION_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "Sent by Twilio AI Assistants: `webhook:conversations__IS…/CH…` (each prefix "
            "optional). Only a Conversations session can be handed over."
        ),
        "schema": {
            "type": "string",
            "pattern": "^(webhook:)?(conversations__IS[0-9a-fA-F]{32}/)?CH[0-9a-fA-F]{32}$",
        },
        "example": "webhook:conversations__IS" + "0" * 32 + "/CH" + "0" * 32,
    },
    "Identity": {
        "name": IDENTITY_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "The customer, `trait:value` split on the first colon: `whatsapp:` and "
            "`phone:` need an E.164 number, `email:` an address, `flex_participant:` an FX SID "
            "(as does `user_id:` with a value starting `FX`). A bare E.164 number is a "
            "`phone:` identity."
        ),
        "schema": {"type": "string", "pattern": IDENTITY_PATTERN},
        "example": "whatsapp:+14155550123",
    },
    "Target": {
        "name": "target",
        "in": "path",
        "required": True,
        "description": (
            f"A target configured in HANDOVER_TARGETS (`{DEFAULT_TARGET}` is the one "
            "FLEX_WORKFLOW_SID defines); any other name answers 404."
        ),
        "schema": {"type": "string", "pattern": TARGET_NAME_PATTERN},
    },
    "VoiceTarget": {
        "name": "target",
        "in": "path",
        "required": True,
        "description": (
            "A target configured in HANDOVER_TARGETS. A live call is never refused for it: "
            f"an unknown name is handed to `{DEFAULT_TARGET}` (or the first target), and the "
            "record's `problem` says so."
        ),
        "schema": {"type": "string"},
    },
    "McpProtocolVersion": {
        "name": "MCP-Protocol-Version",
        "in": "header",
        "required": False,
        "description": "The protocol version of the request (absent: 2025-03-26). "
        "2026-07-28 requests carry their own `_meta` envelope instead of `initialize`.",
        "schema": {"type": "string", "enum": list(SUPPORTED_VERSIONS)},
    },
    "HandoverId": {
        "name": "handover_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": HANDOVER_ID_PATTERN},
    },
}


def tool_operation(operation_id: str, summary: str, *, with_target: bool) -> dict[str, Any]:
    parameters = [ref("parameters", "SessionId"), ref("parameters", "Identity")]
    if with_target:
        parameters.insert(0, ref("parameters", "Target"))
    ack_links = {
        "GetHandover": {
            "operationId": "getHandover",
            "parameters": {"handover_id": "$response.body#/handover_id"},
        }
    }
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": (
            "Stores the handover before answering; a worker delivers it to Flex. A call "
            "for a conversation that has a live or recently succeeded handover answers "
            "200 with that handover instead of creating a second one."
        ),
        "tags": ["tool"],
        "security": TOOL_SECURITY,
        "parameters": parameters,
        "requestBody": {
            "required": False,
            "description": "JSON object, form-encoded, or no body at all.",
            "content": {
                JSON: {"schema": ref("schemas", "ToolInput")},
                FORM: {"schema": ref("schemas", "ToolInputForm")},
            },
        },
        "responses": {
            "202": json_body(
                ref("schemas", "HandoverAck"), "A new handover was stored.", links=ack_links
            ),
            "200": json_body(
                {"oneOf": [ref("schemas", "HandoverAck"), ref("schemas", "HandoverDeclined")]},
                "The conversation's live or recent handover (nothing new stored), or, "
                "outside the business hours of a target that declines, `handed_over: false` "
                "(nothing stored; the link applies to the first shape only).",
                links=ack_links,
            ),
            **refusals(400, 401, 403, 404, 413, 415, 429, 503),
        },
    }


def voice_operation(operation_id: str, summary: str, *, with_target: bool) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": (
            "The `<Connect action>` URL of the TwiML that starts ConversationRelay. Answers "
            "TwiML at once, built from the settings: with a non-blank `HandoffData`, "
            "`<Enqueue workflowSid><Task priority timeout>{task attributes}</Task></Enqueue>` "
            "(the target's attributes, HandoffData's fields, `handoverId`, `handoverTarget`, "
            "`from`, `callSid`, `channelType: voice`); without, VOICE_GOODBYE_MESSAGE in "
            "`<Say>` and `<Hangup/>`. The handover is recorded (kind `voice`, `succeeded`) "
            "in one Redis round trip, de-duplicated by `CallSid`; if Redis is down or slow "
            "the TwiML is answered anyway. A request that fails authentication is not "
            "Twilio's live call and gets the JSON refusal."
        ),
        "tags": ["twilio"],
        "security": VOICE_SECURITY,
        "parameters": [ref("parameters", "VoiceTarget")] if with_target else [],
        "requestBody": {
            "required": False,
            "content": {FORM: {"schema": ref("schemas", "VoiceAction")}},
        },
        "responses": {
            "200": {
                "description": "TwiML for the live call: the `<Enqueue>` to Flex, or the "
                "goodbye and `<Hangup/>`.",
                "content": {TWIML: {"schema": {"type": "string"}}},
            },
            **refusals(400, 401, 403, 413),
        },
    }


def admin_operation(
    operation_id: str, summary: str, responses: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["operator"],
        "security": ADMIN_SECURITY,
        **extra,
        "responses": {**responses, **refusals(401, 403, 503)},
    }


def open_operation(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["service"],
        "security": OPEN,
        "responses": responses,
    }


def _json_rpc(message: Schema) -> Schema:
    return {"oneOf": [message, {"type": "array", "items": message}]}


MCP_EXAMPLE_CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {
        "name": TOOL_NAME,
        "arguments": {
            "conversation_sid": EXAMPLE_CONVERSATION_SID,
            "identity": "whatsapp:+14155550123",
            "reason": "the customer asked for a person",
        },
    },
}


def mcp_not_allowed(operation_id: str, summary: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["mcp"],
        "security": MCP_SECURITY,
        "responses": {
            "405": {
                **json_body(ref("schemas", "Error"), "Not served: answers are JSON, never SSE."),
                "headers": {
                    "Allow": {"required": True, "schema": {"type": "string", "const": "POST"}}
                },
            },
            **refusals(401, 403),
        },
    }


MCP_PATH_ITEM: dict[str, Any] = {
    "post": {
        "operationId": "mcp",
        "summary": "MCP server (Streamable HTTP, stateless, JSON answers)",
        "description": (
            "A Model Context Protocol server with one tool per target: "
            f"`{TOOL_NAME}` (the default target) and `{TOOL_NAME}_<target>`. Each POST "
            "stands alone (no session): `initialize` negotiates a version but is not "
            "required. Batches only at 2024-11-05 and 2025-03-26, at most "
            f"{MAX_BATCH} messages. Protocol problems are JSON-RPC errors; a request from a "
            "browser Origin other than loopback and HANDOVER_MCP_ALLOWED_ORIGINS is refused "
            "403. Needs a tool token as a bearer token."
        ),
        "tags": ["mcp"],
        "security": MCP_SECURITY,
        "parameters": [ref("parameters", "McpProtocolVersion")],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": _json_rpc(ref("schemas", "JsonRpcRequest")),
                    "examples": {
                        "toolsCall": {"value": MCP_EXAMPLE_CALL},
                        "toolsList": {"value": {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}},
                    },
                }
            },
        },
        "responses": {
            "200": json_body(
                _json_rpc(
                    {"oneOf": [ref("schemas", "JsonRpcResult"), ref("schemas", "JsonRpcError")]}
                ),
                "The answer: a result or a JSON-RPC error (an array for a batch).",
            ),
            "202": {"description": "Only notifications or responses: nothing to answer."},
            "400": json_body(
                ref("schemas", "JsonRpcError"),
                "The message could not be read (-32700, -32600), its protocol version is not "
                "supported (-32022), or a 2026-07-28 request's envelope or headers are wrong.",
            ),
            "404": json_body(
                ref("schemas", "JsonRpcError"),
                "A 2026-07-28 request for a method this server does not have (-32601).",
            ),
            "406": json_body(ref("schemas", "Error"), "`Accept` excludes application/json."),
            "415": json_body(ref("schemas", "Error"), "The body is not application/json."),
            **refusals(401, 403, 413),
        },
    },
    "get": mcp_not_allowed("mcpStream", "No SSE stream (405)"),
    "delete": mcp_not_allowed("mcpEndSession", "No session to end (405)"),
}


def _status(value: str) -> Schema:
    return {"allOf": [ref("schemas", "Status"), {"properties": {"status": {"const": value}}}]}


PATHS: dict[str, dict[str, Any]] = {
    "/tools/flex-handover": {
        "post": tool_operation(
            "callTool", "Hand the conversation to a human agent", with_target=False
        )
    },
    "/tools/flex-handover/{target}": {
        "post": tool_operation(
            "callToolForTarget", "Hand the conversation to a named target", with_target=True
        )
    },
    SCHEMA_PATH: {
        "get": {
            "operationId": "getToolSchema",
            "summary": "The tool's JSON Schema and a function definition per target",
            "description": (
                "For agent frameworks: the tool input's JSON Schema, an OpenAI-style "
                "function definition per configured target (`hand_over_to_human`, "
                "`hand_over_to_human_<target>`: the MCP tools' names) and the route that "
                "answers each. No secrets; it names the targets, so it takes the tool "
                "endpoint's credentials."
            ),
            "tags": ["tool"],
            "security": TOOL_SECURITY,
            "responses": {
                "200": json_body(ref("schemas", "ToolSchemaDocument"), "The definitions."),
                **refusals(401, 403),
            },
        }
    },
    "/handovers": {
        "get": admin_operation(
            "listHandovers",
            "Handovers in a state, or all of them (`recent`), newest first",
            {
                "200": json_body(ref("schemas", "HandoverPage"), "One page."),
                **refusals(400),
            },
            parameters=[
                {
                    "name": "state",
                    "in": "query",
                    "required": True,
                    "description": "`recent`: every handover, newest queued (created or "
                    "replayed) first; `failed`: the dead letters, newest failure first; "
                    "any other: the handovers in that state when read, newest queued first.",
                    "schema": {"type": "string", "enum": [*STATES, "recent"]},
                },
                {
                    "name": "target",
                    "in": "query",
                    "required": False,
                    "description": "Only this target's handovers.",
                    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "Default 50; above 500 lists 500.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                {
                    "name": "before",
                    "in": "query",
                    "required": False,
                    "description": "A previous page's `next`, or a Unix time.",
                    "schema": {"type": "string"},
                },
            ],
        )
    },
    "/handovers/summary": {
        "get": admin_operation(
            "getHandoverSummary",
            "Live counts, the last hour's outcomes by minute, the oldest wait",
            {"200": json_body(ref("schemas", "HandoverSummary"), "The summary.")},
        )
    },
    "/handovers/{handover_id}": {
        "get": admin_operation(
            "getHandover",
            "A handover's status",
            {"200": json_body(ref("schemas", "Handover"), "The status record."), **refusals(404)},
            parameters=[ref("parameters", "HandoverId")],
        )
    },
    "/handovers/{handover_id}/replay": {
        "post": admin_operation(
            "replayHandover",
            "Queue a failed handover again",
            {
                "202": json_body(ref("schemas", "Handover"), "Queued again (`state` queued)."),
                **refusals(404),
                "409": json_body(
                    {
                        "allOf": [
                            ref("schemas", "Error"),
                            {
                                "properties": {
                                    "error": {
                                        "enum": ["already_succeeded", "in_progress", "superseded"]
                                    }
                                }
                            },
                        ]
                    },
                    "Not replayed: it succeeded, is still live, or the conversation has a "
                    "newer live or succeeded handover.",
                ),
            },
            parameters=[ref("parameters", "HandoverId")],
        )
    },
    "/webhooks/taskrouter": {
        "post": {
            "operationId": "taskRouterEvent",
            "summary": "TaskRouter's workspace event callback: hand back when the task ends",
            "description": (
                "Set as the TaskRouter workspace's Event Callback URL. `task.completed`, "
                "`task.canceled` or `task.deleted` of a task whose attributes carry a "
                "`handoverId` records the handover's end (`ended_at`, `ended_by`) and queues "
                "the hand-back to the Conversation, once: a repeated or later end event "
                "answers `duplicate` and changes nothing. Every other signed event is "
                "answered 200 `ignored`. The signature is always checked, with "
                "TWILIO_AUTH_TOKEN (HANDOVER_VERIFY_TWILIO_SIGNATURE does not apply)."
            ),
            "tags": ["twilio"],
            "security": [{"twilioSignature": []}],
            "requestBody": {
                "required": False,
                "content": {FORM: {"schema": ref("schemas", "TaskRouterEvent")}},
            },
            "responses": {
                "200": json_body(
                    ref("schemas", "TaskRouterEventAnswer"), "Acknowledged: what was done."
                ),
                **refusals(400, 403, 413),
                "503": {
                    **json_body(
                        ref("schemas", "Error"),
                        "No TWILIO_AUTH_TOKEN is configured, so no event can be verified "
                        "(`not_configured`, no `Retry-After`), or Redis cannot be reached or "
                        "refuses writes (`unavailable`, with `Retry-After`).",
                    ),
                    "headers": {
                        "Retry-After": {
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                },
            },
        }
    },
    "/voice/handoff": {
        "post": voice_operation(
            "voiceHandoff",
            "ConversationRelay's <Connect action>: hand the call to Flex",
            with_target=False,
        )
    },
    "/voice/handoff/{target}": {
        "post": voice_operation(
            "voiceHandoffForTarget",
            "ConversationRelay's <Connect action>: hand the call to a named target",
            with_target=True,
        )
    },
    "/mcp": MCP_PATH_ITEM,
    "/healthz": {
        "get": open_operation(
            "healthz", "The process is up", {"200": json_body(_status("ok"), "Up.")}
        )
    },
    "/readyz": {
        "get": open_operation(
            "readyz",
            "Redis takes writes: the service can accept handovers",
            {"200": json_body(_status("ready"), "Ready."), **refusals(503)},
        )
    },
    "/metrics": {
        "get": {
            **open_operation(
                "metrics",
                "Prometheus metrics (text format); absent with HANDOVER_METRICS=false",
                {
                    "200": {
                        "description": "The metrics, in Prometheus' text format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **refusals(401, 403),
                },
            ),
            "description": (
                "Open unless HANDOVER_METRICS_TOKEN is set; then it needs "
                "`Authorization: Bearer <metrics token>` (401 without, 403 for a wrong one)."
            ),
        }
    },
    "/ui": {
        "get": {
            **open_operation(
                "operatorPage",
                "The operator page (HTML; it reads the operator endpoints once signed in)",
                {
                    "200": {
                        "description": "The page. It holds no data: its script asks for it.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "tags": ["ui"],
        }
    },
    "/ui/static/{name}": {
        "get": {
            **open_operation(
                "operatorPageFile",
                "One of the operator page's files (its style sheet, script and icon)",
                {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/css": {"schema": {"type": "string"}},
                            "text/javascript": {"schema": {"type": "string"}},
                            "image/svg+xml": {"schema": {"type": "string"}},
                        },
                    },
                    **refusals(404),
                },
            ),
            "tags": ["ui"],
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "examples": {"script": {"value": "ui.js"}, "style": {"value": "ui.css"}},
                }
            ],
        }
    },
    "/ui/session": {
        "get": {
            **open_operation(
                "getUiSession",
                "Whether this browser is signed in to the operator page, and its CSRF token",
                {
                    "200": json_body(ref("schemas", "UiSession"), "The session's state."),
                    **refusals(503),
                },
            ),
            "tags": ["ui"],
        },
        "post": {
            **open_operation(
                "signInToUi",
                "Sign in to the operator page with an admin token: a session cookie",
                {
                    "200": json_body(
                        ref("schemas", "UiSession"),
                        "Signed in: `Set-Cookie` carries the session (HttpOnly, "
                        "SameSite=Strict, Path=/, Max-Age HANDOVER_UI_SESSION_SECONDS; Secure "
                        "and named `__Host-flex_handover_session` unless "
                        "HANDOVER_UI_SECURE_COOKIE=false, then `flex_handover_session`). "
                        "With HANDOVER_ALLOW_UNAUTHENTICATED and no admin token, `open` and "
                        "no cookie.",
                    ),
                    **refusals(400, 401, 403, 413, 415),
                    "429": error_response(
                        "`too_many_sign_ins`: more than 5 failed sign-ins from this address "
                        "within a minute; not even the right token is checked until "
                        "`Retry-After` seconds have passed.",
                        retry_after=True,
                    ),
                    **refusals(503),
                },
            ),
            "tags": ["ui"],
            "description": (
                "The admin token goes in the body, never the URL. 401 for a wrong or missing "
                "one, 403 when no HANDOVER_ADMIN_TOKENS are configured."
            ),
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": ref("schemas", "UiSignIn")},
                    FORM: {"schema": ref("schemas", "UiSignIn")},
                },
            },
        },
        "delete": {
            **open_operation(
                "signOutOfUi",
                "Sign out of the operator page: the session ends, the cookie is cleared",
                {
                    "204": {"description": "Signed out (or there was no live session)."},
                    "403": error_response(
                        "`csrf`: a live session, without its `X-CSRF-Token` header."
                    ),
                    **refusals(503),
                },
            ),
            "tags": ["ui"],
            "parameters": [ref("parameters", "CsrfToken")],
        },
    },
    "/openapi.json": {
        "get": open_operation(
            "openapi",
            "This document",
            {"200": json_body({"type": "object"}, "The OpenAPI document.")},
        )
    },
}


def _package_version() -> str:
    try:
        return version("flex-handover")
    except PackageNotFoundError:  # running from a checkout that was not installed
        return "0.0.0"


def build_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flex-handover",
            "version": _package_version(),
            "description": (
                "Hands a customer conversation from an AI agent to a human agent in "
                "Twilio Flex. Every refusal is JSON `{error, message}`; a method a path "
                "does not list answers 405 with the same body."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "tool", "description": "Called by the AI agent (a Twilio AI Assistant tool)."},
            {
                "name": "operator",
                "description": "Need an admin token, or the operator page's session cookie.",
            },
            {"name": "service", "description": "Probes and this document; no credentials."},
            {
                "name": "twilio",
                "description": "Called by Twilio, signed with the auth token (voice: or a "
                "tool token).",
            },
            {"name": "mcp", "description": "The MCP server, for any agent that mounts tools."},
            {"name": "ui", "description": "The operator page and its sign-in."},
        ],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "responses": {name: response for name, response in ERROR_RESPONSES.values()},
            "headers": {
                "RetryAfter": {
                    "required": True,
                    "description": "Whole seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "WWWAuthenticate": {
                    "required": True,
                    "schema": {"type": "string", "pattern": "^Bearer"},
                },
            },
            "securitySchemes": {
                "toolBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from HANDOVER_TOOL_TOKENS.",
                },
                "toolQueryToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "A token from HANDOVER_TOOL_TOKENS, for tool URLs "
                    "that cannot carry a header.",
                },
                "twilioSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Twilio-Signature",
                    "description": "Twilio's request signature, checked with "
                    "TWILIO_AUTH_TOKEN: on the tool endpoint when "
                    "HANDOVER_VERIFY_TWILIO_SIGNATURE is on, on /webhooks/taskrouter and "
                    "/voice/handoff always.",
                },
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from HANDOVER_ADMIN_TOKENS (header only).",
                },
                "uiSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "__Host-flex_handover_session",
                    "description": "The operator page's session cookie (`POST /ui/session`; "
                    "`flex_handover_session` with HANDOVER_UI_SECURE_COOKIE=false). A request "
                    "it signs in that is not a GET (a replay) also needs the session's "
                    "`X-CSRF-Token` header, else 403 `csrf`.",
                },
            },
        },
    }


DOCUMENT = build_document()
_BODY = json.dumps(DOCUMENT, separators=(",", ":")).encode()


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: built once at import, served as bytes."""
    return web.Response(body=_BODY, content_type=JSON, charset="utf-8")


def routes() -> list[web.RouteDef]:
    return [web.get("/openapi.json", openapi_json)]
