"""Reads and writes the status record after the API has created it.

Writes only touch fields of a record that exists, so a late write never
resurrects a handover whose record has expired.

`in_flight_since` is set in the same write that counts an attempt, before the
request leaves, and stays set until the attempt's outcome is known: a
definite answer, or a TaskRouter lookup. A run that finds it set must look
before it sends again (see `worker.delivery`). An in-flight attempt with no
`error` beside it belongs to a run that died before recording its answer
(`start_attempt` clears `error`; every end of an attempt writes one).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import redis.asyncio as aioredis
from arq.constants import expires_extra_ms

from shared import lua_scripts, redis_keys
from shared.arq_jobs import hand_back_job
from shared.model import (
    ChannelFailure,
    EarlyEnd,
    HandoverError,
    HandoverRecord,
    Status,
    now,
    truncate_message,
)
from shared.script_batcher import ReplicaWait, ScriptBatcher

UPDATE_SCRIPT = lua_scripts.script("shared", "update.lua")
BEGIN_SCRIPT = lua_scripts.script("shared", "begin_run.lua")
HAND_BACK_SCRIPT = lua_scripts.script(
    "shared", "hand_back.lua", {"JOB_TTL_MS": int(expires_extra_ms)}
)
MISSING, FINAL, CLAIM_BUSY, CLAIM_HELD, OTHER_CONVERSATION, AFTERCARE_HELD = 0, 1, 2, 3, 4, 5
AFTERCARE_PENDING = "pending"
_IN_FLIGHT = ("in_flight_since", "in_flight_attempt")
# An outcome's Conversation steps start afresh (a replayed handover's earlier ones
# are done); `fallback_message_sid` stays: at most one fallback per handover.
_AFTERCARE_RESULTS = ("aftercare", "aftercare_error", "conversation_marked")
_ENDED_ALREADY, _END_RECORDED, _OTHER_ATTEMPT, _EARLY_END = 1, 2, 3, 4  # hand_back.lua's


@dataclass(frozen=True)
class RunStart:
    """What `HandoverStore.begin_run` found: `outcome` is MISSING, FINAL,
    CLAIM_BUSY, CLAIM_HELD, OTHER_CONVERSATION or AFTERCARE_HELD (final, its
    Conversation steps still due, the claim taken); `record` is set when held,
    `state` when final, `holder` (the claim's value) when busy,
    `conversation_sid` (the record's) for another conversation."""

    outcome: int
    record: HandoverRecord | None = None
    state: Status | None = None
    holder: str | None = None
    conversation_sid: str | None = None


class EndOutcome(Enum):
    """What `HandoverStore.record_end` did."""

    RECORDED = "recorded"
    """`ended_*` written and the hand-back job queued."""
    DUPLICATE = "duplicate"
    """The handover had ended already: nothing written, nothing queued."""
    MISSING = "missing"
    """No such record (unknown or expired): nothing written."""
    OTHER_ATTEMPT = "other_attempt"
    """Not the handover's task: a failed handover's, or another attempt's than the
    one that succeeded (one whose channel failed)."""
    EARLY = "early"
    """Before the outcome: kept under its attempt, the hand-back job judges it."""


@dataclass(frozen=True)
class EndRecord:
    """`HandoverStore.record_end`'s answer."""

    outcome: EndOutcome
    ended_by: str | None = None
    """For a duplicate: the event that ended the handover first."""


class HandoverStore:
    """`replica_wait` (the worker's, with HANDOVER_MIN_REPLICAS): every update of a
    record returns only once that many replicas have it, so the in-flight mark
    written before each `POST /v1/Interactions` (`start_attempt`) survives any
    failover: a run repeated after one looks in TaskRouter before it sends again,
    never sending a second time unknowingly. Not confirmed: `NotReplicated`, and
    the caller sends nothing."""

    def __init__(
        self,
        redis: aioredis.Redis,
        status_ttl_seconds: int,
        replica_wait: ReplicaWait | None = None,
    ):
        self._redis = redis
        self._ttl = status_ttl_seconds
        self._update: Any = (
            redis.register_script(UPDATE_SCRIPT)
            if replica_wait is None
            else ScriptBatcher(redis, UPDATE_SCRIPT, replica_wait=replica_wait)
        )
        self._begin = redis.register_script(BEGIN_SCRIPT)
        self._hand_back = redis.register_script(HAND_BACK_SCRIPT)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def get(self, handover_id: str) -> HandoverRecord | None:
        # redis-py types the asyncio client's commands as sync-or-async.
        data = await cast(
            Awaitable[dict[str | bytes, str | bytes]],
            self._redis.hgetall(redis_keys.handover_key(handover_id)),
        )
        if not data:
            return None
        return HandoverRecord.from_hash(_decoded(data))

    async def current_handover(self, conversation_sid: str) -> str | None:
        """The handover the conversation's pointer names (its newest), if any."""
        value = await cast(  # redis-py types the asyncio client's commands as sync-or-async
            Awaitable[str | bytes | None],
            self._redis.get(redis_keys.conversation_key(conversation_sid)),
        )
        return None if value is None else _text(value)

    async def conversation_of(self, handover_id: str) -> str | None:
        """The record's conversation SID; None when there is no record."""
        value = await cast(  # redis-py types the asyncio client's commands as sync-or-async
            Awaitable[str | bytes | None],
            self._redis.hget(redis_keys.handover_key(handover_id), "conversation_sid"),
        )
        return None if value is None else _text(value)

    async def begin_run(
        self,
        handover_id: str,
        conversation_sid: str,
        claim_key: str,
        claim_value: str,
        claim_ttl_ms: int,
    ) -> RunStart:
        """Take the delivery claim `claim_key` (of `conversation_sid`) and mark the
        record running, in one round trip; a missing or final record, or one of
        another conversation, takes nothing. `worker.claim` owns the claim."""
        reply = await self._begin(
            keys=[redis_keys.handover_key(handover_id), claim_key],
            args=[conversation_sid, claim_value, claim_ttl_ms, repr(now())],
        )
        outcome = int(reply[0])
        if outcome in (CLAIM_HELD, AFTERCARE_HELD):
            data = _decoded(dict(zip(reply[1::2], reply[2::2], strict=True)))
            return RunStart(outcome, record=HandoverRecord.from_hash(data))
        if outcome == FINAL:
            return RunStart(FINAL, state=Status(_text(reply[1])))
        if outcome == CLAIM_BUSY:
            return RunStart(CLAIM_BUSY, holder=_text(reply[1]) or None)
        if outcome == OTHER_CONVERSATION:
            return RunStart(OTHER_CONVERSATION, conversation_sid=_text(reply[1]))
        return RunStart(MISSING)

    async def start_attempt(self, handover_id: str, attempt_id: str | None = None) -> float | None:
        """Counts the attempt and marks it in flight, with the id its task will
        carry (`attempt_id`; None: a task without one); returns its
        `in_flight_since`, or None when the record is gone or final: send nothing."""
        timestamp = now()
        fields = {"state": Status.RUNNING.value, "in_flight_since": repr(timestamp)}
        clear = ["error", "next_attempt_at", "channel_status"]
        if attempt_id is None:
            clear.append("in_flight_attempt")
        else:
            fields["in_flight_attempt"] = attempt_id
        started = await self._set(
            handover_id,
            fields,
            clear=clear,
            increment=["attempts"],
            timestamp=timestamp,
        )
        return timestamp if started else None

    async def end_attempt(self, handover_id: str, error: HandoverError, *, ambiguous: bool) -> bool:
        """An attempt failed: if Twilio may still have acted on it, it stays in flight
        and counts as ambiguous; a definite refusal takes it out of flight."""
        return await self._set(
            handover_id,
            {"error": _error_field(error)},
            clear=[] if ambiguous else _IN_FLIGHT,
            increment=["ambiguous_attempts"] if ambiguous else [],
        )

    async def count_lookup(self, handover_id: str, next_attempt_at: float | None = None) -> bool:
        """A TaskRouter lookup starts; no request is sent before `next_attempt_at`
        (the end of its grace window)."""
        fields = {} if next_attempt_at is None else {"next_attempt_at": repr(next_attempt_at)}
        return await self._set(handover_id, fields, increment=["lookups"])

    async def settle_in_flight(self, handover_id: str) -> bool:
        """A lookup found no task: the in-flight attempt created nothing."""
        return await self._set(handover_id, {}, clear=_IN_FLIGHT)

    async def channel_failed(
        self, handover_id: str, error: HandoverError, failure: ChannelFailure
    ) -> bool:
        """The attempt's Interaction was created but its channel failed: the
        attempt is over and delivered nothing (out of flight, so the next step is
        a new request, not a lookup that would find this attempt's task)."""
        return await self._set(
            handover_id,
            {
                "error": _error_field(error),
                "channel_status": "failed",
                "channel_error": json.dumps(failure.to_dict()),
            },
            clear=_IN_FLIGHT,
            increment=["channel_failures"],
        )

    async def mark_retrying(
        self, handover_id: str, error: HandoverError, next_attempt_at: float
    ) -> bool:
        return await self._set(
            handover_id,
            {
                "state": Status.RETRYING.value,
                "error": _error_field(error),
                "next_attempt_at": repr(next_attempt_at),
            },
        )

    async def mark_succeeded(
        self,
        handover_id: str,
        interaction_sid: str | None,
        channel_sid: str | None,
        *,
        found_by_lookup: bool = False,
        channel_status: str | None = None,
        attempt_id: str | None = None,
        aftercare: bool = False,
        release: ClaimRelease | None = None,
    ) -> HandoverRecord | None:
        """The record as this write left it (None: the record was final or gone, and
        nothing changed). With `aftercare`, the Conversation steps are due
        (`worker.aftercare`): the record says so until `finish_aftercare`."""
        timestamp = now()
        fields = {
            "state": Status.SUCCEEDED.value,
            "interaction_sid": interaction_sid or "",
            "channel_sid": channel_sid or "",
            "channel_status": channel_status or "",
            "finished_at": repr(timestamp),
        }
        if found_by_lookup:
            fields["found_by_lookup"] = "1"
        if attempt_id is not None:
            # The attempt whose task reached the agent: its end is the handover's.
            fields["succeeded_attempt"] = attempt_id
        if aftercare:
            fields["aftercare"] = AFTERCARE_PENDING
        return await self._finish(
            handover_id,
            fields,
            clear=["error", "next_attempt_at", *_IN_FLIGHT, *_AFTERCARE_RESULTS],
            timestamp=timestamp,
            release=release,
        )

    async def mark_failed(
        self,
        handover_id: str,
        error: HandoverError,
        *,
        aftercare: bool = False,
        release: ClaimRelease | None = None,
    ) -> HandoverRecord | None:
        """As `mark_succeeded`: the record as this write left it, or None."""
        timestamp = now()
        fields = {
            "state": Status.FAILED.value,
            "error": _error_field(error),
            "finished_at": repr(timestamp),
        }
        if aftercare:
            fields["aftercare"] = AFTERCARE_PENDING
        return await self._finish(
            handover_id,
            fields,
            clear=["next_attempt_at", *_AFTERCARE_RESULTS],
            timestamp=timestamp,
            failed=True,
            release=release,
        )

    async def remember_removed_webhooks(
        self, handover_id: str, webhooks: Sequence[dict[str, object]]
    ) -> bool:
        """Webhooks about to be removed from the Conversation, written before they go."""
        return await self._set(
            handover_id,
            {"removed_webhooks": json.dumps(list(webhooks), separators=(",", ":"))},
            after_outcome=True,
        )

    async def finish_aftercare(
        self, handover_id: str, fields: dict[str, str], *, release: ClaimRelease | None = None
    ) -> bool:
        """The Conversation steps are done (`fields`: what they did), releasing the
        claim the final write kept."""
        return await self._set(handover_id, fields, release=release, after_outcome=True)

    async def record_end(
        self, handover_id: str, ended_by: str, task_sid: str, attempt_id: str | None
    ) -> EndRecord:
        """The agent's task ended (`ended_by`: the TaskRouter event type): write
        `ended_at`, `ended_by`, `ended_task_sid`, `ended_attempt` (the task's
        `handoverAttempt`, when it carried one) and queue `hand_back_handover`
        (job id `redis_keys.hand_back_job_id`), once per handover, in one round
        trip (shared/lua/hand_back.lua). The task of another attempt than the one
        that succeeded, or of a failed handover, changes nothing; before the
        outcome, the end is kept under its attempt (`early_end:<attempt>`) and
        the job queued, to be judged by `promote_early_end`'s caller."""
        timestamp = now()
        enqueue_ms = int(timestamp * 1000)
        reply = await self._hand_back(
            keys=[
                redis_keys.handover_key(handover_id),
                redis_keys.hand_back_job_key(handover_id),
                redis_keys.QUEUE_NAME,
            ],
            args=[
                redis_keys.hand_back_job_id(handover_id),
                hand_back_job(handover_id, enqueue_ms),
                enqueue_ms,
                repr(timestamp),
                ended_by,
                task_sid,
                attempt_id or "",
            ],
        )
        outcome = int(reply[0])
        if outcome == _ENDED_ALREADY:
            return EndRecord(EndOutcome.DUPLICATE, _text(reply[1]) or None)
        if outcome == _END_RECORDED:
            return EndRecord(EndOutcome.RECORDED)
        if outcome == _OTHER_ATTEMPT:
            return EndRecord(EndOutcome.OTHER_ATTEMPT)
        if outcome == _EARLY_END:
            return EndRecord(EndOutcome.EARLY)
        return EndRecord(EndOutcome.MISSING)

    async def promote_early_end(self, handover_id: str, end: EarlyEnd, attempt: str) -> bool:
        """An end that came before the outcome was the succeeded attempt's task:
        it ends the handover now, as `record_end` would have."""
        fields = {
            "ended_at": repr(end.at),
            "ended_by": end.event_type,
            "ended_task_sid": end.task_sid,
        }
        if attempt:
            fields["ended_attempt"] = attempt
        return await self._set(handover_id, fields, after_outcome=True)

    async def finish_hand_back(self, handover_id: str, fields: dict[str, str]) -> bool:
        """The hand-back job is done (`fields`: `handed_back` and what it did)."""
        return await self._set(handover_id, fields, after_outcome=True)

    async def _finish(
        self, handover_id: str, fields: dict[str, str], **update: Any
    ) -> HandoverRecord | None:
        """A final write (its `state` the outcome): the record as it left it, read
        in the same script; None when it was refused."""
        reply = await self._write(handover_id, fields, final=True, **update)
        if not int(reply[0]):
            return None
        return HandoverRecord.from_hash(_decoded(dict(zip(reply[2::2], reply[3::2], strict=True))))

    async def _set(self, handover_id: str, fields: dict[str, str], **update: Any) -> bool:
        """Apply the update; True when the record existed and took it."""
        reply = await self._write(handover_id, fields, **update)
        return bool(int(reply[0]))

    async def _write(
        self,
        handover_id: str,
        fields: dict[str, str],
        *,
        clear: Sequence[str] = (),
        increment: Sequence[str] = (),
        final: bool = False,
        timestamp: float | None = None,
        failed: bool = False,
        release: ClaimRelease | None = None,
        after_outcome: bool = False,
    ) -> list[Any]:
        """Apply the update; the script's answer (shared/lua/update.lua). A delivery
        write (not `after_outcome`) is refused once the record is final. A `final`
        write (its `state` the outcome) counts it in the minute's outcome counters. With
        `release`, the claim is released in the same script and
        `release.released` says whether it still was the run's own."""
        timestamp = timestamp or now()
        fields = {**fields, "updated_at": repr(timestamp)}
        bucket = redis_keys.outcome_bucket(timestamp)
        outcome = fields["state"] if final else ""
        args: list[str | int] = [
            self._ttl if final else 0,
            repr(timestamp) if failed else "",
            release.value if release is not None else "",
            "" if after_outcome else "1",
            outcome,
            bucket + redis_keys.OUTCOME_BUCKET_TTL_SECONDS,
            len(clear),
            *clear,
            len(increment),
            *increment,
        ]
        for name, value in fields.items():
            args += (name, value)
        script_keys = [
            redis_keys.handover_key(handover_id),
            redis_keys.FAILED_INDEX,
            redis_keys.outcome_bucket_key(bucket),
        ]
        if release is not None:
            script_keys.append(release.key)
        reply: list[Any] = await self._update(keys=script_keys, args=args)
        if release is not None:
            release.released = bool(int(reply[1]))
        return reply


@dataclass
class ClaimRelease:
    """A delivery claim to release (compare-and-delete) with a final write."""

    key: str
    value: str
    released: bool | None = None
    """After the write: whether the claim was still the run's own and is gone."""
    finished: HandoverRecord | None = None
    """After a final write that kept the claim for the Conversation steps: the
    record as that write left it (read in the same script), which they start from."""


def _error_field(error: HandoverError) -> str:
    """The stored `error`: its message cut to MAX_ERROR_MESSAGE_CHARS here too,
    so no path can write upstream text of any size into a record."""
    return json.dumps({**error.to_dict(), "message": truncate_message(error.message)})


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decoded(data: dict[str | bytes, str | bytes]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in data.items()
    }
