"""shared.model: the status record and its public view."""

from __future__ import annotations

import json
import re

import pytest

from shared.model import (
    HandoverError,
    HandoverRecord,
    HandoverRequest,
    Identity,
    Status,
    new_handover_id,
    new_handover_record,
)
from tests.support.values import CONVERSATION_SID

INTERACTION_SID = "KD" + "11" * 16
CHANNEL_SID = "UO" + "22" * 16
HANDOVER_ID = "ho_" + "ab" * 16
CREATED_AT = 1735732800.123456  # 2025-01-01T12:00:00.123456Z


def make_request(identity: str = "whatsapp:+14155550123") -> HandoverRequest:
    return HandoverRequest(
        CONVERSATION_SID,
        Identity.parse(identity),
        "billing",
        {"reason": "wants a refund", "priority": 5, "customer_name": "Ada"},
        {"order": {"id": 123, "items": ["a", "ü"]}},
    )


@pytest.mark.parametrize(
    "raw, trait, value",
    [
        ("whatsapp:+14155550123", "whatsapp", "+14155550123"),
        ("user_id:foo:bar", "user_id", "foo:bar"),
        ("email:", "email", ""),
        ("no-colon", "no-colon", ""),
        (":value", "", "value"),
        ("", "", ""),
    ],
)
def test_identity_parse_splits_on_the_first_colon(raw, trait, value):
    identity = Identity.parse(raw)
    assert (identity.trait, identity.value) == (trait, value)
    if ":" in raw:
        assert str(identity) == raw


def test_status_names_are_the_states_a_record_stores():
    """The record's `state` field and the public view carry these names."""
    assert [status.value for status in Status] == [
        "queued",
        "running",
        "retrying",
        "succeeded",
        "failed",
    ]
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    for status in Status:
        assert Status(status.value) is status
        record = HandoverRecord.from_hash({**fields, "state": status.value})
        assert record.state is status and record.to_public()["state"] == status.value


def test_new_handover_record_is_all_strings_and_queued():
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["state"] == "queued" and fields["attempts"] == "0"
    assert fields["identity"] == "whatsapp:+14155550123"
    assert json.loads(fields["tool_input"]) == make_request().tool_input
    assert float(fields["created_at"]) == CREATED_AT == float(fields["updated_at"])


def test_from_hash_round_trips_a_new_record():
    request = make_request("user_id:foo:bar")
    record = HandoverRecord.from_hash(new_handover_record(HANDOVER_ID, request, CREATED_AT))
    assert record == HandoverRecord(
        handover_id=HANDOVER_ID,
        request=request,
        state=Status.QUEUED,
        attempts=0,
        created_at=CREATED_AT,
        updated_at=CREATED_AT,
    )


def test_from_hash_reads_the_fields_the_worker_adds():
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    error = HandoverError("Twilio answered 429: slow down", 429, 20429)
    fields.update(
        state="succeeded",
        attempts="3",
        updated_at=repr(CREATED_AT + 5),
        finished_at=repr(CREATED_AT + 5.5),
        interaction_sid=INTERACTION_SID,
        channel_sid=CHANNEL_SID,
        error=json.dumps(error.to_dict()),
        next_attempt_at=repr(CREATED_AT + 2),
    )
    record = HandoverRecord.from_hash(fields)
    assert (record.state, record.attempts) == (Status.SUCCEEDED, 3)
    assert (record.interaction_sid, record.channel_sid) == (INTERACTION_SID, CHANNEL_SID)
    assert record.error == error
    assert (record.updated_at, record.finished_at, record.next_attempt_at) == (
        CREATED_AT + 5,
        CREATED_AT + 5.5,
        CREATED_AT + 2,
    )


def test_from_hash_treats_empty_optional_fields_as_unset():
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    fields.update(attempts="", interaction_sid="", channel_sid="", error="", finished_at="")
    del fields["tool_input"], fields["extra_input"]
    record = HandoverRecord.from_hash(fields)
    assert record.attempts == 0
    assert (record.interaction_sid, record.channel_sid, record.error, record.finished_at) == (
        None,
        None,
        None,
        None,
    )
    assert (record.request.tool_input, record.request.extra_input) == ({}, {})


@pytest.mark.parametrize(
    "identity, masked, hidden",
    [
        ("whatsapp:+14155550123", "whatsapp:+14*******23", "+14155550123"),
        ("phone:+447911123456", "phone:+44********56", "+447911123456"),
        ("email:ada.lovelace@example.com", "email:a***@example.com", "ada.lovelace"),
        ("user_id:customer-4711", "user_id:cu*********11", "customer-4711"),
    ],
)
def test_to_public_hides_the_customer(identity, masked, hidden):
    record = HandoverRecord.from_hash(
        new_handover_record(HANDOVER_ID, make_request(identity), CREATED_AT)
    )
    public = record.to_public()
    assert public["identity"] == masked
    assert hidden not in json.dumps(public)
    # No tool input either: it may hold anything the model wrote.
    assert "wants a refund" not in json.dumps(public) and "Ada" not in json.dumps(public)


