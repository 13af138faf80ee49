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
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import redis_keys
from shared.model import HandoverError, HandoverRecord, Status, now, truncate_message

# Update an existing hash only: HDEL, HINCRBY, HSET in one step, then, for a
# final state, refresh the TTL. With a third key, also release the run's
# delivery claim (compare-and-delete, as `worker.claim`), whether or not the
# record still exists: the outcome and the claim's end in one round trip.
# A failure also drops from the failed index every entry that failed more than
# a TTL ago: that record has expired (the failure set its TTL, and only a
# replay, which takes it out of the index, sets another), so the index holds
# no more than one TTL's failures without anyone listing it.
# KEYS: the record, the failed index, optionally the claim.
# ARGV: TTL seconds (0 keeps it), failed-index score ('' for none: the handover
#       is removed from the index), the claim's value (unused without the key),
#       fields to delete count, those field names, fields to increment by one
#       count, those field names, then field/value pairs.
# Returns {record updated 0/1, claim released 0/1}.
_UPDATE_SCRIPT = """
local released = 0
if #KEYS > 2 and redis.call('GET', KEYS[3]) == ARGV[3] then
  released = redis.call('DEL', KEYS[3])
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, released} end
local n = tonumber(ARGV[4])
for i = 1, n do redis.call('HDEL', KEYS[1], ARGV[4 + i]) end
local m = tonumber(ARGV[5 + n])
for i = 1, m do redis.call('HINCRBY', KEYS[1], ARGV[5 + n + i], 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, 6 + n + m))
if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local id = redis.call('HGET', KEYS[1], 'handover_id')
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[2]) - tonumber(ARGV[1])))
elseif tonumber(ARGV[1]) > 0 then
  redis.call('ZREM', KEYS[2], id)
end
return {1, released}
"""

# The start of a run, in one step (see `worker.claim`): read the record; unless
# it is missing or final, take the conversation's delivery claim (SET NX PX);
# holding it, mark the record `running` and read it back. The claim key is
# built here from the record's conversation, so this needs a standalone Redis
# (as arq itself does), not a cluster.
# KEYS: the record. ARGV: claim key prefix, the claim's value, claim TTL (ms), now.
# Returns {0} missing, {1, state} final, {2, holder's value or ''} claim busy,
# {3, field, value, ...} held: the record after it was marked running.
_BEGIN_SCRIPT = """
local found = redis.call('HMGET', KEYS[1], 'conversation_sid', 'state')
if not found[1] then return {0} end
if found[2] == 'succeeded' or found[2] == 'failed' then return {1, found[2]} end
local claim = ARGV[1] .. found[1]
if not redis.call('SET', claim, ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {2, redis.call('GET', claim) or ''}
end
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[4])
local record = redis.call('HGETALL', KEYS[1])
table.insert(record, 1, 3)
return record
"""
MISSING, FINAL, CLAIM_BUSY, CLAIM_HELD = 0, 1, 2, 3


@dataclass(frozen=True)
class RunStart:
    """What `HandoverStore.begin_run` found: `outcome` is MISSING, FINAL,
    CLAIM_BUSY or CLAIM_HELD; `record` is set when held, `state` when final,
    `holder` (the claim's value) when busy."""

    outcome: int
    record: HandoverRecord | None = None
    state: Status | None = None
    holder: str | None = None


