"""Rate limits on NEW handovers, per conversation and per customer identity,
checked inside the one enqueue script: a repeat call for a live handover is
answered first and never counts; a refused call stores nothing."""

from __future__ import annotations

import asyncio
import time

from shared import redis_keys
from shared.redis_keys import (
    RATE_IDENTITY_PREFIX,
    rate_conversation_key,
    rate_identity_key,
)
from tests.support.outcomes import snapshot
from tests.support.service import Service
from tests.support.values import new_conversation_sid, session_header

PHONE = "+14155550123"
IDENTITY = f"whatsapp:{PHONE}"


async def call(service: Service, n: int, identity: str = IDENTITY):
    return await service.call_tool(
        session_id=session_header(new_conversation_sid(n)), identity=identity
    )


def assert_rate_limited(status, body, response, window: int) -> int:
    assert status == 429, body
    assert body["error"] == "rate_limited"
    assert set(body) == {"error", "message"}
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window
    assert f"{retry_after} seconds" in body["message"]
    return retry_after


async def fail_handover(redis, handover_id: str) -> None:
    """A handover that ended in failure: the next call for its conversation is new."""
    await redis.hset(redis_keys.handover_key(handover_id), "state", "failed")


async def test_per_conversation_limit(start_service, redis):
    service = await start_service(
        worker=False, HANDOVER_RATE_LIMIT_PER_CONVERSATION=2, HANDOVER_RATE_LIMIT_PER_IDENTITY=0
    )
    for _ in range(2):
        status, body, _ = await call(service, 1)
        assert status == 202, body
        await fail_handover(redis, body["handover_id"])
    before = await snapshot(redis)
    status, body, response = await call(service, 1)
    assert_rate_limited(status, body, response, 60)
    assert "this conversation" in body["message"]
    assert await snapshot(redis) == before  # nothing stored, not even a count
    assert await redis.get(rate_conversation_key(new_conversation_sid(1))) == "2"
    # Another conversation of the same customer is not limited.
    assert (await call(service, 2))[0] == 202


async def test_duplicates_are_answered_first_and_do_not_count(start_service, redis):
    service = await start_service(worker=False, HANDOVER_RATE_LIMIT_PER_CONVERSATION=1)
    status, first, _ = await call(service, 1)
    assert status == 202
    for _ in range(5):
        status, body, _ = await call(service, 1)
        assert status == 200, body
        assert body["handover_id"] == first["handover_id"]
    assert await redis.get(rate_conversation_key(new_conversation_sid(1))) == "1"
    assert await redis.get(rate_identity_key(IDENTITY)) == "1"
    # Once it has failed, a new handover for that conversation is over the limit.
    await fail_handover(redis, first["handover_id"])
    status, body, response = await call(service, 1)
    assert_rate_limited(status, body, response, 60)


async def test_per_identity_limit_with_the_identity_hashed(start_service, redis):
    service = await start_service(worker=False, HANDOVER_RATE_LIMIT_PER_IDENTITY=3)
    for n in range(3):
        assert (await call(service, n))[0] == 202
    before = await snapshot(redis)
    status, body, response = await call(service, 3)
    assert_rate_limited(status, body, response, 60)
    assert "this customer" in body["message"]
    assert PHONE not in body["message"]
    assert await snapshot(redis) == before
    # Another customer is not limited.
    assert (await call(service, 4, identity="whatsapp:+14155550999"))[0] == 202
    # No key name holds the phone number.
    names = [key async for key in redis.scan_iter()]
    assert not [name for name in names if PHONE[1:] in name]
    identity_keys = [name for name in names if name.startswith(RATE_IDENTITY_PREFIX)]
    assert len(identity_keys) == 2
    assert all(len(name) == len(RATE_IDENTITY_PREFIX) + 32 for name in identity_keys)


async def test_the_longer_wait_is_reported_when_both_limits_are_hit(start_service, redis):
    service = await start_service(
        worker=False, HANDOVER_RATE_LIMIT_PER_CONVERSATION=1, HANDOVER_RATE_LIMIT_PER_IDENTITY=1
    )
    status, body, _ = await call(service, 1)
    await fail_handover(redis, body["handover_id"])
    await redis.expire(rate_conversation_key(new_conversation_sid(1)), 10)
    status, body, response = await call(service, 1)
    assert assert_rate_limited(status, body, response, 60) > 10
    assert "this customer" in body["message"]


async def test_window_resets(start_service, redis):
    service = await start_service(
        worker=False, HANDOVER_RATE_LIMIT_PER_IDENTITY=1, HANDOVER_RATE_LIMIT_WINDOW_SECONDS=1
    )
    assert (await call(service, 1))[0] == 202
    status, body, response = await call(service, 2)
    assert assert_rate_limited(status, body, response, 1) == 1
    deadline = time.monotonic() + 10
    while await redis.exists(rate_identity_key(IDENTITY)):
        assert time.monotonic() < deadline, "the window never ended"
        await asyncio.sleep(0.05)
    status, body, _ = await call(service, 2)
    assert status == 202, body


async def test_limits_at_zero_are_off_and_store_no_counters(start_service, redis):
    service = await start_service(
        worker=False, HANDOVER_RATE_LIMIT_PER_IDENTITY=0, HANDOVER_RATE_LIMIT_PER_CONVERSATION=0
    )
    results = await asyncio.gather(*(call(service, n) for n in range(25)))
    assert [status for status, _, _ in results] == [202] * 25
    assert not [key async for key in redis.scan_iter(redis_keys.RATE_KEY_PREFIX + "*")]


async def test_default_limits_refuse_a_burst_from_one_customer(start_service, redis):
    """Defaults: 20 new handovers per customer per minute."""
    service = await start_service(worker=False)
    results = await asyncio.gather(*(call(service, n) for n in range(25)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [202] * 20 + [429] * 5
    records = [key async for key in redis.scan_iter(redis_keys.HANDOVER_KEY_PREFIX + "*")]
    assert len(records) == 20