def test_to_public_fields():
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    fields.update(
        state="failed",
        attempts="2",
        finished_at=repr(CREATED_AT + 1.5),
        error=json.dumps({"status": 400, "code": 20001, "message": "bad channel"}),
        ambiguous_attempts="1",
        lookups="3",
        replays="1",
        replayed_at=repr(CREATED_AT + 1.0),
        channel_status="failed",
        channel_failures="2",
        channel_error=json.dumps(
            {"code": 19025, "message": "bad +14155550123", "interaction_sid": "KD" + "1" * 32}
        ),
        aftercare="done",
        conversation_marked="0",
        removed_webhooks=json.dumps(
            [{"sid": "WH" + "2" * 32, "target": "webhook", "url": "https://bot.example/in?key=s3"}]
        ),
        fallback_message_sid="IM" + "3" * 32,
        aftercare_error="reading the Conversation failed: Twilio answered 503",
        ended_at=repr(CREATED_AT + 60.0),
        ended_by="task.completed",
        handed_back="1",
    )
    record = HandoverRecord.from_hash(fields)
    assert record.deadline_from == CREATED_AT + 1.0
    assert record.to_public() == {
        "handover_id": HANDOVER_ID,
        "kind": "conversation",
        "conversation_sid": CONVERSATION_SID,
        "call_sid": None,
        "identity": "whatsapp:+14*******23",
        "target": "billing",
        "state": "failed",
        "attempts": 2,
        "ambiguous_attempts": 1,
        "lookups": 3,
        "replays": 1,
        "found_by_lookup": False,
        "interaction_sid": None,
        "channel_sid": None,
        "channel_status": "failed",
        "channel_failures": 2,
        "channel_error": {
            "code": 19025,
            "message": "bad +14*******23",
            "interaction_sid": "KD" + "1" * 32,
        },
        "error": {"status": 400, "code": 20001, "message": "bad channel"},
        "next_attempt_at": None,
        "created_at": "2025-01-01T12:00:00.123+00:00",
        "updated_at": "2025-01-01T12:00:00.123+00:00",
        "finished_at": "2025-01-01T12:00:01.623+00:00",
        "replayed_at": "2025-01-01T12:00:01.123+00:00",
        "aftercare": "done",
        "conversation_marked": False,
        # The query string may carry the bot's token: not shown.
        "removed_webhooks": [
            {"sid": "WH" + "2" * 32, "target": "webhook", "url": "https://bot.example/in"}
        ],
        "fallback_message_sid": "IM" + "3" * 32,
        "aftercare_error": "reading the Conversation failed: Twilio answered 503",
        "ended_at": "2025-01-01T12:01:00.123+00:00",
        "ended_by": "task.completed",
        "handed_back": True,
        "restored_webhooks": 0,
        "problem": None,
    }


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://user:s3cret@bot.example/x", "https://bot.example/x"),
        ("https://s3cret@bot.example/x?key=s3cret#s3cret", "https://bot.example/x"),
        ("https://user:s3cret@Bot.Example:8443/in/hook", "https://bot.example:8443/in/hook"),
        ("http://user:s3cret@[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
        ("https://a:b@c:s3cret@bot.example/", "https://bot.example/"),
        ("https://bot.example", "https://bot.example"),
        # Nothing a host can be read from: nothing is shown.
        ("user:s3cret@bot.example/x", None),
        ("https://user:s3cret@bot.example:port/x", None),
        ("https://user:s3cret@[::1/x", None),
        ("", None),
    ],
)
def test_to_public_shows_a_removed_webhook_without_credentials(url, shown):
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    fields["removed_webhooks"] = json.dumps(
        [{"sid": "WH" + "2" * 32, "target": "webhook", "url": url}]
    )

    public = HandoverRecord.from_hash(fields).to_public()

    assert public["removed_webhooks"] == [
        {"sid": "WH" + "2" * 32, "target": "webhook", "url": shown}
    ]
    assert "s3cret" not in json.dumps(public)


def test_to_public_masks_a_phone_number_or_email_in_the_error_message():
    fields = new_handover_record(HANDOVER_ID, make_request(), CREATED_AT)
    message = "Twilio answered 400: from whatsapp:+14155550123 (ada@example.com) is invalid"
    fields.update(state="failed", error=json.dumps(HandoverError(message, 400, 20001).to_dict()))
    record = HandoverRecord.from_hash(fields)
    assert record.error.message == message  # the stored record keeps the detail
    assert record.to_public()["error"] == {
        "status": 400,
        "code": 20001,
        "message": "Twilio answered 400: from whatsapp:+14*******23 (a***@example.com) is invalid",
    }


def test_handover_error_from_dict_tolerates_missing_keys():
    assert HandoverError.from_dict({}) == HandoverError("", None, None)
    error = HandoverError("x", 503, None)
    assert HandoverError.from_dict(error.to_dict()) == error


def test_new_handover_id_shape_and_uniqueness():
    ids = {new_handover_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"ho_[0-9a-f]{32}", handover_id) for handover_id in ids)