class HandoverStore:
    def __init__(self, redis: aioredis.Redis, status_ttl_seconds: int):
        self._redis = redis
        self._ttl = status_ttl_seconds
        self._update = redis.register_script(_UPDATE_SCRIPT)
        self._begin = redis.register_script(_BEGIN_SCRIPT)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def get(self, handover_id: str) -> HandoverRecord | None:
        data = await self._redis.hgetall(redis_keys.handover_key(handover_id))
        if not data:
            return None
        return HandoverRecord.from_hash(_decoded(data))

    async def begin_run(
        self, handover_id: str, claim_prefix: str, claim_value: str, claim_ttl_ms: int
    ) -> RunStart:
        """Take the delivery claim and mark the record running, in one round trip;
        a missing or final record takes nothing. `worker.claim` owns the claim."""
        reply = await self._begin(
            keys=[redis_keys.handover_key(handover_id)],
            args=[claim_prefix, claim_value, claim_ttl_ms, repr(now())],
        )
        outcome = int(reply[0])
        if outcome == CLAIM_HELD:
            data = _decoded(dict(zip(reply[1::2], reply[2::2], strict=True)))
            return RunStart(CLAIM_HELD, record=HandoverRecord.from_hash(data))
        if outcome == FINAL:
            return RunStart(FINAL, state=Status(_text(reply[1])))
        if outcome == CLAIM_BUSY:
            return RunStart(CLAIM_BUSY, holder=_text(reply[1]) or None)
        return RunStart(MISSING)

    async def mark_running(self, handover_id: str) -> bool:
        return await self._set(
            handover_id, {"state": Status.RUNNING.value}, clear=["next_attempt_at"]
        )

    async def start_attempt(self, handover_id: str) -> float:
        """Counts the attempt and marks it in flight; returns its `in_flight_since`."""
        timestamp = now()
        await self._set(
            handover_id,
            {"state": Status.RUNNING.value, "in_flight_since": repr(timestamp)},
            clear=["error", "next_attempt_at"],
            increment=["attempts"],
            timestamp=timestamp,
        )
        return timestamp

    async def end_attempt(self, handover_id: str, error: HandoverError, *, ambiguous: bool) -> bool:
        """An attempt failed: if Twilio may still have acted on it, it stays in flight
        and counts as ambiguous; a definite refusal takes it out of flight."""
        return await self._set(
            handover_id,
            {"error": _error_field(error)},
            clear=[] if ambiguous else ["in_flight_since"],
            increment=["ambiguous_attempts"] if ambiguous else [],
        )

    async def count_lookup(self, handover_id: str, next_attempt_at: float | None = None) -> bool:
        """A TaskRouter lookup starts; no request is sent before `next_attempt_at`
        (the end of its grace window)."""
        fields = {} if next_attempt_at is None else {"next_attempt_at": repr(next_attempt_at)}
        return await self._set(handover_id, fields, increment=["lookups"])

    async def settle_in_flight(self, handover_id: str) -> bool:
        """A lookup found no task: the in-flight attempt created nothing."""
        return await self._set(handover_id, {}, clear=["in_flight_since"])

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
        release: ClaimRelease | None = None,
    ) -> bool:
        timestamp = now()
        fields = {
            "state": Status.SUCCEEDED.value,
            "interaction_sid": interaction_sid or "",
            "channel_sid": channel_sid or "",
            "finished_at": repr(timestamp),
        }
        if found_by_lookup:
            fields["found_by_lookup"] = "1"
        return await self._set(
            handover_id,
            fields,
            clear=["error", "next_attempt_at", "in_flight_since"],
            final=True,
            timestamp=timestamp,
            release=release,
        )

    async def mark_failed(
        self, handover_id: str, error: HandoverError, *, release: ClaimRelease | None = None
    ) -> bool:
        timestamp = now()
        return await self._set(
            handover_id,
            {
                "state": Status.FAILED.value,
                "error": _error_field(error),
                "finished_at": repr(timestamp),
            },
            clear=["next_attempt_at"],
            final=True,
            timestamp=timestamp,
            failed=True,
            release=release,
        )

    async def _set(
        self,
        handover_id: str,
        fields: dict[str, str],
        *,
        clear: list[str] = (),  # type: ignore[assignment]
        increment: list[str] = (),  # type: ignore[assignment]
        final: bool = False,
        timestamp: float | None = None,
        failed: bool = False,
        release: ClaimRelease | None = None,
    ) -> bool:
        """Apply the update; True when the record existed. With `release`, the
        claim is released in the same script and `release.released` says whether
        it still was the run's own."""
        timestamp = timestamp or now()
        fields = {**fields, "updated_at": repr(timestamp)}
        args: list[str | int] = [
            self._ttl if final else 0,
            repr(timestamp) if failed else "",
            release.value if release is not None else "",
            len(clear),
            *clear,
            len(increment),
            *increment,
        ]
        for name, value in fields.items():
            args += (name, value)
        script_keys = [redis_keys.handover_key(handover_id), redis_keys.FAILED_INDEX]
        if release is not None:
            script_keys.append(release.key)
        updated, released = await self._update(keys=script_keys, args=args)
        if release is not None:
            release.released = bool(released)
        return bool(updated)


@dataclass
class ClaimRelease:
    """A delivery claim to release (compare-and-delete) with a final write."""

    key: str
    value: str
    released: bool | None = None
    """After the write: whether the claim was still the run's own and is gone."""


def _error_field(error: HandoverError) -> str:
    """The stored `error`: its message cut to MAX_ERROR_MESSAGE_CHARS here too,
    so no path can write upstream text of any size into a record."""
    return json.dumps({**error.to_dict(), "message": truncate_message(error.message)})


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decoded(data: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in data.items()
    }
