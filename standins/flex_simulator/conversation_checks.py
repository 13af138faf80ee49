"""The checks Twilio puts on the Conversations requests made after a handover
(update a Conversation, add, list and delete its scoped webhooks, post and list
its messages), pure like `spec_checks`. The tables mirror the operations in
twilio_conversations_v1.json (tests/unit/test_simulator_conversation_checks.py holds
them to it); the limits are Twilio's documented ones (the Conversations Limits
and Conversation Scoped Webhook pages), which the spec does not carry.

Stricter than Twilio in one way, on purpose: an unknown or repeated parameter is a
400 (Twilio ignores unknown ones), so a misspelt name fails in a test instead of
silently doing nothing. Semantic refusals answer Twilio's generic 400 code 20001:
the codes Twilio gives them are not confirmed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from shared.sids import pattern as sid_pattern
from standins.flex_simulator.errors import bad_request
from standins.flex_simulator.spec_checks import FormParam, ParamValue, check_params, check_value

# Enums of twilio_conversations_v1.json (a test holds them to the spec).
CONVERSATION_STATES = ("initializing", "inactive", "active", "closed")
WEBHOOK_TARGETS = ("webhook", "trigger", "studio")
WEBHOOK_METHODS = ("get", "post")
MESSAGE_ORDERS = ("asc", "desc")

# Twilio's documented limits (bytes of UTF-8 for the sizes).
MAX_FRIENDLY_NAME = 256
MAX_CONVERSATION_ATTRIBUTES = 16 * 1024
MAX_MESSAGE_ATTRIBUTES = 4 * 1024
MAX_MESSAGE_BODY = 32 * 1024
MAX_WEBHOOKS = 5
MIN_TIMERS = {"Timers.Inactive": 60, "Timers.Closed": 600}  # seconds
DEFAULT_AUTHOR = "system"

WEBHOOK_SID = sid_pattern("WH")
# The X-Twilio-Webhook-Enabled header of UpdateConversation and CreateConversationMessage.
WEBHOOK_ENABLED_HEADER = FormParam(enum=("true", "false"))

UPDATE_CONVERSATION_PARAMS: dict[str, FormParam] = {
    "FriendlyName": FormParam(),
    "DateCreated": FormParam(format="date-time"),
    "DateUpdated": FormParam(format="date-time"),
    "Attributes": FormParam(),
    "MessagingServiceSid": FormParam(pattern=sid_pattern("MG")),
    "State": FormParam(enum=CONVERSATION_STATES),
    "Timers.Inactive": FormParam(),
    "Timers.Closed": FormParam(),
    "UniqueName": FormParam(),
    "Bindings.Email.Address": FormParam(),
    "Bindings.Email.Name": FormParam(),
}

CREATE_WEBHOOK_PARAMS: dict[str, FormParam] = {
    "Target": FormParam(required=True, enum=WEBHOOK_TARGETS),
    "Configuration.Url": FormParam(),
    "Configuration.Method": FormParam(enum=WEBHOOK_METHODS, any_case=True),
    "Configuration.Filters": FormParam(type="array"),
    "Configuration.Triggers": FormParam(type="array"),
    "Configuration.FlowSid": FormParam(pattern=sid_pattern("FW")),
    "Configuration.ReplayAfter": FormParam(type="integer"),
}

CREATE_MESSAGE_PARAMS: dict[str, FormParam] = {
    "Author": FormParam(),
    "Body": FormParam(),
    "DateCreated": FormParam(format="date-time"),
    "DateUpdated": FormParam(format="date-time"),
    "Attributes": FormParam(),
    "MediaSid": FormParam(pattern=sid_pattern("ME")),
    "ContentSid": FormParam(pattern=sid_pattern("HX")),
    "ContentVariables": FormParam(),
    "Subject": FormParam(),
}

_PAGING: dict[str, FormParam] = {
    "Page": FormParam(type="integer", minimum=0),
    "PageToken": FormParam(),
}
LIST_WEBHOOKS_PARAMS: dict[str, FormParam] = {
    "PageSize": FormParam(type="integer", minimum=1, maximum=5),
    **_PAGING,
}
LIST_MESSAGES_PARAMS: dict[str, FormParam] = {
    "Order": FormParam(enum=MESSAGE_ORDERS),
    "PageSize": FormParam(type="integer", minimum=1, maximum=100),
    **_PAGING,
}

_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def check_webhook_enabled(value: str | None) -> str | None:
    """The X-Twilio-Webhook-Enabled header: absent, `true` or `false`."""
    if value is None:
        return None
    return str(check_value("X-Twilio-Webhook-Enabled", value, WEBHOOK_ENABLED_HEADER))


def check_attributes(value: str, name: str, max_bytes: int) -> str:
    """Attributes: structurally valid JSON (any value, as Twilio says), within its size."""
    if len(value.encode()) > max_bytes:
        raise bad_request(f"{name} is larger than {max_bytes // 1024} KB")
    try:
        json.loads(value)
    except ValueError:
        raise bad_request(f"{name} must be valid JSON") from None
    return value


def duration_seconds(value: str, name: str) -> int:
    """An ISO 8601 duration (`PT10M`, `P1DT2H`) in seconds."""
    match = _DURATION.fullmatch(value)
    if match is None or value in ("P", "PT"):
        raise bad_request(f"Invalid {name}: {value!r} is not an ISO 8601 duration")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def validate_update_conversation(
    pairs: Sequence[tuple[str, str]], webhook_enabled: str | None
) -> tuple[dict[str, ParamValue], str | None]:
    """(params, header) of a valid UpdateConversation; TwilioError(400) otherwise.
    Timers are turned into seconds."""
    params = check_params(pairs, UPDATE_CONVERSATION_PARAMS, "post body")
    header = check_webhook_enabled(webhook_enabled)
    if "Attributes" in params:
        check_attributes(str(params["Attributes"]), "Attributes", MAX_CONVERSATION_ATTRIBUTES)
    if len(str(params.get("FriendlyName", ""))) > MAX_FRIENDLY_NAME:
        raise bad_request(f"FriendlyName is longer than {MAX_FRIENDLY_NAME} characters")
    for name, minimum in MIN_TIMERS.items():
        if name in params:
            seconds = duration_seconds(str(params[name]), name)
            if seconds < minimum:
                raise bad_request(f"Invalid {name}: the minimum is {minimum // 60} minutes")
            params[name] = seconds
    return params, header


def validate_create_webhook(pairs: Sequence[tuple[str, str]]) -> dict[str, ParamValue]:
    """The params of a valid CreateConversationScopedWebhook: a `webhook` or
    `trigger` target needs an absolute Configuration.Url, a `studio` one a
    Configuration.FlowSid."""
    params = check_params(pairs, CREATE_WEBHOOK_PARAMS, "post body")
    if params["Target"] in ("webhook", "trigger"):
        url = params.get("Configuration.Url")
        if not isinstance(url, str) or re.match(r"https?://[^\s/]+", url) is None:
            raise bad_request(
                f"Configuration.Url must be an absolute URL for a {params['Target']} target"
            )
    elif "Configuration.FlowSid" not in params:
        raise bad_request("Configuration.FlowSid is required for a studio target")
    return params


def validate_create_message(
    pairs: Sequence[tuple[str, str]], webhook_enabled: str | None
) -> tuple[dict[str, ParamValue], str | None]:
    """(params, header) of a valid CreateConversationMessage: a Body, MediaSid
    or ContentSid, each within Twilio's limits."""
    params = check_params(pairs, CREATE_MESSAGE_PARAMS, "post body")
    header = check_webhook_enabled(webhook_enabled)
    if not any(name in params for name in ("Body", "MediaSid", "ContentSid")):
        raise bad_request("A message needs a Body, MediaSid or ContentSid")
    if len(str(params.get("Body", "")).encode()) > MAX_MESSAGE_BODY:
        raise bad_request(f"Body is larger than {MAX_MESSAGE_BODY // 1024} KB")
    if "Attributes" in params:
        check_attributes(str(params["Attributes"]), "Attributes", MAX_MESSAGE_ATTRIBUTES)
    return params, header


def validate_list(
    pairs: Sequence[tuple[str, str]], params: Mapping[str, FormParam]
) -> dict[str, Any]:
    """The query of a list request (paging, and Order for messages)."""
    return check_params(pairs, params, "query")
