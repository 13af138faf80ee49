"""Every Redis key and queue name the service uses, in one place.

Every key carries one hash tag, `{flex_handover}` (KEY_TAG): the product's keys
through PREFIX, arq's through the job ids (`handover_job_id`, `hand_back_job_id`:
arq names a job's keys `arq:job:<job id>`, ...) and the queue's name, and arq's
one global key (`arq:abort`) is renamed to ARQ_ABORT_KEY by worker/arq_worker.py.
So in Redis Cluster every key is in one slot, and every script and transaction
touches one slot, as the cluster requires: cluster mode buys failover and a
managed service, not sharding (README, "Redis Cluster"). Keys written before the
tag are renamed by shared/key_migration.py.
"""

from __future__ import annotations

import hashlib

from arq.constants import in_progress_key_prefix as ARQ_IN_PROGRESS_PREFIX
from arq.constants import job_key_prefix as ARQ_JOB_PREFIX

KEY_TAG = "{flex_handover}"
PREFIX = KEY_TAG
# What PREFIX was before the hash tag (shared/key_migration.py renames those keys).
LEGACY_PREFIX = "flex_handover"
QUEUE_NAME = f"{PREFIX}:queue"
HANDOVER_FUNCTION = "deliver_handover"
# The job that tells the Conversation its handover ended (`/webhooks/taskrouter`),
# queued once per handover under the job id `hand_back_job_id(handover_id)`.
HAND_BACK_FUNCTION = "hand_back_handover"
HAND_BACK_JOB_PREFIX = f"{KEY_TAG}:hand_back:"
# A handover's delivery job id is HANDOVER_JOB_PREFIX + its handover id.
HANDOVER_JOB_PREFIX = f"{KEY_TAG}:"
# arq's abort set, `arq:abort` in arq, under the tag (worker/arq_worker.py).
ARQ_ABORT_KEY = f"{KEY_TAG}:arq:abort"
HANDOVER_KEY_PREFIX = f"{PREFIX}:handover:"
CONVERSATION_KEY_PREFIX = f"{PREFIX}:conversation:"
CALL_KEY_PREFIX = f"{PREFIX}:call:"
CLAIM_KEY_PREFIX = f"{PREFIX}:claim:"
RATE_KEY_PREFIX = f"{PREFIX}:rate:"
FAILED_INDEX = f"{PREFIX}:failed"
RECENT_INDEX = f"{PREFIX}:recent"
OUTCOMES_PREFIX = f"{PREFIX}:outcomes:"
# A minute's outcome counters live a bit over the hour `GET /handovers/summary` reads.
OUTCOME_BUCKET_SECONDS = 60
OUTCOME_BUCKET_TTL_SECONDS = 3600 + 2 * OUTCOME_BUCKET_SECONDS
RATE_CONVERSATION_PREFIX = RATE_KEY_PREFIX + "conversation:"
RATE_IDENTITY_PREFIX = RATE_KEY_PREFIX + "identity:"
# The token bucket every worker shares for POST /v1/Interactions (FLEX_API_MAX_RPS).
FLEX_API_RATE_KEY = f"{PREFIX}:flex_api_rate"
# Written (with a short PX) by /readyz to learn whether Redis takes writes.
READY_PROBE_KEY = f"{PREFIX}:ready_probe"
# Written before each WAIT (shared/script_batcher.py, ReplicaWait): a counter, no TTL,
# one key whatever the traffic.
REPLICA_WAIT_FENCE = f"{PREFIX}:replica_wait_fence"
# arq's health-check key, one per worker host (container): `flex-handover worker --check`.
WORKER_HEALTH_PREFIX = f"{PREFIX}:worker_health:"
# The operator page's sign-ins (api/ui/sessions.py): a session by its token's hash,
# and the failed sign-ins of one client address in the current minute.
UI_SESSION_PREFIX = f"{PREFIX}:ui_session:"
UI_SIGN_IN_FAILURES_PREFIX = f"{PREFIX}:ui_sign_in_failures:"

