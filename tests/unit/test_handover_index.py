"""The recent index, the lists by state, the outcome counters and the summary script.

Cursor parsing is pure; the rest runs against the suite's real Redis (the `redis`
fixture): the scripts are the things under test. No worker, no API.
"""

from __future__ import annotations

import itertools
import time

import pytest

from shared import redis_keys
from shared.connections import Enqueuer
from shared.deadletters import Replayer
from shared.handover_list import MAX_SCAN, format_cursor, list_handovers, parse_cursor
from shared.model import HandoverError, HandoverRequest, Identity, new_handover_id
from shared.settings import Settings
from shared.store import HandoverStore
from shared.summary import SummaryReader, bucket_starts
from shared.voice_records import VoiceRecorder
from tests.support.values import new_conversation_sid

SETTINGS = Settings(
    status_ttl_seconds=3600, rate_limit_per_conversation=0, rate_limit_per_identity=0
)
RETENTION = SETTINGS.recent_retention_seconds


def request(conversation: int, target: str = "default") -> HandoverRequest:
    return HandoverRequest(
        new_conversation_sid(conversation), Identity.parse("whatsapp:+14155550123"), target
    )


async def ids(redis, state: str, **options) -> list[str]:
    page = await list_handovers(redis, state, **options)
    return [record.handover_id for record in page.handovers]


# --- the cursor (pure) ---


def test_cursor_round_trips():
    handover_id = new_handover_id()
    for score in (1718000000.123456, 0.0, 1e-7):
        assert parse_cursor(format_cursor(score, handover_id)) == (score, handover_id)
    assert parse_cursor("1718000000") == (1718000000.0, None)


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "abc",
        "nan",
        "inf:ho_" + "0" * 32,
        "-inf",
        "1718000000:",
        "1718000000:ho_1",
        "1718000000:ho_" + "G" * 32,
        "1718000000:ho_" + "0" * 32 + "x",
        "1718000000:" + "ho_" + "0" * 32 + ":" + "0",
        "9" * 100_000,
        "1" + "0" * 400,  # a float() of inf
        "\x00:ho_" + "0" * 32,
    ],
)
def test_a_hostile_cursor_is_refused_with_a_sentence(hostile):
    with pytest.raises(ValueError, match="before parameter"):
        parse_cursor(hostile)


# --- the recent index, as the storing scripts write it ---


async def test_every_stored_handover_enters_the_recent_index_when_queued(redis):
    enqueuer = Enqueuer(redis, SETTINGS)
    before = time.time()
    stored = await enqueuer.enqueue(request(1))
    again = await enqueuer.enqueue(request(1))  # the live one answered: nothing new
    call = HandoverRequest(
        "", request(2).identity, "default", kind="voice", call_sid="CA" + "1" * 32
    )
    voice = await VoiceRecorder(redis, 3600, RETENTION).record(
        new_handover_id(), call, time.time(), None
    )

    entries = await redis.zrange(redis_keys.RECENT_INDEX, 0, -1, withscores=True)
    assert [member for member, _ in entries] == [stored.handover_id, voice.handover_id]
    assert again.handover_id == stored.handover_id
    assert all(before <= score <= time.time() for _, score in entries)


async def test_a_replay_moves_the_handover_to_the_top(redis):
    enqueuer, store = Enqueuer(redis, SETTINGS), HandoverStore(redis, 3600)
    old = (await enqueuer.enqueue(request(1))).handover_id
    newer = (await enqueuer.enqueue(request(2))).handover_id
    await store.mark_failed(old, HandoverError("Twilio answered 400", 400))
    await redis.zrem(redis_keys.QUEUE_NAME, redis_keys.handover_job_id(old))  # arq ends the run

    assert (await Replayer(redis, SETTINGS).replay(old)).replayed

    assert await ids(redis, "recent") == [old, newer]
    assert await ids(redis, "queued") == [old, newer]


