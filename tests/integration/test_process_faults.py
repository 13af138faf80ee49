"""The worker process meets faults: SIGKILL, SIGTERM, a Redis restart.

Real processes only: `flex-handover api` and `flex-handover worker`
subprocesses, a real Redis, the local Flex simulator. What every test checks
in the end: each handover the API acknowledged ends `succeeded`, with exactly
one Interaction in Flex.

Timings are shrunk through the environment, so arq's recovery bound
(`Settings.recovery_seconds`, 92 s by default) is about 46 s here.
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from shared import redis_keys
from shared.redis_client import create_redis
from shared.settings import Settings
from shared.store import HandoverStore
from tests.support.outcomes import (
    FAST_RECOVERY,
    HOLD_SECONDS,
    SLACK_SECONDS,
    assert_each_ended_once,
    wait_all_final,
)
from tests.support.processes import WORKER_READY, call_tool, clean_env, wait_until
from tests.support.service import service_env
from tests.support.values import new_conversation_sid


async def submit(api_url: str, conversation_sid: str) -> str:
    """A tool call the API acknowledges (202); the handover id."""
    status, body, _ = await call_tool(api_url, conversation_sid)
    assert status == 202, body
    return body["handover_id"]


# --- SIGKILL ------------------------------------------------------------------


async def test_sigkilled_worker_handovers_end_once_within_recovery_seconds(
    processes, simulator, redis_server, redis
):
    """Two handovers are mid-POST when their worker is SIGKILLed: one request
    never gets an answer, the other still creates its Interaction after the
    worker is gone. Another worker re-runs both once arq's in-progress keys
    expire; neither may create a second Interaction."""
    env = clean_env(**service_env(redis_server.url, simulator.base_url, **FAST_RECOVERY))
    settings = Settings.from_env(env, role="worker")
    _, api_url = await processes.start_api(env)
    doomed = await processes.start_worker(env)
    simulator.fail_next(500, hang=HOLD_SECONDS)  # first request: held, then a 500
    simulator.latency = HOLD_SECONDS  # second: held, then created
    conversations = [new_conversation_sid(1), new_conversation_sid(2)]
    ids = [await submit(api_url, sid) for sid in conversations]
    await wait_until(lambda: len(simulator.requests) >= 2, 10, "both POSTs at the simulator")

    doomed.kill()
    killed_at = time.monotonic()
    simulator.latency = 0.0
    await wait_until(
        lambda: len(simulator.interactions) == 1,
        5,
        "the dead worker's request creates its Interaction",
    )
    rescuer = await processes.start_worker(env)

    records = await wait_all_final(
        HandoverStore(redis, settings.status_ttl_seconds),
        ids,
        timeout=settings.recovery_seconds + SLACK_SECONDS - (time.monotonic() - killed_at),
    )
    assert_each_ended_once(records, simulator)
    assert f"recovery_seconds {settings.recovery_seconds:g}" in rescuer.log()
    assert await rescuer.terminate() == 0


# --- SIGTERM ------------------------------------------------------------------


async def test_sigterm_lets_a_running_handover_finish_then_exits_0(
    processes, simulator, redis_server, redis
):
    env = clean_env(
        **service_env(redis_server.url, simulator.base_url, WORKER_SHUTDOWN_GRACE_SECONDS="10")
    )
    settings = Settings.from_env(env, role="worker")
    _, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)
    simulator.latency = 1.0  # the POST is in flight when SIGTERM arrives
    handover_id = await submit(api_url, new_conversation_sid(3))
    await wait_until(lambda: simulator.requests, 10, "the POST at the simulator")

    assert await worker.terminate(timeout=settings.worker_shutdown_grace_seconds + 10) == 0, (
        worker.log()
    )

    # No other worker runs: the handover was finished by the one stopping.
    record = (await HandoverStore(redis, settings.status_ttl_seconds).get(handover_id)).to_public()
    assert_each_ended_once({handover_id: record}, simulator)
    assert len(simulator.requests) == 1
    assert "waiting up to 10s for 1 running handover(s)" in worker.log()


@pytest.mark.parametrize(
    ("grace", "signals"),
    [pytest.param("1", 1, id="grace-runs-out"), pytest.param("60", 2, id="second-signal")],
)
async def test_sigterm_requeues_what_is_still_running_for_another_worker(
    processes, simulator, redis_server, redis, grace, signals
):
    """A handover still running when the grace ends (or on a second SIGTERM)
    is cancelled and re-queued at once: the next worker delivers it without
    waiting for arq's in-progress key to expire."""
    env = clean_env(
        **service_env(
            redis_server.url,
            simulator.base_url,
            WORKER_SHUTDOWN_GRACE_SECONDS=grace,
            HANDOVER_ATTEMPT_TIMEOUT_SECONDS="10",
            HANDOVER_LOOKUP_GRACE_SECONDS="0.2",
        )
    )
    settings = Settings.from_env(env, role="worker")
    delivered_within = 15.0
    assert settings.recovery_seconds > 2 * delivered_within  # so "at once" is visible
    _, api_url = await processes.start_api(env)
    stopping = await processes.start_worker(env)
    simulator.fail_next(500, hang=8)  # outlasts the grace; never creates an Interaction
    handover_id = await submit(api_url, new_conversation_sid(4))
    await wait_until(lambda: simulator.requests, 10, "the POST at the simulator")

    if signals == 2:
        stopping.process.terminate()
        await stopping.wait_for_log("waiting up to 60s", timeout=10)
    assert await stopping.terminate(timeout=15) == 0, stopping.log()
    assert "still running: cancelling, arq re-queues them" in stopping.log()

    # Back in the queue, not held by an in-progress key.
    assert (
        await redis.zscore(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(handover_id))
        is not None
    )
    assert not await redis.exists(
        redis_keys.arq_in_progress_key(redis_keys.handover_job_id(handover_id))
    )
    await processes.start_worker(env)
    records = await wait_all_final(
        HandoverStore(redis, settings.status_ttl_seconds), [handover_id], delivered_within
    )
    assert_each_ended_once(records, simulator)


