"""Urgent first, for real: a backlog drained at FLEX_API_MAX_RPS by a worker
process, and handovers to a target with a `priority` (`billing`, 5) arriving in
the middle of it. They are picked before the normal handovers that came before
them; with HANDOVER_PRIORITY_HEAD_START_SECONDS=0 (the control, same test) they
wait their turn. Every handover ends once either way.
"""

from __future__ import annotations

import aiohttp
import pytest

from shared.redis_client import create_redis
from shared.settings import Settings
from shared.store import HandoverStore
from tests.support.outcomes import assert_each_ended_once, wait_all_final
from tests.support.processes import clean_env, wait_until
from tests.support.service import service_env
from tests.support.values import new_conversation_sid, session_header, tool_auth

NORMAL, URGENT = 60, 4
RATE = 15  # creates per second: the backlog of 60 takes about 4 s


async def hand_over(http: aiohttp.ClientSession, api_url: str, n: int, target: str = "") -> str:
    path = f"/tools/flex-handover/{target}" if target else "/tools/flex-handover"
    async with http.post(
        api_url + path,
        json={"reason": "a test's tool call"},
        headers={
            "X-Session-Id": session_header(new_conversation_sid(n)),
            "X-Identity": "phone:+14155550123",
            **tool_auth(),
        },
    ) as response:
        body = await response.json()
        assert response.status == 202, body
        return str(body["handover_id"])


@pytest.mark.parametrize("head_start", ["120", "0"])
async def test_urgent_handovers_overtake_the_backlog_and_nothing_is_lost(
    processes, redis, redis_server, simulator, head_start
):
    env = clean_env(
        **service_env(
            redis_server.url,
            simulator.base_url,
            FLEX_API_MAX_RPS=str(RATE),
            WORKER_CONCURRENCY="4",
            HANDOVER_PRIORITY_HEAD_START_SECONDS=head_start,
            HANDOVER_RATE_LIMIT_PER_IDENTITY="0",
        )
    )
    settings = Settings.from_env(env, role="worker")
    _, api_url = await processes.start_api(env)
    async with aiohttp.ClientSession() as http:
        normal = [await hand_over(http, api_url, n) for n in range(NORMAL)]
        await processes.start_worker(env)
        await wait_until(lambda: len(simulator.interactions) >= 10, 20, "the drain under way")
        urgent_sids = {new_conversation_sid(1000 + n) for n in range(URGENT)}
        urgent = [await hand_over(http, api_url, 1000 + n, "billing") for n in range(URGENT)]
        created_before = len(simulator.interactions)

    client = create_redis(settings.redis)
    try:
        store = HandoverStore(client, settings.status_ttl_seconds)
        records = await wait_all_final(store, normal + urgent, timeout=60)
    finally:
        await client.aclose()
    assert_each_ended_once(records, simulator)
    order = [i["conversation_sid"] for i in simulator.interactions]
    # How many normal handovers, queued before the urgent ones, got their
    # Interaction after all the urgent ones were acknowledged but before the last
    # urgent one got its own.
    last_urgent = max(order.index(sid) for sid in urgent_sids)
    overtaken_by = last_urgent + 1 - URGENT - created_before
    normal_left = NORMAL - created_before
    assert normal_left > 30, "the backlog was nearly drained: the test proves nothing"
    if head_start != "0":
        # Only the runs already picked (the worker's 4 slots and their reserved
        # rate slots) go before them.
        assert overtaken_by <= 8, (overtaken_by, order)
    else:
        assert overtaken_by >= normal_left - 8, (overtaken_by, order)
