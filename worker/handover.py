"""The handover job: one arq job per handover, from `queued` to a final state.

arq may run a job twice, even at the same time, so a run first takes the
conversation's delivery claim (`worker.claim`); a run that finds it taken
comes back later instead of calling Twilio. Taking it reads the record and
marks it running in the same round trip. Holding it, one function per step:
account for an attempt a dead run left in flight, check the handover is still
wanted, build the Interaction, create it (`worker.delivery` looks for an
unanswered attempt's task before it sends again, and reads the new channel
until it is active or failed), then record the outcome
(the final write also releases the claim) or hand the job back to arq for
later. Whatever happens, the status record ends `succeeded` or `failed` with a
reason, never stuck: errors we did not expect fail the handover with their
type named rather than vanish in arq's log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

from arq.worker import Retry
from redis.exceptions import RedisError

from shared.connections import redis_error_text
from shared.logging import add_log_context, set_log_context
from shared.model import FINAL_STATES, HandoverError, HandoverRecord, Status, now
from shared.settings import Settings, Target
from shared.store import AFTERCARE_HELD, AFTERCARE_PENDING, FINAL, MISSING, ClaimRelease
from worker.aftercare import run_aftercare
from worker.arq_worker import LEND_SLOT
from worker.context import HandoverContext
from worker.delivery import Delivery
from worker.errors import FlexError
from worker.flex_client import CreatedInteraction
from worker.interaction import InteractionPayload, build_interaction, needs_friendly_name
from worker.rate_limit import set_run_deadline
from worker.retry import CLAIM_BUSY_DEFER_SECONDS, REDIS_ERROR_DEFER_SECONDS, next_run_delay
from worker.task_lookup import next_create_at

logger = logging.getLogger(f"flex_handover.{__name__}")

_FINAL_VALUES = frozenset({Status.SUCCEEDED.value, Status.FAILED.value})


async def deliver_handover(
    ctx: dict[str, Any], handover_id: str, conversation_sid: str | None = None
) -> str:
    """arq entry point; returns the final or current state for arq's log. A job
    enqueued before jobs carried the conversation (`shared.arq_jobs`) has none."""
    context: HandoverContext = ctx["handover"]
    set_log_context(handover_id=handover_id, conversation_sid=conversation_sid)
    try:
        start, claim = await context.claims.begin(context.store, handover_id, conversation_sid)
        if start.record is not None:
            request = start.record.request
            add_log_context(
                conversation_sid=request.conversation_sid,
                target=request.target,
                attempt=start.record.attempts,
            )
        if start.outcome == MISSING:
            logger.warning(
                "handover %s: no status record (expired), nothing to deliver", handover_id
            )
            return "missing"
        if start.outcome == FINAL and start.state is not None:
            return start.state.value
        if claim is None or start.record is None:
            # Calling Twilio now could make a second Interaction, and the
            # record is the other run's to write: come back when it is done.
            _log_claim_holder(handover_id, start.holder)
            raise Retry(defer=CLAIM_BUSY_DEFER_SECONDS)
        async with context.claims.releasing(claim, handover_id):
            if start.outcome == AFTERCARE_HELD:
                # A run stopped between the outcome and its Conversation steps.
                await _aftercare(context, start.record, claim)
                return start.record.state.value
            return await _run_claimed(context, start.record, claim, _slot_lender(ctx))
    except RedisError as exc:
        logger.warning(
            "handover %s: redis error, retrying later: %s", handover_id, redis_error_text(exc)
        )
        raise Retry(defer=REDIS_ERROR_DEFER_SECONDS) from exc


def _slot_lender(ctx: dict[str, Any]) -> Callable[[], object]:
    """Lends this run's job slot once its create is answered (HandoverWorker's
    `lend_slot`); does nothing under a stock arq worker."""
    lend_slot = ctx.get(LEND_SLOT)
    job_id = ctx.get("job_id")
    if lend_slot is None or job_id is None:
        return lambda: None
    return functools.partial(lend_slot, job_id)


def _log_claim_holder(handover_id: str, holder_value: str | None) -> None:
    holder = (holder_value or "").rpartition(":")[0] or None
    logger.info(
        "handover %s: delivery claim held by %s, retrying in %gs",
        handover_id,
        "another run of it" if holder == handover_id else holder or "another run",
        CLAIM_BUSY_DEFER_SECONDS,
    )


async def _run_claimed(
    context: HandoverContext,
    record: HandoverRecord,
    claim: ClaimRelease,
    on_answered: Callable[[], object],
) -> str:
    """The run, then the Conversation steps its outcome calls for: a final write
    that kept the claim left them due (`worker.aftercare`)."""
    state = await _run_within_budget(context, record, claim, on_answered)
    if claim.released is None and state in _FINAL_VALUES:
        # The final write answers the record; without its answer (the budget
        # struck while it was on its way, or the write was refused) it is read.
        finished = claim.finished or await context.store.get(record.handover_id)
        if finished is not None and finished.aftercare == AFTERCARE_PENDING:
            await _aftercare(context, finished, claim)
    return state


async def _aftercare(context: HandoverContext, record: HandoverRecord, claim: ClaimRelease) -> None:
    """`run_aftercare`, whose own failures never change the outcome: an error we
    did not expect ends the steps, named in the record."""
    try:
        await run_aftercare(context, record, claim)
    except (Retry, RedisError):
        raise
    except Exception as exc:
        logger.exception(
            "handover %s: unexpected error in the Conversation steps", record.handover_id
        )
        await context.store.finish_aftercare(
            record.handover_id,
            {"aftercare": "done", "aftercare_error": f"internal error: {type(exc).__name__}"},
            release=claim,
        )


async def _run_within_budget(
    context: HandoverContext,
    record: HandoverRecord,
    claim: ClaimRelease,
    on_answered: Callable[[], object],
) -> str:
    """`_deliver` within the run budget, so arq's job timeout never strikes first."""
    handover_id = record.handover_id
    try:
        async with asyncio.timeout(context.settings.run_budget_seconds) as budget:
            set_run_deadline(budget.when())  # how long a rate-limit wait may last
            return await _deliver(context, record, claim, on_answered)
    except TimeoutError:
        # A slow Redis, a slow name lookup: treat it like a timed-out attempt.
        error = FlexError("the delivery run overran its time budget", retryable=True)
        return await _requeue_or_fail(context, handover_id, error, claim)
    except (Retry, RedisError):
        raise
    except Exception as exc:
        logger.exception("handover %s: unexpected error", handover_id)
        return await _fail(
            context, record, HandoverError(f"internal error: {type(exc).__name__}"), claim
        )


