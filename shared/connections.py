"""Redis connections and the enqueue path.

A tool call is acknowledged only after one Lua script has, atomically:
de-duplicated against the conversation's latest handover, written the status
record (`queued`), written an arq-compatible job record and added it to the
queue. One round trip, and no half-stored handover if Redis goes away.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.constants import expires_extra_ms

from shared import keys
from shared.jobs import (
    HandoverRequest,
    Status,
    arq_job,
    new_handover_id,
    new_handover_record,
    now,
)
from shared.settings import Settings

REDIS_CONNECT_TIMEOUT_SECONDS = 2.0
REDIS_COMMAND_TIMEOUT_SECONDS = 5.0

# KEYS: conversation pointer, new status record, arq job record, arq queue.
# ARGV: handover id, job bytes, queue score (ms), job TTL (ms), record TTL (s),
#       pointer TTL (s), now (s), dedup window (s), status key prefix,
#       then the status record's field/value pairs.
ENQUEUE_SCRIPT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  local current = redis.call('HMGET', ARGV[9] .. existing, 'state', 'finished_at')
  local state = current[1]
  if state == 'queued' or state == 'running' or state == 'retrying' then
    return {0, existing, state}
  end
  if state == 'succeeded'
     and tonumber(ARGV[7]) - tonumber(current[2] or '0') < tonumber(ARGV[8]) then
    return {0, existing, state}
  end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6])
redis.call('PSETEX', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {1, ARGV[1], 'queued'}
"""


@dataclass(frozen=True)
class EnqueueResult:
    handover_id: str
    created: bool
    state: Status


def create_redis(url: str) -> aioredis.Redis:
    """A pooled client with bounded waits, so a dead Redis turns into a fast 503."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=REDIS_COMMAND_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


def arq_redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = int(REDIS_CONNECT_TIMEOUT_SECONDS)
    settings.conn_retries = 5
    settings.conn_retry_delay = 1
    return settings


class Enqueuer:
    """Stores handover requests as arq jobs; what `POST /tools/flex-handover` calls."""

    def __init__(self, redis: aioredis.Redis, settings: Settings):
        self._script = redis.register_script(ENQUEUE_SCRIPT)
        self._settings = settings

    async def enqueue(self, request: HandoverRequest) -> EnqueueResult:
        """Store a new handover, or return the conversation's live one."""
        handover_id = new_handover_id()
        timestamp = now()
        enqueue_ms = int(timestamp * 1000)
        job = arq_job(keys.HANDOVER_FUNCTION, handover_id, enqueue_ms)
        record = new_handover_record(handover_id, request, timestamp)
        settings = self._settings
        args: list[str | bytes | int | float] = [
            handover_id,
            job,
            enqueue_ms,
            expires_extra_ms,
            settings.status_ttl_seconds,
            settings.dedup_key_ttl_seconds,
            repr(timestamp),
            settings.dedup_seconds,
            keys.HANDOVER_KEY_PREFIX,
        ]
        for name, value in record.items():
            args += (name, value)
        created, found_id, state = await self._script(
            keys=[
                keys.conversation_key(request.conversation_sid),
                keys.handover_key(handover_id),
                keys.arq_job_key(handover_id),
                keys.QUEUE_NAME,
            ],
            args=args,
        )
        return EnqueueResult(found_id, bool(created), Status(state))
