"""Every wait the worker takes is held between a floor and a cap, whatever
Twilio's `Retry-After` says (properties over any header text and any number)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import example, given
from hypothesis import strategies as st
from tenacity import RetryCallState

from shared.settings import Settings
from worker.errors import FlexError
from worker.retry import (
    MAX_RETRY_AFTER_SECONDS,
    MAX_WAIT_SECONDS,
    MIN_WAIT_SECONDS,
    bounded_wait,
    defer_delay,
    parse_retry_after,
    requeue_delay,
    retry_floor,
    slot_wait,
    wait_retry_after_or_jitter,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()

numbers = st.floats(allow_nan=True, allow_infinity=True)
# What a proxy or Twilio could put in the header: any text, numbers in any
# spelling, HTTP dates from year 1 to 9999.
number_texts = numbers.map(repr) | st.integers().map(str) | numbers.map(lambda x: f"{x:e}")
http_dates = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda moment: format_datetime(moment, usegmt=True))
headers = st.none() | st.text() | number_texts | http_dates
floors = st.floats(min_value=0.0, max_value=1e4)
caps = st.floats(min_value=-1e7, max_value=1e7)


def assert_bounded(wait: float, floor: float, cap: float) -> None:
    assert math.isfinite(wait) and wait >= 0.0
    if cap >= floor:
        assert floor <= wait <= cap
    else:  # out of time: the cap wins, the caller gives up or stops at its deadline
        assert wait == max(cap, 0.0)


@given(headers)
@example("0")
@example("-5")
@example("nan")
@example("NaN")
@example("inf")
@example("-inf")
@example("1e400")
@example("Wed, 21 Oct 2015 07:28:00 GMT")
@example("Fri, 31 Dec 9999 23:59:59 GMT")
@example("Mon, 01 Jan 0001 00:00:00 +0000")
@example("Mon, 99 Foo 2015 07:28:00 GMT")
@example("\x00")
def test_any_retry_after_header_parses_to_none_or_a_bounded_number(header):
    seconds = parse_retry_after(header, now=NOW)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER_SECONDS


@given(headers, st.floats(min_value=0.0, max_value=1e5), floors, caps)
@example("0", 30.0, 0.5, 900.0)
@example("-1", 30.0, 0.5, 900.0)
@example("nan", 30.0, 0.5, 900.0)
@example("99999999", 30.0, 0.5, 900.0)
def test_any_header_gives_a_wait_between_the_floor_and_the_cap(header, fallback, floor, cap):
    parsed = parse_retry_after(header, now=NOW)
    wait = bounded_wait(parsed if parsed is not None else fallback, floor, cap)
    assert_bounded(wait, floor, cap)


@given(st.none() | numbers, floors, caps)
def test_bounded_wait_of_any_number(proposed, floor, cap):
    assert_bounded(bounded_wait(proposed, floor, cap), floor, cap)


def state_after(error: BaseException, attempt_number: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    state.set_exception((type(error), error, None))
    return state


@given(
    st.none() | numbers,
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0.0, max_value=60.0),
    st.floats(min_value=0.0, max_value=600.0),
    st.floats(min_value=0.0, max_value=1e6),
)
def test_in_job_wait_is_bounded_for_any_retry_after_and_attempt(
    retry_after, attempt, initial, maximum, time_left
):
    wait = wait_retry_after_or_jitter(initial, maximum, cap=lambda: time_left)
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    assert_bounded(wait(state_after(error, attempt)), max(initial, MIN_WAIT_SECONDS), time_left)


@given(st.none() | numbers, st.floats(min_value=0.0, max_value=60.0), caps)
def test_requeue_delay_is_bounded_for_any_retry_after(retry_after, initial, time_left):
    settings = Settings(backoff_initial_seconds=initial, requeue_delay_seconds=30.0)
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    delay = requeue_delay(error, settings, time_left=time_left)
    assert_bounded(delay, retry_floor(settings), time_left)


@given(numbers, caps)
def test_a_hand_back_to_arq_is_bounded_and_never_zero(proposed, cap):
    defer = defer_delay(proposed, cap)
    assert math.isfinite(defer) and MIN_WAIT_SECONDS <= defer <= max(cap, MIN_WAIT_SECONDS)


@given(numbers, caps)
def test_a_rate_limit_sleep_stays_within_what_the_run_affords(wait, affordable):
    sleep = slot_wait(wait, affordable)
    assert math.isfinite(sleep) and 0.0 <= sleep <= min(max(affordable, 0.0), MAX_WAIT_SECONDS)


def test_an_http_date_in_the_far_future_is_capped_and_in_the_past_is_the_floor():
    future = format_datetime(datetime.fromtimestamp(NOW, UTC) + timedelta(days=3650), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(NOW, UTC) - timedelta(days=1), usegmt=True)
    assert bounded_wait(parse_retry_after(future, now=NOW), 0.5, 900.0) == 900.0
    assert bounded_wait(parse_retry_after(past, now=NOW), 0.5, 900.0) == 0.5