@pytest.mark.parametrize("stale", [1, 500])
async def test_each_new_entry_prunes_at_most_two_entries_older_than_the_retention(redis, stale):
    now = time.time()
    expired = {new_handover_id(): now - RETENTION - 60 - n for n in range(stale)}
    kept = {new_handover_id(): now - RETENTION + 60, new_handover_id(): now - 1}
    await redis.zadd(redis_keys.RECENT_INDEX, {**expired, **kept})

    stored = await Enqueuer(redis, SETTINGS).enqueue(request(1))

    members = set(await redis.zrange(redis_keys.RECENT_INDEX, 0, -1))
    assert {stored.handover_id, *kept} <= members
    assert len(members & set(expired)) == max(0, stale - 2)


# --- the lists ---


async def queued_succeeded_failed(redis) -> tuple[str, str, str, str]:
    """Four handovers, oldest first: queued (billing), running, succeeded, failed."""
    enqueuer, store = Enqueuer(redis, SETTINGS), HandoverStore(redis, 3600)
    queued = (await enqueuer.enqueue(request(1, "billing"))).handover_id
    running = (await enqueuer.enqueue(request(2))).handover_id
    succeeded = (await enqueuer.enqueue(request(3))).handover_id
    failed = (await enqueuer.enqueue(request(4))).handover_id
    await store.start_attempt(running)
    await store.mark_succeeded(succeeded, "KD" + "1" * 32, None)
    await store.mark_failed(failed, HandoverError("Twilio answered 400", 400))
    return queued, running, succeeded, failed


async def test_each_state_lists_its_handovers_and_recent_lists_them_all(redis):
    queued, running, succeeded, failed = await queued_succeeded_failed(redis)

    assert await ids(redis, "recent") == [failed, succeeded, running, queued]
    assert await ids(redis, "queued") == [queued]
    assert await ids(redis, "running") == [running]
    assert await ids(redis, "succeeded") == [succeeded]
    assert await ids(redis, "failed") == [failed]
    assert await ids(redis, "retrying") == []
    assert await ids(redis, "recent", target="billing") == [queued]
    assert await ids(redis, "queued", target="default") == []


async def test_a_handover_is_listed_under_the_state_it_has_when_read(redis):
    queued, running, _, _ = await queued_succeeded_failed(redis)
    store = HandoverStore(redis, 3600)
    await store.mark_retrying(running, HandoverError("Twilio answered 503", 503), time.time())

    assert await ids(redis, "running") == []
    assert await ids(redis, "retrying") == [running]
    await store.start_attempt(queued)
    assert await ids(redis, "queued") == []


async def test_expired_records_are_skipped_and_dropped_from_the_index(redis):
    queued, running, succeeded, failed = await queued_succeeded_failed(redis)
    await redis.delete(redis_keys.handover_key(running), redis_keys.handover_key(succeeded))

    assert await ids(redis, "recent") == [failed, queued]
    assert set(await redis.zrange(redis_keys.RECENT_INDEX, 0, -1)) == {queued, failed}


async def test_a_filtered_page_looks_at_max_scan_entries_and_says_where_to_go_on(redis):
    """A rare state behind many others: each page's work is bounded, its `next`
    goes on where it stopped, and the pages together miss and repeat nothing."""
    now = time.time()
    enqueuer = Enqueuer(redis, SETTINGS)
    rare = [(await enqueuer.enqueue(request(n))).handover_id for n in range(3)]
    store = HandoverStore(redis, 3600)
    for handover_id in rare:
        await store.start_attempt(handover_id)
    filler = {new_handover_id(): now + 1 + n / 1000 for n in range(MAX_SCAN + 500)}
    async with redis.pipeline(transaction=False) as pipe:
        for handover_id in filler:
            pipe.hset(
                redis_keys.handover_key(handover_id),
                mapping={"state": "succeeded", "target": "default"},
            )
        pipe.zadd(redis_keys.RECENT_INDEX, filler)
        await pipe.execute()

    first = await list_handovers(redis, "running", 10)
    assert first.handovers == [] and first.next is not None
    second = await list_handovers(redis, "running", 10, first.next)
    assert [record.handover_id for record in second.handovers] == rare[::-1]
    assert second.next is None


