"""The enqueue path (clients come from `shared.redis_client`).

A tool call is acknowledged only after one Lua script has, atomically:
de-duplicated against the conversation's latest handover (a repeat call gets
that handover back and is not counted while it is live, or succeeded within
`HANDOVER_DEDUP_SECONDS` and its agent's task has not ended: once the agent gave
the customer back, asking again is a new handover), checked and counted the fixed-window
rate limits on new handovers per conversation and per customer identity,
checked the backlog (`HANDOVER_MAX_PENDING`), written the status record
(`queued`), written an arq-compatible job record and added it to the queue
(scored by the target's priority, `shared.queue_order`),
and put its id in the recent index the operator's lists read
(shared/lua/enqueue.lua). No half-stored handover if Redis goes away; a call
refused by a rate limit or a full backlog stores nothing at all, nor does one
that a target declines outside its business hours (the script still answers the
conversation's live handover, so the model is not told "not handed over" about
one that is on its way). One round trip, a repeat call's too: the script reads
the record of the handover the conversation points to by building its key.
Concurrent calls share one script run (`shared.script_batcher`, looped), each
call still checked and written as a whole before the next.

The backlog is the arq queue's ZCARD: arq keeps a job in the queue from enqueue
until it finishes (queued, running, deferred for a retry), and removes it when
it succeeds, fails, expires or finds its record gone; a killed worker's job
stays until it runs again. So the count is the queue itself, kept by the same
writes that move the jobs: nothing to maintain, nothing that can drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis
from arq.constants import expires_extra_ms
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from shared import lua_scripts, redis_keys
from shared.arq_jobs import handover_job
from shared.json_text import json_bytes
from shared.model import HandoverRequest, Status, new_handover_id, new_handover_record, now
from shared.queue_order import head_starts_ms, queue_score
from shared.script_batcher import ReplicaWait, ScriptBatcher
from shared.settings import Settings

# The enqueue script's outcomes; 0 (any other) is the live or recent handover found.
STORED, RATE_LIMITED, BACKLOG_FULL, DECLINED = 1, 2, 3, 4
# What a call refused for a full backlog is told to wait: the queue drains at
# the workers' pace, so a few seconds would mostly be refused again.
BACKLOG_RETRY_AFTER_SECONDS = 30
# The keys and arguments of one call of the enqueue script, which takes a batch of them.
ENQUEUE_KEYS, ENQUEUE_ARGS = 7, 6


def enqueue_script(settings: Settings) -> str:
    """shared/lua/enqueue.lua with this deployment's settings as its constants."""
    return lua_scripts.script(
        "shared",
        "enqueue.lua",
        {
            "DEDUP_WINDOW": float(settings.dedup_seconds),
            "LIMIT_CONVERSATION": int(settings.rate_limit_per_conversation),
            "LIMIT_IDENTITY": int(settings.rate_limit_per_identity),
            "RATE_WINDOW": int(settings.rate_limit_window_seconds),
            "MAX_PENDING": int(settings.max_pending),
            "RECORD_TTL": int(settings.status_ttl_seconds),
            "POINTER_TTL": int(settings.dedup_key_ttl_seconds),
            "JOB_TTL_MS": int(expires_extra_ms),
            "RECENT_RETENTION": settings.recent_retention_seconds,
            "KEYS_PER_CALL": ENQUEUE_KEYS,
            "ARGS_PER_CALL": ENQUEUE_ARGS,
        },
    )


@dataclass(frozen=True)
class EnqueueResult:
    """Stored (`created`), the live or recent handover (not `created`), or refused
    by a rate limit (`limited_by` set) or a full backlog (`backlog_full`): then
    nothing is stored and there is no handover id."""

    handover_id: str
    created: bool
    state: Status | None
    limited_by: str | None = None
    """`conversation` or `identity`: which limit refused this call."""
    retry_after_seconds: int = 0
    """Whole seconds to wait: until that limit's window ends (at least 1), or
    BACKLOG_RETRY_AFTER_SECONDS for a full backlog."""
    backlog_full: bool = False
    """HANDOVER_MAX_PENDING handovers are live: no new one until workers catch up."""
    declined: bool = False
    """Asked not to store a new one (`store_new=False`), and there was no live or
    recent handover to answer: nothing stored."""

    @property
    def rate_limited(self) -> bool:
        return self.limited_by is not None


