"""arq's Worker with a batched pick: the one module that relies on arq's internals.

How jobs are picked up (`HandoverWorker`): one Lua script (`lua/pick.lua`) takes
every free slot's job from the ready part of the queue in one round trip,
skipping jobs whose in-progress key exists (running elsewhere, or left by a dead
run); while the slots are full it takes jobs as slots free up rather than after
`poll_delay`. With FLEX_API_MAX_RPS it takes no more than the shared rate can
serve within `worker.rate_limit.PICK_AHEAD_SECONDS`, so a backlog stays in the
queue, where priority orders it. A job whose create is answered may lend its
slot to the next job (`lend_slot`) for the rest of its run, so the slots count
creates in flight rather than channel reads. The arq internals this needs are
listed here (ARQ_WORKER_METHODS,
ARQ_WORKER_ATTRIBUTES) for the minor pinned in pyproject.toml, and checked by
tests/unit/test_arq_internals.py.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import arq.jobs
import arq.worker
from arq.utils import timestamp_ms
from arq.worker import Worker

from shared import lua_scripts, redis_keys
from worker.rate_limit import pick_gate

# arq's one global key, its abort set `arq:abort`, is a module constant that its
# Worker uses in the transaction ending every job: renamed here under the keys'
# hash tag (shared/redis_keys.py), or in Redis Cluster that transaction would
# cross slots and fail. arq offers no setting for it. Checked by
# tests/unit/test_arq_internals.py.
for _module in (arq.worker, arq.jobs):
    _module.abort_jobs_ss = redis_keys.ARQ_ABORT_KEY  # type: ignore[attr-defined]

# Picks ready jobs for every free slot: worker/lua/pick.lua.
PICK_SCRIPT = lua_scripts.script("worker", "pick.lua")
# Queue entries one pick may look at, per job slot (at least PICK_SCAN_MIN):
# room for every worker's running jobs and a dead run's leftovers ahead of
# the ready ones. About a microsecond of Redis time each.
PICK_SCAN_PER_SLOT = 20
PICK_SCAN_MIN = 2_000
# While every slot is busy: after one frees, wait this long for a few more to
# free (up to PICK_BATCH_FRACTION of the slots) before picking, so a busy
# worker picks in batches, not one job per round trip. Measured at concurrency
# 100, 200 ms Flex: 1 ms gave 0.90 of the bound (median of 3), 5 ms 0.865 (of 4),
# with the same CPU per handover.
PICK_GATHER_SECONDS = 0.001
PICK_BATCH_FRACTION = 0.05
# How long one poll iteration keeps taking jobs as slots free before arq's
# bookkeeping (finished tasks, health check) runs again.
BUSY_ITERATION_SECONDS = 1.0
# Jobs that may have lent their slot back (`HandoverWorker.lend_slot`), per
# slot: once its create is answered, a handover mostly waits (the channel's
# first read is 0.2 s later, then the Conversation steps), and a slot held
# through that halved the creates a worker kept in flight (BENCHMARKS.md,
# worker_throughput). Bounded, so a worker never runs more than
# (1 + FOLLOW_UPS_PER_SLOT) x WORKER_CONCURRENCY jobs; when they are all out,
# a job keeps its slot to the end, as before.
FOLLOW_UPS_PER_SLOT = 1
LEND_SLOT = "lend_slot"
"""The ctx key of `HandoverWorker.lend_slot` (absent under a stock arq worker)."""


# arq's Worker internals that HandoverWorker and `stop_worker` rely on, none of
# them documented API: the methods overridden or called ("async" if awaited, and
# their parameters) and the attributes read or set. They hold for the arq minor
# pinned in pyproject.toml, ARQ_PINNED_MINOR; tests/unit/test_arq_internals.py
# checks them against the installed arq. Before moving the pin, re-read arq's
# Worker.main, _poll_iteration, start_jobs and close against this module.
ARQ_PINNED_MINOR = "0.28"
ARQ_WORKER_METHODS: dict[str, str] = {
    "main": "async (self)",  # overridden: the first ping, then arq's own
    "_poll_iteration": "async (self)",  # overridden; arq's own still serves burst mode
    "start_jobs": "async (self, job_ids)",  # not called: _start_ready_jobs does its work
    "_cancel_aborted_jobs": "async (self)",
    "_release_sem_dec_counter_on_complete": "(self)",
    "run_job": "async (self, job_id, score)",
    "heart_beat": "async (self)",
    "async_run": "async (self)",
}
ARQ_WORKER_ATTRIBUTES = (
    "allow_abort_jobs",
    "allow_pick_jobs",
    "burst",
    "ctx",
    "health_check_key",
    "in_progress_timeout_s",
    "job_counter",
    "loop",
    "main_task",
    "max_jobs",
    "on_shutdown",
    "poll_delay_s",
    "pool",
    "queue_name",
    "sem",
    "tasks",
)


class HandoverWorker(Worker):
    """arq's Worker with `_poll_iteration` replaced; jobs, their records and the
    in-progress protocol are arq's own, so stock arq workers can share the queue.

    Why: arq reads `queue_read_limit` ids from the head of the queue per poll,
    then checks and starts them one by one (four round trips each), and does
    the same for every id already running, which stays in the queue until it
    ends. That capped short jobs near `queue_read_limit / poll_delay` per second
    and cost ~2 ms of worker CPU per job; and after a SIGKILL or a Redis restart
    the dead run's jobs, in progress until their key expires, filled the head
    of the queue so that no newer job was read at all (ack -> Interaction p50
    of 20 s in the chaos run). Here one script picks for all free slots (see
    PICK_SCRIPT), and a saturated worker refills slots as they free up instead
    of after `poll_delay`; when idle it polls every `poll_delay` as arq does.
    """

    def __init__(self, *args: Any, flex_api_max_rps: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reached_redis = False
        """Redis answered this worker's first ping (its client exists from the start)."""
        self.healthy = False
        """A poll iteration completed: Redis answered and took this worker's writes."""
        self.unfinished: list[str] = []
        """Jobs whose run ended in an error arq could not record (Redis went away or
        refused the write): their in-progress keys may outlive them."""
        self._pick_script: Any = None
        self._slot_freed = asyncio.Event()
        self._pick_scan_limit = max(PICK_SCAN_MIN, PICK_SCAN_PER_SLOT * self.max_jobs)
        self._pick_batch = max(1, int(self.max_jobs * PICK_BATCH_FRACTION))
        self._pick_gate = pick_gate(flex_api_max_rps)
        self._lent: set[str] = set()
        self._follow_ups = FOLLOW_UPS_PER_SLOT * self.max_jobs
        self.ctx[LEND_SLOT] = self.lend_slot

    async def main(self) -> None:
        await self._reach_redis()
        await super().main()

    async def _reach_redis(self) -> None:
        """The ping arq's create_pool makes before it returns, on the client this
        worker was given (see `arq_client`). Not retried here: `run_worker`
        retries with a capped backoff and says why."""
        await self.pool.ping()
        self.reached_redis = True

    async def _poll_iteration(self) -> None:
        if self.burst:  # run_check/burst mode: arq's own loop counts burst jobs
            return await super()._poll_iteration()
        await self._take_jobs()
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                if not task.cancelled() and task.exception() is not None:
                    self.unfinished.append(job_id)
                task.result()  # as arq: an error in run_job itself ends the worker
        await self.heart_beat()
        self.healthy = True

    async def _take_jobs(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + max(self.poll_delay_s, BUSY_ITERATION_SECONDS)
        while self.allow_pick_jobs:
            self._slot_freed.clear()
            free = self.max_jobs - self.job_counter
            if free > 0 and await self._start_ready_jobs(free) < free:
                return  # the queue has nothing more ready: back to polling
            # Every slot busy, and ready jobs may be waiting: refill as slots free.
            remaining = until - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await self._slot_freed.wait()
            except TimeoutError:
                return
            if self.max_jobs - self.job_counter < self._pick_batch:
                await asyncio.sleep(PICK_GATHER_SECONDS)

    async def _start_ready_jobs(self, free: int) -> int:
        if self._pick_script is None:
            self._pick_script = self.pool.register_script(PICK_SCRIPT)
        picked = await self._pick_script(
            keys=[self.queue_name, redis_keys.FLEX_API_RATE_KEY],
            args=[
                timestamp_ms(),
                free,
                int(self.in_progress_timeout_s * 1000),
                self._pick_scan_limit,
                *self._pick_gate,
            ],
        )
        for job_id_b, score in zip(picked[::2], picked[1::2], strict=True):
            job_id = job_id_b.decode() if isinstance(job_id_b, bytes) else job_id_b
            await self.sem.acquire()  # never waits: `free` slots were free
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(functools.partial(self._job_done, job_id))
            self.tasks[job_id] = task
        return len(picked) // 2

    def lend_slot(self, job_id: str) -> bool:
        """Give the running job `job_id`'s slot to the next job, while it finishes
        what is left of its run (see FOLLOW_UPS_PER_SLOT). False, and the slot
        kept, when none may be lent: all lent already, or arq's burst mode, which
        frees slots its own way."""
        if self.burst or job_id in self._lent or job_id not in self.tasks:
            return False
        if len(self._lent) >= self._follow_ups:
            return False
        self._lent.add(job_id)
        self._release_sem_dec_counter_on_complete()
        self._slot_freed.set()
        return True

    @property
    def following_up(self) -> int:
        """Jobs running on a lent slot."""
        return len(self._lent)

    def _job_done(self, job_id: str, _task: asyncio.Task[None]) -> None:
        if job_id in self._lent:
            self._lent.discard(job_id)  # its slot went back when it was lent
        else:
            self._release_sem_dec_counter_on_complete()
        self._slot_freed.set()
