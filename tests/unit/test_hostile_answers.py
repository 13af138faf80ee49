"""What the worker makes of answers a hostile Flex (or proxy) can send: the pure
checks of a 2xx body, the classification of a cut-off body, the bounded read
itself, and the cut of any error message to MAX_ERROR_MESSAGE_CHARS."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from shared.model import (
    MAX_ERROR_MESSAGE_CHARS,
    HandoverError,
    HandoverRecord,
    truncate_message,
)
from worker.errors import (
    AnswerTooLarge,
    FlexError,
    classify,
    parse_failure,
    unreadable_answer,
)
from worker.flex_client import (
    MAX_NAME_CHARS,
    BoundedHttpClient,
    CreatedInteraction,
    interaction_answer,
    usable_name,
)
from worker.task_lookup import interaction_from_tasks, lookup_window_end, next_create_at

KD = "KD" + "0a" * 16
UO = "UO" + "0b" * 16


# --- interaction_answer --------------------------------------------------------


def test_a_real_interaction_is_believed():
    assert interaction_answer(KD, {"type": "chat", "sid": UO}) == CreatedInteraction(KD, UO)


@pytest.mark.parametrize(
    ("sid", "channel", "why"),
    [
        (None, {"sid": UO}, "it has no sid"),
        ("", {"sid": UO}, "its sid is '', not a KD… SID"),
        (42, {"sid": UO}, "its sid is of type int, not a KD… SID"),
        (True, {"sid": UO}, "its sid is of type bool"),
        ({"a": 1}, {"sid": UO}, "its sid is of type dict"),
        ("UO" + "0b" * 16, {"sid": UO}, "not a KD… SID"),
        ("KD" + "0a" * 15, {"sid": UO}, "not a KD… SID"),
        (KD + "\n", {"sid": UO}, "not a KD… SID"),
        ("KD" + "x" * 5000, {"sid": UO}, "'KDxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"),
        (KD, None, "it has no channel object"),
        (KD, [UO], "it has no channel object"),
        (KD, {}, "its channel has no sid"),
        (KD, {"sid": None}, "its channel has no sid"),
        (KD, {"sid": 7}, "its channel sid is of type int, not a UO… SID"),
        (KD, {"sid": KD}, "its channel sid is 'KD0a0a"),
    ],
)
def test_anything_else_is_an_ambiguous_unreadable_answer(sid, channel, why):
    with pytest.raises(FlexError) as caught:
        interaction_answer(sid, channel, 200)
    error = caught.value
    assert (error.retryable, error.ambiguous, error.status) == (True, True, 200)
    assert error.message.startswith("Twilio answered 200 but not with an Interaction: ")
    assert why in error.message
    assert len(error.message) < 200


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists, max_leaves=5))
def test_no_shape_of_sid_escapes_as_anything_but_a_flex_error(sid):
    try:
        created = interaction_answer(sid, {"sid": UO})
    except FlexError as error:
        assert error.ambiguous and error.retryable
    else:
        assert created.interaction_sid == sid


# --- classification ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable", "ambiguous"),
    [(200, True, True), (201, True, True), (400, False, False), (429, True, False),
     (500, True, True), (503, True, True)],
)  # fmt: skip
def test_a_cut_off_body_is_classified_by_its_status(status, retryable, ambiguous):
    error = classify(AnswerTooLarge(status, 1_000_000), attempt_timeout=1)
    assert (error.status, error.retryable, error.ambiguous) == (status, retryable, ambiguous)
    assert "a body over 1000000 bytes, cut off" in error.message


@pytest.mark.parametrize(
    ("exc", "why"),
    [
        (json.JSONDecodeError("Expecting value", "x", 0), "the body is not JSON"),
        (AttributeError("'list' object has no attribute 'get'"), "not the JSON object expected"),
        (TypeError("x"), "not the JSON object expected (TypeError)"),
        (RecursionError("deep"), "nested too deeply"),
        (RuntimeError("odd"), "RuntimeError reading the body"),
    ],
)
def test_parse_failures_are_named(exc, why):
    assert why in parse_failure(exc)
    error = unreadable_answer(200, parse_failure(exc), "a task list")
    assert error.message.startswith("Twilio answered 200 but not with a task list: ")


def test_the_answers_own_status_wins_over_the_bodys():
    """A problem+json body claiming 400 on a 503 answer: the 503 decides."""
    from twilio.base.exceptions import TwilioServiceException

    exc = TwilioServiceException("https://x", "Bad", 400, 20001, "a proxy says so")
    assert classify(exc, 1).retryable is False
    error = classify(exc, 1, answered_status=503)
    assert (error.status, error.retryable, error.ambiguous) == (503, True, True)


# --- message truncation ----------------------------------------------------------


@given(st.text(max_size=3000))
def test_truncate_message_is_bounded_and_keeps_short_text(text):
    cut = truncate_message(text)
    assert len(cut) <= MAX_ERROR_MESSAGE_CHARS
    if len(text) <= MAX_ERROR_MESSAGE_CHARS:
        assert cut == text
    else:
        assert cut.startswith(text[:900]) and cut.endswith("[cut off]")


def test_flex_and_handover_errors_cut_their_message_where_they_are_built():
    huge = "Twilio answered 500: " + "x" * 5_000_000
    error = FlexError(huge, status=500, retryable=True)
    assert len(error.message) == len(str(error)) <= MAX_ERROR_MESSAGE_CHARS
    assert len(error.to_handover_error().message) <= MAX_ERROR_MESSAGE_CHARS
    assert len(HandoverError(huge).message) <= MAX_ERROR_MESSAGE_CHARS
    public = HandoverError(huge, 500, 20500).to_public()
    assert len(public["message"]) <= MAX_ERROR_MESSAGE_CHARS


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({"status": 500, "code": 20500, "message": "x" * 2_000_000}, (500, 20500)),
        ({"status": "500", "code": [1], "message": {"nested": "x" * 5000}}, (None, None)),
        ("x" * 10_000, (None, None)),
    ],
)
def test_an_old_records_error_is_cut_when_read(stored, expected):
    record = HandoverRecord.from_hash(
        {
            "handover_id": "ho_1",
            "conversation_sid": "CH" + "0" * 32,
            "identity": "whatsapp:+14155550123",
            "target": "default",
            "state": "failed",
            "created_at": "1",
            "updated_at": "1",
            "error": json.dumps(stored),
        }
    )
    assert record.error is not None
    assert len(record.error.message) <= MAX_ERROR_MESSAGE_CHARS
    assert (record.error.status, record.error.code) == expected


# --- TaskRouter answers ------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [[{"handoverId": "ho_1"}], [None], [42], ["[" * 100_000], ['{"handoverId": ["ho_1"]}']],
    ids=["dict", "none", "number", "deep", "id-not-a-string"],
)
def test_task_attributes_of_any_shape_are_not_ours(attributes):
    assert interaction_from_tasks(attributes, "ho_1") == (None, 0)


@pytest.mark.parametrize(
    ("wake_at", "in_flight_since", "expected"),
    [
        (100.0, None, 100.0),  # nothing in flight: the next create at wake-up
        (100.0, 99.0, 105.0),  # in flight 1 s ago: wake, then 5 s of grace (timeout 10)
        (100.0, 50.0, 100.0),  # long dead attempt: one lookup query, no window left
        (100.0, 85.0, 100.0),  # window ended exactly at wake-up (85 + 10 + 5)
        (100.0, 88.0, 103.0),  # cut off at 98, plus 5 s of grace
    ],
)
def test_next_create_at_includes_the_lookup_grace(wake_at, in_flight_since, expected):
    assert next_create_at(wake_at, in_flight_since, 10.0, 5.0) == expected
    if in_flight_since is not None:  # what the lookup at wake-up will wait for
        assert expected == max(wake_at, lookup_window_end(in_flight_since, wake_at, 10.0, 5.0))


# --- BoundedHttpClient: the body is read up to the limit, never further -------------


@pytest.fixture
async def upstream():
    """A loopback server: /endless streams chunks until the client goes, /declared
    answers 10 MB with a Content-Length, /exact answers `limit` bytes."""
    sent = {"endless": 0}

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while True:
                await response.write(b"x" * 65536)
                sent["endless"] += 65536
        except ConnectionError:
            return response

    async def declared(request: web.Request) -> web.Response:
        return web.Response(status=503, body=b"y" * 10_000_000)

    async def exact(request: web.Request) -> web.Response:
        return web.Response(status=200, body=b"z" * 100_000, headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_get("/endless", endless)
    app.router.add_get("/declared", declared)
    app.router.add_get("/exact", exact)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", sent
    await runner.cleanup()


async def test_an_endless_body_is_cut_off_at_the_limit(upstream):
    url, _ = upstream
    client = BoundedHttpClient(timeout=10, max_body=100_000)
    try:
        async with asyncio.timeout(5):  # an endless body: only stopping reading ends this
            with pytest.raises(AnswerTooLarge) as caught:
                await client.request("GET", url + "/endless")
        assert (caught.value.status, caught.value.limit) == (200, 100_000)
    finally:
        await client.close()


async def test_a_declared_length_over_the_limit_is_not_read(upstream):
    url, _ = upstream
    client = BoundedHttpClient(timeout=10, max_body=100_000)
    try:
        with pytest.raises(AnswerTooLarge) as caught:
            await client.request("GET", url + "/declared")
        assert caught.value.status == 503
    finally:
        await client.close()


async def test_a_body_at_the_limit_is_read_whole(upstream):
    url, _ = upstream
    client = BoundedHttpClient(timeout=10, max_body=100_000)
    try:
        response = await client.request("GET", url + "/exact")
        assert (response.status_code, len(response.text)) == (200, 100_000)
        assert response.headers["Retry-After"] == "0"
    finally:
        await client.close()


@given(
    st.one_of(st.none(), st.integers(), st.lists(st.text()), st.dictionaries(st.text(), st.text()))
)
def test_a_friendly_name_that_is_not_text_is_no_name(value):
    assert usable_name(value) is None


@given(st.text())
def test_a_friendly_name_is_bounded_text_or_none(value):
    name = usable_name(value)
    if not value.strip():
        assert name is None
    else:
        assert isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS
        assert value.strip().startswith(name.rstrip("…"))
