"""worker.retry and worker.errors: what is retried, how long we wait, when we stop."""

from __future__ import annotations

import io
import itertools
import json
import sys
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest
import tenacity
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given
from hypothesis import strategies as st
from tenacity import RetryCallState
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.response import Response

from shared.model import HandoverError
from shared.settings import CHANNEL_CONFIRM_SECONDS, Settings
from worker.errors import FlexError, classify
from worker.retry import (
    CHANNEL_POLL_FIRST_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    MAX_WAIT_SECONDS,
    MIN_WAIT_SECONDS,
    OUTCOME_MARGIN_SECONDS,
    RECONNECT_INITIAL_SECONDS,
    affordable_wait,
    channel_poll_waits,
    defer_delay,
    in_job_retrying,
    is_retryable,
    next_run_delay,
    parse_retry_after,
    reconnect_delays,
    requeue_delay,
    slot_wait,
    wait_retry_after_or_jitter,
)

INTERACTIONS_URI = "https://flex-api.twilio.com/v1/Interactions"
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def http_date(offset_seconds: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset_seconds, UTC), usegmt=True)


# --------------------------------------------------------------------------
# parse_retry_after
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("86400", MAX_RETRY_AFTER_SECONDS),
        ("1e9", MAX_RETRY_AFTER_SECONDS),
        ("inf", MAX_RETRY_AFTER_SECONDS),
        (http_date(90), 90.0),
        (http_date(-90), 0.0),
        (http_date(10 * 24 * 3600), MAX_RETRY_AFTER_SECONDS),
        (None, None),
        ("", None),
        ("   ", None),
        ("soon", None),
        ("nan", None),
        ("Wed, 99 Foo 2015 07:28:00 GMT", None),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP date
    ],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date_defaults_to_the_clock():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    soon = datetime.fromtimestamp(datetime.now(UTC).timestamp() + 600, UTC)
    assert 590 <= parse_retry_after(format_datetime(soon, usegmt=True)) <= 600


# --------------------------------------------------------------------------
# classify
# --------------------------------------------------------------------------


