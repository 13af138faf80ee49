"""The operator's lists of handovers: all of them newest first, or those in one state.

Used by `GET /handovers` (`api.admin`) and `flex-handover failed|list`
(`commands.operator_commands`). Two sorted sets index the records:

- RECENT_INDEX: every handover, scored by when it was queued (created, or replayed
  last), written by the script that stores it (shared/lua/lib/add_recent.lua).
- FAILED_INDEX: the failed ones, scored by when they failed (shared/lua/update.lua).

`recent` reads RECENT_INDEX; `failed` reads FAILED_INDEX (newest failure first);
`queued`, `running`, `retrying` and `succeeded` read RECENT_INDEX and keep the
handovers whose record is in that state when it is read: a handover is listed under
the state it has then, whatever it had when it was indexed, and no state change has
an index to keep up (the hot path writes one entry per handover, nothing more).

Bounded work per request: at most MAX_SCAN index entries are looked at. A page that
meets that many before it has `limit` handovers ends there, short or even empty,
with a `next` to go on from; `next` is None only when the index has no more. A
filtered read costs one `HMGET state target` per entry looked at and an `HGETALL`
per handover listed. Entries whose record has expired are dropped from the index as
they are met.

The cursor (`next`, passed back as `before`) is `<score>:<handover id>`: a page
starts just after that entry, so handovers stored meanwhile (scored later) never
shift a later page. Callers treat it as opaque; `parse_cursor` refuses anything
else (but a bare Unix time: what was queued, or failed, before it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import redis_keys
from shared.model import HandoverRecord, Status

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SCAN = 2_000
"""Index entries one page may look at: bounds a filtered page's time."""
RECENT = "recent"
LISTABLE_STATES = (*(status.value for status in Status), RECENT)
MAX_CURSOR_CHARS = 64
# Fewer index entries than this per round trip would make pruning a long run
# of expired ids slow for a small page.
_MIN_BATCH = 50
_HANDOVER_ID = re.compile(r"ho_[0-9a-f]{32}")
_CURSOR_HELP = "The before parameter must be the 'next' value of a previous page, or a Unix time."


@dataclass(frozen=True)
class HandoverPage:
    handovers: list[HandoverRecord]
    next: str | None
    """Pass as `before` for the next (older) page; None when there is none."""


async def list_handovers(
    redis: aioredis.Redis,
    state: str,
    limit: int = DEFAULT_LIMIT,
    before: str | None = None,
    target: str | None = None,
) -> HandoverPage:
    """At most `limit` (capped at MAX_LIMIT) handovers in `state` (one of
    LISTABLE_STATES; `recent`: any), of `target` when given, newest first, after
    the cursor `before`. Raises ValueError for a bad state, limit or cursor."""
    if state not in LISTABLE_STATES:
        raise ValueError(f"state must be one of {', '.join(LISTABLE_STATES)}")
    if limit < 1:
        raise ValueError("limit must be at least 1")
    position = parse_cursor(before) if before else None
    wanted: Status | None = None if state == RECENT else Status(state)
    index = redis_keys.FAILED_INDEX if wanted is Status.FAILED else redis_keys.RECENT_INDEX
    # Nearly every entry of the failed index is failed: read it whole at once.
    look_first = target is not None or (wanted is not None and index != redis_keys.FAILED_INDEX)
    limit = min(limit, MAX_LIMIT)
    found: list[tuple[HandoverRecord, str]] = []
    scanned, exhausted = 0, False
    while len(found) <= limit and scanned < MAX_SCAN:
        wanted_entries = min(max(limit + 1 - len(found), _MIN_BATCH), MAX_SCAN - scanned)
        entries = await _index_entries(redis, index, position, wanted_entries)
        scanned += len(entries)
        if entries:
            position = (entries[-1][1], entries[-1][0])
        ids = [handover_id for handover_id, _ in entries]
        records, expired = await _records(redis, ids, wanted, target, look_first=look_first)
        for (handover_id, score), record in zip(entries, records, strict=True):
            if record is not None and _matches(record, wanted, target):
                found.append((record, format_cursor(score, handover_id)))
        if expired:
            # Safe: nothing re-creates an expired record (ids are never reused).
            await redis.zrem(index, *expired)
        if len(entries) < wanted_entries:
            exhausted = True
            break
    page = found[:limit]
    if len(found) > limit:
        cursor: str | None = page[-1][1]
    elif exhausted or position is None:
        cursor = None
    else:  # MAX_SCAN reached: go on from the last entry looked at
        cursor = format_cursor(position[0], position[1] or "")
    return HandoverPage([record for record, _ in page], cursor)


