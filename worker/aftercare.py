"""The Conversation steps after a handover's outcome: tell the bot, silence it, or
tell the customer the truth.

After a success the Conversation's attributes get a `flexHandover` object
(`handoverId`, `state`, `interactionSid`, `target`, `at`) merged in, every other
attribute kept: a bot's message handler checks `flexHandover.state` and stays
quiet while the customer waits for the agent. A target's `silence_webhooks`
also removes the Conversation's webhooks whose URL starts with one of its
prefixes (the bot's), remembered in the record before they go so the hand-back
(`worker.hand_back`) can put them back. After a failure, a target's
`fallback_message` is posted into the Conversation once: the create has no
idempotency key, so the message carries a marker in its attributes and the
newest messages are searched for it before any post, also after a crash; and
none is posted once the conversation has a newer handover.

All of it is best effort and after the fact: a step that fails is tried a few
times (`worker.retry.aftercare_wait`), logged and shown in the record, and
never changes the outcome or sends the Interaction again. The final write
marks the record `aftercare: pending` and keeps the delivery claim; this
module's last write says `done` and releases it, so a worker killed in
between leaves the steps to the job's next run (`HandoverStore.begin_run`),
and two runs never post at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.model import HandoverRecord, Status, now
from shared.settings import AFTERCARE_SECONDS, Target
from shared.store import ClaimRelease
from worker.context import HandoverContext
from worker.conversation_client import ConversationWebhook, PostedMessage
from worker.errors import FlexError
from worker.retry import aftercare_wait

logger = logging.getLogger(f"flex_handover.{__name__}")

MARK = "flexHandover"
"""The Conversation attribute a bot checks."""
HANDED_OVER = "handed_over"
ENDED = "ended"
FALLBACK_FOR = "fallbackFor"
"""The key of the fallback message's marker, in its `flexHandover` attribute."""

Result = TypeVar("Result")


class NotAnObject(ValueError):
    """The Conversation's attributes are not a JSON object: merging would overwrite them."""


class NotOurMark(ValueError):
    """The Conversation's `flexHandover` is a newer handover's: not ours to change."""


# --------------------------------------------------------------------------
# Pure: what to write, what to remove, whether the fallback was posted.
# --------------------------------------------------------------------------


def handover_mark(
    handover_id: str, state: str, interaction_sid: str | None, target: str, at: float
) -> dict[str, Any]:
    return {
        "handoverId": handover_id,
        "state": state,
        "interactionSid": interaction_sid,
        "target": target,
        "at": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds"),
    }


def merged_attributes(
    attributes: str, changes: dict[str, Any], only_for: str | None = None
) -> str | None:
    """`attributes` (the Conversation's JSON text) with `changes` merged into its
    `flexHandover` object, every other attribute as it was; None when nothing
    would change (no write needed), or, with `only_for`, when there is no mark.
    Raises NotAnObject rather than overwrite, and, with `only_for`, NotOurMark
    when the mark is another handover's."""
    try:
        document = json.loads(attributes) if attributes.strip() else {}
    except (ValueError, RecursionError):
        raise NotAnObject("the Conversation's attributes are not JSON") from None
    if not isinstance(document, dict):
        raise NotAnObject("the Conversation's attributes are not a JSON object")
    current = document.get(MARK)
    mark = dict(current) if isinstance(current, dict) else {}
    if current is not None and not isinstance(current, dict):
        raise NotAnObject(f"the Conversation's attribute {MARK} is not a JSON object")
    if only_for is not None and not mark:
        return None
    if only_for is not None and mark.get("handoverId") != only_for:
        raise NotOurMark(f"the Conversation's {MARK} is another handover's")
    unchanged = {key: mark.get(key) for key in changes if key != "at"} == {
        key: value for key, value in changes.items() if key != "at"
    }
    if unchanged:
        return None
    mark.update(changes)
    document[MARK] = mark
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def webhooks_to_silence(
    webhooks: Iterable[ConversationWebhook], prefixes: Sequence[str]
) -> list[ConversationWebhook]:
    """The plain webhooks whose URL starts with one of `prefixes` (studio and
    trigger webhooks are left alone)."""
    return [
        webhook
        for webhook in webhooks
        if webhook.target == "webhook"
        and webhook.url is not None
        and webhook.url.startswith(tuple(prefixes))
    ]


def fallback_attributes(handover_id: str) -> str:
    return json.dumps({MARK: {FALLBACK_FOR: handover_id}}, separators=(",", ":"))


def posted_fallback(messages: Iterable[PostedMessage], handover_id: str) -> str | None:
    """The sid of the fallback message already posted for `handover_id`, if any."""
    for message in messages:
        if not message.attributes:
            continue
        try:
            attributes = json.loads(message.attributes)
        except (ValueError, RecursionError):
            continue
        mark = attributes.get(MARK) if isinstance(attributes, dict) else None
        if isinstance(mark, dict) and mark.get(FALLBACK_FOR) == handover_id:
            return message.sid
    return None


# --------------------------------------------------------------------------
# I/O: the steps, each tried a few times.
# --------------------------------------------------------------------------


class _Outcome:
    """What the steps did, as the record's final write stores it."""

    def __init__(self, record: HandoverRecord):
        self.fields: dict[str, str] = {"aftercare": "done"}
        self.errors: list[str] = []
        self.removed = [webhook for webhook in record.removed_webhooks if isinstance(webhook, dict)]

    def failed(self, step: str, error: FlexError | NotAnObject | str) -> None:
        self.errors.append(f"{step}: {error}")


