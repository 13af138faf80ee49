"""`POST /webhooks/taskrouter`: the workspace's event callback ends a handover.

Twilio calls the TaskRouter workspace's Event Callback URL with each event it is
set to send, form-encoded and signed (`X-Twilio-Signature`) with the account's
auth token. `task.completed`, `task.canceled` or `task.deleted` of a task whose
attributes carry a `handoverId` ends that handover: its record gets `ended_*` and
the hand-back job is queued, once (`HandoverStore.record_end`); the job, in the
worker, tells the Conversation and puts the bot's webhooks back.

Every event that is signed is answered 200 with what was done (`recorded`,
`duplicate`, `ignored`): events come more than once, out of order, and mostly for
tasks that are not handovers, and none of that is an error Twilio could act on.
Only a request that cannot be Twilio's is refused: 403 for a bad or missing
signature (nothing read, nothing written), 503 while no auth token is configured.

`parse_form` and `parse_event` are pure; `TaskRouterEvents.handle` does the I/O.
Task attributes are customer data (Twilio marks them PII): never logged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator

from api.app_keys import STORE
from api.auth import SIGNATURE_HEADER, public_url, read_body, twilio_signature_valid
from api.errors import Forbidden, NotConfigured
from api.parsing import twilio_form
from shared import sids
from shared.logging import caller_text
from shared.settings import Settings
from shared.store import EndOutcome

logger = logging.getLogger(f"flex_handover.{__name__}")

PATH = "/webhooks/taskrouter"
END_EVENTS = frozenset({"task.completed", "task.canceled", "task.deleted"})
HANDOVER_ID_ATTRIBUTE = "handoverId"
HANDOVER_ATTEMPT_ATTRIBUTE = "handoverAttempt"
MAX_TASK_ATTRIBUTES_CHARS = 64 * 1024
"""The longest `TaskAttributes` read (the body is bounded too, by
HANDOVER_MAX_BODY_BYTES): the JSON parse costs bounded time whatever that is set to."""
MAX_EVENT_TYPE_CHARS = 64
# As shared.model.new_handover_id makes them; the worker's attempt ids are `at_` +
# 16 hex (worker.delivery.new_attempt_id): accepted more loosely, but bounded.
_HANDOVER_ID = re.compile(r"ho_[0-9a-f]{32}")
_ATTEMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# --- pure pieces --------------------------------------------------------------------


@dataclass(frozen=True)
class HandoverEnd:
    """An end event for a handover's task: what `HandoverStore.record_end` takes."""

    handover_id: str
    event_type: str
    task_sid: str
    attempt_id: str | None
    """The task's `handoverAttempt`; None when it carried none (or not an id)."""


@dataclass(frozen=True)
class Ignored:
    """An event acknowledged and ignored: `reason` is the answer's; `notable` when a
    person should hear of it (a handover task that could not be read)."""

    reason: str
    notable: bool = False


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """The event's fields: `api.parsing.twilio_form`."""
    return twilio_form(content_type, body, "TaskRouter sends its events")


def parse_event(fields: Mapping[str, str]) -> HandoverEnd | Ignored:
    """A TaskRouter event → the end of a handover's task, or why it is ignored."""
    event_type = fields.get("EventType", "")
    if not event_type:
        return Ignored("the event has no EventType")
    if event_type not in END_EVENTS:
        return Ignored(f"{caller_text(event_type, MAX_EVENT_TYPE_CHARS)} does not end a task")
    task_sid = sids.canonical(fields.get("TaskSid", ""), sids.TASK)
    if task_sid is None:
        return Ignored(f"{event_type} without a TaskSid ({sids.describe(sids.TASK)})", True)
    attributes = task_attributes(fields.get("TaskAttributes"))
    if isinstance(attributes, Ignored):
        return attributes
    handover_id = attributes.get(HANDOVER_ID_ATTRIBUTE)
    if handover_id is None:
        return Ignored("the task is not a handover's (no handoverId attribute)")
    if not isinstance(handover_id, str) or not _HANDOVER_ID.fullmatch(handover_id):
        return Ignored("the task's handoverId is not a handover id (ho_ and 32 hex digits)", True)
    attempt = attributes.get(HANDOVER_ATTEMPT_ATTRIBUTE)
    attempt_id = attempt if isinstance(attempt, str) and _ATTEMPT_ID.fullmatch(attempt) else None
    return HandoverEnd(handover_id, event_type, task_sid, attempt_id)


