"""The worker's retry and defer policy: every "how long before trying again" rule.

Inside a job: tenacity retries what Twilio says is temporary (connection
errors, timeouts, 429, 5xx) with exponential backoff and full jitter above the
floor, or the `Retry-After` Twilio asked for, until the in-job budget or the
handover's deadline would be overrun. Past that the job is handed back to arq
with a delay (`next_run_delay`), so a long wait never holds a worker slot.
What a retry does after an answer that never came (look for the task first) is
`worker.delivery`'s business, not the policy's.

The other waits, decided here and applied where they happen: a run that finds
the delivery claim taken or meets a Redis error comes back after a fixed
defer; a create waits in the shared rate limit only as long as its run can
afford, else the job is handed back (`worker.rate_limit`); TaskRouter is
polled every lookup interval (`worker.task_lookup`); a created Interaction's
channel is read on a short doubling schedule (`channel_poll_waits`,
`worker.confirm`); the Conversation steps after the outcome are tried a few
times (`aftercare_wait`); a worker that lost Redis
is rebuilt after a capped, doubling backoff (`worker.main`). The numbers a
deployment may change are parsed by `shared.settings`; the rest are here.

Whatever Twilio (or a proxy in front of it) sends, no wait is shorter than the
floor (`HANDOVER_BACKOFF_INITIAL_SECONDS`, at least `MIN_WAIT_SECONDS`) or
longer than the time left before the handover's deadline: `Retry-After: 0`, a
negative or NaN value, a date in the past or far future all go through
`bounded_wait`, so they can make neither a hot loop nor an endless wait.
Nothing here does I/O.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from email.utils import parsedate_to_datetime

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_before_delay
from tenacity.stop import stop_base

from shared.model import now
from shared.settings import CHANNEL_CONFIRM_SECONDS, Settings
from worker.errors import FlexError

MAX_RETRY_AFTER_SECONDS = 3600.0
# The shortest wait between two requests for one handover, whatever the settings,
# and the shortest hand-back to arq (a defer of 0 would run the job again at once).
MIN_WAIT_SECONDS = 0.01
# Another run holds the conversation: it finishes or hands back within one run budget.
CLAIM_BUSY_DEFER_SECONDS = 2.0
# Redis failed a run's command: the job comes back when Redis may be back.
REDIS_ERROR_DEFER_SECONDS = 5.0
# The longest a create waits in the shared rate limit's queue; longer waits are
# handed back to arq.
MAX_WAIT_SECONDS = 60.0
# Left in the run budget after a rate-limit wait, besides the create and reading its
# channel: writing its outcome.
OUTCOME_MARGIN_SECONDS = 1.0
# The first wait before a worker that lost Redis is rebuilt; it doubles up to
# WORKER_RECONNECT_MAX_SECONDS.
RECONNECT_INITIAL_SECONDS = 0.5
# After a 200 to the create, the first wait before the channel is read; it doubles,
# and all of them together stay within CHANNEL_CONFIRM_SECONDS (shared.settings,
# where the run budget counts it).
CHANNEL_POLL_FIRST_SECONDS = 0.2
# The Conversation steps after the outcome (worker.aftercare, worker.hand_back):
# each is tried this many times at most, waiting from the first wait, doubling,
# or what Retry-After asks, up to the cap; all within AFTERCARE_SECONDS.
AFTERCARE_TRIES = 3
AFTERCARE_FIRST_WAIT_SECONDS = 0.5
AFTERCARE_MAX_WAIT_SECONDS = 4.0
# A hand-back whose handover has not finished its own steps yet comes back after this.
HAND_BACK_DEFER_SECONDS = 5.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when
    it is neither (garbage, NaN). Clamped to 0..MAX_RETRY_AFTER_SECONDS; the
    floor is `bounded_wait`'s job."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
            if moment.tzinfo is None:
                return None
            seconds = moment.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def bounded_wait(proposed: float | None, floor: float, cap: float) -> float:
    """`proposed` seconds held to `floor <= wait <= cap`; what is not a number
    (None, NaN) counts as the floor. A cap below the floor wins (the caller is
    out of time and gives up or stops at its deadline); never below 0.

    Every wait before Twilio is asked again goes through here: in-job retries,
    arq re-queues, rate-limit waits and TaskRouter polls.
    """
    if proposed is None or math.isnan(proposed):
        proposed = floor
    wait = min(max(proposed, floor), cap)
    return wait if wait > 0.0 else 0.0


def retry_floor(settings: Settings) -> float:
    """The shortest wait before Twilio is asked again for one handover."""
    return max(settings.backoff_initial_seconds, MIN_WAIT_SECONDS)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, FlexError) and exc.retryable


class wait_retry_after_or_jitter:
    """Twilio's Retry-After when it sent one, else full-jitter exponential backoff
    drawn above the floor; either way bounded by `bounded_wait`.

    `cap()` is the time left to the handover's deadline (none: no cap but
    MAX_RETRY_AFTER_SECONDS).
    """

    def __init__(self, initial: float, maximum: float, cap: Callable[[], float] | None = None):
        self._floor = max(initial, MIN_WAIT_SECONDS)
        self._initial = initial
        self._maximum = maximum
        self._cap = cap or (lambda: MAX_RETRY_AFTER_SECONDS)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is None:
            retry_after = self._jitter(retry_state.attempt_number)
        return bounded_wait(retry_after, self._floor, self._cap())

    def _jitter(self, attempt_number: int) -> float:
        exponent = min(max(attempt_number - 1, 0), 64)
        high = min(self._initial * 2.0**exponent, self._maximum)
        return random.uniform(self._floor, max(self._floor, high))  # noqa: S311 - jitter, not a secret


class stop_at_deadline(stop_base):
    """Stop before a wait that would end at or past the handover's deadline."""

    def __init__(self, deadline: float, clock: Callable[[], float] = now):
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock() + (retry_state.upcoming_sleep or 0.0) >= self._deadline


