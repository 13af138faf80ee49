"""What a tool call's answer says about agents being there: the target's business
hours (`shared.business_hours`) read at the API's clock.

From the settings alone: no Twilio call and no Redis round trip on the ack path.
The model is told the truth either way (`agents_available`, `opens_at` and a
`message` it can relay), so it can tell the customer when agents are back.
The clock is the app's (`api.app_keys.CLOCK`), so tests choose "now" without
touching the process's time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.settings import Target

Clock = Callable[[], datetime]
"""Returns the current instant, time-zone-aware."""

OPENS_AT_PLACEHOLDER = "{opens_at}"
"""In a target's `closed_message`: replaced by when agents are back, in words."""
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Availability:
    """Whether the target's agents work now; outside hours, when they are back
    (`opens_at`, None when no range ever opens) and whether the target declines."""

    agents_available: bool
    opens_at: datetime | None = None
    declines: bool = False
    closed_message: str | None = None
    """The target's own text for outside hours, if it has one."""

    def ack_fields(self, handover_message: str) -> dict[str, Any]:
        """A stored (or repeat) call's `message`, `agents_available` and, outside
        hours, `opens_at`; `handover_message` (HANDOVER_MESSAGE) is the message
        while agents work."""
        if self.agents_available:
            return {"message": handover_message, "agents_available": True}
        return {
            "message": self.message(handed_over=True),
            "agents_available": False,
            "opens_at": _iso(self.opens_at),
        }

    def declined_answer(self) -> dict[str, Any]:
        """The whole answer when the target declined and nothing was stored."""
        return {
            "handed_over": False,
            "agents_available": False,
            "opens_at": _iso(self.opens_at),
            "message": self.message(handed_over=False),
        }

    def voice_message(self, *, held: bool) -> str:
        """What a caller hears outside hours: spoken, so no time zone in brackets,
        and a call is not a conversation that waits (`held`: the call is queued
        anyway, for the target's bounded `voice_timeout`)."""
        when = describe(self.opens_at)
        if self.closed_message is not None:
            return self.closed_message.replace(OPENS_AT_PLACEHOLDER, when or "not scheduled yet")
        spoken = when.split(" (", 1)[0] if when else None
        if held:
            back = f" Agents are back on {spoken}." if spoken else ""
            return f"No agent is available right now.{back} Please hold, or call again later."
        if spoken:
            return f"No agent is available right now. Agents are back on {spoken}. Please call again then."
        return "No agent is available right now, and no opening time is scheduled."

    def message(self, *, handed_over: bool) -> str:
        when = describe(self.opens_at)
        if self.closed_message is not None:
            return self.closed_message.replace(OPENS_AT_PLACEHOLDER, when or "not scheduled yet")
        if handed_over:
            back = (
                f"they are back on {when}, and your conversation waits for them until then."
                if when
                else "no opening time is scheduled, and your conversation waits for them."
            )
            return f"I'm transferring you to a human agent. No agent is available right now: {back}"
        if when:
            return (
                "No human agent is available right now, so I could not transfer you. "
                f"Agents are back on {when}; please ask again then."
            )
        return (
            "No human agent is available, so I could not transfer you, and no opening "
            "time is scheduled."
        )


OPEN = Availability(agents_available=True)


def availability(target: Target, at: datetime) -> Availability:
    """The target's agents at `at`: always there without `hours`."""
    hours = target.hours
    if hours is None or hours.is_open(at):
        return OPEN
    return Availability(
        agents_available=False,
        opens_at=hours.opens_at(at),
        declines=target.outside_hours == "decline",
        closed_message=target.closed_message,
    )


def describe(opens_at: datetime | None) -> str | None:
    """`Monday 30 March 2026 at 08:00 (Europe/Berlin time)`: in English, whatever
    the host's locale, with the zone named, since the customer may be elsewhere."""
    if opens_at is None:
        return None
    zone = getattr(opens_at.tzinfo, "key", None) or opens_at.strftime("UTC%z")
    return (
        f"{_DAY_NAMES[opens_at.weekday()]} {opens_at.day} {_MONTH_NAMES[opens_at.month - 1]} "
        f"{opens_at.year} at {opens_at:%H:%M} ({zone} time)"
    )


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the offset, in the target's zone: `2026-03-30T08:00:00+02:00`."""
    return None if moment is None else moment.isoformat(timespec="seconds")