def task_attributes(raw: str | None) -> dict[str, Any] | Ignored:
    """`TaskAttributes` (a JSON string) as an object; why not, for anything else."""
    if not raw:
        return Ignored("the event has no TaskAttributes")
    if len(raw) > MAX_TASK_ATTRIBUTES_CHARS:
        return Ignored(
            f"TaskAttributes is longer than {MAX_TASK_ATTRIBUTES_CHARS} characters", True
        )
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return Ignored("TaskAttributes is not JSON", True)
    if not isinstance(document, dict):
        return Ignored("TaskAttributes is not a JSON object", True)
    return document


def answer(handover_id: str | None, outcome: str, reason: str) -> web.Response:
    return web.json_response({"handover_id": handover_id, "outcome": outcome, "reason": reason})


# --- the handler --------------------------------------------------------------------


class TaskRouterEvents:
    """The route's handler, with the signature validator built once."""

    def __init__(self, settings: Settings):
        self._settings = settings
        token = settings.twilio_auth_token
        self._validator = RequestValidator(token) if token else None

    async def handle(self, request: web.Request) -> web.Response:
        if self._validator is None:
            raise NotConfigured(
                "TaskRouter events cannot be verified: set TWILIO_AUTH_TOKEN, the account's "
                "auth token that Twilio signs them with."
            )
        body = await read_body(request, self._settings.max_body_bytes)
        url = public_url(
            request.scheme,
            request.host,
            request.raw_path,
            request.headers,
            self._settings.trust_proxy_headers,
        )
        signature = request.headers.get(SIGNATURE_HEADER)
        if not twilio_signature_valid(self._validator, url, request.content_type, body, signature):
            logger.info("refused POST %s: 403 forbidden (X-Twilio-Signature)", PATH)
            raise Forbidden("The X-Twilio-Signature of this TaskRouter event is missing or wrong.")
        event = parse_event(parse_form(request.content_type, body))
        if isinstance(event, Ignored):
            log = logger.warning if event.notable else logger.debug
            log("TaskRouter event ignored: %s", event.reason)
            return answer(None, "ignored", event.reason)
        result = await request.app[STORE].record_end(
            event.handover_id, event.event_type, event.task_sid, event.attempt_id
        )
        if result.outcome is EndOutcome.MISSING:
            logger.info(
                "TaskRouter %s for unknown handover %s ignored", event.event_type, event.handover_id
            )
            return answer(event.handover_id, "ignored", "no such handover (unknown or expired)")
        if result.outcome is EndOutcome.OTHER_ATTEMPT:
            logger.info(
                "TaskRouter %s for handover %s ignored: not the task that reached the agent",
                event.event_type,
                event.handover_id,
            )
            return answer(
                event.handover_id,
                "ignored",
                "not the task of the attempt that reached the agent (the handover failed, "
                "or this attempt's channel did)",
            )
        if result.outcome is EndOutcome.EARLY:
            logger.info(
                "TaskRouter %s for handover %s before its outcome: judged once it finishes",
                event.event_type,
                event.handover_id,
            )
            return answer(
                event.handover_id,
                "recorded",
                f"{event.event_type} before the outcome: judged when the handover finishes",
            )
        if result.outcome is EndOutcome.DUPLICATE:
            logger.info(
                "TaskRouter %s for handover %s: ended already (%s)",
                event.event_type,
                event.handover_id,
                result.ended_by,
            )
            return answer(event.handover_id, "duplicate", f"ended already by {result.ended_by}")
        logger.info(
            "handover %s ended: %s of task %s; hand-back queued",
            event.handover_id,
            event.event_type,
            event.task_sid,
        )
        return answer(event.handover_id, "recorded", f"{event.event_type}: hand-back queued")


def routes(settings: Settings) -> list[web.RouteDef]:
    return [web.post(PATH, TaskRouterEvents(settings).handle)]
