"""The replay script's branches and the failed list's paging, one at a time.

These run against the suite's real Redis (the `redis` fixture): fakeredis
needs the optional Lua runtime for scripts, and the script is the thing under
test. No worker, no API.
"""

from __future__ import annotations

import json
import time

import pytest
from arq.constants import expires_extra_ms, in_progress_key_prefix

from commands.operator_commands import failed_table as _table
from shared import redis_keys
from shared.deadletters import (
    MAX_REPLAY_READS,
    Refusal,
    ReplayContended,
    Replayer,
    list_failed,
)
from shared.handover_list import format_cursor, parse_cursor
from shared.lua_scripts import SHARED_CONSTANTS
from shared.model import (
    HandoverError,
    HandoverRequest,
    Identity,
    Status,
    new_handover_id,
    new_handover_record,
)
from shared.settings import Settings, SettingsError
from shared.store import HandoverStore
from tests.support.values import WORKFLOW_SID, new_conversation_sid

FAILED_PRUNE = SHARED_CONSTANTS["FAILED_PRUNE"]
SETTINGS = Settings(status_ttl_seconds=3600)


async def store_handover(
    redis, state: Status = Status.FAILED, conversation: int = 1, **fields: str
) -> str:
    """A status record as the enqueue script and the worker leave it."""
    handover_id = new_handover_id()
    request = HandoverRequest(
        new_conversation_sid(conversation), Identity.parse("whatsapp:+14155550123"), "default"
    )
    key = redis_keys.handover_key(handover_id)
    await redis.hset(key, mapping=new_handover_record(handover_id, request, time.time()))
    await redis.expire(key, 600)
    await redis.set(redis_keys.conversation_key(request.conversation_sid), handover_id)
    store = HandoverStore(redis, SETTINGS.status_ttl_seconds)
    if state is Status.FAILED:
        unresolved = {"attempts": "3", "next_attempt_at": "1", "in_flight_since": "1"}
        await redis.hset(key, mapping=unresolved)
        await store.mark_failed(handover_id, HandoverError("Twilio answered 400", 400, 20001))
    elif state is Status.SUCCEEDED:
        await store.mark_succeeded(handover_id, "KD" + "0" * 32, None)
    else:
        await redis.hset(key, "state", state.value)
    if fields:
        await redis.hset(key, mapping=fields)
    return handover_id


async def nothing_queued(redis, handover_id: str) -> bool:
    return await redis.zscore(
        redis_keys.QUEUE_NAME, redis_keys.handover_job_id(handover_id)
    ) is None and not await redis.exists(redis_keys.arq_job_key(handover_id))


# --- replay: what it writes ---


async def test_replay_requeues_a_failed_handover_as_a_stock_arq_job(redis):
    handover_id = await store_handover(redis)
    before = time.time()

    result = await Replayer(redis, SETTINGS).replay(handover_id)

    assert result.replayed and result.refusal is None
    record = result.record
    assert record.state is Status.QUEUED
    assert record.replays == 1 and record.replayed_at >= before
    assert record.attempts == 3
    assert record.error is None and record.finished_at is None
    assert record.next_attempt_at is None
    # An attempt with an unknown outcome stays in flight: the run looks first.
    assert record.in_flight_since == 1.0
    stored = await redis.hgetall(redis_keys.handover_key(handover_id))
    assert stored["state"] == "queued" and "error" not in stored
    assert 3500 < await redis.ttl(redis_keys.handover_key(handover_id)) <= 3600
    pointer = redis_keys.conversation_key(record.request.conversation_sid)
    assert await redis.get(pointer) == handover_id
    assert SETTINGS.dedup_key_ttl_seconds - 100 < await redis.ttl(pointer)
    assert await redis.zscore(redis_keys.FAILED_INDEX, handover_id) is None
    job = json.loads(await redis.get(redis_keys.arq_job_key(handover_id)))
    assert job == {
        "t": 1,
        "f": redis_keys.HANDOVER_FUNCTION,
        "a": [handover_id, record.request.conversation_sid],
        "k": {},
        "et": job["et"],
    }
    assert expires_extra_ms - 100_000 < await redis.pttl(redis_keys.arq_job_key(handover_id))
    assert (
        await redis.zscore(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(handover_id))
        == job["et"]
    )


