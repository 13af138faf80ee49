"""worker.reconnect: what a worker that lost Redis frees once it is back
(against the suite's real Redis: the claim release is a Lua script)."""

from __future__ import annotations

from types import SimpleNamespace

from arq.constants import in_progress_key_prefix
from redis.exceptions import ConnectionError as RedisConnectionError

from shared import redis_keys
from shared.store import ClaimRelease
from worker.claim import DeliveryClaims
from worker.reconnect import Leftovers

CONVERSATION = "CH" + "a" * 32
OTHER = "CH" + "b" * 32


async def test_clear_deletes_the_cut_off_jobs_keys_and_releases_only_its_own_claims(redis):
    await redis.set(in_progress_key_prefix + "ho_1", "1")
    await redis.set(in_progress_key_prefix + "ho_2", "1")
    await redis.set(in_progress_key_prefix + "ho_other", "1")
    await redis.set(redis_keys.claim_key(CONVERSATION), "ho_1:mine")
    await redis.set(redis_keys.claim_key(OTHER), "ho_9:someone-else")
    leftovers = Leftovers(
        ["ho_1", "ho_2"],
        [ClaimRelease(redis_keys.claim_key(CONVERSATION), "ho_1:mine"),
         ClaimRelease(redis_keys.claim_key(OTHER), "ho_3:taken-over-since")],
    )  # fmt: skip
    assert await leftovers.clear(redis)
    assert not leftovers
    assert await redis.exists(in_progress_key_prefix + "ho_1", in_progress_key_prefix + "ho_2") == 0
    assert await redis.exists(in_progress_key_prefix + "ho_other") == 1
    assert await redis.get(redis_keys.claim_key(CONVERSATION)) is None
    assert await redis.get(redis_keys.claim_key(OTHER)) == "ho_9:someone-else"


async def test_leftovers_are_kept_while_redis_is_still_away():
    class Gone:
        async def delete(self, *names):
            raise RedisConnectionError("connection refused")

    leftovers = Leftovers(["ho_1"], [])
    assert not await leftovers.clear(Gone())
    assert leftovers.job_ids == ["ho_1"]


async def test_collect_takes_the_claims_runs_could_not_release(redis):
    claims = DeliveryClaims(redis, 60)
    claim = ClaimRelease(redis_keys.claim_key(CONVERSATION), "ho_1:mine")
    claims.unreleased.append(claim)
    worker = SimpleNamespace(ctx={"handover": SimpleNamespace(claims=claims)})
    leftovers = Leftovers()
    leftovers.collect(worker, ["ho_1"])
    leftovers.collect(SimpleNamespace(ctx={}), ["ho_2"])  # never reached Redis
    assert leftovers.job_ids == ["ho_1", "ho_2"]
    assert leftovers.claims == [claim] and claims.unreleased == []
