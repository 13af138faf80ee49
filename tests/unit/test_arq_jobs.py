"""shared.arq_jobs: the handover's arq job, as JSON that stock arq reads."""

from __future__ import annotations

import json
import pickle

import pytest
from arq.jobs import deserialize_job_raw

from shared import redis_keys
from shared.arq_jobs import hand_back_job, handover_job, job_deserializer, job_serializer
from tests.support.values import CONVERSATION_SID

HANDOVER_ID = "ho_" + "ab" * 16


@pytest.mark.parametrize(
    "job",
    [
        {"t": 1, "f": "deliver_handover", "a": [HANDOVER_ID], "k": {}, "et": 1735732800123},
        {"r": None, "s": True, "st": 1.5, "ft": 2.25, "q": "arq:queue"},
        {"text": "ü €", "nested": {"list": [1, 2.5, None, True]}},
    ],
)
def test_job_serializer_round_trip(job):
    raw = job_serializer(job)
    assert isinstance(raw, bytes)
    assert json.loads(raw.decode("utf-8")) == job  # plain JSON, readable by anyone
    assert not raw.startswith(b"\x80")  # not a pickle
    assert job_deserializer(raw) == job


def test_job_serializer_turns_tuples_into_lists():
    """arq passes positional args as a tuple; after JSON they come back as a list."""
    assert job_deserializer(job_serializer({"a": (HANDOVER_ID,)})) == {"a": [HANDOVER_ID]}


def test_job_serializer_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError):
        job_serializer({"a": [object()]})


def test_job_deserializer_refuses_a_pickle():
    with pytest.raises(ValueError):
        job_deserializer(pickle.dumps({"f": "deliver_handover"}))


def test_the_handover_job_is_what_arq_reads_deliver_handover_with():
    raw = handover_job(HANDOVER_ID, CONVERSATION_SID, 1735732800123)
    assert json.loads(raw) == {
        "t": 1,
        "f": redis_keys.HANDOVER_FUNCTION,
        "a": [HANDOVER_ID, CONVERSATION_SID],
        "k": {},
        "et": 1735732800123,
    }
    assert deserialize_job_raw(raw, deserializer=job_deserializer) == (
        redis_keys.HANDOVER_FUNCTION,
        [HANDOVER_ID, CONVERSATION_SID],
        {},
        1,
        1735732800123,
    )


def test_the_hand_back_job_is_what_arq_reads_hand_back_handover_with():
    raw = hand_back_job(HANDOVER_ID, 1735732800123)
    assert deserialize_job_raw(raw, deserializer=job_deserializer) == (
        redis_keys.HAND_BACK_FUNCTION,
        [HANDOVER_ID],
        {},
        1,
        1735732800123,
    )
    assert redis_keys.hand_back_job_id(HANDOVER_ID) != HANDOVER_ID  # not the delivery job
    assert redis_keys.hand_back_job_key(HANDOVER_ID) == redis_keys.ARQ_JOB_PREFIX + (
        redis_keys.hand_back_job_id(HANDOVER_ID)
    )
