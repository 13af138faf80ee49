"""The handover's arq jobs (delivery, hand-back) and the JSON arq reads and writes them as.

arq pickles jobs by default: a pickle runs code when it is read, so anyone able to
write to Redis could run code in the worker. Every arq client and worker here reads
and writes JSON instead (`job_serializer`, `job_deserializer`).

The delivery job carries the handover id and its conversation SID: the request itself lives
in the status record, so arq's job log lines never hold a phone number, and there is
one place to read a handover from; the conversation names the delivery claim the
run takes before it reads the record (`worker.claim`). The hand-back job carries
the handover id alone: what ended it is in the record (`ended_*`).
"""

from __future__ import annotations

import json
from typing import Any

from arq.jobs import serialize_job

from shared import redis_keys
from shared.json_text import json_bytes

# arq counts a job's tries from the one its record carries.
FIRST_TRY = 1


def job_serializer(data: dict[str, Any]) -> bytes:
    """arq's job serializer: JSON, never pickle (a Redis writer must not run code)."""
    return json_bytes(data)


def job_deserializer(raw: bytes) -> dict[str, Any]:
    job: dict[str, Any] = json.loads(raw)  # only ever job_serializer's output
    return job


def handover_job(handover_id: str, conversation_sid: str, enqueue_ms: int) -> bytes:
    """The job record arq's worker reads: `deliver_handover(handover_id,
    conversation_sid)`, its first try, enqueued at `enqueue_ms`."""
    return serialize_job(
        redis_keys.HANDOVER_FUNCTION,
        (handover_id, conversation_sid),
        {},
        FIRST_TRY,
        enqueue_ms,
        serializer=job_serializer,
    )


def hand_back_job(handover_id: str, enqueue_ms: int) -> bytes:
    """The job record of `hand_back_handover(handover_id)`: tell the Conversation
    the agent's task ended (queued by `/webhooks/taskrouter`), first try."""
    return serialize_job(
        redis_keys.HAND_BACK_FUNCTION,
        (handover_id,),
        {},
        FIRST_TRY,
        enqueue_ms,
        serializer=job_serializer,
    )
