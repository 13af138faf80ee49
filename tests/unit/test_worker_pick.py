"""worker.arq_worker.HandoverWorker: one script picks jobs for every free slot and
skips jobs in progress, so a dead run's leftovers at the head of the queue
(in progress until their key expires) do not hide the jobs behind them; with a
rate, it picks no more than the rate serves within PICK_AHEAD_SECONDS.

Against the suite's real Redis: the pick is a Lua script.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from arq.connections import create_pool
from arq.constants import expires_extra_ms, in_progress_key_prefix
from arq.worker import func

from shared import redis_keys
from shared.arq_jobs import handover_job, job_deserializer, job_serializer
from shared.redis_client import arq_redis_settings
from tests.support.values import CONVERSATION_SID
from worker.arq_worker import LEND_SLOT, PICK_SCRIPT, HandoverWorker
from worker.rate_limit import PICK_AHEAD_SECONDS, pick_gate


async def store_jobs(pool, ids: list[str]) -> None:
    now_ms = int(time.time() * 1000) - 1000
    for n, job_id in enumerate(ids):
        await pool.psetex(redis_keys.arq_job_key(job_id), expires_extra_ms,
                          handover_job(job_id, CONVERSATION_SID, now_ms))  # fmt: skip
        await pool.zadd(redis_keys.QUEUE_NAME, {redis_keys.handover_job_id(job_id): now_ms + n})


def make_worker(pool, ran: list[str], max_jobs: int, hold: asyncio.Event | None = None, job=None):
    """`job` runs each handover; by default it records the id and waits for `hold`."""

    async def record_and_hold(ctx: dict[str, Any], handover_id: str, conversation_sid: str) -> None:
        ran.append(handover_id)
        if hold is not None:
            await hold.wait()

    return HandoverWorker(
        functions=[func(job or record_and_hold, name=redis_keys.HANDOVER_FUNCTION, keep_result=0)],
        queue_name=redis_keys.QUEUE_NAME,
        redis_pool=pool,
        max_jobs=max_jobs,
        keep_result=0,
        poll_delay=0.01,
        queue_read_limit=10,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        handle_signals=False,
    )


@contextlib.asynccontextmanager
async def running(worker, hold: asyncio.Event | None = None) -> AsyncIterator[None]:
    """The worker runs inside the block; its jobs are cancelled after it."""
    task = asyncio.create_task(worker.async_run())
    try:
        yield
    finally:
        if hold is not None:
            hold.set()  # a failed check must not leave the jobs waiting for ever
        task.cancel()
        for job_task in worker.tasks.values():
            job_task.cancel()
        await asyncio.gather(task, *worker.tasks.values(), return_exceptions=True)


async def until(condition: Callable[[], Awaitable[bool] | bool], deadline: float) -> None:
    """Wait for `condition` (plain or awaitable) until `deadline` (monotonic)."""
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def pool(redis, redis_server):
    """An arq pool on the suite's Redis (emptied by the `redis` fixture)."""
    arq_pool = await create_pool(arq_redis_settings(redis_server.url))
    yield arq_pool
    await arq_pool.aclose()


async def test_a_dead_runs_jobs_at_the_head_do_not_hide_newer_ones(pool):
    stuck = [f"ho_stuck{n:025d}" for n in range(50)]  # far more than queue_read_limit
    await store_jobs(pool, [*stuck, "ho_fresh"])
    for job_id in stuck:
        await pool.psetex(in_progress_key_prefix + redis_keys.handover_job_id(job_id), 60_000, b"1")
    ran: list[str] = []
    async with running(make_worker(pool, ran, max_jobs=5)):
        await until(lambda: bool(ran), time.monotonic() + 5)
    assert ran == ["ho_fresh"]


async def test_picks_no_more_than_the_free_slots_and_refills_as_they_free(pool):
    ids = [f"ho_{n:032d}" for n in range(6)]
    await store_jobs(pool, ids)
    ran: list[str] = []
    hold = asyncio.Event()
    worker = make_worker(pool, ran, max_jobs=4, hold=hold)
    async with running(worker, hold):
        deadline = time.monotonic() + 5
        await until(lambda: len(ran) >= 4, deadline)
        await asyncio.sleep(0.1)
        # The first four in queue order, only as many as slots. The picked jobs
        # start together, each after its own reads of Redis, so the order in
        # which their functions begin is not the queue's.
        assert sorted(ran) == ids[:4]
        in_progress = [
            await pool.exists(in_progress_key_prefix + redis_keys.handover_job_id(i)) for i in ids
        ]
        assert in_progress == [1, 1, 1, 1, 0, 0]
        hold.set()

        async def drained() -> bool:
            return len(ran) >= 6 and not await pool.zcard(redis_keys.QUEUE_NAME)

        await until(drained, deadline)
        assert sorted(ran) == ids


