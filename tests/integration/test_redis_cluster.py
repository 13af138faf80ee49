"""Redis Cluster, for real: three masters of `redis-server --cluster-enabled yes`
on loopback (standins/redis_cluster.py), the api and the worker as processes,
REDIS_URL naming a node that does NOT serve the keys' slot. Every key the product
and arq write lands in that one slot (a script touching another slot would be
refused by the cluster), handovers are delivered once, the operator commands
work, and when the slot is resharded to another master mid-flood the clients
follow it: 503s meanwhile, never a 500, nothing acknowledged lost or doubled.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis

from shared.redis_client import create_redis
from shared.redis_cluster import SLOT, SlotOwnerPool
from shared.settings import Settings
from shared.store import HandoverStore
from standins.redis_cluster import LocalRedisCluster
from standins.redis_server import LocalRedisServer, free_port
from tests.support.flood import FAST, flood, readyz
from tests.support.outcomes import assert_each_ended_once, wait_all_final
from tests.support.processes import call_tool, clean_env, run_command, wait_until
from tests.support.service import service_env
from tests.support.values import new_conversation_sid


@pytest.fixture
async def cluster():
    cluster = LocalRedisCluster()
    await asyncio.to_thread(cluster.start)
    yield cluster
    await asyncio.to_thread(cluster.close)


def not_owning(cluster: LocalRedisCluster) -> list[LocalRedisServer]:
    owner = cluster.owner_of(SLOT)
    return [node for node in cluster.nodes if node is not owner]


def cluster_env(seed: LocalRedisServer, simulator_url: str, **extra: str) -> dict[str, str]:
    return clean_env(**service_env(seed.url, simulator_url, **FAST), REDIS_CLUSTER="1", **extra)


def keys_per_node(cluster: LocalRedisCluster) -> dict[int, tuple[int, int]]:
    """port → (keys on the node, keys of SLOT on it)."""
    counts = {}
    for node in cluster.nodes:
        with redis.Redis("127.0.0.1", node.port) as client:
            counts[node.port] = (
                client.dbsize(),
                client.execute_command("CLUSTER", "COUNTKEYSINSLOT", SLOT),
            )
    return counts


async def test_api_worker_and_commands_run_on_a_cluster_with_every_key_in_one_slot(
    processes, cluster, simulator
):
    seed = not_owning(cluster)[0]
    env = cluster_env(seed, simulator.base_url)
    settings = Settings.from_env(env, role="worker")
    api, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)
    client = create_redis(settings.redis)
    try:
        handover_ids = []
        for n in range(6):
            status, body, _ = await call_tool(api_url, new_conversation_sid(n))
            assert status == 202, body
            handover_ids.append(body["handover_id"])
        store = HandoverStore(client, settings.status_ttl_seconds)
        records = await wait_all_final(store, handover_ids, timeout=30)
        assert_each_ended_once(records, simulator)
        # The same conversation again: answered from the record, no new Interaction.
        status, body, _ = await call_tool(api_url, new_conversation_sid(0))
        assert status == 200 and body["handover_id"] == handover_ids[0], body
        assert await readyz(api_url) == 200

        commands = (
            ["list", "--json"],
            ["failed", "--json"],
            ["worker", "--check"],
            ["migrate-keys"],
        )
        for command in commands:
            code, output = await run_command(env, *command)
            assert code == 0, (command, output)
        code, output = await run_command(env, "list", "--json")
        assert all(h in output for h in handover_ids), output

        owner = cluster.owner_of(SLOT)
        counts = keys_per_node(cluster)
        total, in_slot = counts[owner.port]
        assert total > len(handover_ids) and in_slot == total, counts
        assert all(counts[n.port] == (0, 0) for n in not_owning(cluster)), counts
        assert await worker.terminate() == 0
        assert await api.terminate() == 0
        for log in (worker.log(), api.log()):
            assert "Traceback" not in log, log
    finally:
        await client.aclose()


async def test_the_slot_resharded_mid_flood_is_followed_and_nothing_acknowledged_is_lost(
    processes, cluster, simulator
):
    seed, other = not_owning(cluster)
    env = cluster_env(seed, simulator.base_url, HANDOVER_RATE_LIMIT_PER_IDENTITY="0")
    settings = Settings.from_env(env, role="worker")
    api, api_url = await processes.start_api(env)
    worker = await processes.start_worker(env)
    acknowledged: dict[str, str] = {}
    client = create_redis(settings.redis)
    try:
        sending = asyncio.create_task(flood(api_url, 300, 16, acknowledged))
        await wait_until(lambda: len(acknowledged) >= 100, 30, "100 handovers acknowledged")
        moved = await asyncio.to_thread(cluster.move_slot, SLOT, other)
        assert moved > 100  # the keys went with the slot, a few at a time
        assert cluster.owner_of(SLOT) is other
        resent = await sending
        assert resent > 0, "no call met the move: the test proves nothing"
        assert "finding the slot's owner again" in api.log()

        store = HandoverStore(client, settings.status_ttl_seconds)
        records = await wait_all_final(store, acknowledged.values(), timeout=90)
        assert {r["state"] for r in records.values()} == {"succeeded"}, records
        per_conversation = Counter(i["conversation_sid"] for i in simulator.interactions)
        assert set(per_conversation) == set(acknowledged)
        assert set(per_conversation.values()) == {1}, "a handover made two Interactions"
        await wait_until(lambda: _ready(api_url), 15, "/readyz ready on the new owner")
        assert worker.returncode is None, "the worker must follow the slot by itself"
        counts = keys_per_node(cluster)
        assert counts[other.port][0] == counts[other.port][1] > 0, counts
        assert await worker.terminate() == 0
        assert await api.terminate() == 0
        for log in (worker.log(), api.log()):
            assert "Traceback" not in log, log
    finally:
        await client.aclose()


async def _ready(api_url: str) -> bool:
    return await readyz(api_url) == 200


async def test_the_owner_is_found_through_the_next_node_when_one_is_down(cluster):
    dead = ("127.0.0.1", free_port())
    live = not_owning(cluster)[0]
    pool = SlotOwnerPool([dead, ("127.0.0.1", live.port)], decode_responses=True)
    client = redis.asyncio.Redis.from_pool(pool)
    try:
        await client.set("{flex_handover}:probe", "1")
        assert pool.owner == ("127.0.0.1", cluster.owner_of(SLOT).port)
        assert len(pool.known) == len(cluster.nodes) - 1  # the ones it was not given
    finally:
        await client.aclose()

    nowhere = SlotOwnerPool([dead], socket_connect_timeout=1)
    client = redis.asyncio.Redis.from_pool(nowhere)
    started = time.monotonic()
    try:
        with pytest.raises(redis.ConnectionError, match=f"named the owner of slot {SLOT}"):
            await client.ping()
    finally:
        await client.aclose()
    assert time.monotonic() - started < 5


async def test_a_url_that_is_not_a_cluster_node_is_a_clear_error(simulator):
    with LocalRedisServer() as plain:
        env = cluster_env(plain, simulator.base_url)
        client = create_redis(Settings.from_env(env, role="operator").redis)
        try:
            with pytest.raises(redis.ConnectionError, match="cluster support disabled"):
                await client.ping()
        finally:
            await client.aclose()


def test_reading_keys_per_node_sees_them(cluster):
    """The key counts the tests rely on: a key in SLOT counts on its owner only."""
    owner = cluster.owner_of(SLOT)
    with redis.Redis("127.0.0.1", owner.port) as direct:
        direct.set("{flex_handover}:counted", "1")
    counts = keys_per_node(cluster)
    assert counts[owner.port] == (1, 1)
