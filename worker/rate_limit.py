"""One rate for `POST /v1/Interactions`, shared by every worker process.

`FLEX_API_MAX_RPS` caps the creates of ALL workers together, so adding workers
never adds 429s from Twilio. The bucket is one Redis key and one Lua script
(atomic, so any number of processes on any number of hosts share it exactly).

The script is a GCRA token bucket (a "generic cell rate algorithm"): the key
holds the theoretical arrival time (TAT) of the next free slot, in microseconds.
Each call *reserves* the next slot and answers how long to wait for it, so a
caller makes one Redis call per create and then sleeps exactly that long: no
polling, no thundering herd when a token frees up, and waiters are served in
the order they asked. A caller that cannot afford the wait (see below) gets it
answered without a reservation being made.

Clock: the script reads Redis' own `TIME`, never the workers' clocks, so
clock skew between worker hosts cannot let two hosts spend the same slot or
make one host wait for a slot that is already free. Workers only measure the
*duration* to sleep, on their own monotonic clock. Should Redis' clock step
backwards (NTP, a fail-over to a replica with another clock), a TAT further
ahead than any caller may wait is taken as that and reset, instead of stalling
every create until the clock catches up. (Tests pass the time in instead.)

Burst: `max(1, rps * 0.1 s)` slots may go at once after an idle spell, then
one slot every `1 / rps` seconds. Kept small because Twilio's own limiter is
not documented: a burst above it is answered 429 and retried (which costs a
slot again), so a small burst gives away almost nothing.

Only the create is limited. The TaskRouter lookup after an ambiguous attempt
and the Conversations friendly-name fetch are cheap GETs on other APIs with
their own limits, made at most once per handover run (a lookup only after an
unanswered create, which the bucket already paced); limiting them here would
only delay the create behind them.

Waiting and the run budget: a job waiting for a slot is not failing, but it
must not keep arq's job past `Settings.run_budget_seconds`. The run sets its
deadline (`set_run_deadline`, from `worker.handover`); the script is told the
longest wait the run can still afford, leaving room for the create itself
(`attempt_timeout_seconds`) and for recording its outcome. A longer wait is
not reserved: the job is handed back to arq with `Retry(defer=wait)`, takes no
attempt, records no error, and asks again when it runs next. How long each of
these waits may be is `worker.retry`'s to say (`affordable_wait`, `slot_wait`,
`defer_delay`). A slot reserved
by a run that is then cancelled (shutdown) is simply not used: the rate
only ever errs low.

Off (`FLEX_API_MAX_RPS=0`): `acquire` returns at once without touching Redis.
"""

from __future__ import annotations

import asyncio
import logging
import math
from contextvars import ContextVar

import redis.asyncio as aioredis
from arq.worker import Retry

from shared import lua_scripts, redis_keys
from worker.retry import MAX_WAIT_SECONDS, affordable_wait, defer_delay, slot_wait

logger = logging.getLogger(f"flex_handover.{__name__}")

BURST_SECONDS = 0.1

TOKEN_BUCKET_SCRIPT = lua_scripts.script("worker", "token_bucket.lua")

_run_deadline: ContextVar[float | None] = ContextVar("flex_handover_run_deadline", default=None)


def set_run_deadline(loop_time: float | None) -> None:
    """When the current job run must be done, in `loop.time()`; per asyncio task."""
    _run_deadline.set(loop_time)


# How far ahead a pick counts the bucket's free slots (worker/lua/pick.lua). A
# worker picks no more jobs than the bucket can serve within this, so a backlog
# waits in the queue, in priority order, rather than in worker slots behind
# reservations: at concurrency 50 and 18/s, a full set of slots would hold ~2.8 s
# of reservations, and an urgent handover arriving then would wait behind them.
# Half a second keeps the pipe full across polls (WORKER_POLL_DELAY_SECONDS,
# 0.05 s by default) and bounds that wait: bench/priority.py measured urgent
# ack -> Interaction p50 1.07 s, max 2.51 s with 1 s here (BENCHMARKS.md).
PICK_AHEAD_SECONDS = 0.5


