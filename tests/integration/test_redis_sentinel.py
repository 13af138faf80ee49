"""Redis behind Sentinel, for real: one primary, one replica, three Sentinels
(standins/redis_sentinel.py), the api and the worker as processes, the Flex
simulator. The primary is SIGKILLed; Sentinel promotes the replica. Meanwhile the
API answers 503 with Retry-After (never 500), `/readyz` says not ready, the
worker reconnects to the new primary by itself, and every handover acknowledged
and replicated before the kill is delivered once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from redis.asyncio.sentinel import MasterNotFoundError

from shared.model import FINAL_STATES
from shared.redis_client import create_redis
from shared.settings import Settings
from shared.store import HandoverStore
from standins.redis_sentinel import LocalSentinelCluster
from tests.support.flood import FAST, flood, readyz
from tests.support.outcomes import assert_each_ended_once, wait_all_final
from tests.support.processes import call_tool, clean_env, run_command, wait_until
from tests.support.service import service_env
from tests.support.values import new_conversation_sid

DATA_PASSWORD = "data-pw-not-in-logs-3b7d"
SENTINEL_PASSWORD = "sentinel-pw-not-in-logs-8e21"


@pytest.fixture
async def cluster():
    cluster = LocalSentinelCluster(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    await asyncio.to_thread(cluster.start)
    yield cluster
    await asyncio.to_thread(cluster.close)


async def test_a_failover_is_answered_503_never_500_and_everything_acknowledged_is_delivered(
    processes, cluster, simulator
):
    env = clean_env(**{**service_env("", simulator.base_url, **FAST), **cluster.env()})
    settings = Settings.from_env(env, role="worker")
    api, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)
    client = create_redis(settings.redis)
    try:
        before = []
        for n in range(5):
            status, body, _ = await call_tool(api_url, new_conversation_sid(n))
            assert status == 202, body
            before.append(body["handover_id"])
        store = HandoverStore(client, settings.status_ttl_seconds)
        await wait_all_final(store, before, timeout=30)
        # Replicated before the kill: WAIT for the replica to have every write.
        assert await client.execute_command("WAIT", 1, 5000) == 1

        old = cluster.primary_port()
        await asyncio.to_thread(cluster.kill_primary)
        statuses: list[int] = []
        acknowledged: list[str] = []
        readiness: list[int] = []
        n, started = 100, time.monotonic()
        while time.monotonic() - started < 30:
            n += 1
            status, body, response = await call_tool(api_url, new_conversation_sid(n))
            statuses.append(status)
            if status == 202:
                acknowledged.append(body["handover_id"])
                if len(acknowledged) >= 3:
                    break
            else:
                assert (status, body["error"]) == (503, "unavailable"), body
                assert int(response.headers["Retry-After"]) > 0
                # The promotion may land between the two: no assertion on each.
                readiness.append(await readyz(api_url))
            await asyncio.sleep(0.05)
        assert 503 in statuses, "the failover was never seen: the test proves nothing"
        assert 503 in readiness, "/readyz never said not ready during the failover"
        assert len(acknowledged) >= 3, statuses
        assert cluster.primary_port() != old
        await wait_until(lambda: _ready(api_url), 15, "/readyz says ready on the new primary")

        records = await wait_all_final(store, before + acknowledged, timeout=60)
        assert_each_ended_once(records, simulator)
        assert worker.returncode is None, "the worker must reconnect by itself"
        assert await worker.terminate() == 0
        assert await api.terminate() == 0
        for log in (worker.log(), api.log()):
            assert DATA_PASSWORD not in log and SENTINEL_PASSWORD not in log
            assert "Traceback" not in log, log
    finally:
        await client.aclose()


async def _ready(api_url: str) -> bool:
    return await readyz(api_url) == 200


async def test_operator_commands_and_the_health_check_find_the_primary_through_sentinel(
    processes, cluster, simulator
):
    env = clean_env(**{**service_env("", simulator.base_url, **FAST), **cluster.env()})
    await processes.start_api(env)
    worker = await processes.start_worker(env)

    code, output = await run_command(env, "worker", "--check")
    assert code == 0 and "healthy" in output, output
    code, output = await run_command(env, "list", "--json")
    assert code == 0 and '"handovers"' in output, output
    assert DATA_PASSWORD not in output and SENTINEL_PASSWORD not in output
    assert await worker.terminate() == 0


async def test_a_wrong_sentinel_password_is_a_clear_error_not_a_hang(cluster, simulator):
    env = {**cluster.env(), "REDIS_SENTINEL_PASSWORD": "not-the-password-4f0c"}
    client = create_redis(Settings.from_env(env, role="operator").redis)
    started = time.monotonic()
    try:
        with pytest.raises(MasterNotFoundError) as raised:
            await client.ping()
    finally:
        await client.aclose()
    assert time.monotonic() - started < 10
    assert "invalid username-password pair" in str(raised.value)
    assert "not-the-password" not in str(raised.value)


@pytest.mark.parametrize("min_replicas", [1, 0])
async def test_a_primary_killed_mid_flood_loses_and_doubles_nothing_acknowledged(
    processes, cluster, simulator, min_replicas, capsys
):
    """The chaos test: a flood of handovers, the primary SIGKILLed in the middle of
    it, Sentinel promotes the replica. With HANDOVER_MIN_REPLICAS=1 every
    acknowledged handover ends once; with 0 the test reports what the failover
    lost (asynchronous replication), and still no Interaction is doubled."""
    env = clean_env(
        **{
            **service_env("", simulator.base_url, **FAST),
            **cluster.env(),
            "HANDOVER_MIN_REPLICAS": str(min_replicas),
            "HANDOVER_RATE_LIMIT_PER_IDENTITY": "0",  # one customer identity floods
        }
    )
    settings = Settings.from_env(env, role="worker")
    _, api_url = await processes.start_api(env)
    await processes.start_worker(env)
    acknowledged: dict[str, str] = {}
    client = create_redis(settings.redis)
    try:
        sending = asyncio.create_task(flood(api_url, 400, 16, acknowledged))
        await wait_until(lambda: len(acknowledged) >= 100, 30, "100 handovers acknowledged")
        old = cluster.primary_port()
        at_kill = len(acknowledged)
        node = await asyncio.to_thread(cluster.kill_primary)
        await asyncio.to_thread(cluster.wait_promoted, old)
        # Back as the new primary's replica (Sentinel reconfigures it): until then,
        # HANDOVER_MIN_REPLICAS=1 has no replica to confirm anything.
        await asyncio.to_thread(node.start)
        resent = await sending
        # No check of who is primary now: wait_promoted saw the replica promoted, and
        # the restarted node may be promoted back by a later failover (a loaded
        # machine can stall a primary past Sentinel's down-after-milliseconds).
        assert resent > 0, "no call met the failover: the test proves nothing"

        store = HandoverStore(client, settings.status_ttl_seconds)
        records = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            records = {h: await store.get(h) for h in acknowledged.values()}
            if all(r is None or r.state.value in ("succeeded", "failed") for r in records.values()):
                break
            await asyncio.sleep(0.5)
        missing = [h for h, r in records.items() if r is None]
        unfinished = [
            h for h, r in records.items() if r is not None and r.state not in FINAL_STATES
        ]
        assert not unfinished, unfinished
        per_conversation = Counter(i["conversation_sid"] for i in simulator.interactions)
        doubled = {c: n for c, n in per_conversation.items() if n > 1}
        assert not doubled, doubled
        if min_replicas:
            assert not missing, f"acknowledged with a replica's confirmation, then lost: {missing}"
            assert {r.state.value for r in records.values()} == {"succeeded"}
        with capsys.disabled():
            print(
                f"\n[failover, HANDOVER_MIN_REPLICAS={min_replicas}] "
                f"{len(acknowledged)} acknowledged ({at_kill} before the kill), "
                f"{len(missing)} lost, {resent} calls sent again, 0 doubled"
            )
    finally:
        await client.aclose()
