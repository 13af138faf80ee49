"""The status record of a voice handoff (`api.voice`), written in one round trip.

A ConversationRelay handoff is answered with TwiML that enqueues the live call
itself: nothing is left to deliver, so the record is written final (`succeeded`),
with no arq job, and only so that `GET /handovers/{id}`, the operator's lists and
summary, and the TaskRouter hand-back know the handover. The call's pointer (`redis_keys.call_key`) makes a
repeated action request for the same call (Twilio retries a webhook) answer the
first handover id and store nothing new (shared/lua/voice_handoff.lua).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared import lua_scripts, redis_keys
from shared.model import KIND_VOICE, HandoverRequest, Status, new_handover_record
from shared.script_batcher import ScriptBatcher


def voice_script(status_ttl_seconds: int, recent_retention_seconds: int) -> str:
    """shared/lua/voice_handoff.lua with the records' TTL and the recent index's
    retention (`Settings.recent_retention_seconds`) as its constants."""
    return lua_scripts.script(
        "shared",
        "voice_handoff.lua",
        {
            "RECORD_TTL": int(status_ttl_seconds),
            "RECENT_RETENTION": int(recent_retention_seconds),
        },
    )


def new_voice_record(
    handover_id: str, request: HandoverRequest, now: float, problem: str | None
) -> dict[str, str]:
    """The fields of a voice handoff's record: final at once (`finished_at` now)."""
    fields = {
        **new_handover_record(handover_id, request, now),
        "kind": KIND_VOICE,
        "state": Status.SUCCEEDED.value,
        "finished_at": repr(now),
    }
    if problem:
        fields["problem"] = problem
    return fields


@dataclass(frozen=True)
class VoiceRecord:
    """What `VoiceRecorder.record` found: the handover id to answer, and whether
    this request stored it (False: the call's earlier handoff)."""

    handover_id: str
    created: bool


class VoiceRecorder:
    """Writes voice handoffs' records; concurrent ones share a pipeline, each
    still its own script run (`shared.script_batcher`: a caller that stops
    waiting, on the API's short timeout, does not disturb the others)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        status_ttl_seconds: int,
        recent_retention_seconds: int | None = None,
    ):
        """`recent_retention_seconds`: `Settings.recent_retention_seconds` (the
        service passes it; the status TTL without it)."""
        retention = recent_retention_seconds or status_ttl_seconds
        self._script = ScriptBatcher(redis, voice_script(status_ttl_seconds, retention))

    async def record(
        self, handover_id: str, request: HandoverRequest, now: float, problem: str | None
    ) -> VoiceRecord:
        bucket = redis_keys.outcome_bucket(now)
        keys = [
            redis_keys.handover_key(handover_id),
            redis_keys.RECENT_INDEX,
            redis_keys.outcome_bucket_key(bucket),
        ]
        if request.call_sid:
            keys.append(redis_keys.call_key(request.call_sid))
        fields = new_voice_record(handover_id, request, now, problem)
        args = [
            handover_id,
            json.dumps(fields),
            repr(now),
            bucket + redis_keys.OUTCOME_BUCKET_TTL_SECONDS,
        ]
        stored, found = await self._script(keys=keys, args=args)
        return VoiceRecord(_text(found), bool(int(stored)))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