def burst_for(max_rps: float) -> int:
    return max(1, math.floor(max_rps * BURST_SECONDS))


def interval_us(max_rps: float) -> float:
    """The bucket's slot interval: 1 / rps, in µs."""
    return 1_000_000 / max_rps


def horizon_us(max_rps: float) -> int:
    """How far ahead of now a legitimate TAT can be: the longest wait plus a burst."""
    return math.ceil(MAX_WAIT_SECONDS * 1_000_000 + (burst_for(max_rps) + 1) * interval_us(max_rps))


def pick_gate(max_rps: float) -> list[float]:
    """ARGV 5-8 of worker/lua/pick.lua: the bucket's interval, burst, how far
    ahead to count and horizon, all µs; zeros (no gate) when the rate is off."""
    if not max_rps:
        return [0, 0, 0, 0]
    return [
        interval_us(max_rps),
        burst_for(max_rps),
        int(PICK_AHEAD_SECONDS * 1_000_000),
        horizon_us(max_rps),
    ]


class FlexRateLimit:
    """`await acquire()` before each `POST /v1/Interactions`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        max_rps: float,
        *,
        attempt_timeout: float = 10.0,
        key: str = redis_keys.FLEX_API_RATE_KEY,
    ):
        if max_rps < 0 or not math.isfinite(max_rps):
            raise ValueError("max_rps must be a finite number >= 0")
        self.max_rps = max_rps
        self.burst = burst_for(max_rps) if max_rps else 0
        self._redis = redis
        self._key = key
        self._attempt_timeout = attempt_timeout
        self._interval_us = interval_us(max_rps) if max_rps else 0.0
        # No reservation is ever further ahead than the longest wait plus a burst.
        self._horizon_us = horizon_us(max_rps) if max_rps else 0
        self._script = redis.register_script(TOKEN_BUCKET_SCRIPT) if max_rps else None

    async def take(self, max_wait: float, now_us: int | None = None) -> tuple[bool, float]:
        """One script call: (whether a slot was reserved, seconds to wait for it).

        Not reserved means the wait was over `max_wait`; the seconds are then
        how long until a slot would be free were nobody else asking.
        """
        if self._script is None:
            return True, 0.0
        max_wait = min(max(max_wait, 0.0), MAX_WAIT_SECONDS)
        args: list[str | int] = [
            repr(self._interval_us),
            self.burst,
            int(max_wait * 1_000_000),
            self._horizon_us,
            "" if now_us is None else int(now_us),
        ]
        reserved, wait_us = await self._script(keys=[self._key], args=args)
        return bool(reserved), int(wait_us) / 1_000_000

    async def acquire(self, max_defer: float | None = None) -> None:
        """Return once this caller holds a slot, after sleeping until it is due.

        Raises arq's `Retry(defer=…)` when the wait is more than the job run
        can afford (see the module docstring), deferred by at most `max_defer`
        (the time left to the handover's deadline: the next run then gives
        up); `RedisError` as any Redis call.
        """
        if self._script is None:
            return
        affordable = self._affordable_wait()
        reserved, wait = await self.take(affordable)
        if not reserved:
            cap = MAX_WAIT_SECONDS + BURST_SECONDS if max_defer is None else max_defer
            defer = defer_delay(wait, cap)
            logger.info(
                "flex api rate limit (%g/s): next slot in %.2fs, past this run's budget; "
                "handing the job back to arq for %.2fs",
                self.max_rps,
                wait,
                defer,
            )
            raise Retry(defer=defer)
        wait = slot_wait(wait, affordable)
        if wait > 0:
            await asyncio.sleep(wait)

    def _affordable_wait(self) -> float:
        deadline = _run_deadline.get()
        run_time_left = None if deadline is None else deadline - asyncio.get_running_loop().time()
        return affordable_wait(run_time_left, self._attempt_timeout)
