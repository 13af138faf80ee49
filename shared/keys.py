"""Every Redis key and queue name the service uses, in one place."""

from __future__ import annotations

from arq.constants import job_key_prefix as ARQ_JOB_PREFIX

PREFIX = "flex_handover"
QUEUE_NAME = f"{PREFIX}:queue"
HANDOVER_FUNCTION = "deliver_handover"
HANDOVER_KEY_PREFIX = f"{PREFIX}:handover:"
CONVERSATION_KEY_PREFIX = f"{PREFIX}:conversation:"

__all__ = [
    "ARQ_JOB_PREFIX",
    "CONVERSATION_KEY_PREFIX",
    "HANDOVER_FUNCTION",
    "HANDOVER_KEY_PREFIX",
    "QUEUE_NAME",
    "arq_job_key",
    "conversation_key",
    "handover_key",
]


def handover_key(handover_id: str) -> str:
    """The status record: a hash holding the request and its outcome."""
    return HANDOVER_KEY_PREFIX + handover_id


def conversation_key(conversation_sid: str) -> str:
    """Points a conversation at its latest handover, for de-duplication."""
    return CONVERSATION_KEY_PREFIX + conversation_sid


def arq_job_key(handover_id: str) -> str:
    """arq's own job record; the arq job id is the handover id."""
    return ARQ_JOB_PREFIX + handover_id