async def test_a_replay_drops_what_the_failed_runs_tasks_ended(redis):
    """The replayed run's own task must find the hand-back's gate open."""
    ends = {
        "ended_at": "1",
        "ended_by": "task.canceled",
        "ended_task_sid": "WT" + "1" * 32,
        "ended_attempt": "at_1",
        "handed_back": "0",
        "restored_webhooks": "0",
        "early_end:at_2": "task.canceled WT" + "2" * 32 + " 1.0",
        "early_end:": "task.deleted WT" + "3" * 32 + " 1.0",
    }
    handover_id = await store_handover(redis, fallback_message_sid="IM" + "4" * 32, **ends)

    assert (await Replayer(redis, SETTINGS).replay(handover_id)).replayed

    stored = await redis.hgetall(redis_keys.handover_key(handover_id))
    assert not set(ends) & set(stored), stored
    assert stored["fallback_message_sid"] == "IM" + "4" * 32  # one fallback a handover, ever


async def test_a_second_replay_is_refused_while_the_first_is_queued(redis):
    handover_id = await store_handover(redis)
    assert (await Replayer(redis, SETTINGS).replay(handover_id)).replayed

    again = await Replayer(redis, SETTINGS).replay(handover_id)

    assert again.refusal is Refusal.IN_PROGRESS
    assert "still queued" in again.message
    stored = await redis.hgetall(redis_keys.handover_key(handover_id))
    assert stored["replays"] == "1"


# --- replay: what it refuses, leaving everything as it was ---


async def test_unknown_handover_is_refused(redis):
    result = await Replayer(redis, SETTINGS).replay(new_handover_id())
    assert result.refusal is Refusal.MISSING and result.record is None
    assert await redis.zcard(redis_keys.QUEUE_NAME) == 0


async def test_succeeded_handover_is_refused_naming_its_interaction(redis):
    handover_id = await store_handover(redis, Status.SUCCEEDED)

    result = await Replayer(redis, SETTINGS).replay(handover_id)

    assert result.refusal is Refusal.ALREADY_SUCCEEDED
    assert result.message.startswith("already succeeded: Interaction KD")
    assert await nothing_queued(redis, handover_id)
    assert (await redis.hgetall(redis_keys.handover_key(handover_id)))["state"] == "succeeded"


@pytest.mark.parametrize("state", [Status.QUEUED, Status.RUNNING, Status.RETRYING])
async def test_live_handover_is_refused(redis, state):
    handover_id = await store_handover(redis, state)

    result = await Replayer(redis, SETTINGS).replay(handover_id)

    assert result.refusal is Refusal.IN_PROGRESS
    assert f"still {state.value}" in result.message
    assert await nothing_queued(redis, handover_id)


async def test_failed_handover_whose_arq_run_is_still_finishing_is_refused(redis):
    """The worker writes `failed` before arq deletes the job and the queue entry:
    a replay in between would be wiped by that clean-up."""
    handover_id = await store_handover(redis)
    await redis.psetex(
        in_progress_key_prefix + redis_keys.handover_job_id(handover_id), 4_000, b"1"
    )

    result = await Replayer(redis, SETTINGS).replay(handover_id)

    assert result.refusal is Refusal.IN_PROGRESS
    assert "try again in 4 seconds" in result.message
    assert await nothing_queued(redis, handover_id)
    assert await redis.zscore(redis_keys.FAILED_INDEX, handover_id) is not None


@pytest.mark.parametrize(
    "newer_state", [Status.QUEUED, Status.RUNNING, Status.RETRYING, Status.SUCCEEDED]
)
async def test_handover_superseded_by_a_newer_live_or_succeeded_one_is_refused(redis, newer_state):
    old = await store_handover(redis, conversation=7)
    newer = await store_handover(redis, newer_state, conversation=7)

    result = await Replayer(redis, SETTINGS).replay(old)

    assert result.refusal is Refusal.SUPERSEDED
    assert newer in result.message and newer_state.value in result.message
    assert await nothing_queued(redis, old)
    assert await redis.get(redis_keys.conversation_key(new_conversation_sid(7))) == newer
    assert (await redis.hgetall(redis_keys.handover_key(old)))["state"] == "failed"


async def test_newer_failed_handover_does_not_block_a_replay(redis):
    old = await store_handover(redis, conversation=7)
    await store_handover(redis, conversation=7)

    assert (await Replayer(redis, SETTINGS).replay(old)).replayed
    assert await redis.get(redis_keys.conversation_key(new_conversation_sid(7))) == old


async def test_newer_handover_whose_record_expired_does_not_block_a_replay(redis):
    old = await store_handover(redis, conversation=7)
    await redis.set(redis_keys.conversation_key(new_conversation_sid(7)), new_handover_id())

    assert (await Replayer(redis, SETTINGS).replay(old)).replayed


