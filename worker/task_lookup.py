"""Did an unanswered attempt create its Interaction? Ask TaskRouter.

The Interactions API has no idempotency key and cannot be searched, but Flex
copies our routing attributes, `handoverId` included, onto the task it makes
for the Interaction, and adds `flexInteractionSid`. Task creation trails the
create call, so "no task" only counts once a grace window has passed since the
attempt could last have reached Twilio. A query that fails raises FlexError:
it never reads as "no task".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from shared.model import now
from shared.settings import Settings
from worker.flex_client import CreatedInteraction, FlexClient
from worker.interaction import HANDOVER_ATTEMPT_ATTRIBUTE, HANDOVER_ID_ATTRIBUTE
from worker.retry import bounded_wait

logger = logging.getLogger(f"flex_handover.{__name__}")

ASSIGNMENT_STATUSES = ("pending", "reserved", "assigned", "wrapping", "completed", "canceled")
"""All of them: a completed or canceled task carrying our handover id still proves the
Interaction was created, and posting again would hand the customer over a second time."""


def task_expression(handover_id: str, attempt_id: str | None = None) -> str:
    """TaskRouter's `EvaluateTaskAttributes` for our task (json.dumps quotes and
    escapes): the attempt's own task when it carried an id (unique: no need to
    name the handover too), else any task of the handover (an attempt made
    before attempts carried ids)."""
    if attempt_id is not None:
        return f"{HANDOVER_ATTEMPT_ATTRIBUTE} == {json.dumps(attempt_id)}"
    return f"{HANDOVER_ID_ATTRIBUTE} == {json.dumps(handover_id)}"


def lookup_window_end(
    in_flight_since: float, now: float, attempt_timeout: float, grace: float
) -> float:
    """When "no task" may be believed: `grace` after the attempt could last have
    reached Twilio (cut off at `attempt_timeout`), so a long-dead run's attempt
    needs one query, not a whole window."""
    return min(now, in_flight_since + attempt_timeout) + grace


def next_create_at(
    wake_at: float, in_flight_since: float | None, attempt_timeout: float, grace: float
) -> float:
    """When the next `POST /v1/Interactions` can go out if the job wakes at
    `wake_at`: then, or, with an attempt in flight, once the lookup's grace
    window has passed without a task (the `next_attempt_at` of the record)."""
    if in_flight_since is None:
        return wake_at
    return max(wake_at, lookup_window_end(in_flight_since, wake_at, attempt_timeout, grace))


def interaction_from_tasks(
    attributes: list[str], handover_id: str, attempt_id: str | None = None
) -> tuple[CreatedInteraction | None, int]:
    """The Interaction named by the first of our tasks, and how many of ours there are.

    Re-checks `handoverId` (and `handoverAttempt`, given `attempt_id`) itself
    rather than trust the server-side filter: another attempt's task, one whose
    channel failed, proves nothing about this one. A task without Flex's
    `flexInteractionSid` still proves the create went through.
    """
    ours = []
    for raw in attributes:
        try:
            parsed = json.loads(raw)
        except (TypeError, ValueError, RecursionError):  # not ours: not JSON text
            continue
        if not isinstance(parsed, dict) or parsed.get(HANDOVER_ID_ATTRIBUTE) != handover_id:
            continue
        if attempt_id is None or parsed.get(HANDOVER_ATTEMPT_ATTRIBUTE) == attempt_id:
            ours.append(parsed)
    if not ours:
        return None, 0
    first = ours[0]
    return (
        CreatedInteraction(
            _sid_or_none(first.get("flexInteractionSid")),
            _sid_or_none(first.get("flexInteractionChannelSid")),
            found_by_lookup=True,
        ),
        len(ours),
    )


async def find_interaction(
    flex: FlexClient,
    settings: Settings,
    handover_id: str,
    in_flight_since: float,
    *,
    window_end: float | None = None,
    attempt_id: str | None = None,
    clock: Callable[[], float] = now,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> CreatedInteraction | None:
    """Polls TaskRouter until our task (the attempt `attempt_id`'s, when given)
    shows up or the window closes (`window_end`, by default `lookup_window_end`
    from now); raises FlexError."""
    workspace_sid = settings.flex_workspace_sid
    if workspace_sid is None:
        raise ValueError("FLEX_WORKSPACE_SID is required to look tasks up")
    if window_end is None:
        window_end = lookup_window_end(
            in_flight_since,
            clock(),
            settings.attempt_timeout_seconds,
            settings.lookup_grace_seconds,
        )
    queries = 0
    while True:
        queries += 1
        attributes = await flex.list_task_attributes(
            workspace_sid, task_expression(handover_id, attempt_id), ASSIGNMENT_STATUSES
        )
        found, count = interaction_from_tasks(attributes, handover_id, attempt_id)
        if found is not None:
            if count > 1:
                logger.warning(
                    "handover %s: %d tasks carry this handover id (a duplicate handover "
                    "exists in Flex); keeping the first",
                    handover_id,
                    count,
                )
            return found
        remaining = window_end - clock()
        if remaining <= 0:
            logger.info("handover %s: no task after %d lookup queries", handover_id, queries)
            return None
        interval = settings.lookup_interval_seconds
        await sleep(bounded_wait(interval, interval, remaining))


def _sid_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
