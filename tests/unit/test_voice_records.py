"""shared.voice_records and the model: a voice handoff's record is final at once,
reads back as `kind: voice` without a Conversation, masks the caller, and the
script de-duplicates by CallSid (a request without one is recorded each time)."""

from __future__ import annotations

import json
import time

from shared import redis_keys
from shared.model import KIND_VOICE, HandoverRecord, HandoverRequest, Identity, Status
from shared.voice_records import VoiceRecorder, new_voice_record

CALL_SID = "CA" + "3d" * 16
REQUEST = HandoverRequest(
    "",
    Identity("phone", "+14155550123"),
    "billing",
    extra_input={"reason": "refund", "summary": "customer +14155550123 wants money"},
    kind=KIND_VOICE,
    call_sid=CALL_SID,
)


def test_a_voice_record_reads_back_final_without_a_conversation():
    now = time.time()
    fields = new_voice_record("ho_" + "1" * 32, REQUEST, now, "no CallSid; bad +14155550123")
    assert (fields["kind"], fields["state"], fields["call_sid"]) == ("voice", "succeeded", CALL_SID)
    record = HandoverRecord.from_hash(fields)
    assert record.request == REQUEST
    assert record.state is Status.SUCCEEDED and record.finished_at == now
    public = record.to_public()
    assert public["kind"] == "voice" and public["call_sid"] == CALL_SID
    assert public["conversation_sid"] is None
    assert public["identity"] == "phone:+14*******23"
    assert public["problem"] == "no CallSid; bad +14*******23"
    assert "+14155550123" not in json.dumps(public) and "refund" not in json.dumps(public)


def test_an_old_record_without_a_kind_is_a_conversation():
    fields = new_voice_record("ho_" + "2" * 32, REQUEST, time.time(), None)
    del fields["kind"], fields["call_sid"]
    record = HandoverRecord.from_hash({**fields, "conversation_sid": "CH" + "a" * 32})
    assert (record.request.kind, record.request.call_sid, record.problem) == (
        "conversation",
        None,
        None,
    )


async def test_the_same_call_is_recorded_once(redis):
    recorder = VoiceRecorder(redis, 600)
    first = await recorder.record("ho_" + "3" * 32, REQUEST, time.time(), None)
    again = await recorder.record("ho_" + "4" * 32, REQUEST, time.time(), "other")
    assert (first.handover_id, first.created) == ("ho_" + "3" * 32, True)
    assert (again.handover_id, again.created) == ("ho_" + "3" * 32, False)
    assert await redis.exists(redis_keys.handover_key("ho_" + "4" * 32)) == 0
    assert await redis.get(redis_keys.call_key(CALL_SID)) == "ho_" + "3" * 32
    assert 0 < await redis.ttl(redis_keys.handover_key("ho_" + "3" * 32)) <= 600
    assert 0 < await redis.ttl(redis_keys.call_key(CALL_SID)) <= 600
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 0  # no job: Twilio enqueues the call


async def test_without_a_call_sid_every_request_is_its_own_record(redis):
    recorder = VoiceRecorder(redis, 600)
    request = HandoverRequest("", Identity("caller", ""), "default", kind=KIND_VOICE)
    ids = [
        (await recorder.record(f"ho_{n:032x}", request, time.time(), "no CallSid")) for n in (5, 6)
    ]
    assert [found.created for found in ids] == [True, True]
    assert [key async for key in redis.scan_iter(match=redis_keys.CALL_KEY_PREFIX + "*")] == []
