"""How the worker meets Twilio's failures: retry what is temporary, fail what is not."""

from __future__ import annotations

import asyncio

from tests.conftest import session_header


async def test_server_errors_then_success(service, simulator):
    simulator.fail_next(503, count=2)
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 3
    assert record["error"] is None
    assert len(simulator.interactions) == 1


async def test_rate_limit_retry_after_is_honoured(service, simulator):
    simulator.fail_next(429, retry_after="1")
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded", record
    first, second = simulator.requests[:2]
    # Backoff alone would retry within 0.05 s (HANDOVER_BACKOFF_MAX_SECONDS).
    assert second["received_at"] - first["received_at"] >= 0.95
    assert len(simulator.interactions) == 1


async def test_rate_limit_without_retry_after_backs_off_and_succeeds(service, simulator):
    simulator.fail_next(429, count=3)
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded"
    assert record["attempts"] == 4


async def test_permanent_client_error_fails_without_retrying(service, simulator):
    simulator.fail_next(400, code=20001, message="Invalid Routing")
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "failed"
    assert record["attempts"] == 1
    assert record["error"]["status"] == 400
    assert record["error"]["code"] == 20001
    assert "Invalid Routing" in record["error"]["message"]
    assert len(simulator.requests) == 1
    assert simulator.interactions == []


async def test_hung_request_is_cut_off_and_retried(start_service, simulator):
    service = await start_service(HANDOVER_ATTEMPT_TIMEOUT_SECONDS="0.3")
    simulator.fail_next(hang=5)
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"], timeout=5)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 2


async def test_connection_reset_is_retried(service, simulator):
    simulator.fail_next(reset=True)
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 2


async def test_budget_spent_requeues_through_arq_then_succeeds(start_service, simulator, redis):
    service = await start_service(
        HANDOVER_RETRY_BUDGET_SECONDS="0.2",
        HANDOVER_BACKOFF_INITIAL_SECONDS="0.05",
        HANDOVER_BACKOFF_MAX_SECONDS="0.1",
        HANDOVER_REQUEUE_DELAY_SECONDS="0.3",
    )
    simulator.fail_next(500, count=6)
    _, body, _ = await service.call_tool(session_id=session_header())
    seen_retrying = None
    for _ in range(200):
        record = await service.status(body["handover_id"])
        if record["state"] == "retrying" and record["next_attempt_at"]:
            seen_retrying = record
            break
        await asyncio.sleep(0.01)
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 7
    assert seen_retrying is not None and seen_retrying["error"]["status"] == 500
    assert len(simulator.interactions) == 1


async def test_gives_up_at_max_age_with_the_last_error(start_service, simulator):
    service = await start_service(
        HANDOVER_MAX_AGE_SECONDS="1",
        HANDOVER_RETRY_BUDGET_SECONDS="0.2",
        HANDOVER_REQUEUE_DELAY_SECONDS="0.2",
    )
    simulator.fail_next(503, count=1000, code=20500, message="Service Unavailable")
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "failed"
    assert record["error"]["status"] == 503
    assert "gave up after" in record["error"]["message"]
    assert record["attempts"] >= 2
    assert simulator.interactions == []


async def test_unconfigured_target_on_the_worker_fails_with_a_reason(
    start_service, simulator, redis
):
    api = await start_service(worker=False)
    _, body, _ = await api.call_tool(
        path="/tools/flex-handover/billing", session_id=session_header()
    )
    worker_side = await start_service(HANDOVER_TARGETS="{}")
    record = await worker_side.wait_final(body["handover_id"])
    assert record["state"] == "failed"
    assert "billing" in record["error"]["message"]


async def test_retry_after_longer_than_the_budget_requeues_for_that_long(start_service, simulator):
    service = await start_service(
        HANDOVER_RETRY_BUDGET_SECONDS="0.3", HANDOVER_REQUEUE_DELAY_SECONDS="30"
    )
    simulator.fail_next(429, retry_after="1.2")
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"], timeout=10)
    assert record["state"] == "succeeded", record
    first, second = simulator.requests[:2]
    # Neither the 30 s requeue delay nor an immediate retry: Twilio's 1.2 s.
    assert 1.15 <= second["received_at"] - first["received_at"] < 10
