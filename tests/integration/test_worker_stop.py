"""A worker stopped at any point closes every Redis connection it opened.

The suite's one-run-in-three failure: a worker stopped while it was still
connecting (a test that ends within milliseconds of starting its service)
left a connected socket behind, found by the garbage collector later as an
"unclosed Connection" ResourceWarning in whichever test was running then.
arq's create_pool dropped the client it had made when cancelled between
connecting and returning it. Here the stop comes after every number of event
loop steps in turn, so it lands in that window every run, not one run in thirty.
"""

from __future__ import annotations

import asyncio
import gc
import warnings

from shared.settings import Settings
from tests.support.processes import wait_until
from tests.support.service import service_env
from worker.main import create_worker, stop_worker

STEPS = 40  # connecting to the local Redis takes about a dozen loop steps


async def connected_clients(redis) -> int:
    return len(await redis.client_list())


async def test_a_worker_stopped_at_any_step_of_its_start_closes_its_connections(
    redis, redis_server
):
    settings = Settings.from_env(service_env(redis_server.url, "http://127.0.0.1:9"), role="worker")
    baseline = await connected_clients(redis)
    for steps in range(STEPS):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            worker = create_worker(settings, handle_signals=False)
            run = asyncio.create_task(worker.async_run())
            for _ in range(steps):
                await asyncio.sleep(0)
            await stop_worker(worker, run)
            del worker, run
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not leaks, f"stopped after {steps} steps: {leaks}"
        await wait_until(
            lambda: _back_to(redis, baseline), 5, f"no connection left after {steps} steps"
        )


async def _back_to(redis, baseline: int) -> bool:
    return await connected_clients(redis) <= baseline