def connector_error() -> aiohttp.ClientConnectorError:
    key = ConnectionKey("flex-api.twilio.com", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


def rest_exception(status: int, msg: str, code: int | None) -> TwilioRestException:
    return TwilioRestException(status, INTERACTIONS_URI, msg, code, method="POST")


def service_exception(status: int, code: int, detail: str | None = "Too many requests"):
    return TwilioServiceException(
        "https://www.twilio.com/docs/errors/%d" % code, "Problem title", status, code, detail
    )


@pytest.mark.parametrize(
    "exc, retryable, ambiguous, status, code",
    [
        (rest_exception(400, "Invalid channel", 20001), False, False, 400, 20001),
        (rest_exception(401, "Authenticate", 20003), False, False, 401, 20003),
        (rest_exception(404, "Not found", 20404), False, False, 404, 20404),
        (rest_exception(429, "Too many", 20429), True, False, 429, 20429),
        (rest_exception(500, "Oops", None), True, True, 500, None),
        (rest_exception(503, "Unavailable", 20503), True, True, 503, 20503),
        (service_exception(400, 45001), False, False, 400, 45001),
        (service_exception(429, 45010), True, False, 429, 45010),
        (service_exception(502, 20500), True, True, 502, 20500),
        (TimeoutError(), True, True, None, None),
        (TimeoutError(), True, True, None, None),
        (aiohttp.ServerTimeoutError("read timeout"), True, True, None, None),
        (aiohttp.ServerDisconnectedError(), True, True, None, None),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), True, True, None, None),
        (ConnectionResetError(104, "reset"), True, True, None, None),
        (connector_error(), True, False, None, None),
        (ValueError("bad"), False, False, None, None),
        (TwilioException("no status"), False, False, None, None),
        (KeyError("sid"), False, False, None, None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_classify(exc, retryable, ambiguous, status, code):
    error = classify(exc, attempt_timeout=2.5)
    assert isinstance(error, FlexError)
    assert (error.retryable, error.ambiguous) == (retryable, ambiguous)
    assert (error.status, error.code) == (status, code)
    assert error.retry_after is None
    assert is_retryable(error) is retryable
    assert error.message == str(error) and error.message


def page_exception(status: int, body: str) -> TwilioException:
    """What twilio-python's list methods raise for a non-200 page: no status attribute."""
    return TwilioException("Unable to fetch page", Response(status, body))


def twilio_body(status: int, code: int, message: str) -> str:
    return json.dumps({"code": code, "message": message, "status": status})


INTERNAL = twilio_body(500, 20500, "Internal")
SLOW_DOWN = twilio_body(429, 20429, "Too Many Requests")
BAD_EXPRESSION = twilio_body(400, 20001, "Invalid expression")
PROBLEM = json.dumps({"code": 20503, "detail": "Problem detail"})


@pytest.mark.parametrize(
    "status, body, retryable, ambiguous, code, message",
    [
        (500, INTERNAL, True, True, 20500, "Twilio answered 500: Internal"),
        (429, SLOW_DOWN, True, False, 20429, "Twilio answered 429: Too Many Requests"),
        (400, BAD_EXPRESSION, False, False, 20001, "Twilio answered 400: Invalid expression"),
        (503, PROBLEM, True, True, 20503, "Twilio answered 503: Problem detail"),
        (502, "<html>Bad Gateway</html>", True, True, None, "Twilio answered 502"),
        (504, "", True, True, None, "Twilio answered 504"),
        (500, '"just a string"', True, True, None, "Twilio answered 500"),
        (500, '{"code": "x"}', True, True, None, "Twilio answered 500"),
    ],
    ids=["500", "429", "400", "problem-json", "html", "empty", "json-string", "bad-code"],
)
def test_classify_a_failed_list_page(status, body, retryable, ambiguous, code, message):
    error = classify(page_exception(status, body), attempt_timeout=1)
    assert (error.retryable, error.ambiguous) == (retryable, ambiguous)
    assert (error.status, error.code, error.message) == (status, code, message)


def test_classify_a_bare_twilio_exception_without_a_response():
    error = classify(TwilioException("Unable to fetch page", "not a response"), attempt_timeout=1)
    assert (error.retryable, error.ambiguous, error.status) == (False, False, None)
    assert error.message.startswith("unexpected error calling Twilio: TwilioException")


@pytest.mark.parametrize(
    "exc, expected",
    [
        (rest_exception(404, "Not found", 20404), "Twilio answered 404: Not found"),
        (service_exception(429, 45010, "Slow down"), "Twilio answered 429: Slow down"),
        (service_exception(429, 45010, None), "Twilio answered 429: Problem title"),
        (rest_exception(500, "", None), "Twilio answered 500"),
        (TimeoutError(), "Twilio did not answer within 2.5s"),
        (connector_error(), "could not connect to Twilio: [Errno 111] Connection refused"),
        (aiohttp.ServerDisconnectedError(), "connection to Twilio failed: ServerDisconnectedError"),
        (ValueError("bad"), "unexpected error calling Twilio: ValueError: bad"),
    ],
)
def test_classify_messages(exc, expected):
    assert classify(exc, attempt_timeout=2.5).message == expected


@pytest.mark.parametrize(
    "exc",
    [rest_exception(500, "", None), service_exception(503, 20503, None)],
)
def test_classify_message_does_not_depend_on_a_terminal(monkeypatch, exc):
    """twilio's __str__ paints ANSI colours when stderr is a TTY: keep them out."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    message = classify(exc, attempt_timeout=1).message
    assert "\033" not in message and "\n" not in message


def test_classify_passes_a_flex_error_through():
    error = FlexError("already classified", status=429, retryable=True, retry_after=3.0)
    assert classify(error, attempt_timeout=1) is error


def test_flex_error_to_handover_error():
    error = FlexError("Twilio answered 429: x", status=429, code=20429, retryable=True)
    assert error.to_handover_error() == HandoverError("Twilio answered 429: x", 429, 20429)


# --------------------------------------------------------------------------
# wait_retry_after_or_jitter
# --------------------------------------------------------------------------


def retry_state(attempt_number: int, error: BaseException | None) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    if error is not None:
        state.set_exception((type(error), error, None))
    return state


@pytest.fixture
def jitter_window(monkeypatch) -> list[tuple[float, float]]:
    """Make the jitter draw the top of its window, and record each window."""
    windows: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        windows.append((low, high))
        return high

    monkeypatch.setattr(tenacity.wait.random, "uniform", uniform)
    return windows


@pytest.mark.parametrize("retry_after", [0.5, 2.0, 45.5])
def test_wait_uses_retry_after_when_twilio_sent_one(jitter_window, retry_after):
    wait = wait_retry_after_or_jitter(initial=0.5, maximum=8.0)
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    for attempt in (1, 5):
        assert wait(retry_state(attempt, error)) == retry_after
    assert jitter_window == []


@pytest.mark.parametrize("retry_after", [0.0, 0.001, 0.49])
def test_wait_retry_after_below_the_floor_waits_the_floor(jitter_window, retry_after):
    """`Retry-After: 0` made ~270 attempts a second: the backoff's initial delay is a floor."""
    wait = wait_retry_after_or_jitter(initial=0.5, maximum=8.0)
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    assert wait(retry_state(1, error)) == 0.5
    assert jitter_window == []


def test_wait_is_capped_by_the_time_left():
    wait = wait_retry_after_or_jitter(initial=0.5, maximum=8.0, cap=lambda: 7.0)
    error = FlexError("429", status=429, retryable=True, retry_after=3600.0)
    assert wait(retry_state(1, error)) == 7.0
    assert wait(retry_state(40, FlexError("503", retryable=True))) <= 7.0


def test_a_zero_initial_backoff_still_has_a_floor():
    wait = wait_retry_after_or_jitter(initial=0.0, maximum=0.0)
    error = FlexError("429", status=429, retryable=True, retry_after=0.0)
    assert wait(retry_state(1, error)) == MIN_WAIT_SECONDS
    assert wait(retry_state(3, FlexError("503", retryable=True))) == MIN_WAIT_SECONDS


@pytest.mark.parametrize(
    "attempt, high",
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (40, 8.0), (5000, 8.0)],
)
def test_wait_full_jitter_window(jitter_window, attempt, high):
    wait = wait_retry_after_or_jitter(initial=0.5, maximum=8.0)
    error = FlexError("503", status=503, retryable=True)
    assert wait(retry_state(attempt, error)) == high
    assert jitter_window == [(0.5, high)]  # drawn above the floor


def test_wait_without_an_outcome_uses_jitter(jitter_window):
    wait = wait_retry_after_or_jitter(initial=0.25, maximum=8.0)
    assert wait(retry_state(2, None)) == 0.5


def test_wait_full_jitter_draws_spread_over_the_window():
    wait = wait_retry_after_or_jitter(initial=0.5, maximum=8.0)
    state = retry_state(3, FlexError("timeout", retryable=True))
    draws = [wait(state) for _ in range(300)]
    assert all(0.5 <= draw <= 2.0 for draw in draws)
    assert min(draws) < 0.8 and max(draws) > 1.7  # full jitter above the floor, not fixed
    assert len(set(draws)) > 250


# --------------------------------------------------------------------------
# in_job_retrying
# --------------------------------------------------------------------------


def retry_settings(**overrides) -> Settings:
    values = {
        "retry_budget_seconds": 30.0,
        "backoff_initial_seconds": 0.5,
        "backoff_max_seconds": 8.0,
        "requeue_delay_seconds": 12.0,
    }
    values.update(overrides)
    return Settings(**values)


class FlakyCall:
    """Raises the given errors in turn, then returns 'created'."""

    def __init__(self, *errors: BaseException):
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "created"


class Recorder:
    """An async callable that records its arguments."""

    def __init__(self):
        self.calls: list[tuple] = []

    async def __call__(self, *args) -> None:
        self.calls.append(args)


class Harness:
    """Drives a call through in_job_retrying the way worker.handover does.

    `sleep` replaces tenacity's asyncio.sleep unless `real_sleep` is set;
    `before_sleep` records the (error, seconds) pairs the worker would store.
    """

    def __init__(self, real_sleep: bool = False):
        self.sleep = None if real_sleep else Recorder()
        self.before_sleep = Recorder()

    @property
    def slept(self) -> list[float]:
        return [seconds for (seconds,) in self.sleep.calls]

    async def run(self, settings: Settings, call: FlakyCall):
        retrying = in_job_retrying(settings, self.before_sleep)
        if self.sleep is not None:
            retrying.sleep = self.sleep
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable")

    async def fails(self, settings: Settings, call: FlakyCall) -> BaseException:
        with pytest.raises(BaseException) as caught:
            await self.run(settings, call)
        return caught.value


@pytest.fixture
def harness() -> Harness:
    return Harness()


def retryable(message: str = "503", **kwargs) -> FlexError:
    return FlexError(message, status=kwargs.pop("status", 503), retryable=True, **kwargs)


async def test_in_job_retrying_returns_at_once_on_success(harness):
    call = FlakyCall()
    assert await harness.run(retry_settings(), call) == "created"
    assert (call.calls, harness.slept, harness.before_sleep.calls) == (1, [], [])


async def test_in_job_retrying_retries_retryable_errors_with_jitter(harness):
    first, second = retryable("first"), retryable("second", ambiguous=True)
    call = FlakyCall(first, second)
    assert await harness.run(retry_settings(), call) == "created"
    assert call.calls == 3
    assert [error for error, _ in harness.before_sleep.calls] == [first, second]
    assert [seconds for _, seconds in harness.before_sleep.calls] == harness.slept
    assert 0.0 <= harness.slept[0] <= 0.5 and 0.0 <= harness.slept[1] <= 1.0


async def test_in_job_retrying_honours_retry_after(harness):
    first, second = retryable(status=429, retry_after=3.0), retryable(retry_after=0.75)
    call = FlakyCall(first, second)
    assert await harness.run(retry_settings(), call) == "created"
    assert harness.slept == [3.0, 0.75]
    assert harness.before_sleep.calls == [(first, 3.0), (second, 0.75)]


async def test_in_job_retrying_waits_at_least_the_floor_whatever_retry_after_says(harness):
    errors = [retryable(status=429, retry_after=value) for value in (0.0, 0.0, 0.1)]
    call = FlakyCall(*errors)
    assert await harness.run(retry_settings(backoff_initial_seconds=0.5), call) == "created"
    assert harness.slept == [0.5, 0.5, 0.5]


async def test_in_job_retrying_stops_before_a_wait_that_reaches_the_deadline(harness):
    """Retry-After past the handover's deadline: the wait is capped to the time
    left, and a wait that ends at the deadline is not taken (the job fails or
    is re-queued instead of sleeping into its expiry)."""
    deadline = time.time() + 5.0
    first, far = retryable(status=429, retry_after=1.0), retryable(status=429, retry_after=3600.0)
    call = FlakyCall(first, far, retryable())
    retrying = in_job_retrying(retry_settings(), harness.before_sleep, deadline)
    retrying.sleep = harness.sleep
    with pytest.raises(FlexError) as caught:
        async for attempt in retrying:
            with attempt:
                await call()
    assert caught.value is far
    assert harness.slept == [1.0]


@pytest.mark.parametrize(
    "error",
    [
        FlexError("Twilio answered 400: bad", status=400),
        FlexError("not retryable even if it says to wait", status=401, retry_after=0.0),
        ValueError("a bug, not a Twilio failure"),
    ],
)
async def test_in_job_retrying_stops_at_once_on_a_non_retryable_error(harness, error):
    call = FlakyCall(error)
    assert await harness.fails(retry_settings(), call) is error
    assert (call.calls, harness.slept, harness.before_sleep.calls) == (1, [], [])


async def test_in_job_retrying_gives_up_before_a_wait_that_would_overrun_the_budget(harness):
    first, too_long = retryable(retry_after=29.0), retryable(status=429, retry_after=31.0)
    call = FlakyCall(first, too_long, retryable())
    assert await harness.fails(retry_settings(retry_budget_seconds=30.0), call) is too_long
    assert call.calls == 2
    assert harness.before_sleep.calls == [(first, 29.0)]
    assert harness.slept == [29.0]


async def test_in_job_retrying_a_zero_budget_never_retries(harness):
    error = retryable(retry_after=0.0)
    call = FlakyCall(error, retryable())
    assert await harness.fails(retry_settings(retry_budget_seconds=0.0), call) is error
    assert (call.calls, harness.slept) == (1, [])


async def test_in_job_retrying_budget_counts_real_elapsed_time():
    """Budget 0.05 s, real waits of 0.03 s: a second wait would end past the budget."""
    harness = Harness(real_sleep=True)
    first, second = retryable("first", retry_after=0.03), retryable("second", retry_after=0.03)
    call = FlakyCall(first, second, retryable("third"))
    settings = retry_settings(retry_budget_seconds=0.05, backoff_initial_seconds=0.01)
    assert await harness.fails(settings, call) is second
    assert call.calls == 2
    assert harness.before_sleep.calls == [(first, 0.03)]


# --------------------------------------------------------------------------
# requeue_delay
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after, expected",
    [(None, 12.0), (45.0, 45.0), (0.7, 0.7), (0.5, 0.5), (0.0, 0.5), (0.001, 0.5)],
)
def test_requeue_delay(retry_after, expected):
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    assert requeue_delay(error, retry_settings(requeue_delay_seconds=12.0)) == expected