__all__ = [
    "ARQ_ABORT_KEY",
    "ARQ_IN_PROGRESS_PREFIX",
    "ARQ_JOB_PREFIX",
    "CALL_KEY_PREFIX",
    "CLAIM_KEY_PREFIX",
    "CONVERSATION_KEY_PREFIX",
    "FAILED_INDEX",
    "FLEX_API_RATE_KEY",
    "HANDOVER_FUNCTION",
    "HANDOVER_JOB_PREFIX",
    "HANDOVER_KEY_PREFIX",
    "HAND_BACK_FUNCTION",
    "HAND_BACK_JOB_PREFIX",
    "KEY_TAG",
    "LEGACY_PREFIX",
    "OUTCOMES_PREFIX",
    "OUTCOME_BUCKET_SECONDS",
    "OUTCOME_BUCKET_TTL_SECONDS",
    "QUEUE_NAME",
    "RATE_CONVERSATION_PREFIX",
    "RATE_IDENTITY_PREFIX",
    "RATE_KEY_PREFIX",
    "READY_PROBE_KEY",
    "RECENT_INDEX",
    "REPLICA_WAIT_FENCE",
    "UI_SESSION_PREFIX",
    "UI_SIGN_IN_FAILURES_PREFIX",
    "WORKER_HEALTH_PREFIX",
    "arq_in_progress_key",
    "arq_job_key",
    "call_key",
    "claim_key",
    "conversation_key",
    "hand_back_job_id",
    "hand_back_job_key",
    "handover_job_id",
    "handover_key",
    "outcome_bucket",
    "outcome_bucket_key",
    "rate_conversation_key",
    "rate_identity_key",
    "ui_session_key",
    "ui_sign_in_failures_key",
    "worker_health_key",
]


def handover_key(handover_id: str) -> str:
    """The status record: a hash holding the request and its outcome."""
    return HANDOVER_KEY_PREFIX + handover_id


# FAILED_INDEX is a sorted set of failed handover ids scored by when they
# failed: the dead letters that `GET /handovers?state=failed` lists.
# RECENT_INDEX is a sorted set of every handover id scored by when it was queued
# (created, or replayed last): what `GET /handovers?state=recent|queued|…` reads
# (shared/handover_list.py). Each new entry prunes a few of the oldest
# (shared/lua/lib/add_recent.lua), the reader drops the expired ones it meets.


def outcome_bucket(timestamp: float) -> int:
    """The start (Unix seconds) of the minute `timestamp` falls in."""
    return int(timestamp // OUTCOME_BUCKET_SECONDS) * OUTCOME_BUCKET_SECONDS


def outcome_bucket_key(bucket_start: int) -> str:
    """A minute's outcome counters: a hash of `succeeded` and `failed` counts, written
    with the final outcome (shared/lua/update.lua, voice_handoff.lua)."""
    return f"{OUTCOMES_PREFIX}{bucket_start}"


def conversation_key(conversation_sid: str) -> str:
    """Points a conversation at its latest handover, for de-duplication."""
    return CONVERSATION_KEY_PREFIX + conversation_sid


def call_key(call_sid: str) -> str:
    """Points a call at its voice handoff, for de-duplication by `CallSid`."""
    return CALL_KEY_PREFIX + call_sid


def handover_job_id(handover_id: str) -> str:
    """The arq job id of a handover's delivery: its handover id under the tag."""
    return HANDOVER_JOB_PREFIX + handover_id


def arq_job_key(handover_id: str) -> str:
    """arq's own job record of the handover's delivery."""
    return ARQ_JOB_PREFIX + handover_job_id(handover_id)


def hand_back_job_id(handover_id: str) -> str:
    """The arq job id of a handover's hand-back: one per handover, so a second
    enqueue would name the same job and queue entry, never a second one."""
    return HAND_BACK_JOB_PREFIX + handover_id


def hand_back_job_key(handover_id: str) -> str:
    """arq's job record of the handover's hand-back job."""
    return ARQ_JOB_PREFIX + hand_back_job_id(handover_id)


def claim_key(conversation_sid: str) -> str:
    """Held by the one run that may call Twilio for this conversation."""
    return CLAIM_KEY_PREFIX + conversation_sid


def arq_in_progress_key(job_id: str) -> str:
    """arq's "this job is running" marker; it expires `recovery_seconds` after start."""
    return ARQ_IN_PROGRESS_PREFIX + job_id


def rate_conversation_key(conversation_sid: str) -> str:
    """Counts new handovers for a conversation in the current window."""
    return RATE_CONVERSATION_PREFIX + conversation_sid


def rate_identity_key(identity: str) -> str:
    """Counts new handovers for a customer; the identity (a phone number, an
    e-mail) is hashed so that no key name holds it."""
    return RATE_IDENTITY_PREFIX + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def worker_health_key(host: str) -> str:
    """arq's health-check record of the worker on `host` (a container's hostname)."""
    return WORKER_HEALTH_PREFIX + host


def ui_session_key(token_digest: str) -> str:
    """An operator page session, named by the sha256 (hex) of its cookie's token: the
    token itself is never stored, so a read of Redis cannot sign anyone in."""
    return UI_SESSION_PREFIX + token_digest


def ui_sign_in_failures_key(client: str) -> str:
    """Counts one client address's failed sign-ins to the operator page in a minute;
    the address is hashed so that no key name holds it."""
    return UI_SIGN_IN_FAILURES_PREFIX + hashlib.sha256(client.encode("utf-8")).hexdigest()[:32]
