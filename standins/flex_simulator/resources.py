"""The JSON shapes Twilio answers with (an Interaction, its channel, a task, a
user, a Conversation, its scoped webhooks and messages, a page of a list, the TaskRouter workspace, workflows and task channels), built from the simulator's records: the real
twilio-python client parses them, so they follow the specs' schemas field for field."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.sids import pattern as sid_pattern
from standins.flex_simulator.spec_checks import MAX_PAGE_SIZE, page_params


def new_sid(prefix: str) -> str:
    """A new SID: `prefix` and 32 hex digits."""
    return prefix + uuid.uuid4().hex


def iso_time(epoch: float) -> str:
    """Twilio's date-time format: `2014-05-14T14:26:54Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def interaction_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The task attributes Flex makes: the caller's routing attributes plus Flex's keys."""
    attributes = dict(record["routing"].get("properties", {}).get("attributes", {}))
    attributes.update(
        conversationSid=record["conversation_sid"],
        flexInteractionSid=record["sid"],
        flexInteractionChannelSid=record["channel_sid"],
    )
    return attributes


def interaction_resource(
    record: Mapping[str, Any], task: Mapping[str, Any], origin: str
) -> dict[str, Any]:
    """The spec's `flex.v1.interaction` for a created Interaction."""
    url = f"{origin}/v1/Interactions/{record['sid']}"
    routing_properties = dict(record["routing"].get("properties", {}))
    routing_properties.update(
        sid=task["sid"],
        account_sid=task["account_sid"],
        assignment_status=task["assignment_status"],
        attributes=json.dumps(task["attributes"]),
        date_created=int(task["created_at"]),
        date_updated=int(task["created_at"]),
        priority=0,
        age=0,
        timeout=86400,
        reason="",
        addons="{}",
    )
    return {
        "sid": record["sid"],
        "channel": {"type": record["channel"]["type"], "sid": record["channel_sid"]},
        "routing": {"reservation": None, "properties": routing_properties},
        "interaction_context_sid": record["interaction_context_sid"],
        "webhook_ttid": record["webhook_ttid"],
        "url": url,
        "links": {"channels": f"{url}/Channels"},
    }


def channel_resource(
    record: Mapping[str, Any],
    origin: str,
    status: str = "active",
    error: tuple[int | None, str | None] = (None, None),
) -> dict[str, Any]:
    """The spec's `flex.v1.interaction.interaction_channel`, showing `status`
    and `error` (error_code, error_message)."""
    url = f"{origin}/v1/Interactions/{record['sid']}/Channels/{record['channel_sid']}"
    return {
        "sid": record["channel_sid"],
        "type": record["channel"]["type"],
        "interaction_sid": record["sid"],
        "status": status,
        "error_code": error[0],
        "error_message": error[1],
        "url": url,
        "links": {
            name: f"{url}/{name.capitalize()}" for name in ("participants", "invites", "transfers")
        },
    }


def task_resource(task: Mapping[str, Any], origin: str, now: float) -> dict[str, Any]:
    """The spec's `taskrouter.v1.workspace.task`."""
    workspace_url = f"{origin}/v1/Workspaces/{task['workspace_sid']}"
    url = f"{workspace_url}/Tasks/{task['sid']}"
    created = iso_time(task["created_at"])
    return {
        "sid": task["sid"],
        "account_sid": task["account_sid"],
        "workspace_sid": task["workspace_sid"],
        "workflow_sid": task["workflow_sid"],
        "assignment_status": task["assignment_status"],
        "attributes": json.dumps(task["attributes"]),
        "task_channel_unique_name": task["task_channel_unique_name"],
        "task_channel_sid": None,
        "task_queue_sid": None,
        "task_queue_friendly_name": None,
        "workflow_friendly_name": None,
        "age": int(now - task["created_at"]),
        "priority": 0,
        "timeout": 86400,
        "reason": None,
        "addons": "{}",
        "date_created": created,
        "date_updated": created,
        "task_queue_entered_date": created,
        "virtual_start_time": created,
        "ignore_capacity": None,
        "routing_target": None,
        "url": url,
        "links": {"workspace": workspace_url, "reservations": f"{url}/Reservations"},
    }


