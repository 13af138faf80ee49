"""Redis that refuses writes, or cannot be reached: real processes only.

A Redis server this test owns is made to refuse writes the three ways
production Redis does: out of memory under `noeviction` (OOM), turned into a
replica (READONLY), a failed snapshot with `stop-writes-on-bgsave-error`
(MISCONF). Each time: `/readyz` says not ready, the tool endpoint answers 503
(not 500) and stores nothing, the worker process survives, backs off, and
once Redis takes writes again it delivers everything, the handover whose
outcome it could not record included, exactly once.

And a worker whose Redis cannot be reached says so, retries with a capped
backoff, and its health check (`flex-handover worker --check`) fails until a
Redis is there.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time

import aiohttp
import pytest
from redis.exceptions import OutOfMemoryError

from api.ready_probe import READY_PROBE_REUSE_SECONDS
from shared.redis_client import create_redis
from shared.settings import Settings
from shared.store import HandoverStore
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer, free_port
from tests.support.outcomes import assert_each_ended_once, wait_all_final
from tests.support.processes import COMMAND, PREFIX, WORKER_READY, call_tool, clean_env, wait_until
from tests.support.service import service_env
from tests.support.values import new_conversation_sid

FAST = {
    "WORKER_RECONNECT_MAX_SECONDS": "1",
    "HANDOVER_RETRY_BUDGET_SECONDS": "0.5",
    "HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "3",
    "HANDOVER_LOOKUP_GRACE_SECONDS": "0.2",
}
# How long the simulator holds the POST: the refusal starts while it is in flight.
HOLD_SECONDS = 1.5
RETRY_LINE = re.compile(r"; (?:trying again|starting a new worker) in (\d+\.\d)s")


# --- making Redis refuse writes, and take them again ---------------------------


async def refuse_writes(client, server: LocalRedisServer, kind: str) -> None:
    if kind == "OOM":
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1mb")
        try:
            for n in range(10_000):
                await client.set(f"ballast:{n}", "x" * 50_000)
        except OutOfMemoryError:
            return
        raise AssertionError("Redis never ran out of memory")
    if kind == "READONLY":
        await client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        return
    # MISCONF: the snapshot's target is a directory, so BGSAVE cannot rename onto it.
    (server.data_dir / "dump.rdb" / "blocker").mkdir(parents=True)
    await client.config_set("save", "3600 1")
    await client.bgsave(schedule=True)
    await wait_until(lambda: _last_bgsave(client, "err"), 10, "a failed BGSAVE")


async def accept_writes(client, server: LocalRedisServer, kind: str) -> None:
    if kind == "OOM":
        await client.config_set("maxmemory", "0")
    elif kind == "READONLY":
        await client.execute_command("REPLICAOF", "NO", "ONE")
    else:
        shutil.rmtree(server.data_dir / "dump.rdb")
        await client.bgsave(schedule=True)
        await wait_until(lambda: _last_bgsave(client, "ok"), 10, "a BGSAVE that worked")
        await client.config_set("save", "")


async def _last_bgsave(client, status: str) -> bool:
    info = await client.info("persistence")
    return not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == status


# --- talking to the processes -----------------------------------------------------


async def readyz(api_url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http, http.get(api_url + "/readyz") as response:
        return response.status, await response.json()


async def health_check(env: dict[str, str]) -> tuple[int, str]:
    """`flex-handover worker --check`: its exit code and what it printed."""
    process = await asyncio.create_subprocess_exec(
        COMMAND, *PREFIX, "worker", "--check", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, output.decode()


async def check_says(env: dict[str, str], code: int) -> str | None:
    returncode, output = await health_check(env)
    return output if returncode == code else None


def retry_delays(log: str) -> list[float]:
    return [float(delay) for delay in RETRY_LINE.findall(log)]


# --- refusing writes --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["OOM", "READONLY", "MISCONF"])
async def test_redis_refusing_writes_is_survived_and_everything_is_delivered_once_after(
    processes, own_redis, simulator: FlexSimulator, kind
):
    env = clean_env(**service_env(own_redis.url, simulator.base_url, **FAST))
    settings = Settings.from_env(env, role="worker")
    client = create_redis(own_redis.url)
    try:
        api, api_url = await processes.start_api(env)
        worker = await processes.start_worker(env)
        await wait_until(lambda: check_says(env, 0), 15, "the worker's health check passes")

        # A POST in flight when the refusal starts: its outcome cannot be recorded.
        simulator.latency = HOLD_SECONDS
        in_flight = (await call_tool(api_url, new_conversation_sid(1)))[1]["handover_id"]
        await wait_until(lambda: simulator.requests, 10, "the POST at the simulator")
        await refuse_writes(client, own_redis, kind)
        simulator.latency = 0.0

        status, body = await readyz(api_url)
        assert status == 503 and f"refuses writes ({kind})" in body["message"], body
        status, body, response = await call_tool(api_url, new_conversation_sid(2))
        assert (status, body["error"]) == (503, "unavailable"), body
        assert int(response.headers["Retry-After"]) > 0
        status, body, _ = await call_tool(
            api_url, new_conversation_sid(1)
        )  # its handover is live: only read
        assert (status, body["handover_id"]) == (200, in_flight), body
        await worker.wait_for_log(f"refuses writes ({kind}", timeout=20, count=2)
        assert worker.returncode is None
        await wait_until(lambda: check_says(env, 1), 20, "the health check fails")

        await accept_writes(client, own_redis, kind)
        await wait_until(lambda: _ready(api_url), 10, "/readyz says ready again")
        status, body, _ = await call_tool(api_url, new_conversation_sid(2))
        assert status == 202, body
        records = await wait_all_final(
            HandoverStore(client, settings.status_ttl_seconds),
            [in_flight, body["handover_id"]],
            timeout=30,
        )
        assert_each_ended_once(records, simulator)
        await wait_until(lambda: check_says(env, 0), 20, "the health check passes again")
        assert worker.returncode is None, "the worker process must survive"
        assert WORKER_READY in worker.log()
        assert await worker.terminate() == 0
        assert await api.terminate() == 0
        for log in (worker.log(), api.log()):
            assert own_redis.password not in log
            assert "Traceback" not in log, log
    finally:
        await client.aclose()


async def _ready(api_url: str) -> bool:
    return (await readyz(api_url))[0] == 200


async def test_a_flood_of_readiness_probes_costs_redis_one_small_write_a_second(
    start_service, redis
):
    """/readyz needs no credentials: its write probe is shared, not one per call."""
    service = await start_service(worker=False)
    await redis.config_resetstat()
    started = time.monotonic()
    for _ in range(20):
        answers = await asyncio.gather(*(readyz(service.url) for _ in range(10)))
        assert {status for status, _ in answers} == {200}
    elapsed = time.monotonic() - started
    writes = (await redis.info("commandstats")).get("cmdstat_set", {}).get("calls", 0)
    assert 1 <= writes <= elapsed / READY_PROBE_REUSE_SECONDS + 2


# --- unreachable ------------------------------------------------------------------


async def test_a_worker_that_cannot_reach_redis_says_so_backs_off_capped_and_is_unhealthy(
    processes, simulator: FlexSimulator
):
    port = free_port()
    server = LocalRedisServer(port=port, password="not-in-any-log-91fe")
    env = clean_env(**service_env(server.url, simulator.base_url, WORKER_RECONNECT_MAX_SECONDS="1"))
    worker = await processes.start("worker", "worker", env=env)
    try:
        await worker.wait_for_log(f"cannot reach Redis at redis://127.0.0.1:{port}/0", count=5)
        delays = retry_delays(worker.log())
        assert delays[:3] == [0.5, 1.0, 1.0], worker.log()
        assert max(delays) == 1.0
        assert "lost Redis" not in worker.log()

        returncode, output = await health_check(env)
        assert returncode == 1 and f"cannot reach Redis at redis://127.0.0.1:{port}/0" in output

        server.start()
        await worker.wait_for_log(WORKER_READY, timeout=20)
        await wait_until(lambda: check_says(env, 0), 15, "the health check passes")
        returncode, output = await health_check(env)
        assert returncode == 0 and "healthy" in output, output

        assert await worker.terminate() == 0
        # Stopped: its health record is gone at once.
        returncode, output = await health_check(env)
        assert returncode == 1 and "no worker on" in output, output
        assert server.password not in worker.log() + output
    finally:
        server.close()
