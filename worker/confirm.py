"""Did the Interaction Twilio accepted really open its channel? Read it and see.

Twilio's 200 to `POST /v1/Interactions` only means the request was accepted;
the channel's real fate is read from `GET /v1/Interactions/{KD}/Channels/{UO}`
(twilio-facts.md, "After the Interaction is created"). It is read on
`worker.retry.channel_poll_waits`'s schedule, within CHANNEL_CONFIRM_SECONDS
in all, until it shows a verdict:

- `active` (or `pause`, `transfer`: an agent is already on it): delivered.
- `failed`: not delivered. No task reached an agent through it, so the
  caller makes a new attempt, within the retry policy and the max age.
- `closed` or `inactive` *with* an `error_code`: not delivered either. The
  spec's own example of a channel read is `closed` with error 19025
  ("Channel validation error"): Twilio closes a channel it could not set up,
  and then says why.
- `closed` or `inactive` *without* an error: delivered. The channel was set up
  and has since been ended by someone (an agent, a Studio flow, an API call);
  nothing says no one got it, and sending again would hand the customer over a
  second time, which is what this project exists to avoid.
- `setup`: not yet; read again.

A read that fails (5xx, 429, a timeout, an answer without a status, a status
Twilio does not list) is read again on the same schedule, never taken for
"failed". If no verdict comes within the bound the handover is left as
delivered, `unconfirmed`: an attempt that was accepted and may be alive is not
sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.model import ChannelFailure
from shared.settings import CHANNEL_CONFIRM_SECONDS
from worker.errors import FlexError
from worker.flex_client import ChannelState, FlexClient
from worker.retry import channel_poll_waits

logger = logging.getLogger(f"flex_handover.{__name__}")

UNCONFIRMED = "unconfirmed"
"""The `channel_status` of a handover whose channel gave no verdict within the bound."""
FAILED = "failed"
DELIVERED_STATUSES = frozenset({"active", "pause", "transfer"})
ENDED_STATUSES = frozenset({"closed", "inactive"})
PENDING_STATUSES = frozenset({"setup"})
# interaction_channel_enum_channel_status in twilio_flex_v1.json, all of them.
CHANNEL_STATUSES = DELIVERED_STATUSES | ENDED_STATUSES | PENDING_STATUSES | {FAILED}


@dataclass(frozen=True)
class ChannelOutcome:
    """What confirming found: the `channel_status` to record, and for a channel
    that did not deliver, its failure (then the attempt is not delivered)."""

    status: str
    failure: ChannelFailure | None = None


def verdict(state: ChannelState, interaction_sid: str) -> ChannelOutcome | None:
    """The outcome one read shows, or None: read again (`setup`, or a status
    Twilio does not list). Pure."""
    status = state.status
    if status in DELIVERED_STATUSES:
        return ChannelOutcome(status)
    failed = status == FAILED or (status in ENDED_STATUSES and state.error_code is not None)
    if failed:
        message = state.error_message or f"the channel is {status}"
        return ChannelOutcome(status, ChannelFailure(state.error_code, message, interaction_sid))
    if status in ENDED_STATUSES:
        return ChannelOutcome(status)
    return None


async def confirm_channel(
    flex: FlexClient,
    handover_id: str,
    interaction_sid: str,
    channel_sid: str,
    *,
    waits: tuple[float, ...] | None = None,
    total: float = CHANNEL_CONFIRM_SECONDS,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ChannelOutcome:
    """Reads the channel until a verdict, or `total` seconds have passed (each
    read is cut off at what is left): then `unconfirmed`. Never raises FlexError."""
    last_problem = "it stayed in setup"
    try:
        async with asyncio.timeout(total):
            for wait in channel_poll_waits(total=total) if waits is None else waits:
                await sleep(wait)
                try:
                    state = await flex.fetch_channel(interaction_sid, channel_sid)
                except FlexError as error:
                    last_problem = error.message
                    logger.info("handover %s: %s; reading it again", handover_id, error.message)
                    continue
                outcome = verdict(state, interaction_sid)
                if outcome is not None:
                    return outcome
                if state.status not in PENDING_STATUSES:
                    last_problem = f"its status {state.status[:40]!r} is not one Twilio lists"
    except TimeoutError:
        last_problem = f"no read answered within {total:g}s"
    logger.warning(
        "handover %s: the channel of %s is unconfirmed after %gs (%s); not sending again",
        handover_id,
        interaction_sid,
        total,
        last_problem,
    )
    return ChannelOutcome(UNCONFIRMED)
