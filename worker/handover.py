"""The handover job: one arq job per handover, from `queued` to a final state.

Steps, each its own function: load the record, check it is still wanted,
build the Interaction, create it with in-job retries, then record the outcome
or hand the job back to arq for later. Whatever happens, the status record ends
`succeeded` or `failed` with a reason, never stuck: errors we did not expect
fail the handover with their type named rather than vanish in arq's log.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from arq.worker import Retry
from redis.exceptions import RedisError

from shared.jobs import HandoverError, HandoverRecord, now
from shared.settings import Settings
from shared.store import HandoverStore
from worker.errors import FlexError
from worker.flex_client import CreatedInteraction, FlexClient
from worker.interaction import InteractionPayload, build_interaction, needs_friendly_name
from worker.retry import in_job_retrying, requeue_delay

logger = logging.getLogger("flex_handover.worker")

REDIS_RETRY_DEFER_SECONDS = 5.0


@dataclass
class HandoverContext:
    """What every job needs, built once at worker start-up."""

    settings: Settings
    store: HandoverStore
    flex: FlexClient


async def deliver_handover(ctx: dict[str, Any], handover_id: str) -> str:
    """arq entry point; returns the final or current state for arq's log."""
    context: HandoverContext = ctx["handover"]
    try:
        async with asyncio.timeout(context.settings.run_budget_seconds):
            return await _deliver(context, handover_id)
    except TimeoutError:
        # The whole run overran its budget (a slow Redis, a slow name lookup):
        # treat it like a timed-out attempt rather than let arq's timeout hit.
        error = FlexError("the delivery run overran its time budget", retryable=True)
        return await _requeue_or_fail(context, handover_id, error)
    except RedisError as exc:
        logger.warning("handover %s: redis error, retrying later: %s", handover_id, exc)
        raise Retry(defer=REDIS_RETRY_DEFER_SECONDS) from exc
    except Retry:
        raise
    except Exception as exc:
        logger.exception("handover %s: unexpected error", handover_id)
        await context.store.mark_failed(
            handover_id, HandoverError(f"internal error: {type(exc).__name__}")
        )
        return "failed"


async def _deliver(context: HandoverContext, handover_id: str) -> str:
    settings, store = context.settings, context.store
    record = await store.get(handover_id)
    if record is None:
        logger.warning("handover %s: no status record (expired), nothing to deliver", handover_id)
        return "missing"
    if record.state.is_final:
        return record.state.value
    if now() >= _deadline(record, settings):
        return await _fail(
            context, handover_id, record.error or HandoverError("expired before delivery")
        )
    target = settings.targets.get(record.request.target)
    if target is None or settings.flex_workspace_sid is None:
        return await _fail(
            context,
            handover_id,
            HandoverError(f"target '{record.request.target}' is not configured on this worker"),
        )
    await store.mark_running(handover_id)
    friendly_name = None
    if needs_friendly_name(record.request.identity):
        friendly_name = await context.flex.friendly_name(record.request.identity.value)
    payload = build_interaction(
        handover_id, record.request, target, settings.flex_workspace_sid, friendly_name
    )
    try:
        created = await _create_with_retries(context, handover_id, payload)
    except FlexError as error:
        if not error.retryable:
            return await _fail(context, handover_id, error.to_handover_error())
        return await _requeue_or_fail(context, handover_id, error)
    await store.mark_succeeded(handover_id, created.interaction_sid, created.channel_sid)
    logger.info("handover %s succeeded: %s", handover_id, created.interaction_sid)
    return "succeeded"


async def _create_with_retries(
    context: HandoverContext, handover_id: str, payload: InteractionPayload
) -> CreatedInteraction:
    """`POST /v1/Interactions` with in-job retries; raises the last FlexError."""

    async def record_wait(error: FlexError, seconds: float) -> None:
        logger.info(
            "handover %s: attempt failed (%s), retrying in %.2fs", handover_id, error, seconds
        )
        await context.store.mark_retrying(handover_id, error.to_handover_error(), now() + seconds)

    async for attempt in in_job_retrying(context.settings, record_wait):
        with attempt:
            await context.store.count_attempt(handover_id)
            return await context.flex.create_interaction(payload)
    raise AssertionError("unreachable: tenacity re-raises the last error")


async def _requeue_or_fail(
    context: HandoverContext, handover_id: str, error: FlexError
) -> str:
    """Out of in-job budget: come back later through arq, or give up at max age."""
    record = await context.store.get(handover_id)
    if record is None:
        return "missing"
    delay = requeue_delay(error, context.settings)
    next_attempt_at = now() + delay
    if next_attempt_at >= _deadline(record, context.settings):
        failure = HandoverError(
            f"gave up after {record.attempts} attempts: {error.message}", error.status, error.code
        )
        return await _fail(context, handover_id, failure)
    await context.store.mark_retrying(handover_id, error.to_handover_error(), next_attempt_at)
    logger.info("handover %s: requeued for %.1fs: %s", handover_id, delay, error.message)
    raise Retry(defer=delay)


async def _fail(context: HandoverContext, handover_id: str, error: HandoverError) -> str:
    await context.store.mark_failed(handover_id, error)
    logger.warning("handover %s failed: %s", handover_id, error.message)
    return "failed"


def _deadline(record: HandoverRecord, settings: Settings) -> float:
    """When the handover stops being worth delivering."""
    return record.deadline_from + settings.max_age_seconds