def format_cursor(score: float, handover_id: str) -> str:
    """`<score>:<id>`: the id breaks ties between equal scores."""
    return f"{score!r}:{handover_id}"


def parse_cursor(cursor: str) -> tuple[float, str | None]:
    """`<score>[:<id>]` → (score, id or None); ValueError if it is anything else."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError(_CURSOR_HELP)
    raw_score, colon, handover_id = cursor.partition(":")
    try:
        score = float(raw_score)
    except ValueError:
        raise ValueError(_CURSOR_HELP) from None
    if not math.isfinite(score):
        raise ValueError("The before parameter must be a finite Unix time.")
    if colon and not _HANDOVER_ID.fullmatch(handover_id):
        raise ValueError(_CURSOR_HELP)
    return score, handover_id or None


def _matches(record: HandoverRecord, wanted: Status | None, target: str | None) -> bool:
    return (wanted is None or record.state is wanted) and (
        target is None or record.request.target == target
    )


async def _records(
    redis: aioredis.Redis,
    ids: Sequence[str],
    wanted: Status | None,
    target: str | None,
    *,
    look_first: bool,
) -> tuple[list[HandoverRecord | None], list[str]]:
    """Each id's record (None when it has expired or, `look_first`, does not
    match: only its state and target were read), and the expired ids."""
    if not ids:
        return [], []
    keys = [redis_keys.handover_key(handover_id) for handover_id in ids]
    fetch = list(ids)
    expired: list[str] = []
    if look_first:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, ["state", "target"])
            heads = await pipe.execute()
        fetch = []
        for handover_id, (state, record_target) in zip(ids, heads, strict=True):
            if state is None:
                expired.append(handover_id)
            elif (wanted is None or _text(state) == wanted.value) and (
                target is None or _text(record_target or "") == target
            ):
                fetch.append(handover_id)
    async with redis.pipeline(transaction=False) as pipe:
        for handover_id in fetch:
            pipe.hgetall(redis_keys.handover_key(handover_id))
        hashes = await pipe.execute()
    read: dict[str, HandoverRecord] = {}
    for handover_id, data in zip(fetch, hashes, strict=True):
        if data:
            read[handover_id] = HandoverRecord.from_hash(
                {_text(k): _text(v) for k, v in data.items()}
            )
        elif not look_first:
            expired.append(handover_id)
    return [read.get(handover_id) for handover_id in ids], expired


async def _index_entries(
    redis: aioredis.Redis, index: str, position: tuple[float, str | None] | None, count: int
) -> list[tuple[str, float]]:
    """Up to `count` (id, score) pairs of `index` after `position`, newest first.

    Entries sharing the cursor's score come in reverse id order, so those with
    an id at or above the cursor's were on earlier pages: skip them.
    """
    if position is None:
        top, skip = "+inf", 0
    else:
        score, last_id = position
        if last_id is None:
            top, skip = f"({score!r}", 0
        else:
            ties = await redis.zrangebyscore(index, score, score)
            top, skip = repr(score), sum(1 for tie in ties if _text(tie) >= last_id)
    entries = await redis.zrevrangebyscore(
        index, top, "-inf", start=skip, num=count, withscores=True
    )
    return [(_text(member), float(score)) for member, score in entries]


def _text(value: str | bytes) -> str:
    """Works with either kind of client: decoded (the service's) or raw (arq's)."""
    return value.decode() if isinstance(value, bytes) else value
