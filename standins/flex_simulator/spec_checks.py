"""The checks Twilio's OpenAPI specs (tests/spec/) and documented semantics put
on a request, written as pure functions: a request the simulator accepts is one
Twilio would accept, so a test that passes here does not fail against Twilio for
a malformed call. tests/test_flex_simulator.py holds these tables to the specs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.sids import is_sid
from shared.sids import pattern as sid_pattern
from standins.flex_simulator.errors import bad_request

CHANNEL_TYPES = ("voice", "sms", "email", "web", "whatsapp", "chat", "messenger", "gbm")
ASSIGNMENT_STATUSES = ("pending", "reserved", "assigned", "canceled", "wrapping", "completed")
# interaction_channel_enum_channel_status in twilio_flex_v1.json (a test holds it to the spec).
CHANNEL_STATUSES = ("setup", "active", "failed", "closed", "inactive", "pause", "transfer")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


# --- CreateInteraction ---------------------------------------------------------


@dataclass(frozen=True)
class FormParam:
    """One form, query or header parameter as the spec declares it: `type`
    (string, integer or array: a repeated parameter), `format` (date-time),
    `enum`, `pattern`, `minimum` and `maximum`. `any_case`: the enum is matched
    in any case (Twilio's own docs spell the webhook methods both ways)."""

    required: bool = False
    pattern: str | None = None
    type: str = "string"
    format: str | None = None
    enum: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    any_case: bool = False


# Mirrors CreateInteractionRequest in twilio_flex_v1.json (a test holds it to the spec).
CREATE_INTERACTION_PARAMS: dict[str, FormParam] = {
    "Channel": FormParam(required=True),
    "Routing": FormParam(),
    "InteractionContextSid": FormParam(pattern=sid_pattern("HQ")),
    "WebhookTtid": FormParam(),
}


def check_form_params(form: Mapping[str, str], params: Mapping[str, FormParam]) -> None:
    """Required parameters present, patterns matched; unknown parameters ignored."""
    for name, param in params.items():
        value = form.get(name)
        if value is None:
            if param.required:
                raise bad_request(f"Missing required parameter {name} in the post body")
        elif param.pattern and re.fullmatch(param.pattern, value) is None:
            raise bad_request(f"Invalid {name}: must match {param.pattern}")


ParamValue = str | int | list[str]


def check_params(
    pairs: Sequence[tuple[str, str]], params: Mapping[str, FormParam], where: str
) -> dict[str, ParamValue]:
    """The parameters of a request (`pairs` as sent, repeats kept) checked against
    `params`: each value's type, format, enum, pattern and bounds, required ones
    present. Stricter than Twilio, which ignores them: an unknown parameter, or a
    repeated one that is no array, is a 400, so a misspelt name fails loudly.
    Returns name -> value (an int for an integer, a list for an array)."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    unknown = sorted(set(grouped) - set(params))
    if unknown:
        raise bad_request(f"Unknown parameter {', '.join(unknown)} in the {where}")
    parsed: dict[str, ParamValue] = {}
    for name, param in params.items():
        values = grouped.get(name)
        if values is None:
            if param.required:
                raise bad_request(f"Missing required parameter {name} in the {where}")
            continue
        if param.type == "array":
            parsed[name] = [check_value(name, value, param) for value in values]
            continue
        if len(values) > 1:
            raise bad_request(f"Parameter {name} was given {len(values)} times in the {where}")
        parsed[name] = check_value(name, values[0], param)
    return parsed


def check_value(name: str, value: str, param: FormParam) -> Any:
    """One value as `param` wants it: an int for an integer, else the text."""
    if param.type == "integer":
        if re.fullmatch(r"-?\d+", value) is None:
            raise bad_request(f"Invalid {name}: {value!r} is not an integer")
        number = int(value)
        if param.minimum is not None and number < param.minimum:
            raise bad_request(f"Invalid {name}: must be at least {param.minimum}")
        if param.maximum is not None and number > param.maximum:
            raise bad_request(f"Invalid {name}: must be at most {param.maximum}")
        return number
    if param.enum is not None:
        shown = value.lower() if param.any_case else value
        if shown not in param.enum:
            raise bad_request(f"Invalid {name}: must be one of {', '.join(param.enum)}")
        return shown
    if param.pattern and re.fullmatch(param.pattern, value) is None:
        raise bad_request(f"Invalid {name}: must match {param.pattern}")
    if param.format == "date-time" and not is_date_time(value):
        raise bad_request(f"Invalid {name}: {value!r} is not an ISO 8601 date-time")
    return value


def is_date_time(value: str) -> bool:
    """An ISO 8601 date and time (`2015-12-16T22:18:37Z`, or with an offset)."""
    if "T" not in value:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    """A form parameter that must hold a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        raise bad_request(f"{name} is not valid JSON") from None
    return require_object(value, name)


def require_object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{name} must be a JSON object")
    return value


def optional_object(parent: Mapping[str, Any], key: str, name: str) -> dict[str, Any]:
    """`parent[key]` when it is an object, {} when absent; anything else is a 400."""
    if key not in parent:
        return {}
    return require_object(parent[key], name)


def check_optional_sid(properties: Mapping[str, Any], key: str, prefix: str, name: str) -> None:
    if key in properties and not is_sid(properties[key], prefix):
        raise bad_request(f"{name}.{key} must match {sid_pattern(prefix)}")


def validate_channel(channel: Mapping[str, Any]) -> None:
    """Twilio's semantic checks on the Channel object."""
    if channel.get("type") not in CHANNEL_TYPES:
        raise bad_request(f"Channel.type must be one of {', '.join(CHANNEL_TYPES)}")
    initiated_by = channel.get("initiated_by")
    if not isinstance(initiated_by, str) or not initiated_by:
        raise bad_request("Channel.initiated_by is required")
    properties = optional_object(channel, "properties", "Channel.properties")
    if initiated_by == "customer" and "media_channel_sid" not in properties:
        raise bad_request("Channel.properties.media_channel_sid is required for an inbound channel")
    check_optional_sid(properties, "media_channel_sid", "CH", "Channel.properties")


def validate_routing(routing: Mapping[str, Any]) -> None:
    """Twilio's semantic checks on the Routing object."""
    properties = optional_object(routing, "properties", "Routing.properties")
    check_optional_sid(properties, "workspace_sid", "WS", "Routing.properties")
    check_optional_sid(properties, "workflow_sid", "WW", "Routing.properties")
    optional_object(properties, "attributes", "Routing.properties.attributes")


def validate_create_interaction(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parsed (channel, routing) of a valid create request; TwilioError(400) otherwise."""
    check_form_params(form, CREATE_INTERACTION_PARAMS)
    channel = parse_json_object(form["Channel"], "Channel")
    routing = parse_json_object(form.get("Routing", "{}"), "Routing")
    validate_channel(channel)
    validate_routing(routing)
    return channel, routing


# --- FetchInteractionChannel ------------------------------------------------------

# The path parameters of GET /v1/Interactions/{InteractionSid}/Channels/{Sid} and the
# pattern the spec gives each (a test holds them to it).
FETCH_CHANNEL_PATH_PARAMS = {"InteractionSid": sid_pattern("KD"), "Sid": sid_pattern("UO")}


def valid_path_params(values: Mapping[str, str], params: Mapping[str, str]) -> bool:
    """Every path parameter matches its pattern (Twilio answers 404 otherwise)."""
    return all(re.fullmatch(pattern, values.get(name, "")) for name, pattern in params.items())


# --- TaskRouter task filters -----------------------------------------------------

_EQUALS_EXPRESSION = re.compile(r"""\s*([A-Za-z_][\w.]*)\s*==\s*(?:"([^"]*)"|'([^']*)')\s*""")


