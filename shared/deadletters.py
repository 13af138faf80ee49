"""Dead letters: list failed handovers and replay them onto the queue.

Used by the operator endpoints (`api.admin`) and the CLI (`commands.cli`), so
both refuse the same things for the same reasons. A replay is one Lua script
(shared/lua/replay.lua): the checks that make it safe (not succeeded, not live,
not superseded by a newer handover for the conversation, no arq run still
finishing) and the writes that re-queue it cannot be split by a worker or a
second operator.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import cast

import redis.asyncio as aioredis
from arq.constants import expires_extra_ms

from shared import handover_list, lua_scripts, redis_keys
from shared.arq_jobs import handover_job
from shared.handover_list import HandoverPage
from shared.model import HandoverRecord, Status, now
from shared.settings import Settings

_READ_AGAIN = "read_again"

REPLAY_SCRIPT = lua_scripts.script("shared", "replay.lua")
# The conversation's pointer can only move to a newly stored handover, which is then
# live: a second read finds it and the replay is refused as superseded.
MAX_REPLAY_READS = 4


class Refusal(str, Enum):  # noqa: UP042 - StrEnum would change str() of a member
    """Why a handover was not replayed; the value is the API's error code."""

    MISSING = "unknown_handover"
    ALREADY_SUCCEEDED = "already_succeeded"
    IN_PROGRESS = "in_progress"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class ReplayResult:
    handover_id: str
    record: HandoverRecord | None = None
    """The record as the replay left it (`queued`); None when refused."""
    refusal: Refusal | None = None
    message: str = ""

    @property
    def replayed(self) -> bool:
        return self.refusal is None


class ReplayContended(Exception):
    """What a replay read kept changing before its script could check it: nothing
    was written, and trying again shortly is right (the API answers 503)."""

    def __init__(self, handover_id: str):
        super().__init__(
            f"handover {handover_id}: its conversation's latest handover changed on each "
            f"of {MAX_REPLAY_READS} reads; nothing was replayed, try again"
        )


class Replayer:
    """Puts failed handovers back on the queue: what `POST /handovers/{id}/replay`
    and `flex-handover replay` call. The script is registered once, here."""

    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self._redis = redis
        self._settings = settings
        self._script = redis.register_script(REPLAY_SCRIPT)

    async def replay(self, handover_id: str) -> ReplayResult:
        """Put a failed handover back on the queue, or say why not.

        The script may touch only keys it is given, and whether the handover was
        superseded depends on two it finds through others: the conversation's pointer
        (named by the record) and the record of the handover that points to. So they
        are read first, and the script checks they still are what was read; when not,
        it writes nothing and answers `read_again`."""
        record_key = redis_keys.handover_key(handover_id)
        for _ in range(MAX_REPLAY_READS):
            conversation_sid, finished_at = await cast(  # redis-py types asyncio as sync-or-async
                Awaitable[list[str | bytes | None]],
                self._redis.hmget(record_key, ["conversation_sid", "finished_at"]),
            )
            failed_at = _text(finished_at) if finished_at is not None else ""
            keys = [
                record_key,
                redis_keys.FAILED_INDEX,
                redis_keys.arq_job_key(handover_id),
                redis_keys.QUEUE_NAME,
                redis_keys.arq_in_progress_key(redis_keys.handover_job_id(handover_id)),
                redis_keys.RECENT_INDEX,
                redis_keys.outcome_bucket_key(
                    redis_keys.outcome_bucket(float(failed_at)) if failed_at else 0
                ),
            ]
            conversation, latest = "", ""
            if conversation_sid is not None:
                conversation = _text(conversation_sid)
                pointer = redis_keys.conversation_key(conversation)
                latest = _text(await self._redis.get(pointer) or "")
                keys.append(pointer)
                if latest and latest != handover_id:
                    keys.append(redis_keys.handover_key(latest))
            timestamp = now()
            enqueue_ms = int(timestamp * 1000)
            reply = await self._script(
                keys=keys,
                args=[
                    handover_id,
                    handover_job(handover_id, conversation, enqueue_ms),
                    enqueue_ms,
                    expires_extra_ms,
                    self._settings.status_ttl_seconds,
                    self._settings.dedup_key_ttl_seconds,
                    repr(timestamp),
                    conversation,
                    latest,
                    self._settings.recent_retention_seconds,
                    failed_at,
                ],
            )
            outcome, *rest = [_text(item) for item in reply]
            if outcome != _READ_AGAIN:
                break
        else:
            raise ReplayContended(handover_id)
        if outcome == "replayed":
            record = HandoverRecord.from_hash(dict(zip(rest[::2], rest[1::2], strict=True)))
            return ReplayResult(handover_id, record=record, message="queued again")
        refusal = Refusal(outcome)
        return ReplayResult(handover_id, refusal=refusal, message=_refusal_message(refusal, rest))


def _refusal_message(refusal: Refusal, detail: list[str]) -> str:
    if refusal is Refusal.MISSING:
        return "No such handover (unknown id, or its record has expired)."
    if refusal is Refusal.ALREADY_SUCCEEDED:
        return f"already succeeded: Interaction {detail[0] or '(unknown)'}; nothing to replay."
    if refusal is Refusal.IN_PROGRESS and detail[0] == "finishing":
        seconds = max(1, math.ceil(int(detail[1]) / 1000))
        return (
            "A worker is still finishing its last run; try again in "
            f"{seconds} second{'s' if seconds != 1 else ''}."
        )
    if refusal is Refusal.IN_PROGRESS:
        return f"still {detail[0]}: only a failed handover can be replayed."
    latest, state = detail
    return (
        f"superseded: the conversation's newer handover {latest} is {state}; "
        "replaying this one would create a second Interaction."
    )


async def list_failed(
    redis: aioredis.Redis, limit: int, before: str | None = None, target: str | None = None
) -> HandoverPage:
    """Failed handovers, newest failure first: `handover_list.list_handovers` of
    `failed` (`before`: a previous page's `next`, or a Unix time)."""
    return await handover_list.list_handovers(redis, Status.FAILED.value, limit, before, target)


def _text(value: str | bytes) -> str:
    """Works with either kind of client: decoded (the service's) or raw (arq's)."""
    return value.decode() if isinstance(value, bytes) else value
