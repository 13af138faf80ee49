"""The operator's lists and summary end to end: real tool calls through the API, the
real arq worker delivering to the Flex simulator (or failing there), then
`GET /handovers?state=…` and `GET /handovers/summary` with the admin token.
"""

from __future__ import annotations

import asyncio
import json
import time

from shared import redis_keys
from tests.integration.test_dead_letters import cli
from tests.support.values import new_conversation_sid, session_header


async def get(service, path: str) -> tuple[int, dict]:
    async with service.http.get(service.url + path) as response:
        return response.status, await response.json()


async def listed(service, query: str) -> list[str]:
    status, page = await get(service, "/handovers?" + query)
    assert status == 200, page
    return [record["handover_id"] for record in page["handovers"]]


async def hand_over(service, conversation: int, path: str = "/tools/flex-handover") -> str:
    status, body, _ = await service.call_tool(
        path=path, session_id=session_header(new_conversation_sid(conversation))
    )
    assert status == 202, body
    return str(body["handover_id"])


async def finished(service, redis, handover_id: str, state: str) -> None:
    record = await service.wait_final(handover_id)
    assert record["state"] == state, record
    deadline = time.monotonic() + 10
    while await redis.exists(
        redis_keys.arq_in_progress_key(redis_keys.handover_job_id(handover_id))
    ):  # arq's run ends
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_each_state_lists_its_handovers_and_the_summary_counts_them(
    service, simulator, redis
):
    started = time.time()
    first = await hand_over(service, 1)
    await finished(service, redis, first, "succeeded")
    billing = await hand_over(service, 2, "/tools/flex-handover/billing")
    await finished(service, redis, billing, "succeeded")
    simulator.fail_next(400, code=20001, message="Invalid channel")
    failed = await hand_over(service, 3)
    await finished(service, redis, failed, "failed")
    await service.stop_worker()
    queued = await hand_over(service, 4)

    assert await listed(service, "state=recent") == [queued, failed, billing, first]
    assert await listed(service, "state=succeeded") == [billing, first]
    assert await listed(service, "state=failed") == [failed]
    assert await listed(service, "state=queued") == [queued]
    assert await listed(service, "state=running") == []
    assert await listed(service, "state=recent&target=billing") == [billing]
    assert await listed(service, "state=succeeded&target=default") == [first]

    async with service.anonymous.get(service.url + "/handovers/summary") as response:
        assert response.status == 401  # the admin scope, not a handover id's 404
    status, summary = await get(service, "/handovers/summary")
    assert status == 200, summary
    assert summary["counts"] == {
        "queued": 1,
        "running": 0,
        "retrying": 0,
        "succeeded_last_hour": 2,
        "failed_last_hour": 1,
    }
    assert 0 <= summary["oldest_waiting_seconds"] < time.time() - started + 1
    assert summary["targets"] == ["billing", "default"]
    buckets = summary["throughput"]["buckets"]
    assert summary["throughput"]["bucket_seconds"] == 60 and len(buckets) == 60
    assert buckets[-1]["start"] == int(summary["generated_at"] // 60) * 60
    assert [b["start"] for b in buckets] == sorted(b["start"] for b in buckets)
    assert sum(b["succeeded"] for b in buckets) == 2 and sum(b["failed"] for b in buckets) == 1
    # Only the minutes the outcomes were written in have any.
    written = {int(t // 60) * 60 for t in (started, summary["generated_at"])}
    assert {b["start"] for b in buckets if b["succeeded"] or b["failed"]} <= written

    await service.start_worker()
    await finished(service, redis, queued, "succeeded")
    _, summary = await get(service, "/handovers/summary")
    assert summary["counts"]["queued"] == 0 and summary["counts"]["succeeded_last_hour"] == 3
    assert summary["oldest_waiting_seconds"] is None
    assert await listed(service, "state=queued") == []


async def test_the_cli_lists_by_state_and_target(service, simulator, redis, redis_server):
    done = await hand_over(service, 1, "/tools/flex-handover/billing")
    await finished(service, redis, done, "succeeded")
    await service.stop_worker()
    waiting = await hand_over(service, 2)

    code, out, err = await cli(redis_server, simulator, "list", "--state", "queued", "--json")
    assert (code, err) == (0, "")
    assert [r["handover_id"] for r in json.loads(out)["handovers"]] == [waiting]
    code, table, _ = await cli(redis_server, simulator, "list", "--target", "billing")
    assert code == 0
    assert done in table and waiting not in table and "succeeded" in table
    code, _, err = await cli(redis_server, simulator, "list", "--before", "yesterday")
    assert code == 2 and "before parameter" in err


async def test_pages_miss_and_repeat_nothing_while_new_handovers_arrive(start_service, redis):
    service = await start_service(worker=False)
    stored = [await hand_over(service, n) for n in range(8)]
    expired = stored[2]
    await redis.delete(redis_keys.handover_key(expired))  # as its TTL would

    seen, cursor, arrived = [], None, []
    for _ in range(10):
        query = "state=queued&limit=3" + (f"&before={cursor}" if cursor else "")
        status, page = await get(service, "/handovers?" + query)
        assert status == 200, page
        seen += [record["handover_id"] for record in page["handovers"]]
        arrived.append(await hand_over(service, 100 + len(arrived)))
        cursor = page["next"]
        if cursor is None:
            break

    assert seen == [h for h in stored[::-1] if h != expired]
    assert await redis.zscore(redis_keys.RECENT_INDEX, expired) is None
    assert (await listed(service, "state=recent&limit=2")) == arrived[::-1][:2]
    status, refusal = await get(service, "/handovers?state=recent&before=1.5:ho_" + "Z" * 32)
    assert (status, refusal["error"]) == (400, "invalid_cursor")


async def summary_counts(service) -> dict[str, int]:
    status, summary = await get(service, "/handovers/summary")
    assert status == 200, summary
    return summary["counts"]


async def test_a_handover_doing_its_conversation_steps_counts_where_it_ended_not_running(
    service, simulator, redis
):
    # The Conversation steps after the outcome hang: the job still holds arq's
    # in-progress key while the record is already final.
    simulator.fail_next(503, hang=2.0, route="conversations", count=2)
    handover_id = await hand_over(service, 1)
    deadline = time.monotonic() + 10
    while (await service.status(handover_id))["state"] != "succeeded":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    in_progress = redis_keys.arq_in_progress_key(redis_keys.handover_job_id(handover_id))
    assert await redis.exists(in_progress) == 1  # the run goes on

    counts = await summary_counts(service)

    assert await redis.exists(in_progress) == 1, "the summary was read after the run ended"
    assert (await service.status(handover_id))["aftercare"] == "pending"
    assert (counts["running"], counts["queued"], counts["succeeded_last_hour"]) == (0, 0, 1)


async def test_a_running_handover_counts_as_running(service, simulator, redis):
    simulator.fail_next(503, hang=2.0, count=1)  # the create itself hangs, then a retry
    handover_id = await hand_over(service, 1)
    deadline = time.monotonic() + 10
    while not await redis.exists(
        redis_keys.arq_in_progress_key(redis_keys.handover_job_id(handover_id))
    ):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    counts = await summary_counts(service)
    assert (await service.status(handover_id))["state"] == "running"
    assert (counts["running"], counts["queued"]) == (1, 0)


async def test_a_failure_replayed_to_success_counts_once_as_a_success(service, simulator, redis):
    simulator.fail_next(400, code=20001, message="Invalid channel")
    handover_id = await hand_over(service, 1)
    await finished(service, redis, handover_id, "failed")
    assert (await summary_counts(service))["failed_last_hour"] == 1

    await service.stop_worker()  # the replayed handover waits, for the next look
    async with service.http.post(f"{service.url}/handovers/{handover_id}/replay") as response:
        assert response.status == 202, await response.text()
    # Taken out of the failures when it is queued again, not when it next ends.
    counts = await summary_counts(service)
    assert (counts["failed_last_hour"], counts["succeeded_last_hour"], counts["queued"]) == (
        0,
        0,
        1,
    )
    await service.start_worker()
    await finished(service, redis, handover_id, "succeeded")

    counts = await summary_counts(service)
    assert (counts["failed_last_hour"], counts["succeeded_last_hour"]) == (0, 1)
    _, summary = await get(service, "/handovers/summary")
    buckets = summary["throughput"]["buckets"]
    assert sum(b["failed"] for b in buckets) == 0 and sum(b["succeeded"] for b in buckets) == 1

    # Failing again after the replay counts the new failure.
    simulator.fail_next(400, code=20001, message="Invalid channel")
    other = await hand_over(service, 2)
    await finished(service, redis, other, "failed")
    simulator.fail_next(400, code=20001, message="Invalid channel")  # before the replay runs
    async with service.http.post(f"{service.url}/handovers/{other}/replay") as response:
        assert response.status == 202
    await finished(service, redis, other, "failed")
    assert (await summary_counts(service))["failed_last_hour"] == 1
