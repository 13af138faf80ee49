"""Dead letters end to end: a handover fails at the fake Flex API, is listed
with its masked error, is replayed through the API or the CLI, and the real
arq worker delivers it once. Refusals leave nothing queued.
"""

from __future__ import annotations

import asyncio
import json
import time

from shared import redis_keys
from tests.support.processes import COMMAND, PREFIX, clean_env, run_command
from tests.support.service import service_env
from tests.support.values import new_conversation_sid, session_header

PHONE = "+14155550123"
TWILIO_MESSAGE = f"Invalid channel for whatsapp:{PHONE} (jane.doe@example.com)"


async def fail_handover(service, simulator, redis, conversation: int = 1) -> str:
    """One tool call that Flex refuses for good (400), its arq run finished."""
    simulator.fail_next(400, code=20001, message=TWILIO_MESSAGE)
    session = session_header(new_conversation_sid(conversation))
    _, body, _ = await service.call_tool(session_id=session)
    record = await service.wait_final(body["handover_id"])
    assert record["state"] == "failed", record
    await arq_done(redis, body["handover_id"])
    return body["handover_id"]


async def arq_done(redis, handover_id: str, timeout: float = 10.0) -> None:
    """arq clears its in-progress key just after our job returns: until then a
    replay is refused as still finishing."""
    deadline = time.monotonic() + timeout
    while await redis.exists(
        redis_keys.arq_in_progress_key(redis_keys.handover_job_id(handover_id))
    ):
        assert time.monotonic() < deadline, f"arq still running {handover_id}"
        await asyncio.sleep(0.02)


async def get(service, path: str) -> tuple[int, dict]:
    async with service.http.get(service.url + path) as response:
        return response.status, await response.json()


async def post(service, path: str) -> tuple[int, dict]:
    async with service.http.post(service.url + path) as response:
        return response.status, await response.json()


async def nothing_queued(redis, handover_id: str) -> bool:
    return await redis.zscore(
        redis_keys.QUEUE_NAME, redis_keys.handover_job_id(handover_id)
    ) is None and not await redis.exists(redis_keys.arq_job_key(handover_id))


