"""A read tool call becomes a stored handover and its answer: the one path every caller takes.

The tool endpoint (`api.app`) and the MCP tool (`api.mcp_server`) both hand a
parsed `HandoverRequest` to `hand_over`, so business hours, the enqueue script
(de-duplication, rate limits, backlog) and the words of the answer are decided
once: an MCP client and an AI Assistant get the same handover for the same
conversation, and the same sentence to relay.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.app_keys import CLOCK, ENQUEUER, SETTINGS
from api.availability import availability
from api.errors import BacklogFull, NotReplicated, RateLimited
from api.metrics import Outcome
from shared import script_batcher
from shared.logging import add_log_context
from shared.model import HandoverRequest


async def hand_over(
    app: web.Application, handover: HandoverRequest
) -> tuple[int, dict[str, Any], Outcome]:
    """Store the handover (or find the conversation's live one): (HTTP status,
    answer, what it counts as in `api.metrics`).

    202 a new one stored; 200 the live or recent one, or, outside the hours of
    a target that declines, `handed_over: false` with nothing stored. Raises
    `RateLimited` or `BacklogFull` (nothing stored), or `NotReplicated` (stored,
    too few replicas confirmed it); Redis errors propagate.
    `handover.target` must be a configured target.
    """
    settings = app[SETTINGS]
    add_log_context(conversation_sid=handover.conversation_sid, target=handover.target)
    agents = availability(settings.targets[handover.target], app[CLOCK]())
    try:
        result = await app[ENQUEUER].enqueue(handover, store_new=not agents.declines)
    except script_batcher.NotReplicated as exc:
        raise NotReplicated(str(exc)) from None
    add_log_context(handover_id=result.handover_id)
    if result.rate_limited:
        raise RateLimited(
            result.limited_by, settings.rate_limit_window_seconds, result.retry_after_seconds
        )
    if result.backlog_full:
        raise BacklogFull(result.retry_after_seconds)
    if result.declined:  # outside hours, nothing stored: an answer, not a refusal
        return 200, agents.declined_answer(), Outcome.DECLINED
    assert result.state is not None  # noqa: S101 - only a refused call has no state
    answer = {
        "handover_id": result.handover_id,
        "status": result.state.value,
        "status_url": f"/handovers/{result.handover_id}",
        "handed_over": True,
        **agents.ack_fields(settings.handover_message),
    }
    if result.created:
        return 202, answer, Outcome.STORED
    return 200, answer, Outcome.DUPLICATE
