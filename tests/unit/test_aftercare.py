"""The pure parts of the Conversation steps after a handover: merging the mark into
the customer's attributes, choosing the bot's webhooks, finding a posted fallback,
and how often a step is tried."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.aftercare import (
    ENDED,
    HANDED_OVER,
    MARK,
    NotAnObject,
    NotOurMark,
    fallback_attributes,
    handover_mark,
    merged_attributes,
    posted_fallback,
    webhooks_to_silence,
)
from worker.conversation_client import ConversationWebhook, PostedMessage
from worker.errors import FlexError
from worker.retry import (
    AFTERCARE_FIRST_WAIT_SECONDS,
    AFTERCARE_MAX_WAIT_SECONDS,
    AFTERCARE_TRIES,
    aftercare_wait,
)

HANDOVER_ID = "ho_" + "a" * 32
OTHER_HANDOVER_ID = "ho_" + "b" * 32
INTERACTION_SID = "KD" + "1" * 32


def mark(state: str = HANDED_OVER, handover_id: str = HANDOVER_ID) -> dict:
    return handover_mark(handover_id, state, INTERACTION_SID, "billing", 1_767_225_600.0)


def test_the_mark_names_the_handover_and_when():
    assert mark() == {
        "handoverId": HANDOVER_ID,
        "state": "handed_over",
        "interactionSid": INTERACTION_SID,
        "target": "billing",
        "at": "2026-01-01T00:00:00+00:00",
    }


def test_every_attribute_that_was_there_is_kept():
    customer = {"crm": {"id": 7, "tier": "gold"}, "language": "de", "flexHandover_x": 1}
    merged = json.loads(merged_attributes(json.dumps(customer), mark()))
    assert merged == {**customer, MARK: mark()}


@given(
    st.dictionaries(
        st.text(max_size=8).filter(lambda key: key != MARK),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=6,
    )
)
def test_merging_never_changes_another_attribute(customer):
    merged = json.loads(merged_attributes(json.dumps(customer), mark()))
    assert {key: value for key, value in merged.items() if key != MARK} == customer


def test_empty_attributes_are_an_empty_object():
    for empty in ("", "  ", "{}"):
        assert json.loads(merged_attributes(empty, mark())) == {MARK: mark()}


def test_a_mark_already_there_is_not_written_again_whatever_its_time():
    once = merged_attributes("{}", mark())
    later = {**mark(), "at": "2026-01-01T00:05:00+00:00"}
    assert merged_attributes(once, later) is None


def test_the_hand_back_changes_the_state_and_keeps_the_rest_of_the_mark():
    once = merged_attributes('{"crm": 1}', mark())
    ended = json.loads(merged_attributes(once, {"state": ENDED}, only_for=HANDOVER_ID))
    assert ended == {"crm": 1, MARK: {**mark(), "state": ENDED}}


def test_the_hand_back_leaves_a_newer_handovers_mark_alone():
    newer = merged_attributes("{}", mark(handover_id=OTHER_HANDOVER_ID))
    with pytest.raises(NotOurMark):
        merged_attributes(newer, {"state": ENDED}, only_for=HANDOVER_ID)
    # No mark at all (marking failed): nothing to write, nothing in the way.
    assert merged_attributes("{}", {"state": ENDED}, only_for=HANDOVER_ID) is None


@pytest.mark.parametrize(
    "attributes",
    ['"a string"', "[1, 2]", "7", "null", "{not json", '{"flexHandover": "taken"}', "[" * 5000],
)
def test_attributes_that_are_not_an_object_are_never_overwritten(attributes):
    with pytest.raises(NotAnObject):
        merged_attributes(attributes, mark())


def hook(sid_digit: str, url: str | None, target: str = "webhook") -> ConversationWebhook:
    return ConversationWebhook("WH" + sid_digit * 32, target, url, "POST", ("onMessageAdded",))


def test_only_plain_webhooks_under_a_prefix_are_silenced():
    bot = hook("1", "https://bot.example/hooks/in?key=1")
    other = hook("2", "https://crm.example/hooks")
    studio = hook("3", "https://bot.example/flow", target="studio")
    no_url = hook("4", None)
    second_bot = hook("5", "http://10.0.0.5:8080/x")
    found = webhooks_to_silence(
        [bot, other, studio, no_url, second_bot], ("https://bot.example/", "http://10.0.0.5")
    )
    assert found == [bot, second_bot]
    assert webhooks_to_silence([bot], ()) == []


def test_a_webhook_survives_the_trip_through_the_record():
    webhook = ConversationWebhook(
        "WH" + "1" * 32, "webhook", "https://bot.example/in", "POST", ("a", "b"), ("t",), None
    )
    stored = json.loads(json.dumps(webhook.to_dict()))
    assert ConversationWebhook.from_dict(stored) == webhook
    # A hostile record yields text or nothing, never another type.
    odd = ConversationWebhook.from_dict({"sid": 5, "url": ["x"], "filters": [1, "ok"]})
    assert (odd.sid, odd.url, odd.filters, odd.target) == ("", None, ("ok",), "webhook")


def test_the_fallback_marker_is_found_among_other_messages():
    ours = PostedMessage("IM" + "1" * 32, fallback_attributes(HANDOVER_ID))
    messages = [
        PostedMessage("IM" + "2" * 32, None),
        PostedMessage("IM" + "3" * 32, "{not json"),
        PostedMessage("IM" + "4" * 32, '["list"]'),
        PostedMessage("IM" + "5" * 32, fallback_attributes(OTHER_HANDOVER_ID)),
        PostedMessage("IM" + "6" * 32, '{"flexHandover": "x"}'),
        ours,
    ]
    assert posted_fallback(messages, HANDOVER_ID) == ours.sid
    assert posted_fallback(messages[:-1], HANDOVER_ID) is None


def test_a_step_is_tried_a_few_times_and_only_when_it_may_help():
    temporary = FlexError("Twilio answered 503", status=503, retryable=True)
    waits = [aftercare_wait(temporary, tries) for tries in range(1, AFTERCARE_TRIES + 1)]
    assert waits[:-1] == [AFTERCARE_FIRST_WAIT_SECONDS, 2 * AFTERCARE_FIRST_WAIT_SECONDS]
    assert waits[-1] is None
    refused = FlexError("Twilio answered 403", status=403)
    assert aftercare_wait(refused, 1) is None
    hostile = FlexError("Twilio answered 429", status=429, retryable=True, retry_after=3600.0)
    assert aftercare_wait(hostile, 1) == AFTERCARE_MAX_WAIT_SECONDS
