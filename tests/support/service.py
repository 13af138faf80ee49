"""The API on a loopback port and an in-process arq worker, both real."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from api.app import create_app
from api.availability import Clock, system_clock
from shared.settings import Settings
from standins.redis_server import free_port
from tests.support.values import (
    ACCOUNT_SID,
    ADMIN_TOKEN,
    AUTH_TOKEN,
    BILLING_WORKFLOW_SID,
    TOOL_TOKEN,
    WORKFLOW_SID,
    WORKSPACE_SID,
    session_header,
)
from worker.main import create_worker, stop_worker

# A lookup's grace window and interval short enough for tests of the lookup.
FAST_LOOKUP = {"HANDOVER_LOOKUP_GRACE_SECONDS": "0.5", "HANDOVER_LOOKUP_INTERVAL_SECONDS": "0.05"}


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
        # The default (18/s, under Twilio's cap) would pace every test's creates;
        # tests/integration/test_global_rate_limit.py and test_priority.py test it.
        "FLEX_API_MAX_RPS": "0",
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

    def __init__(self, settings: Settings, *, clock: Clock = system_clock):
        self.settings = settings
        self.clock = clock  # what the API reads business hours at
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._worker = None
        self._worker_task: asyncio.Task | None = None
        self.http: aiohttp.ClientSession | None = None
        self.anonymous: aiohttp.ClientSession | None = None

    async def start(self, *, worker: bool = True) -> Service:
        self._runner = web.AppRunner(create_app(self.settings, clock=self.clock), access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession(middlewares=(self._credentials,))
        self.anonymous = aiohttp.ClientSession()
        if worker:
            await self.start_worker()
        return self

    def app_redis(self) -> Any:
        """The API's own Redis client (api.app_keys.REDIS)."""
        from api.app_keys import REDIS

        assert self._runner is not None
        return self._runner.app[REDIS]

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

    async def hand_over(self) -> str:
        """One tool call for the default conversation that must be acknowledged: its id."""
        status, body, _ = await self.call_tool(session_id=session_header())
        assert status == 202, body
        return str(body["handover_id"])

    async def status(self, handover_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/handovers/{handover_id}") as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def wait_final(self, handover_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll the status endpoint until the handover ends and the Conversation
        steps after its outcome are done (its job is over)."""
        deadline = time.monotonic() + timeout
        while True:
            record = await self.status(handover_id)
            if record["state"] in ("succeeded", "failed") and record["aftercare"] != "pending":
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"handover still {record['state']} after {timeout}s: {record}")
            await asyncio.sleep(0.02)


StartService = Callable[..., Awaitable[Service]]
