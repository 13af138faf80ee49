"""Creating the Interaction without creating it twice.

`POST /v1/Interactions` has no idempotency key, and a timeout, a reset or a
5xx says nothing about whether Twilio acted. So each request is counted and
marked in flight in one write before it leaves; a definite answer takes it out
of flight, an unanswered one leaves it there. Whenever an attempt is still in
flight, in this run or in the next, the next step is a TaskRouter lookup
(`worker.task_lookup`), never another request: a task proves the Interaction
exists, and only "no task within the grace window" allows sending again.
"""

from __future__ import annotations

import logging

from shared.model import now
from worker.context import HandoverContext
from worker.errors import FlexError
from worker.flex_client import CreatedInteraction
from worker.interaction import InteractionPayload
from worker.retry import in_job_retrying
from worker.task_lookup import find_interaction, lookup_window_end, next_create_at

logger = logging.getLogger(f"flex_handover.{__name__}")


class Delivery:
    """One run's attempts for one handover; remembers whether one is in flight.

    `deadline` (epoch seconds) is the handover's: no wait of this run reaches past it.
    """

    def __init__(
        self,
        context: HandoverContext,
        handover_id: str,
        in_flight_since: float | None,
        deadline: float,
    ):
        self._context = context
        self._handover_id = handover_id
        self.in_flight_since = in_flight_since
        self._deadline = deadline

    async def create(self, payload: InteractionPayload) -> CreatedInteraction:
        """Look-or-send with in-job retries; raises the last FlexError."""
        settings = self._context.settings
        async for attempt in in_job_retrying(settings, self._record_wait, self._deadline):
            with attempt:
                found = await self.settle()
                return found if found is not None else await self._send(payload)
        raise AssertionError("unreachable: tenacity re-raises the last error")

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
        found = await find_interaction(
            self._context.flex,
            settings,
            handover_id,
            self.in_flight_since,
            window_end=window_end,
        )
        if found is None:
            await store.settle_in_flight(handover_id)
            self.in_flight_since = None
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
        await self._context.rate_limit.acquire(max_defer=self._deadline - now())
        self.in_flight_since = await store.start_attempt(handover_id)
        try:
            return await self._context.flex.create_interaction(payload)
        except FlexError as error:
            await store.end_attempt(
                handover_id, error.to_handover_error(), ambiguous=error.ambiguous
            )
            if not error.ambiguous:
                self.in_flight_since = None
            raise

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
