"""TaskRouter's workspace event callbacks as the simulator sends them: which
events there are and what each does to a task's assignment status, the form
parameters TaskRouter POSTs to the workspace's EventCallbackUrl, and their
`X-Twilio-Signature` (twilio-python's own RequestValidator, keyed with the
account's auth token), so an endpoint that verifies signatures is tested
against what Twilio sends. Pure: `app` POSTs the event (loopback only)."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator

# event type -> (ResourceType, the task's assignment status after it; None: unchanged).
EVENT_TYPES: dict[str, tuple[str, str | None]] = {
    "task.created": ("task", "pending"),
    "task.updated": ("task", None),
    "task.canceled": ("task", "canceled"),
    "task.completed": ("task", "completed"),
    "task.wrapup": ("task", "wrapping"),
    "task.deleted": ("task", None),
    "task.system-deleted": ("task", None),
    "reservation.created": ("reservation", "reserved"),
    "reservation.accepted": ("reservation", "assigned"),
    "reservation.rejected": ("reservation", "pending"),
    "reservation.timeout": ("reservation", "pending"),
    "reservation.rescinded": ("reservation", "pending"),
    "reservation.canceled": ("reservation", None),
    "reservation.wrapup": ("reservation", "wrapping"),
    "reservation.completed": ("reservation", "completed"),
    "task-queue.entered": ("taskqueue", "pending"),
    "task-queue.moved": ("taskqueue", None),
    "task-queue.timeout": ("taskqueue", None),
    "workflow.entered": ("workflow", "pending"),
    "workflow.target-matched": ("workflow", None),
    "workflow.timeout": ("workflow", "canceled"),
}
DELETING_EVENTS = frozenset({"task.deleted", "task.system-deleted"})
SIGNATURES = ("valid", "bad", "missing")
MAX_REPEAT = 10
DELIVERY_TIMEOUT_SECONDS = 15.0  # TaskRouter's: an answer within 15 s
BODY_SHOWN_BYTES = 2048
# Flex's defaults for the names TaskRouter puts in an event.
WORKSPACE_NAME = "Flex Task Assignment"
TASK_QUEUE_NAME = "Everyone"
WORKFLOW_NAME = "Assign to Anyone"
WORKER_NAME = "agent"


@dataclass(frozen=True)
class EventRequest:
    """One `POST /__sim/tasks/{WT}/events`: see EVENT_HELP."""

    event_type: str
    url: str | None = None
    repeat: int = 1
    signature: str = "valid"
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.event_type not in EVENT_TYPES:
            raise ValueError(f"event_type must be one of {', '.join(EVENT_TYPES)}")
        if self.url is not None and not is_loopback_url(self.url):
            raise ValueError("url must be an http(s) URL on a loopback address")
        repeat = self.repeat
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_REPEAT:
            raise ValueError(f"repeat must be an integer from 1 to {MAX_REPEAT}")
        if self.signature not in SIGNATURES:
            raise ValueError(f"signature must be one of {', '.join(SIGNATURES)}")
        if self.reason is not None and not isinstance(self.reason, str):
            raise ValueError("reason must be a string")


EVENT_OPTIONS = frozenset(field.name for field in fields(EventRequest))

# What `flex-handover simulator --help` says of each `POST /__sim/tasks/{WT}/events` option.
EVENT_HELP: dict[str, str] = {
    "event_type": "the EventType, e.g. task.completed, task.canceled, task.deleted, "
    "task.wrapup, reservation.accepted, workflow.timeout; moves the task's assignment "
    "status as TaskRouter would",
    "url": "where to POST it (loopback only); default: the event callback URL "
    "(PUT /__sim/event_callback, --event-callback-url)",
    "repeat": f"deliver the same event this many times (1-{MAX_REPEAT}): TaskRouter may repeat one",
    "signature": "valid, bad (an X-Twilio-Signature that does not verify) or missing",
    "reason": "TaskCanceledReason / TaskCompletedReason of the event",
}


def parse_event_request(options: Mapping[str, Any], default_url: str | None) -> EventRequest:
    """An EventRequest from a control route's JSON; ValueError saying what is wrong."""
    unknown = set(options) - EVENT_OPTIONS
    if unknown:
        raise ValueError(f"Unknown event options: {', '.join(sorted(unknown))}")
    if "event_type" not in options:
        raise ValueError("event_type is required")
    try:
        request = EventRequest(**options)
    except TypeError as error:
        raise ValueError(str(error)) from None
    url = request.url or default_url
    if url is None:
        raise ValueError("url is required: no event callback URL is configured")
    return EventRequest(request.event_type, url, request.repeat, request.signature, request.reason)


def is_loopback_url(url: object) -> bool:
    """An http(s) URL whose host is localhost or a loopback address."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def status_after(event_type: str, status: str) -> str:
    """The task's assignment status after `event_type`."""
    return EVENT_TYPES[event_type][1] or status


def event_params(
    task: Mapping[str, Any],
    event_type: str,
    *,
    event_sid: str,
    reason: str | None = None,
    related: Mapping[str, str] | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """The form parameters TaskRouter POSTs for `event_type` on `task` (its
    state after the event). `related`: SIDs of a reservation event (ReservationSid,
    WorkerSid)."""
    now = time.time() if now is None else now
    resource_type = EVENT_TYPES[event_type][0]
    related = dict(related or {})
    resource_sid = {
        "task": task["sid"],
        "reservation": related.get("ReservationSid", ""),
        "taskqueue": task.get("task_queue_sid") or "",
        "workflow": task.get("workflow_sid") or "",
    }[resource_type]
    params = {
        "EventType": event_type,
        "Sid": event_sid,
        "AccountSid": task["account_sid"],
        "WorkspaceSid": task["workspace_sid"] or "",
        "WorkspaceName": WORKSPACE_NAME,
        "EventDescription": f"Task {task['sid']} {event_type.split('.', 1)[1]}",
        "ResourceType": resource_type,
        "ResourceSid": resource_sid,
        "Timestamp": str(int(now)),
        "TimestampMs": str(int(now * 1000)),
        "TaskSid": task["sid"],
        "TaskAttributes": json.dumps(task["attributes"]),
        "TaskAssignmentStatus": task["assignment_status"],
        "TaskAge": str(max(0, int(now - task["created_at"]))),
        "TaskPriority": "0",
        "TaskDateCreated": str(int(task["created_at"])),
        "TaskChannelUniqueName": task.get("task_channel_unique_name") or "",
        "TaskQueueSid": task.get("task_queue_sid") or "",
        "TaskQueueName": TASK_QUEUE_NAME,
        "WorkflowSid": task.get("workflow_sid") or "",
        "WorkflowName": WORKFLOW_NAME,
    }
    if resource_type == "reservation":
        params.update(related, WorkerName=WORKER_NAME)
    if reason is not None:
        if event_type in ("task.canceled", "workflow.timeout"):
            params["TaskCanceledReason"] = reason
        elif event_type == "task.completed":
            params["TaskCompletedReason"] = reason
    return params


def signature_header(
    auth_token: str, url: str, params: Mapping[str, str], mode: str = "valid"
) -> dict[str, str]:
    """The `X-Twilio-Signature` header for POSTing `params` to `url`: Twilio's
    (`valid`), one made with another key (`bad`), or none (`missing`)."""
    if mode == "missing":
        return {}
    key = auth_token if mode == "valid" else auth_token + "-not-the-auth-token"
    return {"X-Twilio-Signature": RequestValidator(key).compute_signature(url, dict(params))}
