"""A caller's flood and the readiness probe, for the failover and resharding tests."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.processes import call_tool
from tests.support.values import new_conversation_sid

# Quick retries and reconnects, so a test's failover is over in seconds.
FAST = {
    "WORKER_RECONNECT_MAX_SECONDS": "1",
    "HANDOVER_RETRY_BUDGET_SECONDS": "0.5",
    "HANDOVER_ATTEMPT_TIMEOUT_SECONDS": "3",
    "HANDOVER_LOOKUP_GRACE_SECONDS": "0.2",
}


async def readyz(api_url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(api_url + "/readyz") as response:
        return response.status


async def flood(api_url: str, count: int, concurrency: int, acknowledged: dict[str, str]) -> int:
    """`count` new conversations, `concurrency` at a time; a 503 or no answer is
    sent again, as a caller would. Returns how many calls were sent again."""
    resent = 0
    numbers = iter(range(1000, 1000 + count))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def caller() -> None:
            nonlocal resent
            for number in numbers:
                conversation = new_conversation_sid(number)
                for _ in range(300):
                    try:
                        status, body, _ = await call_tool(api_url, conversation, http=http)
                    except (aiohttp.ClientError, TimeoutError):
                        status, body = 0, {}
                    if status in (200, 202):
                        acknowledged[conversation] = body["handover_id"]
                        break
                    assert status in (0, 503), (status, body)  # never a 500
                    resent += 1
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return resent
