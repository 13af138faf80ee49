"""How the worker meets Twilio's failures: retry what is temporary, fail what is not."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.values import session_header

# A 5xx, a timeout or a reset is ambiguous: the worker looks for a task before
# it sends again. Short lookup windows keep these tests quick.
FAST_LOOKUP = {"HANDOVER_LOOKUP_GRACE_SECONDS": "0.1", "HANDOVER_LOOKUP_INTERVAL_SECONDS": "0.02"}


@pytest.fixture
def start_service(start_service):
    async def start(**overrides):
        return await start_service(**{**FAST_LOOKUP, **overrides})

    return start


# Each temporary Twilio fault: how to inject it, the error the handover keeps
# when it never clears (HTTP status, words of the message), and whether the
# request may have created the Interaction (then the worker looks before resending).
TEMPORARY_FAULTS = [
    pytest.param({"status": 500}, 500, "Twilio answered 500", True, id="500"),
    pytest.param({"status": 503}, 503, "Twilio answered 503", True, id="503"),
    pytest.param(
        {"status": 429, "retry_after": "0.2"},
        429,
        "Twilio answered 429",
        False,
        id="429-retry-after",
    ),
    pytest.param({"status": 429}, 429, "Twilio answered 429", False, id="429"),
    pytest.param({"hang": 5}, None, "did not answer within 0.3s", True, id="hang"),
    pytest.param({"reset": True}, None, "connection to Twilio failed", True, id="reset"),
]
# A hung request is cut off at 0.3 s.
FAST_FAULTS = {"HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "0.3"}


@pytest.mark.parametrize(("fault", "status", "message", "ambiguous"), TEMPORARY_FAULTS)
async def test_temporary_fault_then_success(
    start_service, simulator, fault, status, message, ambiguous
):
    service = await start_service(**FAST_FAULTS)
    simulator.fail_next(**fault, count=2)
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"], timeout=15)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 3
    assert record["error"] is None
    if ambiguous:
        assert record["ambiguous_attempts"] == 2
        assert record["lookups"] >= 2
    else:
        assert (record["ambiguous_attempts"], record["lookups"]) == (0, 0)
    assert [i["sid"] for i in simulator.interactions] == [record["interaction_sid"]]


@pytest.mark.parametrize(("fault", "status", "message", "ambiguous"), TEMPORARY_FAULTS)
async def test_temporary_fault_that_never_clears_fails_at_max_age_with_the_last_error(
    start_service, simulator, fault, status, message, ambiguous
):
    service = await start_service(
        **FAST_FAULTS,
        HANDOVER_MAX_AGE_SECONDS="1",
        HANDOVER_RETRY_BUDGET_SECONDS="0.2",
        HANDOVER_REQUEUE_DELAY_SECONDS="0.2",
    )
    simulator.fail_next(**fault, count=1000)
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"], timeout=15)
    assert record["state"] == "failed", record
    assert record["error"]["status"] == status
    assert "gave up after" in record["error"]["message"]
    assert message in record["error"]["message"]
    assert record["attempts"] >= 2
    assert simulator.interactions == []


async def test_rate_limit_retry_after_is_honoured(service, simulator):
    simulator.fail_next(429, retry_after="1")
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "succeeded", record
    first, second = simulator.requests[:2]
    # Backoff alone would retry within 0.05 s (HANDOVER_BACKOFF_MAX_SECONDS).
    assert second["received_at"] - first["received_at"] >= 0.95
    assert len(simulator.interactions) == 1


async def test_permanent_client_error_fails_without_retrying(service, simulator):
    simulator.fail_next(400, code=20001, message="Invalid Routing")
    _, body, _ = await service.call_tool(session_id=session_header())
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "failed"
    assert record["attempts"] == 1
    assert (record["ambiguous_attempts"], record["lookups"]) == (0, 0)
    assert record["error"]["status"] == 400
    assert record["error"]["code"] == 20001
    assert "Invalid Routing" in record["error"]["message"]
    assert len(simulator.requests) == 1
    assert simulator.interactions == []


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
    assert record["ambiguous_attempts"] == 6
    assert record["lookups"] >= 6
    assert seen_retrying is not None and seen_retrying["error"]["status"] == 500
    assert len(simulator.interactions) == 1


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
