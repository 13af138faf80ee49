"""HANDOVER_MAX_PENDING end to end: a full backlog answers 503 with
Retry-After and stores nothing; the real worker draining it makes room again;
and the count of live handovers does not drift, whatever ends their runs
(success, failure, replay, a SIGKILLed worker).
"""

from __future__ import annotations

import time

from shared import deadletters, redis_keys
from shared.connections import BACKLOG_RETRY_AFTER_SECONDS
from shared.settings import Settings
from shared.store import HandoverStore
from tests.support.outcomes import (
    FAST_RECOVERY,
    HOLD_SECONDS,
    SLACK_SECONDS,
    snapshot,
    wait_all_final,
)
from tests.support.processes import call_tool, clean_env, wait_until
from tests.support.service import service_env
from tests.support.values import new_conversation_sid, session_header

UNLIMITED = {"HANDOVER_RATE_LIMIT_PER_CONVERSATION": 0, "HANDOVER_RATE_LIMIT_PER_IDENTITY": 0}


def assert_backlog_full(status: int, body: dict, response) -> None:
    assert status == 503, body
    assert body["error"] == "backlog_full"
    assert set(body) == {"error", "message"}
    assert response.headers["Retry-After"] == str(BACKLOG_RETRY_AFTER_SECONDS)
    assert f"try again in {BACKLOG_RETRY_AFTER_SECONDS} seconds" in body["message"]


async def test_a_full_backlog_is_503_and_stores_nothing_until_the_worker_drains_it(
    start_service, simulator, redis
):
    service = await start_service(worker=False, HANDOVER_MAX_PENDING=25, **UNLIMITED)
    accepted = []
    for n in range(25):
        status, body, _ = await service.call_tool(
            session_id=session_header(new_conversation_sid(n))
        )
        assert status == 202, body
        accepted.append(body["handover_id"])
    before = await snapshot(redis)

    for n in range(100, 110):  # new conversations: refused, nothing written
        status, body, response = await service.call_tool(
            session_id=session_header(new_conversation_sid(n))
        )
        assert_backlog_full(status, body, response)
    assert await snapshot(redis) == before

    # A repeat call for a live handover is answered, not refused.
    status, body, _ = await service.call_tool(session_id=session_header(new_conversation_sid(3)))
    assert (status, body["handover_id"]) == (200, accepted[3])

    await service.start_worker()
    for handover_id in accepted:
        assert (await service.wait_final(handover_id))["state"] == "succeeded"
    await wait_until(lambda: _queue_empty(redis), 10, "arq took every finished job off the queue")
    status, body, _ = await service.call_tool(session_id=session_header(new_conversation_sid(100)))
    assert status == 202, body
    assert (await service.wait_final(body["handover_id"]))["state"] == "succeeded"


async def _queue_empty(redis) -> bool:
    return await redis.zcard(redis_keys.QUEUE_NAME) == 0


async def submit(api_url: str, conversation: int) -> str:
    status, body, _ = await call_tool(api_url, new_conversation_sid(conversation))
    assert status == 202, body
    return body["handover_id"]


async def test_the_count_does_not_drift_after_failures_replays_and_a_killed_worker(
    processes, simulator, redis_server, redis
):
    """Runs end every way a run can end: failed for good (400), replayed and
    succeeded, cut off by SIGKILL and recovered by another worker. Afterwards,
    with no worker running, exactly HANDOVER_MAX_PENDING new handovers are
    accepted again: a count that had drifted up would refuse sooner, one that
    had drifted down would take more."""
    cap = 4
    env = clean_env(
        **service_env(
            redis_server.url, simulator.base_url, HANDOVER_MAX_PENDING=cap,
            **UNLIMITED, **FAST_RECOVERY,
        )
    )  # fmt: skip
    settings = Settings.from_env(env, role="worker")
    store = HandoverStore(redis, settings.status_ttl_seconds)
    _, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)

    # Failed for good, then replayed: succeeded.
    simulator.fail_next(400, count=2)
    failed = [await submit(api_url, n) for n in (1, 2)]
    records = await wait_all_final(store, failed, timeout=15)
    assert {record["state"] for record in records.values()} == {"failed"}
    await wait_until(lambda: _queue_empty(redis), 10, "the failed runs left the queue")
    for handover_id in failed:
        result = await deadletters.Replayer(redis, settings).replay(handover_id)
        assert result.replayed, result.message
    records = await wait_all_final(store, failed, timeout=15)
    assert {record["state"] for record in records.values()} == {"succeeded"}

    # Cut off by SIGKILL mid-request, recovered by another worker.
    simulator.latency = HOLD_SECONDS
    sent = len(simulator.requests)
    cut_off = [await submit(api_url, n) for n in (3, 4)]
    await wait_until(lambda: len(simulator.requests) == sent + 2, 10, "both POSTs at the simulator")
    worker.kill()
    killed_at = time.monotonic()
    simulator.latency = 0.0
    rescuer = await processes.start_worker(env)
    records = await wait_all_final(
        store,
        cut_off,
        timeout=settings.recovery_seconds + SLACK_SECONDS - (time.monotonic() - killed_at),
    )
    assert {record["state"] for record in records.values()} == {"succeeded"}
    assert all(record["ambiguous_attempts"] == 1 for record in records.values()), records
    await wait_until(lambda: _queue_empty(redis), 10, "every run left the queue")
    assert await rescuer.terminate() == 0

    # No worker now: exactly `cap` new handovers fit.
    for n in range(10, 10 + cap):
        await submit(api_url, n)
    assert_backlog_full(*await call_tool(api_url, new_conversation_sid(10 + cap)))
    assert await redis.zcard(redis_keys.QUEUE_NAME) == cap