def parse_task_expression(expression: str) -> tuple[list[str], str]:
    """`key == "value"` (or single quotes, dotted keys) as (key path, value)."""
    match = _EQUALS_EXPRESSION.fullmatch(expression)
    if match is None:
        raise bad_request(
            f"Invalid EvaluateTaskAttributes {expression!r}: "
            'the simulator understands only key == "value"'
        )
    key, double_quoted, single_quoted = match.groups()
    value = double_quoted if double_quoted is not None else single_quoted
    return key.split("."), value


def attribute_equals(attributes: Mapping[str, Any], path: list[str], value: str) -> bool:
    current: Any = attributes
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return False
        current = current[key]
    return bool(current == value)


def assignment_status_filter(values: list[str]) -> set[str]:
    """Repeated `AssignmentStatus` parameters, each possibly comma-separated."""
    statuses = {status.strip() for value in values for status in value.split(",") if status.strip()}
    unknown = statuses - set(ASSIGNMENT_STATUSES)
    if unknown:
        raise bad_request(f"Invalid AssignmentStatus {', '.join(sorted(unknown))}")
    return statuses


# --- Paging ------------------------------------------------------------------------


def page_params(query: Mapping[str, str], max_size: int = MAX_PAGE_SIZE) -> tuple[int, int]:
    """(page, page_size) from the query, as Twilio bounds them (`max_size`: the
    list's maximum PageSize in its spec, which is also its default when lower than 50)."""
    try:
        page = int(query.get("Page", "0"))
        size = int(query.get("PageSize", str(min(DEFAULT_PAGE_SIZE, max_size))))
    except ValueError:
        raise bad_request("Page and PageSize must be integers") from None
    if page < 0 or not 1 <= size <= max_size:
        raise bad_request(f"Page must be >= 0 and PageSize between 1 and {max_size}")
    return page, size


# --- The reads of `flex-handover check` ---------------------------------------------
# Path parameters of FetchWorkspace, FetchWorkflow and FetchTaskChannel and the query of
# ListWorkspace and ListConversation in the specs (a test holds them to it). A task
# channel is named by its TC SID or its unique name: the spec gives no pattern.

FETCH_WORKSPACE_PATH_PARAMS = {"Sid": sid_pattern("WS")}
FETCH_WORKFLOW_PATH_PARAMS = {"WorkspaceSid": sid_pattern("WS"), "Sid": sid_pattern("WW")}
FETCH_TASK_CHANNEL_PATH_PARAMS = {"WorkspaceSid": sid_pattern("WS"), "Sid": r"[^/]+"}
_LIST_PAGING = {
    "Page": FormParam(type="integer", minimum=0),
    "PageToken": FormParam(),
}
LIST_WORKSPACES_PARAMS: dict[str, FormParam] = {
    "FriendlyName": FormParam(),
    "PageSize": FormParam(type="integer", minimum=1, maximum=MAX_PAGE_SIZE),
    **_LIST_PAGING,
}
LIST_CONVERSATIONS_PARAMS: dict[str, FormParam] = {
    "StartDate": FormParam(),
    "EndDate": FormParam(),
    "State": FormParam(enum=("initializing", "inactive", "active", "closed")),
    "PageSize": FormParam(type="integer", minimum=1, maximum=100),
    **_LIST_PAGING,
}