@pytest.mark.parametrize(
    "retry_after, time_left, expected",
    [(None, 5.0, 5.0), (3600.0, 100.0, 100.0), (0.0, 100.0, 0.5), (0.0, 0.2, 0.2), (None, -3, 0)],
)
def test_requeue_delay_is_capped_by_the_time_left(retry_after, time_left, expected):
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    settings = retry_settings(requeue_delay_seconds=12.0)
    assert requeue_delay(error, settings, time_left=time_left) == expected


# --------------------------------------------------------------------------
# next_run_delay: requeue, one last run at the deadline, or give up
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after, time_left, in_flight, expected",
    [
        (None, 100.0, False, 12.0),  # the requeue delay, well before the deadline
        (None, 100.0, True, 12.0),
        (45.0, 100.0, False, 45.0),  # Twilio's Retry-After
        (0.0, 100.0, False, 0.5),  # never under the floor
        (None, 12.0, False, None),  # the wait would reach the deadline: give up now
        (3600.0, 100.0, False, None),
        (3600.0, 100.0, True, 100.0),  # an attempt in flight: one last run at the deadline
        (None, 0.2, True, 0.2),
        (None, 0.001, True, MIN_WAIT_SECONDS),  # at the deadline: back at once, not now
        (None, -5.0, True, MIN_WAIT_SECONDS),
        (None, -5.0, False, None),
    ],
)
def test_next_run_delay(retry_after, time_left, in_flight, expected):
    error = FlexError("429", status=429, retryable=True, retry_after=retry_after)
    settings = retry_settings(requeue_delay_seconds=12.0)
    assert next_run_delay(error, settings, time_left, in_flight) == expected


