"""The rate limit mode: creates above a rate answered 429 (code 20429, or 45010,
Flex's own rate-limit code), with a `Retry-After` only when one is configured:
whether Twilio sends one is unconfirmed. Pure (the clock is injected), so the
window is tested tick by tick and the worker's own rate limiting is proved
against a Flex that throttles."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields

from standins.flex_simulator.errors import TwilioError, header_value

RATE_LIMIT_CODES = (20429, 45010)


class RateLimited(TwilioError):
    """A create refused by the simulator's rate limit."""


class SlidingWindowLimit:
    """At most `rps` admitted creates in any 1 s window (a sliding log).

    For a rate that is not a whole number the window stretches so that it holds
    a whole number: `max(1, floor(rps))` creates per `that / rps` seconds (0.5/s
    is one create per 2 s). Refused requests do not count: the limit is on what
    Twilio accepts. Not thread-safe on its own (the simulator holds its lock).
    """

    def __init__(self, rps: float, clock: Callable[[], float] = time.monotonic):
        if isinstance(rps, bool) or not isinstance(rps, (int, float)) or not rps > 0:
            raise ValueError("rps must be a number > 0")
        if not math.isfinite(rps):
            raise ValueError("rps must be finite")
        self.rps = float(rps)
        self.limit = max(1, math.floor(rps))
        self.window = self.limit / self.rps
        self._clock = clock
        self._admitted: deque[float] = deque()

    def admit(self) -> bool:
        """Count one create if the window has room for it."""
        now = self._clock()
        while self._admitted and self._admitted[0] <= now - self.window:
            self._admitted.popleft()
        if len(self._admitted) >= self.limit:
            return False
        self._admitted.append(now)
        return True

    def clear(self) -> None:
        self._admitted.clear()


@dataclass(frozen=True)
class RateLimit:
    """The rate limit mode: see `FlexSimulator.set_rate_limit`."""

    rps: float
    retry_after: str | float | None = None
    code: int = 20429

    def __post_init__(self) -> None:
        if self.code not in RATE_LIMIT_CODES:
            raise ValueError(f"code must be one of {', '.join(map(str, RATE_LIMIT_CODES))}")
        if self.retry_after is not None and (
            isinstance(self.retry_after, bool)
            or not isinstance(self.retry_after, (int, float, str))
        ):
            raise ValueError("retry_after must be seconds, an HTTP date or null")

    def error(self) -> RateLimited:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = header_value(self.retry_after)
        message = f"Too many requests: over the simulated limit of {self.rps:g}/s"
        return RateLimited(429, self.code, message, headers)


RATE_LIMIT_OPTIONS = frozenset(field.name for field in fields(RateLimit))

# What `flex-handover simulator --help` says of each option (help_text.py lays it out).
RATE_LIMIT_HELP: dict[str, str] = {
    "rps": "accepted creates per second (a sliding 1 s window); 0 turns the limit off",
    "retry_after": "Retry-After header on the 429: seconds or an HTTP date (none by default)",
    "code": f"Twilio error code of the 429: {' or '.join(map(str, RATE_LIMIT_CODES))}",
}
