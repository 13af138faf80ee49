"""Creating the Interaction without creating it twice.

`POST /v1/Interactions` has no idempotency key, and a timeout, a reset or a
5xx says nothing about whether Twilio acted. So each request is counted and
marked in flight in one write before it leaves; a definite answer takes it out
of flight, an unanswered one leaves it there. Whenever an attempt is still in
flight, in this run or in the next, the next step is a TaskRouter lookup
(`worker.task_lookup`), never another request: a task proves the Interaction
exists, and only "no task within the grace window" allows sending again.

Each attempt carries an id of its own in its task's attributes
(`handoverAttempt`, `worker.interaction.with_attempt`), kept in the record
beside `in_flight_since`, and the lookup counts that attempt's task only: after
a channel failed (`worker.confirm`) the handover has an Interaction, and maybe
a task, that delivered nothing, and that task must not pass for proof that a
later, unanswered attempt went through.

An Interaction is only delivered once its channel says so: after a 200 (or a
task found for an unanswered attempt) the channel is read, and a failed one
ends the attempt as not delivered (out of flight, with the channel's error in
the record) so the retry policy makes a new one.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable

from arq.worker import Retry

from shared.logging import count_attempt
from shared.model import ChannelFailure, now
from worker.confirm import UNCONFIRMED, confirm_channel
from worker.context import HandoverContext
from worker.errors import FlexError
from worker.flex_client import CreatedInteraction
from worker.interaction import InteractionPayload, with_attempt
from worker.retry import in_job_retrying
from worker.task_lookup import find_interaction, lookup_window_end, next_create_at

logger = logging.getLogger(f"flex_handover.{__name__}")


class Delivery:
    """One run's attempts for one handover; remembers whether one is in flight.

    `deadline` (epoch seconds) is the handover's: no wait of this run reaches past it.
    `on_answered` is called when a create or a lookup has given an Interaction
    (the worker may then lend the run's job slot: `worker.arq_worker`).
    """

    def __init__(
        self,
        context: HandoverContext,
        handover_id: str,
        in_flight_since: float | None,
        deadline: float,
        in_flight_attempt: str | None = None,
        on_answered: Callable[[], object] = lambda: None,
    ):
        self._context = context
        self._on_answered = on_answered
        self._handover_id = handover_id
        self.in_flight_since = in_flight_since
        self.in_flight_attempt = in_flight_attempt
        self._deadline = deadline

    async def create(self, payload: InteractionPayload) -> CreatedInteraction:
        """Look-or-send, then confirm, with in-job retries; raises the last FlexError
        (a channel that failed is a retryable one)."""
        settings = self._context.settings
        async for attempt in in_job_retrying(settings, self._record_wait, self._deadline):
            with attempt:
                found = await self.settle()
                created = found if found is not None else await self._send(payload)
                # What is left mostly waits (the channel's first read is later).
                self._on_answered()
                return await self.confirm(created)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def confirm(self, created: CreatedInteraction) -> CreatedInteraction:
        """`created` with its channel's status, once the channel shows it delivers
        (or stays unreadable: `unconfirmed`). A failed channel ends the attempt as
        not delivered and raises a retryable FlexError naming its error."""
        created = dataclasses.replace(created, attempt_id=self.in_flight_attempt)
        if created.interaction_sid is None or created.channel_sid is None:
            # A task without Flex's sids: it exists, but its channel cannot be read.
            return dataclasses.replace(created, channel_status=UNCONFIRMED)
        outcome = await confirm_channel(
            self._context.flex, self._handover_id, created.interaction_sid, created.channel_sid
        )
        if outcome.failure is None:
            return dataclasses.replace(created, channel_status=outcome.status)
        error = _channel_error(outcome.failure)
        await self._context.store.channel_failed(
            self._handover_id, error.to_handover_error(), outcome.failure
        )
        self.in_flight_since = self.in_flight_attempt = None
        logger.warning(
            "handover %s: %s; it delivered nothing, so a new attempt may follow",
            self._handover_id,
            error.message,
        )
        raise error

    async def settle(self) -> CreatedInteraction | None:
        """The Interaction an in-flight attempt made, or None once TaskRouter shows
        it made none (or nothing was in flight). Raises FlexError if the lookup fails."""
        if self.in_flight_since is None:
            return None
        store, handover_id = self._context.store, self._handover_id
        settings = self._context.settings
        window_end = lookup_window_end(
            self.in_flight_since,
            now(),
            settings.attempt_timeout_seconds,
            settings.lookup_grace_seconds,
        )
        # No new request before the window ends: the record says so meanwhile.
        await store.count_lookup(handover_id, next_attempt_at=window_end)
        metrics = self._context.metrics
        try:
            found = await find_interaction(
                self._context.flex,
                settings,
                handover_id,
                self.in_flight_since,
                window_end=window_end,
                attempt_id=self.in_flight_attempt,
            )
        except FlexError:
            metrics.looked_up("failed")
            raise
        metrics.looked_up("not_found" if found is None else "found")
        if found is None:
            await store.settle_in_flight(handover_id)
            self.in_flight_since = self.in_flight_attempt = None
            logger.info(
                "handover %s: no task for the unanswered attempt, sending again", handover_id
            )
        else:
            logger.info(
                "handover %s: the unanswered attempt did create %s (found by TaskRouter lookup)",
                handover_id,
                found.interaction_sid or "an Interaction",
            )
        return found

    async def _send(self, payload: InteractionPayload) -> CreatedInteraction:
        store, handover_id = self._context.store, self._handover_id
        # FLEX_API_MAX_RPS; waiting is no attempt, and never past the deadline.
        await self._take_slot()
        attempt_id = new_attempt_id()
        started = await store.start_attempt(handover_id, attempt_id)
        if started is None:
            # The record is final (or gone): whatever finished it, nothing more is sent.
            raise FlexError("the handover finished or expired before this attempt: not sent")
        count_attempt()  # the store counted it too
        self.in_flight_since, self.in_flight_attempt = started, attempt_id
        try:
            created = await self._context.flex.create_interaction(with_attempt(payload, attempt_id))
        except FlexError as error:
            self._context.metrics.attempted(error)
            await store.end_attempt(
                handover_id, error.to_handover_error(), ambiguous=error.ambiguous
            )
            if not error.ambiguous:
                self.in_flight_since = self.in_flight_attempt = None
            raise
        self._context.metrics.attempted(None)
        return created

    async def _take_slot(self) -> None:
        """FLEX_API_MAX_RPS's slot, its wait (or hand-back to arq) counted."""
        rate_limit, metrics = self._context.rate_limit, self._context.metrics
        if not rate_limit.max_rps:
            return
        started = time.monotonic()
        try:
            await rate_limit.acquire(max_defer=self._deadline - now())
        except Retry:
            metrics.rate_limit_deferred()
            raise
        metrics.rate_limit_waited(time.monotonic() - started)

    async def _record_wait(self, error: FlexError, seconds: float) -> None:
        logger.info(
            "handover %s: attempt failed (%s), retrying in %.2fs",
            self._handover_id,
            error,
            seconds,
        )
        settings = self._context.settings
        next_attempt_at = next_create_at(
            now() + seconds,
            self.in_flight_since,
            settings.attempt_timeout_seconds,
            settings.lookup_grace_seconds,
        )
        await self._context.store.mark_retrying(
            self._handover_id, error.to_handover_error(), next_attempt_at
        )


def new_attempt_id() -> str:
    """64 random bits, as hex: unique among a handover's attempts (and beyond), so
    a lookup's `handoverAttempt == "…"` finds the one attempt's task."""
    return "at_" + secrets.token_hex(8)


def _channel_error(failure: ChannelFailure) -> FlexError:
    """A failed channel as the retry policy sees it: temporary (a new attempt may
    open one) and not ambiguous (the attempt is over: nothing to look up)."""
    code = f" (error {failure.code})" if failure.code is not None else ""
    message = f"the channel of {failure.interaction_sid} failed{code}: {failure.message}"
    return FlexError(message, code=failure.code, retryable=True)