@given(
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.booleans(),
)
def test_a_next_run_never_starts_past_the_deadline_nor_at_once(retry_after, time_left, in_flight):
    error = FlexError("503", status=503, retryable=True, retry_after=retry_after)
    delay = next_run_delay(error, retry_settings(), time_left, in_flight)
    if delay is None:
        assert not in_flight
    else:
        assert MIN_WAIT_SECONDS <= delay <= max(time_left, MIN_WAIT_SECONDS)


# --------------------------------------------------------------------------
# defer_delay, affordable_wait, slot_wait: the rate limit's waits
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "proposed, cap, expected",
    [(1.0, 60.0, 1.0), (0.0, 60.0, MIN_WAIT_SECONDS), (90.0, 60.0, 60.0), (1.0, 0.3, 0.3),
     (1.0, 0.0, MIN_WAIT_SECONDS), (1.0, -5.0, MIN_WAIT_SECONDS),
     (float("nan"), 60.0, MIN_WAIT_SECONDS)],
)  # fmt: skip
def test_defer_delay_is_never_zero_nor_past_the_cap(proposed, cap, expected):
    assert defer_delay(proposed, cap) == expected


def test_affordable_wait_leaves_room_for_the_create_its_channel_and_its_outcome():
    assert affordable_wait(None, 10.0) == MAX_WAIT_SECONDS
    expected = 40.0 - (10.0 + CHANNEL_CONFIRM_SECONDS + OUTCOME_MARGIN_SECONDS)
    assert affordable_wait(40.0, 10.0) == expected
    assert affordable_wait(5.0, 10.0) < 0  # out of time: only a free slot will do


