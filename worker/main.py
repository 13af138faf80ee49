"""Builds and runs the arq worker that delivers handovers.

arq settings that matter here: a JSON serializer (never pickle), no kept
results (the status record is the result), `max_tries` out of the way (the
handover's max age decides when to stop), and a job timeout above the in-job
retry budget so arq never kills a job mid-write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from arq.connections import ArqRedis
from arq.worker import Worker, func

from shared import keys
from shared.connections import arq_redis_settings
from shared.jobs import deserialize_job, serialize_job
from shared.settings import Settings
from shared.store import HandoverStore
from worker.flex_client import FlexClient
from worker.handover import HandoverContext, deliver_handover

logger = logging.getLogger("flex_handover.worker")

# Retries end by the handover's max age, not by a count.
MAX_TRIES = 1_000_000


def create_worker(
    settings: Settings,
    *,
    redis_pool: ArqRedis | None = None,
    handle_signals: bool = True,
    **overrides: Any,
) -> Worker:
    """An arq Worker for the handover queue. Build it inside a running event loop."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["handover"] = HandoverContext(
            settings=settings,
            store=HandoverStore(ctx["redis"], settings.status_ttl_seconds),
            flex=FlexClient(settings),
        )
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
                name=keys.HANDOVER_FUNCTION,
                timeout=settings.job_timeout_seconds,
                max_tries=MAX_TRIES,
                keep_result=0,
            )
        ],
        "queue_name": keys.QUEUE_NAME,
        "redis_settings": arq_redis_settings(settings.redis_url or ""),
        "redis_pool": redis_pool,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.worker_concurrency,
        "job_timeout": settings.job_timeout_seconds,
        "keep_result": 0,
        "max_tries": MAX_TRIES,
        "poll_delay": settings.worker_poll_delay_seconds,
        "queue_read_limit": max(settings.worker_concurrency, 100),
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "handle_signals": handle_signals,
    }
    options.update(overrides)
    return Worker(**options)


async def run_worker(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM (arq cancels running jobs, which re-queues them)."""
    worker = create_worker(settings)
    try:
        await worker.async_run()
    except asyncio.CancelledError:
        pass
    finally:
        await stop_worker(worker)


async def stop_worker(worker: Worker, task: asyncio.Task | None = None) -> None:
    """Stop a worker completely: jobs cancelled (arq re-queues them), then
    on_shutdown and the Redis pool closed.

    arq's own close() gathers the job tasks without return_exceptions, so a
    cancelled job makes it raise before it runs on_shutdown or closes its
    pool: the jobs are settled here first.
    """
    for job_task in worker.tasks.values():
        job_task.cancel()
    await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
    worker.tasks.clear()
    with contextlib.suppress(asyncio.CancelledError):
        await worker.close()
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