async def redis_now_us(pool) -> int:
    seconds, micros = await pool.time()
    return seconds * 1_000_000 + micros


async def test_with_a_rate_a_pick_takes_only_what_the_bucket_serves_soon(pool):
    """FLEX_API_MAX_RPS=10: a slot every 100 ms, a burst of 1, counted
    PICK_AHEAD_SECONDS ahead. The bucket is only read: the jobs reserve their own
    slots."""
    ids = [f"ho_{n:032d}" for n in range(30)]
    await store_jobs(pool, ids)
    pick = pool.register_script(PICK_SCRIPT)
    keys = [redis_keys.QUEUE_NAME, redis_keys.FLEX_API_RATE_KEY]

    async def picked_with(tat_ahead_s: float | None, gate: list[int]) -> int:
        await pool.delete(*(in_progress_key_prefix + redis_keys.handover_job_id(i) for i in ids))
        if tat_ahead_s is None:
            await pool.delete(redis_keys.FLEX_API_RATE_KEY)
        else:
            tat = await redis_now_us(pool) + int(tat_ahead_s * 1_000_000)
            await pool.set(redis_keys.FLEX_API_RATE_KEY, tat)
        found = await pick(keys=keys, args=[int(time.time() * 1000), 50, 5000, 100, *gate])
        return len(found) // 2

    gate = pick_gate(10)
    assert gate[:3] == [100_000, 1, int(PICK_AHEAD_SECONDS * 1_000_000)]
    ahead_slots = round(PICK_AHEAD_SECONDS / 0.1)
    # Idle: the slots within PICK_AHEAD_SECONDS, and the burst.
    assert await picked_with(None, gate) == ahead_slots + 1
    # All but 0.25 s of it already reserved: the two slots left, and the burst.
    reserved = PICK_AHEAD_SECONDS - 0.25
    assert await picked_with(reserved, gate) == 2 + 1
    # Reserved past it: the jobs wait in the queue.
    assert await picked_with(PICK_AHEAD_SECONDS + 0.3, gate) == 0
    # Past any wait: a clock that stepped back, taken as idle.
    assert await picked_with(3600, gate) == ahead_slots + 1
    assert await picked_with(PICK_AHEAD_SECONDS + 0.3, pick_gate(0)) == 30  # no gate


async def test_a_job_may_lend_its_slot_once_and_no_more_than_the_follow_ups_are_lent(pool):
    """Two slots, one follow-up per slot: two jobs lend theirs, the next two
    cannot and keep theirs, so four run and two wait; when all end, every slot
    is back exactly once (arq's counter and semaphore as at the start)."""
    ids = [f"ho_{n:032d}" for n in range(6)]
    await store_jobs(pool, ids)
    lent: list[bool] = []
    hold = asyncio.Event()

    async def job(ctx: dict[str, Any], handover_id: str, conversation_sid: str) -> None:
        lent.append(ctx[LEND_SLOT](ctx["job_id"]))
        assert not ctx[LEND_SLOT](ctx["job_id"])  # once only
        await hold.wait()

    worker = make_worker(pool, [], max_jobs=2, job=job)
    async with running(worker, hold):
        deadline = time.monotonic() + 5
        await until(lambda: len(lent) >= 4, deadline)
        await asyncio.sleep(0.2)  # no fifth job starts: both slots are held
        assert sorted(lent) == [False, False, True, True]
        assert (worker.following_up, worker.job_counter) == (2, 2)
        hold.set()

        async def drained() -> bool:
            queued = await pool.zcard(redis_keys.QUEUE_NAME)
            return len(lent) >= 6 and not queued and not worker.job_counter

        await until(drained, deadline)
        # arq's semaphore holds max_jobs + 1, and a second release would raise.
        assert (worker.following_up, worker.job_counter, worker.sem._value) == (0, 0, 3)
