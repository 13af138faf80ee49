"""Real parts for the test suite: a Redis server started here on a free port,
the local Flex simulator on loopback, the aiohttp API and the arq worker.

fakeredis is kept for unit tests of small pieces; nothing here assumes a
service is already running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.app import create_app
from shared.connections import create_redis
from shared.flex_simulator import FlexSimulator
from shared.redis_server import LocalRedisServer, free_port
from shared.settings import Settings
from tests.processes import ProcessGroup
from worker.flex_client import FlexClient
from worker.main import create_worker, stop_worker

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "test-auth-token-0123456789"
WORKSPACE_SID = "WS" + "b2" * 16
WORKFLOW_SID = "WW" + "c3" * 16
BILLING_WORKFLOW_SID = "WW" + "d4" * 16
CONVERSATION_SID = "CH" + "e5" * 16
CHAT_SERVICE_SID = "IS" + "f6" * 16
TOOL_TOKEN = "test-tool-token-0123456789abcdef"
ADMIN_TOKEN = "test-admin-token-fedcba9876543210"


def tool_auth(token: str = TOOL_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_header(conversation_sid: str = CONVERSATION_SID) -> str:
    return f"webhook:conversations__{CHAT_SERVICE_SID}/{conversation_sid}"


def new_conversation_sid(n: int) -> str:
    return "CH" + f"{n:032x}"


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
    password, so the logs can be checked for it."""
    server = LocalRedisServer(password="not-in-any-log-7c1e")
    server.start()
    yield server
    server.close()


def service_env(redis_url: str, simulator_url: str, **overrides: Any) -> dict[str, str]:
    """Environment for a test service: fast retries, simulator base URLs, a tool
    token and an admin token (authentication is on, as in production)."""
    env = {
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "FLEX_WORKSPACE_SID": WORKSPACE_SID,
        "FLEX_WORKFLOW_SID": WORKFLOW_SID,
        "FLEX_API_BASE_URL": simulator_url,
        "CONVERSATIONS_API_BASE_URL": simulator_url,
        "TASKROUTER_API_BASE_URL": simulator_url,
        "HANDOVER_TARGETS": (
            '{"billing": {"workflow_sid": "%s", "priority": 5, '
            '"attributes": {"department": "billing"}}}' % BILLING_WORKFLOW_SID
        ),
        "HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "2",
        "HANDOVER_RETRY_BUDGET_SECONDS": "5",
        "HANDOVER_BACKOFF_INITIAL_SECONDS": "0.01",
        "HANDOVER_BACKOFF_MAX_SECONDS": "0.05",
        "HANDOVER_REQUEUE_DELAY_SECONDS": "0.1",
        "WORKER_CONCURRENCY": "20",
        "WORKER_POLL_DELAY_SECONDS": "0.01",
        "HANDOVER_TOOL_TOKENS": TOOL_TOKEN,
        "HANDOVER_ADMIN_TOKENS": ADMIN_TOKEN,
    }
    env.update({name: str(value) for name, value in overrides.items()})
    return env


class Service:
    """The API on a loopback port and an in-process arq worker, both real.

    `http` sends the service's own credentials like a configured caller would:
    its first tool token on `/tools…` and its first admin token on `/handovers…`,
    unless the request sets `Authorization` itself. `anonymous` sends none.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._worker = None
        self._worker_task: asyncio.Task | None = None
        self.http: aiohttp.ClientSession | None = None
        self.anonymous: aiohttp.ClientSession | None = None

    async def start(self, *, worker: bool = True) -> Service:
        self._runner = web.AppRunner(create_app(self.settings), access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(middlewares=(self._credentials,))
        self.anonymous = aiohttp.ClientSession()
        if worker:
            await self.start_worker()
        return self

    async def start_worker(self) -> None:
        self._worker = create_worker(self.settings, handle_signals=False)
        self._worker_task = asyncio.create_task(self._worker.async_run())

    async def stop_worker(self) -> None:
        if self._worker is not None:
            await stop_worker(self._worker, self._worker_task)
            self._worker = self._worker_task = None

    async def stop(self) -> None:
        await self.stop_worker()
        for session in (self.http, self.anonymous):
            if session is not None:
                await session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _credentials(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if "Authorization" not in request.headers:
            path = request.url.path
            tokens = ()
            if path.startswith("/tools"):
                tokens = self.settings.tool_tokens
            elif path.startswith("/handovers"):
                tokens = self.settings.admin_tokens
            if tokens:
                request.headers["Authorization"] = f"Bearer {tokens[0]}"
        return await handler(request)

    async def call_tool(
        self,
        *,
        path: str = "/tools/flex-handover",
        session_id: str | None = None,
        identity: str | None = "whatsapp:+14155550123",
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
        all_headers = dict(headers or {})
        if session_id is not None:
            all_headers["X-Session-Id"] = session_id
        if identity is not None:
            all_headers["X-Identity"] = identity
        async with self.http.post(
            self.url + path, json=json, data=data, headers=all_headers
        ) as response:
            return response.status, await response.json(), response

    async def status(self, handover_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/handovers/{handover_id}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def wait_final(self, handover_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll the status endpoint until the handover ends."""
        deadline = time.monotonic() + timeout
        while True:
            record = await self.status(handover_id)
            if record["state"] in ("succeeded", "failed"):
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"handover still {record['state']} after {timeout}s: {record}")
            await asyncio.sleep(0.02)


StartService = Callable[..., Awaitable[Service]]


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
