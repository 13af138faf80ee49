"""api.taskrouter_events, the pure part: a TaskRouter event's form → the end of a
handover's task, or why it is acknowledged and ignored."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from api.errors import InvalidBody
from api.taskrouter_events import (
    MAX_TASK_ATTRIBUTES_CHARS,
    HandoverEnd,
    Ignored,
    parse_event,
    parse_form,
    task_attributes,
)

FORM = "application/x-www-form-urlencoded"
HANDOVER_ID = "ho_" + "ab" * 16
TASK_SID = "WT" + "cd" * 16
ATTEMPT = "at_0123456789abcdef"


def event(event_type: str = "task.completed", **fields: str) -> dict[str, str]:
    attributes = {"handoverId": HANDOVER_ID, "handoverAttempt": ATTEMPT, "from": "+14155550123"}
    return {
        "EventType": event_type,
        "TaskSid": TASK_SID,
        "TaskAttributes": json.dumps(attributes),
        "TaskAssignmentStatus": "completed",
        **fields,
    }


@pytest.mark.parametrize("event_type", ["task.completed", "task.canceled", "task.deleted"])
def test_each_end_event_of_a_handover_task_is_its_end(event_type):
    assert parse_event(event(event_type)) == HandoverEnd(HANDOVER_ID, event_type, TASK_SID, ATTEMPT)


def test_the_task_sid_is_canonical():
    parsed = parse_event(event(TaskSid="WT" + "CD" * 16))
    assert isinstance(parsed, HandoverEnd) and parsed.task_sid == TASK_SID


@pytest.mark.parametrize(
    "attempt", [None, "", 42, "at_" + "x" * 80, "at 1", "at_1\n", {"id": "at_1"}]
)
def test_a_task_without_a_usable_attempt_id_still_ends_its_handover(attempt):
    attributes: dict[str, object] = {"handoverId": HANDOVER_ID}
    if attempt is not None:
        attributes["handoverAttempt"] = attempt
    parsed = parse_event(event(TaskAttributes=json.dumps(attributes)))
    assert parsed == HandoverEnd(HANDOVER_ID, "task.completed", TASK_SID, None)


@pytest.mark.parametrize(
    "event_type",
    ["task.created", "task.wrapup", "reservation.accepted", "workflow.timeout", "TASK.COMPLETED"],
)
def test_other_event_types_are_ignored(event_type):
    parsed = parse_event(event(event_type))
    assert isinstance(parsed, Ignored) and not parsed.notable
    assert parsed.reason == f"{event_type} does not end a task"


def test_no_event_type_is_ignored():
    assert parse_event({}) == Ignored("the event has no EventType")
    assert parse_event({"EventType": ""}) == Ignored("the event has no EventType")


def test_a_long_event_type_is_cut_in_the_reason():
    parsed = parse_event(event("x" * 10_000))
    assert isinstance(parsed, Ignored) and len(parsed.reason) < 200


@pytest.mark.parametrize("task_sid", [None, "", "WT123", "CH" + "cd" * 16, "WT" + "zz" * 16])
def test_an_end_event_without_a_task_sid_is_ignored_and_notable(task_sid):
    fields = event()
    if task_sid is None:
        del fields["TaskSid"]
    else:
        fields["TaskSid"] = task_sid
    parsed = parse_event(fields)
    assert isinstance(parsed, Ignored) and parsed.notable and "TaskSid" in parsed.reason


def test_a_task_that_is_not_a_handover_is_ignored_quietly():
    parsed = parse_event(event(TaskAttributes=json.dumps({"from": "+14155550123"})))
    assert isinstance(parsed, Ignored) and not parsed.notable
    assert "handoverId" in parsed.reason


@pytest.mark.parametrize(
    "handover_id",
    ["", "ho_123", "ho_" + "AB" * 16, "ho_" + "ab" * 16 + "\n", 7, ["ho_" + "ab" * 16]],
)
def test_a_handover_id_of_the_wrong_shape_is_ignored_and_notable(handover_id):
    parsed = parse_event(event(TaskAttributes=json.dumps({"handoverId": handover_id})))
    assert isinstance(parsed, Ignored) and parsed.notable


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "the event has no TaskAttributes"),
        ("", "the event has no TaskAttributes"),
        ("{not json", "TaskAttributes is not JSON"),
        ("[1, 2]", "TaskAttributes is not a JSON object"),
        ('"ho_' + "ab" * 16 + '"', "TaskAttributes is not a JSON object"),
        ("null", "TaskAttributes is not a JSON object"),
        ("[" * 100_000, f"TaskAttributes is longer than {MAX_TASK_ATTRIBUTES_CHARS} characters"),
        ("[" * 60_000 + "]" * 60_000, None),  # too long as well
    ],
)
def test_task_attributes_that_are_not_a_json_object_are_ignored(raw, reason):
    parsed = task_attributes(raw)
    assert isinstance(parsed, Ignored)
    if reason is not None:
        assert parsed.reason == reason
    assert raw is None or raw == "" or parsed.notable


def test_deeply_nested_attributes_within_the_bound_are_not_json_to_us():
    raw = "[" * 30_000 + "]" * 30_000  # within the bound, deeper than the parser goes
    assert task_attributes(raw) == Ignored("TaskAttributes is not JSON", True)


def test_the_reason_never_holds_the_attributes():
    secret = "+14155550123"
    for raw in (f"{{{secret}", json.dumps([secret]), json.dumps({"handoverId": secret})):
        parsed = parse_event(event(TaskAttributes=raw))
        assert isinstance(parsed, Ignored) and secret not in parsed.reason


# --- the form ---


def test_the_form_is_read_with_the_first_value_of_each_field():
    body = urlencode([("EventType", "task.completed"), ("EventType", "task.created"), ("A", "")])
    assert parse_form(FORM, body.encode()) == {"EventType": "task.completed", "A": ""}


def test_an_empty_body_has_no_fields():
    assert parse_form(FORM, b"") == {}
    assert parse_form("", b"  ") == {}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"EventType": "task.completed"}'),
        (FORM, b'{"EventType": "task.completed"}'),  # a body that opens with { is JSON
        (FORM, b"EventType=task.completed&x=\xff"),
    ],
)
def test_a_body_that_is_not_a_form_is_refused(content_type, body):
    with pytest.raises(InvalidBody):
        parse_form(content_type, body)


def test_a_whole_event_from_its_form():
    body = urlencode(event("task.canceled")).encode()
    assert parse_event(parse_form(FORM, body)) == HandoverEnd(
        HANDOVER_ID, "task.canceled", TASK_SID, ATTEMPT
    )
