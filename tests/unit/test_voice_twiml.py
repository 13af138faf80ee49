"""api.voice_twiml: the action request read, HandoffData bounded and made JSON-safe,
and TwiML that parses back to exactly the Enqueue/Task (or Say/Hangup) it should be,
whatever the agent wrote."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.voice import caller_identity
from api.voice_twiml import (
    MAX_HANDOFF_DATA_BYTES,
    TEXT_ATTRIBUTE,
    enqueue_twiml,
    goodbye_twiml,
    json_safe,
    parse_handoff_data,
    pick_target,
    read_action,
    task_attributes,
    task_json,
)
from shared.model import Identity
from shared.settings import Target
from tests.support.twiml import enqueued, goodbye, parse
from tests.support.values import BILLING_WORKFLOW_SID, WORKFLOW_SID

CALL_SID = "CA" + "9f" * 16
HANDOVER_ID = "ho_" + "ab" * 16
BILLING = Target(
    "billing",
    BILLING_WORKFLOW_SID,
    priority=5,
    attributes=MappingProxyType({"department": "billing", "handoverId": "not ours"}),
    voice_timeout=600,
    wait_url="https://hold.example.com/music?x=1&y=2",
)
PLAIN = Target("default", WORKFLOW_SID)


def build(target: Target, data: dict[str, Any] | str) -> tuple[dict, dict, dict]:
    raw = data if isinstance(data, str) else json.dumps(data)
    handoff = parse_handoff_data(raw)
    attributes = task_attributes(target, HANDOVER_ID, CALL_SID, "+14155550123", handoff.fields)
    return enqueued(enqueue_twiml(target, attributes))


# --- the TwiML ------------------------------------------------------------------------


def test_the_enqueue_names_the_workflow_wait_url_priority_and_timeout():
    enqueue, task, attributes = build(BILLING, {"reason": "refund", "summary": "wants money"})
    assert enqueue == {"workflowSid": BILLING_WORKFLOW_SID, "waitUrl": BILLING.wait_url}
    assert task == {"priority": "5", "timeout": "600"}
    assert attributes == {
        "department": "billing",
        "reason": "refund",
        "summary": "wants money",
        "from": "+14155550123",
        "callSid": CALL_SID,
        "channelType": "voice",
        "handoverId": HANDOVER_ID,  # ours wins over the target's
        "handoverTarget": "billing",
    }


def test_a_target_without_voice_keys_leaves_the_optional_attributes_out():
    enqueue, task, _ = build(PLAIN, {"reason": "r"})
    assert enqueue == {"workflowSid": WORKFLOW_SID}
    assert task == {}


@pytest.mark.parametrize(
    "text",
    [
        "</Task><Hangup/>",
        "</Task></Enqueue><Dial>+19005550000</Dial><Enqueue>",
        "<![CDATA[x]]> &amp; &lt; ]]>",
        "quotes \" ' and \\ backslash",
        "unicode: é ß ☎ 中文 \U0001f600 \u2028 \u2029 \ufeff",
        "control \x00\x01\x1f\x7f characters",
    ],
)
def test_what_the_agent_writes_stays_text_inside_the_task(text):
    _, _, attributes = build(PLAIN, {"reason": text, "summary": {"nested": [text, 1.5, None]}})
    assert attributes["reason"] == text
    assert attributes["summary"] == {"nested": [text, 1.5, None]}


def test_the_task_json_is_ascii_so_the_xml_carries_it_unchanged():
    handoff = parse_handoff_data(json.dumps({"reason": "☎ </Task>"}))
    attributes = task_attributes(PLAIN, HANDOVER_ID, CALL_SID, "+1", handoff.fields)
    twiml = enqueue_twiml(PLAIN, attributes)
    assert twiml.isascii()
    assert "</Task>" not in twiml.split("<Task>", 1)[1][: -len("</Task></Enqueue></Response>")]
    assert parse(twiml).find("Enqueue/Task").text == task_json(attributes)  # type: ignore[union-attr]


def test_goodbye_says_the_message_and_hangs_up():
    twiml = goodbye_twiml('Bye <now> & "thanks" \x01 ☎')
    assert goodbye(twiml) == 'Bye <now> & "thanks"  ☎'  # the control character cannot be XML
    hangup = parse(twiml)[1]
    assert len(hangup) == 0 and not hangup.text


def test_a_wait_url_with_characters_xml_cannot_hold_still_makes_a_valid_document():
    target = Target("odd", WORKFLOW_SID, wait_url='https://x.example/\ud800?a=<b>&c="d"')
    enqueue, _, _ = enqueued(enqueue_twiml(target, {"a": 1}))
    assert enqueue["waitUrl"] == 'https://x.example/?a=<b>&c="d"'


def test_target_attributes_that_are_not_json_safe_are_left_out():
    target = Target("t", WORKFLOW_SID, attributes=MappingProxyType({"n": float("nan"), "k": 1}))
    _, _, attributes = build(target, {"reason": "r"})
    assert "n" not in attributes and attributes["k"] == 1


# --- HandoffData ------------------------------------------------------------------------


def test_a_json_object_becomes_fields_without_problems():
    handoff = parse_handoff_data('{"reason": "refund", "order": 42, "tags": ["a"]}')
    assert handoff.fields == {"reason": "refund", "order": 42, "tags": ["a"]}
    assert handoff.problems == ()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("transfer me please", "HandoffData is not JSON"),
        ('{"reason": "unterminated', "HandoffData is not JSON"),
        ('["a", "list"]', "HandoffData is not a JSON object"),
        ('"a string"', "HandoffData is not a JSON object"),
        ("[" * 100_000, "HandoffData is not JSON"),  # too deep for the parser
        ("1" * 5000, "HandoffData is not JSON"),  # past Python's integer digits limit
    ],
)
def test_anything_but_a_json_object_is_kept_as_text_and_the_problem_said(raw, problem):
    handoff = parse_handoff_data(raw)
    assert list(handoff.fields) == [TEXT_ATTRIBUTE]
    assert raw.startswith(handoff.fields[TEXT_ATTRIBUTE].removesuffix("… [cut off]"))
    assert handoff.problems[0] == f"{problem}: kept as text under {TEXT_ATTRIBUTE}"
    assert len(task_json(handoff.fields)) <= MAX_HANDOFF_DATA_BYTES


def test_keys_that_are_not_json_safe_or_are_ours_are_dropped_and_named():
    raw = (
        '{"nan": NaN, "inf": 1e400, "surrogate": "\\ud800", "\\udfff": 1, "": 2, '
        '"ctrl\\u0001": 3, "deep": ' + "[" * 40 + "]" * 40 + ', "handoverId": "x", '
        '"from": "+1", "ok": "yes"}'
    )
    handoff = parse_handoff_data(raw)
    assert handoff.fields == {"ok": "yes"}
    unsafe, ours = handoff.problems
    for key in ("nan", "inf", "surrogate", "deep"):
        assert repr(key) in unsafe
    assert "'handoverId'" in ours and "'from'" in ours
    json.loads(task_json(handoff.fields))  # and what is left is JSON any parser takes


def test_a_huge_handoff_keeps_reason_and_summary_first_within_the_bound():
    data = {
        "notes": "n" * 50_000,
        "transcript": ["line"] * 5_000,
        "reason": "refund",
        "summary": "s" * 20_000,
        "tier": "gold",
    }
    handoff = parse_handoff_data(json.dumps(data))
    assert len(task_json(handoff.fields)) <= MAX_HANDOFF_DATA_BYTES
    assert list(handoff.fields)[:2] == ["reason", "summary"]
    assert handoff.fields["reason"] == "refund"
    assert handoff.fields["summary"].startswith("sss") and handoff.fields["summary"].endswith(
        "… [cut off]"
    )
    assert "transcript" not in handoff.fields and "notes" not in handoff.fields
    (problem,) = handoff.problems
    assert problem.startswith(f"HandoffData over {MAX_HANDOFF_DATA_BYTES} bytes")
    assert "'summary'" in problem and "'transcript'" in problem


def test_unicode_is_measured_as_the_escapes_that_are_sent():
    handoff = parse_handoff_data(json.dumps({"reason": "☎" * 5000}))
    assert len(task_json(handoff.fields)) <= MAX_HANDOFF_DATA_BYTES
    assert handoff.fields["reason"].startswith("☎☎")


def test_the_problem_text_is_bounded_whatever_the_keys():
    data = {f"k{i}" + "x" * 500: float("nan") for i in range(200)}
    raw = json.dumps(data)  # NaN is written as NaN: not JSON-safe
    handoff = parse_handoff_data(raw)
    assert handoff.fields == {}
    assert len(handoff.problems[0]) < 1200 and "and 190 more" in handoff.problems[0]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.text(), json_values, max_size=8), reason=st.text())
def test_property_every_handoff_gives_a_valid_bounded_enqueue(data, reason):
    data["reason"] = reason
    raw = json.dumps(data)  # NaN / Infinity included, as a sloppy agent may send
    handoff = parse_handoff_data(raw, limit=1024)
    assert len(task_json(handoff.fields)) <= 1024
    assert json_safe(handoff.fields)
    attributes = task_attributes(BILLING, HANDOVER_ID, CALL_SID, "+1", handoff.fields)
    _, _, sent = enqueued(enqueue_twiml(BILLING, attributes))
    assert sent["handoverId"] == HANDOVER_ID and sent["channelType"] == "voice"


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=3000))
def test_property_any_text_gives_a_valid_enqueue(raw):
    handoff = parse_handoff_data(raw, limit=512)
    assert len(task_json(handoff.fields)) <= 512
    enqueued(enqueue_twiml(PLAIN, task_attributes(PLAIN, HANDOVER_ID, None, "", handoff.fields)))


@settings(max_examples=100, deadline=None)
@given(message=st.text())
def test_property_any_goodbye_message_gives_a_valid_document(message):
    goodbye(goodbye_twiml(message))


# --- the request ------------------------------------------------------------------------


def test_the_action_request_is_read_as_twilio_sends_it():
    action = read_action(
        {
            "CallSid": "CA" + "9F" * 16,
            "From": "+14155550123",
            "HandoffData": '{"reason": "r"}',
            "SessionStatus": "completed",
            "ErrorCode": "",
        }
    )
    assert action.call_sid == CALL_SID  # one spelling, as Twilio writes them
    assert (action.caller, action.handoff_data) == ("+14155550123", '{"reason": "r"}')
    assert action.problems == ()


@pytest.mark.parametrize("handoff", [None, "", "   ", "\n"])
def test_no_or_blank_handoff_data_is_no_handoff(handoff):
    fields = {"CallSid": CALL_SID} | ({} if handoff is None else {"HandoffData": handoff})
    assert read_action(fields).handoff_data is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "no CallSid"),
        ({"CallSid": "CA123"}, "CallSid is not CA followed by 32 hexadecimal characters"),
        ({"CallSid": CALL_SID, "From": "+1" * 200}, "From longer than 256 characters, cut"),
    ],
)
def test_bad_call_fields_are_problems_not_refusals(fields, problem):
    action = read_action(fields)
    assert action.problems == (problem,)
    assert len(action.caller) <= 256


def test_session_fields_are_cut_for_the_log():
    action = read_action({"SessionStatus": "x" * 1000, "ErrorCode": "6" * 1000})
    assert len(action.session_status) == 64 and len(action.error_code) == 64


def test_an_unknown_target_falls_back_to_default_then_to_the_first():
    targets = {"default": PLAIN, "billing": BILLING}
    assert pick_target(targets, "billing") == (BILLING, None)
    target, problem = pick_target(targets, "sales\x00<x>")
    assert target is PLAIN and problem == "unknown target 'sales<x>': handed to 'default'"
    target, problem = pick_target({"billing": BILLING}, "x" * 500)
    assert target is BILLING and problem is not None and len(problem) < 120
    assert pick_target({}, "default") == (None, "no target is configured")


@pytest.mark.parametrize(
    ("caller", "identity"),
    [
        ("+14155550123", Identity("phone", "+14155550123")),
        ("client:alice", Identity("client", "alice")),
        ("sip:bob@example.com", Identity("sip", "bob@example.com")),
        ("anonymous", Identity("caller", "anonymous")),
        ("", Identity("caller", "")),
    ],
)
def test_the_caller_becomes_an_identity_the_record_masks(caller, identity):
    assert caller_identity(caller) == identity