def user_resource(
    identity: str, user: Mapping[str, Any], account_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `conversations.v1.user`."""
    url = f"{origin}/v1/Users/{user['sid']}"
    created = iso_time(user["created_at"])
    return {
        "sid": user["sid"],
        "account_sid": account_sid,
        "chat_service_sid": user["chat_service_sid"],
        "role_sid": user["role_sid"],
        "identity": identity,
        "friendly_name": user["friendly_name"],
        "attributes": "{}",
        "is_online": None,
        "is_notifiable": None,
        "date_created": created,
        "date_updated": created,
        "url": url,
        "links": {"user_conversations": f"{url}/Conversations"},
    }


def list_envelope(
    url: Any,
    key: str,
    items: list[dict[str, Any]],
    query: Mapping[str, str],
    max_page_size: int = MAX_PAGE_SIZE,
) -> dict[str, Any]:
    """One page of `items` in Twilio's `{key: [...], meta: {...}}` list shape.

    `url` is the request's yarl URL; page links keep its other query parameters.
    """
    page, size = page_params(query, max_page_size)

    def page_url(number: int) -> str:
        return str(url.update_query(Page=str(number), PageSize=str(size)))

    has_next = (page + 1) * size < len(items)
    return {
        key: items[page * size : (page + 1) * size],
        "meta": {
            "page": page,
            "page_size": size,
            "first_page_url": page_url(0),
            "previous_page_url": page_url(page - 1) if page > 0 else None,
            "url": page_url(page),
            "next_page_url": page_url(page + 1) if has_next else None,
            "key": key,
        },
    }


def conversation_resource(
    conversation: Mapping[str, Any], account_sid: str, chat_service_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `conversations.v1.conversation`."""
    url = f"{origin}/v1/Conversations/{conversation['sid']}"
    timers = {name: iso_time(when) for name, when in conversation["timers"].items()}
    return {
        "sid": conversation["sid"],
        "account_sid": account_sid,
        "chat_service_sid": chat_service_sid,
        "messaging_service_sid": conversation["messaging_service_sid"],
        "friendly_name": conversation["friendly_name"],
        "unique_name": conversation["unique_name"],
        "attributes": conversation["attributes"],
        "state": conversation["state"],
        "date_created": iso_time(conversation["created_at"]),
        "date_updated": iso_time(conversation["updated_at"]),
        "timers": timers,
        "bindings": None,
        "url": url,
        "links": {
            name: f"{url}/{name.capitalize()}"
            for name in ("participants", "messages", "webhooks", "export")
        },
    }


def webhook_resource(
    webhook: Mapping[str, Any], conversation_sid: str, account_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `conversations.v1.conversation.conversation_scoped_webhook`:
    its `configuration` holds what was configured (url, method, filters,
    triggers, flow_sid, replay_after), as the spec's examples show."""
    configuration: dict[str, Any] = {
        name: webhook[name]
        for name in ("url", "method", "flow_sid", "replay_after")
        if webhook[name] is not None
    }
    for name in ("filters", "triggers"):
        if webhook[name]:
            configuration[name] = list(webhook[name])
    created = iso_time(webhook["created_at"])
    return {
        "sid": webhook["sid"],
        "account_sid": account_sid,
        "conversation_sid": conversation_sid,
        "target": webhook["target"],
        "url": f"{origin}/v1/Conversations/{conversation_sid}/Webhooks/{webhook['sid']}",
        "configuration": configuration,
        "date_created": created,
        "date_updated": created,
    }


def message_resource(
    message: Mapping[str, Any], conversation_sid: str, account_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `conversations.v1.conversation.conversation_message`."""
    url = f"{origin}/v1/Conversations/{conversation_sid}/Messages/{message['sid']}"
    created = iso_time(message["created_at"])
    return {
        "sid": message["sid"],
        "account_sid": account_sid,
        "conversation_sid": conversation_sid,
        "body": message["body"],
        "media": None,
        "author": message["author"],
        "participant_sid": None,
        "attributes": message["attributes"],
        "date_created": created,
        "date_updated": created,
        "index": message["index"],
        "delivery": None,
        "content_sid": message["content_sid"],
        "url": url,
        "links": {
            "delivery_receipts": f"{url}/Receipts",
            "channel_metadata": f"{url}/ChannelMetadata",
        },
    }


# --- TaskRouter configuration (what `flex-handover check` reads) --------------------
# Any WS and WW SID names a workspace and workflow that exist, and any unique name or
# TC SID a task channel: `flex-handover check` passes against the simulator unless a
# fault (routes workspaces, workflows, task_channels) says otherwise.

_EPOCH = "2024-01-01T00:00:00Z"


def workspace_resource(sid: str, account_sid: str, origin: str) -> dict[str, Any]:
    """The spec's `taskrouter.v1.workspace`."""
    url = f"{origin}/v1/Workspaces/{sid}"
    return {
        "account_sid": account_sid,
        "date_created": _EPOCH,
        "date_updated": _EPOCH,
        "default_activity_name": "Offline",
        "default_activity_sid": "WA" + "0" * 32,
        "event_callback_url": None,
        "events_filter": None,
        "friendly_name": "Flex Task Assignment",
        "multi_task_enabled": True,
        "sid": sid,
        "timeout_activity_name": "Offline",
        "timeout_activity_sid": "WA" + "0" * 32,
        "prioritize_queue_order": "FIFO",
        "url": url,
        "links": {"workflows": f"{url}/Workflows", "task_channels": f"{url}/TaskChannels"},
    }


def workflow_resource(
    workspace_sid: str, sid: str, account_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `taskrouter.v1.workspace.workflow`."""
    url = f"{origin}/v1/Workspaces/{workspace_sid}/Workflows/{sid}"
    return {
        "account_sid": account_sid,
        "assignment_callback_url": None,
        "configuration": json.dumps({"task_routing": {"filters": []}}),
        "date_created": _EPOCH,
        "date_updated": _EPOCH,
        "document_content_type": "application/json",
        "fallback_assignment_callback_url": None,
        "friendly_name": "Assign to Anyone",
        "sid": sid,
        "task_reservation_timeout": 120,
        "workspace_sid": workspace_sid,
        "url": url,
        "links": {"statistics": f"{url}/Statistics"},
    }


def task_channel_resource(
    workspace_sid: str, sid_or_name: str, account_sid: str, origin: str
) -> dict[str, Any]:
    """The spec's `taskrouter.v1.workspace.task_channel`, named by SID or unique name
    (the SID of a name is the same on every read)."""
    if re.fullmatch(sid_pattern("TC"), sid_or_name):
        sid, unique_name = sid_or_name, "default"
    else:
        sid = "TC" + hashlib.md5(sid_or_name.encode(), usedforsecurity=False).hexdigest()
        unique_name = sid_or_name
    url = f"{origin}/v1/Workspaces/{workspace_sid}/TaskChannels/{sid}"
    return {
        "account_sid": account_sid,
        "date_created": _EPOCH,
        "date_updated": _EPOCH,
        "friendly_name": unique_name.capitalize(),
        "sid": sid,
        "unique_name": unique_name,
        "workspace_sid": workspace_sid,
        "channel_optimized_routing": False,
        "url": url,
        "links": {"workspace": f"{origin}/v1/Workspaces/{workspace_sid}"},
    }