async def _deliver(
    context: HandoverContext,
    record: HandoverRecord,
    claim: ClaimRelease,
    on_answered: Callable[[], object],
) -> str:
    """`record` was read under the claim (`begin_run`): no run that held it
    before us left it final, and it is marked running. `on_answered` is called
    once a create is answered with an Interaction."""
    settings, handover_id = context.settings, record.handover_id
    record = await _account_for_lost_attempt(context, record, "its run stopped before an answer")
    deadline = _deadline(record, settings)
    delivery = Delivery(
        context,
        handover_id,
        record.in_flight_since,
        deadline,
        record.in_flight_attempt,
        on_answered=on_answered,
    )
    if now() >= deadline:
        return await _give_up(context, delivery, record, _expiry_reason(record), claim)
    target = settings.targets.get(record.request.target)
    if target is None or settings.flex_workspace_sid is None:
        reason = f"target '{record.request.target}' is not configured on this worker"
        return await _give_up(context, delivery, record, HandoverError(reason), claim)
    payload = await _build_payload(context, handover_id, record, target)
    try:
        created = await delivery.create(payload)
    except FlexError as error:
        if not error.retryable:
            return await _fail(context, record, error.to_handover_error(), claim)
        return await _requeue_or_fail(context, handover_id, error, claim)
    return await _succeed(context, record, created, claim)


async def _account_for_lost_attempt(
    context: HandoverContext, record: HandoverRecord, why: str
) -> HandoverRecord:
    """An attempt in flight with no error recorded beside it lost its run (SIGKILL,
    SIGTERM, the run budget) before Twilio answered: it is ambiguous like a timeout."""
    if record.in_flight_since is None or record.error is not None:
        return record
    error = HandoverError(f"attempt {record.attempts} got no answer: {why}")
    await context.store.end_attempt(record.handover_id, error, ambiguous=True)
    context.metrics.lost_attempt()
    logger.warning(
        "handover %s: %s; its outcome will be looked up", record.handover_id, error.message
    )
    return dataclasses.replace(
        record, error=error, ambiguous_attempts=record.ambiguous_attempts + 1
    )


async def _build_payload(
    context: HandoverContext, handover_id: str, record: HandoverRecord, target: Target
) -> InteractionPayload:
    friendly_name = None
    if needs_friendly_name(record.request.identity):
        friendly_name = await context.flex.friendly_name(record.request.identity.value)
    workspace_sid = context.settings.flex_workspace_sid or ""
    return build_interaction(handover_id, record.request, target, workspace_sid, friendly_name)


