"""An earlier version's keys, written before every key had the hash tag, are renamed
(shared/key_migration.py): nothing is lost, and its queued handovers are delivered.

The earlier layout is made here from this version's own writes, untagged
(`to_legacy_layout`): the keys an earlier version wrote are exactly these, without
`{…}` around the prefix and with job ids that are the bare handover ids.
"""

from __future__ import annotations

import asyncio
import time

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

from shared import redis_keys
from shared.key_migration import LEGACY_QUEUE, migrate_if_needed, migrate_legacy_keys
from shared.model import HandoverError
from shared.store import HandoverStore
from tests.support.values import new_conversation_sid, session_header

ARQ_PREFIXES = (job_key_prefix, in_progress_key_prefix, retry_key_prefix)


async def to_legacy_layout(redis) -> None:
    for job_id, score in await redis.zrange(redis_keys.QUEUE_NAME, 0, -1, withscores=True):
        old = job_id.removeprefix(redis_keys.HANDOVER_JOB_PREFIX)
        for prefix in ARQ_PREFIXES:
            if await redis.exists(prefix + job_id):
                await redis.rename(prefix + job_id, prefix + old)
        await redis.zadd(LEGACY_QUEUE, {old: score})
    await redis.delete(redis_keys.QUEUE_NAME)
    async for key in redis.scan_iter(match=redis_keys.PREFIX + ":*"):
        await redis.rename(key, redis_keys.LEGACY_PREFIX + key.removeprefix(redis_keys.PREFIX))


async def snapshot(redis) -> dict[str, tuple[bytes, bool]]:
    """Every key: its serialized value, and whether it has a TTL."""
    found = {}
    async for key in redis.scan_iter(match="*"):
        found[key] = (await redis.dump(key), await redis.pttl(key) > 0)
    return found


async def stored_state(service, redis) -> list[str]:
    """Three handovers queued (one with arq's in-progress mark and try count), one
    failed, one succeeded and its hand-back job queued."""
    ids = []
    for n in range(5):
        status, body, _ = await service.call_tool(
            session_id=session_header(new_conversation_sid(n))
        )
        assert status == 202, body
        ids.append(body["handover_id"])
    store = HandoverStore(redis, 3600)
    await store.mark_failed(ids[3], HandoverError("Twilio answered 400", 400))
    await store.mark_succeeded(ids[4], "KD" + "1" * 32, None)
    for done in ids[3:]:
        await redis.zrem(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(done))
    await store.record_end(ids[4], "task.completed", "WT" + "1" * 32, None)
    assert await redis.zscore(redis_keys.QUEUE_NAME, redis_keys.hand_back_job_id(ids[4]))
    running = redis_keys.handover_job_id(ids[0])
    await redis.psetex(in_progress_key_prefix + running, 60_000, "1")
    await redis.set(retry_key_prefix + running, "2")
    return ids


async def test_the_old_layout_comes_back_exactly(start_service, redis):
    service = await start_service(worker=False)
    await stored_state(service, redis)
    before = await snapshot(redis)
    assert len(before) > 15
    await to_legacy_layout(redis)
    assert all(not key.startswith(redis_keys.PREFIX) for key in await redis.keys("*"))
    legacy = await redis.keys(redis_keys.LEGACY_PREFIX + ":*")

    report = await migrate_if_needed(redis)

    assert await snapshot(redis) == before
    assert report.jobs_moved == 4  # three deliveries and the hand-back
    assert report.keys_renamed == len(legacy) - 1  # all but the queue, whose jobs moved
    assert report.keys_left == 0
    assert not (await migrate_if_needed(redis)).moved_anything  # nothing old is left
    assert await redis.exists(LEGACY_QUEUE) == 0


async def test_two_migrations_at_once_move_each_key_once(start_service, redis):
    service = await start_service(worker=False)
    await stored_state(service, redis)
    before = await snapshot(redis)
    await to_legacy_layout(redis)

    first, second = await asyncio.gather(migrate_legacy_keys(redis), migrate_legacy_keys(redis))

    assert await snapshot(redis) == before
    assert first.jobs_moved + second.jobs_moved == 4
    assert first.keys_left == second.keys_left == 0


async def test_a_key_this_version_wrote_meanwhile_is_not_overwritten(start_service, redis):
    service = await start_service(worker=False)
    ids = await stored_state(service, redis)
    await to_legacy_layout(redis)
    pointer = redis_keys.conversation_key(new_conversation_sid(1))
    await redis.set(pointer, "ho_" + "f" * 32)  # this version's handover, since

    report = await migrate_legacy_keys(redis)

    assert report.keys_left == 1
    assert await redis.get(pointer) == "ho_" + "f" * 32
    legacy = redis_keys.LEGACY_PREFIX + pointer.removeprefix(redis_keys.PREFIX)
    assert await redis.get(legacy) == ids[1]  # left where it was, to expire


async def test_the_worker_delivers_what_an_earlier_version_queued(start_service, redis, simulator):
    service = await start_service(worker=False)
    status, body, _ = await service.call_tool(session_id=session_header(new_conversation_sid(7)))
    assert status == 202, body
    handover_id = body["handover_id"]
    await to_legacy_layout(redis)

    await service.start_worker()

    deadline = time.monotonic() + 10
    while await redis.hget(redis_keys.handover_key(handover_id), "state") != "succeeded":
        assert time.monotonic() < deadline, "the earlier version's handover was not delivered"
        await asyncio.sleep(0.05)
    assert len(simulator.interactions) == 1
    assert await redis.keys(redis_keys.LEGACY_PREFIX + ":*") == []