async def test_pages_cover_every_handover_once_while_new_ones_arrive(redis):
    enqueuer = Enqueuer(redis, SETTINGS)
    first_ones = [(await enqueuer.enqueue(request(n))).handover_id for n in range(7)]
    seen, cursor, arrived = [], None, []
    while True:
        page = await list_handovers(redis, "recent", 2, cursor)
        seen += [record.handover_id for record in page.handovers]
        arrived.append((await enqueuer.enqueue(request(100 + len(arrived)))).handover_id)
        if page.next is None:
            break
        cursor = page.next
    assert seen == first_ones[::-1]
    assert await ids(redis, "recent", limit=3) == arrived[::-1][:3]


# --- the outcome counters and the summary ---


async def test_each_outcome_is_counted_once_in_its_minute(redis):
    enqueuer, store = Enqueuer(redis, SETTINGS), HandoverStore(redis, 3600)
    done = (await enqueuer.enqueue(request(1))).handover_id
    lost = (await enqueuer.enqueue(request(2))).handover_id

    assert await store.mark_succeeded(done, "KD" + "1" * 32, None)
    assert not await store.mark_succeeded(done, "KD" + "1" * 32, None)  # a late repeat
    assert await store.mark_failed(lost, HandoverError("Twilio answered 400", 400))
    assert await store.finish_aftercare(lost, {"aftercare": "done"})

    bucket = redis_keys.outcome_bucket(time.time())
    key = redis_keys.outcome_bucket_key(bucket)
    assert await redis.hgetall(key) == {"succeeded": "1", "failed": "1"}
    expires_at = await redis.expiretime(key)
    assert expires_at == bucket + redis_keys.OUTCOME_BUCKET_TTL_SECONDS


def test_the_buckets_are_the_hour_to_the_current_minute():
    starts = bucket_starts(1718000123.5)
    assert len(starts) == 60 and starts[-1] == 1718000100
    assert {b - a for a, b in itertools.pairwise(starts)} == {60}


async def test_the_summary_counts_the_queue_hand_backs_apart(redis):
    now = time.time()
    now_ms = int(now * 1000)
    await redis.zadd(
        redis_keys.QUEUE_NAME,
        {
            redis_keys.handover_job_id("ho_running"): now_ms - 9000,
            redis_keys.handover_job_id("ho_old"): now_ms - 5000,
            redis_keys.handover_job_id("ho_new"): now_ms - 100,
            redis_keys.hand_back_job_id("ho_x"): now_ms - 7000,
            redis_keys.handover_job_id("ho_later"): now_ms + 60_000,
            redis_keys.hand_back_job_id("ho_y"): now_ms + 60_000,
        },
    )
    await redis.set(redis_keys.arq_in_progress_key(redis_keys.handover_job_id("ho_running")), "1")
    minute = redis_keys.outcome_bucket(now)
    await redis.hset(redis_keys.outcome_bucket_key(minute), mapping={"succeeded": 3, "failed": 1})
    await redis.hset(redis_keys.outcome_bucket_key(minute - 3600), "succeeded", 50)  # too old

    summary = (await SummaryReader(redis, ("billing", "default")).read(now)).to_public()

    assert summary["counts"] == {
        "queued": 2,
        "running": 1,
        "retrying": 1,
        "succeeded_last_hour": 3,
        "failed_last_hour": 1,
    }
    # shared/backlog.py's (g-metrics'): the head of the queue, running or not.
    assert summary["oldest_waiting_seconds"] == pytest.approx(9.0, abs=0.01)
    assert summary["throughput"]["buckets"][-1] == {"start": minute, "succeeded": 3, "failed": 1}
    assert summary["targets"] == ["billing", "default"]


async def test_the_summary_is_bounded_past_its_scan(redis):
    now = time.time()
    due = {redis_keys.handover_job_id(f"ho_{n}"): int(now * 1000) - n for n in range(2_500)}
    await redis.zadd(redis_keys.QUEUE_NAME, due)

    summary = (await SummaryReader(redis, ()).read(now)).to_public()

    assert (summary["counts"]["queued"], summary["counts"]["running"]) == (2_500, 0)
