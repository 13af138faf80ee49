"""What a simulated Conversation holds (attributes, state, scoped webhooks,
messages, and how often it was updated) and how each checked request changes
it, as pure functions on plain records: `state` keeps the records behind its
lock, `app` turns them into Twilio's resources, and a test reads them through
`GET /__sim/conversations/{CH}` (`conversation_view`) or seeds one with
`POST /__sim/conversations/{CH}` (`parse_seed`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from standins.flex_simulator.conversation_checks import (
    CONVERSATION_STATES,
    DEFAULT_AUTHOR,
    MAX_CONVERSATION_ATTRIBUTES,
    MAX_WEBHOOKS,
    check_attributes,
    validate_create_message,
    validate_create_webhook,
)
from standins.flex_simulator.errors import TwilioError, bad_request
from standins.flex_simulator.resources import new_sid
from standins.flex_simulator.spec_checks import ParamValue

Record = dict[str, Any]

SEED_OPTIONS = frozenset(
    {"attributes", "state", "friendly_name", "webhooks", "messages", "missing"}
)
WEBHOOK_OPTIONS = frozenset(
    {"target", "url", "method", "filters", "triggers", "flow_sid", "replay_after"}
)
MESSAGE_OPTIONS = frozenset({"author", "body", "attributes"})

# What `flex-handover simulator --help` says of each `POST /__sim/conversations/{CH}` option.
SEED_HELP: dict[str, str] = {
    "attributes": "its Attributes: a JSON string, stored as given (an object is dumped)",
    "state": f"its State: {', '.join(CONVERSATION_STATES)}",
    "friendly_name": "its FriendlyName",
    "webhooks": "its scoped webhooks: a list of {target (default webhook), url, method "
    "(default post), filters, triggers, flow_sid, replay_after}",
    "messages": "messages already in it: a list of {author (default system), body, attributes}",
    "missing": "true: Twilio has no such Conversation, every request to it answers 404 (20404)",
}


def new_conversation(sid: str, now: float) -> Record:
    """A Conversation as it exists implicitly for any CH SID: active, attributes "{}"."""
    return {
        "sid": sid,
        "attributes": "{}",
        "state": "active",
        "friendly_name": None,
        "unique_name": None,
        "messaging_service_sid": None,
        "timers": {},
        "created_at": now,
        "updated_at": now,
        "webhooks": [],
        "deleted_webhooks": [],
        "messages": [],
        "missing": False,
        "updates": 0,
        "attribute_updates": 0,
        "webhook_enabled": None,
    }


def apply_update(
    conversation: Record, params: Mapping[str, ParamValue], webhook_enabled: str | None, now: float
) -> Record:
    """An UpdateConversation: each given field replaced whole (Attributes too:
    Twilio does not merge them), timers set from now, the header remembered."""
    fields = {
        "Attributes": "attributes",
        "State": "state",
        "FriendlyName": "friendly_name",
        "UniqueName": "unique_name",
        "MessagingServiceSid": "messaging_service_sid",
    }
    for param, field in fields.items():
        if param in params:
            conversation[field] = params[param]
    for param, timer in (("Timers.Inactive", "date_inactive"), ("Timers.Closed", "date_closed")):
        if param in params:
            conversation["timers"][timer] = now + float(str(params[param]))
    conversation["updated_at"] = now
    conversation["updates"] += 1
    conversation["attribute_updates"] += "Attributes" in params
    conversation["webhook_enabled"] = webhook_enabled
    return conversation


def add_webhook(conversation: Record, params: Mapping[str, ParamValue], now: float) -> Record:
    """A CreateConversationScopedWebhook; a sixth webhook is refused, as Twilio
    allows five per Conversation."""
    if len(conversation["webhooks"]) >= MAX_WEBHOOKS:
        raise bad_request(f"A Conversation can have at most {MAX_WEBHOOKS} scoped webhooks")
    method = params.get("Configuration.Method")
    webhook = {
        "sid": new_sid("WH"),
        "target": params["Target"],
        "url": params.get("Configuration.Url"),
        "method": method if method is not None or params["Target"] == "studio" else "post",
        "filters": list(_strings(params.get("Configuration.Filters"))),
        "triggers": list(_strings(params.get("Configuration.Triggers"))),
        "flow_sid": params.get("Configuration.FlowSid"),
        "replay_after": params.get("Configuration.ReplayAfter"),
        "created_at": now,
    }
    conversation["webhooks"].append(webhook)
    return webhook


def find_webhook(conversation: Record, sid: str) -> Record | None:
    return next((w for w in conversation["webhooks"] if w["sid"].lower() == sid.lower()), None)


def remove_webhook(conversation: Record, webhook: Record) -> None:
    conversation["webhooks"].remove(webhook)
    conversation["deleted_webhooks"].append(webhook)


def add_message(
    conversation: Record, params: Mapping[str, ParamValue], webhook_enabled: str | None, now: float
) -> Record:
    """A CreateConversationMessage: the next index, `system` when no Author."""
    messages = conversation["messages"]
    message = {
        "sid": new_sid("IM"),
        "index": messages[-1]["index"] + 1 if messages else 0,
        "author": params.get("Author", DEFAULT_AUTHOR),
        "body": params.get("Body"),
        "attributes": params.get("Attributes", "{}"),
        "media_sid": params.get("MediaSid"),
        "content_sid": params.get("ContentSid"),
        "webhook_enabled": webhook_enabled,
        "created_at": now,
    }
    messages.append(message)
    return message


def ordered_messages(conversation: Record, order: str) -> list[Record]:
    """The messages by index, `asc` (Twilio's default) or `desc`."""
    messages = sorted(conversation["messages"], key=lambda message: int(message["index"]))
    return messages[::-1] if order == "desc" else messages


def conversation_view(conversation: Record) -> Record:
    """What `GET /__sim/conversations/{CH}` answers: the record as plain JSON."""
    webhook_fields = (
        *("sid", "target", "url", "method"),
        *("filters", "triggers", "flow_sid", "replay_after"),
    )
    message_fields = ("sid", "index", "author", "body", "attributes", "webhook_enabled")

    def webhook_view(webhook: Record) -> Record:
        return {name: webhook[name] for name in webhook_fields}

    return {
        "sid": conversation["sid"],
        "missing": conversation["missing"],
        "attributes": conversation["attributes"],
        "state": conversation["state"],
        "friendly_name": conversation["friendly_name"],
        "webhooks": [webhook_view(w) for w in conversation["webhooks"]],
        "deleted_webhooks": [webhook_view(w) for w in conversation["deleted_webhooks"]],
        "messages": [
            {name: message[name] for name in message_fields}
            for message in ordered_messages(conversation, "asc")
        ],
        "updates": conversation["updates"],
        "attribute_updates": conversation["attribute_updates"],
        "webhook_enabled": conversation["webhook_enabled"],
    }


def parse_seed(sid: str, options: Mapping[str, Any], now: float) -> Record:
    """A Conversation from the options of `POST /__sim/conversations/{CH}` (see
    SEED_HELP); ValueError saying what is wrong. Webhooks and messages pass the
    same checks as when created through the API."""
    unknown = set(options) - SEED_OPTIONS
    if unknown:
        raise ValueError(f"Unknown conversation options: {', '.join(sorted(unknown))}")
    conversation = new_conversation(sid, now)
    attributes = options.get("attributes", "{}")
    if isinstance(attributes, dict):
        attributes = json.dumps(attributes)
    if not isinstance(attributes, str):
        raise ValueError("attributes must be a JSON string (or an object)")
    state = options.get("state", "active")
    if state not in CONVERSATION_STATES:
        raise ValueError(f"state must be one of {', '.join(CONVERSATION_STATES)}")
    friendly_name = options.get("friendly_name")
    if friendly_name is not None and not isinstance(friendly_name, str):
        raise ValueError("friendly_name must be a string")
    missing = options.get("missing", False)
    if not isinstance(missing, bool):
        raise ValueError("missing must be true or false")
    try:
        check_attributes(attributes, "attributes", MAX_CONVERSATION_ATTRIBUTES)
        conversation.update(
            attributes=attributes, state=state, friendly_name=friendly_name, missing=missing
        )
        for n, webhook in enumerate(_objects(options.get("webhooks", []), "webhooks")):
            _seed_webhook(conversation, webhook, n, now)
        for n, message in enumerate(_objects(options.get("messages", []), "messages")):
            _seed_message(conversation, message, n, now)
    except TwilioError as error:
        raise ValueError(error.message) from None
    return conversation


def _seed_webhook(conversation: Record, options: Record, n: int, now: float) -> None:
    unknown = set(options) - WEBHOOK_OPTIONS
    if unknown:
        raise ValueError(f"webhooks[{n}]: unknown options {', '.join(sorted(unknown))}")
    pairs = [("Target", options.get("target", "webhook"))]
    names = {"url": "Url", "method": "Method", "flow_sid": "FlowSid", "replay_after": "ReplayAfter"}
    for option, param in names.items():
        if options.get(option) is not None:
            pairs.append((f"Configuration.{param}", str(options[option])))
    for option, param in (("filters", "Filters"), ("triggers", "Triggers")):
        pairs += [(f"Configuration.{param}", value) for value in _strings(options.get(option))]
    try:
        add_webhook(conversation, validate_create_webhook(_texts(pairs, n)), now)
    except TwilioError as error:
        raise ValueError(f"webhooks[{n}]: {error.message}") from None


def _seed_message(conversation: Record, options: Record, n: int, now: float) -> None:
    unknown = set(options) - MESSAGE_OPTIONS
    if unknown:
        raise ValueError(f"messages[{n}]: unknown options {', '.join(sorted(unknown))}")
    pairs = [(name.capitalize(), value) for name, value in options.items() if value is not None]
    try:
        params, _ = validate_create_message(_texts(pairs, n), None)
    except TwilioError as error:
        raise ValueError(f"messages[{n}]: {error.message}") from None
    add_message(conversation, params, None, now)


def _objects(value: Any, name: str) -> list[Record]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{name} must be a list of objects")
    return value


def _texts(pairs: list[tuple[str, Any]], n: int) -> list[tuple[str, str]]:
    if not all(isinstance(value, str) for _, value in pairs):
        raise ValueError(f"item {n}: values must be strings")
    return pairs


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("filters and triggers must be lists of strings")
    return value