def in_job_retrying(
    settings: Settings,
    before_sleep: Callable[[FlexError, float], Awaitable[None]],
    deadline: float | None = None,
) -> AsyncRetrying:
    """Retries within one job run; `before_sleep(error, seconds)` records the wait.
    `deadline` (epoch seconds): the handover's; no wait reaches past it."""

    async def record_wait(retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        await before_sleep(error, retry_state.upcoming_sleep)  # type: ignore[arg-type]  # is_retryable: a FlexError

    def time_left() -> float:
        return MAX_RETRY_AFTER_SECONDS if deadline is None else deadline - now()

    stop: stop_base = stop_before_delay(settings.retry_budget_seconds)
    if deadline is not None:
        stop = stop | stop_at_deadline(deadline)
    return AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=wait_retry_after_or_jitter(
            settings.backoff_initial_seconds, settings.backoff_max_seconds, time_left
        ),
        stop=stop,
        before_sleep=record_wait,
        reraise=True,
    )


def requeue_delay(error: FlexError, settings: Settings, time_left: float | None = None) -> float:
    """How long arq should wait before running the job again: Twilio's Retry-After
    or the requeue delay, at least the floor and at most `time_left` (to the
    handover's deadline)."""
    proposed = settings.requeue_delay_seconds if error.retry_after is None else error.retry_after
    cap = MAX_RETRY_AFTER_SECONDS if time_left is None else time_left
    return bounded_wait(proposed, retry_floor(settings), cap)


def next_run_delay(
    error: FlexError, settings: Settings, time_left: float, attempt_in_flight: bool
) -> float | None:
    """How long arq waits before the job runs again after `error` ended a run's
    retries, or None: no run is worth it (its wait reaches the handover's
    deadline, `time_left` from now). An attempt still in flight gets one last
    run at the deadline instead, whose lookup decides the outcome."""
    delay = requeue_delay(error, settings, time_left=time_left)
    if delay < time_left:
        return delay
    if not attempt_in_flight:
        return None
    return max(time_left, MIN_WAIT_SECONDS)


def defer_delay(proposed: float, cap: float) -> float:
    """A hand-back to arq: `proposed` held to `MIN_WAIT_SECONDS <= defer <= cap`,
    and never below the floor even when the cap is (past the deadline: back at once)."""
    return max(bounded_wait(proposed, MIN_WAIT_SECONDS, cap), MIN_WAIT_SECONDS)


def affordable_wait(run_time_left: float | None, attempt_timeout: float) -> float:
    """The longest a create may wait in the shared rate limit when its run must end
    `run_time_left` from now (None: no run deadline), leaving room for the create
    itself, reading its channel and writing its outcome. Negative when the run is
    already out of time."""
    if run_time_left is None:
        return MAX_WAIT_SECONDS
    return run_time_left - (attempt_timeout + CHANNEL_CONFIRM_SECONDS + OUTCOME_MARGIN_SECONDS)


def slot_wait(wait: float, affordable: float) -> float:
    """How long to sleep for a reserved rate-limit slot: the bucket's own answer,
    not an upstream's, so no floor; never past what the run said it could afford."""
    return bounded_wait(wait, 0.0, min(max(affordable, 0.0), MAX_WAIT_SECONDS))


def reconnect_delays(cap: float) -> Iterator[float]:
    """0.5 s, doubling up to `cap` (WORKER_RECONNECT_MAX_SECONDS), then `cap` for good."""
    delay = min(RECONNECT_INITIAL_SECONDS, cap)
    while True:
        yield delay
        delay = min(delay * 2, cap)


def aftercare_wait(error: FlexError, tries_done: int) -> float | None:
    """The wait before trying a Conversation step again, or None: give up (a
    refusal, or AFTERCARE_TRIES made). These steps come after the outcome, so
    they are never worth more than a few seconds of a worker slot."""
    if not error.retryable or tries_done >= AFTERCARE_TRIES:
        return None
    proposed = error.retry_after
    if proposed is None:
        proposed = AFTERCARE_FIRST_WAIT_SECONDS * 2 ** (tries_done - 1)
    return bounded_wait(proposed, AFTERCARE_FIRST_WAIT_SECONDS, AFTERCARE_MAX_WAIT_SECONDS)


def channel_poll_waits(
    first: float = CHANNEL_POLL_FIRST_SECONDS, total: float = CHANNEL_CONFIRM_SECONDS
) -> tuple[float, ...]:
    """The waits before each read of a new Interaction's channel: `first`,
    doubling, for as long as a read still starts before `total` seconds have
    passed (0.2, 0.4, 0.8, 1.6, 3.2 by default: reads at 0.2, 0.6, 1.4, 3.0 and
    6.2 s, the last one given what is left of the 10 s). A channel usually
    leaves `setup` within a second, so the early reads are close together; the
    bound keeps a channel that never answers from holding the run.
    """
    if not first > 0.0 or not total > 0.0:
        return ()
    waits: list[float] = []
    spent, wait = 0.0, first
    while spent + wait < total:
        waits.append(wait)
        spent += wait
        wait *= 2
    return tuple(waits)
