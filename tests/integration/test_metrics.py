"""`GET /metrics` after real handovers: the real `flex-handover api` and `worker`
processes (and `api --processes 2`), a real Redis, the Flex simulator with its
faults; then each caller kind in-process, and HANDOVER_METRICS=false."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from standins.redis_server import free_port
from tests.support.metrics import label_values, parse, samples_at, scrape, value
from tests.support.processes import call_tool, clean_env, wait_healthy, wait_until
from tests.support.service import service_env
from tests.support.values import admin_auth, new_conversation_sid, session_header, tool_auth

METRICS_TOKEN = "metrics-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
FAST_LOOKUP = {"HANDOVER_LOOKUP_GRACE_SECONDS": "0.1", "HANDOVER_LOOKUP_INTERVAL_SECONDS": "0.02"}
CALLS = "flex_handover_tool_calls_total"


def calls(samples, outcome, reason="", caller="tool"):
    return value(samples, CALLS, caller=caller, outcome=outcome, reason=reason)


async def wait_state(api_url: str, handover_id: str, timeout: float = 15.0) -> dict:
    async def final() -> dict | None:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{api_url}/handovers/{handover_id}", headers=admin_auth()) as response,
        ):
            record = await response.json()
            return record if record["state"] in ("succeeded", "failed") else None

    return await wait_until(final, timeout, f"handover {handover_id} final")


async def test_api_and_worker_metrics_after_a_retry_a_failure_and_refusals(
    processes, simulator, redis_server, redis
):
    worker_port = free_port()
    env = clean_env(
        **service_env(
            redis_server.url,
            simulator.base_url,
            **FAST_LOOKUP,
            HANDOVER_METRICS_TOKEN=METRICS_TOKEN,
            WORKER_METRICS_PORT=str(worker_port),
        )
    )
    _, api_url = await processes.start_api(env)
    await processes.start_worker(env)
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"

    # A 500 (ambiguous: looked up, not found, sent again), then a permanent 400.
    simulator.fail_next(500)
    status, retried, _ = await call_tool(api_url, new_conversation_sid(7001))
    assert status == 202
    assert (await wait_state(api_url, retried["handover_id"]))["state"] == "succeeded"
    simulator.fail_next(400, code=20001, message="Invalid Routing")
    status, failed, _ = await call_tool(api_url, new_conversation_sid(7002))
    assert status == 202
    assert (await wait_state(api_url, failed["handover_id"]))["state"] == "failed"
    # A repeat, a call without credentials, one to a target nobody configured.
    assert (await call_tool(api_url, new_conversation_sid(7001)))[0] == 200
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{api_url}/tools/flex-handover", headers={"X-Session-Id": session_header()}
        ) as response:
            assert response.status == 401
        async with http.post(
            f"{api_url}/tools/flex-handover/no-such-target",
            headers={"X-Session-Id": session_header(), **tool_auth()},
        ) as response:
            assert response.status == 404

    for url in (f"{api_url}/metrics", worker_url):
        status, _, response = await scrape(url)
        assert (status, response.headers.get("WWW-Authenticate")) == (401, "Bearer"), url
        assert (await scrape(url, headers={"Authorization": "Bearer not-the-token-00000"}))[
            0
        ] == 403

    api = await samples_at(f"{api_url}/metrics", headers=BEARER)
    assert calls(api, "stored") == 2
    assert calls(api, "duplicate") == 1
    assert calls(api, "refused", "unauthorized") == 1
    assert calls(api, "refused", "unknown_target") == 1
    assert calls(api, "unavailable") == 0
    assert value(api, "flex_handover_ack_duration_seconds_count", caller="tool") == 5
    assert not any("no-such-target" in dict(labels).values() for _, labels in api)
    assert value(api, "flex_handover_redis_up") == 1
    assert value(api, "flex_handover_queue_depth") is not None

    worker = await samples_at(worker_url, headers=BEARER)
    attempts = "flex_handover_attempts_total"
    assert value(worker, attempts, result="5xx") == 1
    assert value(worker, attempts, result="2xx") == 1
    assert value(worker, attempts, result="4xx") == 1
    assert value(worker, attempts, result="timeout") == 0
    assert value(worker, "flex_handover_ambiguous_attempts_total") == 1
    assert value(worker, "flex_handover_task_lookups_total", result="not_found") == 1
    assert value(worker, "flex_handover_task_lookups_total", result="found") == 0
    finished = "flex_handover_handovers_finished_total"
    assert value(worker, finished, state="succeeded", target="default") == 1
    assert value(worker, finished, state="failed", target="default") == 1
    assert label_values(worker, finished, "target") == {"default", "billing", "unknown"}
    assert value(worker, "flex_handover_ack_to_interaction_seconds_count") == 1
    assert value(worker, "flex_handover_worker_slots") == 20  # WORKER_CONCURRENCY
    assert value(worker, "flex_handover_worker_slots_busy") is not None
    assert value(worker, "flex_handover_redis_up") == 1


async def test_api_processes_2_one_scrape_counts_both_processes(
    processes, redis_server, redis, tmp_path
):
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"an earlier run's file")  # cleared at start
    env = clean_env(
        **service_env(redis_server.url, "http://127.0.0.1:9", HANDOVER_RATE_LIMIT_PER_IDENTITY=0),
        PROMETHEUS_MULTIPROC_DIR=str(shared),
    )
    port = free_port()
    api = await processes.start("api", "api", "--port", str(port), "--processes", "2", env=env)
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, api)
    await api.wait_for_log("2 processes listening")
    assert not (shared / "counter_1.db").exists()

    count = 24
    for n in range(count):  # each call on a new connection: the kernel spreads them
        assert (await call_tool(url, new_conversation_sid(7100 + n)))[0] == 202

    by_process = {}
    for db in shared.glob("counter_*.db"):
        alone = tmp_path / db.stem
        alone.mkdir()
        shutil.copy(db, alone / db.name)
        own = parse_collected(alone)
        by_process[db.stem] = value(own, CALLS, caller="tool", outcome="stored", reason="")
    assert len(by_process) == 2, by_process
    assert all(stored for stored in by_process.values()), by_process  # both served calls
    assert sum(by_process.values()) == count
    for _ in range(6):  # whichever process a scrape reaches counts both
        samples = await samples_at(f"{url}/metrics")
        assert calls(samples, "stored") == count
        assert value(samples, "flex_handover_ack_duration_seconds_count", caller="tool") == count
    assert await api.terminate() == 0


def parse_collected(directory: Path):
    """The samples of one process's files, read as a scrape reads them."""
    return parse(generate_latest(MultiProcessCollector(None, str(directory))).decode())


