"""HANDOVER_MIN_REPLICAS: a handover is acknowledged only once a replica has it.

A real primary and a real replica (`--replicaof`), the API and the worker in
this process, the Flex simulator. With the replica stopped (SIGSTOP) the tool
call waits HANDOVER_REPLICA_TIMEOUT_SECONDS and is answered 503 `not_replicated`
with Retry-After; the retry, once the replica runs again, is answered from
what the first call stored (the same handover), which is delivered once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from shared import redis_keys
from shared.redis_client import create_redis
from shared.settings import Settings
from standins.redis_server import LocalRedisServer
from tests.support.processes import wait_until
from tests.support.service import Service, service_env
from tests.support.values import new_conversation_sid, session_header


@pytest.fixture
async def replicated():
    primary = LocalRedisServer(appendfsync="always")
    primary.start()
    replica = LocalRedisServer(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    client = create_redis(primary.url)

    async def synced() -> bool:
        info = await client.info("replication")
        return info.get("connected_slaves") == 1 and info["slave0"]["state"] == "online"

    await wait_until(synced, 20, "the replica in sync")
    yield primary, replica
    await client.aclose()
    if replica.process is not None:
        os.kill(replica.process.pid, signal.SIGCONT)
    replica.close()
    primary.close()


async def start(primary: LocalRedisServer, simulator, **overrides: str) -> Service:
    env = service_env(primary.url, simulator.base_url, **overrides)
    return await Service(Settings.from_env(env, role="worker")).start()


async def test_the_ack_waits_for_the_replica_and_the_replica_has_the_handover(
    replicated, simulator
):
    primary, replica = replicated
    service = await start(
        primary, simulator, HANDOVER_MIN_REPLICAS="1", HANDOVER_REPLICA_TIMEOUT_SECONDS="4"
    )
    on_replica = create_redis(replica.url)
    try:
        await service.stop_worker()  # the record as the ack left it, nothing after
        os.kill(replica.process.pid, signal.SIGSTOP)  # replication held up...
        resume = asyncio.get_running_loop().call_later(
            0.5, os.kill, replica.process.pid, signal.SIGCONT
        )  # ...for half a second
        started = time.monotonic()
        status, body, _ = await service.call_tool(
            session_id=session_header(new_conversation_sid(1))
        )
        waited = time.monotonic() - started
        resume.cancel()
        assert status == 202, body
        assert 0.45 <= waited < 4, f"the 202 came {waited:.2f}s in: it did not wait for the replica"
        # Read at once from the replica: WAIT made sure it had it before the 202.
        record = await on_replica.hgetall(redis_keys.handover_key(body["handover_id"]))
        assert record["state"] == "queued", record
        assert (
            await on_replica.zscore(
                redis_keys.QUEUE_NAME, redis_keys.handover_job_id(body["handover_id"])
            )
            is not None
        )
    finally:
        await on_replica.aclose()
        await service.stop()


async def test_a_replica_that_does_not_confirm_is_a_503_and_the_retry_is_the_same_handover(
    replicated, simulator
):
    primary, replica = replicated
    service = await start(
        primary, simulator, HANDOVER_MIN_REPLICAS="1", HANDOVER_REPLICA_TIMEOUT_SECONDS="0.3"
    )
    conversation = session_header(new_conversation_sid(2))
    try:
        os.kill(replica.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        status, body, response = await service.call_tool(session_id=conversation)
        waited = time.monotonic() - started
        assert (status, body["error"]) == (503, "not_replicated"), body
        assert "0 of 1 replica(s) confirmed the write within 300 ms" in body["message"]
        assert int(response.headers["Retry-After"]) > 0
        assert 0.25 <= waited < 3, waited

        # A retry while the replica still lacks the handover, on a connection that
        # never wrote: the repeat writes nothing, and must not pass for confirmed
        # (since Redis 7.2 and in Valkey, WAIT waits for the connection's own
        # writes only; the fence write before it makes it wait for this one's).
        await service.app_redis().connection_pool.disconnect()
        status, body, _ = await service.call_tool(session_id=conversation)
        assert (status, body["error"]) == (503, "not_replicated"), body

        os.kill(replica.process.pid, signal.SIGCONT)
        status, retried, _ = await service.call_tool(session_id=conversation)
        assert status == 200, retried  # what the first call stored, de-duplicated
        record = await service.wait_final(retried["handover_id"])
        assert record["state"] == "succeeded"
        assert len(simulator.interactions) == 1
    finally:
        await service.stop()


async def test_without_min_replicas_a_stopped_replica_changes_nothing(replicated, simulator):
    primary, replica = replicated
    service = await start(primary, simulator)
    try:
        os.kill(replica.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        status, body, _ = await service.call_tool(
            session_id=session_header(new_conversation_sid(3))
        )
        assert status == 202, body
        assert time.monotonic() - started < 1
    finally:
        await service.stop()


async def test_the_worker_sends_nothing_until_a_replica_has_its_in_flight_mark(
    replicated, simulator
):
    """With HANDOVER_MIN_REPLICAS the worker's writes wait too: the mark it writes
    before each POST /v1/Interactions must be on a replica first, or a failover
    could lose it and a repeated run would send a second time without looking."""
    primary, replica = replicated
    service = await start(
        primary, simulator, HANDOVER_MIN_REPLICAS="1", HANDOVER_REPLICA_TIMEOUT_SECONDS="0.3"
    )
    try:
        await service.stop_worker()
        status, body, _ = await service.call_tool(
            session_id=session_header(new_conversation_sid(4))
        )
        assert status == 202, body
        os.kill(replica.process.pid, signal.SIGSTOP)
        await service.start_worker()
        record_key = redis_keys.handover_key(body["handover_id"])
        await wait_until(
            lambda: service.app_redis().hget(record_key, "attempts"), 10, "an attempt counted"
        )
        await asyncio.sleep(1.0)  # the worker had the time to send
        assert simulator.requests == [], "sent to Flex before a replica had the in-flight mark"

        os.kill(replica.process.pid, signal.SIGCONT)
        record = await service.wait_final(body["handover_id"], timeout=20)
        assert record["state"] == "succeeded"
        assert len(simulator.interactions) == 1
    finally:
        await service.stop()