# Redis answering but refusing writes: out of memory under noeviction (OOM), a
# read-only replica (READONLY), a failed RDB or AOF write (MISCONF), too few
# replicas for min-replicas-to-write (NOREPLICAS), a replica cut off from its
# master (MASTERDOWN). Each ends by itself or by an operator's hand, so like an
# unreachable Redis it means "back off and try again", never "crash".
WRITE_REFUSALS = ("OOM", "READONLY", "MISCONF", "NOREPLICAS", "MASTERDOWN")


def write_refusal(error: BaseException) -> str | None:
    """The code of a Redis write refusal (one of WRITE_REFUSALS), else None.

    redis-py strips the code from OutOfMemoryError and ReadOnlyError, leaves it
    at the start of any other ResponseError, and a pipeline prefixes the
    message with the failing command."""
    if isinstance(error, OutOfMemoryError):
        return "OOM"
    if isinstance(error, ReadOnlyError):
        return "READONLY"
    if not isinstance(error, ResponseError):
        return None
    code = _server_message(error).split(" ", 1)[0]
    return code if code in WRITE_REFUSALS else None


def redis_error_text(error: BaseException, limit: int = 200) -> str:
    """`Type: message` in one bounded line, without the command a pipeline adds
    to its errors (its arguments may hold a handover's fields)."""
    message = _server_message(error)
    if len(message) > limit:
        message = message[: limit - 1] + "…"
    return f"{type(error).__name__}: {message}"


def _server_message(error: BaseException) -> str:
    """The error's text; for a pipeline's, the server's reply after
    `Command # N (<command>) of pipeline caused error: (<reply>,)`."""
    message = str(error)
    if message.startswith("Command # "):
        message = message.partition(" caused error: ")[2].strip("(),'\"")
    return message


class Enqueuer:
    """Stores handover requests as arq jobs; what `POST /tools/flex-handover` calls."""

    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self._script = ScriptBatcher(
            redis, enqueue_script(settings), replica_wait=ReplicaWait.of(settings), looped=True
        )
        self._head_starts_ms = head_starts_ms(
            settings.targets, settings.priority_head_start_seconds
        )

    async def enqueue(self, request: HandoverRequest, *, store_new: bool = True) -> EnqueueResult:
        """Store a new handover, return the conversation's live one, or refuse
        a new one over a rate limit or past HANDOVER_MAX_PENDING: one script run.
        With HANDOVER_MIN_REPLICAS, `NotReplicated` when too few replicas confirm.

        `store_new=False` (a target outside its hours that declines): the live or
        recent handover is still answered, but nothing new is stored or counted."""
        handover_id = new_handover_id()
        timestamp = now()
        enqueue_ms = int(timestamp * 1000)
        job = handover_job(handover_id, request.conversation_sid, enqueue_ms) if store_new else b""
        record = (
            json_bytes(new_handover_record(handover_id, request, timestamp)) if store_new else b""
        )
        outcome, found, detail = await self._script(
            keys=[
                redis_keys.conversation_key(request.conversation_sid),
                redis_keys.handover_key(handover_id),
                redis_keys.arq_job_key(handover_id),
                redis_keys.QUEUE_NAME,
                redis_keys.rate_conversation_key(request.conversation_sid),
                redis_keys.rate_identity_key(str(request.identity)),
                redis_keys.RECENT_INDEX,
            ],
            args=[
                handover_id,
                job,
                queue_score(enqueue_ms, self._head_starts_ms.get(request.target, 0)),
                repr(timestamp),
                record,
                "1" if not store_new else "0",
            ],
        )
        if outcome == RATE_LIMITED:
            return EnqueueResult(
                "", False, None, limited_by=found, retry_after_seconds=_whole_seconds(detail)
            )
        if outcome == DECLINED:
            return EnqueueResult("", False, None, declined=True)
        if outcome == BACKLOG_FULL:
            return EnqueueResult(
                "", False, None, retry_after_seconds=BACKLOG_RETRY_AFTER_SECONDS, backlog_full=True
            )
        return EnqueueResult(found, outcome == STORED, Status(detail))


def _whole_seconds(milliseconds: int) -> int:
    return max(1, math.ceil(int(milliseconds) / 1000))
