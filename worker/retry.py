"""The retry policy for one handover job, in one place.

Inside a job: tenacity retries what Twilio says is temporary (connection
errors, timeouts, 429, 5xx) with exponential backoff and full jitter, or
exactly the `Retry-After` Twilio asked for, until the in-job budget would be
overrun. Past that the job is handed back to arq with a delay (see
`worker.handover`), so a long wait never holds a worker slot. What a retry
does after an answer that never came (look for the task first) is
`worker.delivery`'s business, not the policy's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_random_exponential,
)

from shared.settings import Settings
from worker.errors import FlexError

MAX_RETRY_AFTER_SECONDS = 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, FlexError) and exc.retryable


class wait_retry_after_or_jitter:
    """Twilio's Retry-After when it sent one, else full-jitter exponential backoff."""

    def __init__(self, initial: float, maximum: float):
        self._backoff = wait_random_exponential(multiplier=initial, max=maximum)

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return self._backoff(retry_state)


def in_job_retrying(
    settings: Settings, before_sleep: Callable[[FlexError, float], Awaitable[None]]
) -> AsyncRetrying:
    """Retries within one job run; `before_sleep(error, seconds)` records the wait."""

    async def record_wait(retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        await before_sleep(error, retry_state.upcoming_sleep)  # type: ignore[arg-type]

    return AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=wait_retry_after_or_jitter(
            settings.backoff_initial_seconds, settings.backoff_max_seconds
        ),
        stop=stop_before_delay(settings.retry_budget_seconds),
        before_sleep=record_wait,
        reraise=True,
    )


def requeue_delay(error: FlexError, settings: Settings) -> float:
    """How long arq should wait before running the job again."""
    if error.retry_after is not None:
        return max(error.retry_after, 0.01)
    return settings.requeue_delay_seconds