async def test_a_newer_handover_stored_after_the_pointer_was_read_is_seen(redis, monkeypatch):
    """The script checks the pointer it was given is the one it finds: when a new
    handover was stored between the read and the script, it writes nothing, and
    the second read finds it (refused as superseded, as without the race)."""
    old = await store_handover(redis, conversation=7)
    pointer = redis_keys.conversation_key(new_conversation_sid(7))
    newer: list[str] = []
    read = redis.get

    async def get_then_store_a_newer_one(name):
        value = await read(name)
        if name == pointer and not newer:
            newer.append(await store_handover(redis, Status.QUEUED, conversation=7))
        return value

    monkeypatch.setattr(redis, "get", get_then_store_a_newer_one)
    script_runs = []
    run = redis.evalsha

    async def counted(*args):
        script_runs.append(args[0])
        return await run(*args)

    monkeypatch.setattr(redis, "evalsha", counted)

    result = await Replayer(redis, SETTINGS).replay(old)

    assert result.refusal is Refusal.SUPERSEDED and newer[0] in result.message
    assert len(script_runs) == 2
    assert await nothing_queued(redis, old)
    assert await redis.hget(redis_keys.handover_key(old), "state") == "failed"


# --- list_failed ---


# Failure times are offsets from here: within the TTL, as a record that still
# exists must be (each failure prunes entries more than a TTL old).
RECENT = float(int(time.time()) - SETTINGS.status_ttl_seconds // 2)


async def fail_at(redis, offset: float, conversation: int = 1) -> str:
    """A failed handover whose failure is dated RECENT + offset."""
    handover_id = await store_handover(redis, conversation=conversation)
    await redis.zadd(redis_keys.FAILED_INDEX, {handover_id: RECENT + offset})
    return handover_id


async def all_pages(redis, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await list_failed(redis, limit, cursor)
        pages.append([record.handover_id for record in page.handovers])
        if page.next is None:
            return pages
        cursor = page.next


async def test_list_is_newest_first_with_the_last_error(redis):
    older = await fail_at(redis, 1000.0)
    newer = await fail_at(redis, 2000.0)

    page = await list_failed(redis, 10)

    assert [record.handover_id for record in page.handovers] == [newer, older]
    assert page.handovers[0].error == HandoverError("Twilio answered 400", 400, 20001)
    assert page.next is None


async def test_pages_cover_every_failure_once_even_with_equal_failure_times(redis):
    ids = [await fail_at(redis, score) for score in (5.0, 4.0, 4.0, 4.0, 3.0, 2.0, 1.0)]
    ties = sorted(ids[1:4], reverse=True)  # equal scores: reverse id order
    expected = [ids[0], *ties, *ids[4:]]

    for limit in (1, 2, 3, 7):
        pages = await all_pages(redis, limit)
        assert [i for page in pages for i in page] == expected, limit
        assert all(len(page) == limit for page in pages[:-1])
    assert await all_pages(redis, 8) == [expected]


async def test_a_unix_time_lists_what_failed_before_it(redis):
    await fail_at(redis, 3000.0)
    older = await fail_at(redis, 1000.0)

    page = await list_failed(redis, 10, repr(RECENT + 3000))

    assert [record.handover_id for record in page.handovers] == [older]


async def test_expired_records_are_dropped_and_pruned_from_the_index(redis):
    kept = [await fail_at(redis, float(n)) for n in range(1, 4)]
    expired = [await fail_at(redis, float(n)) for n in range(10, 70)]
    for handover_id in expired:
        await redis.delete(redis_keys.handover_key(handover_id))

    page = await list_failed(redis, 2)

    assert [record.handover_id for record in page.handovers] == [kept[2], kept[1]]
    assert page.next is not None
    assert set(await redis.zrange(redis_keys.FAILED_INDEX, 0, -1)) == set(kept)


@pytest.mark.parametrize("stale", [1, 500])
async def test_each_failure_prunes_entries_failed_more_than_a_ttl_ago(redis, stale):
    """Their records have expired (the failure set the TTL): the next failure
    drops up to FAILED_PRUNE of them, so the index stays bounded when nobody
    lists it and no write does unbounded work. Entries
    within the TTL, one a minute short of it included, are kept."""
    ttl, now = SETTINGS.status_ttl_seconds, time.time()
    expired = {new_handover_id(): now - ttl - 60 - n for n in range(stale)}
    await redis.zadd(redis_keys.FAILED_INDEX, expired)
    recent = {new_handover_id(): now - ttl + 60, new_handover_id(): now - 1}
    await redis.zadd(redis_keys.FAILED_INDEX, recent)

    failed_now = await store_handover(redis)  # the worker's final write

    left = set(await redis.zrange(redis_keys.FAILED_INDEX, 0, -1)) - {*recent, failed_now}
    assert len(left) == max(0, stale - FAILED_PRUNE)  # a bounded prune per write...
    assert left <= set(expired)  # ...of the oldest: the recent ones are kept
    while left:  # ...and each failure prunes on: a backlog drains
        await store_handover(redis)
        left = set(await redis.zrange(redis_keys.FAILED_INDEX, 0, -1)) & set(expired)
    assert set(recent) <= set(await redis.zrange(redis_keys.FAILED_INDEX, 0, -1))


async def test_entries_no_longer_failed_are_skipped_not_pruned(redis):
    """Replayed between the index read and the record read: the worker may
    index it again any moment, so the list must not remove it."""
    failed = await fail_at(redis, 1.0)
    requeued = await fail_at(redis, 2.0)
    await redis.hset(redis_keys.handover_key(requeued), "state", "running")

    page = await list_failed(redis, 10)

    assert [record.handover_id for record in page.handovers] == [failed]
    assert await redis.zscore(redis_keys.FAILED_INDEX, requeued) == RECENT + 2.0


def test_cursor_round_trips_and_rejects_junk():
    score = 1718000000.123456
    handover_id = new_handover_id()
    assert parse_cursor(format_cursor(score, handover_id)) == (score, handover_id)
    assert parse_cursor("1718000000") == (1718000000.0, None)
    for junk in ("abc", "nan:ho_1", "inf", ""):
        with pytest.raises(ValueError, match="before parameter"):
            parse_cursor(junk)


# --- the operator's settings and table ---


def test_operator_role_needs_redis_but_no_authentication_or_twilio_credentials():
    env = {"REDIS_URL": "redis://localhost:6379/0", "FLEX_WORKFLOW_SID": WORKFLOW_SID}
    assert Settings.from_env(env, role="operator").redis_url == env["REDIS_URL"]
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"FLEX_WORKFLOW_SID": WORKFLOW_SID}, role="operator")
    assert [problem.split(":")[0] for problem in raised.value.problems] == ["REDIS_URL"]


