"""The shared token bucket for POST /v1/Interactions, against a real Redis.

fakeredis has no Lua runtime here, so these use the session's Redis server.
Most pass the time in (microseconds) so grants are counted over a simulated
clock; the few that let the script read Redis' TIME assert no wall-clock timing.
"""

from __future__ import annotations

import asyncio

import pytest
from arq.worker import Retry

from shared import redis_keys
from shared.redis_client import create_redis
from worker import rate_limit
from worker.rate_limit import FlexRateLimit, burst_for, set_run_deadline
from worker.retry import MAX_WAIT_SECONDS, MIN_WAIT_SECONDS, OUTCOME_MARGIN_SECONDS

SECOND = 1_000_000  # µs
T0 = 1_700_000_000 * SECOND  # a realistic epoch: doubles must keep µs exact


class NoRedis:
    """Fails the test on any use: the limiter off must not touch Redis."""

    def __getattr__(self, name: str):
        raise AssertionError(f"redis.{name} used while the rate limit is off")


@pytest.fixture(autouse=True)
def no_run_deadline():
    set_run_deadline(None)
    yield
    set_run_deadline(None)


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """asyncio.sleep in the limiter, recorded and skipped."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(rate_limit.asyncio, "sleep", fake_sleep)
    return recorded


async def granted_over(limiter: FlexRateLimit, seconds: float, step_us: int, start: int = T0):
    """Slots granted with no wait, one ask every `step_us` over `seconds` of simulated
    time (both ends included)."""
    granted = 0
    for now in range(start, start + int(seconds * SECOND) + 1, step_us):
        reserved, wait = await limiter.take(0.0, now_us=now)
        granted += reserved and wait == 0
    return granted


def test_burst_is_a_tenth_of_a_second_at_least_one():
    assert [burst_for(rps) for rps in (0.2, 1, 9.9, 10, 50, 1000)] == [1, 1, 1, 1, 5, 100]
    with pytest.raises(ValueError):
        FlexRateLimit(NoRedis(), -1)
    with pytest.raises(ValueError):
        FlexRateLimit(NoRedis(), float("inf"))


async def test_off_makes_no_redis_call(sleeps):
    limiter = FlexRateLimit(NoRedis(), 0)
    assert limiter.burst == 0
    for _ in range(100):
        await limiter.acquire()
    assert await limiter.take(0.0) == (True, 0.0)
    assert sleeps == []


async def test_grants_the_rate_plus_one_burst_over_a_simulated_clock(redis):
    limiter = FlexRateLimit(redis, 50)
    # Asked every millisecond for 10 s: one burst (5), then 50 a second.
    assert await granted_over(limiter, 10, 1000) == 5 + 500
    # 30 s idle refills the burst and no more.
    later = T0 + 40 * SECOND
    assert await granted_over(limiter, 0.001, 1, start=later) == 5


async def test_reservations_queue_one_interval_apart(redis):
    limiter = FlexRateLimit(redis, 10)  # burst 1, a slot every 0.1 s
    waits = [(await limiter.take(5.0, now_us=T0))[1] for _ in range(4)]
    assert waits == [0.0, 0.1, 0.2, 0.3]
    # Half a slot later the queue is half a slot shorter.
    assert await limiter.take(5.0, now_us=T0 + 50_000) == (True, 0.35)


async def test_refill_after_a_pause_is_capped_at_the_burst(redis):
    limiter = FlexRateLimit(redis, 100)  # burst 10, a slot every 10 ms
    first = [(await limiter.take(5.0, now_us=T0))[1] for _ in range(12)]
    assert first[:10] == [0.0] * 10 and first[10:] == [0.01, 0.02]
    # 0.05 s later: the two queued slots are due, three more have refilled.
    now = T0 + 50_000
    again = [(await limiter.take(5.0, now_us=now))[1] for _ in range(4)]
    assert again == [0.0, 0.0, 0.0, 0.01]


async def test_clients_sharing_one_bucket_share_the_rate(redis, redis_server):
    others = [create_redis(redis_server.url) for _ in range(2)]
    try:
        limiters = [FlexRateLimit(client, 20) for client in (redis, *others)]
        granted = 0
        for n, now in enumerate(range(T0, T0 + 3 * SECOND + 1, 1000)):
            reserved, wait = await limiters[n % 3].take(0.0, now_us=now)
            granted += reserved and wait == 0
        assert granted == burst_for(20) + 60
        # Concurrent reservations at one instant each get their own slot.
        answers = await asyncio.gather(
            *(limiters[n % 3].take(60.0, now_us=T0 + 10 * SECOND) for n in range(30))
        )
        assert all(reserved for reserved, _ in answers)
        assert sorted(wait for _, wait in answers) == [
            pytest.approx(max(0, n - 1) * 0.05) for n in range(30)
        ]
    finally:
        for client in others:
            await client.aclose()


async def test_a_wait_over_the_callers_limit_reserves_nothing(redis):
    limiter = FlexRateLimit(redis, 1)  # a slot a second
    assert await limiter.take(10.0, now_us=T0) == (True, 0.0)
    assert await limiter.take(10.0, now_us=T0) == (True, 1.0)
    stored = await redis.get(redis_keys.FLEX_API_RATE_KEY)
    assert await limiter.take(1.5, now_us=T0) == (False, 2.0)
    assert await limiter.take(0.0, now_us=T0) == (False, 2.0)
    assert await redis.get(redis_keys.FLEX_API_RATE_KEY) == stored
    assert await limiter.take(2.0, now_us=T0) == (True, 2.0)


async def test_bucket_key_is_exact_and_expires_when_idle(redis):
    limiter = FlexRateLimit(redis, 10)
    for _ in range(3):
        await limiter.take(5.0, now_us=T0)
    assert int(await redis.get(redis_keys.FLEX_API_RATE_KEY)) == T0 + 3 * 100_000
    assert 0 < await redis.pttl(redis_keys.FLEX_API_RATE_KEY) <= 300 + 1000


async def test_a_clock_stepped_back_does_not_stall_the_bucket(redis):
    limiter = FlexRateLimit(redis, 10)
    await limiter.take(5.0, now_us=T0 + 3600 * SECOND)  # the TAT is an hour "ahead"
    assert await limiter.take(5.0, now_us=T0) == (True, 0.0)


async def test_redis_time_is_the_clock_when_none_is_passed(redis):
    limiter = FlexRateLimit(redis, 1)  # a slot a second
    assert await limiter.take(5.0) == (True, 0.0)
    reserved, wait = await limiter.take(5.0)
    assert reserved and 0.5 < wait <= 1.0  # well under half a second between the calls
    redis_now = await redis.time()
    tat = int(await redis.get(redis_keys.FLEX_API_RATE_KEY))
    assert 1.0 < (tat - (redis_now[0] * SECOND + redis_now[1])) / SECOND <= 2.0


async def test_acquire_sleeps_the_reserved_wait(redis, sleeps):
    limiter = FlexRateLimit(redis, 1)
    for _ in range(3):
        await limiter.acquire()
    assert len(sleeps) == 2  # the first slot is free
    assert 0.5 < sleeps[0] <= 1.0 and 1.5 < sleeps[1] <= 2.0


async def test_acquire_is_cancellable_while_waiting(redis):
    limiter = FlexRateLimit(redis, 1)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_acquire_hands_the_job_back_past_the_run_budget(redis, sleeps):
    limiter = FlexRateLimit(redis, 1, attempt_timeout=2.0)
    loop = asyncio.get_running_loop()
    # The run can afford 0.5 s of waiting after the create and its outcome.
    set_run_deadline(loop.time() + 2.0 + OUTCOME_MARGIN_SECONDS + 0.5)
    await limiter.acquire()  # free
    stored = await redis.get(redis_keys.FLEX_API_RATE_KEY)
    with pytest.raises(Retry) as caught:
        await limiter.acquire()  # ~1 s away
    assert 0.5 < caught.value.defer_score / 1000 <= 1.0
    assert await redis.get(redis_keys.FLEX_API_RATE_KEY) == stored  # nothing reserved
    assert sleeps == []

    set_run_deadline(loop.time() + 60.0)
    await limiter.acquire()
    assert len(sleeps) == 1 and 0.5 < sleeps[0] <= 1.0


async def test_an_overrun_budget_still_takes_a_free_slot(redis, sleeps):
    limiter = FlexRateLimit(redis, 5)
    set_run_deadline(asyncio.get_running_loop().time() - 1.0)
    await limiter.acquire()
    assert sleeps == []


async def test_waits_are_capped_without_a_run_deadline(redis):
    limiter = FlexRateLimit(redis, 1)
    far = T0 + int(MAX_WAIT_SECONDS * SECOND)
    await redis.set(redis_keys.FLEX_API_RATE_KEY, far)
    assert await limiter.take(1e9, now_us=T0) == (True, MAX_WAIT_SECONDS)
    assert await limiter.take(1e9, now_us=T0) == (False, MAX_WAIT_SECONDS + 1)


async def test_a_defer_never_reaches_past_the_handovers_deadline(redis, sleeps):
    """The job handed back for a slot 10 s away, with 0.3 s left before the
    handover's deadline, comes back at the deadline (and gives up), not later."""
    limiter = FlexRateLimit(redis, 0.1, attempt_timeout=2.0)
    set_run_deadline(asyncio.get_running_loop().time() + 2.0 + OUTCOME_MARGIN_SECONDS + 0.5)
    await limiter.acquire(max_defer=100.0)  # free
    with pytest.raises(Retry) as caught:
        await limiter.acquire(max_defer=0.3)
    assert caught.value.defer_score / 1000 == pytest.approx(0.3, abs=0.002)
    with pytest.raises(Retry) as caught:
        await limiter.acquire(max_defer=-5.0)  # already past it: back at once
    assert caught.value.defer_score / 1000 == pytest.approx(MIN_WAIT_SECONDS, abs=0.002)
    with pytest.raises(Retry) as caught:
        await limiter.acquire(max_defer=100.0)
    assert 9.0 < caught.value.defer_score / 1000 <= 10.0
    assert sleeps == []
