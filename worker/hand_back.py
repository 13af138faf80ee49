"""The hand-back job: the agent's task ended, so the Conversation hears it.

`/webhooks/taskrouter` records the end of a handover's task once and queues
this job (`shared/lua/hand_back.lua`). It sets the Conversation's
`flexHandover.state` to `ended` (merged, every other attribute kept, and only
while the mark is still this handover's: a newer handover's mark is left
alone) and, for a target with `return_to_bot`, puts back the webhooks the
handover removed, so the bot answers the customer again.

An end event can come before the handover's own run has finished (its outcome
and the Conversation steps after it): then the job comes back later, and gives
up once the handover is past any run's reach. Like those steps, it is best
effort: the record says what happened (`handed_back`, `aftercare_error`). A voice
handover's task (a call Twilio enqueued, `api.voice`) has no Conversation: its end
is only recorded (`handed_back: true`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from arq.worker import Retry
from redis.exceptions import RedisError

from shared.connections import redis_error_text
from shared.logging import add_log_context, set_log_context
from shared.model import FINAL_STATES, KIND_VOICE, HandoverRecord, Status, now
from shared.settings import AFTERCARE_SECONDS
from shared.store import AFTERCARE_PENDING
from worker.aftercare import ENDED, NotOurMark, merge_into_conversation, tried
from worker.context import HandoverContext
from worker.conversation_client import ConversationWebhook
from worker.errors import FlexError
from worker.retry import HAND_BACK_DEFER_SECONDS, REDIS_ERROR_DEFER_SECONDS

logger = logging.getLogger(f"flex_handover.{__name__}")


async def hand_back_handover(ctx: dict[str, Any], handover_id: str) -> str:
    """arq entry point; returns what it did, for arq's log."""
    context: HandoverContext = ctx["handover"]
    set_log_context(handover_id=handover_id)
    try:
        record = await context.store.get(handover_id)
        if record is None:
            logger.warning("hand-back of %s: no status record (expired)", handover_id)
            return "missing"
        add_log_context(
            conversation_sid=record.request.conversation_sid, target=record.request.target
        )
        if record.handed_back is not None:
            return "done already"
        if record.state not in FINAL_STATES or record.aftercare == AFTERCARE_PENDING:
            if now() < _last_run_by(record, context):
                raise Retry(defer=HAND_BACK_DEFER_SECONDS)
            logger.warning("hand-back of %s: its handover never finished", handover_id)
            await context.store.finish_hand_back(
                handover_id,
                {
                    "handed_back": "0",
                    "aftercare_error": "the hand-back: the handover never finished",
                },
            )
            return "abandoned"
        if record.state != Status.SUCCEEDED:
            return "nothing to hand back"  # no agent got it: its tasks' ends mean nothing
        if record.ended_at is None:
            ended = await _judge_early_end(context, record)
            if ended is None:
                return "not the task that reached the agent"
            record = ended
        if record.request.kind == KIND_VOICE:
            # A call Twilio enqueued (api.voice): no Conversation to tell, no webhooks.
            await context.store.finish_hand_back(handover_id, {"handed_back": "1"})
            logger.info("voice handover %s ended (%s)", handover_id, record.ended_by)
            return "voice: nothing to hand back"
        return await _hand_back(context, record)
    except RedisError as exc:
        logger.warning(
            "hand-back of %s: redis error, retrying later: %s", handover_id, redis_error_text(exc)
        )
        raise Retry(defer=REDIS_ERROR_DEFER_SECONDS) from exc


def _last_run_by(record: HandoverRecord, context: HandoverContext) -> float:
    """After this, no run of the handover can still be coming (max age, plus one
    recovery of a killed run): waiting longer is waiting for nothing."""
    settings = context.settings
    return record.deadline_from + settings.max_age_seconds + settings.recovery_seconds


async def _judge_early_end(
    context: HandoverContext, record: HandoverRecord
) -> HandoverRecord | None:
    """An end that came before the outcome counts if it was the succeeded attempt's
    task (or a task that carried no attempt id); then it ends the handover."""
    attempt = record.succeeded_attempt or ""
    end = record.early_ends.get(attempt) or record.early_ends.get("")
    if end is None:
        logger.info(
            "hand-back of %s: the task that ended early was another attempt's; waiting for "
            "the agent's",
            record.handover_id,
        )
        return None
    await context.store.promote_early_end(record.handover_id, end, attempt)
    return dataclasses.replace(
        record, ended_at=end.at, ended_by=end.event_type, ended_task_sid=end.task_sid
    )


async def _hand_back(context: HandoverContext, record: HandoverRecord) -> str:
    handover_id = record.handover_id
    target = context.settings.targets.get(record.request.target)
    errors: list[str] = []
    restored = 0
    try:
        async with asyncio.timeout(AFTERCARE_SECONDS):
            try:
                await tried(
                    "telling the Conversation the handover ended",
                    lambda: merge_into_conversation(
                        context,
                        record.request.conversation_sid,
                        {"state": ENDED, "endedBy": record.ended_by},
                        only_for=handover_id,
                    ),
                )
            except NotOurMark:
                # A newer handover silenced the bot again: its webhooks are its own.
                logger.info("hand-back of %s: a newer handover has the Conversation", handover_id)
                await context.store.finish_hand_back(
                    handover_id,
                    {
                        "handed_back": "0",
                        "aftercare_error": "a newer handover has the Conversation",
                    },
                )
                return "superseded"
            except (FlexError, ValueError) as error:
                errors.append(f"marking the Conversation ended: {error}")
            if target is not None and target.return_to_bot and record.removed_webhooks:
                try:
                    restored = await tried(
                        "restoring the bot's webhooks", lambda: _restore(context, record)
                    )
                except FlexError as error:
                    errors.append(f"restoring the bot's webhooks: {error}")
    except TimeoutError:
        errors.append(f"the hand-back did not finish within {AFTERCARE_SECONDS:g}s")
    fields = {"handed_back": "0" if errors else "1", "restored_webhooks": str(restored)}
    if errors:
        fields["aftercare_error"] = "; ".join(errors)
        logger.warning("hand-back of %s incomplete: %s", handover_id, fields["aftercare_error"])
    else:
        logger.info(
            "handover %s handed back (%s), %d webhook(s) restored",
            handover_id,
            record.ended_by,
            restored,
        )
    await context.store.finish_hand_back(handover_id, fields)
    return "handed back" if not errors else "handed back in part"


async def _restore(context: HandoverContext, record: HandoverRecord) -> int:
    """Create again each removed webhook not there already (a second run, or an
    operator who put it back, must not make two); returns how many were created."""
    conversations, conversation_sid = context.conversations, record.request.conversation_sid
    present = {
        _configuration(webhook) for webhook in await conversations.list_webhooks(conversation_sid)
    }
    created = 0
    for removed in map(ConversationWebhook.from_dict, record.removed_webhooks):
        if _configuration(removed) in present:
            continue
        await conversations.create_webhook(conversation_sid, removed)
        present.add(_configuration(removed))
        created += 1
    return created


def _configuration(webhook: ConversationWebhook) -> tuple[object, ...]:
    """What makes two webhooks the same one, whatever their sids."""
    return (
        webhook.target,
        webhook.url,
        (webhook.method or "post").lower(),
        tuple(sorted(webhook.filters)),
        tuple(sorted(webhook.triggers)),
        webhook.flow_sid,
    )