async def test_table_shows_masked_public_fields(redis):
    handover_id = await fail_at(redis, 1_718_000_000.0)
    page = await list_failed(redis, 10)

    lines = _table([record.to_public() for record in page.handovers]).splitlines()

    assert lines[0].split() == [
        "HANDOVER", "FAILED", "AT", "(UTC)", "CONVERSATION", "IDENTITY", "TARGET",
        "ATTEMPTS", "LAST", "ERROR",
    ]  # fmt: skip
    assert handover_id in lines[1]
    assert "whatsapp:+14*******23" in lines[1]
    assert "+14155550123" not in lines[1]
    assert lines[1].endswith("[400 20001] Twilio answered 400")


# --- replay: a pointer that moves between the read and the script ---


async def test_a_pointer_moved_after_the_read_is_read_again_before_anything_is_written(redis):
    handover_id = await store_handover(redis)
    pointer = redis_keys.conversation_key(new_conversation_sid(1))
    replayer = Replayer(redis, SETTINGS)
    run, runs = replayer._script, []

    async def moved_before_the_first_run(keys, args):
        if not runs:  # another handover took the conversation after the read
            await redis.set(pointer, new_handover_id())
        runs.append(list(keys))
        return await run(keys=keys, args=args)

    replayer._script = moved_before_the_first_run
    result = await replayer.replay(handover_id)

    assert len(runs) == 2 and runs[0] != runs[1]  # the second names the new latest record
    assert result.replayed
    assert await redis.get(pointer) == handover_id


async def test_a_pointer_that_never_settles_is_a_clear_error_and_writes_nothing(redis):
    handover_id = await store_handover(redis)
    before = {key: await redis.dump(key) for key in await redis.keys("*")}
    replayer = Replayer(redis, SETTINGS)
    run, runs = replayer._script, []

    async def moved_every_time(keys, args):
        runs.append(1)
        await redis.set(redis_keys.conversation_key(new_conversation_sid(1)), new_handover_id())
        return await run(keys=keys, args=args)

    replayer._script = moved_every_time
    with pytest.raises(ReplayContended, match="try again"):
        await replayer.replay(handover_id)
    assert len(runs) == MAX_REPLAY_READS
    assert await nothing_queued(redis, handover_id)
    record = await HandoverStore(redis, 3600).get(handover_id)
    assert record is not None and record.state is Status.FAILED and record.replays == 0
    assert set(await redis.keys("*")) == set(before)