async def _requeue_or_fail(
    context: HandoverContext, handover_id: str, error: FlexError, claim: ClaimRelease | None = None
) -> str:
    """Out of in-job budget: come back later through arq, or give up at max age.

    An attempt still in flight at max age gets one more run, at the deadline,
    whose lookup decides between `succeeded` and `failed`.
    """
    record = await context.store.get(handover_id)
    if record is None:
        return "missing"
    if record.state in FINAL_STATES:
        # The outcome was written (the budget ran out while its answer was on
        # its way): it stands, and nothing is sent again.
        return record.state.value
    record = await _account_for_lost_attempt(context, record, error.message)
    settings = context.settings
    time_left = _deadline(record, settings) - now()
    delay = next_run_delay(error, settings, time_left, record.in_flight_since is not None)
    if delay is None:
        return await _fail(context, record, _gave_up(record.attempts, error), claim)
    next_attempt_at = next_create_at(
        now() + delay,
        record.in_flight_since,
        settings.attempt_timeout_seconds,
        settings.lookup_grace_seconds,
    )
    await context.store.mark_retrying(handover_id, error.to_handover_error(), next_attempt_at)
    logger.info("handover %s: requeued for %.1fs: %s", handover_id, delay, error.message)
    raise Retry(defer=delay)


async def _give_up(
    context: HandoverContext,
    delivery: Delivery,
    record: HandoverRecord,
    reason: HandoverError,
    claim: ClaimRelease | None = None,
) -> str:
    """Fail, unless an attempt still in flight turns out to have made an
    Interaction whose channel did not fail."""
    try:
        found = await delivery.settle()
    except FlexError as error:
        unsure = f"whether attempt {record.attempts} created an Interaction is unknown"
        if error.message not in reason.message:
            unsure += f": {error.message}"
        message = f"{reason.message} ({unsure})"
        return await _fail(context, record, dataclasses.replace(reason, message=message), claim)
    if found is None:
        return await _fail(context, record, reason, claim)
    try:
        confirmed = await delivery.confirm(found)
    except FlexError as error:
        message = f"{reason.message} (attempt {record.attempts}: {error.message})"
        return await _fail(context, record, dataclasses.replace(reason, message=message), claim)
    return await _succeed(context, record, confirmed, claim)


async def _succeed(
    context: HandoverContext,
    record: HandoverRecord,
    created: CreatedInteraction,
    claim: ClaimRelease | None = None,
) -> str:
    """Succeeded; the claim is kept for the Conversation steps (marking it)."""
    handover_id = record.handover_id
    finished = await context.store.mark_succeeded(
        handover_id,
        created.interaction_sid,
        created.channel_sid,
        found_by_lookup=created.found_by_lookup,
        channel_status=created.channel_status,
        attempt_id=created.attempt_id,
        aftercare=claim is not None,
    )
    if claim is not None:
        claim.finished = finished
    context.metrics.finished(Status.SUCCEEDED, record.request.target)
    context.metrics.delivered(record.deadline_from)
    how = " (found by TaskRouter lookup)" if created.found_by_lookup else ""
    logger.info(
        "handover %s succeeded: %s%s, channel %s",
        handover_id,
        created.interaction_sid,
        how,
        created.channel_status or "not read",
    )
    return "succeeded"


async def _fail(
    context: HandoverContext,
    record: HandoverRecord,
    error: HandoverError,
    claim: ClaimRelease | None = None,
) -> str:
    """Failed; with a fallback message to post, the claim is kept for it."""
    target = context.settings.targets.get(record.request.target)
    fallback_due = claim is not None and target is not None and target.fallback_message is not None
    finished = await context.store.mark_failed(
        record.handover_id, error, aftercare=fallback_due, release=None if fallback_due else claim
    )
    if fallback_due and claim is not None:
        claim.finished = finished
    context.metrics.finished(Status.FAILED, record.request.target)
    logger.warning("handover %s failed: %s", record.handover_id, error.message)
    return "failed"


def _expiry_reason(record: HandoverRecord) -> HandoverError:
    if record.error is None:
        return HandoverError("expired before delivery")
    if record.attempts == 0:
        return record.error
    return _gave_up(record.attempts, record.error)


def _gave_up(attempts: int, error: FlexError | HandoverError) -> HandoverError:
    return HandoverError(
        f"gave up after {attempts} attempts: {error.message}", error.status, error.code
    )


def _deadline(record: HandoverRecord, settings: Settings) -> float:
    """When the handover stops being worth delivering."""
    return record.deadline_from + settings.max_age_seconds
