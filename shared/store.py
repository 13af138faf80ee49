"""Reads and writes the status record after the API has created it.

Writes only touch fields of a record that exists, so a late write never
resurrects a handover whose record has expired.
"""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from shared import keys
from shared.jobs import HandoverError, HandoverRecord, Status, now

# Update an existing hash only: HSET then, for a final state, refresh the TTL.
# KEYS: the record, the failed index.
# ARGV: TTL seconds (0 keeps it), failed-index score ('' for none: the handover
#       is removed from the index), fields to delete count, those field names,
#       then field/value pairs.
_UPDATE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
for i = 1, n do redis.call('HDEL', KEYS[1], ARGV[3 + i]) end
redis.call('HSET', KEYS[1], unpack(ARGV, 4 + n))
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

    async def get(self, handover_id: str) -> HandoverRecord | None:
        data = await self._redis.hgetall(keys.handover_key(handover_id))
        if not data:
            return None
        return HandoverRecord.from_hash(_decoded(data))

    async def mark_running(self, handover_id: str) -> bool:
        return await self._set(handover_id, {"state": Status.RUNNING.value}, clear=["next_attempt_at"])

    async def count_attempt(self, handover_id: str) -> int:
        return int(await self._redis.hincrby(keys.handover_key(handover_id), "attempts", 1))

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
        self, handover_id: str, interaction_sid: str, channel_sid: str | None
    ) -> bool:
        timestamp = now()
        return await self._set(
            handover_id,
            {
                "state": Status.SUCCEEDED.value,
                "interaction_sid": interaction_sid,
                "channel_sid": channel_sid or "",
                "finished_at": repr(timestamp),
            },
            clear=["error", "next_attempt_at"],
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
