"""`POST /webhooks/taskrouter` against the live API and the suite's Redis: the test
plays TaskRouter, signing each event with the account's auth token as Twilio does.

What is checked in Redis: the status record's `ended_*` fields, and the hand-back
job as arq keeps it (its entry in the queue's sorted set, its job record). The
hand-back job itself runs in the worker; these tests stop before it (the worker is
stopped, or never started), so the queued job is there to be looked at.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any
from urllib.parse import urlencode

from arq.jobs import deserialize_job_raw
from twilio.request_validator import RequestValidator

from shared import redis_keys
from shared.arq_jobs import job_deserializer
from shared.model import new_handover_id
from tests.support.service import Service
from tests.support.values import AUTH_TOKEN

PATH = "/webhooks/taskrouter"
FORM = "application/x-www-form-urlencoded"
TASK_SID = "WT" + "7e" * 16
PUBLIC = "https://handover.example.com"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "handover.example.com"}


def task_event(
    event_type: str, handover_id: str, task_sid: str = TASK_SID, **attributes: Any
) -> dict[str, str]:
    """A workspace event as TaskRouter sends it (the fields this endpoint reads, and a few)."""
    return {
        "EventType": event_type,
        "TaskSid": task_sid,
        "TaskAttributes": json.dumps({"handoverId": handover_id, **attributes}),
        "TaskAssignmentStatus": "completed",
        "ResourceSid": task_sid,
        "Timestamp": "1767225600",
        "AccountSid": "AC" + "a1" * 16,
    }


async def send(
    service: Service,
    params: dict[str, str],
    *,
    token: str = AUTH_TOKEN,
    signed_url: str | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST the event form-encoded, signed over `signed_url` (the URL called, by default)."""
    url = service.url + PATH
    if signature is None:
        signature = RequestValidator(token).compute_signature(signed_url or url, params)
    all_headers = {"Content-Type": FORM, "X-Twilio-Signature": signature, **(headers or {})}
    if not signature:
        del all_headers["X-Twilio-Signature"]
    async with service.anonymous.post(
        url, data=urlencode(params).encode(), headers=all_headers
    ) as response:
        return response.status, await response.json()


