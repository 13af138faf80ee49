"""The handover and its status record, shared by the API and the worker.

The request lives in the status record, and nowhere else: the arq job that
delivers it carries ids only (`shared.arq_jobs`).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared.json_text import json_text
from shared.logging import mask_identity, redact

MAX_ERROR_MESSAGE_CHARS = 1000
"""The most of an error message a status record keeps: Twilio's (or a proxy's)
text is upstream input, and everything downstream (redaction, logs, the status
endpoint) must cost bounded time whatever it sent."""
_CUT_OFF = "… [cut off]"


def truncate_message(text: object, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """`text` as a string of at most `limit` characters, marked when cut."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return text[: limit - len(_CUT_OFF)] + _CUT_OFF


class Status(str, Enum):  # noqa: UP042 - StrEnum would change str() of a member
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINAL_STATES = frozenset({Status.SUCCEEDED, Status.FAILED})
"""A handover in one of these has ended; the Lua scripts get them as FINAL (shared.lua_scripts)."""


@dataclass(frozen=True)
class Identity:
    """`X-Identity` split on its first colon: `whatsapp:+1…` → trait, value."""

    trait: str
    value: str

    def __str__(self) -> str:
        return f"{self.trait}:{self.value}"

    @classmethod
    def parse(cls, raw: str) -> Identity:
        trait, _, value = raw.partition(":")
        return cls(trait, value)


KIND_CONVERSATION = "conversation"
"""A handover of a Conversation (`CH…`): the worker creates its Interaction."""
KIND_VOICE = "voice"
"""A live call's ConversationRelay handoff (`api.voice`): Twilio enqueues the call from
the TwiML the API answered, so the record is written `succeeded` and no job runs. Its
`conversation_sid` is empty and `call_sid` names the call."""


@dataclass(frozen=True)
class HandoverRequest:
    """What the API accepted: everything the worker needs to build the Interaction."""

    conversation_sid: str
    identity: Identity
    target: str
    tool_input: dict[str, Any] = field(default_factory=dict)
    """The known fields (reason, summary, customer_name, priority, language)."""
    extra_input: dict[str, Any] = field(default_factory=dict)
    """Every other field the caller sent, kept rather than dropped (a voice handoff's
    `HandoffData`, as it went into the task)."""
    kind: str = KIND_CONVERSATION
    call_sid: str | None = None
    """The call (`CA…`) of a voice handoff; None for a Conversation's."""


@dataclass(frozen=True)
class HandoverError:
    """Why an attempt or a handover failed: Twilio's status and code when it gave them.

    The message is cut to MAX_ERROR_MESSAGE_CHARS however the error is built
    (from Twilio's answer, or read back from an old record)."""

    message: str
    status: int | None = None
    code: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, str) or len(self.message) > MAX_ERROR_MESSAGE_CHARS:
            object.__setattr__(self, "message", truncate_message(self.message))

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "message": self.message}

    def to_public(self) -> dict[str, Any]:
        """Twilio's message may echo a number or address from the request: mask it."""
        return {**self.to_dict(), "message": redact(self.message)}

    @classmethod
    def from_dict(cls, data: object) -> HandoverError:
        """From a stored record; anything but an int status or code is dropped."""
        if not isinstance(data, dict):
            return cls(truncate_message(data))
        return cls(
            truncate_message(data.get("message", "")),
            _optional_int(data.get("status")),
            _optional_int(data.get("code")),
        )


