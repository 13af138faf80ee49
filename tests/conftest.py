"""Real parts for the test suite: a Redis server started here on a free port,
the local Flex simulator on loopback, the aiohttp API and the arq worker.

fakeredis is kept for unit tests of small pieces; nothing here assumes a
service is already running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.redis_client import create_redis
from shared.settings import Settings
from standins.flex_simulator import FlexSimulator
from standins.redis_server import LocalRedisServer
from tests.support.processes import ProcessGroup
from tests.support.service import Service, StartService, service_env
from tests.support.values import ACCOUNT_SID, AUTH_TOKEN, WORKSPACE_SID
from worker.flex_client import FlexClient


@pytest.fixture(scope="session")
def redis_server() -> LocalRedisServer:
    server = LocalRedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def redis(redis_server: LocalRedisServer):
    client = create_redis(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def simulator() -> AsyncIterator[FlexSimulator]:
    sim = FlexSimulator(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    sim.base_url = await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def flex(simulator: FlexSimulator) -> AsyncIterator[FlexClient]:
    """The worker's real FlexClient (the twilio client), every API at the simulator."""
    client = FlexClient(
        Settings(
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            flex_workspace_sid=WORKSPACE_SID,
            conversations_api_base_url=simulator.base_url or "",
            taskrouter_api_base_url=simulator.base_url or "",
            flex_api_base_url=simulator.base_url or "",
            attempt_timeout_seconds=2.0,
        )
    )
    yield client
    await client.close()


@pytest.fixture
async def processes(tmp_path) -> AsyncIterator[ProcessGroup]:
    """Real `flex-handover` processes; whatever a test leaves running is killed."""
    group = ProcessGroup(tmp_path)
    yield group
    await group.close()


@pytest.fixture
async def own_redis() -> AsyncIterator[LocalRedisServer]:
    """A Redis this test may kill or make refuse writes: not the session's. With a
    password, so the logs can be checked for it, and `appendfsync always`: the
    tests that SIGKILL it count every acknowledged handover, and under `everysec`
    a busy disk may hold writes back for up to 2 s (README, "Running in production")."""
    server = LocalRedisServer(password="not-in-any-log-7c1e", appendfsync="always")
    server.start()
    yield server
    server.close()


@pytest.fixture
async def start_service(redis, redis_server, simulator) -> AsyncIterator[StartService]:
    """`await start_service(**env_overrides)` → a running Service, stopped at teardown."""
    services: list[Service] = []

    async def start(*, worker: bool = True, **overrides: Any) -> Service:
        env = service_env(redis_server.url, simulator.base_url, **overrides)
        service = await Service(Settings.from_env(env, role="worker")).start(worker=worker)
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()


@pytest.fixture
async def service(start_service) -> Service:
    return await start_service()
