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

How jobs are picked up: `worker.arq_worker.HandoverWorker`.

Health: every WORKER_HEALTH_INTERVAL_SECONDS the worker records arq's health
line under a key named after its host, with a TTL one second longer, so the key
is there only while it polls and Redis takes its writes (`worker.health`,
`flex-handover worker --check`).

Metrics: one `WorkerMetrics` for the process's life, across the arq workers an
outage makes it build, served on WORKER_METRICS_PORT (`worker.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import redis.exceptions
from arq.connections import ArqRedis
from arq.worker import Worker, func

from shared import redis_keys
from shared.arq_jobs import job_deserializer, job_serializer
from shared.connections import redis_error_text, write_refusal
from shared.key_migration import migrate_if_needed
from shared.logging import register_secrets
from shared.redis_client import arq_client, arq_redis_settings, redis_location
from shared.script_batcher import ReplicaWait
from shared.settings import Settings
from shared.store import HandoverStore
from worker.arq_worker import HandoverWorker
from worker.context import HandoverContext
from worker.flex_client import FlexClient
from worker.hand_back import hand_back_handover
from worker.handover import deliver_handover
from worker.health import WORKER_HEALTH_INTERVAL_SECONDS
from worker.metrics import WorkerMetrics, metrics_server
from worker.reconnect import Leftovers
from worker.retry import reconnect_delays

logger = logging.getLogger(f"flex_handover.{__name__}")

# Retries end by the handover's max age, not by a count.
MAX_TRIES = 1_000_000
# Allocations between two young collections once the worker has started (Python: 700).
GC_YOUNG_THRESHOLD = 20_000

# What "Redis went away" looks like from arq's poll loop and from create_pool.
# redis' ConnectionError includes BusyLoadingError (a restarted Redis still
# replaying its AOF) and AuthenticationError (kept: a password being rotated).
REDIS_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,
)


def create_worker(
    settings: Settings,
    *,
    redis_pool: ArqRedis | None = None,
    handle_signals: bool = True,
    leftovers: Leftovers | None = None,
    metrics: WorkerMetrics | None = None,
    **overrides: Any,
) -> HandoverWorker:
    """An arq Worker for the handover queue. Build it inside a running event loop.
    `leftovers` (from a worker that lost Redis) are cleared once it connects;
    `metrics`: the process's (`run_worker`), else the worker's own."""
    register_secrets(*settings.secrets)
    counters = metrics if metrics is not None else WorkerMetrics(settings.targets)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["handover"] = HandoverContext(
            settings=settings,
            store=HandoverStore(
                ctx["redis"], settings.status_ttl_seconds, ReplicaWait.of(settings)
            ),
            flex=FlexClient(settings),
            metrics=counters,
        )
        # Before the first job is taken.
        await migrate_if_needed(ctx["redis"], cluster=settings.redis.cluster)
        if leftovers:
            await leftovers.clear(ctx["redis"])
        # Start-up's objects live as long as the process: out of the collector's
        # sight (as in api.server), a full collection no longer walks them.
        gc.freeze()
        # Hundreds of handovers in flight are hundreds of live objects each, walked
        # again by every young collection: at Python's 700 allocations a
        # collection, that was a tenth of the worker's CPU at concurrency 500
        # (BENCHMARKS.md, third round). Cyclic garbage waits a little longer.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
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
            ),
            func(
                hand_back_handover,
                name=redis_keys.HAND_BACK_FUNCTION,
                timeout=settings.job_timeout_seconds,
                max_tries=MAX_TRIES,
                keep_result=0,
            ),
        ],
        "queue_name": redis_keys.QUEUE_NAME,
        "redis_settings": arq_redis_settings(settings.redis),
        "redis_pool": redis_pool or arq_client(settings.redis),
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
        "flex_api_max_rps": settings.flex_api_max_rps,
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
    location = redis_location(settings.redis)
    metrics = WorkerMetrics(settings.targets)
    async with metrics_server(settings, metrics):
        await _run_workers(settings, metrics, location)
    logger.info("worker stopped")


async def _run_workers(settings: Settings, metrics: WorkerMetrics, location: str) -> None:
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
            worker = create_worker(
                settings, handle_signals=False, leftovers=leftovers, metrics=metrics
            )
            metrics.worker = worker
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
        metrics.worker = None


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