@dataclass(frozen=True)
class ChannelFailure:
    """A created Interaction whose channel Twilio then reported failed: its
    `error_code` and `error_message`, and which Interaction it was. No task
    reached an agent through it, so the handover went on to a new attempt."""

    code: int | None
    message: str
    interaction_sid: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, str) or len(self.message) > MAX_ERROR_MESSAGE_CHARS:
            object.__setattr__(self, "message", truncate_message(self.message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "interaction_sid": self.interaction_sid,
        }

    def to_public(self) -> dict[str, Any]:
        return {**self.to_dict(), "message": redact(self.message)}

    @classmethod
    def from_dict(cls, data: object) -> ChannelFailure:
        if not isinstance(data, dict):
            return cls(None, truncate_message(data))
        sid = data.get("interaction_sid")
        return cls(
            _optional_int(data.get("code")),
            truncate_message(data.get("message", "")),
            sid if isinstance(sid, str) and sid else None,
        )


EARLY_END_PREFIX = "early_end:"
"""Record fields `early_end:<attempt>`: a task's end that came before the outcome."""


@dataclass(frozen=True)
class EarlyEnd:
    """A TaskRouter end event that came before the handover's outcome was known."""

    event_type: str
    task_sid: str
    at: float

    @classmethod
    def parse(cls, value: str) -> EarlyEnd | None:
        """From `shared/lua/hand_back.lua`'s "event task_sid at"; None if malformed."""
        parts = value.split(" ")
        if len(parts) != 3:
            return None
        try:
            return cls(parts[0], parts[1], float(parts[2]))
        except ValueError:
            return None


@dataclass(frozen=True)
class HandoverRecord:
    """The status record as read back from Redis."""

    handover_id: str
    request: HandoverRequest
    state: Status
    attempts: int
    created_at: float
    updated_at: float
    finished_at: float | None = None
    interaction_sid: str | None = None
    channel_sid: str | None = None
    error: HandoverError | None = None
    next_attempt_at: float | None = None
    # An attempt was sent and its outcome is not known yet: the next run must
    # look for its task before sending another (see worker.delivery).
    in_flight_since: float | None = None
    in_flight_attempt: str | None = None
    """The id the in-flight attempt put in its task's attributes (`handoverAttempt`):
    a lookup counts that attempt's task only. None for an attempt made before
    attempts carried one."""
    ambiguous_attempts: int = 0
    lookups: int = 0
    found_by_lookup: bool = False
    """Succeeded because a TaskRouter lookup found the task of an unanswered attempt."""
    replays: int = 0
    replayed_at: float | None = None
    channel_status: str | None = None
    """The channel's status read after the create (`active`, …; `unconfirmed` when
    no read answered within the bound; `failed` while the next attempt waits)."""
    channel_error: ChannelFailure | None = None
    """The last channel that failed, kept after a later attempt succeeded."""
    channel_failures: int = 0
    aftercare: str | None = None
    """`pending` from the final write until the Conversation steps after it
    (`worker.aftercare`: mark and silence after a success, the fallback message
    after a failure) are done, then `done`; None when there were none."""
    conversation_marked: bool | None = None
    """Whether `flexHandover` was merged into the Conversation's attributes (None: not tried)."""
    removed_webhooks: tuple[dict[str, Any], ...] = ()
    """The Conversation webhooks removed to silence the bot, as needed to put them back."""
    fallback_message_sid: str | None = None
    """The fallback message posted after the handover failed (`IM…`)."""
    aftercare_error: str | None = None
    """Why a Conversation step after the outcome did not happen (the outcome stands)."""
    ended_at: float | None = None
    """When TaskRouter said the handover's task ended (`/webhooks/taskrouter`)."""
    ended_by: str | None = None
    """The event that ended it: `task.completed`, `task.canceled` or `task.deleted`."""
    succeeded_attempt: str | None = None
    """The attempt whose task reached the agent (its `handoverAttempt`)."""
    ended_task_sid: str | None = None
    """The task that event was about (`WT…`)."""
    ended_attempt: str | None = None
    """That task's `handoverAttempt`: which attempt's task ended (None: it carried none)."""
    handed_back: bool | None = None
    """Whether the Conversation was told the handover ended (and webhooks put back)."""
    restored_webhooks: int = 0
    early_ends: dict[str, EarlyEnd] = field(default_factory=dict)
    """Ends that came before the outcome, by the task's attempt id ('' for none)."""
    problem: str | None = None
    """What was wrong with a voice handoff's request, answered anyway (`api.voice`)."""

    @property
    def deadline_from(self) -> float:
        """Max age counts from the call, or from the last replay."""
        return max(self.created_at, self.replayed_at or 0.0)

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> HandoverRecord:
        """Build from HGETALL output (decoded strings)."""
        error = data.get("error")
        return cls(
            handover_id=data["handover_id"],
            request=HandoverRequest(
                conversation_sid=data["conversation_sid"],
                identity=Identity.parse(data["identity"]),
                target=data["target"],
                tool_input=json.loads(data.get("tool_input") or "{}"),
                extra_input=json.loads(data.get("extra_input") or "{}"),
                kind=data.get("kind") or KIND_CONVERSATION,
                call_sid=data.get("call_sid") or None,
            ),
            state=Status(data["state"]),
            attempts=int(data.get("attempts") or 0),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            finished_at=_optional_float(data.get("finished_at")),
            interaction_sid=data.get("interaction_sid") or None,
            channel_sid=data.get("channel_sid") or None,
            error=HandoverError.from_dict(json.loads(error)) if error else None,
            next_attempt_at=_optional_float(data.get("next_attempt_at")),
            in_flight_since=_optional_float(data.get("in_flight_since")),
            ambiguous_attempts=int(data.get("ambiguous_attempts") or 0),
            lookups=int(data.get("lookups") or 0),
            found_by_lookup=data.get("found_by_lookup") == "1",
            replays=int(data.get("replays") or 0),
            replayed_at=_optional_float(data.get("replayed_at")),
            in_flight_attempt=data.get("in_flight_attempt") or None,
            channel_status=data.get("channel_status") or None,
            channel_error=_channel_failure(data.get("channel_error")),
            channel_failures=int(data.get("channel_failures") or 0),
            aftercare=data.get("aftercare") or None,
            conversation_marked=_optional_flag(data.get("conversation_marked")),
            removed_webhooks=tuple(json.loads(data.get("removed_webhooks") or "[]")),
            fallback_message_sid=data.get("fallback_message_sid") or None,
            aftercare_error=data.get("aftercare_error") or None,
            ended_at=_optional_float(data.get("ended_at")),
            ended_by=data.get("ended_by") or None,
            succeeded_attempt=data.get("succeeded_attempt") or None,
            ended_task_sid=data.get("ended_task_sid") or None,
            ended_attempt=data.get("ended_attempt") or None,
            handed_back=_optional_flag(data.get("handed_back")),
            restored_webhooks=int(data.get("restored_webhooks") or 0),
            early_ends=_early_ends(data),
            problem=data.get("problem") or None,
        )

    def to_public(self) -> dict[str, Any]:
        """The JSON the status endpoint answers: no full phone number or e-mail."""
        return {
            "handover_id": self.handover_id,
            "kind": self.request.kind,
            "conversation_sid": self.request.conversation_sid or None,
            "call_sid": self.request.call_sid,
            "identity": mask_identity(str(self.request.identity)),
            "target": self.request.target,
            "state": self.state.value,
            "attempts": self.attempts,
            "ambiguous_attempts": self.ambiguous_attempts,
            "lookups": self.lookups,
            "replays": self.replays,
            "found_by_lookup": self.found_by_lookup,
            "interaction_sid": self.interaction_sid,
            "channel_sid": self.channel_sid,
            "channel_status": self.channel_status,
            "channel_failures": self.channel_failures,
            "channel_error": self.channel_error.to_public() if self.channel_error else None,
            "error": self.error.to_public() if self.error else None,
            "next_attempt_at": _iso(self.next_attempt_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "finished_at": _iso(self.finished_at),
            "replayed_at": _iso(self.replayed_at),
            "aftercare": self.aftercare,
            "conversation_marked": self.conversation_marked,
            "removed_webhooks": [_public_webhook(hook) for hook in self.removed_webhooks],
            "fallback_message_sid": self.fallback_message_sid,
            "aftercare_error": redact(self.aftercare_error) if self.aftercare_error else None,
            "ended_at": _iso(self.ended_at),
            "ended_by": self.ended_by,
            "handed_back": self.handed_back,
            "restored_webhooks": self.restored_webhooks,
            "problem": redact(self.problem) if self.problem else None,
        }


def new_handover_record(handover_id: str, request: HandoverRequest, now: float) -> dict[str, str]:
    """The fields written when a handover is accepted (state `queued`); a voice
    handoff's also name its kind and call."""
    kind = {} if request.kind == KIND_CONVERSATION else {"kind": request.kind}
    if request.call_sid is not None:
        kind["call_sid"] = request.call_sid
    return {
        **kind,
        "handover_id": handover_id,
        "conversation_sid": request.conversation_sid,
        "identity": str(request.identity),
        "target": request.target,
        "tool_input": json_text(request.tool_input),
        "extra_input": json_text(request.extra_input),
        "state": Status.QUEUED.value,
        "attempts": "0",
        "created_at": repr(now),
        "updated_at": repr(now),
    }


def new_handover_id() -> str:
    """128 random bits, as hex (a uuid4 costs about four times as much on the hot path)."""
    return "ho_" + secrets.token_hex(16)


def now() -> float:
    return time.time()


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _channel_failure(value: str | None) -> ChannelFailure | None:
    return ChannelFailure.from_dict(json.loads(value)) if value else None


def _early_ends(data: dict[str, str]) -> dict[str, EarlyEnd]:
    ends = {}
    for name, value in data.items():
        if name.startswith(EARLY_END_PREFIX):
            end = EarlyEnd.parse(value)
            if end is not None:
                ends[name.removeprefix(EARLY_END_PREFIX)] = end
    return ends


def _optional_flag(value: str | None) -> bool | None:
    return None if not value else value == "1"


def _public_webhook(hook: dict[str, Any]) -> dict[str, Any]:
    """A removed webhook as the status endpoint shows it: where it pointed, nothing
    that may carry a secret (`_shown_url`)."""
    url = hook.get("url")
    return {
        "sid": hook.get("sid"),
        "target": hook.get("target"),
        "url": _shown_url(url) if isinstance(url, str) else None,
    }


def _shown_url(url: str) -> str | None:
    """Scheme, host, port and path of `url`, rebuilt: no userinfo (`user:pass@`), query
    or fragment, each of which may carry a credential. None when there is no host to
    show (not an absolute URL, or one that does not parse): nothing is safe to echo."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _optional_float(value: str | None) -> float | None:
    return float(value) if value else None


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