async def cli(redis_server, simulator, *args: str, **env: str) -> tuple[int, str, str]:
    base = clean_env(**service_env(redis_server.url, simulator.base_url))
    process = await asyncio.create_subprocess_exec(
        COMMAND, *PREFIX, *args, env={**base, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_failed_handover_is_listed_masked_and_replayed_through_the_api_once(
    service, simulator, redis
):
    handover_id = await fail_handover(service, simulator, redis)

    status, listing = await get(service, "/handovers?state=failed")
    assert status == 200
    assert listing["next"] is None
    [listed] = listing["handovers"]
    assert listed["handover_id"] == handover_id
    assert listed["state"] == "failed"
    assert listed["error"]["status"] == 400 and listed["error"]["code"] == 20001
    assert "Invalid channel" in listed["error"]["message"]
    assert PHONE not in json.dumps(listing) and "jane.doe" not in json.dumps(listing)

    status, replayed = await post(service, f"/handovers/{handover_id}/replay")
    assert status == 202, replayed
    assert replayed["state"] == "queued" and replayed["replays"] == 1
    assert replayed["error"] is None and replayed["replayed_at"]
    assert PHONE not in json.dumps(replayed)

    record = await service.wait_final(handover_id)
    assert record["state"] == "succeeded", record
    assert record["attempts"] == 2  # the failed one is kept in the count
    assert [i["sid"] for i in simulator.interactions] == [record["interaction_sid"]]
    assert (await get(service, "/handovers?state=failed"))[1] == {"handovers": [], "next": None}


async def test_replay_of_a_succeeded_handover_is_refused_and_queues_nothing(
    service, simulator, redis
):
    _, body, _ = await service.call_tool(session_id=session_header())
    handover_id = body["handover_id"]
    assert (await service.wait_final(handover_id))["state"] == "succeeded"
    await arq_done(redis, handover_id)

    status, refusal = await post(service, f"/handovers/{handover_id}/replay")

    assert status == 409
    assert refusal["error"] == "already_succeeded"
    assert "already succeeded: Interaction KD" in refusal["message"]
    assert await nothing_queued(redis, handover_id)
    assert (await service.status(handover_id))["replays"] == 0
    assert len(simulator.interactions) == 1


async def test_replay_is_refused_while_the_conversation_has_a_newer_handover(
    service, simulator, redis
):
    old = await fail_handover(service, simulator, redis)
    await service.stop_worker()
    _, body, _ = await service.call_tool(session_id=session_header(new_conversation_sid(1)))
    newer = body["handover_id"]
    assert newer != old

    status, refusal = await post(service, f"/handovers/{old}/replay")
    assert status == 409
    assert refusal["error"] == "superseded"
    assert newer in refusal["message"] and "queued" in refusal["message"]
    assert await nothing_queued(redis, old)

    await service.start_worker()
    assert (await service.wait_final(newer))["state"] == "succeeded"
    status, refusal = await post(service, f"/handovers/{old}/replay")
    assert (status, refusal["error"]) == (409, "superseded")
    assert "succeeded" in refusal["message"]
    assert len(simulator.interactions) == 1
    _, listing = await get(service, "/handovers?state=failed")
    assert [h["handover_id"] for h in listing["handovers"]] == [old]


async def test_replay_of_a_live_or_unknown_handover(service, simulator, redis):
    await service.stop_worker()
    _, body, _ = await service.call_tool(session_id=session_header())

    status, refusal = await post(service, f"/handovers/{body['handover_id']}/replay")
    assert (status, refusal["error"]) == (409, "in_progress")
    assert "still queued" in refusal["message"]
    for unknown in ("ho_" + "0" * 32, "not-an-id"):
        status, refusal = await post(service, f"/handovers/{unknown}/replay")
        assert (status, refusal["error"]) == (404, "unknown_handover")


async def test_pages_walk_every_failure_newest_first_and_skip_expired_records(
    service, simulator, redis
):
    failed = [await fail_handover(service, simulator, redis, conversation=n) for n in range(5)]
    expired = failed.pop(2)
    await redis.delete(redis_keys.handover_key(expired))

    seen, cursor, pages = [], None, 0
    while True:
        query = "/handovers?state=failed&limit=2" + (f"&before={cursor}" if cursor else "")
        status, page = await get(service, query)
        assert status == 200, page
        seen += [h["handover_id"] for h in page["handovers"]]
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break

    assert seen == failed[::-1]
    assert pages == 2
    assert await redis.zscore(redis_keys.FAILED_INDEX, expired) is None


async def test_bad_list_queries_are_refused_naming_what_is_accepted(service):
    for query, error in [
        ("", "invalid_state"),
        ("?state=done", "invalid_state"),
        ("?state=failed&limit=0", "invalid_limit"),
        ("?state=failed&limit=ten", "invalid_limit"),
        ("?state=failed&before=yesterday", "invalid_cursor"),
        ("?state=recent&before=1718000000.5:ho_" + "x" * 32, "invalid_cursor"),
        ("?state=recent&before=" + "9" * 5000, "invalid_cursor"),
        ("?state=queued&before=nan", "invalid_cursor"),
        ("?state=recent&target=Not%20a%20target", "invalid_target"),
        ("?state=recent&target=" + "a" * 65, "invalid_target"),
    ]:
        status, refusal = await get(service, "/handovers" + query)
        assert (status, refusal["error"]) == (400, error), query
        if error == "invalid_state":
            assert "state=failed" in refusal["message"]
    status, page = await get(service, "/handovers?state=failed&limit=100000")
    assert (status, page) == (200, {"handovers": [], "next": None})


async def test_cli_lists_and_replays_failed_handovers(service, simulator, redis, redis_server):
    handover_id = await fail_handover(service, simulator, redis)

    code, table, _ = await cli(redis_server, simulator, "failed")
    assert code == 0
    header, row = table.splitlines()
    assert header.startswith("HANDOVER") and "LAST ERROR" in header
    assert row.startswith(handover_id)
    assert "whatsapp:+14*******23" in row
    assert "[400 20001] Twilio answered 400: " in row
    assert "Invalid channel for whatsapp:+14*******23 (j***@example.com)" in row
    assert PHONE not in table and "jane.doe" not in table

    code, listing, _ = await cli(redis_server, simulator, "failed", "--json")
    assert code == 0
    assert PHONE not in listing and "jane.doe" not in listing
    assert [h["handover_id"] for h in json.loads(listing)["handovers"]] == [handover_id]

    code, out, _ = await cli(redis_server, simulator, "replay", handover_id)
    assert code == 0, out
    assert out == f"{handover_id}: replayed, queued (replay 1)\n"
    record = await service.wait_final(handover_id)
    assert record["state"] == "succeeded"
    assert len(simulator.interactions) == 1
    await arq_done(redis, handover_id)

    unknown = "ho_" + "0" * 32
    code, out, _ = await cli(redis_server, simulator, "replay", handover_id, unknown)
    assert code == 1
    succeeded, missing = out.splitlines()
    assert succeeded.startswith(f"{handover_id}: refused (already_succeeded): already succeeded")
    assert missing.startswith(f"{unknown}: refused (unknown_handover)")
    assert await nothing_queued(redis, handover_id)

    code, out, _ = await cli(redis_server, simulator, "failed")
    assert (code, out) == (0, "No failed handovers.\n")


async def test_cli_pages_with_the_printed_cursor(service, simulator, redis, redis_server):
    failed = [await fail_handover(service, simulator, redis, conversation=n) for n in range(2)]

    code, out, _ = await cli(redis_server, simulator, "failed", "--limit", "1")
    assert code == 0
    assert failed[1] in out and failed[0] not in out
    more = out.splitlines()[-1]
    assert more.startswith("More: flex-handover failed --before ")
    code, out, _ = await cli(
        redis_server, simulator, "failed", "--limit", "1", "--before", more.split()[-1]
    )
    assert code == 0
    assert failed[0] in out and "More:" not in out


async def test_cli_needs_only_redis_and_names_a_missing_variable(redis_server, simulator):
    code, _, stderr = await cli(redis_server, simulator, "failed", REDIS_URL="")
    assert code == 2
    assert "REDIS_URL" in stderr
    # An operator needs no API tokens or Twilio credentials to list or replay.
    code, _, stderr = await cli(
        redis_server, simulator, "failed",
        HANDOVER_TOOL_TOKENS="", HANDOVER_ADMIN_TOKENS="", HANDOVER_ALLOW_UNAUTHENTICATED="",
        TWILIO_ACCOUNT_SID="", TWILIO_AUTH_TOKEN="",
    )  # fmt: skip
    assert code == 0, stderr
    code, _, stderr = await cli(
        redis_server, simulator, "replay", "ho_x", REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert code == 2
    assert "REDIS_URL" in stderr and "Traceback" not in stderr


async def test_cli_lists_and_replays_with_nothing_but_redis_url(
    service, simulator, redis, redis_server
):
    """An operator's shell has REDIS_URL only: no targets, tokens or Twilio settings."""
    handover_id = await fail_handover(service, simulator, redis)
    env = clean_env(REDIS_URL=redis_server.url)

    async def run(*args: str) -> tuple[int, str]:
        return await run_command(env, *args)

    code, listing = await run("failed", "--json")
    assert code == 0, listing
    assert [h["handover_id"] for h in json.loads(listing)["handovers"]] == [handover_id]
    code, out = await run("replay", handover_id)
    assert (code, out) == (0, f"{handover_id}: replayed, queued (replay 1)\n")
    assert (await service.wait_final(handover_id))["state"] == "succeeded"
    await arq_done(redis, handover_id)
    code, out = await run("failed")
    assert (code, out) == (0, "No failed handovers.\n")
