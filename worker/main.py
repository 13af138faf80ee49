"""Builds, runs and supervises the arq worker that delivers handovers.

arq settings that matter here: a JSON serializer (never pickle), no kept
results (the status record is the result), `max_tries` out of the way (the
handover's max age decides when to stop), and a job timeout above the in-job
retry budget so arq never kills a job mid-write.

How the process meets faults (`run_worker`):
- SIGTERM/SIGINT: no new jobs; running ones get `WORKER_SHUTDOWN_GRACE_SECONDS`
  to finish; whatever still runs is then cancelled, which arq turns into an
  immediate re-queue. A second signal skips the rest of the grace.
- Redis lost (restart, network), never reached, or refusing writes (out of
  memory, a read-only replica, a failed disk write: `write_refusal`): arq's
  worker exits (arq #435, #498; a refused write ends it too), so a new one is
  built after a capped backoff (`worker.retry.reconnect_delays`, up to
  `WORKER_RECONNECT_MAX_SECONDS`); the process itself keeps running, and frees
  the handovers it had to cut off once Redis is back (`worker.reconnect`).
- SIGKILL/OOM: nothing runs here; arq re-runs the jobs when their in-progress
  key expires, `Settings.recovery_seconds` after they started.

How jobs are picked up (`HandoverWorker`): one Lua script takes every free slot's
job from the ready part of the queue in one round trip, skipping jobs whose
in-progress key exists (running elsewhere, or left by a dead run); while the
slots are full it takes jobs as slots free up rather than after `poll_delay`.

Health: every WORKER_HEALTH_INTERVAL_SECONDS the worker records arq's health
line under a key named after its host, with a TTL one second longer, so the key
is there only while it polls and Redis takes its writes (`worker.health`,
`flex-handover worker --check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import redis.exceptions
from arq.connections import ArqRedis
from arq.utils import timestamp_ms
from arq.worker import Worker, func

from shared import lua_scripts, redis_keys
from shared.arq_jobs import job_deserializer, job_serializer
from shared.connections import (
    arq_redis_settings,
    redis_error_text,
    redis_location,
    write_refusal,
)
from shared.logging import register_secrets
from shared.settings import Settings
from shared.store import HandoverStore
from worker.context import HandoverContext
from worker.flex_client import FlexClient
from worker.handover import deliver_handover
from worker.health import WORKER_HEALTH_INTERVAL_SECONDS
from worker.reconnect import Leftovers
from worker.retry import reconnect_delays

logger = logging.getLogger(f"flex_handover.{__name__}")

# Retries end by the handover's max age, not by a count.
MAX_TRIES = 1_000_000

# What "Redis went away" looks like from arq's poll loop and from create_pool.
# redis' ConnectionError includes BusyLoadingError (a restarted Redis still
# replaying its AOF) and AuthenticationError (kept: a password being rotated).
REDIS_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,
)

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
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
            keys=[self.queue_name],
            args=[
                timestamp_ms(),
                free,
                int(self.in_progress_timeout_s * 1000),
                self._pick_scan_limit,
            ],
        )
        for job_id_b, score in zip(picked[::2], picked[1::2], strict=True):
            job_id = job_id_b.decode() if isinstance(job_id_b, bytes) else job_id_b
            await self.sem.acquire()  # never waits: `free` slots were free
            self.job_counter += 1
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(self._job_done)
            self.tasks[job_id] = task
        return len(picked) // 2

    def _job_done(self, _task: asyncio.Task[None]) -> None:
        self._release_sem_dec_counter_on_complete()
        self._slot_freed.set()


def arq_client(url: str) -> ArqRedis:
    """The worker's arq client, made without connecting: as arq's create_pool
    makes it (the same server, job serializers and queue), minus the I/O.

    Why: create_pool connects inside the call and, when a stop cancels it
    there, drops the client it made with its socket open; a worker stopped
    while it connected (a test that ends at once, a SIGTERM at start-up) left
    an unclosed Connection for the garbage collector, a ResourceWarning in
    whichever test happened to collect it. A client made here belongs to the
    worker from the start, and `stop_worker` always closes it.
    """
    # redis-py types from_url as returning Any; this says what it makes.
    client: ArqRedis = ArqRedis.from_url(
        url,
        socket_connect_timeout=arq_redis_settings(url).conn_timeout,
        encoding="utf8",
    )
    client.job_serializer = job_serializer
    client.job_deserializer = job_deserializer
    client.default_queue_name = redis_keys.QUEUE_NAME
    return client


def create_worker(
    settings: Settings,
    *,
    redis_pool: ArqRedis | None = None,
    handle_signals: bool = True,
    leftovers: Leftovers | None = None,
    **overrides: Any,
) -> HandoverWorker:
    """An arq Worker for the handover queue. Build it inside a running event loop.
    `leftovers` (from a worker that lost Redis) are cleared once it connects."""
    register_secrets(*settings.secrets)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["handover"] = HandoverContext(
            settings=settings,
            store=HandoverStore(ctx["redis"], settings.status_ttl_seconds),
            flex=FlexClient(settings),
        )
        if leftovers:
            await leftovers.clear(ctx["redis"])
        logger.info(
            "worker ready: concurrency %d, flex api %s",
            settings.worker_concurrency,
            settings.flex_api_base_url,
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        context: HandoverContext | None = ctx.get("handover")
        if context is not None:
            await context.flex.close()

    options: dict[str, Any] = {
        "functions": [
            func(
                deliver_handover,
                name=redis_keys.HANDOVER_FUNCTION,
                timeout=settings.job_timeout_seconds,
                max_tries=MAX_TRIES,
                keep_result=0,
            )
        ],
        "queue_name": redis_keys.QUEUE_NAME,
        "redis_settings": arq_redis_settings(settings.redis_url or ""),
        "redis_pool": redis_pool or arq_client(settings.redis_url or ""),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_seconds,
        "keep_result": 0,
        "max_tries": MAX_TRIES,
        "poll_delay": settings.worker_poll_delay_seconds,
        # Only arq's own burst mode reads it: HandoverWorker picks by script.
        "queue_read_limit": max(settings.worker_concurrency, 100),
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "handle_signals": handle_signals,
        "health_check_key": redis_keys.worker_health_key(socket.gethostname()),
        "health_check_interval": WORKER_HEALTH_INTERVAL_SECONDS,
    }
    options.update(overrides)
    return HandoverWorker(**options)


class StopRequest:
    """SIGTERM/SIGINT as two events: the first asks for a graceful stop, a
    second one for an immediate stop (running jobs cancelled, so re-queued)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.graceful = asyncio.Event()
        self.immediate = asyncio.Event()

    def __call__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.graceful.is_set():
            logger.info("%s again: stopping now, running handovers are re-queued", name)
            self.immediate.set()
        else:
            logger.info("%s: stopping; no new handovers are taken", name)
        self.graceful.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the signals on the running loop, for the duration of the block."""
        loop = asyncio.get_running_loop()
        for signum in self.SIGNALS:
            loop.add_signal_handler(signum, self, signum)
        try:
            yield self
        finally:
            for signum in self.SIGNALS:
                loop.remove_signal_handler(signum)


async def run_worker(settings: Settings) -> None:
    """Run arq workers until SIGTERM/SIGINT, building a new one whenever Redis is
    lost, cannot be reached or refuses writes."""
    location = redis_location(settings.redis_url or "")
    with StopRequest().installed() as stop:
        logger.info(
            "worker starting: redis %s, shutdown grace %ds, recovery_seconds %g "
            "(a killed worker's handovers run again after at most that long)",
            location,
            settings.worker_shutdown_grace_seconds,
            settings.recovery_seconds,
        )
        delays = reconnect_delays(settings.worker_reconnect_max_seconds)
        leftovers = Leftovers()
        while not stop.graceful.is_set():
            worker = create_worker(settings, handle_signals=False, leftovers=leftovers)
            trouble = await _run_until_stopped_or_lost(worker, settings, stop, leftovers)
            if trouble is None:
                break
            if worker.healthy:  # a fresh outage, not the same one going on
                delays = reconnect_delays(settings.worker_reconnect_max_seconds)
            delay = next(delays)
            logger.warning(
                "%s; %s in %.1fs",
                describe_trouble(worker, trouble, location),
                _next_step(worker),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.graceful.wait(), delay)
    logger.info("worker stopped")


def redis_trouble(error: BaseException) -> bool:
    """Redis unreachable or refusing writes: back off and build a new worker."""
    return isinstance(error, REDIS_UNREACHABLE) or write_refusal(error) is not None


def describe_trouble(worker: Worker, error: BaseException, location: str) -> str:
    """What ended `worker`, in one line: the log filter masks the Redis password
    should a message carry it (`Settings.secrets`, URL credentials)."""
    refusal = write_refusal(error)
    if refusal is not None:
        return f"Redis at {location} refuses writes ({refusal}; {redis_error_text(error)})"
    if not _reached_redis(worker):
        return f"cannot reach Redis at {location} ({redis_error_text(error)})"
    return f"worker lost Redis at {location} ({redis_error_text(error)})"


def _next_step(worker: Worker) -> str:
    return "starting a new worker" if _reached_redis(worker) else "trying again"


def _reached_redis(worker: Worker) -> bool:
    return getattr(worker, "reached_redis", worker.pool is not None)


async def _run_until_stopped_or_lost(
    worker: HandoverWorker, settings: Settings, stop: StopRequest, leftovers: Leftovers
) -> BaseException | None:
    """Run one arq worker to its end; the Redis error that ended it, or None
    when a stop was asked for. Any other error propagates (a bug: crash loudly).
    After a Redis loss, what the cancelled jobs could not clean up goes to
    `leftovers`."""
    run = asyncio.create_task(worker.async_run())
    stop_asked = asyncio.create_task(stop.graceful.wait())
    error: BaseException | None = None
    cut_off: list[str] = []
    try:
        await asyncio.wait({run, stop_asked}, return_when=asyncio.FIRST_COMPLETED)
        error = run.exception() if run.done() and not run.cancelled() else None
        if error is not None and not redis_trouble(error):
            raise error
        if error is not None:
            # What ran when Redis went, finished or not: a run that ended meanwhile
            # could not tell arq either (a retry, a result), so its key outlives it.
            cut_off = list(worker.tasks) + worker.unfinished
        await _let_running_jobs_finish(worker, settings.worker_shutdown_grace_seconds, stop)
        return error
    finally:
        stop_asked.cancel()
        await stop_worker(worker, run)
        if error is not None:
            leftovers.collect(worker, cut_off)


async def _let_running_jobs_finish(worker: Worker, grace: float, stop: StopRequest) -> None:
    """Take no new jobs and give the running ones `grace` seconds (cut short
    by a second signal). `stop_worker` cancels the rest; arq re-queues them.

    After a Redis loss this also lets a job whose HTTP call is in flight see
    its answer and try to record it, rather than be cut mid-call.
    """
    worker.allow_pick_jobs = False
    running = [task for task in worker.tasks.values() if not task.done()]
    if not running or grace <= 0 or stop.immediate.is_set():
        return
    logger.info("waiting up to %gs for %d running handover(s)", grace, len(running))
    finished = asyncio.gather(*running, return_exceptions=True)
    hurry = asyncio.create_task(stop.immediate.wait())
    either: set[asyncio.Future[Any]] = {finished, hurry}
    try:
        await asyncio.wait(either, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurry.cancel()
    still_running = sum(not task.done() for task in running)
    if still_running:
        logger.info("%d handover(s) still running: cancelling, arq re-queues them", still_running)


async def stop_worker(worker: Worker, task: asyncio.Task[None] | None = None) -> None:
    """Stop a worker completely, whether or not Redis is reachable: polling
    stopped, jobs cancelled (arq re-queues them), on_shutdown run, pool closed.

    Not arq's close(): it gathers the job tasks without return_exceptions and
    stops at its first Redis command when Redis is gone, so on_shutdown and
    the pool close would be skipped.
    """
    runners = [t for t in (worker.main_task, task) if t is not None]
    for runner in runners:
        runner.cancel()
    for job_task in worker.tasks.values():
        job_task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    worker.tasks.clear()
    await asyncio.gather(*runners, return_exceptions=True)
    pool: ArqRedis | None = worker.pool  # None only for an arq Worker that never connected
    if pool is None:
        return
    try:
        if _had_started(worker):  # else there is no health key or context to clean up
            with contextlib.suppress(*REDIS_UNREACHABLE, redis.exceptions.RedisError):
                await pool.delete(worker.health_check_key)
            if worker.on_shutdown is not None:
                await worker.on_shutdown(worker.ctx)
    finally:
        await pool.aclose(close_connection_pool=True)


def _had_started(worker: Worker) -> bool:
    """Whether the worker reached Redis and ran its start-up."""
    return "handover" in worker.ctx