async def run_aftercare(
    context: HandoverContext, record: HandoverRecord, claim: ClaimRelease | None
) -> None:
    """Do the steps `record`'s outcome calls for, then write `aftercare: done`
    (releasing `claim`). Never raises FlexError; a Redis error is left to the job."""
    handover_id = record.handover_id
    target = context.settings.targets.get(record.request.target)
    outcome = _Outcome(record)
    try:
        async with asyncio.timeout(AFTERCARE_SECONDS):
            if record.state == Status.SUCCEEDED:
                await _mark_handed_over(context, record, outcome)
                if target is not None and target.silence_webhooks:
                    await _silence_bot(context, record, target, outcome)
            elif record.state == Status.FAILED and target is not None:
                await _post_fallback(context, record, target, outcome)
    except TimeoutError:
        outcome.failed("the Conversation steps", f"not finished within {AFTERCARE_SECONDS:g}s")
    if outcome.removed:
        outcome.fields["removed_webhooks"] = json.dumps(outcome.removed, separators=(",", ":"))
    if outcome.errors:
        outcome.fields["aftercare_error"] = "; ".join(outcome.errors)
        logger.warning(
            "handover %s: the Conversation was not fully updated (the handover stays %s): %s",
            handover_id,
            record.state.value,
            outcome.fields["aftercare_error"],
        )
    await context.store.finish_aftercare(handover_id, outcome.fields, release=claim)


async def tried(step: str, call: Callable[[], Awaitable[Result]]) -> Result:
    """`call`, tried again after a temporary failure while `aftercare_wait`
    allows; raises the last FlexError."""
    tries = 0
    while True:
        tries += 1
        try:
            return await call()
        except FlexError as error:
            wait = aftercare_wait(error, tries)
            if wait is None:
                raise
            logger.info("%s failed (%s), trying again in %.2fs", step, error.message, wait)
            await asyncio.sleep(wait)


async def _mark_handed_over(
    context: HandoverContext, record: HandoverRecord, outcome: _Outcome
) -> None:
    conversation_sid = record.request.conversation_sid
    changes = handover_mark(
        record.handover_id, HANDED_OVER, record.interaction_sid, record.request.target, now()
    )
    try:
        await tried(
            "marking the Conversation",
            lambda: merge_into_conversation(context, conversation_sid, changes),
        )
    except (FlexError, NotAnObject) as error:
        outcome.fields["conversation_marked"] = "0"
        outcome.failed("marking the Conversation", error)
        return
    outcome.fields["conversation_marked"] = "1"


async def merge_into_conversation(
    context: HandoverContext,
    conversation_sid: str,
    changes: dict[str, Any],
    only_for: str | None = None,
) -> None:
    """Read, merge, write: the Conversation's own attributes are the customer's data.
    (Twilio offers no conditional write here: a writer between our read and write
    loses its change; the README says so.) `only_for`: see `merged_attributes`."""
    attributes = await context.conversations.fetch_attributes(conversation_sid)
    merged = merged_attributes(attributes, changes, only_for)
    if merged is not None:
        await context.conversations.update_attributes(conversation_sid, merged)


async def _silence_bot(
    context: HandoverContext, record: HandoverRecord, target: Target, outcome: _Outcome
) -> None:
    conversations, conversation_sid = context.conversations, record.request.conversation_sid

    async def silence() -> None:
        found = webhooks_to_silence(
            await conversations.list_webhooks(conversation_sid), target.silence_webhooks
        )
        known = {webhook.get("sid") for webhook in outcome.removed}
        new = [webhook.to_dict() for webhook in found if webhook.sid not in known]
        if new:
            # Remembered before they go: a crash after a delete must not lose one.
            outcome.removed += new
            await context.store.remember_removed_webhooks(record.handover_id, outcome.removed)
        for webhook in found:
            await conversations.delete_webhook(conversation_sid, webhook.sid)

    try:
        await tried("silencing the bot", silence)
    except FlexError as error:
        outcome.failed("removing the bot's webhooks", error)


async def _post_fallback(
    context: HandoverContext, record: HandoverRecord, target: Target, outcome: _Outcome
) -> None:
    if target.fallback_message is None or record.fallback_message_sid is not None:
        return
    conversations, conversation_sid = context.conversations, record.request.conversation_sid
    handover_id = record.handover_id
    newer = await context.store.current_handover(conversation_sid)
    if newer is not None and newer != handover_id:
        # A run of ours came back late (killed, or Redis away): the customer asked
        # again since, and "no agent" would be untrue of that newer handover.
        outcome.failed("the fallback message", f"not posted: the conversation has {newer}")
        return

    async def post_once() -> str:
        # Also after an unanswered post (this run's or a killed one's): look first.
        already = posted_fallback(
            await conversations.recent_messages(conversation_sid), handover_id
        )
        if already is not None:
            return already
        assert target.fallback_message is not None  # noqa: S101 - checked above; narrows
        return await conversations.post_message(
            conversation_sid,
            target.fallback_message,
            fallback_attributes(handover_id),
            target.fallback_author,
        )

    try:
        message_sid = await tried("posting the fallback message", post_once)
    except FlexError as error:
        outcome.failed("posting the fallback message", error)
        return
    outcome.fields["fallback_message_sid"] = message_sid
    logger.info("handover %s: fallback message %s posted", handover_id, message_sid)