# --- Redis restart ------------------------------------------------------------


async def test_killed_redis_keeps_every_acknowledged_write(own_redis):
    """AOF with appendfsync everysec: Redis write()s each command to the AOF
    before it answers, so a killed Redis process loses nothing it acknowledged."""
    keys_written = [f"acknowledged:{n}" for n in range(200)]
    client = create_redis(own_redis.url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for n, key in enumerate(keys_written):
                pipe.set(key, n)
            await pipe.execute()
    finally:
        await client.aclose()
    port = own_redis.port
    own_redis.restart()
    assert own_redis.port == port
    client = create_redis(own_redis.url)
    try:
        assert await client.mget(keys_written) == [str(n) for n in range(200)]
    finally:
        await client.aclose()


async def test_redis_restart_the_worker_reconnects_and_every_acknowledged_handover_ends_once(
    processes, simulator, own_redis
):
    """Redis is SIGKILLed with one handover mid-POST and two queued behind it.
    While it is down the API answers 503; once it is back the API takes
    handovers again by itself, the same worker process reconnects, frees the
    handover it cut off (its in-progress key survived in the AOF) instead of
    leaving it for `recovery_seconds`, and all four handovers end once."""
    env = clean_env(
        **service_env(own_redis.url, simulator.base_url, WORKER_CONCURRENCY="1", **FAST_RECOVERY)
    )
    settings = Settings.from_env(env, role="worker")
    api, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)
    simulator.fail_next(503, hang=30)  # cut off by the 1 s attempt timeout, after Redis is gone
    conversations = [new_conversation_sid(n) for n in range(10, 14)]
    ids = [await submit(api_url, sid) for sid in conversations[:3]]
    await wait_until(lambda: simulator.requests, 10, "the first POST at the simulator")

    own_redis.kill()
    killed_at = time.monotonic()
    status, body, _ = await call_tool(api_url, conversations[3])
    assert status == 503, body
    async with aiohttp.ClientSession() as http, http.get(api_url + "/readyz") as ready:
        assert ready.status == 503
    await worker.wait_for_log("worker lost Redis", timeout=10)

    own_redis.start()
    status, body = await wait_until(
        lambda: _accepted(api_url, conversations[3]), 15, "the API takes handovers again"
    )
    ids.append(body["handover_id"])
    await worker.wait_for_log(WORKER_READY, timeout=30, count=2)

    client = create_redis(own_redis.url)
    try:
        records = await wait_all_final(
            HandoverStore(client, settings.status_ttl_seconds),
            ids,
            timeout=settings.recovery_seconds + SLACK_SECONDS,
        )
    finally:
        await client.aclose()
    assert_each_ended_once(records, simulator)
    # Left to arq, the cut-off handover would wait for its in-progress key.
    assert time.monotonic() - killed_at < settings.recovery_seconds, worker.log()
    assert "reconnected: 1 handover(s) cut off while Redis was unavailable" in worker.log(), (
        worker.log()
    )
    assert worker.returncode is None, "the worker process itself must survive"
    assert await worker.terminate() == 0
    assert await api.terminate() == 0
    for log in (worker.log(), api.log()):
        assert own_redis.password not in log


async def test_worker_waiting_for_redis_still_stops_at_once_on_sigterm(
    processes, simulator, own_redis
):
    """Redis down when the worker starts (or for long): it keeps trying, and a
    SIGTERM in between ends it cleanly instead of waiting for Redis."""
    own_redis.kill()
    env = clean_env(**service_env(own_redis.url, simulator.base_url))
    worker = await processes.start("worker", "worker", env=env)
    await worker.wait_for_log("cannot reach Redis at", timeout=20)
    assert await worker.terminate(timeout=10) == 0, worker.log()
    assert own_redis.password not in worker.log()


async def _accepted(api_url: str, conversation_sid: str) -> tuple[int, dict] | None:
    status, body, _ = await call_tool(api_url, conversation_sid)
    return (status, body) if status == 202 else None
