"""shared.script_batcher against the suite's real Redis (scripts need a Lua runtime)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.redis_client import create_redis
from shared.script_batcher import NotReplicated, ReplicaWait, ScriptBatcher

# Appends ARGV[1] to the list KEYS[1]; returns the list's new length and ARGV[1].
APPEND = (Path(__file__).parent / "lua" / "append.lua").read_text()


async def test_each_caller_gets_its_own_answer_from_one_shared_pipeline(redis):
    batcher = ScriptBatcher(redis, APPEND, max_batch=7)
    await redis.script_load(APPEND)
    sent = []
    original = batcher._pipeline

    async def counting(batch):
        sent.append(len(batch))
        return await original(batch)

    batcher._pipeline = counting
    results = await asyncio.gather(*(batcher(["log"], [f"call-{n}"]) for n in range(50)))
    assert [value for _, value in results] == [f"call-{n}" for n in range(50)]
    assert sorted(length for length, _ in results) == list(range(1, 51))
    assert await redis.lrange("log", 0, -1) == [f"call-{n}" for n in range(50)]
    assert sum(sent) == 50 and max(sent) == 7 and len(sent) < 50


async def test_an_idle_call_is_sent_at_once_alone(redis):
    batcher = ScriptBatcher(redis, APPEND)
    await redis.script_load(APPEND)
    sent = []
    original = batcher._pipeline

    async def counting(batch):
        sent.append(len(batch))
        return await original(batch)

    batcher._pipeline = counting
    assert await batcher(["solo"], ["x"]) == [1, "x"]
    assert await batcher(["solo"], ["y"]) == [2, "y"]
    assert sent == [1, 1]


async def test_a_flushed_script_cache_is_reloaded_and_the_batch_sent_again(redis):
    batcher = ScriptBatcher(redis, APPEND)
    await batcher(["log"], ["before"])
    await redis.script_flush()
    results = await asyncio.gather(batcher(["log"], ["a"]), batcher(["log"], ["b"]))
    assert results == [[2, "a"], [3, "b"]]
    assert await redis.lrange("log", 0, -1) == ["before", "a", "b"]


async def test_a_script_error_reaches_only_its_caller(redis):
    batcher = ScriptBatcher(redis, APPEND)
    await redis.set("not-a-list", "x")
    results = await asyncio.gather(
        batcher(["log"], ["ok"]), batcher(["not-a-list"], ["boom"]), return_exceptions=True
    )
    assert results[0] == [1, "ok"]
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])


async def test_an_unreachable_redis_fails_every_waiting_caller():
    client = create_redis("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    batcher = ScriptBatcher(client, APPEND)
    try:
        results = await asyncio.gather(
            *(batcher(["log"], [str(n)]) for n in range(5)), return_exceptions=True
        )
    finally:
        await client.aclose()
    assert all(isinstance(result, (RedisConnectionError, OSError)) for result in results)
    assert batcher._sender.done() and batcher._pending == []


async def test_cancelling_the_sender_cancels_its_callers_instead_of_leaving_them_waiting(redis):
    batcher = ScriptBatcher(redis, APPEND)
    calls = [asyncio.create_task(batcher(["log"], [str(n)])) for n in range(3)]
    await asyncio.sleep(0)  # the callers queue up and the sender starts
    batcher._sender.cancel()
    for call in calls:
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_one_wait_answers_every_call_of_a_batch(redis):
    """A server with no replica: each of a batch of concurrent calls gets
    NotReplicated after one WAIT (preceded by its fence write), its own write done on
    the primary all the same; a batcher without a ReplicaWait sends no WAIT."""
    batcher = ScriptBatcher(redis, APPEND, replica_wait=ReplicaWait(1, 200, "fence"))
    await redis.config_resetstat()
    started = time.monotonic()
    results = await asyncio.gather(
        *(batcher(["list"], [str(n)]) for n in range(20)), return_exceptions=True
    )
    assert all(isinstance(result, NotReplicated) for result in results), results
    assert "0 of 1 replica(s) confirmed the write within 200 ms" in str(results[0])
    assert time.monotonic() - started < 2
    stats = await redis.info("commandstats")
    waits = stats.get("cmdstat_wait", {}).get("calls", 0)
    assert 1 <= waits <= 3  # one per batch: a first call alone, then the rest together
    assert stats.get("cmdstat_incrby", {}).get("calls", 0) == waits  # a fence before each
    assert await redis.llen("list") == 20

    await redis.config_resetstat()
    plain = ScriptBatcher(redis, APPEND)
    assert await plain(["list"], ["21"]) == [21, "21"]
    assert "cmdstat_wait" not in await redis.info("commandstats")


APPEND_EACH = (Path(__file__).parent / "lua" / "append_each.lua").read_text()


async def test_a_looped_script_runs_once_per_batch_and_answers_each_caller(redis):
    batcher = ScriptBatcher(redis, APPEND_EACH, max_batch=16, looped=True)
    await redis.config_resetstat()
    results = await asyncio.gather(*(batcher([f"log{n % 3}"], [f"call-{n}"]) for n in range(50)))
    assert [value for _, value in results] == [f"call-{n}" for n in range(50)]
    for n in range(3):
        assert await redis.lrange(f"log{n}", 0, -1) == [f"call-{i}" for i in range(n, 50, 3)]
    assert sorted(length for length, _ in results[::3]) == list(range(1, 18))
    stats = await redis.info("commandstats")
    runs = stats["cmdstat_evalsha"]["calls"] + stats.get("cmdstat_eval", {}).get("calls", 0)
    # a first call alone, then batches of at most 16 (a NOSCRIPT answer counts too)
    assert 4 <= runs <= 6, stats["cmdstat_evalsha"]


async def test_a_looped_scripts_error_reaches_every_caller_of_its_batch(redis):
    """One run for the batch: when it fails, each caller hears it (what ran before the
    failing call stays written, so a caller's retry is answered from it)."""
    batcher = ScriptBatcher(redis, APPEND_EACH, looped=True)
    await batcher(["log"], ["first"])  # alone: the next three go out together
    await redis.set("not-a-list", "x")
    results = await asyncio.gather(
        batcher(["log"], ["ok"]),
        batcher(["not-a-list"], ["boom"]),
        batcher(["log"], ["after"]),
        return_exceptions=True,
    )
    assert all(isinstance(result, ResponseError) for result in results), results
    assert await redis.lrange("log", 0, -1) == ["first", "ok"]


async def test_a_looped_script_is_reloaded_after_a_flush(redis):
    batcher = ScriptBatcher(redis, APPEND_EACH, looped=True)
    await batcher(["log"], ["before"])
    await redis.script_flush()
    results = await asyncio.gather(batcher(["log"], ["a"]), batcher(["log"], ["b"]))
    assert results == [[2, "a"], [3, "b"]]
