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

from shared import lua_scripts, redis_keys
from shared.arq_jobs import handover_job
from shared.model import HandoverRecord, Status, now
from shared.settings import Settings

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Fewer index entries than this per round trip would make pruning a long run
# of expired ids slow for a small page.
_MIN_BATCH = 50
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


@dataclass(frozen=True)
class FailedPage:
    handovers: list[HandoverRecord]
    next: str | None
    """Pass as `before` for the next (older) page; None on the last page."""


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
            conversation_sid = await cast(  # redis-py types asyncio commands as sync-or-async
                Awaitable[str | None], self._redis.hget(record_key, "conversation_sid")
            )
            keys = [
                record_key,
                redis_keys.FAILED_INDEX,
                redis_keys.arq_job_key(handover_id),
                redis_keys.QUEUE_NAME,
                redis_keys.arq_in_progress_key(handover_id),
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


async def list_failed(redis: aioredis.Redis, limit: int, before: str | None = None) -> FailedPage:
    """Failed handovers, newest failure first, at most `limit` (capped at
    MAX_LIMIT) of them.

    `before` is a cursor from a previous page's `next`, or a Unix time (only
    handovers that failed before it). Index entries whose record has expired
    are dropped from the index as they are met. Raises ValueError for a
    `before` that is neither.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    limit = min(limit, MAX_LIMIT)
    position = parse_cursor(before) if before else None
    found: list[tuple[HandoverRecord, str]] = []
    while len(found) <= limit:
        wanted = max(limit + 1 - len(found), _MIN_BATCH)
        entries = await _index_entries(redis, position, wanted)
        if not entries:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for handover_id, _ in entries:
                pipe.hgetall(redis_keys.handover_key(handover_id))
            hashes = await pipe.execute()
        expired = []
        for (handover_id, score), data in zip(entries, hashes, strict=True):
            if not data:
                expired.append(handover_id)
                continue
            record = HandoverRecord.from_hash({_text(k): _text(v) for k, v in data.items()})
            # Replayed since the index was read: it is no dead letter now.
            if record.state is Status.FAILED:
                found.append((record, format_cursor(score, handover_id)))
        if expired:
            # Safe: nothing re-creates an expired record (ids are never reused).
            await redis.zrem(redis_keys.FAILED_INDEX, *expired)
        if len(entries) < wanted:
            break
        position = (entries[-1][1], entries[-1][0])
    page = found[:limit]
    more = len(found) > limit
    return FailedPage([record for record, _ in page], page[-1][1] if more else None)


def format_cursor(score: float, handover_id: str) -> str:
    """`<failure time>:<id>`: the id breaks ties between equal failure times."""
    return f"{score!r}:{handover_id}"


def parse_cursor(cursor: str) -> tuple[float, str | None]:
    """`<failure time>[:<id>]` → (time, id or None); ValueError if malformed."""
    raw_score, _, handover_id = cursor.partition(":")
    try:
        score = float(raw_score)
    except ValueError:
        raise ValueError(
            "The before parameter must be the 'next' value of a previous page, or a Unix time."
        ) from None
    if not math.isfinite(score):
        raise ValueError("The before parameter must be a finite Unix time.")
    return score, handover_id or None


async def _index_entries(
    redis: aioredis.Redis, position: tuple[float, str | None] | None, count: int
) -> list[tuple[str, float]]:
    """Up to `count` (id, failure time) pairs after `position`, newest first.

    Entries sharing the cursor's time come in reverse id order, so those with
    an id at or above the cursor's were on earlier pages: skip them.
    """
    if position is None:
        top, skip = "+inf", 0
    else:
        score, last_id = position
        if last_id is None:
            top, skip = f"({score!r}", 0
        else:
            ties = await redis.zrangebyscore(redis_keys.FAILED_INDEX, score, score)
            top, skip = repr(score), sum(1 for tie in ties if _text(tie) >= last_id)
    entries = await redis.zrevrangebyscore(
        redis_keys.FAILED_INDEX, top, "-inf", start=skip, num=count, withscores=True
    )
    return [(_text(member), float(score)) for member, score in entries]


def _text(value: str | bytes) -> str:
    """Works with either kind of client: decoded (the service's) or raw (arq's)."""
    return value.decode() if isinstance(value, bytes) else value
