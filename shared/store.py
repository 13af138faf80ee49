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

import redis.asyncio as aioredis

from shared import keys
from shared.jobs import HandoverError, HandoverRecord, Status, now

# Update an existing hash only: HDEL, HINCRBY, HSET in one step, then, for a
# final state, refresh the TTL.
# KEYS: the record, the failed index.
# ARGV: TTL seconds (0 keeps it), failed-index score ('' for none: the handover
#       is removed from the index), fields to delete count, those field names,
#       fields to increment by one count, those field names, then field/value pairs.
_UPDATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
for i = 1, n do redis.call('HDEL', KEYS[1], ARGV[3 + i]) end
local m = tonumber(ARGV[4 + n])
for i = 1, m do redis.call('HINCRBY', KEYS[1], ARGV[4 + n + i], 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, 5 + n + m))
if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local id = redis.call('HGET', KEYS[1], 'handover_id')
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], id)
elseif tonumber(ARGV[1]) > 0 then
  redis.call('ZREM', KEYS[2], id)
end
return 1
"""


class HandoverStore:
    def __init__(self, redis: aioredis.Redis, status_ttl_seconds: int):
        self._redis = redis
        self._ttl = status_ttl_seconds
        self._update = redis.register_script(_UPDATE_SCRIPT)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def get(self, handover_id: str) -> HandoverRecord | None:
        data = await self._redis.hgetall(keys.handover_key(handover_id))
        if not data:
            return None
        return HandoverRecord.from_hash(_decoded(data))

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
            {"error": json.dumps(error.to_dict())},
            clear=[] if ambiguous else ["in_flight_since"],
            increment=["ambiguous_attempts"] if ambiguous else [],
        )

    async def count_lookup(self, handover_id: str) -> bool:
        return await self._set(handover_id, {}, increment=["lookups"])

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
                "error": json.dumps(error.to_dict()),
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
        )

    async def mark_failed(self, handover_id: str, error: HandoverError) -> bool:
        timestamp = now()
        return await self._set(
            handover_id,
            {
                "state": Status.FAILED.value,
                "error": json.dumps(error.to_dict()),
                "finished_at": repr(timestamp),
            },
            clear=["next_attempt_at"],
            final=True,
            timestamp=timestamp,
            failed=True,
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
    ) -> bool:
        timestamp = timestamp or now()
        fields = {**fields, "updated_at": repr(timestamp)}
        args: list[str | int] = [
            self._ttl if final else 0,
            repr(timestamp) if failed else "",
            len(clear),
            *clear,
            len(increment),
            *increment,
        ]
        for name, value in fields.items():
            args += (name, value)
        return bool(
            await self._update(keys=[keys.handover_key(handover_id), keys.FAILED_INDEX], args=args)
        )


def _decoded(data: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in data.items()
    }