@pytest.mark.parametrize(
    "wait, affordable, expected",
    [(0.0, 5.0, 0.0), (0.004, 5.0, 0.004), (2.0, 5.0, 2.0), (8.0, 5.0, 5.0), (1.0, -3.0, 0.0),
     (100.0, 1e9, MAX_WAIT_SECONDS)],
)  # fmt: skip
def test_a_slot_wait_has_no_floor_and_stays_within_what_the_run_affords(wait, affordable, expected):
    assert slot_wait(wait, affordable) == expected


# --------------------------------------------------------------------------
# reconnect_delays
# --------------------------------------------------------------------------


@given(cap=st.floats(0.5, 3600))
def test_the_backoff_doubles_from_half_a_second_to_the_cap_and_stays(cap):
    delays = reconnect_delays(cap)
    seen = [next(delays) for _ in range(40)]
    assert seen[0] == RECONNECT_INITIAL_SECONDS
    assert all(later >= earlier for earlier, later in itertools.pairwise(seen))
    assert max(seen) == cap == seen[-1]
    assert all(b == min(2 * a, cap) for a, b in itertools.pairwise(seen))


# --- reading a new Interaction's channel -----------------------------------------------


def test_channel_poll_waits_double_from_a_fifth_of_a_second_within_ten_seconds():
    waits = channel_poll_waits()
    assert waits == pytest.approx((0.2, 0.4, 0.8, 1.6, 3.2))
    assert sum(waits) < CHANNEL_CONFIRM_SECONDS == 10.0
    assert CHANNEL_POLL_FIRST_SECONDS == 0.2


@pytest.mark.parametrize(
    "first, total", [(0.0, 10.0), (-1.0, 10.0), (0.2, 0.0), (float("nan"), 1), (5.0, 5.0)]
)
def test_channel_poll_waits_without_time_or_step_read_nothing(first, total):
    assert channel_poll_waits(first, total) == ()


@given(
    st.floats(min_value=0.01, max_value=5.0),
    st.floats(min_value=0.01, max_value=60.0),
)
def test_channel_poll_waits_start_every_read_before_the_total_and_double(first, total):
    waits = channel_poll_waits(first, total)
    assert sum(waits) < total
    assert sum(waits) + first * 2 ** len(waits) >= total  # no read left out that fits
    assert all(b == 2 * a for a, b in itertools.pairwise(waits))