async def test_each_caller_kind_is_counted(start_service, redis):
    service = await start_service(worker=False)
    conversation = new_conversation_sid(7200)
    mcp_call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "hand_over_to_human",
            "arguments": {"conversation_sid": conversation, "identity": "whatsapp:+14155550123"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream", **tool_auth()}
    async with service.anonymous.post(f"{service.url}/mcp", json=mcp_call, headers=headers) as r:
        assert r.status == 200 and (await r.json())["result"]["isError"] is False
    unknown = {**mcp_call, "params": {"name": "hand_over_to_human_nobody", "arguments": {}}}
    async with service.anonymous.post(f"{service.url}/mcp", json=unknown, headers=headers) as r:
        assert "error" in await r.json()
    status, _, _ = await service.call_tool(session_id=session_header(conversation))
    assert status == 200  # the MCP call's handover
    form = {"CallSid": "CA" + "1" * 32, "From": "+14155550123", "HandoffData": '{"reason": "x"}'}
    for _ in range(2):  # Twilio retrying the action request: one handover
        async with service.anonymous.post(
            f"{service.url}/voice/handoff", data=form, headers=tool_auth()
        ) as r:
            assert r.status == 200

    samples = await samples_at(f"{service.url}/metrics")
    assert calls(samples, "stored", caller="mcp") == 1
    assert calls(samples, "refused", "unknown_target", caller="mcp") == 1
    assert calls(samples, "duplicate", caller="tool") == 1
    assert calls(samples, "stored", caller="voice") == 1
    assert calls(samples, "duplicate", caller="voice") == 1
    for caller, answered in (("mcp", 2), ("tool", 1), ("voice", 2)):
        count = value(samples, "flex_handover_ack_duration_seconds_count", caller=caller)
        assert count == answered, caller


async def test_metrics_off_serves_no_route(start_service):
    service = await start_service(worker=False, HANDOVER_METRICS="false")
    assert (await service.call_tool(session_id=session_header()))[0] == 202
    status, _, _ = await scrape(f"{service.url}/metrics")
    assert status == 404