async def snapshot(redis) -> dict[str, Any]:
    """Every key and its value (TTLs apart): what "changes nothing" is checked against."""
    found: dict[str, Any] = {}
    for key in sorted(await redis.keys("*")):
        kind = await redis.type(key)
        if kind == "hash":
            found[key] = await redis.hgetall(key)
        elif kind == "zset":
            found[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            found[key] = await redis.get(key)
        else:
            found[key] = kind
    return found


async def record(redis, handover_id: str) -> dict[str, str]:
    fields: dict[str, str] = await redis.hgetall(redis_keys.handover_key(handover_id))
    return fields


async def hand_back_jobs(redis) -> list[str]:
    queued = await redis.zrange(redis_keys.QUEUE_NAME, 0, -1)
    return [job for job in queued if job.startswith(redis_keys.HAND_BACK_JOB_PREFIX)]


async def succeeded_handover(service: Service, simulator) -> tuple[str, dict[str, Any]]:
    """A handover delivered by the real worker, which is then stopped: its id and the
    simulator's task for it."""
    handover_id = await service.hand_over()
    final = await service.wait_final(handover_id)
    assert final["state"] == "succeeded", final
    await service.stop_worker()
    [task] = [t for t in simulator.tasks if t["interaction_sid"] == final["interaction_sid"]]
    assert task["attributes"]["handoverId"] == handover_id
    return handover_id, task


def event_for(event_type: str, task: dict[str, Any]) -> dict[str, str]:
    return {
        **task_event(event_type, task["attributes"]["handoverId"], task["sid"]),
        "TaskAttributes": json.dumps(task["attributes"]),
    }


# --- recorded once ------------------------------------------------------------------


async def test_a_completed_task_ends_its_handover_and_queues_one_hand_back(
    start_service, redis, simulator
):
    service = await start_service()
    handover_id, task = await succeeded_handover(service, simulator)
    before = await record(redis, handover_id)

    status, body = await send(service, event_for("task.completed", task))

    assert status == 200, body
    assert body == {
        "handover_id": handover_id,
        "outcome": "recorded",
        "reason": "task.completed: hand-back queued",
    }
    after = await record(redis, handover_id)
    assert after["ended_by"] == "task.completed"
    assert after["ended_task_sid"] == task["sid"]
    assert after["ended_attempt"] == task["attributes"]["handoverAttempt"]
    assert float(before["finished_at"]) <= float(after["ended_at"]) == float(after["updated_at"])
    assert after["state"] == "succeeded"  # the outcome is the worker's, and stands
    assert "handed_back" not in after  # the hand-back job writes that
    job_id = redis_keys.hand_back_job_id(handover_id)
    assert await redis.zrange(redis_keys.QUEUE_NAME, 0, -1) == [job_id]
    raw = await redis.get(redis_keys.hand_back_job_key(handover_id))
    function, args, kwargs, job_try, _ = deserialize_job_raw(
        raw.encode(), deserializer=job_deserializer
    )
    assert (function, args, kwargs, job_try) == (
        redis_keys.HAND_BACK_FUNCTION,
        [handover_id],
        {},
        1,
    )
    assert await redis.pttl(redis_keys.hand_back_job_key(handover_id)) > 0
    shown = await service.status(handover_id)
    assert (shown["ended_by"], shown["ended_at"] is not None) == ("task.completed", True)


async def test_a_repeated_or_later_end_event_changes_nothing(start_service, redis, simulator):
    service = await start_service()
    handover_id, task = await succeeded_handover(service, simulator)
    status, body = await send(service, event_for("task.completed", task))
    assert (status, body["outcome"]) == (200, "recorded")
    recorded = await snapshot(redis)

    for event_type in ("task.completed", "task.deleted", "task.canceled"):
        status, body = await send(service, event_for(event_type, task))
        assert status == 200, body
        assert body == {
            "handover_id": handover_id,
            "outcome": "duplicate",
            "reason": "ended already by task.completed",
        }
        assert await snapshot(redis) == recorded
    assert await hand_back_jobs(redis) == [redis_keys.hand_back_job_id(handover_id)]


async def test_the_task_of_an_attempt_whose_channel_failed_does_not_end_the_handover(
    start_service, redis, simulator
):
    """After a failed channel the handover has two tasks: the failed attempt's may
    be canceled first; the agent's task (the succeeded attempt's) still ends it."""
    service = await start_service()
    simulator.next_channels(["failed"], error_code=19025, error_message="no route")
    handover_id = await service.hand_over()
    final = await service.wait_final(handover_id)
    assert final["state"] == "succeeded" and final["attempts"] == 2, final
    await service.stop_worker()
    failed_task, delivered_task = (
        next(t for t in simulator.tasks if t["interaction_sid"] == interaction["sid"])
        for interaction in simulator.interactions
    )
    assert delivered_task["interaction_sid"] == final["interaction_sid"]
    before = await snapshot(redis)

    status, body = await send(service, event_for("task.canceled", failed_task))
    assert (status, body["outcome"]) == (200, "ignored"), body
    assert "not the task of the attempt that reached the agent" in body["reason"]
    assert await snapshot(redis) == before

    status, body = await send(service, event_for("task.completed", delivered_task))
    assert (status, body["outcome"]) == (200, "recorded"), body
    assert (await record(redis, handover_id))["ended_by"] == "task.completed"


async def test_an_end_event_before_the_outcome_is_recorded_beside_the_queued_handover(
    start_service, redis
):
    """Out of order: the task is canceled while the handover is still queued (no
    worker yet). Which attempt's task reached the agent is not known yet, so the
    end is kept under its attempt (none here) and does not end the handover; the
    delivery job stays; the hand-back job waits in the queue with it to judge it."""
    service = await start_service(worker=False)
    handover_id = await service.hand_over()

    status, body = await send(service, task_event("task.canceled", handover_id))

    assert (status, body["outcome"]) == (200, "recorded"), body
    assert "before the outcome" in body["reason"]
    after = await record(redis, handover_id)
    assert after["state"] == "queued"
    assert "ended_at" not in after and "ended_by" not in after
    event, task_sid, at = after["early_end:"].split(" ")
    assert (event, task_sid) == ("task.canceled", TASK_SID) and float(at) > 0
    assert sorted(await redis.zrange(redis_keys.QUEUE_NAME, 0, -1)) == sorted(
        [redis_keys.handover_job_id(handover_id), redis_keys.hand_back_job_id(handover_id)]
    )
    status, body = await send(service, task_event("task.completed", handover_id))
    assert (status, body["outcome"]) == (200, "duplicate")
    assert (await record(redis, handover_id))["early_end:"].startswith("task.canceled ")


async def test_concurrent_deliveries_of_one_event_record_it_once(start_service, redis):
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    params = task_event("task.completed", handover_id, handoverAttempt="at_0123456789abcdef")
    answers = await asyncio.gather(*(send(service, params) for _ in range(10)))
    outcomes = sorted(body["outcome"] for _, body in answers)
    assert {status for status, _ in answers} == {200}
    assert outcomes == ["duplicate"] * 9 + ["recorded"]
    assert await hand_back_jobs(redis) == [redis_keys.hand_back_job_id(handover_id)]
    kept = (await record(redis, handover_id))["early_end:at_0123456789abcdef"]
    assert kept.startswith("task.completed ")


# --- acknowledged and ignored ---------------------------------------------------------


async def test_an_event_for_an_unknown_handover_is_acknowledged_and_ignored(start_service, redis):
    service = await start_service(worker=False)
    await service.hand_over()  # another handover, so there is something to leave alone
    before = await snapshot(redis)
    unknown = new_handover_id()

    status, body = await send(service, task_event("task.completed", unknown))

    assert status == 200, body
    assert body == {
        "handover_id": unknown,
        "outcome": "ignored",
        "reason": "no such handover (unknown or expired)",
    }
    assert await snapshot(redis) == before  # no record made up for it


async def test_events_that_do_not_end_a_task_are_ignored(start_service, redis):
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    before = await snapshot(redis)
    for event_type in ("task.created", "task.wrapup", "reservation.accepted", "workflow.timeout"):
        status, body = await send(service, task_event(event_type, handover_id))
        assert status == 200, body
        assert body == {
            "handover_id": None,
            "outcome": "ignored",
            "reason": f"{event_type} does not end a task",
        }
    status, body = await send(service, {"EventType": "worker.activity.update"})
    assert (status, body["outcome"]) == (200, "ignored")
    assert await snapshot(redis) == before


async def test_tasks_that_are_not_handovers_are_ignored(start_service, redis, caplog):
    service = await start_service(worker=False)
    before = await snapshot(redis)
    secret = "+14155550123"
    for attributes in (json.dumps({"from": secret}), f"{{{secret}", json.dumps([secret])):
        params = {**task_event("task.completed", ""), "TaskAttributes": attributes}
        with caplog.at_level(logging.DEBUG, logger="flex_handover"):
            status, body = await send(service, params)
        assert (status, body["outcome"], body["handover_id"]) == (200, "ignored", None), body
        assert secret not in body["reason"]
    assert secret not in caplog.text  # the attributes are never logged
    assert "TaskAttributes is not JSON" in caplog.text  # but the unreadable ones are noted
    assert await snapshot(redis) == before


# --- refused ---------------------------------------------------------------------------


async def test_a_bad_or_missing_signature_is_403_and_changes_nothing(start_service, redis):
    service = await start_service(worker=False)
    handover_id = await service.hand_over()
    params = task_event("task.completed", handover_id)
    before = await snapshot(redis)
    other_params = task_event("task.created", handover_id)
    cases = {
        "missing": {"signature": ""},
        "another token": {"token": "another-auth-token-0123456789"},
        "other parameters": {
            "signature": RequestValidator(AUTH_TOKEN).compute_signature(
                service.url + PATH, other_params
            )
        },
        "another URL": {"signed_url": service.url + "/webhooks/other"},
        "garbage": {"signature": "not a signature"},
    }
    for name, how in cases.items():
        status, body = await send(service, params, **how)
        assert status == 403, (name, body)
        assert body["error"] == "forbidden" and "X-Twilio-Signature" in body["message"]
        assert await snapshot(redis) == before, name


async def test_without_an_auth_token_the_endpoint_is_503_and_names_the_setting(
    start_service, redis
):
    service = await start_service(
        worker=False,
        TWILIO_AUTH_TOKEN="",
        TWILIO_API_KEY="SK" + "5e" * 16,
        TWILIO_API_SECRET="an-api-key-secret-0123456789",
    )
    handover_id = await service.hand_over()
    before = await snapshot(redis)
    status, body = await send(service, task_event("task.completed", handover_id))
    assert status == 503, body
    assert body["error"] == "not_configured" and "TWILIO_AUTH_TOKEN" in body["message"]
    assert await snapshot(redis) == before


async def test_behind_a_proxy_the_public_url_is_what_is_signed(start_service, redis):
    trusting = await start_service(worker=False, HANDOVER_TRUST_PROXY_HEADERS="true")
    handover_id = await trusting.hand_over()
    params = task_event("task.completed", handover_id)
    public = {"signed_url": PUBLIC + PATH, "headers": FORWARDED}
    status, body = await send(trusting, params, **public)
    assert (status, body["outcome"]) == (200, "recorded"), body

    await redis.flushall()
    untrusting = await start_service(worker=False)
    handover_id = await untrusting.hand_over()
    params = task_event("task.completed", handover_id)
    status, body = await send(untrusting, params, **public)
    assert status == 403, body  # forwarded headers are anyone's to send
    assert await hand_back_jobs(redis) == []


async def test_a_body_over_the_limit_is_413(start_service, redis):
    service = await start_service(worker=False, HANDOVER_MAX_BODY_BYTES="1024")
    handover_id = await service.hand_over()
    before = await snapshot(redis)
    params = task_event("task.completed", handover_id, padding="x" * 2000)
    status, body = await send(service, params)
    assert (status, body["error"]) == (413, "body_too_large")
    assert await snapshot(redis) == before


async def test_a_signed_body_that_is_not_a_form_is_400(start_service, redis):
    service = await start_service(worker=False)
    before = await snapshot(redis)
    body = b'{"EventType": "task.completed"}'
    digest = hashlib.sha256(body).hexdigest()
    url = f"{service.url}{PATH}?bodySHA256={digest}"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, {})
    async with service.anonymous.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", "X-Twilio-Signature": signature},
    ) as response:
        status, answer = response.status, await response.json()
    assert (status, answer["error"]) == (400, "invalid_body"), answer
    assert await snapshot(redis) == before


async def test_unauthenticated_mode_does_not_open_the_endpoint(start_service, redis):
    service = await start_service(
        worker=False, HANDOVER_ALLOW_UNAUTHENTICATED="true", HANDOVER_TOOL_TOKENS=""
    )
    handover_id = await service.hand_over()
    before = await snapshot(redis)
    status, body = await send(service, task_event("task.completed", handover_id), signature="")
    assert (status, body["error"]) == (403, "forbidden")
    assert await snapshot(redis) == before
